"""Onboard radiometric self-calibration: dark and diffuser sweeps, the gate, commit and rollback."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from flight_sw.memory import radiometry_buffer_specs
from flight_sw.ml import radiometry as r
from flight_sw.tmtc import dictionary as d

RHO = np.linspace(0.98, 0.95, 10)


class SyntheticSensor:
    """Known dark map and gain map; readings with read noise; dark and diffuser windows on command."""

    def __init__(self, cols, bands, seed=0, noise=0.0005):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.noise = noise
        self.dark = 0.001 + 0.002 * rng.standard_normal((cols, bands))
        self.dark[rng.random(cols) < 0.02] += 0.05  # hot columns
        self.gain = 1.0 + 0.01 * rng.standard_normal((cols, bands))
        self.window = "dark"
        self.calls = 0

    def acquire_calibration(self, kind, first, out):
        self.calls += 1
        want = "dark" if kind == r.CAL_DARK else "diffuser"
        if want != self.window:
            return r.CAL_UNAVAILABLE
        m = out.shape[0]
        signal = self.dark[first:first + m].copy()
        if kind == r.CAL_DIFFUSER:
            signal += RHO * self.gain[first:first + m]
        out[...] = signal + self.noise * self.rng.standard_normal(out.shape)
        return r.CAL_OK

    def pixels(self, nominal, cols):
        """What the detector delivers for nominal (TOA reflectance) pixels seen by these columns."""
        return (nominal * self.gain[cols] + self.dark[cols]).astype(np.float32)


def _calibration(default_cfg, **radiometry):
    radiometry.setdefault("dark_sweep_interval_s", 0.0)  # the helpers step at t = 0: sweep back to back
    cfg = dataclasses.replace(default_cfg, radiometry=dataclasses.replace(default_cfg.radiometry, **radiometry))
    bufs = {n: np.zeros(s, t) for n, (s, t) in radiometry_buffer_specs(cfg).items()}
    return cfg, r.RadiometricCalibration(cfg, bufs, RHO)


def _no_labels(a, b, n):
    raise AssertionError("the gate asked for held-back labels it does not have")


def _sweep(cal, sensor, nights=30, heldback=_no_labels, held=0):
    """A night of dark sweeps, then the diffuser window until the candidate is judged."""
    sensor.window = "dark"
    for _ in range(nights * cal.n_chunks):
        assert cal.step(0.0, sensor, heldback, held) is None
    sensor.window = "diffuser"
    outcomes = [cal.step(0.0, sensor, heldback, held) for _ in range(cal.n_chunks + 2)]
    return [o for o in outcomes if o is not None]


def test_calibration_recovers_a_known_gain_and_dark_map_and_corrects_pixels(default_cfg):
    cfg, cal = _calibration(default_cfg)
    sensor = SyntheticSensor(cal.columns, cal.bands)
    assert cal.requested  # commissioning
    assert _sweep(cal, sensor) == ["committed"]
    assert cal.version == 1 and cal.accepted == 1
    np.testing.assert_allclose(cal.gain_of(cal.active), sensor.gain, atol=0.003)
    np.testing.assert_allclose(cal.offset_of(cal.active), sensor.dark, atol=0.0005)
    assert cal.hot_count == int(np.count_nonzero(sensor.dark > cfg.radiometry.hot_threshold))
    rng = np.random.default_rng(5)
    nominal = rng.uniform(0.02, 0.6, size=(16, cal.bands))
    cols = rng.integers(0, cal.columns, 16)
    px = sensor.pixels(nominal, cols)
    cal.apply_into(px, cols, 16)
    np.testing.assert_allclose(px, nominal, atol=0.002)


def test_remap_between_tables_is_exact(default_cfg):
    _, cal = _calibration(default_cfg)
    rng = np.random.default_rng(2)
    cal.gain_q[0] = rng.integers(-3000, 3000, cal.gain_q[0].shape)
    cal.offset_q[0] = rng.integers(-500, 500, cal.offset_q[0].shape)
    cal.gain_q[1] = rng.integers(-3000, 3000, cal.gain_q[1].shape)
    cal.offset_q[1] = rng.integers(-500, 500, cal.offset_q[1].shape)
    raw = rng.uniform(0, 1, (16, cal.bands)).astype(np.float32)
    cols = rng.integers(0, cal.columns, 16)
    under_0, under_1 = raw.copy(), raw.copy()
    cal.active = 0
    cal.apply_into(under_0, cols, 16)
    cal.active = 1
    cal.apply_into(under_1, cols, 16)
    out = np.zeros_like(raw)
    cal.remap_into(under_0, cols, 16, 0, 1, out)
    np.testing.assert_allclose(out, under_1, rtol=1e-5, atol=1e-6)


def test_a_change_within_noise_is_refused_and_nothing_moves(default_cfg):
    _, cal = _calibration(default_cfg)
    sensor = SyntheticSensor(cal.columns, cal.bands)
    assert _sweep(cal, sensor) == ["committed"]
    active = (cal.gain_q[cal.active].copy(), cal.offset_q[cal.active].copy())
    cal.request(2, 0)
    assert _sweep(cal, sensor) == ["refused"]
    assert r.REFUSALS[cal.last_refusal] == "no_change"
    assert cal.version == 1
    np.testing.assert_array_equal(cal.gain_q[cal.active], active[0])
    np.testing.assert_array_equal(cal.offset_q[cal.active], active[1])


def test_an_unphysical_candidate_is_refused(default_cfg):
    _, cal = _calibration(default_cfg)
    sensor = SyntheticSensor(cal.columns, cal.bands)
    sensor.gain[100:110, 2] = 0.05  # a dead stretch of detector (or a blocked diffuser port)
    assert _sweep(cal, sensor) == ["refused"]
    assert r.REFUSALS[cal.last_refusal] == "out_of_range"
    assert cal.version == 0 and not cal.requested


def test_a_candidate_that_costs_the_model_on_site_labels_is_refused(default_cfg):
    cfg, cal = _calibration(default_cfg)
    sensor = SyntheticSensor(cal.columns, cal.bands)
    sensor.gain[:, 3:8] *= 0.9
    asked = []

    def heldback(active_slot, cand_slot, n):
        asked.append((active_slot, cand_slot, n))
        return 0.90, 0.80, 64

    cal.request(1, 0)
    assert _sweep(cal, sensor, heldback=heldback, held=64) == ["refused"]
    assert r.REFUSALS[cal.last_refusal] == "heldback_drop"
    assert asked == [(0, 1, 64)]
    assert (cal.last_active_acc, cal.last_candidate_acc) == (0.90, 0.80)
    # Within the allowed drop, the same candidate goes in.
    cal.request(1, 0)
    assert _sweep(cal, sensor, heldback=lambda a, b, n: (0.90, 0.90 - cfg.radiometry.max_heldback_drop / 2, 64),
                  held=64) == ["committed"]


def test_the_diffuser_sweep_waits_for_a_dark_sweep_after_the_request(default_cfg):
    _, cal = _calibration(default_cfg)
    sensor = SyntheticSensor(cal.columns, cal.bands)
    sensor.window = "diffuser"
    for _ in range(3 * cal.n_chunks):
        cal.step(0.0, sensor, _no_labels, 0)
    assert cal.diffuser_sweeps == 0 and cal.phase == r.IDLE  # no dark estimate yet: no diffuser


def test_a_window_closing_mid_sweep_abandons_it_and_the_next_one_starts_over(default_cfg):
    _, cal = _calibration(default_cfg)
    sensor = SyntheticSensor(cal.columns, cal.bands)
    for _ in range(cal.n_chunks):
        cal.step(0.0, sensor, _no_labels, 0)
    sensor.window = "diffuser"
    for _ in range(3):
        cal.step(0.0, sensor, _no_labels, 0)
    assert cal.phase == r.DIFFUSER and cal.next_diffuser_chunk == 3
    sensor.window = "none"
    cal.step(0.0, sensor, _no_labels, 0)
    assert cal.phase == r.IDLE and cal.sweeps_abandoned == 1 and cal.next_diffuser_chunk == 0
    assert cal.requested  # still wanted
    assert _sweep(cal, sensor, nights=1) == ["committed"]


def test_rollback_restores_the_previous_table_bit_identically(default_cfg):
    _, cal = _calibration(default_cfg)
    sensor = SyntheticSensor(cal.columns, cal.bands)
    assert _sweep(cal, sensor) == ["committed"]
    v1 = (cal.version, cal.gain_q[cal.active].tobytes(), cal.offset_q[cal.active].tobytes())
    sensor.gain[:, 3:8] *= 0.8
    cal.request(1, 0)
    assert _sweep(cal, sensor) == ["committed"]
    assert cal.version == 2
    # The next site labels favour the previous table by more than the allowed drop.
    assert not cal.watch(20, 30, 32)
    assert cal.watch(20, 30, 32)
    assert cal.rollbacks == 1 and cal.rollback_pending_report
    assert (cal.version, cal.gain_q[cal.active].tobytes(), cal.offset_q[cal.active].tobytes()) == v1


def test_no_rollback_to_a_table_a_sweep_has_started_to_overwrite(default_cfg):
    _, cal = _calibration(default_cfg)
    sensor = SyntheticSensor(cal.columns, cal.bands)
    assert _sweep(cal, sensor) == ["committed"]
    cal.request(1, 0)
    sensor.window = "dark"
    for _ in range(cal.n_chunks):
        cal.step(0.0, sensor, _no_labels, 0)
    sensor.window = "diffuser"
    cal.step(0.0, sensor, _no_labels, 0)  # the first chunk of the candidate goes into the other slot
    assert cal.phase == r.DIFFUSER and not cal.can_roll_back()
    active = (cal.active, cal.version, cal.gain_q[cal.active].tobytes())
    assert cal.rollback() is False
    assert (cal.active, cal.version, cal.gain_q[cal.active].tobytes()) == active and cal.rollbacks == 0


def test_dark_sweeps_are_spaced_by_the_interval(default_cfg):
    _, cal = _calibration(default_cfg, dark_sweep_interval_s=900.0)
    sensor = SyntheticSensor(cal.columns, cal.bands)
    t = 0.0
    for _ in range(250):  # 2,500 s of night at one step per 10 s
        cal.step(t, sensor, _no_labels, 0)
        t += 10.0
    assert cal.dark_sweeps == 3  # from 0, 970 and 1,940 s: each sweep takes 8 steps


def test_routine_calibration_is_asked_for_after_the_period(default_cfg):
    cfg, cal = _calibration(default_cfg, diffuser_period_days=1.0)
    sensor = SyntheticSensor(cal.columns, cal.bands)
    assert _sweep(cal, sensor) == ["committed"]
    assert not cal.requested
    sensor.window = "dark"
    cal.step(0.5 * 86400.0, sensor, _no_labels, 0)
    assert not cal.requested
    cal.step(1.01 * 86400.0, sensor, _no_labels, 0)
    assert cal.requested and r.REQUEST_REASONS[cal.request_reason] == "routine"


# -- the calibration inside the flight software -----------------------------------------------
class CalibratingPayload:
    """The conftest FakePayload behind a synthetic sensor: calibration readings by window, and
    every acquisition through the sensor's gain and dark maps (the nominal pixels are kept)."""

    def __init__(self, cfg):
        from tests.flight_sw.conftest import FakePayload, fake_reference

        self.inner = FakePayload(cfg)
        self.reference = dataclasses.replace(fake_reference(cfg), diffuser_reflectance=RHO)
        self.sensor = SyntheticSensor(cfg.payload.detector_columns, cfg.payload.bands, seed=3)
        self.mode = 2
        self.rng = np.random.default_rng(9)
        self.nominal = {}

    def acquire(self, pixels, ancillary):
        self.inner.mode = self.mode
        status = self.inner.acquire(pixels, ancillary)
        n = pixels.shape[0]
        cols = self.rng.integers(0, self.sensor.gain.shape[0], n)
        ancillary[:n, 3] = cols
        ancillary[:n, 4] = np.arange(n)
        self.nominal[id(pixels)] = pixels.copy()
        pixels[...] = self.sensor.pixels(pixels.astype(np.float64), cols)
        return status

    def acquire_calibration(self, kind, first, out):
        return self.sensor.acquire_calibration(kind, first, out)


