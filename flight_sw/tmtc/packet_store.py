"""The onboard TM store (PUS service 15, ECSS-E-ST-70-41C 6.15): packets kept while no ground
station hears the satellite, played back on their own virtual channel at the next contact.

One packet store (id `STORE_ID`) over one preallocated byte buffer (`tmtc.packet_store` in
the memory plan, `downlink.store_bytes`). It is circular (70-41C 6.15.3.2): when a packet
does not fit, the oldest are overwritten and those that had not yet been played back are
counted as lost, never silently. Entries are a 10-octet header (f64 storage time [s of
mission time], u16 length) and the packet; an entry never straddles the end of the buffer
(the space left there is skipped), so every packet is one contiguous view.

Retrieval never deletes (6.15.3.4): packets stay until overwritten or deleted by TC[15,11].
- Open retrieval (6.15.3.5) sends every packet from its cursor on, as the link has room; it
  is "in progress" from start-up, so playback needs no command. TC[15,16] suspends it,
  TC[15,15] resumes it, TC[15,14] moves its start to a time tag.
- By-time-range retrieval (6.15.3.6, TC[15,9]) sends the packets stored in [t1, t2] once
  more (for a pass whose playback was lost); while it runs, open retrieval waits.

Time tags are onboard time: seconds since mission start, the reference the schedule (11,4)
uses too. Cursors are entry indices (a u64 that only grows), so a cursor whose packets were
overwritten is detected and moved to the oldest packet left.
"""

from __future__ import annotations

import struct

import numpy as np

from flight_sw.tmtc.dictionary import STORE_CONTENT_SUMMARY_STRUCT, STORE_STATUS_STRUCT

#: The one packet store of this flight software (housekeeping generated out of contact).
STORE_ID = 1
ENTRY_HEAD = struct.Struct(">dH")  # storage time [s], packet length [octets]
#: Service 15 subtypes used here (70-41C 8.15).
ENABLE_STORAGE, DISABLE_STORAGE = 1, 2
START_BY_TIME_RANGE = 9
DELETE_UP_TO = 11
REPORT_CONTENT_SUMMARY, CONTENT_SUMMARY_REPORT = 12, 13
CHANGE_OPEN_RETRIEVAL_START = 14
RESUME_OPEN_RETRIEVAL, SUSPEND_OPEN_RETRIEVAL = 15, 16
ABORT_BY_TIME_RANGE = 17
REPORT_STATUS, STATUS_REPORT = 18, 19
#: TM[15,13] and TM[15,19] records (field names in the dictionary).
CONTENT_SUMMARY_STRUCT = STORE_CONTENT_SUMMARY_STRUCT
STATUS_STRUCT = STORE_STATUS_STRUCT
TIME_STRUCT = struct.Struct(">I")
STORE_ID_STRUCT = struct.Struct(">H")
RANGE_STRUCT = struct.Struct(">HII")  # store id, from, to [s since mission start]


class StoreCommandError(Exception):
    """A refused service 15 request: `code` is a name in dictionary.TC_FAILURES."""

    def __init__(self, code: str, text: str):
        super().__init__(f"{code}: {text}")
        self.code, self.text = code, text


class _Cursor:
    """A retrieval position: the index of the next packet and its offset in the buffer."""

    __slots__ = ("index", "offset")

    def __init__(self, index: int = 0, offset: int = 0):
        self.index, self.offset = index, offset


