"""File uplink by CFDP class 2 (CCSDS 727.0-B, acknowledged, NAK mode): the onboard receiver.

Transport. One CFDP PDU travels in one space packet of its own APID (`cfdp_apid`, the flight
software's APID + 1), with no PUS secondary header, followed by a CRC-16 (CCITT, as PUS packet
error control); uplink packets are telecommands (one per SDLS-protected TC frame, expedited:
CFDP does its own retransmission, so COP-1 underneath would only duplicate it and stall its
window across passes), downlink packets are telemetry (the downlink queue restamps their
sequence count and CRC). The PDUs themselves carry no CRC: the frame's FECF and the SDLS MAC
already cover them. No service 1 reports: CFDP acknowledges by itself.

Protocol. The destination entity is cfdp-py's `DestHandler` (Apache-2.0), with these changes
for a spacecraft that is only driven while a contact is up:

- every timer (NAK, positive ACK, check, inactivity) counts mission time handed in with each
  PDU, never the wall clock, and is only looked at when a PDU arrives, so a gap between passes
  costs at most one expiry; the ground's Prompt (NAK) PDU at the start of a pass brings the
  NAK (or the Finished PDU) out at once (deferred NAKs across passes);
- every EOF is acknowledged, a repeat included (727.0-B 4.7.2), and an EOF of a finished
  transaction is acknowledged as terminated;
- a PDU of a new transaction while the Finished PDU waits for its ACK counts as that ACK (the
  ground's source entity runs one transaction at a time, so it has finished); a new
  transaction supersedes an unfinished one (the ground abandoned it);
- PDUs of recently finished transactions are dropped (bounded history), so a late repeat
  never opens a transaction again and a file is delivered exactly once;
- a file larger than a slot, an unsafe name or a full filestore is refused with condition
  code FILESTORE_REJECTION (Finished PDU, file status "discarded by filestore rejection");
- the library's lost-segment tracker is a shared class default (cfdp-py 0.7.0): each
  transaction gets its own here.

The files land in `SlotFilestore`: a fixed number of slots of `tmtc.max_upload_bytes`, one
byte region allocated at construction. A completed file stays sealed in its slot until
`completed()` takes it. Nothing here raises on arbitrary bytes.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cfdppy import (
    CfdpState,
    IndicationConfig,
    LocalEntityConfig,
    RemoteEntityConfig,
    RemoteEntityConfigTable,
)
from cfdppy.exceptions import ChecksumNotImplemented
from cfdppy.filestore import VirtualFilestore
from cfdppy.handler import dest as _cfdp_dest
from cfdppy.handler.dest import DestHandler, LostSegmentTracker, TransactionStep
from cfdppy.mib import CheckTimerProvider, DefaultFaultHandlerBase, EntityType
from cfdppy.user import CfdpUserBase, TransactionFinishedParams
from spacepackets.cfdp import (
    ChecksumType,
    ConditionCode,
    Direction,
    PduType,
    TransmissionMode,
)
from spacepackets.cfdp.defs import NULL_CHECKSUM_U32
from spacepackets.cfdp.pdu import AckPdu, DirectiveType, FinishedPdu, NakPdu
from spacepackets.cfdp.pdu.ack import TransactionStatus
from spacepackets.cfdp.pdu.finished import DeliveryCode, FileStatus
from spacepackets.cfdp.pdu.helper import PduFactory
from spacepackets.cfdp.tlv import FilestoreResponseStatusCode
from spacepackets.countdown import Countdown
from spacepackets.util import UnsignedByteField

from flight_sw.config.schema import MissionConfig
from flight_sw.tmtc.tc_frames import FECF_LEN, PRIMARY_HEADER_LEN
from flight_sw.tmtc.upload import safe_name

#: The ground's CFDP entity id (the satellite's is its spacecraft id).
GROUND_ENTITY_ID = 1
#: Octets of an entity id and of a transaction sequence number in every PDU header.
ENTITY_ID_BYTES = 2
SEQ_NUM_BYTES = 2
#: Space packet primary header and the trailing CRC-16 around each PDU.
SP_HEADER_LEN = 6
SP_CRC_LEN = 2
#: The largest SDLS overhead a TC frame may carry (authenticated encryption: SPI, IV, ARSN, MAC).
SDLS_MAX_OVERHEAD = 2 + 12 + 8 + 16
#: File slots in the onboard filestore (each `tmtc.max_upload_bytes`).
DEFAULT_SLOTS = 2
#: Timers, in mission seconds; counted only while PDUs arrive (see the module text).
NAK_INTERVAL_S = 20.0  # re-issue a NAK this long after the last one when data is still missing
NAK_LIMIT = 32  # NAK issuances without receiving any missing data before NAK_LIMIT_REACHED
ACK_INTERVAL_S = 20.0  # re-send the Finished PDU this long after the last one
ACK_LIMIT = 16  # Finished PDUs without an ACK before POSITIVE_ACK_LIMIT_REACHED
#: No PDU of the open transaction for this long (mission time): INACTIVITY_DETECTED. Longer than
#: any gap between passes, shorter than the life of a stale transaction worth keeping.
INACTIVITY_S = 3 * 86400.0
#: Steps in which the handler itself acknowledges an EOF PDU; in the others this module does.
RECEIVING_STEPS = (
    TransactionStep.RECEIVING_FILE_DATA,
    TransactionStep.RECV_FILE_DATA_WITH_CHECK_LIMIT_HANDLING,
    TransactionStep.WAITING_FOR_METADATA,
)
#: Finished transactions remembered (their late PDUs are dropped, their EOFs acknowledged).
HISTORY = 16


def cfdp_apid(cfg: MissionConfig) -> int:
    """The APID of CFDP space packets (both directions): the flight software's APID + 1."""
    apid = cfg.telemetry.apid + 1
    if apid >= 0x7FF:
        raise ValueError(
            f"telemetry.apid: {cfg.telemetry.apid} leaves no APID below the idle APID "
            f"0x7FF for CFDP (expected at most 0x7FD)"
        )
    return apid


