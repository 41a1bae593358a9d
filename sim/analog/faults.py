"""Seeded fault injection for the analog device emulator.

Two ways in, both deterministic for a given seed:

- `arm(kind, count=1, **options)`: the next `count` device commands the fault
  applies to are hit (one-shot events such as an SEU or a brown-out, or a run of
  dead/slow commands);
- `set_rates({kind: p})`: every command draws each kind with probability p
  (the `fault_*_rate` keys of the device config).

`stuck_cells(k)` is permanent until `clear_stuck()`. Every fault that actually
hit a command is tallied in `triggered[kind]` (and `log`) so a campaign can
check that each one became visible in the driver's counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FAULT_KINDS = (
    "stuck",  # cells stuck at a rail (or 0), write-verify reports them
    "dead",  # no reply at all
    "slow_settle",  # settling 1e4 x slower: settle timeout
    "no_settle",  # the circuit never settles (oscillation)
    "saturate",  # outputs stuck at the rails
    "corrupt",  # reply bytes corrupted on the way out
    "seu",  # bit flip in a stored programmed code
    "brownout",  # power dip mid-command: no reply, state lost, reboot
    "wrong_output",  # silently wrong outputs in a valid reply
)
#: Kinds that act on a SOLVE command only (others act on any command).
SOLVE_ONLY = frozenset({"slow_settle", "no_settle", "saturate", "seu", "brownout", "wrong_output"})


@dataclass
class FaultInjector:
    rng: np.random.Generator
    rates: dict[str, float] = field(default_factory=dict)
    armed: dict[str, int] = field(default_factory=dict)
    triggered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    log: list[tuple[int, str]] = field(default_factory=list)
    command_index: int = 0
    dead_run: int = 3  # commands a randomly drawn dead fault lasts

    def arm(self, kind: str, count: int = 1) -> None:
        if kind not in FAULT_KINDS or kind == "stuck":
            raise ValueError(f"unknown or non-armable fault kind {kind!r}; use stuck_cells() for stuck")
        if count < 1:
            raise ValueError("count must be >= 1")
        self.armed[kind] = self.armed.get(kind, 0) + count

    def set_rates(self, rates: dict[str, float]) -> None:
        for kind, p in rates.items():
            if kind not in FAULT_KINDS or kind == "stuck":
                raise ValueError(f"unknown fault kind {kind!r}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"rate of {kind} must be in [0, 1], got {p}")
        self.rates = {k: float(v) for k, v in rates.items() if v > 0.0}

    def clear(self) -> None:
        self.armed.clear()

    def begin_command(self) -> None:
        """Called by the endpoint once per command: draws the random faults of this command."""
        self.command_index += 1
        for kind, p in self.rates.items():
            if self.rng.random() < p:
                self.armed[kind] = self.armed.get(kind, 0) + (self.dead_run if kind == "dead" else 1)

    def take(self, kind: str) -> bool:
        """Consume one armed occurrence of `kind` (the caller applies it)."""
        left = self.armed.get(kind, 0)
        if left <= 0:
            return False
        if left == 1:
            del self.armed[kind]
        else:
            self.armed[kind] = left - 1
        self.note(kind)
        return True

    def note(self, kind: str) -> None:
        self.triggered[kind] += 1
        self.log.append((self.command_index, kind))

    def pending(self, kind: str) -> bool:
        return self.armed.get(kind, 0) > 0

    def corrupt(self, frame: bytes) -> bytes:
        """Flip 1-4 random bits anywhere in a reply frame."""
        buf = bytearray(frame)
        if not buf:
            return frame
        for _ in range(int(self.rng.integers(1, 5))):
            i = int(self.rng.integers(0, len(buf)))
            buf[i] ^= 1 << int(self.rng.integers(0, 8))
        return bytes(buf)
