"""One simulated mission run: world + flight software, written to a self-describing run folder.

The run folder holds everything needed to understand and reproduce the run:

    config.yaml      the exact config text that was run
    run.json         seed, days, package versions, git revision, command, memory report
    telemetry.bin    what reached the ground: the CADU stream (ASM + TM Transfer Frames
                     carrying the CCSDS/PUS packets; `ground_tools.decode.packet_stream`)
    truth.npz        simulator truth sampled for the review (SoC, power, accuracy ...)
    summary.json     headline figures
    run.log          what happened, in words
    uplink_log.json  (with a ground terminal, e.g. FOP-1) what went up, pass by pass, and
                     which commands were confirmed and verified

Same config and seed give byte-identical telemetry.bin (no wall clock reaches it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

import flight_sw
from flight_sw.config.schema import MissionConfig
from flight_sw.power.tle import parse_tle, tle_age_days
from flight_sw.tmtc.dictionary import DICTIONARY_VERSION
from sim.learning_metrics import ARMS as LEARNING_ARMS
from sim.learning_metrics import learning_figures
from sim.progress import Progress
from sim.simulation import BLOCK_TICKS, Simulation

log = logging.getLogger("flightsim")


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    summary: dict


_KEY_HEX = re.compile(r'(key_hex:\s*)(["\']?)([0-9a-fA-F]{2,})(\2)')


def redact_keys(config_text: str) -> str:
    """The run folder keeps a copy of the config, never the mission's key material."""
    redacted = _KEY_HEX.sub(lambda m: m.group(1) + '"' + "0" * len(m.group(3)) + '"', config_text)
    if redacted != config_text:
        redacted = "# key material redacted by flightsim run (zeros of the same length)\n" + redacted
    return redacted


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy", "numba", "skyfield", "skyfield-data", "sgp4", "pyyaml", "spacepackets", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["flight_sw"] = flight_sw.__version__
    return out


def git_revision(path: Path) -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class RunFolderError(ValueError):
    """The run folder cannot be written: it exists (and --force was not given) or another
    run is writing it; the message says which and what to do."""


@contextlib.contextmanager
def _folder_lock(out_dir: Path):
    """Exclusive, non-blocking lock on `out_dir` for one writer (a lock file beside it; the
    kernel drops it when the process dies, so a killed run never leaves it held)."""
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError(f"{out_dir}: another run is writing this folder now") from None
        yield
    finally:
        os.close(fd)


def run_mission(
    cfg: MissionConfig,
    config_text: str,
    out_dir: Path,
    days: float | None = None,
    seed: int | None = None,
    show_progress: bool = True,
    command: str | None = None,
    realtime_speedup: float | None = None,
    device_url: str | None = None,
    uplink: list[tuple[int, bytes]] | None = None,
    replace: bool = False,
    ground_terminal=None,
) -> RunResult:
    """Simulate the mission and write the run folder; returns its path and summary.

    A transaction: everything is written into a hidden staging folder beside `out_dir`
    and renamed into place when complete, so `out_dir` is either absent, the previous
    complete run, or this complete run, whatever happens meanwhile (a killed run leaves
    only `.NAME.partial`, which the next run into the same place clears). An existing
    non-empty `out_dir` is refused unless `replace` (`flightsim run --force`), which swaps
    the whole folder, archive and report included. A lock file beside it stops a second
    run into the same folder.
    """
    days = cfg.mission.duration_days if days is None else days
    seed = cfg.mission.seed if seed is None else seed
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(out_dir):
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not replace:
            raise RunFolderError(f"{out_dir}: exists and is not empty; add --force to replace it whole "
                                 "(its archive and report included)")
        staging = out_dir.parent / f".{out_dir.name}.partial"
        if staging.exists():
            shutil.rmtree(staging)  # a killed run's leftovers (we hold the lock)
        staging.mkdir()
        result = _run_into(staging, cfg, config_text, days, seed, show_progress, command, realtime_speedup,
                           device_url, uplink, ground_terminal)
        _swap_into_place(staging, out_dir)
    return RunResult(out_dir, result.summary)