def max_pdu_bytes(cfg: MissionConfig) -> int:
    """Longest CFDP PDU one TC frame carries, under either SDLS service (same as
    ground_tools.uplink.max_packet_bytes minus the space packet header and CRC)."""
    return (
        cfg.tmtc.max_frame_bytes
        - PRIMARY_HEADER_LEN
        - FECF_LEN
        - SDLS_MAX_OVERHEAD
        - SP_HEADER_LEN
        - SP_CRC_LEN
    )


def wrap_pdu(apid: int, pdu: bytes, telecommand: bool, seq_count: int = 0) -> bytes:
    """A space packet (no secondary header) carrying one PDU and a CRC-16 over the packet."""
    body_len = len(pdu) + SP_CRC_LEN
    word0 = (int(telecommand) << 12) | (apid & 0x7FF)
    head = struct.pack(">HHH", word0, 0xC000 | (seq_count & 0x3FFF), body_len - 1)
    crc = binascii.crc_hqx(head + pdu, 0xFFFF)
    return head + pdu + struct.pack(">H", crc)


def unwrap_pdu(apid: int, packet: bytes, telecommand: bool) -> bytes | None:
    """The PDU in a CFDP space packet of `apid`, or None: another APID, wrong type, bad length
    or CRC."""
    if len(packet) < SP_HEADER_LEN + SP_CRC_LEN + 4:
        return None
    word0, _, length = struct.unpack_from(">HHH", packet)
    if (
        word0 & 0xE000
        or (word0 >> 12) & 1 != int(telecommand)
        or word0 & 0x800
        or word0 & 0x7FF != apid
    ):
        return None
    if length + 1 + SP_HEADER_LEN != len(packet):
        return None
    if (
        binascii.crc_hqx(packet[:-SP_CRC_LEN], 0xFFFF)
        != struct.unpack_from(">H", packet, len(packet) - 2)[0]
    ):
        return None
    return bytes(packet[SP_HEADER_LEN:-SP_CRC_LEN])


# -- mission time ----------------------------------------------------------------------------
class MissionClock:
    """The time the caller last handed in (mission seconds); the only clock the timers read."""

    def __init__(self, now_s: float = 0.0):
        self.now_s = now_s


