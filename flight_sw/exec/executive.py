"""The executive component: the time-triggered cyclic loop and its bookkeeping.

A minor frame runs every task the frame table lists for it, in priority order, masked by
the current mode; optional tasks first pass power admission. Each handler returns its
modelled compute time (-1: nothing to do); the executive accounts the task's energy,
counts overruns (cost above the task's budget) and deadline misses (the frame's summed
cost above the frame), reports them as events and hands each overrun to FDIR, which
decides whether the mode steps down. Per-task counters, the orbit's per-task energy and
the task switches (disabled by FDIR, the watchdog or the ground) are its state.

It reaches the rest only through what it is handed: the telemetry encoder, the mode
manager (read), `admit(energy_j, claim_w, t)`, `spend_optional(energy_j)` and
`on_overrun(task_index, tick, t)`; the task handlers are bound after every component
exists (`bind`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from flight_sw.config.schema import MODES
from flight_sw.tmtc import dictionary as d

#: Deadline-miss events per task before they are only counted (F Prime throttles cycle-slip events).
DEADLINE_EVENT_LIMIT = 10
#: Per-task counters in the snapshot (lists of one value per task).
TASK_COUNTERS = ("task_runs", "task_skipped", "task_overruns", "task_deadline_misses", "task_disabled",
                 "task_energy_j", "task_orbit_energy_j")


class Executive:
    def __init__(self, specs: Sequence, table: Sequence[tuple[int, ...]], frame_s: float, tm, modes,
                 admit: Callable[[float, float, float], bool], spend_optional: Callable[[float], None],
                 on_overrun: Callable[[int, int, float], None], cpu_clock: Callable[[], float] | None = None):
        self.specs = specs
        self.table = table
        self.n_frames = len(table)
        self.frame_s = frame_s
        self.tm = tm
        self.modes = modes
        self.admit = admit
        self.spend_optional = spend_optional
        self.on_overrun = on_overrun
        n = len(specs)
        self.task_runs = [0] * n
        self.task_skipped = [0] * n
        self.task_overruns = [0] * n
        self.task_deadline_misses = [0] * n
        self.task_disabled = [False] * n
        self.task_energy_j = [0.0] * n
        self.task_orbit_energy_j = [0.0] * n
        self.overruns_total = 0
        self.optional_skipped_total = 0
        self.deadline_misses_total = 0
        self.generation = 0  # bumped by the real-time watchdog when a step hangs
        self.current_task: int | None = None
        self.handlers: tuple[Callable[[float], float], ...] = ()
        # Measured execution (issue 15): only with a CPU clock from the platform (a flight process);
        # the in-process simulation hands none and the figures stay 0. Not in the snapshot: they
        # describe this boot's processor, not the mission's state.
        self.cpu_clock = cpu_clock
        self.task_exec_max_s = [0.0] * n  # longest since the last task report (`take_exec_max`)
        self.task_exec_total_s = [0.0] * n
        self.task_exec_count = [0] * n
        # Optional tasks of higher priority keep a first claim on the orbit budget.
        self.claim_w = tuple(
            sum(o.energy_j / (o.period_frames * frame_s) for o in specs
                if not o.essential and (o.priority, o.index) < (s.priority, s.index))
            for s in specs
        )
        self._next_due = self._build_next_due()

    def bind(self, handlers: Sequence[Callable[[float], float]]) -> None:
        """The task handlers, one per spec, in spec order."""
        if len(handlers) != len(self.specs):
            raise ValueError(f"{len(handlers)} handlers for {len(self.specs)} tasks")
        self.handlers = tuple(handlers)

    # -- schedule helpers --------------------------------------------------------------
    def _build_next_due(self) -> tuple[tuple[int, ...], ...]:
        """Per mode and frame: frames until the next frame with a task due in that mode."""
        out = []
        for mode in range(len(MODES)):
            bit = 1 << mode
            due = [any(self.specs[i].mode_mask & bit for i in frame) for frame in self.table]
            dist = []
            for f in range(self.n_frames):
                k = 0
                while k < self.n_frames and not due[(f + k) % self.n_frames]:
                    k += 1
                dist.append(k if k < self.n_frames else -1)
            out.append(tuple(dist))
        return tuple(out)

    def next_due_tick(self, tick: int) -> int:
        """First tick >= `tick` at which some task is due in the current mode (-1: never)."""
        k = self._next_due[self.modes.mode_index][tick % self.n_frames]
        return -1 if k < 0 else tick + k

    def due_kinds(self, tick: int) -> list[str]:
        """Kinds of the tasks due at `tick` in the current mode, enabled, in the order they run
        (optional ones may still be refused power then): a host may prepare their inputs."""
        mode_bit = 1 << self.modes.mode_index
        return [self.specs[i].kind for i in self.table[tick % self.n_frames]
                if self.specs[i].mode_mask & mode_bit and not self.task_disabled[i]]

    # -- the loop ----------------------------------------------------------------------
    def run_frame(self, tick: int, t: float, outputs, generation: int | None = None) -> None:
        """Every due task of minor frame `tick` in priority order, power-admitted.

        `generation` is set by the real-time watchdog: a step whose generation has been
        retired (its worker was declared hung) runs nothing more if it ever resumes.
        """
        mode_bit = 1 << self.modes.mode_index
        frame_load_s = 0.0
        for idx in self.table[tick % self.n_frames]:
            spec = self.specs[idx]
            if not spec.mode_mask & mode_bit or self.task_disabled[idx]:
                continue  # not scheduled in this mode / disabled: neither run nor skip
            if not spec.essential and not self.admit(spec.energy_j, self.claim_w[idx], t):
                self.task_skipped[idx] += 1
                self.optional_skipped_total += 1
                continue
            if generation is not None and generation != self.generation:
                return
            self.current_task = idx
            if self.cpu_clock is None:
                cost_s = self.handlers[idx](t)
            else:
                cost_s = self._measured(idx, t)
            if generation is not None and generation != self.generation:
                return  # retired while its task ran (watchdog): a newer step owns the state now
            self.current_task = None
            if cost_s < 0.0:
                continue  # woke up, nothing to do, negligible energy
            self._account(idx, spec, cost_s, tick, t, outputs)
            frame_load_s += cost_s
            if frame_load_s > self.frame_s:
                self._deadline_miss(idx, frame_load_s, t)
            if mode_bit != 1 << self.modes.mode_index:
                mode_bit = 1 << self.modes.mode_index  # a task changed the mode: re-mask the rest

    def _measured(self, idx: int, t: float) -> float:
        """Run task `idx` timed by the platform's CPU clock."""
        clock = self.cpu_clock
        t0 = clock()
        cost_s = self.handlers[idx](t)
        dt = clock() - t0
        if dt > self.task_exec_max_s[idx]:
            self.task_exec_max_s[idx] = dt
        self.task_exec_total_s[idx] += dt
        self.task_exec_count[idx] += 1
        return cost_s

    def take_exec_max(self, idx: int) -> float:
        """The longest measured execution of task `idx` since the last call [s]; restarts it."""
        worst = self.task_exec_max_s[idx]
        self.task_exec_max_s[idx] = 0.0
        return worst

    def exec_mean_s(self, idx: int) -> float:
        """Mean measured execution of task `idx` since boot [s] (0: never measured)."""
        n = self.task_exec_count[idx]
        return self.task_exec_total_s[idx] / n if n else 0.0

    def _account(self, idx: int, spec, cost_s: float, tick: int, t: float, outputs) -> None:
        self.task_runs[idx] += 1
        energy = spec.energy_j
        outputs.energy_j += energy
        self.task_energy_j[idx] += energy
        self.task_orbit_energy_j[idx] += energy
        if not spec.essential:
            self.spend_optional(energy)
        if cost_s > spec.compute_budget_s:
            self.task_overruns[idx] += 1
            self.overruns_total += 1
            self.tm.event(d.EVENT_TASK_OVERRUN, "low", struct.pack(">Bf", idx, cost_s), t)
            self.on_overrun(idx, tick, t)

    def _deadline_miss(self, idx: int, frame_load_s: float, t: float) -> None:
        self.task_deadline_misses[idx] += 1
        self.deadline_misses_total += 1
        if self.task_deadline_misses[idx] <= DEADLINE_EVENT_LIMIT:
            self.tm.event(d.EVENT_DEADLINE_MISS, "low", struct.pack(">Bf", idx, frame_load_s), t)

    # -- task switches -----------------------------------------------------------------
    def index_of(self, name: str) -> int:
        return next(s.index for s in self.specs if s.name == name)

    def disable_task(self, name: str, reason: str, t: float) -> None:
        idx = self.index_of(name)
        if not self.task_disabled[idx]:
            self.task_disabled[idx] = True
            self.tm.event(d.EVENT_TASK_DISABLED, "medium",
                          struct.pack(">BB", idx, d.TASK_DISABLE_REASONS.index(reason)), t)

    def enable_task(self, name: str) -> None:
        self.task_disabled[self.index_of(name)] = False

    # -- snapshot ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {name: getattr(self, name) for name in TASK_COUNTERS}
        state.update(overruns_total=self.overruns_total, optional_skipped_total=self.optional_skipped_total,
                     deadline_misses_total=self.deadline_misses_total)
        return state

    def load_state_dict(self, state: dict) -> None:
        for name in TASK_COUNTERS:
            getattr(self, name)[:] = state[name]  # in place: the wiring shares these lists
        self.overruns_total = state["overruns_total"]
        self.optional_skipped_total = state["optional_skipped_total"]
        self.deadline_misses_total = state["deadline_misses_total"]
