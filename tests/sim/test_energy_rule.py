"""The driver's energy rule (flight_sw/devices/driver.py, `device.driver_energy_aware`): a problem
shape goes to the digital solver while the analog path measured dearer on it, with periodic probes."""

from __future__ import annotations

import numpy as np

from flight_sw.devices.driver import FALLBACK_REASONS, FB_ENERGY, AnalogDriver, DriverConfig
from flight_sw.devices.optimizer import PATH_ANALOG, PATH_DIGITAL
from flight_sw.devices.transport import InProcessTransport
from sim.analog import DeviceEndpoint, DeviceParams
from sim.analog.problems import random_spd


def _driver(energy_aware: bool, probe: int = 5) -> AnalogDriver:
    ep = DeviceEndpoint(DeviceParams(), 21)
    return AnalogDriver(48, 6, InProcessTransport(ep), DriverConfig(energy_aware=energy_aware,
                                                                     energy_probe_solves=probe))


def _problems(rng, n, m, count):
    return [(random_spd(rng, n, 3.0), rng.standard_normal((n, m))) for _ in range(count)]


def test_the_energy_rule_keeps_cheap_shapes_on_the_device_and_sends_dear_ones_digital():
    rng = np.random.default_rng(3)
    drv = _driver(True, probe=5)
    paths = {"head": [], "layer": []}
    for (qh, bh), (ql, bl) in zip(_problems(rng, 33, 6, 12), _problems(rng, 48, 1, 12), strict=True):
        x, rep = drv.solve(qh, bh)
        assert rep.ok and np.linalg.norm(qh @ x - bh) <= 1e-6 * np.linalg.norm(bh)
        paths["head"].append((rep.path, rep.fallback_reason))
        x, rep = drv.solve(ql, bl)
        assert rep.ok and np.linalg.norm(ql @ x - bl) <= 1e-6 * np.linalg.norm(bl)
        paths["layer"].append((rep.path, rep.fallback_reason))
    # n = 48, one column: the device is the cheaper path, every solve stays on it
    assert all(p == PATH_ANALOG for p, _ in paths["layer"])
    # n = 33, six columns: measured once on the device, then digital, with a probe every 5th solve
    head = [p for p, _ in paths["head"]]
    assert head[0] == PATH_ANALOG
    assert head[1:5] == [PATH_DIGITAL] * 4 and head[5] == PATH_ANALOG and head[6:10] == [PATH_DIGITAL] * 4
    assert all(r == FB_ENERGY for p, r in paths["head"] if p == PATH_DIGITAL)
    assert FALLBACK_REASONS[FB_ENERGY] == "energy"
    st = drv.stats
    assert st.fallback_energy == head.count(PATH_DIGITAL) and st.fallback_device == 0
    assert st.energy_wasted_j == 0.0  # a rule decision spends nothing on the device


def test_the_energy_rule_saves_energy_on_the_missions_shapes():
    """Same problems, rule off and on: the total modelled energy falls, every answer meets 1e-6."""
    rng = np.random.default_rng(4)
    problems = [p for pair in zip(_problems(rng, 33, 6, 20), _problems(rng, 48, 1, 3), strict=False) for p in pair]
    energy = {}
    for rule in (False, True):
        drv = _driver(rule, probe=50)
        total = 0.0
        for q, b in problems:
            x, rep = drv.solve(q, b)
            assert rep.ok and np.linalg.norm(q @ x - b) <= 1e-6 * np.linalg.norm(b)
            total += rep.energy_j
        energy[rule] = total
    assert energy[True] < energy[False]


def test_the_energy_table_survives_a_snapshot():
    rng = np.random.default_rng(5)
    drv = _driver(True, probe=5)
    for q, b in _problems(rng, 33, 6, 3):
        drv.solve(q, b)
    state = drv.state_dict()
    again = _driver(True, probe=5)
    again.load_state_dict(state)
    q, b = _problems(rng, 33, 6, 1)[0]
    assert again.solve(q, b)[1].fallback_reason == drv.solve(q, b)[1].fallback_reason == FB_ENERGY


def test_off_by_default_every_problem_tries_the_device():
    rng = np.random.default_rng(6)
    drv = _driver(False)
    assert all(drv.solve(q, b)[1].path == PATH_ANALOG for q, b in _problems(rng, 33, 6, 4))