class PacketStore:
    def __init__(self, buffer: np.ndarray):
        if buffer.dtype != np.uint8 or buffer.ndim != 1:
            raise ValueError(f"packet store buffer: expected a 1-D uint8 array, got {buffer.dtype} {buffer.shape}")
        self.buf = buffer
        self._view = memoryview(buffer)
        self.capacity = len(buffer)
        self.storing = True
        self.open_in_progress = True
        self.range_active = False
        self._range_end_s = 0.0
        self._open = _Cursor()
        self._range = _Cursor()
        self.head = 0  # offset of the oldest entry
        self.tail = 0  # where the next entry goes
        self.last = 0  # offset of the newest entry
        self.wrap_at = -1  # >= 0: the data is [head, wrap_at) + [0, tail)
        self.used = 0  # octets of entries (space skipped at the end excluded)
        self.first_index = self.next_index = 0  # indices of the oldest packet and of the next one
        self.stored = 0  # packets stored since start
        self.played_back = 0  # packets handed to the downlink (both retrievals)
        self.lost = 0  # overwritten before open retrieval sent them
        self.refused = 0  # longer than the whole store

    @property
    def count(self) -> int:
        return self.next_index - self.first_index

    # -- storing ------------------------------------------------------------------------------
    def store(self, packet: bytes | memoryview, t_s: float) -> bool:
        """Append `packet` with storage time `t_s`, overwriting the oldest when full."""
        size = ENTRY_HEAD.size + len(packet)
        if size > self.capacity:
            self.refused += 1
            return False
        while (off := self._place(size)) < 0:
            self._drop_oldest()
        if off == 0 and self.count and self.tail != 0:
            self.wrap_at, self.tail = self.tail, 0
        ENTRY_HEAD.pack_into(self._view, off, t_s, len(packet))
        self._view[off + ENTRY_HEAD.size : off + size] = packet
        for cur in (self._open, self._range):  # a cursor at the end now points at this packet
            if cur.index == self.next_index:
                cur.offset = off
        self.last, self.tail = off, off + size
        self.used += size
        self.next_index += 1
        self.stored += 1
        return True

    def _place(self, size: int) -> int:
        """Offset where an entry of `size` octets fits now, -1 when the oldest must go first."""
        if self.count == 0:
            self.head = self.tail = 0
            self.wrap_at = -1
            return 0
        if self.wrap_at < 0:  # data in [head, tail)
            if self.capacity - self.tail >= size:
                return self.tail
            return 0 if self.head >= size else -1
        return self.tail if self.head - self.tail >= size else -1

    def _entry_size(self, off: int) -> int:
        return ENTRY_HEAD.size + ENTRY_HEAD.unpack_from(self._view, off)[1]

    def _time(self, off: int) -> float:
        return ENTRY_HEAD.unpack_from(self._view, off)[0]

    def _next(self, off: int) -> int:
        nxt = off + self._entry_size(off)
        return 0 if nxt == self.wrap_at else nxt

    def _drop_oldest(self, deleted: bool = False) -> None:
        """Overwrite (or, `deleted`, delete on request) the oldest packet."""
        size = self._entry_size(self.head)
        if not deleted and self._open.index <= self.first_index:
            self.lost += 1  # open retrieval had not sent it yet
        self.head = self._next(self.head)
        if self.head == 0 and self.wrap_at >= 0:
            self.wrap_at = -1
        self.used -= size
        self.first_index += 1
        if self.count == 0:
            self.head = self.tail = 0
            self.wrap_at = -1

    def _valid(self, cur: _Cursor) -> _Cursor:
        """A cursor whose packets were overwritten continues at the oldest packet left."""
        if cur.index < self.first_index:
            cur.index, cur.offset = self.first_index, self.head
        return cur

    def _seek(self, t_s: float) -> _Cursor:
        """The first packet stored at or after `t_s` (the end of the store when none is)."""
        off, index = self.head, self.first_index
        while index < self.next_index and self._time(off) < t_s:
            off, index = self._next(off), index + 1
        return _Cursor(index, off)

    # -- retrieval (the downlink pulls) --------------------------------------------------------
    @property
    def retrievable(self) -> bool:
        """A packet is waiting for the playback channel."""
        if self.range_active:
            cur = self._valid(self._range)
            if cur.index < self.next_index and self._time(cur.offset) <= self._range_end_s:
                return True
            self.range_active = False  # the range is done: open retrieval resumes
        return self.open_in_progress and self._valid(self._open).index < self.next_index

    def retrieve_view(self) -> memoryview:
        """The next packet to play back, in place (valid until it is overwritten); advances its cursor.
        Call only when `retrievable`."""
        cur = self._valid(self._range if self.range_active else self._open)
        off = cur.offset
        n = ENTRY_HEAD.unpack_from(self._view, off)[1]
        cur.offset, cur.index = self._next(off), cur.index + 1
        self.played_back += 1
        return self._view[off + ENTRY_HEAD.size : off + ENTRY_HEAD.size + n]

    # -- service 15 requests --------------------------------------------------------------------
    def delete_up_to(self, t_s: float) -> int:
        """TC[15,11]: delete the packets stored before `t_s`; returns how many."""
        n = 0
        while self.count and self._time(self.head) < t_s:
            self._drop_oldest(deleted=True)
            n += 1
        return n

    def start_range(self, from_s: float, to_s: float) -> None:
        """TC[15,9]: send the packets stored in [from_s, to_s] once more."""
        if to_s < from_s:
            raise StoreCommandError("bad_arguments", f"time range {from_s:g} s > {to_s:g} s")
        if self.range_active:
            raise StoreCommandError("store_busy", "a by-time-range retrieval is already running (abort it: 15,17)")
        self._range = self._seek(from_s)
        self._range_end_s = to_s
        self.range_active = True

    def move_open_start(self, t_s: float) -> None:
        """TC[15,14]: open retrieval continues from the first packet stored at or after `t_s`."""
        self._open = self._seek(t_s)

    def content_summary(self) -> bytes:
        """TM[15,13] record of this store."""
        oldest = self._time(self.head) if self.count else 0.0
        newest = self._time(self.last) if self.count else 0.0
        cur = self._valid(self._open)
        open_start = self._time(cur.offset) if cur.index < self.next_index else newest
        pending = self._octets_from(cur)
        return CONTENT_SUMMARY_STRUCT.pack(
            STORE_ID, int(oldest), int(newest), int(open_start),
            round(100 * self.used / self.capacity), round(100 * pending / self.capacity))

    def status(self) -> bytes:
        """TM[15,19] record of this store."""
        return STATUS_STRUCT.pack(STORE_ID, int(self.storing), int(self.open_in_progress), int(self.range_active))

    def _octets_from(self, cur: _Cursor) -> int:
        n, off = 0, cur.offset
        for _ in range(self.next_index - cur.index):
            n += self._entry_size(off)
            off = self._next(off)
        return n

    @property
    def open_pending(self) -> int:
        """Packets open retrieval has still to send."""
        return self.next_index - self._valid(self._open).index

    @property
    def fill(self) -> float:
        return self.used / self.capacity

    # -- checkpoint -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"head": self.head, "tail": self.tail, "last": self.last, "wrap_at": self.wrap_at, "used": self.used,
                "first": self.first_index, "next": self.next_index, "storing": self.storing,
                "open": [self.open_in_progress, self._open.index, self._open.offset],
                "range": [self.range_active, self._range.index, self._range.offset, self._range_end_s],
                "counters": [self.stored, self.played_back, self.lost, self.refused]}

    def load_state_dict(self, s: dict) -> None:
        self.head, self.tail, self.last = s["head"], s["tail"], s["last"]
        self.wrap_at, self.used = s["wrap_at"], s["used"]
        self.first_index, self.next_index, self.storing = s["first"], s["next"], s["storing"]
        self.open_in_progress, self._open.index, self._open.offset = s["open"]
        self.range_active, self._range.index, self._range.offset, self._range_end_s = s["range"]
        self.stored, self.played_back, self.lost, self.refused = s["counters"]
