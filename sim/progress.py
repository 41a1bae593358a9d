"""A small progress bar on stderr: redraws in place on a terminal, prints every 10% otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: float, label: str, unit: str = "", enabled: bool = True):
        self.total = max(total, 1e-12)
        self.label = label
        self.unit = unit
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self._last_decile = -1
        self._last_draw = 0.0

    def update(self, done: float) -> None:
        if not self.enabled:
            return
        frac = min(done / self.total, 1.0)
        now = time.perf_counter()
        elapsed = now - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        text = f"{self.label} {frac * 100:5.1f}% ({done:,.1f}/{self.total:,.1f} {self.unit}) elapsed {elapsed:5.1f} s, eta {eta:5.1f} s"
        if self.tty:
            if now - self._last_draw > 0.2 or frac >= 1.0:
                bar = "#" * int(frac * 30)
                sys.stderr.write(f"\r[{bar:<30}] {text}")
                sys.stderr.flush()
                self._last_draw = now
        else:
            decile = int(frac * 10)
            if decile > self._last_decile:
                self._last_decile = decile
                sys.stderr.write(text + "\n")

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
