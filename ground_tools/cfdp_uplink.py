"""The ground's CFDP source entity (727.0-B class 2) for file uplink, and the contact model
that counts the passes a file needs.

Each PDU goes up in one space packet of the CFDP APID (`flight_sw.tmtc.cfdp_link`) inside
one SDLS-protected expedited TC frame, coded as a CLTU (`Uplinker.protect`, `encode_cltu`):
CFDP retransmits by itself, so the frames bypass COP-1. File data PDUs are cut to fill a
frame: `ground_tools.uplink.max_packet_bytes(cfg)` minus the space packet header and CRC.

`CfdpUplink` wraps cfdp-py's `SourceHandler` with what a pass-by-pass link needs:

- its timers count the mission time the caller hands in (`next_packet(t_s)`), never the
  wall clock, and only while the caller drives it (during contacts);
- while it waits for the Finished PDU and hears nothing for `prompt_s`, it sends a Prompt
  (NAK) PDU, so the receiver, which only acts when a PDU arrives, answers with its NAK or
  its Finished PDU at the start of each pass;
- every Finished PDU is acknowledged, also one that ends the transfer early (the receiver
  refused the file) and one repeated after the transfer ended (its ACK was lost).

Flow control is the caller's: one packet per `next_packet` call, at the rate the uplink
allows. `contacts_needed` plays a transfer over a lossy link in contacts of a given length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cfdppy import (
    CfdpState,
    IndicationConfig,
    LocalEntityConfig,
    PutRequest,
    RemoteEntityConfig,
    RemoteEntityConfigTable,
)
from cfdppy.handler.source import SourceHandler
from cfdppy.handler.source import TransactionStep as SourceStep
from spacepackets.cfdp import ChecksumType, ConditionCode, Direction, PduType, TransmissionMode
from spacepackets.cfdp.pdu import AckPdu, DirectiveType, PromptPdu
from spacepackets.cfdp.pdu.ack import TransactionStatus
from spacepackets.cfdp.pdu.finished import DeliveryCode, FinishedParams
from spacepackets.cfdp.pdu.helper import PduFactory
from spacepackets.cfdp.pdu.prompt import ResponseRequired
from spacepackets.seqcount import ProvidesSeqCount
from spacepackets.util import UnsignedByteField

from flight_sw.config.schema import MissionConfig
from flight_sw.tmtc.cfdp_link import (
    ENTITY_ID_BYTES,
    GROUND_ENTITY_ID,
    SEQ_NUM_BYTES,
    SP_CRC_LEN,
    SP_HEADER_LEN,
    CfdpReceiver,
    CfdpUser,
    FaultLog,
    MissionCheckTimers,
    MissionClock,
    MissionCountdown,
    SlotFilestore,
    cfdp_apid,
    unwrap_pdu,
    wrap_pdu,
)
from flight_sw.tmtc.cltu import encode_cltu
from ground_tools.uplink import Uplinker, max_packet_bytes

#: EOF re-sent this long after the last when unacknowledged, this many times at most.
EOF_ACK_INTERVAL_S = 5.0
EOF_ACK_LIMIT = 64
#: Waiting for the Finished PDU, silent receiver: a Prompt (NAK) this often.
PROMPT_S = 5.0
#: Contact model: the gap between two passes (any value longer than the timers will do).
GAP_S = 5400.0
#: Contact model: when the uplink has nothing to send, look again after this long.
IDLE_STEP_S = 0.5


def max_pdu_bytes(cfg: MissionConfig) -> int:
    """Longest PDU one TC frame carries: a frame's PUS-size packet minus the CFDP wrapping."""
    return max_packet_bytes(cfg) - SP_HEADER_LEN - SP_CRC_LEN


class _SeqCount(ProvidesSeqCount):
    """Transaction sequence numbers; the caller persists `next` between sessions."""

    def __init__(self, first: int):
        self.next = first

    @property
    def max_bit_width(self) -> int:
        return 8 * SEQ_NUM_BYTES

    @max_bit_width.setter
    def max_bit_width(self, width: int) -> None:
        raise ValueError("the transaction sequence number width is fixed")

    def get_and_increment(self) -> int:
        value = self.next
        self.next = (self.next + 1) % (1 << self.max_bit_width)
        return value


class _Source(SourceHandler):
    """cfdp-py's source handler with its EOF positive-ACK timer on mission time."""

    def __init__(self, *args, clock: MissionClock):
        super().__init__(*args)
        self.clock = clock

    def _start_positive_ack_procedure(self) -> None:
        """cfdp-py 0.7.0's own, with the timer on mission time (its Countdown reads time.time())."""
        assert self._params.remote_cfg is not None
        self.states.step = SourceStep.WAITING_FOR_EOF_ACK
        self._params.positive_ack_params.ack_timer = MissionCountdown(
            self.clock, self._params.remote_cfg.positive_ack_timer_interval_seconds)
        self._params.positive_ack_params.ack_counter = 0


@dataclass
class TransferResult:
    name: str
    seq: int
    condition: ConditionCode
    delivery: DeliveryCode
    finished_s: float

    @property
    def ok(self) -> bool:
        return (
            self.condition == ConditionCode.NO_ERROR and self.delivery == DeliveryCode.DATA_COMPLETE
        )


