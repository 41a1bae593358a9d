"""Fixed-size downlink queue with two priorities that drains only during contacts.

Packets are copied into rows of one preallocated byte buffer (sized from the config),
split between two FIFO rings: HIGH (events, command verification, per-orbit budgets:
what the operators must see first) and LOW (periodic housekeeping, samples). During a
contact HIGH drains first, then LOW, at most the link's bits per minor frame. The
allowance is kept in whole bits per frame, so draining k frames at once sends exactly
what k single-frame drains send (the executive crosses idle frames in one call). A
packet that does not fit its ring is refused and counted per priority (reported in
housekeeping), never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Share of the queue's rows reserved for HIGH priority packets.
HIGH_SHARE = 0.25


class _Ring:
    """A FIFO over rows [first, first + capacity) of the shared byte buffer."""

    def __init__(self, flat: memoryview, lengths: np.ndarray, row_bytes: int, first: int, capacity: int):
        self.flat = flat
        self.lengths = lengths
        self.row_bytes = row_bytes
        self.first = first
        self.capacity = capacity
        self.head = 0
        self.count = 0
        self.overflow = 0

    def push(self, packet: bytes) -> bool:
        if self.count == self.capacity:
            self.overflow += 1
            return False
        row = self.first + (self.head + self.count) % self.capacity
        off = row * self.row_bytes
        self.flat[off : off + len(packet)] = packet
        self.lengths[row] = len(packet)
        self.count += 1
        return True

    def peek_len(self) -> int:
        return int(self.lengths[self.first + self.head])

    def pop(self) -> bytes:
        row = self.first + self.head
        off = row * self.row_bytes
        out = self.flat[off : off + int(self.lengths[row])].tobytes()
        self.head = (self.head + 1) % self.capacity
        self.count -= 1
        return out

    def state(self) -> list[int]:
        return [self.head, self.count, self.overflow]

    def load(self, s: list[int]) -> None:
        self.head, self.count, self.overflow = s


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
        n, self.row_bytes = rows.shape
        flat = memoryview(rows.reshape(-1))  # byte view: copying in/out creates no arrays
        n_high = max(1, int(n * HIGH_SHARE)) if n > 1 else 1
        n_low = max(n - n_high, 1)
        self.high = _Ring(flat, lengths, self.row_bytes, 0, n_high)
        self.low = _Ring(flat, lengths, self.row_bytes, n_high if n > 1 else 0, n_low if n > 1 else 1)
        self.capacity = n
        self.bits_per_frame = int(rate_bps * frame_s)
        self.sink = sink
        self.sent = 0
        self._allowance_bits = 0

    @property
    def count(self) -> int:
        return self.high.count + self.low.count

    @property
    def overflow(self) -> int:
        return self.high.overflow + self.low.overflow

    def push(self, packet: bytes, high: bool = False) -> bool:
        if len(packet) > self.row_bytes:
            raise ValueError(f"packet of {len(packet)} bytes exceeds the queue row size {self.row_bytes}")
        return (self.high if high else self.low).push(packet)

    def drain(self, n_frames: int, in_contact: bool) -> None:
        """Send what the link carries in n frames, HIGH first; unused allowance is not banked."""
        if not in_contact or not self.count:
            self._allowance_bits = 0
            return
        self._allowance_bits += self.bits_per_frame * n_frames
        for ring in (self.high, self.low):
            while ring.count:
                bits = 8 * ring.peek_len()
                if self._allowance_bits < bits:
                    return
                self._allowance_bits -= bits
                self.sink(ring.pop())
                self.sent += 1
        self._allowance_bits = 0  # both rings empty

    def state_dict(self) -> dict:
        return {"high": self.high.state(), "low": self.low.state(), "sent": self.sent,
                "allowance_bits": self._allowance_bits}

    def load_state_dict(self, s: dict) -> None:
        self.high.load(s["high"])
        self.low.load(s["low"])
        self.sent = s["sent"]
        self._allowance_bits = s["allowance_bits"]
