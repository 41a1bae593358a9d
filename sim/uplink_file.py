"""Read an uplink plan file (written by `groundtools uplink plan`) for the simulated ground station.

Two formats, told apart by the first octets:

- a FOP-1 packet plan (the default of `groundtools uplink plan`) starts with `FOP_PLAN_MAGIC`;
  it holds bare PUS packets that a ground terminal sends through FOP-1. The simulator cannot
  read it: `flightsim run` (its CLI) hands it to `ground_tools.uplink_plan.read_packet_plan`
  and `ground_tools.pass_terminal`.
- a CLTU plan (`groundtools uplink plan --expedited`, `groundtools config package`): a
  repetition of [u16 contact group][u16 length][CLTU bytes], big-endian, read here. The
  simulator only carries the CLTUs (expedited Type-BD frames); it neither builds nor reads
  their contents. (A CLTU plan would start with the magic only with a first entry of contact
  group 17999 and a length of 20529 octets, which no CLTU of a mission frame has.)
"""

from __future__ import annotations

import struct
from pathlib import Path

_ENTRY = struct.Struct(">HH")
#: First octets of a FOP-1 packet plan (format owned by ground_tools/uplink_plan.py).
FOP_PLAN_MAGIC = b"FOP1PLAN"


def is_packet_plan(path: Path) -> bool:
    """Whether the file is a FOP-1 packet plan (by its magic)."""
    with open(path, "rb") as f:
        return f.read(len(FOP_PLAN_MAGIC)) == FOP_PLAN_MAGIC


def read_uplink_file(path: Path) -> list[tuple[int, bytes]]:
    """Parse a CLTU plan file; a truncated or malformed file raises ValueError naming the offset."""
    raw = Path(path).read_bytes()
    if raw.startswith(FOP_PLAN_MAGIC):
        raise ValueError("a FOP-1 packet plan, not a CLTU plan: it needs a ground terminal "
                         "(`flightsim run --uplink` builds one)")
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
