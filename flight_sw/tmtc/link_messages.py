"""Length-prefixed messages on a byte stream: the framing of every socket link of the split
deployment (flight process <-> world server, world server <-> ground station).

A TCP stream has no message boundaries, so each message is::

    kind (1 octet) | body length (4 octets, big-endian, unsigned) | body

`MessageReader` reassembles messages from whatever chunks a socket returns (a message may
arrive in pieces, several may arrive at once) and refuses a declared length above its limit,
so a corrupt or hostile peer cannot make the reader allocate without bound.

Kinds on the ground radio port (the world server's side of the RF link, `flightsim serve`;
the ground station, `groundtools station`, is its client):

- `RADIO_CADU` (space -> ground): mission time t_s (float64, big-endian) + one CADU
  (ASM + TM Transfer Frame) received by the ground antenna at that time.
- `RADIO_CLTU` (ground -> space): one CLTU to radiate; it reaches the spacecraft only while
  it is in contact (the server models the channel).
- `RADIO_CONTACT` (space -> ground): mission time t_s (float64) + 1 octet, 1 at acquisition
  of signal, 0 at loss of signal.
- `RADIO_TIME` (space -> ground): mission time t_s (float64), sent about once per simulated
  minute so that a station knows how far the world has got between passes.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">BI")
#: Largest body a reader accepts (a CADU is about 1.1 kB; a payload frame a few hundred kB).
MAX_BODY_BYTES = 16 * 1024 * 1024

RADIO_CADU = 1
RADIO_CLTU = 2
RADIO_CONTACT = 3
RADIO_TIME = 4

_T = struct.Struct(">d")


class LinkMessageError(ValueError):
    """A stream that does not follow the framing (a declared length over the limit)."""


def encode(kind: int, body: bytes = b"") -> bytes:
    """One message: header + body."""
    if not 0 <= kind <= 255:
        raise ValueError(f"message kind {kind} is not one octet")
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"message body of {len(body)} octets exceeds {MAX_BODY_BYTES}")
    return HEADER.pack(kind, len(body)) + body


def timed(t_s: float, data: bytes = b"") -> bytes:
    """A body that starts with a mission time (float64, big-endian)."""
    return _T.pack(t_s) + data


def split_timed(body: bytes) -> tuple[float, bytes]:
    """(t_s, rest) of a body made by `timed`."""
    if len(body) < _T.size:
        raise LinkMessageError(f"a timed body needs {_T.size} octets, got {len(body)}")
    return _T.unpack_from(body)[0], body[_T.size:]


class MessageReader:
    """Reassembles (kind, body) messages from stream chunks."""

    def __init__(self, max_body_bytes: int = MAX_BODY_BYTES):
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """Add a chunk; return every message it completed, in order."""
        out = []
        if self._buf:
            self._buf += chunk
            buf = self._buf
        else:  # nothing held back (the usual case): parse the chunk itself, keep only a tail
            buf = chunk
        pos = 0
        while len(buf) - pos >= HEADER.size:
            kind, n = HEADER.unpack_from(buf, pos)
            if n > self.max_body_bytes:
                raise LinkMessageError(f"message declares {n} octets, over the limit of {self.max_body_bytes}")
            end = pos + HEADER.size + n
            if end > len(buf):
                break
            out.append((kind, bytes(buf[pos + HEADER.size:end])))
            pos = end
        if buf is self._buf:
            if pos:
                del buf[:pos]
        elif pos < len(buf):
            self._buf += buf[pos:]
        return out

    @property
    def pending_bytes(self) -> int:
        """Octets of an incomplete message held back."""
        return len(self._buf)