class CfdpUplink:
    """The ground's CFDP source entity: one file at a time, to the satellite's receiver."""

    def __init__(
        self,
        cfg: MissionConfig,
        uplinker: Uplinker | None = None,
        *,
        first_seq: int = 0,
        eof_ack_interval_s: float = EOF_ACK_INTERVAL_S,
        prompt_s: float = PROMPT_S,
    ):
        self.cfg = cfg
        self.up = uplinker
        self.apid = cfdp_apid(cfg)
        self.clock = MissionClock()
        self.prompt_s = prompt_s
        self.entity_id = UnsignedByteField(GROUND_ENTITY_ID, ENTITY_ID_BYTES)
        self.sat_id = UnsignedByteField(cfg.telemetry.spacecraft_id, ENTITY_ID_BYTES)
        self.store = SlotFilestore(1, 1)  # the ground's copy of the file being sent (see put)
        self.faults = FaultLog()
        remote = RemoteEntityConfig(
            entity_id=self.sat_id,
            max_file_segment_len=None,
            max_packet_len=max_pdu_bytes(cfg),
            closure_requested=True,
            crc_on_transmission=False,
            default_transmission_mode=TransmissionMode.ACKNOWLEDGED,
            crc_type=ChecksumType.CRC_32,
            positive_ack_timer_interval_seconds=eof_ack_interval_s,
            positive_ack_timer_expiration_limit=EOF_ACK_LIMIT,
            immediate_nak_mode=False,
        )
        self.seq = _SeqCount(first_seq)
        self.src = _Source(
            LocalEntityConfig(self.entity_id, IndicationConfig(), self.faults),
            CfdpUser(self.store, lambda params: None),
            RemoteEntityConfigTable([remote]),
            MissionCheckTimers(self.clock, eof_ack_interval_s),
            self.seq,
            clock=self.clock,
        )
        self.outbox: list[bytes] = []
        self.results: list[TransferResult] = []
        self.finished_seqs: dict[int, ConditionCode] = {}
        self.ignored = 0
        self._name = ""
        self._heard_s = 0.0
        self._prompted_s = -1e30
        self._sp_seq = 0

    # -- sending ---------------------------------------------------------------------------------
    def put(self, name: str, data: bytes, t_s: float) -> None:
        """Start sending `data` as file `name` onboard (one transfer at a time)."""
        if self.busy:
            raise ValueError(f"file {name!r}: a transfer of {self._name!r} is still open")
        self.store = SlotFilestore(1, max(1, len(data)))
        self.store.put(name, data)
        self.src.user.vfs = self.store
        self.clock.now_s = t_s
        req = PutRequest(
            destination_id=self.sat_id,
            source_file=Path(name),
            dest_file=Path(name),
            trans_mode=TransmissionMode.ACKNOWLEDGED,
            closure_requested=True,
        )
        self.src.put_request(req)
        self._name = name
        self._heard_s = t_s

    @property
    def busy(self) -> bool:
        return self.src.states.state != CfdpState.IDLE or bool(self.outbox)

    def next_pdu(self, t_s: float) -> bytes | None:
        """The next PDU to send at mission time `t_s` (None: nothing now)."""
        self.clock.now_s = t_s
        if not self.outbox and self.src.states.state != CfdpState.IDLE:
            self._run(None)
            waiting = self.src.states.step in (
                SourceStep.WAITING_FOR_FINISHED,
                SourceStep.WAITING_FOR_EOF_ACK,
            )
            if (
                not self.outbox
                and waiting
                and t_s - self._heard_s >= self.prompt_s
                and t_s - self._prompted_s >= self.prompt_s
            ):
                self._prompted_s = t_s
                self.outbox.append(bytes(PromptPdu(self.src.pdu_conf, ResponseRequired.NAK).pack()))
        return self.outbox.pop(0) if self.outbox else None

    def next_packet(self, t_s: float) -> bytes | None:
        """The next CFDP space packet (a telecommand), or None."""
        pdu = self.next_pdu(t_s)
        if pdu is None:
            return None
        packet = wrap_pdu(self.apid, pdu, telecommand=True, seq_count=self._sp_seq)
        self._sp_seq = (self._sp_seq + 1) % (1 << 14)
        return packet

    def cltu(self, packet: bytes) -> bytes:
        """One packet as a CLTU: an SDLS-protected expedited TC frame (needs the Uplinker)."""
        if self.up is None:
            raise ValueError("uplinker: CfdpUplink was built without one, so it cannot make frames")
        return encode_cltu(self.up.protect(packet, bypass=True))

    # -- receiving -------------------------------------------------------------------------------
    def on_packet(self, packet: bytes, t_s: float) -> bool:
        """A telemetry space packet; False when it is not a CFDP one."""
        pdu = unwrap_pdu(self.apid, packet, telecommand=False)
        if pdu is None:
            return False
        self.on_pdu(pdu, t_s)
        return True

    def on_pdu(self, pdu_bytes: bytes, t_s: float) -> None:
        """One PDU from the satellite (ACK of EOF, NAK, Finished)."""
        self.clock.now_s = t_s
        try:
            pdu = PduFactory.from_raw(bytes(pdu_bytes))
            if pdu is None or pdu.pdu_type != PduType.FILE_DIRECTIVE:
                raise ValueError("not a file directive PDU")
            if pdu.pdu_header.direction != Direction.TOWARDS_SENDER:
                raise ValueError("not towards the sender")
            seq = pdu.transaction_seq_num.value
            active = (
                self.src.states.state != CfdpState.IDLE
                and seq == self.src.transaction_seq_num.value
            )
            if pdu.directive_type == DirectiveType.FINISHED_PDU:
                self._finished(pdu, seq, active)
            elif active:
                self._heard_s = t_s
                self._run(pdu)
            else:
                self.ignored += 1
        except Exception:  # noqa: BLE001 - a stray PDU must not stop the ground's transfer
            self.ignored += 1

    def _finished(self, pdu, seq: int, active: bool) -> None:
        """Acknowledge it; if it ends the open transfer, record the outcome and close."""
        conf = pdu.pdu_header.pdu_conf
        conf.direction = Direction.TOWARDS_RECEIVER
        status = TransactionStatus.ACTIVE if active else TransactionStatus.TERMINATED
        ack = AckPdu(conf, DirectiveType.FINISHED_PDU, pdu.condition_code, status)
        self.outbox.append(bytes(ack.pack()))
        if not active:
            return
        fp: FinishedParams = pdu.finished_params
        self.results.append(
            TransferResult(self._name, seq, fp.condition_code, fp.delivery_code, self.clock.now_s)
        )
        self.finished_seqs[seq] = fp.condition_code
        self.src.reset()

    def _run(self, pdu) -> None:
        self.src.state_machine(pdu)
        while (holder := self.src.get_next_packet()) is not None:
            self.outbox.append(bytes(holder.pack()))


