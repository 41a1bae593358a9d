"""Benchmark group `learning`: the learning evaluation suite, then the monitors and kernels.

The suite (`sim.learning_suite`): six drift scenarios (mission_configs/scenarios/) x
10 seeds (quick: 2 seeds, 3-day scenarios; `--seeds N` for N), six arms each scored on the same frames
(frozen, calibration-only, self-training, reactive ground loop, onboard, clairvoyant
bound), run through a local Dask cluster with one worker per core. It writes
`learning-suite/learning_suite.json` and the review page `learning_suite.html` beside
it, and gives, per scenario S: ``learning.S.{frozen,calibration,selftrain,ground,onboard,
bound}_drop_pts``, ``learning.S.onboard_ci95_pts``, ``learning.S.onboard_recovery_orbits``,
``learning.S.ground_recovery_orbits``, ``learning.S.forgetting_pts``; and
``learning.scenarios``, ``learning.seeds``, ``learning.onboard_wins``,
``learning.worst_gap_to_bound_pts``, ``learning.truth_labels`` (labels that change when
every truth record is scrambled: 0 when no label reads truth),
``learning.teacher_post_shift_accuracy`` (stress scenario), ``learning.suite_wall_s``;
``learning.label_headroom_teacher_pts`` / ``learning.label_headroom_truth_pts`` (and their
``_ci95_pts``): on undrifted flight pixels, the accuracy of a head refitted on the onboard
teacher's labels / on truth labels minus the pre-launch head's, mean over seeds (a
diagnostic: what learning all of the main label source's labels gives; `label_headroom`).
Definitions: `sim.learning_suite`.

Kept from before (on the stress scenario's configuration):
- ``learning.drift_delay_samples``: median over several abrupt shifts of the monitored
  samples from the shift to the label-free monitor's alarm.
- ``learning.false_alarms_per_100_orbits``: label-free and label-based alarms in a run
  with every drift switched off, per 100 orbits.
- ``learning.working_set_bytes``: every `ml.*`, `cal.*` and `adapt.*` buffer of the start-up
  memory plan: training state, buffers, the radiometric calibration and the input adaptation (the teacher's own
  buffers are ``learning.teacher_bytes``).
- ``learning.energy_per_update_j``: energy of the training task runs plus the solves,
  per judged update (committed or refused: the gate rarely commits; stress scenario, 10
  days; quick: 3). The training task steps both the head's and the last layer's update,
  so both count.
- ``learning.energy_per_calibration_j``: energy of the calibration task runs (dark and
  diffuser readings, validation) per judged calibration table, same run.
- ``learning.energy_per_adaptation_j``: energy of the input adaptation task runs (candidate,
  gate, commit) per candidate it finished (committed or refused), same run.
- Per scenario, ``learning.S.adaptations_committed`` / ``_refused``: label-free input
  adaptations per run, mean over seeds; ``learning.S.layer_commits`` / ``_refused``: the same
  for the last-layer update (flight_sw/ml/layer_update.py).
- ``learning.int8_speedup_vs_numpy``: the numba int8 MLP kernel against a numpy float32
  MLP on the same flight batch, median times.
Retired with the single-run evaluation: learning.onboard_mean_drop_pts,
learning.frozen_mean_drop_pts, learning.onboard_recovery_orbits,
learning.ground_recovery_orbits, learning.forgetting_pts (now per scenario).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from sim.bench import median_time_s

#: Samples per throughput measurement (int8 kernel vs numpy float32, same batch).
THROUGHPUT_BATCH = 4096
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


def _run(cfg, days: float, log, watch_shift_s: float | None = None):
    from sim.simulation import Simulation

    sim = Simulation(cfg, cfg.mission.seed, days * 86400.0, lambda p: None)
    learner = sim.fsw.learner
    delay = math.nan
    if watch_shift_s is not None:
        sim.advance(int(watch_shift_s / cfg.executive.minor_frame_s))
        batch = cfg.payload.samples_per_acquisition
        at_shift = learner.drift_free.samples * batch
        alarms = learner.drift_free.alarms
        while not sim.done and learner.drift_free.alarms == alarms:
            sim.advance(60)
        if learner.drift_free.alarms > alarms:
            delay = float(learner.last_free_alarm_samples - at_shift)
    while not sim.done:
        sim.advance(86400)
        if days > 2:
            log(f"  day {sim.tick * cfg.executive.minor_frame_s / 86400:.0f}")
    return sim, delay


def _shift_delays(base, shift_days, log) -> list[float]:
    """Label-free detection delay [monitored samples] for abrupt shifts at several times."""
    delays = []
    for day in shift_days:
        drift = dataclasses.replace(base.payload.drift, abrupt_shift_day=day)
        cfg = dataclasses.replace(base, payload=dataclasses.replace(base.payload, drift=drift))
        cfg = dataclasses.replace(cfg, mission=dataclasses.replace(cfg.mission, duration_days=day + 0.3))
        _, delay = _run(cfg, day + 0.3, lambda m: None, watch_shift_s=day * 86400.0)
        log(f"  shift on day {day:g}: alarm after {delay:g} monitored samples")
        delays.append(delay)
    return delays


def _int8_speedup(cfg, image) -> tuple[float, float]:
    from flight_sw.ml.model import FeatureExtractor
    from sim.prelaunch import prelaunch_dataset

    n = THROUGHPUT_BATCH
    x, _ = prelaunch_dataset(cfg, np.random.default_rng(5), n)
    ext = FeatureExtractor(image)
    out = np.zeros((n, cfg.model.feature_dim + 1))
    mean32, std32 = image.input_mean.astype(np.float32), image.input_std.astype(np.float32)
    w1, b1 = image.w1.astype(np.float32), image.b1.astype(np.float32)
    w2, b2 = image.w2.astype(np.float32), image.b2.astype(np.float32)

    def numpy_f32():
        h = np.maximum(((x - mean32) / std32) @ w1 + b1, 0.0)
        return np.maximum(h @ w2 + b2, 0.0)

    t_int8 = median_time_s(lambda: ext.features_into(x, out), repeats=15)
    t_np = median_time_s(numpy_f32, repeats=15)
    b = cfg.payload.samples_per_acquisition
    xs, outs = np.ascontiguousarray(x[:b]), out[:b]

    def numpy_f32_flight():
        h = np.maximum(((xs - mean32) / std32) @ w1 + b1, 0.0)
        return np.maximum(h @ w2 + b2, 0.0)

    t_flight = median_time_s(lambda: [ext.features_into(xs, outs) for _ in range(1000)], repeats=7) / 1000
    t_np_flight = median_time_s(lambda: [numpy_f32_flight() for _ in range(1000)], repeats=7) / 1000
    return t_np_flight / t_flight, t_flight / b, t_np / t_int8


SUITE_DIR = Path("learning-suite")


def run(quick: bool, log, seeds: int | None = None) -> dict[str, float]:
    """The group's figures; `seeds` overrides the suite's seed count (10, quick 2: at 5 the
    intervals that decide "strictly better" flipped with the seeds)."""
    import json
    import os

    from flight_sw.config import load_mission_config
    from ground_tools.campaign import start_client
    from ground_tools.suite_report import write_suite_report
    from sim.learning_suite import load_scenario, run_suite

    seeds = seeds or (2 if quick else 10)
    workers = max(1, min(os.cpu_count() or 1, 4))
    log(f"learning suite: 6 scenarios x {seeds} seeds on {workers} Dask workers")
    client, cluster = start_client(workers, None)
    try:
        suite = run_suite(client, seeds, quick, log)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    SUITE_DIR.mkdir(exist_ok=True)
    (SUITE_DIR / "learning_suite.json").write_text(json.dumps(suite, indent=1), encoding="utf-8")
    page = write_suite_report(suite, SUITE_DIR)
    log(f"  review page: {page}")
    figures = dict(suite["figures"])
    for name, sc in suite["scenarios"].items():
        f = sc["figures"]
        log(f"  {name:12s} " + ", ".join(f"{a} {f[a + '_drop_pts']['mean']:+.2f}" for a in
                                        ("frozen", "calibration", "selftrain", "ground", "onboard", "bound"))
            + f" pts (onboard +-{f['onboard_drop_pts']['ci95']:.2f})")
    log(f"  onboard wins {figures['learning.onboard_wins']:.0f} of {figures['learning.scenarios']:.0f}; "
        f"worst gap to the bound {figures['learning.worst_gap_to_bound_pts']:.2f} pts; "
        f"truth labels {figures['learning.truth_labels']:.0f}")

    stress = load_scenario("stress", quick=True).cfg
    base = load_mission_config(DEFAULT_CONFIG)
    days = 3.0 if quick else 10.0
    cfg = dataclasses.replace(stress, mission=dataclasses.replace(stress.mission, duration_days=days))
    shift_day = cfg.payload.drift.abrupt_shift_day
    log(f"stress run for energy and detection: {days:g} days, shift on day {shift_day:g}")
    sim, delay = _run(cfg, days, log, watch_shift_s=shift_day * 86400.0)
    fsw = sim.fsw
    learner = fsw.learner
    energy = _task_energy_j(fsw, "training") + fsw.solver.energy_total_j
    layer = fsw.learning.layer
    # The training task runs both jobs (head and last layer), one step per run: energy per judged update of either.
    updates = max(learner.accepted + learner.refused + layer.accepted + layer.refused, 1)
    log(f"  head: {learner.accepted} updates committed, {learner.refused} refused, {learner.rollbacks} rolled back; "
        f"last layer: {layer.accepted} committed, {layer.refused} refused, {layer.rollbacks} rolled back; "
        f"training energy {energy / 1000:.1f} kJ; labels by source {learner.labels_by_source}")
    cal = fsw.calibration
    cal_energy = _task_energy_j(fsw, "calibration")
    cal_judged = max(cal.accepted + cal.refused, 1)
    log(f"  calibration: {cal.accepted} tables committed, {cal.refused} refused, {cal.rollbacks} rolled back, "
        f"{cal.diffuser_sweeps} diffuser sweeps, {cal.dark_sweeps} dark sweeps; task energy {cal_energy:.0f} J")
    adapt = fsw.adaptation
    adapt_energy = _task_energy_j(fsw, "adaptation")
    adapt_judged = max(adapt.accepted + adapt.refused, 1)
    log(f"  input adaptation: {adapt.windows} windows, {adapt.accepted} committed, {adapt.refused} refused, "
        f"{adapt.rollbacks} rolled back; task energy {adapt_energy:.0f} J")
    working = sum(v.nbytes for k, v in fsw.buffers.items()
                  if k.startswith(("ml.", "cal.", "adapt.", "layer.")) and v.base is None)  # arena views once
    teacher_bytes = sum(v.nbytes for k, v in fsw.buffers.items() if k.startswith("teacher."))

    calm = dataclasses.replace(
        cfg,
        payload=dataclasses.replace(
            cfg.payload,
            drift=dataclasses.replace(cfg.payload.drift, gain_decay_per_day=0.0, dark_offset_growth_per_day=0.0,
                                      abrupt_shift_day=None, seasonal_amplitude=0.0),
        ),
    )
    log(f"stationary run: {days:g} days, no drift")
    calm_sim, _ = _run(calm, days, log)
    cl = calm_sim.fsw.learner
    n_orbits = days * 86400.0 / calm_sim.world.orbit.period_s
    false_alarms = cl.drift_free.alarms + cl.drift_labels.alarms
    log(f"  false alarms: {cl.drift_free.alarms} label-free, {cl.drift_labels.alarms} label-based in {n_orbits:.0f} orbits")

    log("detection delay over several shift times:")
    shift_days = (0.35, 0.55, 0.75) if quick else (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    delays = _shift_delays(stress, shift_days, log)
    delays.append(delay)
    finite = [d for d in delays if math.isfinite(d)]
    median_delay = float(np.median(finite)) if len(finite) == len(delays) else float(days * 86400.0)

    speedup, latency, big = _int8_speedup(base, sim.image)
    log(f"int8 MLP kernel {speedup:.2f}x numpy float32 on the flight batch ({base.payload.samples_per_acquisition} "
        f"samples, {latency * 1e6:.2f} us per sample including the call); {big:.2f}x on a {THROUGHPUT_BATCH}-sample "
        "batch, where numpy's multithreaded float32 BLAS wins")
    figures.update({
        "learning.drift_delay_samples": median_delay,
        "learning.false_alarms_per_100_orbits": false_alarms / n_orbits * 100.0,
        "learning.working_set_bytes": float(working),
        "learning.teacher_bytes": float(teacher_bytes),
        "learning.energy_per_update_j": energy / updates,
        "learning.energy_per_calibration_j": cal_energy / cal_judged,
        "learning.energy_per_adaptation_j": adapt_energy / adapt_judged,
        "learning.int8_speedup_vs_numpy": speedup,
    })
    return {k: (v if math.isfinite(v) else -1.0) for k, v in figures.items()}


def _task_energy_j(fsw, kind: str) -> float:
    """Energy drawn since start by the tasks of one kind."""
    return sum(fsw.task_energy_j[s.index] for s in fsw.specs if s.kind == kind)
