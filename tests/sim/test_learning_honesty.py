"""The learning evaluation is honest: no label reads simulator truth, and the arms do what they say."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from flight_sw.config import load_mission_config
from sim.learning_suite import (
    ARMS,
    SCENARIOS,
    ci95,
    load_scenario,
    recovery_orbits,
    scramble_truth_records,
    summarise,
    truth_label_count,
)

DEFAULT = "mission_configs/default_sso.yaml"


def _short_sim(days=0.3, **payload):
    from sim.simulation import Simulation

    cfg = load_mission_config(DEFAULT).with_optimizer("digital")
    if payload:
        cfg = dataclasses.replace(cfg, payload=dataclasses.replace(cfg.payload, **payload))
    return Simulation(cfg, 3, days * 86400.0, lambda p: None)


class _PixelsOnly:
    """What a real imager gives: pixels, ancillary data and the frame's sun elevation. Nothing else."""

    __slots__ = ("_inner",)

    def __init__(self, inner):
        self._inner = inner

    def acquire(self, pixels, ancillary):
        return self._inner.acquire(pixels, ancillary)

    @property
    def sun_elevation_deg(self):
        return self._inner.sun_elevation_deg


def test_the_flight_software_learns_from_a_payload_that_offers_no_truth():
    sim = _short_sim(0.5)
    sim.fsw.payload = _PixelsOnly(sim.payload)  # any other attribute access raises AttributeError
    sim.advance(sim.n_ticks)
    by_source = sim.fsw.learner.labels_by_source
    assert by_source[1] > 1000  # the teacher labelled frames
    assert sum(by_source) == sum(sim.log.lab_n)


def test_no_label_changes_when_every_truth_record_is_scrambled():
    assert truth_label_count(days=0.3, seed=2) == 0


def test_the_scrambled_truth_check_catches_a_labeller_that_reads_truth(monkeypatch):
    """Negative control: a teacher task that copies the payload's truth makes the count non-zero."""
    from flight_sw.app import FlightSoftware

    original = FlightSoftware._task_teacher_label

    def cheating(self, t):
        cost = original(self, t)
        truth = getattr(self.payload, "truth_for", None)
        if truth is not None and cost >= 0:
            n = self._cal_labels.shape[0]
            self._cal_labels[:n] = truth(self._cal_pixels)[:n]
            self.label_tap(1, t, self._cal_pixels, self._cal_labels)
        return cost

    monkeypatch.setattr(FlightSoftware, "_task_teacher_label", cheating)
    assert truth_label_count(days=0.1, seed=2) > 0


def test_scrambling_leaves_the_pixels_alone():
    a, b = _short_sim(0.05), _short_sim(0.05)
    scramble_truth_records(b)
    a.advance(a.n_ticks)
    b.advance(b.n_ticks)
    np.testing.assert_array_equal(a.fsw._pixels, b.fsw._pixels)
    assert a.log.acc_onboard != b.log.acc_onboard  # the scores read the scrambled truth


def test_site_labels_follow_the_maps_accuracy():
    """Site labels are the map's class: a worse map gives proportionally worse labels."""
    agree = {}
    for acc in (1.0, 0.6):
        sim = _short_sim(1.0, site_map_accuracy=acc, geolocation_sigma_px=0.0, label_sources=("site",))
        sim.advance(sim.n_ticks)
        src = np.array(sim.log.lab_source)
        n = np.array(sim.log.lab_n)[src == 0].sum()
        assert n > 50, "no calibration-site pass in a day"
        agree[acc] = np.array(sim.log.lab_agree)[src == 0].sum() / n
    assert agree[1.0] > 0.8  # clouds the test misses and mixed pixels still cost some
    assert agree[0.6] < agree[1.0] - 0.2


