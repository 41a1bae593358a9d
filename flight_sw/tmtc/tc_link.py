"""The onboard telecommand receiving chain: CLTU -> TC Transfer Frame -> SDLS -> FARM-1 -> PUS.

One uplinked unit is one CLTU (CCSDS 231.0-B) carrying one TC Transfer Frame (232.0-B).
The chain, in the order the standards put it (232.0-B 2.3 with SDLS, 355.0-B 3.3.3):

1. CLTU decoding (detection mode: a codeblock with a parity error ends the CLTU);
2. frame validation (version, length, FECF, spacecraft id, virtual channel);
3. security processing: the association's MAC, then its anti-replay window;
4. FARM-1 (232.1-B): sequence-controlled (AD) frames are accepted only in sequence, the
   expedited (BD) and control (BC: Unlock, Set V(R)) frames at once. Security comes first,
   so a forged frame never moves V(R) or unlocks the FARM.

An AD frame's ARSN is committed only when FARM-1 accepts the frame: a frame the FARM
discards (out of sequence, Wait, Lockout) is retransmitted unchanged by the ground's FOP-1
and must then pass security again. Every other accepted frame commits its ARSN at once. A
retransmission of an AD frame already accepted (its acknowledging CLCW was lost) is refused
by security as a replay and counted as a FARM discard, without a refusal event.
Nothing here raises on arbitrary bytes; every refusal has a reason.
"""

from __future__ import annotations

import dataclasses

from flight_sw.config.schema import MissionConfig
from flight_sw.tmtc.cltu import (
    CODEBLOCK_OCTETS,
    INFO_OCTETS,
    START_SEQUENCE,
    TAIL_SEQUENCE,
    decode_cltu,
)
from flight_sw.tmtc.cop1 import Farm1, FarmState
from flight_sw.tmtc.security import Authenticator
from flight_sw.tmtc.tc_frames import PRIMARY_HEADER_LEN, FrameType, decode_tc_frame

#: The virtual channel telecommands use (one channel: commands and uploads share COP-1).
TC_VIRTUAL_CHANNEL = 0
#: FARM-1 sliding window width W (232.1-B 6.1.8.2; even, 2..254): how far ahead of V(R) an
#: AD frame may be before the FARM declares Lockout instead of asking for a retransmission.
FARM_WINDOW = 16
#: AD frames FARM-1 may hold before the handler takes them (the handler takes each at once).
FARM_BUFFER_FRAMES = 4
#: Outcome of a frame that passed security but that FARM-1 did not accept (not a rejection:
#: COP-1 reports it through the CLCW and the ground retransmits).
FARM_DISCARD = "farm_discard"


def max_cltu_bytes(max_frame_bytes: int) -> int:
    """Longest CLTU that can carry a frame of `max_frame_bytes` (start, codeblocks, tail)."""
    blocks = -(-max_frame_bytes // INFO_OCTETS)
    return len(START_SEQUENCE) + blocks * CODEBLOCK_OCTETS + len(TAIL_SEQUENCE)


class TcReceiver:
    """The chain for one spacecraft and virtual channel, with its FARM-1."""

    STATE_FIELDS = ("v_r", "lockout", "wait", "retransmit", "farm_b_counter", "frames_discarded")

    def __init__(self, cfg: MissionConfig, auth: Authenticator):
        self.spacecraft_id = cfg.telemetry.spacecraft_id
        self.vcids = frozenset((TC_VIRTUAL_CHANNEL,))
        self.auth = auth
        self.max_cltu = max_cltu_bytes(cfg.tmtc.max_frame_bytes)
        self.farm = Farm1(TC_VIRTUAL_CHANNEL, window_width=FARM_WINDOW, buffer_frames=FARM_BUFFER_FRAMES)

    def _authenticate(self, cltu: bytes):
        """CLTU, frame and security checks, nothing committed: (reason or None, SPI, ARSN, plain
        data, frame). A FOP-1 retransmission of a frame FARM-1 already accepted is FARM_DISCARD."""
        raw, _ = decode_cltu(cltu)
        if raw is None:
            return "bad_cltu", 0, 0, b"", None
        frame, _ = decode_tc_frame(raw, spacecraft_id=self.spacecraft_id, virtual_channel_ids=self.vcids)
        if frame is None:
            return "bad_frame", 0, 0, b"", None
        reason, spi, arsn, plain = self.auth.verify_frame(raw[:PRIMARY_HEADER_LEN], frame.data)
        if reason == "replay" and frame.frame_type is FrameType.AD and self._already_accepted(frame):
            return FARM_DISCARD, spi, arsn, b"", frame  # a FOP-1 retransmission whose CLCW was lost
        return reason, spi, arsn, plain, frame

    def prescreen(self, cltu: bytes) -> tuple[str | None, int, int, bytes | None]:
        """(reason or None, SPI, ARSN, what the frame carries): the checks `receive` makes first
        (CLTU, frame, SDLS MAC, anti-replay window), committing nothing, so the handler can refuse
        a frame before it takes a queue slot. What it carries: the PUS packet of an authentic data
        frame, b"" for a control frame (Unlock, Set V(R)), None when refused. With the NV state
        lost, an authentic frame passes (only the recovery command will act)."""
        reason, spi, arsn, plain, frame = self._authenticate(cltu)
        if reason == "state_corrupt":
            reason = None
        if reason:
            return reason, spi, arsn, None
        return None, spi, arsn, b"" if frame.frame_type is FrameType.BC else plain

    def receive(self, cltu: bytes) -> tuple[str | None, int, int, bytes]:
        """(reason or None, SPI, ARSN, PUS packet) for one CLTU. A BC frame accepted by the FARM
        returns (None, SPI, ARSN, b""): it carried no packet."""
        reason, spi, arsn, plain, frame = self._authenticate(cltu)
        if reason == "state_corrupt" and plain and frame.frame_type is not FrameType.BC:
            return reason, spi, arsn, plain  # only the nonce-bound recovery may act on it
        if reason:
            return reason, spi, arsn, b""
        _, accepted = self.farm.receive(dataclasses.replace(frame, data=plain))
        if not accepted:
            return FARM_DISCARD, spi, arsn, b""
        self.auth.commit_arsn(spi, arsn)  # before the command can act
        fdu = self.farm.take_fdu() if frame.frame_type is not FrameType.BC else None
        return None, spi, arsn, fdu[0] if fdu is not None else b""

    def _already_accepted(self, frame) -> bool:
        """N(S) in FARM-1's negative window: a frame it has accepted (232.1-B E4, discarded without
        a report). Its ARSN was committed then, so security also calls it a replay; it is counted
        as a FARM discard rather than raised as a refusal event, since FOP-1 sends these whenever
        an acknowledging CLCW is lost."""
        behind = (self.farm.v_r - frame.frame_sequence_number) % 256
        return 1 <= behind <= self.farm.negative_window

    def clcw(self) -> bytes:
        """The 4-octet CLCW for the TM frames' operational control field (232.0-B 4.2)."""
        return self.farm.clcw().pack()

    def state_dict(self) -> dict:
        f = self.farm
        return {"state": int(f.state), **{name: getattr(f, name) for name in self.STATE_FIELDS}}

    def load_state_dict(self, state: dict) -> None:
        f = self.farm
        f.state = FarmState(state["state"])
        for name in self.STATE_FIELDS:
            setattr(f, name, state[name])
