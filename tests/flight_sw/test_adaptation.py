"""Label-free input adaptation (flight_sw/ml/adaptation.py): estimate, gate, commit, rollback."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from flight_sw.devices.optimizer import DigitalSolver
from flight_sw.memory import allocate_buffers
from flight_sw.ml import adaptation as ad
from flight_sw.ml.learner import OnboardLearner

from .conftest import digital

#: A detector response change the diffuser does not see (per band gain and offset).
GAIN = np.array([1.0, 0.7, 0.6, 1.0, 1.4, 1.5, 0.6, 1.3, 1.0, 0.8])
OFFSET = np.array([0.0, 0.0, 0.02, 0.0, -0.03, 0.0, 0.0, 0.0, 0.01, 0.0])


def _parts(cfg, image):
    cfg = digital(cfg)
    buffers = allocate_buffers(cfg)
    learner = OnboardLearner(cfg, image, buffers,
                             DigitalSolver(cfg.model.feature_dim + 1, len(cfg.payload.classes), 1e-9))
    learner.set_reliability(0.9, 0.9)
    return cfg, learner, ad.InputAdaptation(cfg, image, buffers)


def _scene(cfg, seed=3):
    from sim.scene import SceneTruth

    return SceneTruth(cfg.payload, np.random.default_rng(seed))


def _pixels(scene, n, mix=None, drifted=False):
    px = np.zeros((n, len(GAIN)), np.float32)
    lab = np.zeros(n, np.int64)
    scene.sample(0.0, n, scene.base_mix if mix is None else mix, 45.0, px, lab)
    if drifted:
        px[...] = px * GAIN + OFFSET
    return px, lab


def _fill_window(adapt, px):
    for i in range(0, len(px), 16):
        adapt.observe(px[i:i + 16], min(16, len(px) - i), 45.0)


def _hold_back(learner, scene, drifted, batches=40):
    batch = learner.feat.shape[0]
    pred = np.zeros(batch, np.int64)
    for _ in range(batches):
        px, lab = _pixels(scene, batch, drifted=drifted)
        learner.accumulate(px, lab, pred, source=0)


def _run_until_outcome(adapt, learner, max_steps=4):
    for _ in range(max_steps):
        out = adapt.step(learner.compare_inputs)
        if out in ("committed", "refused"):
            return out
    return None


def test_candidate_undoes_a_known_per_band_gain_and_offset(default_cfg, image):
    """Window statistics of drifted pixels, reference of the same scenes undrifted: the candidate
    normalisation of a drifted pixel equals the image's normalisation of the original pixel."""
    cfg, learner, adapt = _parts(default_cfg, image)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.05, 0.6, (4000, len(GAIN)))
    adapt.window[...] = 0.0
    ad.window_add(x, len(x), adapt.window)
    ad.window_stats(adapt.window, len(x), adapt.reference)
    np.testing.assert_allclose(adapt.reference[0], x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(adapt.reference[1], x.std(axis=0), rtol=1e-9)
    drifted = x * GAIN + OFFSET
    adapt.window[...] = 0.0
    ad.window_add(drifted, len(x), adapt.window)
    out = np.zeros((2, len(GAIN)))
    ok, change = ad.candidate_into(adapt.window, len(x), adapt.reference, adapt.base_mean, adapt.base_std,
                                   adapt.base_step, adapt.slots[0], out, ad.SCALE_MIN, ad.SCALE_MAX)
    assert ok
    assert change == pytest.approx(np.max(np.abs(1.0 / GAIN - 1.0)), rel=1e-6) or change > 0.3
    base = (x - image.input_mean) / (image.input_std * adapt.base_step)
    np.testing.assert_allclose((drifted - out[0]) * out[1], base, atol=1e-8)


def test_window_skips_non_finite_rows_and_dark_frames(default_cfg, image):
    _, _, adapt = _parts(default_cfg, image)
    px = np.full((16, len(GAIN)), 0.2, np.float32)
    px[3, 4] = np.nan
    assert adapt.observe(px, 16, 45.0) == 15
    assert adapt.observe(px, 16, adapt.cfg.min_sun_elevation_deg - 1.0) == 0
    assert adapt.window_pixels == 15
    np.testing.assert_allclose(adapt.window[0], 15 * 0.2, rtol=1e-6)


def test_a_helpful_adaptation_is_committed_and_rolls_back_bit_identically(default_cfg, image):
    """A response change the calibration does not correct: the adaptation restores the active
    head's accuracy on the held-back site labels, commits, and rollback restores the image's
    normalisation bit for bit."""
    cfg, learner, adapt = _parts(default_cfg, image)
    scene = _scene(cfg)
    original = (learner.extractor.mean.copy(), learner.extractor.cx.copy())
    _fill_window(adapt, _pixels(scene, cfg.adaptation.window_pixels)[0])
    assert adapt.step(learner.compare_inputs) == "reference"
    _hold_back(learner, scene, drifted=True)
    _fill_window(adapt, _pixels(scene, cfg.adaptation.window_pixels, drifted=True)[0])
    assert adapt.step(learner.compare_inputs) is None  # the candidate
    assert adapt.step(learner.compare_inputs) is None  # judged: accepted
    assert adapt.step(learner.compare_inputs) == "committed"
    assert adapt.last_candidate_acc > adapt.last_active_acc + 0.05
    assert adapt.last_gate_z >= cfg.adaptation.min_gate_z
    assert adapt.version == 1 and adapt.accepted == 1
    np.testing.assert_array_equal(learner.extractor.mean, adapt.slots[adapt.active, 0])
    np.testing.assert_array_equal(learner.extractor.cx, adapt.slots[adapt.active, 1])
    assert not np.array_equal(learner.extractor.cx, original[1])
    # The live accuracy on drifted scenes really improved.
    px, lab = _pixels(scene, 2000, drifted=True)
    pred = np.zeros(2000, np.int64)
    learner_acc = _accuracy(learner, px, lab, pred)
    assert adapt.rollback()
    assert adapt.version == 0 and adapt.rollbacks == 1
    np.testing.assert_array_equal(learner.extractor.mean, original[0])
    np.testing.assert_array_equal(learner.extractor.cx, original[1])
    assert learner_acc > _accuracy(learner, px, lab, pred) + 0.05


def _accuracy(learner, px, lab, pred):
    batch = learner.feat.shape[0]
    ok = 0
    for i in range(0, len(px), batch):
        learner.predict(px[i:i + batch], pred[i:i + batch])
    ok = int(np.sum(pred == lab))
    return ok / len(px)


@pytest.mark.parametrize("cls", ["snow_ice", "water", "vegetation"])
def test_a_harmful_adaptation_is_refused_and_changes_nothing(default_cfg, image, cls):
    """A change of the scenes, not the sensor (a winter: three times the snow; a flood; a green-up):
    matching its statistics to the reference shifts every other class, and the held-back labels
    refuse it."""
    cfg, learner, adapt = _parts(default_cfg, image)
    scene = _scene(cfg)
    _fill_window(adapt, _pixels(scene, cfg.adaptation.window_pixels)[0])
    assert adapt.step(learner.compare_inputs) == "reference"
    _hold_back(learner, scene, drifted=False)
    before = (learner.extractor.mean.copy(), learner.extractor.cx.copy())
    mix = scene.base_mix.copy()
    mix[list(cfg.payload.classes).index(cls)] *= 3.0
    _fill_window(adapt, _pixels(scene, cfg.adaptation.window_pixels, mix=mix / mix.sum())[0])
    assert _run_until_outcome(adapt, learner) == "refused"
    assert ad.REFUSALS[adapt.last_refusal] == "worse"
    assert adapt.last_change > cfg.adaptation.min_change
    assert adapt.last_candidate_acc < adapt.last_active_acc and adapt.last_gate_z < 0.0
    assert adapt.version == 0 and adapt.accepted == 0
    np.testing.assert_array_equal(learner.extractor.mean, before[0])
    np.testing.assert_array_equal(learner.extractor.cx, before[1])
    assert not adapt.rollback()  # the other slot held the refused candidate: nothing to go back to


def test_an_out_of_range_candidate_is_refused_before_the_gate(default_cfg, image):
    """Snow and cloud only: band spreads change by more than SCALE_MIN..SCALE_MAX (not a scene-mix
    correction any more); refused without spending the gate."""
    cfg, learner, adapt = _parts(default_cfg, image)
    scene = _scene(cfg)
    _fill_window(adapt, _pixels(scene, cfg.adaptation.window_pixels)[0])
    adapt.step(learner.compare_inputs)
    classes = list(cfg.payload.classes)
    mix = np.zeros(len(classes))
    mix[classes.index("snow_ice")], mix[classes.index("cloud")] = 0.7, 0.3
    _fill_window(adapt, _pixels(scene, cfg.adaptation.window_pixels, mix=mix)[0])
    assert adapt.step(learner.compare_inputs) == "refused"
    assert ad.REFUSALS[adapt.last_refusal] == "out_of_range"
    assert math.isnan(adapt.last_gate_z) and adapt.version == 0


def test_small_changes_are_not_judged(default_cfg, image):
    cfg, learner, adapt = _parts(default_cfg, image)
    scene = _scene(cfg)
    _fill_window(adapt, _pixels(scene, cfg.adaptation.window_pixels)[0])
    adapt.step(learner.compare_inputs)
    _fill_window(adapt, _pixels(scene, cfg.adaptation.window_pixels)[0])  # same scenes, other pixels
    assert adapt.step(learner.compare_inputs) == "refused"
    assert ad.REFUSALS[adapt.last_refusal] == "no_change"
    assert math.isnan(adapt.last_gate_z)


def test_too_few_heldback_labels_refuse(default_cfg, image):
    cfg, learner, adapt = _parts(default_cfg, image)
    scene = _scene(cfg)
    _fill_window(adapt, _pixels(scene, cfg.adaptation.window_pixels)[0])
    adapt.step(learner.compare_inputs)
    _fill_window(adapt, _pixels(scene, cfg.adaptation.window_pixels, drifted=True)[0])
    assert _run_until_outcome(adapt, learner) == "refused"
    assert ad.REFUSALS[adapt.last_refusal] == "no_heldback"


def test_a_committed_adaptation_that_site_labels_disfavour_is_rolled_back(default_cfg, image):
    cfg, learner, adapt = _parts(default_cfg, image)
    adapt.slots[1] = adapt.slots[0]
    adapt.slots[1, 0] += 0.3  # a (forced) bad normalisation in the candidate slot
    adapt.phase = ad.COMMIT
    assert adapt.step(learner.compare_inputs) == "committed"
    assert adapt.watch(40, 60, 64)  # the previous normalisation got 20 more of 64 right
    assert adapt.version == 0 and adapt.rollbacks == 1
    np.testing.assert_array_equal(learner.extractor.mean, adapt.slots[0, 0])


def test_flight_software_adapts_reports_and_snapshots(make_fsw, default_cfg):
    """In the flight software: the task takes a reference and judges later windows (event with
    its reason); the state and the live normalisation survive a snapshot and restore."""
    from spacepackets.ecss import PusTm

    from flight_sw.tmtc import dictionary as d

    cfg = dataclasses.replace(default_cfg, adaptation=dataclasses.replace(default_cfg.adaptation,
                                                                           window_pixels=1000))
    fsw = make_fsw(cfg)
    fsw.inputs.in_contact = True  # the downlink drains to the test's packet list
    for tick in range(0, 3600):
        fsw.step(tick)
    a = fsw.adaptation
    assert a.has_reference and a.windows >= 2
    events = []
    for raw in fsw.test_packets:
        p = PusTm.unpack(raw, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == d.PUS_SERVICE_EVENT and d.EVENT_ID_STRUCT.unpack_from(data)[0] == d.EVENT_ADAPTATION_UPDATE:
            events.append(d.ADAPTATION_UPDATE_STRUCT.unpack(data[2:]))
    assert len(events) == a.accepted + a.refused + a.rollbacks >= 1
    for outcome, _version, refusal, *_rest, window in events:
        assert (refusal != 0) == (d.ADAPTATION_OUTCOMES[outcome] == "refused")
        assert window >= 1000
    other = make_fsw(cfg)
    other.restore(fsw.snapshot())
    assert json.dumps(other.adaptation.state_dict()) == json.dumps(a.state_dict())
    np.testing.assert_array_equal(other.learner.extractor.mean, fsw.learner.extractor.mean)
    np.testing.assert_array_equal(other.learner.extractor.cx, fsw.learner.extractor.cx)
