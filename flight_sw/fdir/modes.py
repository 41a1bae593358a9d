"""Modes and the power FDIR rule: SAFE below the safe state of charge, back when recovered.

Thin version (issue 2): transitions on low state of charge and recovery, each
reported as an event with its reason. Issue 4 adds device failure, repeated
overruns, invalid model, ground command and the watchdog.
"""

from __future__ import annotations

from collections.abc import Callable

from flight_sw.config.schema import MODES, MissionConfig

SAFE, NOMINAL, TRAINING = (MODES.index(m) for m in ("SAFE", "NOMINAL", "TRAINING"))


class ModeManager:
    def __init__(self, cfg: MissionConfig, on_change: Callable[[int, int, str, float], None]):
        self.mode_index = MODES.index(cfg.executive.initial_mode)
        self._resume_mode = self.mode_index if self.mode_index != SAFE else NOMINAL
        self._safe_soc = cfg.power.battery.safe_mode_soc
        self._recover_soc = cfg.power.battery.reserve_soc  # hysteresis: leave SAFE only at reserve
        self._on_change = on_change
        self.transitions = 0

    def announce_start(self, t: float) -> None:
        self._on_change(self.mode_index, self.mode_index, "start", t)

    def set_mode(self, new: int, reason: str, t: float) -> None:
        if new == self.mode_index:
            return
        old, self.mode_index = self.mode_index, new
        self.transitions += 1
        self._on_change(old, new, reason, t)

    def check_power(self, soc: float, t: float) -> None:
        if self.mode_index != SAFE and soc < self._safe_soc:
            self._resume_mode = self.mode_index
            self.set_mode(SAFE, "low_soc", t)
        elif self.mode_index == SAFE and soc >= self._recover_soc:
            self.set_mode(self._resume_mode, "soc_recovered", t)
