"""Battery bookkeeping: generated - consumed - losses == change in stored energy."""

from pathlib import Path

import numpy as np
import pytest

from flight_sw.config import load_mission_config
from sim.power_truth import BatteryTruth, SolarArrayTruth
from sim.world import World

DEFAULT = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


def _balance(b: BatteryTruth, stored0: float) -> float:
    return b.generated_j - b.consumed_j - b.charge_loss_j - b.discharge_loss_j - b.shunt_j - (b.stored_j - stored0)


def test_energy_conserved_over_a_simulated_day():
    cfg = load_mission_config(DEFAULT)
    world = World(cfg, 86400.0, np.random.default_rng(0))
    bat = world.battery
    stored0 = bat.stored_j
    rng = np.random.default_rng(1)
    for tick0 in range(0, 86400, 21600):
        blk = world.block(tick0, 21600)
        loads = 9.0 + 12.0 * (rng.random(21600) < 0.3)  # bursty optional work
        for gen, load, t in zip(blk.solar_w.tolist(), loads.tolist(), blk.t_s.tolist(), strict=True):
            bat.step(gen, load, 1.0, t)
    assert bat.generated_j > 1e6 and bat.charge_loss_j > 0 and bat.discharge_loss_j > 0
    assert abs(_balance(bat, stored0)) < 1e-6 * bat.generated_j


@pytest.mark.parametrize("gen,load", [(50.0, 1.0), (0.0, 500.0), (10.0, 10.0)])
def test_limits_shunt_and_brownout_still_balance(gen, load):
    cfg = load_mission_config(DEFAULT)
    bat = BatteryTruth(cfg.power.battery)
    stored0 = bat.stored_j
    for i in range(20000):
        bat.step(gen, load, 1.0, float(i))
    assert 0.0 <= bat.soc <= 1.0
    assert abs(_balance(bat, stored0)) < 1e-6 * max(bat.generated_j, bat.consumed_j, 1.0)
    if gen > load:
        assert bat.soc == pytest.approx(1.0) and bat.shunt_j > 0
    if load > gen:
        assert bat.soc == pytest.approx(0.0) and bat.deficit_j > 0


def test_array_power_scales_with_illumination_and_age():
    cfg = load_mission_config(DEFAULT)
    arr = SolarArrayTruth(cfg.power.solar_array)
    p = arr.power_w(np.array([1.0, 0.5, 0.0, 1.0]), np.ones(4), np.array([0.0, 0.0, 0.0, 365.25 * 86400]))
    assert p[1] == pytest.approx(p[0] / 2) and p[2] == 0.0
    assert p[3] == pytest.approx(p[0] * (1 - cfg.power.solar_array.degradation_per_year))