def _run_into(staging: Path, cfg, config_text, days, seed, show_progress, command, realtime_speedup, device_url,
              uplink, ground_terminal=None) -> RunResult:
    (staging / "config.yaml").write_text(redact_keys(config_text), encoding="utf-8")
    handler = logging.FileHandler(staging / "run.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    wall0 = time.perf_counter()
    try:
        result = _run(cfg, staging, days, seed, show_progress, command, realtime_speedup, device_url, uplink,
                      ground_terminal)
    finally:
        log.removeHandler(handler)
        handler.close()
    result.summary["wall_time_s"] = round(time.perf_counter() - wall0, 3)
    (staging / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
    return result


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the complete staging folder to `out_dir`, replacing what was there as a whole."""
    old = out_dir.parent / f".{out_dir.name}.replaced"
    if old.exists():
        shutil.rmtree(old)
    if out_dir.exists():
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def unreachable_device(solver, url: str) -> str | None:
    """A warning when the analog backend's device cannot be reached at start-up (None when it can,
    or when there is no link to reach: digital backend, in-process emulator). The run still
    starts: the driver answers from its digital fallback and the `device_health` task retries."""
    from flight_sw.devices.transport import InProcessTransport

    transport = getattr(solver, "transport", None)
    if transport is None or isinstance(transport, InProcessTransport):
        return None
    try:
        transport.reopen()
    except OSError as exc:
        return (f"warning: device {url}: unreachable at start-up ({exc}); solves fall back to the digital "
                "solver until a health check finds the device (fdir.device_check_initial_s)")
    return None


def _run(
    cfg: MissionConfig, out_dir: Path, days: float, seed: int, show_progress: bool, command: str | None,
    realtime_speedup: float | None,
    device_url: str | None = None,
    uplink: list[tuple[int, bytes]] | None = None,
    ground_terminal=None,
) -> RunResult:
    """`ground_terminal`: a `sim.ground_link.GroundTerminal` (its log goes to uplink_log.json)."""
    frame_s = cfg.executive.minor_frame_s
    n_ticks = int(round(days * 86400.0 / frame_s))
    duration_s = n_ticks * frame_s
    tle = parse_tle(cfg.orbit.tle_line1, cfg.orbit.tle_line2)
    age0 = tle_age_days(tle, cfg.mission.start_utc)
    age1 = age0 + days
    log.info(f"mission {cfg.mission.name!r}: {days:g} days ({n_ticks:,} minor frames), seed {seed}")
    if max(abs(age0), abs(age1)) > cfg.orbit.tle_max_age_days:
        msg = (
            f"warning: orbit.tle_max_age_days: the run reaches {max(abs(age0), abs(age1)):.1f} days from the "
            f"TLE epoch (limit {cfg.orbit.tle_max_age_days:g}); SGP4 truth and prediction degrade"
        )
        log.warning(msg)
        print(msg, file=sys.stderr)

    t_prep = time.perf_counter()
    sim = None
    tm_path = out_dir / "telemetry.bin"
    tm_file = open(tm_path, "wb")  # noqa: SIM115 - closed below
    downlinked = [0, 0]

    def sink(cadu: bytes) -> None:
        tm_file.write(cadu)
        downlinked[0] += 1
        downlinked[1] += len(cadu)

    executor_factory = None
    if realtime_speedup is not None:
        from flight_sw.exec.realtime import PacedClock, RealTimeExecutive

        def executor_factory(fsw):
            clock = PacedClock(frame_s, time.monotonic, time.sleep, realtime_speedup)
            return RealTimeExecutive(fsw, clock, cfg.fdir.watchdog_grace_s)

    device_warning = None
    try:
        sim = Simulation(
            cfg, seed, duration_s, sink, executor_factory=executor_factory, device_url=device_url, uplink=uplink,
            ground_terminal=ground_terminal,
        )
        world, fsw = sim.world, sim.fsw
        log.info(
            f"truth prepared in {time.perf_counter() - t_prep:.1f} s: {len(world.eclipses)} eclipses, "
            f"{len(world.contacts)} contacts, {len(world.overpasses)} calibration-site passes"
        )
        log.info("start-up memory report (bytes): " + json.dumps(fsw.memory_report))
        device_warning = unreachable_device(fsw.solver, device_url or cfg.device.url)
        if device_warning:
            log.warning(device_warning)
            print(device_warning, file=sys.stderr)
        feas = fsw.feasibility
        log.info(
            f"essential load {feas.essential_power_w:.2f} W feasible on all {feas.orbits} orbits; "
            f"worst orbit {feas.worst_orbit} margin {feas.worst_margin_j:.0f} J"
        )
        progress = Progress(days, "simulating", "days", enabled=show_progress)
        chunk = BLOCK_TICKS if sim.executor is None else 60
        while not sim.done:
            sim.advance(chunk)
            progress.update(sim.tick * frame_s / 86400.0)
        progress.close()
    finally:
        tm_file.close()
        if sim is not None and sim.executor is not None:
            sim.executor.close()

    tl = sim.log
    ev = world.eclipses
    np.savez_compressed(
        out_dir / "truth.npz",
        t_s=np.array(tl.t_s), soc=np.array(tl.soc), solar_w=np.array(tl.solar_w), load_w=np.array(tl.load_w),
        illumination=np.array(tl.illumination), in_contact=np.array(tl.in_contact, dtype=bool),
        acc_t_s=np.array(tl.acc_t_s), acc_onboard=np.array(tl.acc_onboard), acc_frozen=np.array(tl.acc_frozen),
        acc_ground=np.array(tl.acc_ground), acc_calibration=np.array(tl.acc_calibration),
        acc_selftrain=np.array(tl.acc_selftrain), acc_bound=np.array(tl.acc_bound),
        teacher_t_s=np.array(tl.acc_teacher_t_s), teacher_acc=np.array(tl.acc_teacher),
        label_t_s=np.array(tl.lab_t_s), label_source=np.array(tl.lab_source, dtype=np.int64),
        label_n=np.array(tl.lab_n, dtype=np.int64), label_agree=np.array(tl.lab_agree, dtype=np.int64),
        ground_uplink_s=np.array([u[0] for u in sim.ground.uplinks]),
        umbra_entry_s=ev.umbra_entry_s, umbra_exit_s=ev.umbra_exit_s,
        contact_start_s=np.array([p.start_s for p in world.contacts]),
        contact_end_s=np.array([p.end_s for p in world.contacts]),
    )
    summary = _summary(cfg, fsw, world, days, seed, tl.acc_t_s, tl.acc_onboard, tl.acc_frozen, downlinked, tl.min_soc)
    shift_day = cfg.payload.drift.abrupt_shift_day
    shift_s = shift_day * 86400.0 if shift_day is not None and shift_day * 86400.0 < duration_s else None
    figures = learning_figures(
        {"acc_t_s": np.array(tl.acc_t_s), **{f"acc_{a}": np.array(getattr(tl, f"acc_{a}")) for a in LEARNING_ARMS}},
        world.orbit.period_s, shift_s,
    )
    for arm, f in figures.items():
        summary[f"{arm}_mean_drop_pts"] = round(f["mean_drop_pts"], 2)
        if shift_s is not None:
            rec = f["recovery_orbits"]
            summary[f"{arm}_recovery_orbits"] = None if math.isnan(rec) else rec
    summary["ground_loop_uplinks"] = len(sim.ground.uplinks)
    summary["device_warning"] = device_warning
    for name, count in zip(("site", "teacher", "self"), fsw.learner.labels_by_source, strict=True):
        summary[f"labels_{name}"] = count
    src = np.asarray(tl.lab_source, dtype=np.int64)
    for code, name in enumerate(("site", "teacher", "self")):
        n = int(np.sum(np.asarray(tl.lab_n)[src == code])) if len(src) else 0
        agree = int(np.sum(np.asarray(tl.lab_agree)[src == code])) if len(src) else 0
        summary[f"label_agreement_{name}"] = round(agree / n, 4) if n else None
    st = getattr(fsw.solver, "stats", None)
    summary["optimizer_backend"] = cfg.device.backend
    summary["telecommands_uplinked"] = sim.frames_uplinked
    tc = fsw.tc
    summary["telecommands_accepted"] = getattr(tc, "accepted", None)
    summary["telecommands_rejected"] = getattr(tc, "rejected", None)
    files = ["config.yaml", "run.json", "telemetry.bin", "truth.npz", "summary.json", "run.log"]
    if ground_terminal is not None:
        summary.update(ground_terminal.summary())
        (out_dir / "uplink_log.json").write_text(json.dumps(ground_terminal.report(), indent=1) + "\n",
                                                 encoding="utf-8")
        files.append("uplink_log.json")
    if st is not None:
        summary["solves_analog"] = st.analog_accepted
        summary["solves_fallback"] = st.fallbacks
        summary["solves_digital_by_energy_rule"] = st.fallback_energy  # of solves_fallback; not a fault
        summary["device_health"] = ("OK", "DEGRADED", "FAILED")[st.health]
        summary["device_checks"] = fsw.device_checks
        summary["device_recoveries"] = fsw.device_recoveries
    if sim.executor is not None:
        jitter_ms = np.array(sim.executor.jitter_s) * 1000.0
        summary["realtime_speedup"] = realtime_speedup
        summary["tick_jitter_p50_ms"] = round(float(np.percentile(jitter_ms, 50)), 3)
        summary["tick_jitter_p99_ms"] = round(float(np.percentile(jitter_ms, 99)), 3)
        summary["hung_tasks"] = sim.executor.hung_tasks
        summary["late_ticks"] = sim.executor.late_ticks  # started later than the watchdog grace
        summary["skipped_ticks"] = sim.executor.skipped_ticks  # a second hang waited for a thread
    run_info = {
        "mission": cfg.mission.name,
        "seed": seed,
        "days": days,
        "minor_frames": n_ticks,
        "start_utc": cfg.mission.start_utc.isoformat(),
        "dictionary_version": DICTIONARY_VERSION,
        "git_revision": git_revision(Path(__file__).resolve().parent.parent),
        "versions": package_versions(),
        "command": command or " ".join(sys.argv),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "memory_report_bytes": fsw.memory_report,
        "files": files,
    }
    (out_dir / "run.json").write_text(json.dumps(run_info, indent=2) + "\n", encoding="utf-8")
    for key, value in summary.items():
        log.info(f"{key}: {value}")
    return RunResult(out_dir, summary)


def _store_summary(store) -> dict:
    """The onboard TM store (PUS 15) at the end: stored, played back, waiting, lost."""
    if store is None:
        return {}
    return {"store_packets_stored": store.stored, "store_packets_played_back": store.played_back,
            "store_packets_waiting_at_end": store.open_pending, "store_packets_lost": store.lost}


def _mean_in(t: np.ndarray, v: np.ndarray, lo: float, hi: float) -> float:
    m = (t >= lo) & (t < hi)
    return float(np.mean(v[m])) if m.any() else float("nan")


def _summary(cfg, fsw, world, days, seed, acc_t, acc_onboard, acc_frozen, downlinked, min_soc) -> dict:
    t = np.array(acc_t)
    on = np.array(acc_onboard)
    fr = np.array(acc_frozen)
    bat = world.battery
    shift_day = cfg.payload.drift.abrupt_shift_day
    pre_hi = (shift_day * 86400.0) if shift_day is not None else days * 86400.0
    last_day = max(days - 1.0, 0.0) * 86400.0
    energy_training = sum(fsw.task_energy_j[s.index] for s in fsw.specs if s.kind == "training")
    out = {
        "mission": cfg.mission.name,
        "seed": seed,
        "days": days,
        "orbits": fsw.orbit_index + 1,
        "eclipses": len(world.eclipses),
        "max_umbra_min": round(float(np.nanmax(world.eclipses.umbra_exit_s - world.eclipses.umbra_entry_s)) / 60.0, 2)
        if len(world.eclipses) else 0.0,
        "contacts": len(world.contacts),
        "calibration_passes": len(world.overpasses),
        "min_soc": round(min_soc, 4),
        "final_soc": round(bat.soc, 4),
        "energy_generated_j": round(bat.generated_j, 1),
        "energy_consumed_j": round(bat.consumed_j, 1),
        "energy_training_j": round(energy_training, 1),
        "brownout_deficit_j": round(bat.deficit_j, 3),
        "optional_runs_skipped": fsw.optional_skipped_total,
        "overruns": fsw.overruns_total,
        "deadline_misses": fsw.deadline_misses_total,
        "mode_transitions": fsw.modes.transitions,
        "final_mode": fsw.mode,
        "training_updates_committed": fsw.learner.accepted,
        "training_updates_refused": fsw.learner.refused,
        "rollbacks": fsw.learner.rollbacks,
        "model_version": fsw.learner.version,
        "calibration_version": fsw.calibration.version,
        "calibration_committed": fsw.calibration.accepted,
        "calibration_refused": fsw.calibration.refused,
        "calibration_rollbacks": fsw.calibration.rollbacks,
        "calibration_diffuser_sweeps": fsw.calibration.diffuser_sweeps,
        "calibration_hot_column_bands": fsw.calibration.hot_count,
        "labels_received": fsw.learner.labels_total,
        "accuracy_onboard_pre_shift": round(_mean_in(t, on, 0.0, pre_hi), 4),
        "accuracy_frozen_pre_shift": round(_mean_in(t, fr, 0.0, pre_hi), 4),
        "accuracy_onboard_last_day": round(_mean_in(t, on, last_day, np.inf), 4),
        "accuracy_frozen_last_day": round(_mean_in(t, fr, last_day, np.inf), 4),
        "packets_generated": fsw.tm.packets,
        "packets_downlinked": fsw.downlink.sent,  # handed to the framer (a frame's worth may wait)
        "tm_frames_downlinked": downlinked[0],
        "bytes_downlinked": downlinked[1],
        "downlink_backlog_at_end": fsw.downlink.count,
        "downlink_overflow": fsw.downlink.overflow,
        **_store_summary(fsw.downlink.store),
    }
    return out
