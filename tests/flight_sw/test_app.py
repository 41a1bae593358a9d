"""Flight software behaviour: power admission, eclipse policy, SAFE mode, TLE uplink."""

import dataclasses
import math
import struct
from pathlib import Path

import pytest

from flight_sw.power.tle import TleError
from flight_sw.tmtc import dictionary as d


def _run(fsw, ticks, start=0, soc=None, contact=True):
    for tick in range(start, start + ticks):
        if soc is not None:
            fsw.inputs.soc = soc
        fsw.inputs.in_contact = contact
        fsw.step(tick)


def _total(counts, idx):
    return sum(counts[i] for i in idx)


def _optional(fsw):
    return [s.index for s in fsw.specs if not s.essential]


def test_optional_work_stops_at_the_floor_and_resumes_above_it(make_fsw, default_cfg):
    fsw = make_fsw()
    floor = default_cfg.power.battery.floor_soc
    _run(fsw, 600, soc=0.95)
    opt = _optional(fsw)
    ran_high = _total(fsw.task_runs, opt)
    assert ran_high > 0
    before_runs, before_skips = _total(fsw.task_runs, opt), _total(fsw.task_skipped, opt)
    _run(fsw, 600, start=600, soc=floor - 0.001)
    assert _total(fsw.task_runs, opt) == before_runs  # nothing optional ran below the floor
    assert _total(fsw.task_skipped, opt) > before_skips
    ess = [s.index for s in fsw.specs if s.essential and s.kind in ("power_monitor", "housekeeping")]
    assert all(fsw.task_runs[i] > 0 for i in ess)  # essential tasks never starve
    _run(fsw, 600, start=1200, soc=0.95)
    assert _total(fsw.task_runs, opt) > before_runs


def test_budget_is_debited_and_never_overspent(make_fsw):
    fsw = make_fsw()
    _run(fsw, 3000, soc=0.95)
    s = fsw.budget.state
    assert s.budget_j > 0
    assert s.remaining_j >= -1e-9
    assert s.used_j == pytest.approx(s.budget_j - s.remaining_j)


def test_eclipse_policy(make_fsw, default_cfg):
    fsw = make_fsw()
    _run(fsw, 20, soc=0.95)
    s = fsw.budget.state
    assert math.isfinite(s.umbra_entry_s)
    t_ecl = int(s.umbra_entry_s) + 60
    reserve = default_cfg.power.battery.reserve_soc
    margin = default_cfg.power.budget.eclipse_soc_margin
    opt = _optional(fsw)
    before = _total(fsw.task_runs, opt)
    _run(fsw, 120, start=t_ecl, soc=reserve + margin - 0.01)  # in eclipse, below the margin
    assert _total(fsw.task_runs, opt) == before
    _run(fsw, 120, start=t_ecl + 120, soc=reserve + margin + 0.05)  # enough charge: allowed
    assert _total(fsw.task_runs, opt) > before

    never = dataclasses.replace(
        default_cfg, power=dataclasses.replace(
            default_cfg.power, budget=dataclasses.replace(default_cfg.power.budget, eclipse_policy="never")))
    fsw2 = make_fsw(never)
    _run(fsw2, 20, soc=0.95)
    before = _total(fsw2.task_runs, opt)
    _run(fsw2, 120, start=t_ecl, soc=0.99)
    assert _total(fsw2.task_runs, opt) == before


