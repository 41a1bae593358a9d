"""Fixed-size downlink queue that drains only during contacts at the link data rate.

Packets are copied into rows of a preallocated byte buffer (sized from the config)
and leave in FIFO order while a ground station has lock. The link allowance is
kept in whole bits per minor frame, so draining k frames at once sends exactly
what k single-frame drains send (the executive crosses idle frames in one call).
A packet that does not fit is refused and counted (reported in housekeeping),
never dropped silently. Priorities and retransmission belong to the TM/TC issue (7).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class DownlinkQueue:
    def __init__(
        self,
        rows: np.ndarray,
        lengths: np.ndarray,
        rate_bps: float,
        frame_s: float,
        sink: Callable[[bytes], None],
    ):
        self.rows = rows
        self.lengths = lengths
        self.capacity, self.row_bytes = rows.shape
        self._flat = memoryview(rows.reshape(-1))  # byte view: copying in/out creates no arrays
        self.bits_per_frame = int(rate_bps * frame_s)
        self.sink = sink
        self.head = 0
        self.count = 0
        self.overflow = 0
        self.sent = 0
        self._allowance_bits = 0

    def push(self, packet: bytes) -> bool:
        n = len(packet)
        if n > self.row_bytes:
            raise ValueError(f"packet of {n} bytes exceeds the queue row size {self.row_bytes}")
        if self.count == self.capacity:
            self.overflow += 1
            return False
        tail = (self.head + self.count) % self.capacity
        off = tail * self.row_bytes
        self._flat[off : off + n] = packet
        self.lengths[tail] = n
        self.count += 1
        return True

    def drain(self, n_frames: int, in_contact: bool) -> None:
        """Send what the link carries in n frames; unused allowance is not banked across gaps."""
        if not in_contact or not self.count:
            self._allowance_bits = 0
            return
        self._allowance_bits += self.bits_per_frame * n_frames
        while self.count:
            n = int(self.lengths[self.head])
            if self._allowance_bits < 8 * n:
                break
            self._allowance_bits -= 8 * n
            off = self.head * self.row_bytes
            self.sink(self._flat[off : off + n].tobytes())
            self.head = (self.head + 1) % self.capacity
            self.count -= 1
            self.sent += 1
        if not self.count:
            self._allowance_bits = 0

    def state_dict(self) -> dict:
        return {
            "head": self.head, "count": self.count, "overflow": self.overflow, "sent": self.sent,
            "allowance_bits": self._allowance_bits,
        }

    def load_state_dict(self, s: dict) -> None:
        self.head, self.count, self.overflow, self.sent = s["head"], s["count"], s["overflow"], s["sent"]
        self._allowance_bits = s["allowance_bits"]
