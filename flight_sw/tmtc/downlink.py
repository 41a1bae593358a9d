"""Fixed-size downlink queue with three priorities, drained into TM Transfer Frames during contacts.

Packets are copied into rows of one preallocated byte buffer (sized from the config),
split between three FIFO rings: EVENT (PUS service 5 event reports: mode changes,
faults, refusals), HIGH (command verification, per-orbit budgets and the other reports
the operators must see first) and LOW (periodic housekeeping, samples). Events have a
ring of their own because they are rate-limited per event id (packets.py) and so cannot
fill it with one kind, while verification reports grow with whatever the ground sends:
a flood of commands must not crowd out the mode change it may cause. A packet that does
not fit its ring is refused and counted per priority (reported in housekeeping), never
dropped silently.

The link is CCSDS TM Transfer Frames (132.0-B, `tm_frames.TmDownlink`) behind the ASM:

- Virtual channels: EVENT and HIGH go on VC1 (events first), LOW on VC0, the playback of
  the onboard TM store (PUS 15, packet_store.py) on VC2, idle frames on VC7. One channel
  for everything urgent keeps the ground's view simple (VC1 is "read first") and the
  EVENT-before-HIGH order is kept by the order packets enter it. Playback takes what real
  time leaves: VC1, then VC0, then VC2.
- The TM store: while no station hears the satellite (`link_up` False, set by the
  executive each tick), LOW packets are stored (when its storage function is enabled)
  instead of waiting in the LOW ring, with the storage time from `clock()`; at the next
  contact open retrieval plays them back. EVENT and HIGH packets always wait in their rings:
  they are what the operators read first at AOS.
- Sequence counts: the 14-bit count of each APID is stamped when a packet leaves its ring
  for a frame (the PUS-C CRC recomputed), not when it was packed, so the ground sees every
  APID's counts strictly increase (mod 2^14) although EVENT overtakes LOW. For that the
  order packets enter the framer must be the order they complete on the ground, so a
  channel is topped up only while no other channel holds unframed octets: a channel with
  a packet in progress finishes it (at most one frame) before another channel starts.
- Bits: the link carries `rate_bps * minor_frame_s` bits per minor frame, counted in whole
  CADUs (ASM + frame, 8 * (4 + tm_frame_bytes) bits); credit below one CADU carries over
  while data waits, nothing more is banked. With nothing to send, an idle frame (VC7) goes
  out at the first minor frame of a contact, whenever the CLCW has changed since the last
  frame, and at least every CLCW_REFRESH_MINOR_FRAMES, so the ground's FOP-1 always holds
  a fresh CLCW from the OCF without the link being filled with idle frames (at 1 Mbit/s
  that would be ~110 per second; one per second was 13 MB of idle frames a day).
- The allowance is kept per minor frame, so draining k frames at once sends exactly what
  k single-frame drains send (the executive crosses idle frames in one call).

`clcw_source` (settable) gives the 4-octet CLCW for every frame's OCF; until FARM-1 is
wired it is `NO_COP_CLCW`. Memory: the framer's rings, frame buffer, idle pattern and the
per-APID counters are in the start-up memory plan (`link_buffer_specs`); the queue takes
them preallocated (`link_buffers`) or allocates exactly those sizes itself.
"""

from __future__ import annotations

import binascii
import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from flight_sw.config.schema import DownlinkConfig, TelemetryConfig
from flight_sw.tmtc.packet_store import PacketStore
from flight_sw.tmtc.tm_frames import (
    ASM,
    MIN_PACKET_BYTES,
    SPACE_PACKET_HEADER_BYTES,
    TmDownlink,
    buffer_bytes,
    data_field_bytes,
    packet_length,
)