class MissionCountdown(Countdown):
    """spacepackets' Countdown, counting `MissionClock` seconds instead of `time.time()`."""

    def __init__(self, clock: MissionClock, timeout_s: float):
        super().__init__(None)
        self._clock = clock
        self._timeout_ms = round(timeout_s * 1000.0)
        self._start_s = clock.now_s

    def timed_out(self) -> bool:
        return (self._clock.now_s - self._start_s) * 1000.0 >= self._timeout_ms

    def start(self) -> None:
        self._start_s = self._clock.now_s

    def time_out(self) -> None:
        self._start_s = self._clock.now_s - self._timeout_ms / 1000.0

    def remaining_time(self) -> timedelta:
        left_s = self._start_s + self._timeout_ms / 1000.0 - self._clock.now_s
        return timedelta(seconds=max(0.0, left_s))


class _ClockFreeCountdown(Countdown):
    """What cfdp-py's destination handler builds when it makes its own NAK procedure timer
    (`Countdown.from_seconds`): spacepackets' Countdown would read `time.time()` there; this one
    reads nothing, and `adopt` replaces it by a MissionCountdown before it is ever consulted.
    Installed below as the `Countdown` name of `cfdppy.handler.dest` (pinned cfdp-py 0.7.0), so
    no wall-clock read happens in the flight software (tests make any read fail)."""

    def __init__(self, init_timeout: timedelta | None):
        self._timeout_ms = 0 if init_timeout is None else int(init_timeout / timedelta(milliseconds=1))
        self._start_time_ms = 0

    def timed_out(self) -> bool:
        raise RuntimeError("cfdp-py consulted its own timer before flight_sw adopted it (mission time)")

    busy = timed_out


_cfdp_dest.Countdown = _ClockFreeCountdown


def adopt(timer: Countdown | None, clock: MissionClock) -> Countdown | None:
    """A timer the library just made, replaced by a mission-time one started now."""
    if timer is None or isinstance(timer, MissionCountdown):
        return timer
    return MissionCountdown(clock, timer.timeout_ms / 1000.0)


class MissionCheckTimers(CheckTimerProvider):
    def __init__(self, clock: MissionClock, interval_s: float):
        self.clock, self.interval_s = clock, interval_s

    def provide_check_timer(
        self, local_entity_id, remote_entity_id, entity_type: EntityType
    ) -> Countdown:
        return MissionCountdown(self.clock, self.interval_s)


class FaultLog(DefaultFaultHandlerBase):
    """Keeps the last faults (condition code names) for telemetry; the handler acts on them."""

    def __init__(self, keep: int = 8):
        super().__init__()
        self.keep = keep
        self.faults: list[str] = []

    def _note(self, cond: ConditionCode) -> None:
        self.faults = (self.faults + [cond.name])[-self.keep :]

    def notice_of_suspension_cb(self, transaction_id, cond, progress) -> None:
        self._note(cond)

    def notice_of_cancellation_cb(self, transaction_id, cond, progress) -> None:
        self._note(cond)

    def abandoned_cb(self, transaction_id, cond, progress) -> None:
        self._note(cond)

    def ignore_cb(self, transaction_id, cond, progress) -> None:
        self._note(cond)