# -- contacts ------------------------------------------------------------------------------------
def play_contacts(
    cfg: MissionConfig,
    data: bytes,
    loss: float,
    rng: np.random.Generator,
    contact_s: float,
    uplink_bps: float,
    *,
    receiver: CfdpReceiver | None = None,
    name: str = "upload.bin",
    max_contacts: int = 1000,
    gap_s: float = GAP_S,
    on_contact=None,
    first_seq: int = 0,
):
    """Send `data` through contacts of `contact_s` seconds separated by `gap_s`, each PDU lost
    with probability `loss` in each direction (one draw per PDU from `rng`). The uplink carries
    one CLTU at a time at `uplink_bps`: a CLTU's air time counts its whole length (CLTU coding
    8/7, start and tail sequences, TC frame header and FECF, SDLS header and trailer, space
    packet header and CRC). A CLTU still on the air when the contact ends is lost. The downlink
    returns each reply at once (the TM channel is not the limit).

    `first_seq` is the transaction number (a receiver ignores numbers it has finished).
    Returns (contacts used, the uplink, the receiver, files the receiver delivered)."""
    up = Uplinker(cfg, iv_salt=b"\0\0\0\0")
    src = CfdpUplink(cfg, up, first_seq=first_seq)
    rx = receiver if receiver is not None else CfdpReceiver(cfg)
    delivered: list[tuple[str, bytes]] = []
    t = 0.0
    src.put(name, data, t)
    for contact in range(1, max_contacts + 1):
        start = (contact - 1) * (contact_s + gap_s)
        end = start + contact_s
        t = start
        while t < end and src.busy:
            packet = src.next_packet(t)
            if packet is None:
                t += IDLE_STEP_S
                continue
            t += len(src.cltu(packet)) * 8.0 / uplink_bps
            if t > end:
                break  # cut off by the end of the pass
            if rng.random() < loss:
                continue
            for reply in rx.on_packet(packet, t) or []:
                if rng.random() >= loss:
                    src.on_packet(reply, t)
            delivered += rx.completed()
        if on_contact is not None:
            on_contact(contact, src, rx)
        if not src.busy:
            return contact, src, rx, delivered
    return max_contacts, src, rx, delivered


def contacts_needed(
    cfg: MissionConfig,
    file_bytes: int,
    loss: float,
    rng: np.random.Generator,
    contact_s: float,
    uplink_bps: float,
) -> int:
    """Contacts a `file_bytes` file of random bytes needs to be delivered and closed (the
    Finished PDU acknowledged) by CFDP class 2 over a link losing `loss` of the PDUs each way.
    Raises if it did not arrive complete and intact within 1000 contacts."""
    data = rng.integers(0, 256, file_bytes, dtype=np.uint8).tobytes()
    rx = CfdpReceiver(cfg, slot_bytes=max(cfg.tmtc.max_upload_bytes, file_bytes))
    n, src, _, delivered = play_contacts(cfg, data, loss, rng, contact_s, uplink_bps, receiver=rx)
    if not src.results or not src.results[-1].ok or delivered != [("upload.bin", data)]:
        raise RuntimeError(
            f"file of {file_bytes} bytes not delivered intact in {n} contacts "
            f"(results {src.results}, receiver {rx.state_dict()})"
        )
    return n