#: Shares of the queue's rows reserved for event reports and for the other HIGH packets.
EVENT_SHARE = 0.125
HIGH_SHARE = 0.125
#: Byte of a PUS-C TM packet holding its service type (6-byte primary header, then the
#: secondary header's version/time-reference byte, then the service).
PUS_TM_SERVICE_BYTE = 7
PUS_SERVICE_EVENT = 5
#: With nothing to send, an idle frame refreshes the ground's CLCW at least this often (minor
#: frames; FOP-1's timer T1 is 20 s in ground_tools/command_link.py).
CLCW_REFRESH_MINOR_FRAMES = 10
#: Virtual channels: housekeeping, events and the other high-priority reports, idle frames.
VC_LOW = 0
VC_HIGH = 1
VC_PLAYBACK = 2
VC_IDLE = 7
#: CLCW sent while no COP is wired (232.0-B 4.2.1.4): control word type 0, version 0, COP in
#: Effect '00' (not COP-1: a FOP-1 ignores the word), VC 0, every flag and count zero.
NO_COP_CLCW = bytes(4)
#: PUS-C packet error control: CRC-16/CCITT-FALSE over the packet, in its last two octets.
PEC_BYTES = 2
SEQ_MODULO = 1 << 14
APIDS = 1 << 11


def _schema_default(cls, name: str):
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


#: The config's defaults, used when the caller does not pass the mission's values.
DEFAULT_SPACECRAFT_ID: int = _schema_default(TelemetryConfig, "spacecraft_id")
DEFAULT_TM_FRAME_BYTES: int = _schema_default(DownlinkConfig, "tm_frame_bytes")


def link_channels(frame_bytes: int, row_bytes: int) -> tuple[tuple[int, int], ...]:
    """(VC, ring octets) in priority order. A channel is topped up to one data field only,
    so its ring needs a data field plus the largest packet (one queue row)."""
    ring = data_field_bytes(frame_bytes) + row_bytes
    return ((VC_HIGH, ring), (VC_LOW, ring), (VC_PLAYBACK, ring))