# -- the filestore -----------------------------------------------------------------------------
class SlotFilestore(VirtualFilestore):
    """cfdp-py's filestore over one byte region of `slots` x `slot_bytes`, allocated here once.

    Flat (no directories); a name is at most one file. A slot is free, open (CFDP writes it) or
    sealed (complete, waiting to be taken; invisible to CFDP). Writes past a slot, a full
    filestore and unsafe names raise PermissionError, which the destination handler turns into
    FILESTORE_REJECTION."""

    def __init__(self, slots: int, slot_bytes: int, region=None):
        """`region`: the memory plan's buffer of slots x slot_bytes octets (else allocated here)."""
        if slots < 1 or slot_bytes < 1:
            raise ValueError(
                f"filestore: slots ({slots}) and slot_bytes ({slot_bytes}) must be >= 1"
            )
        self.slot_bytes = slot_bytes
        if region is not None and len(memoryview(region).cast("B")) != slots * slot_bytes:
            raise ValueError(f"filestore region: {len(memoryview(region).cast('B'))} octets, expected "
                             f"{slots} x {slot_bytes}")
        self.region = memoryview(region).cast("B") if region is not None else bytearray(slots * slot_bytes)
        self.names: list[str | None] = [None] * slots
        self.sizes = [0] * slots
        self.sealed = [False] * slots

    def _slot(self, path: Path) -> int | None:
        name = str(path)
        for i, n in enumerate(self.names):
            if n == name and not self.sealed[i]:
                return i
        return None

    def _need(self, path: Path) -> int:
        i = self._slot(path)
        if i is None:
            raise FileNotFoundError(str(path))
        return i

    def view(self, slot: int) -> memoryview:
        at = slot * self.slot_bytes
        return memoryview(self.region)[at : at + self.sizes[slot]]

    def seal(self, path: Path) -> int | None:
        """Mark a completed file as waiting to be taken; its slot index."""
        i = self._slot(path)
        if i is not None:
            self.sealed[i] = True
        return i

    def free(self, slot: int) -> None:
        self.names[slot], self.sizes[slot], self.sealed[slot] = None, 0, False

    def put(self, name: str, data: bytes) -> None:
        """Place a whole file (the ground's side: the file to send)."""
        if self.create_file(Path(name)) is not FilestoreResponseStatusCode.CREATE_SUCCESS:
            raise ValueError(f"file {name!r}: exists already")
        self.write_data(Path(name), data, 0)

    # VirtualFilestore -----------------------------------------------------------------------
    def read_data(self, file: Path, offset: int | None, read_len: int) -> bytes:
        i = self._need(file)
        start = offset or 0
        return bytes(self.view(i)[start : start + read_len])

    def read_from_opened_file(self, bytes_io, offset: int, read_len: int) -> bytes:
        bytes_io.seek(offset)
        return bytes_io.read(read_len)

    def is_directory(self, path: Path) -> bool:
        return False

    def filename_from_full_path(self, path: Path) -> str | None:
        return path.name

    def file_exists(self, path: Path) -> bool:
        return self._slot(path) is not None

    def truncate_file(self, file: Path) -> None:
        self.sizes[self._need(file)] = 0

    def file_size(self, file: Path) -> int:
        return self.sizes[self._need(file)]

    def write_data(self, file: Path, data: bytes, offset: int | None) -> None:
        i = self._need(file)
        start = offset or 0
        if start < 0 or start + len(data) > self.slot_bytes:
            raise PermissionError(
                f"write [{start}, {start + len(data)}) outside the {self.slot_bytes}-byte slot"
            )
        at = i * self.slot_bytes + start
        self.region[at : at + len(data)] = data
        self.sizes[i] = max(self.sizes[i], start + len(data))

    def create_file(self, file: Path) -> FilestoreResponseStatusCode:
        name = str(file)
        if not safe_name(name):
            raise PermissionError(
                f"file name {name!r}: expected a plain name (letters, digits, _.-)"
            )
        if self._slot(file) is not None:
            return FilestoreResponseStatusCode.CREATE_NOT_ALLOWED
        for i, n in enumerate(self.names):
            if n is None:
                self.names[i], self.sizes[i], self.sealed[i] = name, 0, False
                return FilestoreResponseStatusCode.CREATE_SUCCESS
        raise PermissionError(f"filestore full: all {len(self.names)} slots hold files")

    def delete_file(self, file: Path) -> FilestoreResponseStatusCode:
        i = self._slot(file)
        if i is None:
            return FilestoreResponseStatusCode.DELETE_FILE_DOES_NOT_EXIST
        self.free(i)
        return FilestoreResponseStatusCode.DELETE_SUCCESS

    def rename_file(self, _old_file: Path, _new_file: Path) -> FilestoreResponseStatusCode:
        return FilestoreResponseStatusCode.NOT_PERFORMED

    def replace_file(self, _replaced_file: Path, _source_file: Path) -> FilestoreResponseStatusCode:
        return FilestoreResponseStatusCode.NOT_PERFORMED

    def create_directory(self, _dir_name: Path) -> FilestoreResponseStatusCode:
        return FilestoreResponseStatusCode.NOT_PERFORMED

    def remove_directory(
        self, _dir_name: Path, recursive: bool = False
    ) -> FilestoreResponseStatusCode:
        return FilestoreResponseStatusCode.NOT_PERFORMED

    def list_directory(self, _dir_name: Path, _file_name: Path, _recursive: bool = False):
        return FilestoreResponseStatusCode.NOT_PERFORMED

    def calculate_checksum(
        self,
        checksum_type: ChecksumType,
        file_path: Path,
        size_to_verify: int,
        segment_len: int = 4096,
    ) -> bytes:
        """NULL, MODULAR (727.0-B 4.2.2) or CRC_32 (IEEE 802.3, zlib's) over the first bytes."""
        if checksum_type == ChecksumType.NULL_CHECKSUM:
            return NULL_CHECKSUM_U32
        data = self.view(self._need(file_path))[:size_to_verify]
        if checksum_type == ChecksumType.CRC_32:
            return struct.pack("!I", zlib.crc32(data))
        if checksum_type == ChecksumType.MODULAR:
            total = 0
            for k in range(0, len(data), 4):
                total += int.from_bytes(bytes(data[k : k + 4]).ljust(4, b"\0"), "big")
            return struct.pack("!I", total % 2**32)
        raise ChecksumNotImplemented(checksum_type)


