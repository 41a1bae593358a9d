"""The static schedule table: which tasks are due in which minor frame of the major frame.

Like cFS SCH's slot table and F Prime's rate-group divisors, the table is built
once, checked once (periods divide the major frame, offsets inside the period,
per-frame compute fits the frame) and then only indexed at run time, so the tick
path does no scheduling arithmetic. An infeasible table is refused at build time
with the frame and the tasks that overload it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flight_sw.config.schema import MODES, ExecutiveConfig, TaskConfig


class ScheduleError(ValueError):
    """The task table cannot be scheduled; the message names frames and tasks."""


@dataclass(frozen=True)
class TaskSpec:
    """A task as the executive sees it: frames, not seconds, and a mode bitmask."""

    index: int
    name: str
    kind: str
    period_frames: int
    offset_frames: int
    compute_budget_s: float
    energy_j: float
    essential: bool
    mode_mask: int
    priority: int


def mode_bit(mode: str) -> int:
    return 1 << MODES.index(mode)


def _frames(value_s: float, frame_s: float, what: str) -> int:
    n = value_s / frame_s
    if not math.isclose(n, round(n), abs_tol=1e-9):
        raise ScheduleError(f"{what}: {value_s} s is not a multiple of the minor frame ({frame_s} s)")
    return round(n)


def build_task_specs(tasks: tuple[TaskConfig, ...], frame_s: float) -> tuple[TaskSpec, ...]:
    """Validate the declared tasks and convert them to frame units."""
    if not tasks:
        raise ScheduleError("the task table is empty; at least one essential task is needed")
    names: set[str] = set()
    specs = []
    for i, t in enumerate(tasks):
        where = f"task {t.name!r}"
        if t.name in names:
            raise ScheduleError(f"{where}: duplicate task name")
        names.add(t.name)
        if not t.period_s > 0:
            raise ScheduleError(f"{where}: period_s must be > 0, got {t.period_s}")
        if t.offset_s < 0 or t.offset_s >= t.period_s:
            raise ScheduleError(f"{where}: offset_s must be in [0, period_s={t.period_s}), got {t.offset_s}")
        for mode in t.modes:
            if mode not in MODES:
                raise ScheduleError(f"{where}: unknown mode {mode!r}; known modes {MODES}")
        mask = 0
        for mode in t.modes:
            mask |= mode_bit(mode)
        specs.append(
            TaskSpec(
                index=i,
                name=t.name,
                kind=t.kind,
                period_frames=_frames(t.period_s, frame_s, f"{where}.period_s"),
                offset_frames=_frames(t.offset_s, frame_s, f"{where}.offset_s"),
                compute_budget_s=t.compute_budget_s,
                energy_j=t.energy_j,
                essential=t.criticality == "essential",
                mode_mask=mask,
                priority=t.priority,
            )
        )
    return tuple(specs)


def build_frame_table(specs: tuple[TaskSpec, ...], execfg: ExecutiveConfig) -> tuple[tuple[int, ...], ...]:
    """Per minor frame of the major frame, the due task indices in priority order.

    Refuses periods that do not divide the major frame and any frame whose summed
    compute budgets exceed the minor frame (worst case: every due task runs).
    """
    n = execfg.frames_per_major
    for s in specs:
        if n % s.period_frames:
            raise ScheduleError(
                f"task {s.name!r}: period of {s.period_frames} frames does not divide the major frame "
                f"of {n} frames; choose a period that divides it"
            )
    table = []
    overloaded = []
    for frame in range(n):
        due = sorted(
            (s for s in specs if frame % s.period_frames == s.offset_frames),
            key=lambda s: (s.priority, s.index),
        )
        load_s = sum(s.compute_budget_s for s in due)
        if load_s > execfg.minor_frame_s + 1e-12:
            overloaded.append(
                f"frame {frame}: {load_s:.3f} s of {execfg.minor_frame_s:.3f} s "
                f"({', '.join(s.name for s in due)})"
            )
        table.append(tuple(s.index for s in due))
    if overloaded:
        more = f" (and {len(overloaded) - 3} more)" if len(overloaded) > 3 else ""
        raise ScheduleError(
            "schedule infeasible, per-frame compute exceeds the minor frame: "
            + "; ".join(overloaded[:3])
            + more
            + ". Move offsets apart or lower the budgets."
        )
    return tuple(table)


def essential_energy_per_orbit_j(specs: tuple[TaskSpec, ...], frame_s: float, orbit_s: float) -> float:
    """Energy the essential tasks draw over one orbit (all modes: worst case)."""
    return sum(s.energy_j * orbit_s / (s.period_frames * frame_s) for s in specs if s.essential)
