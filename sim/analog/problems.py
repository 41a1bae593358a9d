"""Benchmark problems for the optimizer: the learner's own head-training systems, and synthetic ones.

`mission_problems` runs the mission (the real `FlightSoftware` in `sim.Simulation`:
drifting scene, calibration passes, teacher labels, drift alarms) and records every
system Q X = B the onboard learner hands its optimizer, with what the optimizer did.
These are "the default training problems": n = 33 (32 features + bias), m = 6 classes,
in the learner's whitened basis (flight_sw/ml/precondition.py), as they occur in orbit.
Recording the whitening factor T with each system gives the same system in the flight
basis too (Q_flight = T^-1 Q T^-T, B_flight = T^-1 B), the form the learner used before
it whitened: kappa ~1e7, which no analog device can refine.

`random_spd` draws synthetic SPD systems of a chosen condition number for tests and the
reference set of the bench.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from flight_sw.config.schema import MissionConfig


@dataclass
class ProblemSet:
    """Systems handed to the optimizer during a mission, and what it made of them."""

    q: list[np.ndarray] = field(default_factory=list)
    b: list[np.ndarray] = field(default_factory=list)
    precond: list[np.ndarray] = field(default_factory=list)  # the learner's T at that solve
    t_s: list[float] = field(default_factory=list)  # mission time of the solve
    kappa_estimate: list[float] = field(default_factory=list)  # the learner's Lanczos estimate
    path: list[int] = field(default_factory=list)  # 0 digital, 1 analog
    ok: list[bool] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    fallback: list[int] = field(default_factory=list)  # fallback reason code (0 none)
    energy_j: list[float] = field(default_factory=list)
    rel_residual: list[float] = field(default_factory=list)  # reported
    checked_residual: list[float] = field(default_factory=list)  # recomputed here in float64
    #: The last layer's systems (one right-hand side, flight_sw/ml/layer_update.py), kept apart:
    #: (q, b, path, rounds, fallback reason, energy_j, checked residual, t_s) per solve.
    layer: list[tuple] = field(default_factory=list)
    refreshes: int = 0  # whitening-basis refreshes during the mission
    stats: dict = field(default_factory=dict)  # driver counters at the end (analog backend)

    def __len__(self) -> int:
        return len(self.q)

    def flight_basis(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """System i as the learner would have built it without whitening."""
        t_inv = np.linalg.inv(self.precond[i])
        q = t_inv @ self.q[i] @ t_inv.T
        return 0.5 * (q + q.T), t_inv @ self.b[i]

    def exact_kappa(self, idx=None) -> np.ndarray:
        idx = range(len(self)) if idx is None else idx
        out = []
        for i in idx:
            w = np.linalg.eigvalsh(self.q[i])
            out.append(w[-1] / w[0])
        return np.array(out)


def mission_config(cfg: MissionConfig, days: float, shift_day: float | None, backend: str) -> MissionConfig:
    """The mission `cfg` for `days`, an abrupt detector shift on `shift_day`, the optimizer `backend`."""
    payload = cfg.payload
    if shift_day is not None:
        payload = dataclasses.replace(payload, drift=dataclasses.replace(payload.drift, abrupt_shift_day=shift_day))
    return dataclasses.replace(
        cfg,
        mission=dataclasses.replace(cfg.mission, duration_days=days),
        payload=payload,
        device=dataclasses.replace(cfg.device, backend=backend, url="inproc://"),
    )


def mission_problems(
    cfg: MissionConfig,
    days: float,
    shift_day: float | None = None,
    backend: str = "analog",
    seed: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> ProblemSet:
    """Fly `cfg` for `days` with the optimizer `backend` (analog: the emulator in-process) and
    record every head-training system and its solve (the last layer's apart, in `layer`)."""
    from sim.simulation import Simulation

    run_cfg = mission_config(cfg, days, shift_day, backend)
    sim = Simulation(run_cfg, run_cfg.mission.seed if seed is None else seed, days * 86400.0, lambda p: None)
    fsw = sim.fsw
    learner = fsw.learner
    solver = fsw.solver
    solve = solver.solve
    out = ProblemSet()

    def recording_solve(q, b):
        x, rep = solve(q, b)
        if solve_from_layer[0]:  # the last layer's system (flight_sw/ml/layer_update.py)
            out.layer.append((q.copy(), b.copy(), rep.path, rep.rounds, rep.fallback_reason if rep.fallback else 0,
                              rep.energy_j, float(np.linalg.norm(q @ x - b) / np.linalg.norm(b)), fsw.t_s))
            return x, rep
        out.q.append(q.copy())
        out.b.append(b.copy())
        out.precond.append(learner.precond.copy())
        out.t_s.append(fsw.t_s)
        out.kappa_estimate.append(learner.last_kappa)
        out.path.append(rep.path)
        out.ok.append(rep.ok)
        out.rounds.append(rep.rounds)
        out.fallback.append(rep.fallback_reason if rep.fallback else 0)
        out.energy_j.append(rep.energy_j)
        out.rel_residual.append(rep.rel_residual)
        out.checked_residual.append(float(np.linalg.norm(q @ x - b) / np.linalg.norm(b)))
        return x, rep

    solver.solve = recording_solve  # the learner and the layer job call self.solver.solve: same object
    layer = fsw.learning.layer
    layer_step = layer.step
    solve_from_layer = [False]

    def layer_step_marked(*args):
        solve_from_layer[0] = True
        try:
            return layer_step(*args)
        finally:
            solve_from_layer[0] = False

    layer.step = layer_step_marked
    day_ticks = int(round(86400.0 / run_cfg.executive.minor_frame_s))
    while not sim.done:
        sim.advance(day_ticks)
        if progress is not None:
            progress(sim.tick / sim.n_ticks)
    out.refreshes = learner.precond_refreshes
    stats = getattr(solver, "stats", None)
    out.stats = stats.as_dict() if stats is not None else {}
    return out


def random_spd(rng: np.random.Generator, n: int, kappa: float) -> np.ndarray:
    """A random SPD matrix with eigenvalues log-spaced over [1, kappa]."""
    qo, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (qo * np.geomspace(1.0, kappa, n)) @ qo.T