# -- the destination entity -------------------------------------------------------------------
class CfdpUser(CfdpUserBase):
    """Indications from a cfdp-py handler; only the end of a transaction matters (onboard: the
    delivered file; the ground's source entity uses it with a no-op)."""

    def __init__(self, vfs: SlotFilestore, on_finished):
        super().__init__(vfs)
        self.on_finished = on_finished

    def transaction_finished_indication(self, params: TransactionFinishedParams) -> None:
        self.on_finished(params)

    def transaction_indication(self, transaction_indication_params) -> None: ...
    def eof_sent_indication(self, transaction_id) -> None: ...
    def metadata_recv_indication(self, params) -> None: ...
    def file_segment_recv_indication(self, params) -> None: ...
    def report_indication(self, transaction_id, status_report) -> None: ...
    def suspended_indication(self, transaction_id, cond_code) -> None: ...
    def resumed_indication(self, transaction_id, progress) -> None: ...
    def fault_indication(self, transaction_id, cond_code, progress) -> None: ...
    def abandoned_indication(self, transaction_id, cond_code, progress) -> None: ...
    def eof_recv_indication(self, transaction_id) -> None: ...


class _Dest(DestHandler):
    """cfdp-py's destination handler with mission-time timers, a tracker per transaction and
    the filestore's size limit checked against the Metadata PDU."""

    def __init__(self, cfg, user, table, timers, clock: MissionClock):
        super().__init__(cfg, user, table, timers)
        self.clock = clock
        self._fresh_tracker()

    def _fresh_tracker(self) -> None:
        self._params.acked_params.lost_seg_tracker = LostSegmentTracker()

    def _reset_internal(self, clear_packet_queue: bool) -> None:
        super()._reset_internal(clear_packet_queue)
        self._fresh_tracker()

    def _common_first_packet_handler(self, pdu):
        self._fresh_tracker()
        return super()._common_first_packet_handler(pdu)

    def _start_positive_ack_procedure(self) -> None:
        assert self._params.remote_cfg is not None
        self._params.positive_ack_params.ack_timer = MissionCountdown(
            self.clock, self._params.remote_cfg.positive_ack_timer_interval_seconds
        )
        self._params.positive_ack_params.ack_counter = 0

    def _deferred_lost_segment_handling(self) -> None:
        super()._deferred_lost_segment_handling()
        ap = self._params.acked_params
        ap.procedure_timer = adopt(ap.procedure_timer, self.clock)

    def _init_vfs_handling(self, source_base_name: str) -> None:
        size = self._params.fp.file_size or 0
        if size > self.user.vfs.slot_bytes or not safe_name(str(self._params.fp.file_name)):
            self._params.finished_params.file_status = FileStatus.DISCARDED_FILESTORE_REJECTION
            self._declare_fault(ConditionCode.FILESTORE_REJECTION)
            return
        super()._init_vfs_handling(source_base_name)

    def finished_pdu(self) -> bytes:
        return FinishedPdu(
            params=self._params.finished_params, pdu_conf=self._params.pdu_conf
        ).pack()

    def eof_ack(self, condition: ConditionCode, status: TransactionStatus) -> bytes:
        return AckPdu(self._params.pdu_conf, DirectiveType.EOF_PDU, condition, status).pack()


