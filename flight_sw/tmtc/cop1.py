"""COP-1 onboard: FARM-1 (CCSDS 232.1-B section 6) and the CLCW (232.0-B 4.2.1.4).

FARM-1 decides, per virtual channel, which validated TC frames are accepted and reports its
state to the ground in the Communications Link Control Word that the TM frames carry. The
ground's FOP-1 retransmits on that report alone, so the acceptance rules must be exactly
the standard's state table (232.1-B table 6-1):

=====  ================================  ============================  ======================
Event  S1 Open                           S2 Wait                       S3 Lockout
=====  ================================  ============================  ======================
E1     Accept, V(R)+1, Retransmit=0, S1  (cannot occur: no buffer)     Discard, S3
E2     Discard, Retransmit=1, Wait=1 S2  Discard, S2                   Discard, S3
E3     Discard, Retransmit=1, S1         Discard, S2                   Discard, S3
E4     Discard, S1                       Discard, S2                   Discard, S3
E5     Discard, Lockout=1, S3            Discard, Lockout=1, S3        Discard, S3
E6     Accept, FARM-B+1, S1              Accept, FARM-B+1, S2          Accept, FARM-B+1, S3
E7     FARM-B+1, Retransmit=0, S1        FARM-B+1, Retransmit=0,       FARM-B+1, Retransmit=0,
                                         Wait=0, S1                    Wait=0, Lockout=0, S1
E8     FARM-B+1, Retransmit=0,           FARM-B+1, Retransmit=0,       FARM-B+1, S3
       V(R)=V*(R), S1                    Wait=0, V(R)=V*(R), S1
E9     Discard, S1                       Discard, S2                   Discard, S3
E10    Ignore, S1                        Wait=0, S1                    Wait=0, S3
=====  ================================  ============================  ======================

Events: E1 AD frame with N(S) = V(R) and buffer space; E2 the same without buffer space;
E3 N(S) in the positive window part V(R)+1 .. V(R)+PW-1; E4 N(S) in the negative part
V(R)-NW .. V(R)-1; E5 N(S) in the lockout area; E6 BD frame; E7 BC Unlock; E8 BC Set V(R);
E9 BC frame whose data is neither control command; E10 buffer release (the higher
procedures took an accepted AD FDU). PW = NW = W/2, all arithmetic modulo 256.

Fixed memory: accepted FDUs are copied into a ring of `buffer_frames` slots preallocated at
start-up, plus one slot for the latest BD FDU (a newer BD FDU overwrites an unread one, as
232.1-B 6.2.2 allows, and the overwrite is counted). Nothing here allocates per frame except
the bytes handed back by `take_fdu`.
"""

from __future__ import annotations

import enum
from array import array
from dataclasses import dataclass

from flight_sw.tmtc.tc_frames import MAX_FRAME_LEN, FrameType, TcFrame, parse_control_command

CLCW_LEN = 4
COP_IN_EFFECT_COP1 = 1


class FarmState(enum.IntEnum):
    OPEN = 1
    WAIT = 2
    LOCKOUT = 3


