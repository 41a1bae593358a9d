"""The FDIR component: the mode manager and the fault rules that need memory of their own.

- Overruns: `fdir.overrun_limit` overruns of one task within `fdir.overrun_window_s` step the
  mode down (the executive counts every overrun and reports it; this decides).
- Optimizer device: while the device is FAILED, a health check with exponential backoff
  (`fdir.device_check_initial_s` doubling to `fdir.device_check_max_s`), run by the
  `device_health` task in every mode, because the driver only self-tests inside a solve and
  solves stop when the device fails.
- Power and device state feed the mode manager at every power monitor run.

It owns its state and snapshot; it reaches the rest only through the telemetry encoder
(mode-change events) and the optimizer it supervises.
"""

from __future__ import annotations

import math
import struct
from collections import deque

from flight_sw.config.schema import MissionConfig
from flight_sw.fdir.modes import ModeManager
from flight_sw.tmtc import dictionary as d


class Fdir:
    def __init__(self, cfg: MissionConfig, tm, n_tasks: int, frame_s: float):
        """`tm`: the telemetry encoder (mode-change events); the optimizer is attached later
        (`supervise(solver)`): it is built after the modes exist."""
        self.fdir = cfg.fdir
        self.tm = tm
        self.modes = ModeManager(cfg, self._mode_event)
        self.solver = None
        self._overrun_ticks = [deque(maxlen=cfg.fdir.overrun_limit) for _ in range(n_tasks)]
        self._overrun_window_ticks = cfg.fdir.overrun_window_s / frame_s
        self._device_backoff_s = cfg.fdir.device_check_initial_s
        self._device_next_check_s = math.nan  # NaN: no check pending (the device is not FAILED)
        self.device_checks = 0
        self.device_recoveries = 0

    def supervise(self, solver) -> None:
        self.solver = solver

    def _mode_event(self, old: int, new: int, reason: str, t: float) -> None:
        self.tm.event(d.EVENT_MODE_CHANGE, "medium", struct.pack(">BBB", old, new, d.MODE_REASONS.index(reason)), t)

    # -- rules ------------------------------------------------------------------------
    def overrun(self, task_index: int, tick: int, t: float) -> None:
        """One overrun of a task: too many in the window step the mode down."""
        recent = self._overrun_ticks[task_index]
        recent.append(tick)
        if len(recent) == recent.maxlen and recent[-1] - recent[0] <= self._overrun_window_ticks:
            recent.clear()
            self.modes.step_down("overruns", t)

    def check_power_and_device(self, soc: float, t: float) -> None:
        """The power monitor's FDIR part: battery state and device health into the modes."""
        self.modes.check_power(soc, t)
        self.modes.check_device(self.device_failed(), t)

    def device_failed(self) -> bool:
        """The optimizer's health is FAILED (the analog driver; a stub may set `failed`)."""
        solver = self.solver
        return bool(getattr(solver, "failed", False)) or getattr(solver, "health", 0) == 2

    def device_health_task(self, t: float) -> float:
        """Health check of a FAILED optimizer device, with backoff, in every mode.

        A passed self-test lifts the driver to DEGRADED; the next power monitor run lets FDIR
        return to TRAINING. Returns the modelled compute time, -1 when nothing was due.
        """
        solver = self.solver
        if not hasattr(solver, "self_test") or not self.device_failed():
            self._device_backoff_s = self.fdir.device_check_initial_s
            self._device_next_check_s = math.nan
            return -1.0
        if math.isnan(self._device_next_check_s):
            self._device_next_check_s = t + self._device_backoff_s  # the failure was just seen
        if t < self._device_next_check_s:
            return -1.0
        self.device_checks += 1
        if solver.self_test():
            self.device_recoveries += 1
            self.modes.check_device(self.device_failed(), t)
            self._device_backoff_s = self.fdir.device_check_initial_s
            self._device_next_check_s = math.nan
        else:
            self._device_backoff_s = min(2.0 * self._device_backoff_s, self.fdir.device_check_max_s)
            self._device_next_check_s = t + self._device_backoff_s
        return 1e-3

    # -- snapshot ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"modes": self.modes.state_dict(), "overrun_ticks": [list(q) for q in self._overrun_ticks],
                "device_check": [self._device_backoff_s, self._device_next_check_s, self.device_checks,
                                 self.device_recoveries]}

    def load_state_dict(self, state: dict) -> None:
        self.modes.load_state_dict(state["modes"])
        for q, ticks in zip(self._overrun_ticks, state["overrun_ticks"], strict=True):
            q.clear()
            q.extend(ticks)
        (self._device_backoff_s, self._device_next_check_s, self.device_checks,
         self.device_recoveries) = state["device_check"]
