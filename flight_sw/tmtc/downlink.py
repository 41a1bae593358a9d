"""Fixed-size downlink queue that drains only during contacts at the link data rate.

Packets are copied into rows of a preallocated byte buffer (sized from the config)
and leave in FIFO order while a ground station has lock, at most `rate_bps` worth
per second. A packet that does not fit is refused and counted (reported in
housekeeping), never dropped silently. Priorities and retransmission belong to
the TM/TC issue (7).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class DownlinkQueue:
    def __init__(self, rows: np.ndarray, lengths: np.ndarray, rate_bps: float, sink: Callable[[bytes], None]):
        self.rows = rows
        self.lengths = lengths
        self.capacity = rows.shape[0]
        self.row_bytes = rows.shape[1]
        self.rate_bytes_per_s = rate_bps / 8.0
        self.sink = sink
        self.head = 0
        self.count = 0
        self.overflow = 0
        self.sent = 0
        self._allowance = 0.0

    def push(self, packet: bytes) -> bool:
        n = len(packet)
        if n > self.row_bytes:
            raise ValueError(f"packet of {n} bytes exceeds the queue row size {self.row_bytes}")
        if self.count == self.capacity:
            self.overflow += 1
            return False
        tail = (self.head + self.count) % self.capacity
        self.rows[tail, :n] = np.frombuffer(packet, dtype=np.uint8)
        self.lengths[tail] = n
        self.count += 1
        return True

    def drain(self, dt_s: float, in_contact: bool) -> None:
        """Send what the link carries in dt_s; unused allowance is not banked across gaps."""
        if not in_contact:
            self._allowance = 0.0
            return
        self._allowance += self.rate_bytes_per_s * dt_s
        while self.count and self._allowance >= self.lengths[self.head]:
            n = int(self.lengths[self.head])
            self._allowance -= n
            self.sink(self.rows[self.head, :n].tobytes())
            self.head = (self.head + 1) % self.capacity
            self.count -= 1
            self.sent += 1
        if not self.count:
            self._allowance = 0.0
