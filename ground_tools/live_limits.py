"""Limit checks one housekeeping sample at a time, for the live station: alarms as they happen.

The bounds and their rules are `limits.check`'s (per mode, disabled ranges, NaN not checked):
each sample is checked by that same function, on a series of one. What this module adds is
the memory between samples, so that an excursion is announced once when it starts (or
changes level or side), and once when it ends, rather than at every sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from flight_sw.config.schema import MODES
from ground_tools.limits import DEVICE_PREFIX, LimitSet, Violation, check


@dataclass(frozen=True)
class LimitEvent:
    """An excursion starting ("raised"), moving to another level or side ("changed") or ending
    ("cleared"). `value` is the sample that caused it."""

    kind: str
    parameter: str
    level: str | None  # warning / alarm (None when cleared)
    side: str | None
    bound: float | None
    value: float
    t_s: float
    mode: str

    def as_dict(self) -> dict:
        return asdict(self)


class LiveLimits:
    """Checks each core (SID 1) and device (SID 4) housekeeping sample as it is archived."""

    def __init__(self, limits: LimitSet):
        self.limits = limits
        self.active: dict[str, Violation] = {}  # parameter -> its excursion in progress
        self._last_core: dict[str, np.ndarray] | None = None

    def on_core(self, sample: dict[str, float]) -> list[LimitEvent]:
        """A core housekeeping sample (t_s and every SID-1 parameter by name)."""
        hk = _series_of_one(sample)
        self._last_core = hk
        return self._update(hk, None, lambda p: not p.startswith(DEVICE_PREFIX))

    def on_device(self, sample: dict[str, float]) -> list[LimitEvent]:
        """A device housekeeping sample; it takes the mode of the latest core sample, as the
        offline check does (none yet: it cannot be checked and is skipped)."""
        if self._last_core is None:
            return []
        return self._update(self._last_core, _series_of_one(sample), lambda p: p.startswith(DEVICE_PREFIX))

    def _update(self, hk, dev, in_scope) -> list[LimitEvent]:
        now = {v.parameter: v for v in check(self.limits, hk, dev) if in_scope(v.parameter)}
        t = float((dev or hk)["t_s"][0])
        mode_idx = int(hk["mode"][0])
        mode = MODES[mode_idx] if 0 <= mode_idx < len(MODES) else str(mode_idx)
        source = dev or hk
        out = []
        for lim in self.limits.limits:
            p = lim.parameter
            if not in_scope(p):
                continue
            name = p[len(DEVICE_PREFIX):] if p.startswith(DEVICE_PREFIX) else p
            if name not in source:
                continue
            value = float(source[name][0])
            old, new = self.active.get(p), now.get(p)
            if new is not None and (old is None or (old.level, old.side, old.bound) != (new.level, new.side,
                                                                                          new.bound)):
                out.append(LimitEvent("raised" if old is None else "changed", p, new.level, new.side, new.bound,
                                      value, t, mode))
                self.active[p] = new
            elif new is None and old is not None:
                out.append(LimitEvent("cleared", p, None, None, None, value, t, mode))
                del self.active[p]
        return out


def _series_of_one(sample: dict[str, float]) -> dict[str, np.ndarray]:
    return {k: np.array([np.nan if v is None else v], dtype=np.float64) for k, v in sample.items()}