def _mode_events(fsw):
    from spacepackets.ecss import PusTm

    out = []
    for raw in fsw.test_packets:
        p = PusTm.unpack(raw, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == 5 and struct.unpack(">H", data[:2])[0] == d.EVENT_MODE_CHANGE:
            out.append(struct.unpack(">BBB", data[2:5]))
    return out


def test_safe_mode_on_low_soc_and_back(make_fsw, default_cfg):
    fsw = make_fsw()
    bat = default_cfg.power.battery
    _run(fsw, 10, soc=0.9)
    assert fsw.mode == "TRAINING"
    _run(fsw, 10, start=10, soc=bat.safe_mode_soc - 0.01)
    assert fsw.mode == "SAFE"
    training = next(s.index for s in fsw.specs if s.kind == "training")
    runs = fsw.task_runs[training]
    _run(fsw, 300, start=20, soc=bat.safe_mode_soc + 0.1)  # hysteresis: still SAFE
    assert fsw.mode == "SAFE" and fsw.task_runs[training] == runs
    _run(fsw, 10, start=320, soc=bat.reserve_soc)
    assert fsw.mode == "TRAINING"
    events = _mode_events(fsw)
    reasons = [d.MODE_REASONS[r] for _, _, r in events]
    assert reasons == ["start", "low_soc", "soc_recovered"]
    assert events[1][:2] == (2, 0) and events[2][:2] == (0, 2)


def test_tle_uplink_reopens_the_orbit_and_bad_tle_changes_nothing(make_fsw):
    fsw = make_fsw()
    _run(fsw, 100, soc=0.9)
    old = dataclasses.asdict(fsw.budget.state)
    with pytest.raises(TleError):
        fsw.load_tle(fsw.tle.line1[:-1] + "0", fsw.tle.line2)
    assert dataclasses.asdict(fsw.budget.state) == old
    # A TLE for the same satellite with the node shifted by 30 degrees: new eclipse times.
    line2 = fsw.tle.line2[:17] + "349.3000" + fsw.tle.line2[25:68]
    line2 += str(sum(int(c) if c.isdigit() else (c == "-") for c in line2) % 10)
    index = fsw.orbit_index
    fsw.load_tle(fsw.tle.line1, line2)
    s = fsw.budget.state
    assert fsw.orbit_index == index
    assert s.umbra_entry_s != old["umbra_entry_s"]
    assert s.used_j == pytest.approx(old["used_j"])


def test_inference_skipped_in_the_dark(make_fsw):
    from flight_sw.app import ACQ_DARK

    fsw = make_fsw()
    fsw.test_payload.mode = ACQ_DARK
    _run(fsw, 100, soc=0.9)
    inf = [s.index for s in fsw.specs if s.kind == "inference"]
    assert _total(fsw.task_runs, inf) == 0


def test_start_up_memory_report_matches_allocations(make_fsw):
    fsw = make_fsw()
    # Views into the shared solve arena own no memory; every other buffer is its own allocation.
    owned = [a for a in fsw.buffers.values() if a.base is None]
    views = [a for a in fsw.buffers.values() if a.base is not None]
    assert views and all(v.base is fsw.buffers["ml.solve_arena"] for v in views)
    allocated = sum(a.nbytes for a in owned)
    assert fsw.memory_report["total"] == allocated
    assert set(fsw.memory_report) >= {"ml", "tmtc", "total"}
    assert fsw.buffers["ml.stats_q"].shape == (6,) + (default_feature_dim() + 1,) * 2  # one Gram matrix per class


def default_feature_dim():
    from flight_sw.config import load_mission_config
    from tests.flight_sw.conftest import DEFAULT

    return load_mission_config(DEFAULT).model.feature_dim


def test_kernels_first_needed_late_are_in_memory_from_start_up():
    """Numba loads a compiled kernel at its first call, and the held-back checks first run days
    into a mission, which grew the flight process by about 1 MiB then (issue 15's memory figure).
    In a fresh interpreter (so no other test has loaded them): building the flight software loads
    them, with the very types of the real calls, which then compile or load nothing more."""
    import subprocess
    import sys

    code = """
import numpy as np
from tests.flight_sw.conftest import DEFAULT, FakePayload, digital, fake_reference
from flight_sw.app import FlightSoftware
from flight_sw.config import load_mission_config
from flight_sw.ml import kernels as k
from flight_sw.ml.adaptation import SCALE_MAX, SCALE_MIN, candidate_into, window_stats
from sim.prelaunch import train_prelaunch_model
cfg = digital(load_mission_config(DEFAULT))
watched = (k.gather_recent, k.replay_correct, window_stats, candidate_into)
assert [len(f.signatures) for f in watched] == [0, 0, 0, 0]
image = train_prelaunch_model(cfg, np.random.default_rng(1))
fsw = FlightSoftware(cfg, image, FakePayload(cfg), lambda cadu: None, reference=fake_reference(cfg))
learner, adaptation = fsw.learner, fsw.adaptation
before = [len(f.signatures) for f in watched]
assert all(before), before
learner.replay_count = 8  # zero samples of source 0 in the ring: enough to make the real calls
assert learner.heldback_accuracy(fsw.calibration, 0, 0, 4)[2] == 4
assert learner.replay_accuracy(learner.slots[learner.active]) >= 0.0
reference, out = adaptation.reference.copy(), adaptation.slots[1].copy()
window_stats(adaptation.window, 3, reference)
candidate_into(adaptation.window, 3, reference, adaptation.base_mean, adaptation.base_std, adaptation.base_step,
               adaptation.slots[adaptation.active], out, SCALE_MIN, SCALE_MAX)
assert [len(f.signatures) for f in watched] == before, ([len(f.signatures) for f in watched], before)
print("ok")
"""
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
