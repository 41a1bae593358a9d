"""Fixed-size downlink queue with three priorities that drains only during contacts.

Packets are copied into rows of one preallocated byte buffer (sized from the config),
split between three FIFO rings: EVENT (PUS service 5 event reports: mode changes,
faults, refusals), HIGH (command verification, per-orbit budgets and the other reports
the operators must see first) and LOW (periodic housekeeping, samples). Events have a
ring of their own because they are rate-limited per event id (packets.py) and so cannot
fill it with one kind, while verification reports grow with whatever the ground sends:
a flood of commands must not crowd out the mode change it may cause. During a contact
EVENT drains first, then HIGH, then LOW, at most the link's bits per minor frame. The
allowance is kept in whole bits per frame, so draining k frames at once sends exactly
what k single-frame drains send (the executive crosses idle frames in one call). A
packet that does not fit its ring is refused and counted per priority (reported in
housekeeping), never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Shares of the queue's rows reserved for event reports and for the other HIGH packets.
EVENT_SHARE = 0.125
HIGH_SHARE = 0.125
#: Byte of a PUS-C TM packet holding its service type (6-byte primary header, then the
#: secondary header's version/time-reference byte, then the service).
PUS_TM_SERVICE_BYTE = 7
PUS_SERVICE_EVENT = 5


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
        if n < 3:
            raise ValueError(f"downlink.queue_packets must be at least 3 (one row per priority), got {n}")
        flat = memoryview(rows.reshape(-1))  # byte view: copying in/out creates no arrays
        n_event = max(1, int(n * EVENT_SHARE))
        n_high = max(1, int(n * HIGH_SHARE))
        self.event = _Ring(flat, lengths, self.row_bytes, 0, n_event)
        self.high = _Ring(flat, lengths, self.row_bytes, n_event, n_high)
        self.low = _Ring(flat, lengths, self.row_bytes, n_event + n_high, n - n_event - n_high)
        self.rings = (self.event, self.high, self.low)
        self.capacity = n
        self.bits_per_frame = int(rate_bps * frame_s)
        self.sink = sink
        self.sent = 0
        self._allowance_bits = 0

    @property
    def count(self) -> int:
        return sum(r.count for r in self.rings)

    @property
    def overflow(self) -> int:
        return sum(r.overflow for r in self.rings)

    def push(self, packet: bytes, high: bool = False) -> bool:
        """Queue a packet: HIGH ones go to the EVENT ring when they are event reports."""
        if len(packet) > self.row_bytes:
            raise ValueError(f"packet of {len(packet)} bytes exceeds the queue row size {self.row_bytes}")
        if not high:
            return self.low.push(packet)
        is_event = len(packet) > PUS_TM_SERVICE_BYTE and packet[PUS_TM_SERVICE_BYTE] == PUS_SERVICE_EVENT
        return (self.event if is_event else self.high).push(packet)

    def drain(self, n_frames: int, in_contact: bool) -> None:
        """Send what the link carries in n frames, HIGH first; unused allowance is not banked."""
        if not in_contact or not self.count:
            self._allowance_bits = 0
            return
        self._allowance_bits += self.bits_per_frame * n_frames
        for ring in self.rings:
            while ring.count:
                bits = 8 * ring.peek_len()
                if self._allowance_bits < bits:
                    return
                self._allowance_bits -= bits
                self.sink(ring.pop())
                self.sent += 1
        self._allowance_bits = 0  # every ring empty

    def state_dict(self) -> dict:
        return {"event": self.event.state(), "high": self.high.state(), "low": self.low.state(), "sent": self.sent,
                "allowance_bits": self._allowance_bits}

    def load_state_dict(self, s: dict) -> None:
        self.event.load(s["event"])
        self.high.load(s["high"])
        self.low.load(s["low"])
        self.sent = s["sent"]
        self._allowance_bits = s["allowance_bits"]
