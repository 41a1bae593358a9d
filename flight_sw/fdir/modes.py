"""Modes and FDIR: which mode the satellite is in, and every rule that moves it.

Modes, lowest first: SAFE (essential tasks only), NOMINAL (plus inference and
label collection), TRAINING (plus onboard training). The ground commands a
*target* mode; FDIR may hold the satellite below it while a fault persists:

| rule            | trigger                                        | response                 | recovery                       |
|-----------------|------------------------------------------------|--------------------------|--------------------------------|
| low_soc         | state of charge below `safe_mode_soc`          | SAFE                     | SoC back at `reserve_soc`      |
| device_failure  | optimizer health FAILED                        | at most NOMINAL          | health OK again                |
| overruns        | `overrun_limit` overruns of a task in a window | one mode down            | ground command only            |
| invalid_model   | active head not finite after a rollback        | at most NOMINAL          | ground command only            |
| watchdog        | a task hung (real-time mode)                   | task disabled            | ground command only            |
| ground_command  | telecommand                                    | target mode              |                                |

Every transition calls `on_change(old, new, reason, t)`, which the flight software
turns into an event packet.
"""

from __future__ import annotations

from collections.abc import Callable

from flight_sw.config.schema import MODES, MissionConfig

SAFE, NOMINAL, TRAINING = (MODES.index(m) for m in ("SAFE", "NOMINAL", "TRAINING"))


class ModeManager:
    STATE_FIELDS = ("mode_index", "target", "low_soc", "device_failed", "ceiling", "transitions")

    def __init__(self, cfg: MissionConfig, on_change: Callable[[int, int, str, float], None]):
        self.target = MODES.index(cfg.executive.initial_mode)
        self.mode_index = self.target
        self._safe_soc = cfg.power.battery.safe_mode_soc
        self._recover_soc = cfg.power.battery.reserve_soc  # hysteresis: leave SAFE only at reserve
        self._on_change = on_change
        self.low_soc = False
        self.device_failed = False
        self.ceiling = TRAINING  # lowered by overruns / invalid model until the ground commands
        self.transitions = 0

    def announce_start(self, t: float) -> None:
        self._on_change(self.mode_index, self.mode_index, "start", t)

    def _allowed(self) -> int:
        """Highest mode the current faults allow."""
        if self.low_soc:
            return SAFE
        top = self.ceiling
        if self.device_failed:
            top = min(top, NOMINAL)
        return top

    def _settle(self, reason: str, t: float) -> None:
        new = min(self.target, self._allowed())
        if new != self.mode_index:
            old, self.mode_index = self.mode_index, new
            self.transitions += 1
            self._on_change(old, new, reason, t)

    def check_power(self, soc: float, t: float) -> None:
        if not self.low_soc and soc < self._safe_soc:
            self.low_soc = True
            self._settle("low_soc", t)
        elif self.low_soc and soc >= self._recover_soc:
            self.low_soc = False
            self._settle("soc_recovered", t)

    def check_device(self, failed: bool, t: float) -> None:
        if failed != self.device_failed:
            self.device_failed = failed
            self._settle("device_failure" if failed else "device_recovered", t)

    def step_down(self, reason: str, t: float) -> None:
        """Lower the ceiling one mode below the current mode (overruns, invalid model)."""
        self.ceiling = max(min(self.ceiling, self.mode_index - 1), SAFE)
        self._settle(reason, t)

    def cap(self, mode: int, reason: str, t: float) -> None:
        self.ceiling = min(self.ceiling, mode)
        self._settle(reason, t)

    def command(self, mode: int, t: float) -> bool:
        """Ground command: new target, ceiling lifted. Returns False if faults hold the mode lower."""
        self.target = mode
        self.ceiling = TRAINING
        self._settle("ground_command", t)
        return self.mode_index == mode

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.STATE_FIELDS}

    def load_state_dict(self, state: dict) -> None:
        for name in self.STATE_FIELDS:
            setattr(self, name, state[name])
