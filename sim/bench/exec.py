"""Benchmark group `exec`: speed, memory and real-time behaviour of the executive.

- ``exec.speed_x_realtime``: simulated seconds per wall second of the default mission
  with every task, the simulation loop (truth blocks, executive, battery, telemetry)
  after set-up; median of 3 runs of one simulated day (quick: 0.25 day). The optimizer
  is pinned to the digital backend here; ``exec.speed_x_realtime_mission_backend`` is
  the same loop with the mission's own backend (the analog emulator in-process, whose
  host cost is simulation work).
- ``exec.empty_loop_speed_x_realtime``: the same loop stepping every frame with an
  executive that does nothing (no idle-frame crossing): the baseline, same process.
- ``exec.heap_growth_bytes_per_100k_ticks``: traced Python heap growth of the flight
  software over 100,000 ticks after warm-up (payload from a fixed pool, packets
  consumed by the ground).
- ``exec.peak_rss_mib_30d``: peak resident memory of `flightsim run --days 30` in a
  child process (quick: 3 days, scaled nothing: the figure is then the 3-day peak).
- ``exec.split_*``, ``exec.restart_recoveries``, ``exec.flight_process_rss_growth_mib_30d``:
  the split deployment (flight software in its own process), defined in `sim.bench.split`.
- ``exec.rt_jitter_p50_ms`` / ``exec.rt_jitter_p99_ms``: lateness of tick wake-ups in
  real-time mode at 1x over a 2-minute run, 120 ticks (quick: 20 s; 10 minutes until
  2026-12-04, then 3 minutes, then 2 when the split deployment's runs joined the group: shortened
  to keep `make bench` near its 40-minute target).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from sim.bench import median_time_s

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


def _loop_speed(cfg, image, seconds: float, empty: bool) -> float:
    from sim.simulation import Simulation

    sim = Simulation(cfg, cfg.mission.seed, seconds, lambda p: None, image=image, skip_idle=not empty)
    if empty:
        sim.fsw.step = lambda tick, generation=None: None
    t0 = time.perf_counter()
    sim.advance(sim.n_ticks)
    return time.perf_counter() - t0


def _heap_growth(cfg, image) -> float:
    from flight_sw.app import FlightSoftware
    from flight_sw.memory import ANCILLARY_WIDTH
    from flight_sw.ml.labels import ANC_INDEX
    from sim.scene import SceneTruth

    scene = SceneTruth(cfg.payload, np.random.default_rng(0))
    b = cfg.payload.samples_per_acquisition
    pool_x = np.zeros((64, b, cfg.payload.bands), np.float32)
    # site 0, map row = the true class (fake_reference), detector column, position in the acquisition
    pool_a = np.zeros((64, b, ANCILLARY_WIDTH), np.int64)
    lab = np.zeros(b, np.int64)
    for i in range(64):
        scene.sample(0.0, b, scene.base_mix, 45.0, pool_x[i], lab)
        pool_a[i, :, 1] = lab
        pool_a[i, :, ANC_INDEX] = np.arange(b)

    class Pool:
        i = 0

        def acquire(self, pixels, ancillary):
            self.i = (self.i + 1) % 64
            np.copyto(pixels, pool_x[self.i])
            np.copyto(ancillary, pool_a[self.i])
            return 2

    from flight_sw.memory import SITE_MAP_CELLS
    from sim.prelaunch import reference_data

    rows = np.arange(SITE_MAP_CELLS) % len(cfg.payload.classes)
    maps = np.broadcast_to(rows[None, :, None], (len(cfg.calibration_sites), SITE_MAP_CELLS, SITE_MAP_CELLS))
    fsw = FlightSoftware(cfg, image, Pool(), lambda p: None, reference=reference_data(cfg, maps, None))
    for tick in range(20000):
        fsw.inputs.soc = 0.9
        fsw.inputs.in_contact = tick % 600 < 300
        fsw.step(tick)
    tracemalloc.start()
    c0, _ = tracemalloc.get_traced_memory()
    for tick in range(20000, 120000):
        fsw.inputs.soc = 0.9
        fsw.inputs.in_contact = tick % 600 < 300
        fsw.step(tick)
    c1, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return float(c1 - c0)


def _peak_rss_mib(days: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import resource, sys\n"
            "from sim.cli import main\n"
            f"rc = main(['run', {str(DEFAULT_CONFIG)!r}, '--days', '{days}', '--out', {tmp!r} + '/r', '--quiet'])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
            "sys.exit(rc)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0  # ru_maxrss is in KiB on Linux


def _rt_jitter_ms(cfg, image, seconds: float) -> tuple[float, float]:
    from flight_sw.exec.realtime import PacedClock, RealTimeExecutive
    from sim.simulation import Simulation

    def factory(fsw):
        return RealTimeExecutive(fsw, PacedClock(cfg.executive.minor_frame_s, time.monotonic, time.sleep, 1.0),
                                 cfg.fdir.watchdog_grace_s)

    sim = Simulation(cfg, cfg.mission.seed, seconds, lambda p: None, image=image, executor_factory=factory)
    try:
        sim.advance(sim.n_ticks)
    finally:
        sim.executor.close()
    jitter = np.array(sim.executor.jitter_s[1:]) * 1000.0
    return float(np.percentile(jitter, 50)), float(np.percentile(jitter, 99))


def run(quick: bool, log) -> dict[str, float]:
    from flight_sw.config import load_mission_config
    from sim.prelaunch import train_prelaunch_model
    from sim.simulation import spawn_rngs

    mission = load_mission_config(DEFAULT_CONFIG)
    # This group measures the executive: the optimizer is pinned to the digital backend (the
    # analog emulator's host cost is simulation, not flight, work; the analog group has it).
    cfg = mission.with_optimizer("digital")
    image = train_prelaunch_model(cfg, spawn_rngs(cfg.mission.seed)["prelaunch"])
    seconds = (0.25 if quick else 1.0) * 86400.0
    wall = median_time_s(lambda: _loop_speed(cfg, image, seconds, empty=False), repeats=3, warmup=1)
    log(f"default mission loop, {seconds / 86400:g} d, digital optimizer: {wall:.3f} s wall (median of 3)")
    wall_analog = median_time_s(lambda: _loop_speed(mission, image, seconds, empty=False), repeats=3, warmup=0)
    log(f"  the same with the mission's {mission.device.backend} optimizer (emulator in-process): {wall_analog:.3f} s "
        f"wall -> {seconds / wall_analog:,.0f}x real time")
    wall_empty = median_time_s(lambda: _loop_speed(cfg, image, seconds, empty=True), repeats=3, warmup=0)
    log(f"empty executive loop stepping every frame: {wall_empty:.3f} s wall")
    growth = _heap_growth(cfg, image)
    log(f"heap growth over 100,000 ticks: {growth:.0f} B")
    days = 3.0 if quick else 30.0
    rss = _peak_rss_mib(days)
    log(f"peak RSS of a {days:g}-day run: {rss:.0f} MiB")
    rt_s = 20.0 if quick else 120.0
    log(f"real-time run at 1x for {rt_s:g} s ...")
    p50, p99 = _rt_jitter_ms(cfg, image, rt_s)
    log(f"tick jitter p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    from sim.bench import split

    log("split deployment (flightsim serve + flightsw run) ...")
    split_figures = split.run(quick, log)
    return {
        **split_figures,
        "exec.speed_x_realtime": seconds / wall,
        "exec.speed_x_realtime_mission_backend": seconds / wall_analog,
        "exec.empty_loop_speed_x_realtime": seconds / wall_empty,
        "exec.heap_growth_bytes_per_100k_ticks": growth,
        "exec.peak_rss_mib_30d": rss,
        "exec.rt_jitter_p50_ms": p50,
        "exec.rt_jitter_p99_ms": p99,
    }