def test_calibration_arm_recovers_a_known_gain_and_offset_without_labels():
    from sim.arms import CalibrationArm
    from sim.scene import atmosphere

    cfg = load_mission_config(DEFAULT)
    from sim.prelaunch import train_prelaunch_model

    image = train_prelaunch_model(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    bands = cfg.payload.bands
    centres = np.linspace(490, 2190, bands)
    records = rng.uniform(0.05, 0.5, size=(6, bands))
    records[:, :2] = rng.uniform(0.02, 0.15, size=(6, 2))  # blue and green below the cloud test
    arm = CalibrationArm(image, records, centres, (0, 1, 8))
    gain = np.linspace(0.8, 1.1, bands)
    offset = np.linspace(0.0, 0.02, bands)
    for k in range(400):
        site = k % 6
        elev = rng.uniform(20, 70)
        path, trans = atmosphere(centres, elev)
        toa = path + trans * records[site] * (1 + 0.05 * rng.standard_normal((16, bands)))
        arm.on_site_frame(site, elev, (toa * gain + offset).astype(np.float32))
    np.testing.assert_allclose(arm.gain, gain, atol=0.03)
    np.testing.assert_allclose(arm.offset, offset, atol=0.01)


def test_ground_loop_drops_pre_alarm_samples_and_retrains_early():
    from sim.ground_loop import REACT_MIN_SAMPLES, GroundLoopArm
    from sim.prelaunch import train_prelaunch_model

    cfg = load_mission_config(DEFAULT)
    image = train_prelaunch_model(cfg, np.random.default_rng(0))

    class C:
        def __init__(self, s, e):
            self.start_s, self.end_s = s, e

    contacts = [C(1000.0 * k, 1000.0 * k + 600.0) for k in range(1, 30)]
    arm = GroundLoopArm(dataclasses.replace(cfg, ground_loop=dataclasses.replace(cfg.ground_loop,
                                                                                retrain_every_h=1000.0)),
                        image, contacts)
    rng = np.random.default_rng(2)
    px = rng.uniform(0, 0.5, size=(16, cfg.payload.bands)).astype(np.float32)
    for t in range(100, 2000, 50):
        arm.on_labelled(float(t), px, rng.integers(0, 6, 16))
    arm.advance(1700.0)  # first contact: the regular retraining (never retrained before)
    assert arm.retrains == 1
    arm.on_drift_alarm(2500.0)
    for t in range(2600, 6000, 20):
        arm.on_labelled(float(t), px, rng.integers(0, 6, 16))
    arm.advance(6700.0)
    assert arm.reactions == 1
    assert arm.retrains == 2  # reacted long before the 1000 h slot
    assert arm.window.count >= REACT_MIN_SAMPLES
    w = arm.window
    kept = w.t[(w.head + np.arange(w.count)) % w.x.shape[0]]
    assert np.all(kept >= 2500.0)  # nothing collected before the alarm


def test_every_scenario_loads_and_validates():
    for name in SCENARIOS:
        sc = load_scenario(name)
        assert sc.days >= 10 and 0 < sc.drift_start_day < sc.days
        assert load_scenario(name, quick=True).days <= 3
    with pytest.raises(Exception, match="no such scenario"):
        load_scenario("nonexistent")


def test_recovery_and_confidence_intervals():
    acc = np.array([0.9, 0.9, 0.7, 0.75, 0.89, 0.9])
    assert recovery_orbits(acc, 0.9, 2) == 2.0
    assert recovery_orbits(np.array([0.9, 0.5, 0.5]), 0.9, 1) == 2.0  # censored at the run's end
    mean, half = ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)


def _fake_result(name, seed, drops):
    n = 10
    series = {arm: np.full(n, 0.9 - drops[arm] / 100.0) for arm in ARMS}
    return {"scenario": name, "seed": seed, "days": 20.0, "orbit_period_s": 5700.0, "n_orbits": n,
            "drift_start_s": 0.0, "start_orbit": 0, "reference_level": 0.9, "series": series,
            "labels": {s: np.ones(n) for s in ("site", "teacher", "self")},
            "agreement": {s: np.ones(n) for s in ("site", "teacher", "self")}, "teacher_accuracy": np.ones(n),
            "figures": {**{f"{a}_drop_pts": drops[a] for a in ARMS}, "onboard_recovery_orbits": 1.0,
                        "ground_recovery_orbits": 5.0, "forgetting_pts": 0.5, "teacher_post_accuracy": 0.8},
            "labels_total": {"site": 1.0, "teacher": 2.0, "self": 0.0}, "wall_s": 1.0}


def test_summary_counts_wins_against_the_best_baseline_and_the_gap_to_the_bound():
    win = {"frozen": 5.0, "calibration": 2.0, "selftrain": 4.0, "ground": 3.0, "onboard": 1.0, "bound": 0.5}
    lose = dict(win, onboard=4.0)
    results = [_fake_result("radiation", s, win) for s in (1, 2)] + [_fake_result("stress", s, lose) for s in (1, 2)]
    doc = summarise(results, [1, 2], 10.0, 0)
    f = doc["figures"]
    assert f["learning.onboard_wins"] == 1.0 and f["learning.scenarios"] == 2.0
    assert f["learning.worst_gap_to_bound_pts"] == pytest.approx(3.5)
    assert f["learning.radiation.calibration_drop_pts"] == pytest.approx(2.0)
    assert f["learning.truth_labels"] == 0.0


def test_one_quick_scenario_run_gives_every_figure_and_a_review_page(tmp_path):
    """run_one -> summarise -> the review page, as the bench chains them (one seed, 3 days)."""
    from ground_tools.suite_report import write_suite_report
    from sim.learning_suite import prelaunch_products, run_one

    r = run_one("radiation", 5, True, prelaunch_products(5))
    assert r["n_orbits"] >= 45 and 0 < r["start_orbit"] < r["n_orbits"]
    assert all(len(s) == r["n_orbits"] for s in r["series"].values())
    assert r["labels_total"]["teacher"] > 1000 and r["labels_total"]["self"] == 0
    assert all(math.isfinite(v) for v in r["figures"].values())
    assert abs(r["reference_level"] - np.nanmean(r["series"]["frozen"][: r["start_orbit"]])) < 1e-12
    doc = summarise([r], [5], 1.0, 0)
    keys = {f"learning.radiation.{a}_drop_pts" for a in ARMS} | {
        "learning.radiation.onboard_ci95_pts", "learning.radiation.onboard_recovery_orbits",
        "learning.radiation.ground_recovery_orbits", "learning.radiation.forgetting_pts", "learning.scenarios",
        "learning.seeds", "learning.onboard_wins", "learning.worst_gap_to_bound_pts", "learning.truth_labels",
        "learning.suite_wall_s"}
    assert keys <= set(doc["figures"])
    page = write_suite_report(doc, tmp_path)
    assert "Radiation" in page.read_text(encoding="utf-8")