def link_buffer_specs(frame_bytes: int, row_bytes: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """The link's buffers for the memory plan: name -> (shape, dtype)."""
    plan = {f"tmtc.tm_{name}": ((size,), "uint8")
            for name, size in buffer_bytes(frame_bytes, link_channels(frame_bytes, row_bytes)).items()}
    plan["tmtc.tm_seq_counts"] = ((APIDS,), "uint16")
    return plan


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

    def pop_view(self) -> memoryview:
        """The oldest packet, in place (valid until its row is reused), and remove it."""
        row = self.first + self.head
        off = row * self.row_bytes
        out = self.flat[off : off + int(self.lengths[row])]
        self.head = (self.head + 1) % self.capacity
        self.count -= 1
        return out

    def pop(self) -> bytes:
        return self.pop_view().tobytes()

    def state(self) -> list[int]:
        return [self.head, self.count, self.overflow]

    def load(self, s: list[int]) -> None:
        self.head, self.count, self.overflow = s


class _Retrievable:
    """The store seen as a source with a `count` (1 while a packet waits for playback)."""

    def __init__(self, store: PacketStore):
        self.store = store

    @property
    def count(self) -> int:
        return int(self.store.retrievable)


class DownlinkQueue:
    def __init__(
        self,
        rows: np.ndarray,
        lengths: np.ndarray,
        rate_bps: float,
        frame_s: float,
        sink: Callable[[bytes], None],
        *,
        spacecraft_id: int = DEFAULT_SPACECRAFT_ID,
        tm_frame_bytes: int = DEFAULT_TM_FRAME_BYTES,
        link_buffers: Mapping[str, np.ndarray] | None = None,
        store: PacketStore | None = None,
        clock: Callable[[], float] = lambda: 0.0,
    ):
        """`sink(cadu)` receives each ASM + TM Transfer Frame (a copy). `link_buffers`: the
        memory plan's buffers (names of `link_buffer_specs`), None to allocate them here.
        `store`: the onboard TM store (None: none; LOW packets then always wait in their ring);
        `clock()`: onboard time [s], the storage time of stored packets."""
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
        self.bits_per_frame = int(rate_bps * frame_s)  # per minor frame
        self.sink = sink
        self.sent = 0  # packets handed to the framer
        self._allowance_bits = 0
        self._since_frame = CLCW_REFRESH_MINOR_FRAMES  # minor frames in contact since the last CADU
        self._last_clcw = b""

        specs = link_buffer_specs(tm_frame_bytes, self.row_bytes)
        bufs = {}
        for name, (shape, dtype) in specs.items():
            given = None if link_buffers is None else link_buffers.get(name)
            if given is not None and (given.shape != shape or given.dtype != np.dtype(dtype)):
                raise ValueError(f"downlink link buffer {name}: expected shape {shape} {dtype}, "
                                 f"got {given.shape} {given.dtype}")
            bufs[name] = given if given is not None else np.zeros(shape, dtype)
        self._seq = bufs.pop("tmtc.tm_seq_counts")
        self.clcw_source: Callable[[], bytes] = lambda: NO_COP_CLCW
        self.link = TmDownlink(spacecraft_id, tm_frame_bytes, self._clcw, link_channels(tm_frame_bytes, self.row_bytes),
                               VC_IDLE, buffers={k.removeprefix("tmtc.tm_"): v for k, v in bufs.items()})
        self.cadu_bits = 8 * (len(ASM) + tm_frame_bytes)
        self._vc_high, self._vc_low, self._vc_playback = self.link.queues
        self.store = store
        self._playback = None if store is None else (_Retrievable(store), store.retrieve_view)
        self.clock = clock
        #: True while a ground station hears the satellite (the executive sets it every tick).
        self.link_up = False
        self._data_field = len(self.link.framer.data_field)

    @property
    def count(self) -> int:
        """Packets waiting in the rings (a frame's worth may also sit in the framer)."""
        return sum(r.count for r in self.rings)

    @property
    def overflow(self) -> int:
        return sum(r.overflow for r in self.rings)

    @property
    def frames_sent(self) -> int:
        return self.link.frames_sent

    def _clcw(self) -> bytes:
        return self.clcw_source()

    def push(self, packet: bytes, high: bool = False) -> bool:
        """Queue a packet: HIGH ones go to the EVENT ring when they are event reports."""
        n = len(packet)
        if n > self.row_bytes:
            raise ValueError(f"packet of {n} bytes exceeds the queue row size {self.row_bytes}")
        if n < SPACE_PACKET_HEADER_BYTES + PEC_BYTES or packet_length(packet) != n:
            said = packet_length(packet) if n >= SPACE_PACKET_HEADER_BYTES else None
            raise ValueError(f"downlink packet: {n} octets, its length field says {said}; expected a "
                             f"CCSDS space packet ending in its PUS-C CRC-16, at least "
                             f"{max(MIN_PACKET_BYTES, SPACE_PACKET_HEADER_BYTES + PEC_BYTES)} octets")
        if not high:
            store = self.store
            if store is not None and store.storing and not self.link_up:
                return store.store(packet, self.clock())
            return self.low.push(packet)
        is_event = n > PUS_TM_SERVICE_BYTE and packet[PUS_TM_SERVICE_BYTE] == PUS_SERVICE_EVENT
        return (self.event if is_event else self.high).push(packet)

    def drain(self, n_frames: int, in_contact: bool) -> None:
        """Send what the link carries in n minor frames (see the module text)."""
        if not in_contact:
            self._allowance_bits = 0
            self._since_frame = CLCW_REFRESH_MINOR_FRAMES  # the next contact opens with a CLCW
            return
        for _ in range(n_frames):
            self._allowance_bits += self.bits_per_frame
            self._since_frame += 1
            sent = 0
            while self._allowance_bits >= self.cadu_bits:
                queue = self._select()
                if queue is None and (sent or not self._idle_frame_due()):
                    break
                if queue is not None:
                    self._top_up(queue)
                self._last_clcw = bytes(self.clcw_source())
                self.link.send(1, self._emit)  # the pending channel, else an idle frame
                self._allowance_bits -= self.cadu_bits
                self._since_frame = 0
                sent += 1
            if not self._pending():  # unused allowance is not banked: enough for one idle frame at most
                self._allowance_bits = 0 if sent else min(self._allowance_bits, self.cadu_bits)

    def _idle_frame_due(self) -> bool:
        return self._since_frame >= CLCW_REFRESH_MINOR_FRAMES or bytes(self.clcw_source()) != self._last_clcw

    def _pending(self) -> bool:
        return bool(self.link.pending_bytes or self.event.count or self.high.count or self.low.count
                    or self.store is not None and self.store.retrievable)

    def _select(self):
        """The channel of the next data frame: the one with octets in progress, else by priority."""
        for q in self.link.queues:
            if q.pending_bytes:
                return q
        if self.event.count or self.high.count:
            return self._vc_high
        if self.low.count:
            return self._vc_low
        if self.store is not None and self.store.retrievable:
            return self._vc_playback
        return None

    def _top_up(self, queue) -> None:
        """Move packets into `queue` up to one data field, stamping their sequence counts."""
        if queue is self._vc_high:
            sources = ((self.event, self.event.pop_view), (self.high, self.high.pop_view))
        elif self.event.count or self.high.count:
            return  # finish the frame in progress, then VC1 goes first
        elif queue is self._vc_low:
            sources = ((self.low, self.low.pop_view),)
        elif self.low.count:
            return  # real-time housekeeping before playback
        else:
            sources = (self._playback,)
        for source, pop in sources:
            while source.count and queue.pending_bytes < self._data_field:
                packet = pop()
                self._stamp(packet)
                if not queue.push(packet):  # cannot happen: the ring holds a field plus a row
                    raise RuntimeError(f"vc{queue.vcid} ring full: sized below a data field plus a row")
                self.sent += 1

    def _stamp(self, packet: memoryview) -> None:
        """Write the APID's next sequence count (flags kept) and recompute the PUS-C CRC."""
        apid = ((packet[0] & 0x07) << 8) | packet[1]
        seq = int(self._seq[apid])
        packet[2] = (packet[2] & 0xC0) | (seq >> 8)
        packet[3] = seq & 0xFF
        self._seq[apid] = (seq + 1) % SEQ_MODULO
        end = len(packet) - PEC_BYTES
        crc = binascii.crc_hqx(packet[:end], 0xFFFF)
        packet[end] = crc >> 8
        packet[end + 1] = crc & 0xFF

    def _emit(self, cadu: memoryview) -> None:
        self.sink(bytes(cadu))  # the framer reuses its buffer

    def state_dict(self) -> dict:
        seq = [[apid, int(c)] for apid, c in enumerate(self._seq) if c]
        return {"event": self.event.state(), "high": self.high.state(), "low": self.low.state(), "sent": self.sent,
                "allowance_bits": self._allowance_bits, "seq_counts": seq, "link": self.link.state_dict(),
                "since_frame": self._since_frame, "last_clcw": self._last_clcw.hex(), "link_up": self.link_up,
                "store": None if self.store is None else self.store.state_dict()}

    def load_state_dict(self, s: dict) -> None:
        self.event.load(s["event"])
        self.high.load(s["high"])
        self.low.load(s["low"])
        self.sent = s["sent"]
        self._allowance_bits = s["allowance_bits"]
        self._since_frame, self._last_clcw = s["since_frame"], bytes.fromhex(s["last_clcw"])
        self.link_up = s["link_up"]
        if self.store is not None:
            self.store.load_state_dict(s["store"])
        self._seq[:] = 0
        for apid, c in s["seq_counts"]:
            self._seq[apid] = c
        self.link.load_state_dict(s["link"])
