"""TC Transfer Frames (CCSDS 232.0-B, TC Space Data Link Protocol, section 4.1).

A frame is a 5-octet primary header, an optional 1-octet segment header (a per-virtual-
channel option), the data field and a 2-octet Frame Error Control Field (CRC-16):

    TFVN 2 | bypass 1 | control command 1 | spare 2 | spacecraft id 10 |
    virtual channel id 6 | frame length 10 (= total octets - 1) | frame sequence number 8

`TcFrame.pack`/`TcFrame.unpack` are the matched pair (ValueError naming the field, as
spacepackets does). The onboard receiver calls `decode_tc_frame`, which never raises on
arbitrary bytes: it returns the frame or None with the reason for the refusal, so a noisy
or hostile uplink is counted and reported rather than crashing the TC task.

Control commands (Type-BC frames, 232.0-B 4.1.3.3 and 232.1-B 4.1.3): Unlock is the single
octet 0x00, Set V(R) is the three octets 0x82 0x00 V*(R).
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass

TFVN = 0
PRIMARY_HEADER_LEN = 5
SEGMENT_HEADER_LEN = 1
FECF_LEN = 2
#: Maximum TC Transfer Frame length, octets (232.0-B 4.1.1: 10-bit length field, 1024 cap).
MAX_FRAME_LEN = 1024
MAX_SPACECRAFT_ID = 0x3FF
MAX_VIRTUAL_CHANNEL_ID = 0x3F
MAX_MAP_ID = 0x3F
#: Segment header sequence flags (232.0-B 4.1.3.2.2).
SEQ_CONTINUING, SEQ_FIRST, SEQ_LAST, SEQ_UNSEGMENTED = 0, 1, 2, 3

UNLOCK_COMMAND = b"\x00"
SET_VR_PREFIX = b"\x82\x00"


class FrameType(enum.Enum):
    """COP-1 service type from the bypass and control command flags (232.0-B 4.1.2.3)."""

    AD = "AD"  # sequence-controlled data: bypass 0, control 0
    BD = "BD"  # expedited data: bypass 1, control 0
    BC = "BC"  # COP control command: bypass 1, control 1


def crc16(data: bytes) -> int:
    """FECF CRC-16 (232.0-B 4.1.4.2): polynomial 0x1021, preset 0xFFFF, no reflection."""
    return binascii.crc_hqx(data, 0xFFFF)


def set_vr_command(v_r: int) -> bytes:
    """The data field of a Set V(R) control command (232.1-B 4.1.3)."""
    if not 0 <= v_r <= 0xFF:
        raise ValueError(f"v_r: {v_r} outside 0..255")
    return SET_VR_PREFIX + bytes((v_r,))


def parse_control_command(data: bytes) -> tuple[str, int] | None:
    """('unlock', 0) or ('set_vr', V*(R)) for a valid BC data field, else None."""
    if data == UNLOCK_COMMAND:
        return "unlock", 0
    if len(data) == 3 and data[:2] == SET_VR_PREFIX:
        return "set_vr", data[2]
    return None


@dataclass(frozen=True)
class TcFrame:
    """One TC Transfer Frame. `map_id` None means the VC carries no segment header."""

    spacecraft_id: int
    virtual_channel_id: int
    frame_sequence_number: int
    data: bytes
    bypass: bool = False
    control_command: bool = False
    map_id: int | None = None
    sequence_flags: int = SEQ_UNSEGMENTED

    def __post_init__(self) -> None:
        _check_range("spacecraft_id", self.spacecraft_id, MAX_SPACECRAFT_ID)
        _check_range("virtual_channel_id", self.virtual_channel_id, MAX_VIRTUAL_CHANNEL_ID)
        _check_range("frame_sequence_number", self.frame_sequence_number, 0xFF)
        _check_range("sequence_flags", self.sequence_flags, 3)
        if self.map_id is not None:
            _check_range("map_id", self.map_id, MAX_MAP_ID)
            if self.control_command:
                raise ValueError("map_id: BC frames carry no segment header (232.0-B 4.1.3.1)")
        if self.control_command and not self.bypass:
            raise ValueError("control_command: set on a Type-A frame, expected bypass=True")
        if not self.data:
            raise ValueError("data: empty, expected at least 1 octet")
        if self.length_octets > MAX_FRAME_LEN:
            raise ValueError(
                f"data: {len(self.data)} octets make a {self.length_octets}-octet frame, "
                f"expected at most {MAX_FRAME_LEN}"
            )

    @property
    def frame_type(self) -> FrameType:
        if not self.bypass:
            return FrameType.AD
        return FrameType.BC if self.control_command else FrameType.BD

    @property
    def length_octets(self) -> int:
        seg = 0 if self.map_id is None else SEGMENT_HEADER_LEN
        return PRIMARY_HEADER_LEN + seg + len(self.data) + FECF_LEN

    def pack(self) -> bytes:
        n = self.length_octets - 1
        head = bytes((
            (TFVN << 6) | (self.bypass << 5) | (self.control_command << 4)
            | (self.spacecraft_id >> 8),
            self.spacecraft_id & 0xFF,
            (self.virtual_channel_id << 2) | (n >> 8),
            n & 0xFF,
            self.frame_sequence_number,
        ))
        if self.map_id is not None:
            head += bytes(((self.sequence_flags << 6) | self.map_id,))
        body = head + bytes(self.data)
        return body + crc16(body).to_bytes(2, "big")

    @classmethod
    def unpack(cls, raw: bytes, *, segment_header: bool = False) -> TcFrame:
        """Parse one frame; ValueError names the field that failed."""
        frame, reason = _parse(bytes(raw), segment_header)
        if frame is None:
            raise ValueError(reason)
        return frame


def decode_tc_frame(
    raw: bytes,
    *,
    spacecraft_id: int,
    virtual_channel_ids: frozenset[int] | None = None,
    segment_header_vcids: frozenset[int] = frozenset(),
) -> tuple[TcFrame | None, str]:
    """Frame validation for the onboard receiver: (frame, "ok") or (None, reason), no raise.

    `virtual_channel_ids` None accepts any VC; `segment_header_vcids` lists the VCs whose
    managed parameters include the segment header (232.0-B 4.1.3.1).
    """
    try:
        raw = bytes(raw)
    except (TypeError, ValueError):
        return None, "input is not a byte string"
    if len(raw) < PRIMARY_HEADER_LEN:
        return None, f"frame: {len(raw)} octets, shorter than the 5-octet primary header"
    vcid = raw[2] >> 2
    frame, reason = _parse(raw, vcid in segment_header_vcids)
    if frame is None:
        return None, reason
    if frame.spacecraft_id != spacecraft_id:
        return None, (
            f"spacecraft_id: 0x{frame.spacecraft_id:03X}, expected 0x{spacecraft_id:03X}"
        )
    if virtual_channel_ids is not None and vcid not in virtual_channel_ids:
        return None, f"virtual_channel_id: {vcid} not configured"
    return frame, "ok"


def _parse(raw: bytes, segment_header: bool) -> tuple[TcFrame | None, str]:
    n = len(raw)
    if n > MAX_FRAME_LEN:
        return None, f"frame: {n} octets, expected at most {MAX_FRAME_LEN}"
    if n < PRIMARY_HEADER_LEN + 1 + FECF_LEN:
        return None, f"frame: {n} octets, shorter than the 8-octet minimum"
    version = raw[0] >> 6
    if version != TFVN:
        return None, f"transfer frame version number: {version}, expected {TFVN}"
    bypass, control = bool(raw[0] & 0x20), bool(raw[0] & 0x10)
    if raw[0] & 0x0C:
        return None, "reserved spare bits: not 00"
    if control and not bypass:
        return None, "control command flag: set on a Type-A frame (bypass 0)"
    declared = (((raw[2] & 0x03) << 8) | raw[3]) + 1
    if declared != n:
        return None, f"frame length field: says {declared} octets, got {n}"
    fecf = int.from_bytes(raw[-2:], "big")
    computed = crc16(raw[:-2])
    if fecf != computed:
        return None, f"frame error control field: 0x{fecf:04X}, computed 0x{computed:04X}"
    start, map_id, flags = PRIMARY_HEADER_LEN, None, SEQ_UNSEGMENTED
    if segment_header and not control:
        if n < PRIMARY_HEADER_LEN + SEGMENT_HEADER_LEN + 1 + FECF_LEN:
            return None, "frame: no data octet after the segment header"
        flags, map_id = raw[start] >> 6, raw[start] & 0x3F
        start += SEGMENT_HEADER_LEN
    return TcFrame(
        spacecraft_id=((raw[0] & 0x03) << 8) | raw[1],
        virtual_channel_id=raw[2] >> 2,
        frame_sequence_number=raw[4],
        data=raw[start:-2],
        bypass=bypass,
        control_command=control,
        map_id=map_id,
        sequence_flags=flags,
    ), "ok"


def _check_range(name: str, value: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise ValueError(f"{name}: {value!r} outside 0..{high}")
