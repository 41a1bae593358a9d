"""Benchmark group `exec`: simulation speed of the default mission with all tasks.

- ``exec.speed_x_realtime``: simulated seconds per wall second of a whole
  `run_mission` of the default mission (truth preparation, pre-launch model,
  executive with every task, telemetry), median of 3 runs.
- ``exec.empty_loop_speed_x_realtime``: the same host loop (world inputs,
  battery step) around an executive with no tasks, same process: the ceiling the
  full run is measured against. Issue 4 brings the full speed work (frame
  skipping, allocation-free tick path) and the memory figures.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sim.bench import median_time_s

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


def run(quick: bool, log) -> dict[str, float]:
    from flight_sw.config import load_mission_config
    from sim.power_truth import BatteryTruth
    from sim.runner import run_mission

    cfg = load_mission_config(DEFAULT_CONFIG)
    text = DEFAULT_CONFIG.read_text()
    days = 0.25 if quick else 1.0
    with tempfile.TemporaryDirectory() as tmp:
        wall = median_time_s(
            lambda: run_mission(cfg, text, Path(tmp) / "r", days=days, show_progress=False), repeats=3, warmup=1
        )
    sim_s = days * 86400.0
    log(f"default mission, {days:g} d: {wall:.2f} s wall (median of 3)")

    n = int(sim_s)
    solar = np.full(n, 20.0).tolist()
    battery = BatteryTruth(cfg.power.battery)

    class EmptyExecutive:
        energy_j = 0.0

        def step(self, tick: int) -> None:
            return None

    ex = EmptyExecutive()

    def empty_loop() -> None:
        for tick in range(n):
            ex.step(tick)
            battery.step(solar[tick], 9.0 + ex.energy_j, 1.0, float(tick))

    wall_empty = median_time_s(empty_loop, repeats=3, warmup=0)
    log(f"empty executive loop, {days:g} d: {wall_empty:.3f} s wall")
    return {
        "exec.speed_x_realtime": sim_s / wall,
        "exec.empty_loop_speed_x_realtime": sim_s / wall_empty,
    }
