"""One simulated mission run: world + flight software, written to a self-describing run folder.

The run folder holds everything needed to understand and reproduce the run:

    config.yaml      the exact config text that was run
    run.json         seed, days, package versions, git revision, command, memory report
    telemetry.bin    the packets that reached the ground (CCSDS/PUS, concatenated)
    truth.npz        simulator truth sampled for the review (SoC, power, accuracy ...)
    summary.json     headline figures
    run.log          what happened, in words

Same config and seed give byte-identical telemetry.bin (no wall clock reaches it).
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

import flight_sw
from flight_sw.app import FlightSoftware
from flight_sw.config.schema import MissionConfig
from flight_sw.ml.model import FeatureExtractor
from flight_sw.power.tle import parse_tle, tle_age_days
from flight_sw.tmtc.dictionary import DICTIONARY_VERSION
from sim.prelaunch import train_prelaunch_model
from sim.progress import Progress
from sim.world import PayloadTruth, World

#: Ticks of truth prepared per vectorised block (6 h at 1 s frames).
BLOCK_TICKS = 21600
#: Truth series sampling period in truth.npz.
TRUTH_SAMPLE_S = 30.0

log = logging.getLogger("flightsim")


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    summary: dict


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


def _spawn_rngs(seed: int) -> dict[str, np.random.Generator]:
    """One generator per component, spawned from the mission seed."""
    names = ("prelaunch", "scene", "payload_labels")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children, strict=True)}


def run_mission(
    cfg: MissionConfig,
    config_text: str,
    out_dir: Path,
    days: float | None = None,
    seed: int | None = None,
    show_progress: bool = True,
    command: str | None = None,
) -> RunResult:
    """Simulate the mission and write the run folder; returns its path and summary."""
    days = cfg.mission.duration_days if days is None else days
    seed = cfg.mission.seed if seed is None else seed
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(config_text, encoding="utf-8")
    handler = logging.FileHandler(out_dir / "run.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    wall0 = time.perf_counter()
    try:
        result = _run(cfg, out_dir, days, seed, show_progress, command)
    finally:
        log.removeHandler(handler)
        handler.close()
    result.summary["wall_time_s"] = round(time.perf_counter() - wall0, 3)
    (out_dir / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
    return result


def _run(cfg: MissionConfig, out_dir: Path, days: float, seed: int, show_progress: bool, command: str | None) -> RunResult:
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

    rngs = _spawn_rngs(seed)
    image = train_prelaunch_model(cfg, rngs["prelaunch"])
    t_prep = time.perf_counter()
    world = World(cfg, duration_s, rngs["scene"])
    log.info(
        f"truth prepared in {time.perf_counter() - t_prep:.1f} s: {len(world.eclipses)} eclipses, "
        f"{len(world.contacts)} contacts, {len(world.overpasses)} calibration-site passes"
    )
    payload = PayloadTruth(world, rngs["payload_labels"])
    tm_path = out_dir / "telemetry.bin"
    tm_file = open(tm_path, "wb")  # noqa: SIM115 - closed below
    downlinked = [0, 0]

    def sink(packet: bytes) -> None:
        tm_file.write(packet)
        downlinked[0] += 1
        downlinked[1] += len(packet)

    fsw = FlightSoftware(cfg, image, payload, sink)
    log.info("start-up memory report (bytes): " + json.dumps(fsw.memory_report))

    frozen_ext = FeatureExtractor(
        image, np.zeros_like(fsw.buffers["ml.extractor_weights_int8"]), np.zeros_like(fsw.buffers["ml.extractor_scales"])
    )
    frozen_head = image.head.copy()
    frozen_feat = np.zeros_like(fsw.buffers["ml.batch_features"])

    sample_every = max(1, int(round(TRUTH_SAMPLE_S / frame_s)))
    n_samples = n_ticks // sample_every + 1
    truth_t = np.zeros(n_samples)
    truth_soc = np.zeros(n_samples)
    truth_solar = np.zeros(n_samples)
    truth_load = np.zeros(n_samples)
    truth_illum = np.zeros(n_samples)
    truth_contact = np.zeros(n_samples, dtype=bool)
    acc_t: list[float] = []
    acc_onboard: list[float] = []
    acc_frozen: list[float] = []
    k = 0
    load_acc_j = 0.0
    base_w = cfg.power.bus_base_load_w
    battery = world.battery
    inputs = fsw.inputs
    outputs = fsw.outputs
    progress = Progress(days, "simulating", "days", enabled=show_progress)
    min_soc = battery.soc

    for tick0 in range(0, n_ticks, BLOCK_TICKS):
        n = min(BLOCK_TICKS, n_ticks - tick0)
        blk = world.block(tick0, n)
        solar = blk.solar_w.tolist()
        contact = blk.in_contact.tolist()
        site = blk.site.tolist()
        elev = blk.sun_elev_deg.tolist()
        for i in range(n):
            tick = tick0 + i
            t = tick * frame_s
            soc = battery.soc
            inputs.soc = soc
            inputs.solar_power_w = solar[i]
            inputs.in_contact = contact[i]
            payload.set_state(t, site[i], elev[i])
            fsw.step(tick)
            load_w = base_w + outputs.energy_j / frame_s
            battery.step(solar[i], load_w, frame_s, t)
            load_acc_j += load_w * frame_s
            if soc < min_soc:
                min_soc = soc
            if outputs.predictions_valid:
                truth = payload.truth_labels
                acc_t.append(t)
                acc_onboard.append(float(np.mean(outputs.predictions == truth)))
                frozen_ext.features_into(fsw._pixels, frozen_feat)
                acc_frozen.append(float(np.mean(np.argmax(frozen_feat @ frozen_head, axis=1) == truth)))
            if tick % sample_every == 0:
                truth_t[k] = t
                truth_soc[k] = battery.soc
                truth_solar[k] = solar[i]
                truth_load[k] = load_acc_j / (sample_every * frame_s) if tick else load_w
                truth_illum[k] = blk.illumination[i]
                truth_contact[k] = contact[i]
                load_acc_j = 0.0
                k += 1
        progress.update((tick0 + n) * frame_s / 86400.0)
    progress.close()
    tm_file.close()

    ev = world.eclipses
    np.savez_compressed(
        out_dir / "truth.npz",
        t_s=truth_t[:k], soc=truth_soc[:k], solar_w=truth_solar[:k], load_w=truth_load[:k],
        illumination=truth_illum[:k], in_contact=truth_contact[:k],
        acc_t_s=np.array(acc_t), acc_onboard=np.array(acc_onboard), acc_frozen=np.array(acc_frozen),
        umbra_entry_s=ev.umbra_entry_s, umbra_exit_s=ev.umbra_exit_s,
        contact_start_s=np.array([p.start_s for p in world.contacts]),
        contact_end_s=np.array([p.end_s for p in world.contacts]),
    )
    summary = _summary(cfg, fsw, world, days, seed, acc_t, acc_onboard, acc_frozen, downlinked, min_soc)
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
        "files": ["config.yaml", "run.json", "telemetry.bin", "truth.npz", "summary.json", "run.log"],
    }
    (out_dir / "run.json").write_text(json.dumps(run_info, indent=2) + "\n", encoding="utf-8")
    for key, value in summary.items():
        log.info(f"{key}: {value}")
    return RunResult(out_dir, summary)


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
    energy_training = sum(
        float(fsw.task_energy_j[s.index]) for s in fsw.specs if s.kind == "training"
    )
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
        "mode_transitions": fsw.modes.transitions,
        "final_mode": fsw.mode,
        "training_updates_committed": fsw.learner.accepted,
        "training_updates_refused": fsw.learner.refused,
        "rollbacks": fsw.learner.rollbacks,
        "model_version": fsw.learner.version,
        "labels_received": fsw.learner.labels_total,
        "accuracy_onboard_pre_shift": round(_mean_in(t, on, 0.0, pre_hi), 4),
        "accuracy_frozen_pre_shift": round(_mean_in(t, fr, 0.0, pre_hi), 4),
        "accuracy_onboard_last_day": round(_mean_in(t, on, last_day, np.inf), 4),
        "accuracy_frozen_last_day": round(_mean_in(t, fr, last_day, np.inf), 4),
        "packets_generated": fsw.tm.packets,
        "packets_downlinked": downlinked[0],
        "bytes_downlinked": downlinked[1],
        "downlink_backlog_at_end": fsw.downlink.count,
        "downlink_overflow": fsw.downlink.overflow,
    }
    return out