@dataclass
class CfdpCounters:
    pdus: int = 0  # PDUs handed in
    refused: int = 0  # unparsable, not for us, or refused by the handler
    sent: int = 0  # PDUs returned for downlink
    files: int = 0  # files delivered
    failed: int = 0  # transactions that finished without a complete file
    last_refusal: str = ""


class CfdpReceiver:
    """The onboard CFDP destination entity (class 2), one transaction at a time.

    `on_pdu(pdu, t_s)` takes one PDU (mission time `t_s`) and returns the PDUs to downlink;
    `on_packet(space_packet, t_s)` does the same for a CFDP space packet (None: not one);
    `completed()` hands over the files received since the last call and frees their slots."""

    def __init__(
        self,
        cfg: MissionConfig,
        slots: int = DEFAULT_SLOTS,
        *,
        slot_bytes: int | None = None,
        nak_interval_s: float = NAK_INTERVAL_S,
        ack_interval_s: float = ACK_INTERVAL_S,
        inactivity_s: float = INACTIVITY_S,
        region=None,
    ):
        self.apid = cfdp_apid(cfg)
        self.max_pdu = max_pdu_bytes(cfg)
        self.entity_id = UnsignedByteField(cfg.telemetry.spacecraft_id, ENTITY_ID_BYTES)
        self.ground_id = UnsignedByteField(GROUND_ENTITY_ID, ENTITY_ID_BYTES)
        self.inactivity_s = inactivity_s
        self.clock = MissionClock()
        self.store = SlotFilestore(
            slots, slot_bytes if slot_bytes is not None else cfg.tmtc.max_upload_bytes, region
        )
        self.faults = FaultLog()
        local = LocalEntityConfig(self.entity_id, IndicationConfig(), self.faults)
        remote = RemoteEntityConfig(
            entity_id=self.ground_id,
            max_file_segment_len=None,
            max_packet_len=self.max_pdu,
            closure_requested=True,
            crc_on_transmission=False,
            default_transmission_mode=TransmissionMode.ACKNOWLEDGED,
            crc_type=ChecksumType.CRC_32,
            positive_ack_timer_interval_seconds=ack_interval_s,
            positive_ack_timer_expiration_limit=ACK_LIMIT,
            check_limit=2,
            disposition_on_cancellation=False,
            immediate_nak_mode=False,
            nak_timer_interval_seconds=nak_interval_s,
            nak_timer_expiration_limit=NAK_LIMIT,
        )
        self.user = CfdpUser(self.store, self._on_finished)
        self.dest = _Dest(
            local,
            self.user,
            RemoteEntityConfigTable([remote]),
            MissionCheckTimers(self.clock, nak_interval_s),
            self.clock,
        )
        self.counters = CfdpCounters()
        self.history: OrderedDict[tuple[int, int], bool] = OrderedDict()  # finished: delivered?
        self._ready: list[tuple[str, int]] = []  # (name, slot) sealed, waiting to be taken
        self._eof_seen = False
        self._last_pdu_s = 0.0
        self._seq = 0
        self.nak_interval_s = nak_interval_s
        self._asked_metadata_s = -1e30

    # -- public ------------------------------------------------------------------------------
    def on_packet(self, packet: bytes, t_s: float) -> list[bytes] | None:
        """A telecommand space packet: None if it is not CFDP's, else the TM packets to downlink."""
        pdu = unwrap_pdu(self.apid, packet, telecommand=True)
        if pdu is None:
            return None
        out = []
        for reply in self.on_pdu(pdu, t_s):
            out.append(wrap_pdu(self.apid, reply, telecommand=False, seq_count=self._seq))
            self._seq = (self._seq + 1) % (1 << 14)
        return out

    def on_pdu(self, pdu_bytes: bytes, t_s: float) -> list[bytes]:
        """Handle one PDU at mission time `t_s`; the PDUs (ACK, NAK, Finished) to downlink."""
        self.clock.now_s = t_s
        self.counters.pdus += 1
        try:
            if len(pdu_bytes) > self.max_pdu:
                raise ValueError(f"PDU of {len(pdu_bytes)} bytes, longest accepted {self.max_pdu}")
            pdu = PduFactory.from_raw(bytes(pdu_bytes))
            if pdu is None:
                raise ValueError("not a CFDP PDU")
            out = self._handle(pdu)
        except Exception as e:  # noqa: BLE001 - no input may crash the receiver
            self._refuse(type(e).__name__)
            out = self._drain()
        self.counters.sent += len(out)
        return out

    def completed(self) -> list[tuple[str, bytes]]:
        """Files received whole and verified since the last call (each once); frees their slots."""
        out = []
        for name, slot in self._ready:
            out.append((name, bytes(self.store.view(slot))))
            self.store.free(slot)
        self._ready = []
        return out

    @property
    def busy(self) -> bool:
        return self.dest.states.state != CfdpState.IDLE

    def state_dict(self) -> dict:
        """Counters and the open transaction's progress, for housekeeping and tests."""
        d = self.dest
        tid = d.states.transaction_id
        return {
            "step": d.states.step.name,
            "transaction": None if tid is None else self._key_of(tid),
            "progress": d.progress,
            "file_size": d.file_size,
            "lost": list(d._params.acked_params.lost_seg_tracker.lost_segments),
            "history": list(self.history.items()),
            "faults": list(self.faults.faults),
            **self.counters.__dict__,
        }

    # -- internals -------------------------------------------------------------------------------
    @staticmethod
    def _key_of(tid) -> tuple[int, int]:
        return (tid.source_id.value, tid.seq_num.value)

    def _refuse(self, why: str) -> list[bytes]:
        self.counters.refused += 1
        self.counters.last_refusal = why
        return []

    def _drain(self) -> list[bytes]:
        out = []
        while (holder := self.dest.get_next_packet()) is not None:
            out.append(bytes(holder.pack()))
        return out

    def _run(self, pdu) -> list[bytes]:
        self.dest.state_machine(pdu)
        return self._drain()

    def _handle(self, pdu) -> list[bytes]:
        if pdu.pdu_header.direction != Direction.TOWARDS_RECEIVER:
            return self._refuse("direction")
        if (
            pdu.dest_entity_id.value != self.entity_id.value
            or pdu.source_entity_id.value != self.ground_id.value
        ):
            return self._refuse("entity_id")
        key = (pdu.source_entity_id.value, pdu.transaction_seq_num.value)
        directive = pdu.directive_type if pdu.pdu_type == PduType.FILE_DIRECTIVE else None
        d = self.dest
        out: list[bytes] = []
        current = None if not self.busy else self._key_of(d.states.transaction_id)
        if key != current:
            if key in self.history:  # a late repeat of a finished transaction
                if directive == DirectiveType.EOF_PDU:
                    return [self._terminated_ack(pdu)]
                return self._refuse("finished_transaction")
            if directive not in (None, DirectiveType.METADATA_PDU, DirectiveType.EOF_PDU):
                return self._refuse("no_transaction")
            if directive != DirectiveType.METADATA_PDU:
                return self._ask_metadata(pdu)
            if current is not None:  # the ground has moved on: see the module text
                if d.states.step == TransactionStep.WAITING_FOR_FINISHED_ACK:
                    self._close(current)
                else:
                    self._abandon(current)
            self._eof_seen = False
        elif self._inactive():
            d._declare_fault(ConditionCode.INACTIVITY_DETECTED)
            out = self._run(None)
            self._last_pdu_s = self.clock.now_s
            return out
        self._last_pdu_s = self.clock.now_s
        if directive == DirectiveType.PROMPT_PDU:
            return self._prompt()
        if (
            directive == DirectiveType.EOF_PDU
            and key == current
            and (self._eof_seen or d.states.step not in RECEIVING_STEPS)
        ):
            return [d.eof_ack(pdu.condition_code, TransactionStatus.ACTIVE)]  # a repeat: 4.7.2
        out = self._run(pdu)
        if directive == DirectiveType.EOF_PDU:
            self._eof_seen = True
        if not self.busy and key not in self.history:  # ended within this PDU (e.g. refused)
            self._remember(key, False)
        return out

    def _ask_metadata(self, pdu) -> list[bytes]:
        """File data or EOF of a transaction whose Metadata PDU was lost: dropped, and a NAK for
        the metadata sent (at most one per NAK interval). The dropped data become gaps once the
        metadata is in, and the EOF comes again (unacknowledged), so the handler's own
        waiting-for-metadata path (which loses its place when the metadata arrives after the EOF,
        cfdp-py 0.7.0) is never used."""
        self.counters.refused += 1
        self.counters.last_refusal = "no_metadata"
        if self.clock.now_s - self._asked_metadata_s < self.nak_interval_s:
            return []
        self._asked_metadata_s = self.clock.now_s
        conf = pdu.pdu_header.pdu_conf
        conf.direction = Direction.TOWARDS_SENDER
        end = (
            pdu.file_size
            if pdu.pdu_type == PduType.FILE_DIRECTIVE
            else pdu.offset + len(pdu.file_data)
        )
        return [
            bytes(
                NakPdu(conf, start_of_scope=0, end_of_scope=end, segment_requests=[(0, 0)]).pack()
            )
        ]

    def _inactive(self) -> bool:
        return self.busy and self.clock.now_s - self._last_pdu_s >= self.inactivity_s

    def _prompt(self) -> list[bytes]:
        """Prompt (NAK): the missing data now, or the Finished PDU again if that is what waits."""
        d = self.dest
        if d.states.step == TransactionStep.WAITING_FOR_FINISHED_ACK:
            return [d.finished_pdu()]
        timer = d._params.acked_params.procedure_timer
        if d._params.acked_params.deferred_lost_segment_detection_active and timer is not None:
            timer.time_out()
            return self._run(None)
        return []

    def _terminated_ack(self, eof) -> bytes:
        conf = eof.pdu_header.pdu_conf
        conf.direction = Direction.TOWARDS_SENDER
        return AckPdu(
            conf, DirectiveType.EOF_PDU, eof.condition_code, TransactionStatus.TERMINATED
        ).pack()

    def _remember(self, key: tuple[int, int], delivered: bool) -> None:
        self.history[key] = delivered
        while len(self.history) > HISTORY:
            self.history.popitem(last=False)

    def _close(self, key: tuple[int, int]) -> None:
        """The Finished PDU's ACK, implied: the transaction is over."""
        self.dest.reset()
        self._drain()

    def _abandon(self, key: tuple[int, int]) -> None:
        name = self.dest._params.fp.file_name
        self.dest.reset()
        self._drain()
        self.store.delete_file(name)
        self.counters.failed += 1
        self._remember(key, False)

    def _on_finished(self, params: TransactionFinishedParams) -> None:
        key = self._key_of(params.transaction_id)
        if key in self.history:  # repeated notice (positive ACK limit): the first one counted
            return
        fp = params.finished_params
        ok = (
            fp.condition_code == ConditionCode.NO_ERROR
            and fp.delivery_code == DeliveryCode.DATA_COMPLETE
        )
        name = self.dest._params.fp.file_name
        slot = self.store.seal(name) if ok and not self.dest._params.fp.metadata_only else None
        if slot is not None:
            self._ready.append((str(name), slot))
            self.counters.files += 1
        else:  # what remains of the file is dropped here (the handler would report it retained)
            self.store.delete_file(name)
            if fp.file_status != FileStatus.DISCARDED_FILESTORE_REJECTION:
                fp.file_status = FileStatus.DISCARDED_DELIBERATELY
            self.counters.failed += 1
        self._remember(key, slot is not None)
