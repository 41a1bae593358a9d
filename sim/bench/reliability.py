"""Benchmark group `reliability`: runs that cannot half-happen (issue 16).

- ``reliability.rt_max_threads``: peak thread count of the process during a real-time
  run of the default mission (the real flight software and world, digital optimizer) paced
  far faster than the host can step it, so it falls behind wall time by
  ``reliability.rt_behind_factor`` (wall time taken over wall time scheduled; at least
  100). Before the watchdog's clock started with the tick, every tick later than the
  grace was declared hung and got a new thread, and such runs died at thousands of threads.
- ``reliability.rt_hung_tasks``: ticks the watchdog declared hung in that run (0: late is
  not hung).
- ``reliability.device_recovery_s``: simulated seconds from a device server's restart to the
  first solve the device serves again (`sim/hil/recovery.py`: the emulator served over TCP
  is killed under the running flight software, stays dead through three health checks at
  60, 120 and 240 s, and comes back on the same port; checks back off up to 240 s there,
  3,600 s in the default config).
- ``reliability.validate_run_disagreements``: generated configs (``reliability.validate_configs``:
  1,000; quick 100; `sim/bench/config_cases.py`) that the validation of `flightsim validate`
  accepts but whose run set-up fails (0); ``reliability.validate_accepted`` of them accepted.
- ``reliability.cli_cases``: subcommand x bad input cases of both command lines
  (`sim/bench/cli_cases.py`: bad paths, bad values, output into files, folders and system
  folders, a closed output pipe); ``reliability.cli_tracebacks``: cases that ended in a
  traceback (0), ``reliability.cli_wrong_exits``: cases that did not end with a message and
  exit status 2 (0).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"
#: Wall seconds per minor frame asked of the real-time executive: 0.1 us, far below the
#: ~0.1 ms or more a tick of the flight software and the world takes on this machine.
FRAME_WALL_S = 1e-7


def run(quick: bool, log) -> dict[str, float]:
    from flight_sw.config import load_mission_config
    from flight_sw.exec.realtime import PacedClock, RealTimeExecutive
    from sim.simulation import Simulation

    cfg = load_mission_config(DEFAULT_CONFIG).with_optimizer("digital")
    ticks = 3000 if quick else 20000
    frame_s = cfg.executive.minor_frame_s
    executives = []

    def factory(fsw):
        clock = PacedClock(frame_s, time.monotonic, time.sleep, speedup=frame_s / FRAME_WALL_S)
        executives.append(RealTimeExecutive(fsw, clock, cfg.fdir.watchdog_grace_s))
        return executives[0]

    sim = Simulation(cfg, 1, ticks * frame_s, lambda p: None, executor_factory=factory)
    rt = executives[0]
    inner = rt.run_tick
    peak = [threading.active_count()]

    def run_tick(tick: int) -> None:
        inner(tick)
        peak[0] = max(peak[0], threading.active_count())

    sim._step = run_tick
    log(f"real-time run of {ticks} ticks asked at {FRAME_WALL_S * 1e6:g} us per frame "
        f"(watchdog grace {cfg.fdir.watchdog_grace_s:g} s)")
    t0 = time.monotonic()
    try:
        sim.advance(ticks)
    finally:
        rt.close()
    wall = time.monotonic() - t0
    behind = wall / (ticks * FRAME_WALL_S)
    log(f"  {wall:.1f} s of wall time: {behind:.0f}x behind; peak {peak[0]} threads, {rt.hung_tasks} ticks "
        f"declared hung, {rt.late_ticks} later than the grace, {rt.skipped_ticks} skipped")
    rec = _device_recovery(cfg)
    log(f"device server killed at a training solve, FAILED at t = {rec.failed_at_s:.0f} s, "
        f"{rec.checks_while_dead} failed checks, restarted at {rec.restarted_at_s:.0f} s; "
        f"an analog-served solve {rec.recovery_s:.0f} s later (mode {rec.fsw.mode})")
    cli = _cli_cases(log)
    return {
        **cli,
        **_validate_run(log, 100 if quick else 1000),
        "reliability.device_recovery_s": rec.recovery_s,
        "reliability.rt_max_threads": float(peak[0]),
        "reliability.rt_behind_factor": behind,
        "reliability.rt_hung_tasks": float(rt.hung_tasks),
    }


def _device_recovery(cfg):
    import numpy as np

    from sim.hil.recovery import run_device_restart
    from sim.prelaunch import train_prelaunch_model

    return run_device_restart(cfg, train_prelaunch_model(cfg, np.random.default_rng(1)), dead_checks=3)


def _cli_cases(log) -> dict[str, float]:
    import subprocess
    import sys
    import tempfile

    from sim.bench.cli_cases import CASES, make_places, run_all

    root = DEFAULT_CONFIG.parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "sim.cli", "run", str(DEFAULT_CONFIG), "--days", "0.02", "--out",
                        str(run_dir), "--quiet"], check=True, capture_output=True, cwd=root)
        results = run_all(make_places(Path(tmp), run_dir, DEFAULT_CONFIG), root)
    tracebacks = sum(1 for _, problem in results if problem and problem.startswith("traceback"))
    wrong = sum(1 for _, problem in results if problem)
    for case, problem in results:
        if problem:
            log(f"  {case.name}: {problem.splitlines()[0]}")
    log(f"command lines: {len(CASES)} bad-input cases, {tracebacks} tracebacks, {wrong} not ending with exit 2")
    return {"reliability.cli_cases": float(len(CASES)), "reliability.cli_tracebacks": float(tracebacks),
            "reliability.cli_wrong_exits": float(wrong)}


def _validate_run(log, n: int) -> dict[str, float]:
    from collections import Counter

    from sim.bench.config_cases import judge

    t0 = time.monotonic()
    verdicts = Counter()
    for seed in range(n):
        verdict, why = judge(seed)
        verdicts[verdict] += 1
        if verdict == "disagree":
            log(f"  generated config {seed}: validation accepted it, set-up failed: {why}")
    log(f"one validation: {n} generated configs, {verdicts['ok']} accepted and set up, {verdicts['refused']} refused, "
        f"{verdicts['disagree']} disagreements ({time.monotonic() - t0:.0f} s)")
    return {"reliability.validate_configs": float(n), "reliability.validate_accepted": float(verdicts["ok"]),
            "reliability.validate_run_disagreements": float(verdicts["disagree"])}
