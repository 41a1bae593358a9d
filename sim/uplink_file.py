"""Read an uplink plan file (written by `groundtools uplink plan`) for the simulated ground station.

Format (big-endian): a repetition of [u16 contact group][u16 length][frame bytes]. The
simulator only carries the frames; it neither builds nor can read their contents.
"""

from __future__ import annotations

import struct
from pathlib import Path

_ENTRY = struct.Struct(">HH")


def read_uplink_file(path: Path) -> list[tuple[int, bytes]]:
    """Parse a plan file; a truncated or malformed file raises ValueError naming the offset."""
    raw = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(raw):
        if pos + _ENTRY.size > len(raw):
            raise ValueError(f"truncated entry header at byte {pos}")
        group, n = _ENTRY.unpack_from(raw, pos)
        pos += _ENTRY.size
        if pos + n > len(raw):
            raise ValueError(f"entry at byte {pos - _ENTRY.size} claims {n} bytes, the file ends first")
        out.append((group, raw[pos : pos + n]))
        pos += n
    return out