def _events(fsw, event_id):
    from spacepackets.ecss import PusTm

    out = []
    for raw in fsw.test_packets:
        p = PusTm.unpack(raw, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == d.PUS_SERVICE_EVENT and struct.unpack(">H", data[:2])[0] == event_id:
            out.append(data[2:])
    return out


def test_flight_software_calibrates_reports_and_snapshots_the_table(make_fsw, default_cfg):
    payload = CalibratingPayload(default_cfg)
    fsw = make_fsw(payload=payload)
    assert fsw.calibration.has_diffuser
    cal_task = next(s.index for s in fsw.specs if s.kind == "calibration")
    fsw.inputs.in_contact = True  # the downlink drains to the test's packet list
    tick = 0
    for window, ticks in (("dark", 3000), ("diffuser", 200)):
        payload.sensor.window = window
        for _ in range(ticks):
            fsw.step(tick)
            tick += 1
    assert fsw.calibration.accepted == 1, (fsw.calibration.refused, fsw.calibration.last_refusal)
    cal = fsw.calibration  # every reading is a task run: 8 chunks per sweep
    assert cal.dark_sweeps >= 3 and fsw.task_runs[cal_task] >= 8 * (cal.dark_sweeps + cal.diffuser_sweeps)
    events = [d.CALIBRATION_UPDATE_STRUCT.unpack(e) for e in _events(fsw, d.EVENT_CALIBRATION_UPDATE)]
    assert [(e[0], e[1], e[2]) for e in events] == [(r.OUTCOMES.index("committed"), 1, 0)]  # commissioning
    # Pixels reaching the model are corrected: inference sees the nominal values back.
    payload.mode = 1
    for _ in range(10):
        fsw.step(tick)
        tick += 1
    np.testing.assert_allclose(fsw._pixels, payload.nominal[id(fsw._pixels)], atol=0.003)
    assert np.max(np.abs(payload.sensor.pixels(payload.nominal[id(fsw._pixels)], fsw.learning._anc[:, 3])
                         - payload.nominal[id(fsw._pixels)])) > 0.01  # there was something to correct
    # The table and the job's state survive a reboot bit for bit.
    other = make_fsw(payload=CalibratingPayload(default_cfg))
    other.restore(fsw.snapshot())
    assert other.calibration.version == 1 and other.calibration.active == fsw.calibration.active
    np.testing.assert_array_equal(other.calibration.gain_q, fsw.calibration.gain_q)
    np.testing.assert_array_equal(other.calibration.dark_q, fsw.calibration.dark_q)
    assert other.calibration.last_diffuser_t_s == fsw.calibration.last_diffuser_t_s


def test_drift_alarm_asks_for_a_calibration(make_fsw):
    fsw = make_fsw()
    cal = fsw.calibration
    cal.requested = False
    fsw.learner.drift_events.append((0, 32))
    fsw.learning._report_drift(0.0)
    assert cal.requested and r.REQUEST_REASONS[cal.request_reason] == "drift_alarm"


@pytest.mark.parametrize("bad", [{"chunk_columns": 0}, {"dark_ema": 0.0}, {"min_change": 2.0}])
def test_radiometry_config_is_validated(bad):
    from flight_sw.config import parse_mission_config
    from flight_sw.config.loader import ConfigError

    text = open("mission_configs/default_sso.yaml").read()
    key, value = next(iter(bad.items()))
    with pytest.raises(ConfigError, match=f"radiometry.{key}"):
        parse_mission_config(text + f"\nradiometry:\n  {key}: {value}\n", "test.yaml")
