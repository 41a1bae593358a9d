"""Non-volatile storage that survives a power cut at any byte: redundant A/B records and an
append-only upload staging log, on a block device handed in at start-up.

A write to flash or EEPROM can be cut anywhere: the bytes before the cut are new, the
rest old. Two rules make every cut harmless:

- The record (the telecommand state as one blob) lives in two slots, A and B. Each slot
  holds ``magic | generation u64 | length u32 | blob | CRC-32``. A save writes the slot
  that does *not* hold the newest valid copy, with the next generation; the newest copy
  is never touched, so a cut leaves it valid and the torn slot fails its CRC. Loading
  takes the valid slot with the highest generation (the cFS Critical Data Store and
  FSFW's redundant parameter storage work the same way).
- Upload parts go to a staging log after the slots: each entry is
  ``magic | session u32 | index u16 | length u16 | data | CRC-32``, appended, never
  rewritten. A cut tears only the entry being written; on boot the scan stops at the
  first bad entry and the ground resends what is missing. One part costs its own bytes,
  not a rewrite of everything staged before it.

The device is byte-writable non-volatile memory (MRAM, FRAM, EEPROM) that starts erased
(0xFF). A slot whose header is erased was never written; a slot that is neither erased nor
valid is damaged. Both slots damaged is the one state the
record cannot repair by itself (`RecordState.LOST`): the telecommand layer then
refuses everything but its nonce-bound recovery command (security.py).
"""

from __future__ import annotations

import enum
import struct
import zlib
from typing import Protocol

ERASED = 0xFF
SLOT_MAGIC = b"NVR2"
SLOT_HEADER = struct.Struct(">4sQI")  # magic, generation, blob length
LOG_MAGIC = b"PART"
LOG_HEADER = struct.Struct(">4sIHH")  # magic, session id, part index, data length
CRC = struct.Struct(">I")


