"""The ground's sequence-controlled command link: FOP-1 frames, SDLS-protected, as CLTUs.

FOP-1 (ground_tools/fop1.py) numbers Type-AD frames and retransmits them until the CLCW in
the telemetry acknowledges them. The security layer sits under it (CCSDS 355.0-B with
232.0-B): a frame is protected once, with the next ARSN of its association, and every
retransmission sends the very same bytes, so the onboard anti-replay check (which commits
an AD frame's ARSN only when FARM-1 accepts it) lets a retransmission through and refuses
a replay of an accepted frame. Control frames (Unlock, Set V(R)) are protected anew each
time they are sent.

`CommandLink.send_packet` queues a PUS packet; `radiate()` hands out the CLTUs waiting to
go up; `on_clcw(bytes, now_s)` feeds back what the telemetry said; `tick(now_s)` runs the
FOP-1 timer. Time is whatever the caller says (mission time in the simulator).
`ad_frames` / `ad_retransmissions` / `bc_frames` count what was handed out, and
`state_dict()` / `load_state_dict()` carry the link (FOP-1, the protected-frame cache and the
association's ARSN) across a simulator checkpoint.
"""

from __future__ import annotations

from collections import OrderedDict

from flight_sw.tmtc.cltu import encode_cltu
from flight_sw.tmtc.cop1 import Clcw
from flight_sw.tmtc.tc_frames import FrameType, TcFrame
from flight_sw.tmtc.tc_link import TC_VIRTUAL_CHANNEL
from ground_tools.fop1 import Fop1
from ground_tools.uplink import Uplinker

#: Protected AD frames kept for retransmission (FOP-1's window is at most 255 frames).
CACHE_FRAMES = 512


class CommandLink:
    def __init__(self, uplinker: Uplinker, *, sliding_window: int = 8, t1_initial_s: float = 20.0,
                 transmission_limit: int = 5):
        cfg = uplinker.cfg
        self.up = uplinker
        self.outbox: list[bytes] = []
        self.notices: list[tuple[str, object]] = []
        self._protected: OrderedDict[tuple[int, bytes], bytes] = OrderedDict()
        self.ad_frames = 0  # AD frames handed out, retransmissions included
        self.ad_retransmissions = 0  # of which the same protected frame sent again
        self.bc_frames = 0  # control frames (Unlock, Set V(R)), every transmission
        self.fop = Fop1(spacecraft_id=cfg.telemetry.spacecraft_id, virtual_channel_id=TC_VIRTUAL_CHANNEL,
                        send=self._send, notify=lambda kind, payload: self.notices.append((kind, payload)),
                        sliding_window=sliding_window, t1_initial_s=t1_initial_s,
                        transmission_limit=transmission_limit)

    def _send(self, frame: TcFrame) -> None:
        """FOP-1's frame, protected (once per AD frame) and coded."""
        if frame.frame_type is FrameType.AD:
            key = (frame.frame_sequence_number, frame.data)
            self.ad_frames += 1
            if key in self._protected:
                self.ad_retransmissions += 1
            else:
                self._protected[key] = encode_cltu(self.up.protect(frame.data, bypass=False,
                                                                   n_s=frame.frame_sequence_number))
                while len(self._protected) > CACHE_FRAMES:
                    self._protected.popitem(last=False)
            self.outbox.append(self._protected[key])
            return
        if frame.frame_type is FrameType.BC:  # Unlock / Set V(R): the COP flags are under the MAC too
            self.bc_frames += 1
            self.outbox.append(encode_cltu(self._as_control(frame.data)))
        else:
            self.outbox.append(encode_cltu(self.up.protect(frame.data, bypass=True)))

    def _as_control(self, command: bytes) -> bytes:
        from ground_tools.uplink import tc_frame

        up = self.up
        iv = up.iv_salt + up.seq.to_bytes(8, "big") if up.service == "authenticated_encryption" else None
        raw = tc_frame(up.cfg, up._key, up.service, up.key_id, up.seq, command, bypass=True, iv=iv,
                       control=True)
        up.seq += 1
        return raw

    def send_packet(self, packet: bytes, now_s: float) -> bool:
        """Queue one PUS packet for sequence-controlled transfer (False: FOP-1 refused it now)."""
        return self.fop.request_transfer(packet, now_s)

    def radiate(self) -> list[bytes]:
        out, self.outbox = self.outbox, []
        return out

    def on_clcw(self, clcw: bytes, now_s: float) -> str:
        return self.fop.on_clcw(Clcw.unpack(clcw), now_s)

    def tick(self, now_s: float) -> str | None:
        return self.fop.tick(now_s)

    def confirmed(self) -> list[bytes]:
        return [p for kind, p in self.notices if kind == "positive_confirm"]

    def alerts(self) -> list[object]:
        return [p for kind, p in self.notices if kind == "alert"]

    # -- checkpoint ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The link's whole state: FOP-1, the frames waiting and cached, the notices so far, and
        the association's next ARSN and PUS sequence count (the key itself is the config's)."""
        return {"fop": self.fop.state_dict(), "outbox": list(self.outbox), "notices": list(self.notices),
                "protected": list(self._protected.items()), "ad_frames": self.ad_frames,
                "ad_retransmissions": self.ad_retransmissions, "bc_frames": self.bc_frames,
                "arsn": self.up.seq, "pus_seq": self.up.pus_seq, "iv_salt": self.up.iv_salt}

    def load_state_dict(self, state: dict) -> None:
        self.fop.load_state_dict(state["fop"])
        self.outbox = list(state["outbox"])
        self.notices = list(state["notices"])
        self._protected = OrderedDict(state["protected"])
        self.ad_frames, self.ad_retransmissions = state["ad_frames"], state["ad_retransmissions"]
        self.bc_frames = state["bc_frames"]
        self.up.seq, self.up.pus_seq, self.up.iv_salt = state["arsn"], state["pus_seq"], state["iv_salt"]
