"""Benchmark group `learning`: onboard training against the frozen model and the ground loop.

The default mission with 30 days of ageing and an abrupt detector shift on day 10
(quick: 4 days, shift on day 1.5), three arms scored on the same frames of the same
world and seed (see `sim.learning_metrics` for the definitions):

- ``learning.onboard_mean_drop_pts`` / ``learning.frozen_mean_drop_pts``: pre-drift level
  minus the mean over the whole run, in accuracy points.
- ``learning.onboard_recovery_orbits`` / ``learning.ground_recovery_orbits``: orbits from
  the shift until back within 2 points of the pre-drift level (the run length if never).
- ``learning.forgetting_pts``: accuracy on a held-out *undrifted* test set, pre-launch
  model minus the final onboard model (the cost of adapting, in points).
- ``learning.drift_delay_samples``: median over several abrupt shifts (the main run's and
  short runs with the shift at different times of day) of the monitored samples from
  the shift to the label-free monitor's alarm.
- ``learning.false_alarms_per_100_orbits``: label-free and label-based alarms in a run of
  the same length with every drift switched off, per 100 orbits.
- ``learning.working_set_bytes``: statistics, buffers and head of the onboard learner
  (every `ml.*` buffer of the start-up memory plan).
- ``learning.energy_per_update_j``: energy of the training task runs plus the solves,
  per committed update, with the mission's optimizer backend (the analog device: a
  solve is ~70 uJ of it, the task runs are the rest).
- ``learning.int8_speedup_vs_numpy``: the numba int8 MLP kernel against a numpy float32
  MLP on the same flight batch (`samples_per_acquisition`), median times; the log adds
  the per-sample latency and the ratio on a 4,096-sample batch.
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


def run(quick: bool, log) -> dict[str, float]:
    from flight_sw.config import load_mission_config
    from flight_sw.ml.kernels import classify_into
    from flight_sw.ml.model import FeatureExtractor
    from sim.learning_metrics import learning_figures
    from sim.prelaunch import prelaunch_dataset

    base = load_mission_config(DEFAULT_CONFIG)
    days, shift_day = (4.0, 1.5) if quick else (30.0, 10.0)
    drift = dataclasses.replace(base.payload.drift, abrupt_shift_day=shift_day)
    cfg = dataclasses.replace(
        base,
        mission=dataclasses.replace(base.mission, duration_days=days),
        payload=dataclasses.replace(base.payload, drift=drift),
    )
    log(f"drifting run: {days:g} days, abrupt shift on day {shift_day:g}")
    sim, delay = _run(cfg, days, log, watch_shift_s=shift_day * 86400.0)
    tl = sim.log
    truth = {k: np.array(getattr(tl, k)) for k in ("acc_t_s", "acc_onboard", "acc_frozen", "acc_ground")}
    period_s = sim.world.orbit.period_s
    fig = learning_figures(truth, period_s, shift_day * 86400.0)
    n_orbits = days * 86400.0 / period_s
    for arm, f in fig.items():
        log(f"  {arm:8s} pre-drift {f['pre_level']:.4f}, mean {f['mean']:.4f}, drop {f['mean_drop_pts']:.2f} pts, "
            f"recovery {f['recovery_orbits']} orbits")

    fsw = sim.fsw
    learner = fsw.learner
    x, y = prelaunch_dataset(cfg, np.random.default_rng(11), 4000)
    ext = FeatureExtractor(sim.image)
    phi = np.zeros((len(x), cfg.model.feature_dim + 1))
    ext.features_into(x, phi)
    scores = np.zeros((len(x), sim.image.head.shape[1]))
    pred = np.zeros(len(x), np.int64)
    classify_into(phi, np.ascontiguousarray(sim.image.head), scores, pred)
    acc_pre = float(np.mean(pred == y))
    classify_into(phi, learner.slots[learner.active], scores, pred)
    acc_final = float(np.mean(pred == y))
    log(f"  held-out undrifted test set: pre-launch {acc_pre:.4f}, final onboard {acc_final:.4f}")

    training = [s.index for s in fsw.specs if s.kind == "training"]
    energy = sum(fsw.task_energy_j[i] for i in training) + fsw.solver.energy_total_j
    updates = max(learner.accepted, 1)
    log(f"  {learner.accepted} updates committed, {learner.refused} refused, {learner.rollbacks} rolled back; "
        f"training energy {energy / 1000:.1f} kJ; ground loop uplinks {len(sim.ground.uplinks)}")
    working = sum(v.nbytes for k, v in fsw.buffers.items() if k.startswith("ml."))

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
    false_alarms = cl.drift_free.alarms + cl.drift_labels.alarms
    log(f"  false alarms: {cl.drift_free.alarms} label-free, {cl.drift_labels.alarms} label-based in {n_orbits:.0f} orbits")

    log("detection delay over several shift times:")
    shift_days = (0.35, 0.45, 0.55, 0.65, 0.75) if quick else (0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)
    delays = _shift_delays(base, shift_days, log)
    delays.append(delay)
    finite = [d for d in delays if math.isfinite(d)]
    median_delay = float(np.median(finite)) if len(finite) == len(delays) else float(days * 86400.0)

    speedup, latency, big = _int8_speedup(cfg, sim.image)
    log(f"int8 MLP kernel {speedup:.2f}x numpy float32 on the flight batch ({cfg.payload.samples_per_acquisition} "
        f"samples, {latency * 1e6:.2f} us per sample including the call); {big:.2f}x on a {THROUGHPUT_BATCH}-sample "
        "batch, where numpy's multithreaded float32 BLAS wins")
    ground_rec = fig["ground"]["recovery_orbits"]
    onboard_rec = fig["onboard"]["recovery_orbits"]
    censored = float(math.ceil(n_orbits - shift_day * 86400.0 / period_s))
    return {
        "learning.onboard_mean_drop_pts": fig["onboard"]["mean_drop_pts"],
        "learning.onboard_recovery_orbits": censored if math.isnan(onboard_rec) else onboard_rec,
        "learning.ground_recovery_orbits": censored if math.isnan(ground_rec) else ground_rec,
        "learning.frozen_mean_drop_pts": fig["frozen"]["mean_drop_pts"],
        "learning.forgetting_pts": (acc_pre - acc_final) * 100.0,
        "learning.drift_delay_samples": median_delay,
        "learning.false_alarms_per_100_orbits": false_alarms / n_orbits * 100.0,
        "learning.working_set_bytes": float(working),
        "learning.energy_per_update_j": energy / updates,
        "learning.int8_speedup_vs_numpy": speedup,
    }