class BlockDevice(Protocol):
    """Byte-addressed non-volatile memory. `write` may be cut by a power loss part-way."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...


class MemoryDevice:
    """NV memory held in RAM (simulator, tests): survives a reboot when handed to the next instance."""

    def __init__(self, size: int):
        self.size = size
        self.cells = bytearray([ERASED]) * size
        self.writes = 0
        self.bytes_written = 0

    def read(self, offset: int, length: int) -> bytes:
        _check_range(self.size, offset, length)
        return bytes(self.cells[offset : offset + length])

    def write(self, offset: int, data: bytes) -> None:
        _check_range(self.size, offset, len(data))
        self.cells[offset : offset + len(data)] = data
        self.writes += 1
        self.bytes_written += len(data)


class FileDevice:
    """NV memory backed by a file the host opened (flight process, HIL bench).

    The host hands in an open binary file; the flight software never opens paths itself.
    The file is extended with erased bytes to `size` on first use. Each write is flushed
    and synced, so a killed process leaves what a cut would.
    """

    def __init__(self, file, size: int):
        self.file = file
        self.size = size
        self.writes = 0
        self.bytes_written = 0
        file.seek(0, 2)
        have = file.tell()
        if have < size:
            file.write(bytes([ERASED]) * (size - have))
            self._sync()

    def read(self, offset: int, length: int) -> bytes:
        _check_range(self.size, offset, length)
        self.file.seek(offset)
        return self.file.read(length)

    def write(self, offset: int, data: bytes) -> None:
        _check_range(self.size, offset, len(data))
        self.file.seek(offset)
        self.file.write(data)
        self._sync()
        self.writes += 1
        self.bytes_written += len(data)

    def _sync(self) -> None:
        import os

        self.file.flush()
        os.fsync(self.file.fileno())


def _check_range(size: int, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"NV access [{offset}, {offset + length}) outside the device's {size} bytes")


class RecordState(enum.Enum):
    EMPTY = "empty"  # both slots erased: a first boot
    VALID = "valid"
    LOST = "lost"  # both slots written and both damaged


class RedundantRecord:
    """One blob in two slots of `capacity` bytes each at `offset` (A) and `offset + slot` (B)."""

    def __init__(self, device: BlockDevice, offset: int, capacity: int):
        self.device = device
        self.offset = offset
        self.capacity = capacity
        self.slot_bytes = SLOT_HEADER.size + capacity + CRC.size
        if offset + 2 * self.slot_bytes > device.size:
            raise ValueError(f"NV record of 2 x {self.slot_bytes} bytes at {offset} does not fit the "
                             f"{device.size}-byte device")
        self.generation = 0
        self.newest_slot = -1  # the slot holding the newest valid copy; -1: none
        self.state = RecordState.EMPTY

    def _slot_offset(self, slot: int) -> int:
        return self.offset + slot * self.slot_bytes

    def _read_slot(self, slot: int) -> tuple[int, bytes] | None | bool:
        """(generation, blob) for a valid slot, True for an erased one, None for a damaged one.

        A save writes the header first, so a slot whose header is still erased was never written
        (a cut before the first byte changes nothing)."""
        at = self._slot_offset(slot)
        head = self.device.read(at, SLOT_HEADER.size)
        if head == bytes([ERASED]) * SLOT_HEADER.size:
            return True
        magic, generation, length = SLOT_HEADER.unpack(head)
        if magic != SLOT_MAGIC or length > self.capacity:
            return None
        rest = self.device.read(at + SLOT_HEADER.size, length + CRC.size)
        if CRC.unpack_from(rest, length)[0] != zlib.crc32(head + rest[:length]):
            return None
        return generation, rest[:length]

    def load(self) -> bytes:
        """The newest valid blob (b"" when empty or lost; `state` says which)."""
        slots = [self._read_slot(0), self._read_slot(1)]
        valid = [(s[0], i, s[1]) for i, s in enumerate(slots) if isinstance(s, tuple)]
        if valid:
            generation, slot, blob = max(valid)
            self.generation, self.newest_slot, self.state = generation, slot, RecordState.VALID
            return blob
        self.newest_slot = -1
        # One erased slot: the record was never formatted (`format` writes both slots before
        # anything is stored), so a damaged other slot is a format cut short, not lost state.
        self.state = RecordState.EMPTY if any(s is True for s in slots) else RecordState.LOST
        return b""

    def format(self, blob: bytes) -> None:
        """First use: write `blob` into both slots, so that real state never has a single copy."""
        self.save(blob)
        self.save(blob)

    def save(self, blob: bytes) -> None:
        """Write `blob` as the next generation into the slot that is not the newest."""
        if len(blob) > self.capacity:
            raise ValueError(f"NV record of {len(blob)} bytes exceeds its {self.capacity}-byte slot")
        slot = 1 - self.newest_slot if self.newest_slot >= 0 else 0
        body = SLOT_HEADER.pack(SLOT_MAGIC, self.generation + 1, len(blob)) + blob
        self.device.write(self._slot_offset(slot), body + CRC.pack(zlib.crc32(body)))
        self.generation += 1
        self.newest_slot = slot
        self.state = RecordState.VALID


class StagingLog:
    """Append-only upload parts for one session at a time, in a region of `capacity` bytes.

    `begin(session)` erases the region (a new session); `append` writes one entry after the
    last; `scan` rebuilds {index: data} of the current session from the device at boot.
    A later entry for the same index replaces an earlier one (a resent part).
    """

    def __init__(self, device: BlockDevice, offset: int, capacity: int):
        if offset + capacity > device.size:
            raise ValueError(f"staging log of {capacity} bytes at {offset} does not fit the "
                             f"{device.size}-byte device")
        self.device = device
        self.offset = offset
        self.capacity = capacity
        self.session = 0
        self.end = 0  # bytes used
        self.parts: dict[int, tuple[int, int]] = {}  # index -> (offset of data, length)

    def begin(self, session: int) -> None:
        """Start a session: erase what the last one used (only that, to spare the flash)."""
        if self.end:
            self.device.write(self.offset, bytes([ERASED]) * self.end)
        self.session, self.end, self.parts = session, 0, {}

    def append(self, index: int, data: bytes) -> None:
        need = LOG_HEADER.size + len(data) + CRC.size
        if self.end + need > self.capacity:
            raise OverflowError(f"staging log full ({self.end} of {self.capacity} bytes used)")
        head = LOG_HEADER.pack(LOG_MAGIC, self.session, index, len(data)) + data
        at = self.offset + self.end
        self.device.write(at, head + CRC.pack(zlib.crc32(head)))
        self.parts[index] = (at + LOG_HEADER.size, len(data))
        self.end += need

    def read(self, index: int) -> bytes:
        at, length = self.parts[index]
        return self.device.read(at, length)

    def scan(self, session: int) -> None:
        """Rebuild the part map of `session` from the device, stopping at the first bad entry."""
        self.session, self.end, self.parts = session, 0, {}
        pos = 0
        while pos + LOG_HEADER.size + CRC.size <= self.capacity:
            head = self.device.read(self.offset + pos, LOG_HEADER.size)
            magic, sess, index, length = LOG_HEADER.unpack(head)
            total = LOG_HEADER.size + length + CRC.size
            if magic != LOG_MAGIC or pos + total > self.capacity:
                break
            entry = self.device.read(self.offset + pos, total)
            if CRC.unpack_from(entry, total - CRC.size)[0] != zlib.crc32(entry[: total - CRC.size]):
                break
            pos += total
            if sess == session:
                self.parts[index] = (self.offset + pos - total + LOG_HEADER.size, length)
        # A torn tail is left where it is: the next append goes after the last good entry and
        # the torn bytes are overwritten (the region is erased at the next session).
        self.end = pos


def record_capacity(max_upload_bytes: int) -> int:
    """Bytes the telecommand record may need: the confirmed head (hex) and staged manifest,
    the parameter table, the security associations, with room to spare."""
    return 2 * max_upload_bytes + 16384


def staging_capacity(max_upload_bytes: int, chunk_bytes_min: int = 16) -> int:
    """The staging log holds every part twice over (resends) with its entry overhead."""
    parts = -(-max_upload_bytes // chunk_bytes_min)
    return 2 * (max_upload_bytes + parts * (LOG_HEADER.size + CRC.size))


class NvLayout:
    """Where the record's two slots and the staging log sit on one device."""

    def __init__(self, max_upload_bytes: int):
        self.record_capacity = record_capacity(max_upload_bytes)
        self.slot_bytes = SLOT_HEADER.size + self.record_capacity + CRC.size
        self.staging_offset = 2 * self.slot_bytes
        self.staging_capacity = staging_capacity(max_upload_bytes)
        self.size = self.staging_offset + self.staging_capacity


class RedundantStore:
    """The telecommand layer's NV store: the record in A/B slots plus the staging log."""

    def __init__(self, device: BlockDevice, layout: NvLayout):
        self.device = device
        self.layout = layout
        self.record = RedundantRecord(device, 0, layout.record_capacity)
        self.staging = StagingLog(device, layout.staging_offset, layout.staging_capacity)

    @classmethod
    def in_memory(cls, max_upload_bytes: int) -> RedundantStore:
        layout = NvLayout(max_upload_bytes)
        return cls(MemoryDevice(layout.size), layout)

    @property
    def saves(self) -> int:
        return self.record.generation

    def load(self) -> bytes:
        return self.record.load()

    @property
    def state(self) -> RecordState:
        return self.record.state

    def save(self, blob: bytes) -> None:
        self.record.save(blob)

    def format(self, blob: bytes) -> None:
        self.record.format(blob)