@dataclass(frozen=True)
class Clcw:
    """Communications Link Control Word (232.0-B 4.2.1.4), 32 bits, big-endian.

    type 0 | version 00 | status 3 | COP in effect 2 | VCID 6 | spare 2 | no RF | no bit
    lock | lockout | wait | retransmit | FARM-B counter 2 | spare 1 | report value 8
    """

    virtual_channel_id: int
    report_value: int
    lockout: bool = False
    wait: bool = False
    retransmit: bool = False
    farm_b_counter: int = 0
    no_rf_available: bool = False
    no_bit_lock: bool = False
    status_field: int = 0
    cop_in_effect: int = COP_IN_EFFECT_COP1

    def __post_init__(self) -> None:
        for name, high in (
            ("virtual_channel_id", 0x3F), ("report_value", 0xFF), ("farm_b_counter", 3),
            ("status_field", 7), ("cop_in_effect", 3),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= high:
                raise ValueError(f"{name}: {value!r} outside 0..{high}")

    def pack(self) -> bytes:
        word = (
            (self.status_field << 26) | (self.cop_in_effect << 24)
            | (self.virtual_channel_id << 18) | (self.no_rf_available << 15)
            | (self.no_bit_lock << 14) | (self.lockout << 13) | (self.wait << 12)
            | (self.retransmit << 11) | (self.farm_b_counter << 9) | self.report_value
        )
        return word.to_bytes(CLCW_LEN, "big")

    @classmethod
    def unpack(cls, raw: bytes) -> Clcw:
        """Parse 4 octets; ValueError on the wrong length, word type or version."""
        if len(raw) != CLCW_LEN:
            raise ValueError(f"clcw: {len(raw)} octets, expected {CLCW_LEN}")
        word = int.from_bytes(raw, "big")
        if word >> 31:
            raise ValueError("control word type: 1, expected 0 (CLCW)")
        if (word >> 29) & 3:
            raise ValueError(f"clcw version number: {(word >> 29) & 3}, expected 0")
        return cls(
            virtual_channel_id=(word >> 18) & 0x3F,
            report_value=word & 0xFF,
            lockout=bool(word >> 13 & 1),
            wait=bool(word >> 12 & 1),
            retransmit=bool(word >> 11 & 1),
            farm_b_counter=(word >> 9) & 3,
            no_rf_available=bool(word >> 15 & 1),
            no_bit_lock=bool(word >> 14 & 1),
            status_field=(word >> 26) & 7,
            cop_in_effect=(word >> 24) & 3,
        )


class Farm1:
    """FARM-1 for one virtual channel. `receive` takes frames that passed validation."""

    def __init__(
        self,
        virtual_channel_id: int,
        *,
        window_width: int = 16,
        buffer_frames: int = 4,
        v_r: int = 0,
        state: FarmState = FarmState.OPEN,
    ):
        if not 0 <= virtual_channel_id <= 0x3F:
            raise ValueError(f"virtual_channel_id: {virtual_channel_id} outside 0..63")
        # 232.1-B 6.1.8.2: W even, 2 <= W <= 254, so PW = NW = W/2.
        if window_width % 2 or not 2 <= window_width <= 254:
            raise ValueError(f"window_width: {window_width}, expected an even value in 2..254")
        if buffer_frames < 1:
            raise ValueError(f"buffer_frames: {buffer_frames}, expected at least 1")
        if not 0 <= v_r <= 0xFF:
            raise ValueError(f"v_r: {v_r} outside 0..255")
        self.virtual_channel_id = virtual_channel_id
        self.window_width = window_width
        self.positive_window = self.negative_window = window_width // 2
        self.state = FarmState(state)
        self.v_r = v_r
        self.lockout = self.state is FarmState.LOCKOUT
        self.wait = self.state is FarmState.WAIT
        self.retransmit = False
        self.farm_b_counter = 0  # counted modulo 2**16; the CLCW reports the low 2 bits
        self.no_rf_available = False
        self.no_bit_lock = False
        self.bd_overwritten = 0
        self.frames_discarded = 0
        # Preallocated FDU storage: AD ring and one BD slot.
        self._ring = bytearray(buffer_frames * MAX_FRAME_LEN)
        self._ring_len = array("H", bytes(2 * buffer_frames))
        self._ring_map = array("h", bytes(2 * buffer_frames))
        self._head = self._count = 0
        self._bd = bytearray(MAX_FRAME_LEN)
        self._bd_len = 0
        self._bd_map = -1

    @property
    def buffer_frames(self) -> int:
        return len(self._ring_len)

    def receive(self, frame: TcFrame) -> tuple[str, bool]:
        """Classify a validated frame into E1..E9, apply the table; return (event, accepted)."""
        if frame.virtual_channel_id != self.virtual_channel_id:
            self.frames_discarded += 1
            return "wrong virtual channel", False
        kind = frame.frame_type
        if kind is FrameType.AD:
            event = self._ad_event(frame.frame_sequence_number)
            accepted = self._on_ad_frame(event, frame)
        elif kind is FrameType.BD:
            event, accepted = "E6", self._on_bd_frame(frame)
        else:
            command = parse_control_command(frame.data)
            if command is None:
                event, accepted = "E9", self._on_invalid_bc_frame()
            elif command[0] == "unlock":
                event, accepted = "E7", self._on_unlock()
            else:
                event, accepted = "E8", self._on_set_vr(command[1])
        if not accepted:
            self.frames_discarded += 1
        return event, accepted

    def take_fdu(self) -> tuple[bytes, int | None] | None:
        """Hand the oldest FDU to the higher procedures: (data, MAP id or None), or None.

        The BD slot goes first (expedited); taking an AD FDU frees a buffer: event E10.
        """
        if self._bd_len:
            out = bytes(self._bd[: self._bd_len]), _map_or_none(self._bd_map)
            self._bd_len = 0
            return out
        if not self._count:
            return None
        off = self._head * MAX_FRAME_LEN
        out = bytes(self._ring[off : off + self._ring_len[self._head]])
        map_id = _map_or_none(self._ring_map[self._head])
        self._head = (self._head + 1) % self.buffer_frames
        self._count -= 1
        self._on_buffer_release()
        return out, map_id

    def set_link_flags(self, *, no_rf_available: bool, no_bit_lock: bool) -> None:
        """Physical layer status for the CLCW (232.0-B 4.2.1.4.8/9)."""
        self.no_rf_available, self.no_bit_lock = bool(no_rf_available), bool(no_bit_lock)

    def clcw(self, status_field: int = 0) -> Clcw:
        """'Report' action (232.1-B 6.2.4): the CLCW for the current FARM state."""
        return Clcw(
            virtual_channel_id=self.virtual_channel_id,
            report_value=self.v_r,
            lockout=self.lockout,
            wait=self.wait,
            retransmit=self.retransmit,
            farm_b_counter=self.farm_b_counter & 3,
            no_rf_available=self.no_rf_available,
            no_bit_lock=self.no_bit_lock,
            status_field=status_field,
        )

    # --- event classification and the state table -------------------------------------

    def _ad_event(self, n_s: int) -> str:
        ahead = (n_s - self.v_r) % 256
        if ahead == 0:
            return "E1" if self._count < self.buffer_frames else "E2"
        if ahead <= self.positive_window - 1:
            return "E3"
        if (self.v_r - n_s) % 256 <= self.negative_window:
            return "E4"
        return "E5"

    def _on_ad_frame(self, event: str, frame: TcFrame) -> bool:
        """E1..E5: a Type-AD frame, by where N(S) falls against V(R)."""
        state = self.state
        if state is FarmState.LOCKOUT:
            return False  # E1..E5 in S3: discard
        if event == "E1":
            if state is FarmState.WAIT:  # not reachable: S2 means the buffer is full
                return False
            self._store_ad(frame)
            self.v_r = (self.v_r + 1) % 256
            self.retransmit = False
            return True
        if event == "E2" and state is FarmState.OPEN:
            self.retransmit = self.wait = True
            self.state = FarmState.WAIT
        elif event == "E3" and state is FarmState.OPEN:
            self.retransmit = True
        elif event == "E5":
            self.lockout = True
            self.state = FarmState.LOCKOUT
        return False

    def _on_bd_frame(self, frame: TcFrame) -> bool:
        """E6: a Type-BD frame is accepted in every state."""
        if self._bd_len:
            self.bd_overwritten += 1
        self._bd[: len(frame.data)] = frame.data
        self._bd_len = len(frame.data)
        self._bd_map = -1 if frame.map_id is None else frame.map_id
        self._count_type_b()
        return True

    def _on_unlock(self) -> bool:
        """E7: Unlock resets the FARM to Open from every state."""
        self._count_type_b()
        self.retransmit = self.wait = self.lockout = False
        self.state = FarmState.OPEN
        return True

    def _on_set_vr(self, v_star_r: int) -> bool:
        """E8: Set V(R); in Lockout only counted (the FARM must be unlocked first)."""
        self._count_type_b()
        if self.state is not FarmState.LOCKOUT:
            self.retransmit = self.wait = False
            self.v_r = v_star_r
            self.state = FarmState.OPEN
        return True

    def _on_invalid_bc_frame(self) -> bool:
        """E9: a BC frame without a valid control command is discarded, no state change."""
        return False

    def _on_buffer_release(self) -> None:
        """E10: buffer release; S2 -> S1, S3 keeps Lockout but clears Wait, S1 ignores it."""
        if self.state is FarmState.OPEN:
            return
        self.wait = False
        if self.state is FarmState.WAIT:
            self.state = FarmState.OPEN

    def _count_type_b(self) -> None:
        self.farm_b_counter = (self.farm_b_counter + 1) % 65536

    def _store_ad(self, frame: TcFrame) -> None:
        slot = (self._head + self._count) % self.buffer_frames
        off = slot * MAX_FRAME_LEN
        self._ring[off : off + len(frame.data)] = frame.data
        self._ring_len[slot] = len(frame.data)
        self._ring_map[slot] = -1 if frame.map_id is None else frame.map_id
        self._count += 1


def _map_or_none(map_id: int) -> int | None:
    return None if map_id < 0 else map_id
