"""Telemetry decoding with the shared dictionary: framing, CRC, PUS headers, HK and events.

Three layers:

- A telemetry file is either the CADU stream the spacecraft radiates (ASM + TM Transfer
  Frame, 131.0-B/132.0-B, what `flightsim run` writes) or, from older run folders, bare
  space packets. `unframe` tells them apart by the ASM at the start (a TM packet starts
  0x08..0x0F, never 0x1A), runs the frame decoder (`ground_tools.tm_frames`) and returns
  the packets of every virtual channel merged in the order the frames completing them
  arrived, with the link statistics (bad FECF, frame gaps, packets lost in them);
  `packet_stream` is the helper for code that only wants the packets.
- `frame_stream` cuts a byte stream into CCSDS space packets by their length field and
  checks each packet's CRC-16/CCITT-FALSE (`binascii.crc_hqx`, the C implementation: a
  packet with its CRC appended checks to zero). It never gives up on a damaged file:
  a packet whose CRC fails is kept as a CRC-failed packet when no valid packet starts
  inside its declared length (so the length is believable), and anything else (a corrupted
  header, a length pointing past a packet that checks, a truncated tail) becomes a
  *rejected chunk* and the framer resynchronises on the next offset where a plausible
  header starts a packet whose CRC checks (the APID, when known, narrows the search).
- `decode_file` and the archive (`ground_tools.archive`) decode the PUS-C TM packets
  into housekeeping rows and events with the structures of `flight_sw.tmtc.dictionary`.

PUS-C TM layout (what `spacepackets.PusTm.pack` writes; checked against it and ccsdspy
in the tests): 6-byte primary header, 7-byte secondary header (version/time reference,
service, subtype, message counter u16, destination id u16), a 7-byte CDS short time
(P-field, u16 days since 1958-01-01, u32 ms of day), the source data, a 2-byte CRC.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.downlink import DEFAULT_TM_FRAME_BYTES
from flight_sw.tmtc.tm_frames import ASM, FECF_BYTES, MAX_FRAME_BYTES, PRIMARY_HEADER_BYTES, fecf
from ground_tools.tm_frames import TmLinkStats, decode_tm_stream

CCSDS_EPOCH = datetime(1958, 1, 1, tzinfo=UTC)
PRIMARY_HEADER = 6
PUS_TM_SEC_HEADER = 7
TIME_OFFSET = PRIMARY_HEADER + PUS_TM_SEC_HEADER
DATA_OFFSET = TIME_OFFSET + d.CDS_SHORT_LEN
CRC_LEN = 2
MIN_PACKET = DATA_OFFSET + CRC_LEN
_HDR = struct.Struct(">HHH")
_SEC = struct.Struct(">BBBHH")
_CDS = struct.Struct(">xHI")


class DecodeError(ValueError):
    """The file cannot be decoded at all (another dictionary version, not telemetry)."""


@dataclass(slots=True)
class Frame:
    """One framed unit of the stream: a packet (CRC checked) or a rejected chunk."""

    offset: int
    raw: bytes
    crc_ok: bool
    reason: str | None = None  # None: a good packet; else why it is bad
    is_packet: bool = True  # False: unframed bytes (rejected chunk), no header fields


def _plausible_header(raw: bytes, pos: int, apid: int | None) -> int:
    """Declared packet length at pos when the header looks like one of our TM packets, else 0."""
    h0, _h1, h2 = _HDR.unpack_from(raw, pos)
    # version 0, type TM (0), secondary header present (1)
    if h0 >> 11 != 0b00001:
        return 0
    if apid is not None and h0 & 0x7FF != apid:
        return 0
    length = h2 + 1 + PRIMARY_HEADER
    return length if length >= MIN_PACKET else 0


def _crc_ok(raw: bytes, pos: int, length: int) -> bool:
    return binascii.crc_hqx(raw[pos : pos + length], 0xFFFF) == 0


def _valid_packet_at(raw: bytes, pos: int, apid: int | None) -> bool:
    if pos + PRIMARY_HEADER > len(raw):
        return False
    length = _plausible_header(raw, pos, apid)
    return bool(length) and pos + length <= len(raw) and _crc_ok(raw, pos, length)


def _resync(raw: bytes, start: int, apid: int | None, end: int | None = None) -> int:
    """First offset in [start, end) where a CRC-valid packet begins (`end`, default len(raw), when none)."""
    n = len(raw)
    end = n if end is None else min(end, n)
    if apid is not None:
        sync = bytes(((0x08 | (apid >> 8)) & 0xFF, apid & 0xFF))
        pos = raw.find(sync, start, end + 1)
        while pos != -1 and pos < end:
            if _valid_packet_at(raw, pos, apid):
                return pos
            pos = raw.find(sync, pos + 1, end + 1)
        return end
    for pos in range(start, min(end, n - MIN_PACKET + 1)):
        if raw[pos] & 0xF8 == 0x08 and _valid_packet_at(raw, pos, None):
            return pos
    return end


# -- the link layer: CADU stream or bare packets ------------------------------------------
@dataclass
class PacketStream:
    packets: bytes  # concatenated space packets, in transmission order
    link: TmLinkStats | None = None  # None: the input was already a bare packet stream
    frame_bytes: int | None = None
    #: Packets missing by each APID's sequence count (the flight software stamps the counts as
    #: packets enter the frames, so a gap is a loss); those after the last packet received
    #: cannot be counted.
    packets_missing: int = 0


def sequence_gaps(packets: list[bytes]) -> int:
    """Packets missing between those received, by each APID's 14-bit sequence count."""
    last: dict[int, int] = {}
    missing = 0
    for p in packets:
        apid, seq = ((p[0] & 0x07) << 8) | p[1], ((p[2] & 0x3F) << 8) | p[3]
        if apid in last:
            missing += (seq - last[apid] - 1) % (1 << 14)
        last[apid] = seq
    return missing


def is_cadu_stream(raw: bytes) -> bool:
    """True when `raw` starts with the Attached Sync Marker (a TM packet never does)."""
    return raw[: len(ASM)] == ASM


def detect_frame_bytes(raw: bytes) -> int | None:
    """Frame length of a CADU stream that starts with an intact frame: the distance to a later
    ASM at which the first frame's FECF checks (or the whole rest, for a single frame)."""
    start = len(ASM)
    least = PRIMARY_HEADER_BYTES + FECF_BYTES + 1
    pos = raw.find(ASM, start + least)
    while 0 <= pos <= start + MAX_FRAME_BYTES:
        if fecf(raw[start:pos]) == 0:
            return pos - start
        pos = raw.find(ASM, pos + 1)
    rest = len(raw) - start
    if least <= rest <= MAX_FRAME_BYTES and fecf(raw[start:]) == 0:
        return rest
    return None


def unframe(raw: bytes, frame_bytes: int | None = None, spacecraft_id: int | None = None) -> PacketStream:
    """Packets of a telemetry file, frames decoded first when it is a CADU stream.

    `frame_bytes` and `spacecraft_id` come from the mission config (`downlink.tm_frame_bytes`,
    `telemetry.spacecraft_id`); without them the length is measured from the stream (the
    config default when the first frame is damaged) and any spacecraft is accepted.
    """
    if not is_cadu_stream(raw):
        return PacketStream(raw)
    if frame_bytes is None:
        frame_bytes = detect_frame_bytes(raw) or DEFAULT_TM_FRAME_BYTES
    res = decode_tm_stream(raw, frame_bytes, spacecraft_id)
    packets = [p for _, p in res.in_order]
    return PacketStream(b"".join(packets), res.stats, frame_bytes, sequence_gaps(packets))


def packet_stream(raw: bytes, cfg=None) -> bytes:
    """The space packets of a telemetry file (CADU stream or bare packets), in the order sent.

    `cfg`: the run's MissionConfig, for the frame length and spacecraft id (None: measured
    from the stream, any spacecraft).
    """
    if cfg is None:
        return unframe(raw).packets
    return unframe(raw, cfg.downlink.tm_frame_bytes, cfg.telemetry.spacecraft_id).packets


def link_problems(stream: PacketStream) -> dict[str, int]:
    """What the link lost or refused, as bad reasons (only the non-zero ones)."""
    stats = stream.link
    if stats is None:
        return {}
    out = {
        "link: packets missing (sequence count gaps)": stream.packets_missing,
        "link: frame FECF failed": stats.bad_crc,
        "link: frames lost (master channel count gaps)": stats.frames_lost,
        "link: partial packets dropped at frame gaps": stats.packets_dropped,
        "link: inconsistent frames": stats.inconsistent,
        "link: frames of another spacecraft": stats.foreign_frames,
        "link: duplicate frames": stats.duplicate_frames,
        "link: octets outside frames": stats.bytes_skipped,
    }
    return {k: v for k, v in out.items() if v}


def link_summary(stream: PacketStream) -> dict[str, int] | None:
    """The link statistics as a flat dict (for reports and the ingest record)."""
    stats = stream.link
    if stats is None:
        return None
    return {"frames": stats.frames, "idle_frames": stats.idle_frames, "bad_fecf": stats.bad_crc,
            "gaps": stats.gaps, "frames_lost": stats.frames_lost, "packets": stats.packets,
            "packets_missing": stream.packets_missing, "partial_packets_dropped": stats.packets_dropped,
            "inconsistent": stats.inconsistent,
            "foreign_frames": stats.foreign_frames, "duplicate_frames": stats.duplicate_frames,
            "octets_skipped": stats.bytes_skipped}


# -- the packet layer ------------------------------------------------------------------------
def frame_stream(raw: bytes, apid: int | None = None) -> Iterator[Frame]:
    """Cut `raw` into packets; damaged parts come out as CRC-failed packets or rejected chunks.

    `apid`: the mission's telemetry APID (from the config) when known; packets of other
    APIDs are then treated as noise during resynchronisation only. A CADU stream is
    unframed first (`unframe`, length measured, link statistics dropped: use `unframe` and
    `packet_frames` to keep them); offsets are then offsets into the packet stream.
    """
    if is_cadu_stream(raw):
        raw = unframe(raw).packets
    return packet_frames(raw, apid)


def packet_frames(raw: bytes, apid: int | None = None) -> Iterator[Frame]:
    """`frame_stream` of a bare packet stream (no ASM detection)."""
    n = len(raw)
    pos = 0
    while pos < n:
        if n - pos < PRIMARY_HEADER:
            yield Frame(pos, raw[pos:], False, f"truncated: {n - pos} trailing bytes, shorter than a header", False)
            return
        length = _plausible_header(raw, pos, None)
        if length and pos + length <= n:
            if _crc_ok(raw, pos, length):
                yield Frame(pos, raw[pos : pos + length], True)
                pos += length
                continue
            # Damaged packet or damaged length? If no valid packet starts inside the declared
            # extent, the length is believable: keep the bytes as a CRC-failed packet.
            if _resync(raw, pos + 1, apid, pos + length) == pos + length:
                yield Frame(pos, raw[pos : pos + length], False, "CRC mismatch")
                pos += length
                continue
        nxt = _resync(raw, pos + 1, apid)
        if nxt == n and length and pos + length > n and nxt - pos < length:
            reason = f"truncated: last packet declares {length} bytes, {n - pos} present"
        else:
            reason = "corrupted header: bytes skipped to the next valid packet"
        yield Frame(pos, raw[pos:nxt], False, reason, False)
        pos = nxt


def split_packets(raw: bytes) -> tuple[list[bytes], int]:
    """Plain split by the CCSDS length fields, no checks: (packets, trailing bytes).

    The "raw read" baseline of the ingest benchmark. A CADU stream is unframed first.
    """
    if is_cadu_stream(raw):
        raw = unframe(raw).packets
    out = []
    pos = 0
    n = len(raw)
    unpack = _HDR.unpack_from
    while pos + PRIMARY_HEADER <= n:
        length = unpack(raw, pos)[2] + 1 + PRIMARY_HEADER
        if pos + length > n:
            break
        out.append(raw[pos : pos + length])
        pos += length
    return out, n - pos


@dataclass(slots=True)
class PacketHeader:
    apid: int
    seq: int
    service: int
    subtype: int
    cds_days: int
    cds_ms: int

    def mission_s(self, start_utc: datetime) -> float:
        return self.cds_days * 86400.0 + self.cds_ms / 1000.0 - (start_utc - CCSDS_EPOCH).total_seconds()


def parse_header(pkt: bytes) -> PacketHeader | None:
    """Primary + PUS-C secondary header fields (None when the packet is too short)."""
    if len(pkt) < MIN_PACKET:
        return None
    h0, h1, _ = _HDR.unpack_from(pkt, 0)
    _ver, service, subtype, _counter, _dest = _SEC.unpack_from(pkt, PRIMARY_HEADER)
    days, ms = _CDS.unpack_from(pkt, TIME_OFFSET)
    return PacketHeader(h0 & 0x7FF, h1 & 0x3FFF, service, subtype, days, ms)


def store_report(subtype: int, data: bytes) -> dict | None:
    """A service 15 report (13 content summary, 19 status) of one packet store as {field: value},
    None when it is neither or its length is not N = 1 and one record."""
    layout = {13: (d.STORE_CONTENT_SUMMARY, d.STORE_CONTENT_SUMMARY_STRUCT),
              19: (d.STORE_STATUS, d.STORE_STATUS_STRUCT)}.get(subtype)
    if layout is None or len(data) != 1 + layout[1].size or data[0] != 1:
        return None
    return {p.name: v for p, v in zip(layout[0], layout[1].unpack_from(data, 1), strict=True)}


def epoch_offset_s(start_utc: datetime) -> float:
    """Seconds from the CCSDS epoch to the mission start (subtract from CDS seconds)."""
    return (start_utc - CCSDS_EPOCH).total_seconds()


# -- event names from the dictionary -------------------------------------------------------
def event_names() -> dict[int, str]:
    """Event id -> name, from every EVENT_<NAME> integer constant of the dictionary."""
    out = {}
    for name in dir(d):
        value = getattr(d, name)
        if name.startswith("EVENT_") and isinstance(value, int) and not isinstance(value, bool):
            out[value] = name[len("EVENT_") :].lower()
    return out


SEVERITIES = {v: k for k, v in d.EVENT_SEVERITY_SUBTYPE.items()}


def check_dictionary_version(version: int, where: str) -> None:
    if version != d.DICTIONARY_VERSION:
        raise DecodeError(
            f"{where}: telemetry written with dictionary version {version}; this ground software decodes "
            f"version {d.DICTIONARY_VERSION} only. Decode it with the groundtools release that matches the "
            f"flight software that produced it."
        )


# -- the thin whole-file decoder (numpy columns), kept for scripts and tests ---------------
@dataclass
class Telemetry:
    hk_core: dict[str, np.ndarray] = field(default_factory=dict)
    hk_tasks: dict[str, np.ndarray] = field(default_factory=dict)  # (n_reports, n_tasks) each
    orbits: dict[str, np.ndarray] = field(default_factory=dict)
    orbit_task_energy_j: np.ndarray | None = None  # (n_orbits, n_tasks)
    hk_device: dict[str, np.ndarray] = field(default_factory=dict)  # SID 4, when the dictionary has it
    hk_sa: dict[str, np.ndarray] = field(default_factory=dict)  # SID 6: (n_reports, n_associations) each
    verifications: int = 0  # PUS service 1 / 17 reports and 13,16 aborts (counted, decoded by the archive)
    store_reports: int = 0  # PUS service 15 reports (`store_report` decodes one)
    events: list[dict] = field(default_factory=list)
    packets: int = 0
    bad_packets: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)  # packet reasons and `link_problems`
    link: TmLinkStats | None = None  # frame statistics (None: a bare packet file)
    packets_missing: int = 0  # by sequence count gaps (CADU files only)


def decode_file(path: Path, start_utc: datetime, n_tasks: int, apid: int | None = None, *,
                frame_bytes: int | None = None, spacecraft_id: int | None = None) -> Telemetry:
    """Decode a telemetry file into numpy columns (no archive). Bad packets are counted
    (`bad_packets`); what the link lost is in `link` and, as reasons, in `bad_reasons`."""
    stream = unframe(Path(path).read_bytes(), frame_bytes, spacecraft_id)
    raw = stream.packets
    tm = Telemetry(link=stream.link, packets_missing=stream.packets_missing)
    tm.bad_reasons.update(link_problems(stream))
    core_rows, task_rows, orbit_rows, orbit_energy, dev_rows, dev_t = [], [], [], [], [], []
    dev_sid, dev_struct = getattr(d, "HK_DEVICE_SID", None), getattr(d, "HK_DEVICE_STRUCT", None)
    tc_services = {x for x in (getattr(d, "PUS_SERVICE_VERIFICATION", None), getattr(d, "PUS_SERVICE_TEST", None),
                               getattr(d, "PUS_SERVICE_LARGE_PACKET", None)) if x is not None}
    core_t, task_t, orbit_t, sa_rows, sa_t = [], [], [], [], []
    sa_size = d.HK_SA_STRUCT.size
    off = epoch_offset_s(start_utc)
    task_size = d.HK_TASK_STRUCT.size

    def bad(reason: str) -> None:
        tm.bad_packets += 1
        tm.bad_reasons[reason] = tm.bad_reasons.get(reason, 0) + 1

    for fr in packet_frames(raw, apid):
        tm.packets += 1
        if fr.reason is not None:
            bad(fr.reason.split(":")[0])
            continue
        h = parse_header(fr.raw)
        t = h.cds_days * 86400.0 + h.cds_ms / 1000.0 - off
        data = fr.raw[DATA_OFFSET:-CRC_LEN]
        if h.service == d.PUS_SERVICE_HK and h.subtype == d.PUS_SUBTYPE_HK_REPORT and len(data) >= 2:
            sid = d.SID_STRUCT.unpack_from(data)[0]
            body = data[2:]
            if sid == d.HK_CORE_SID and len(body) >= 2:
                check_dictionary_version(struct.unpack_from(">H", body)[0], str(path))
                if len(body) != d.HK_CORE_STRUCT.size:
                    bad("wrong length for HK SID 1")
                    continue
                core_rows.append(d.HK_CORE_STRUCT.unpack(body))
                core_t.append(t)
            elif sid == d.HK_TASKS_SID and len(body) == task_size * n_tasks:
                task_rows.append([d.HK_TASK_STRUCT.unpack_from(body, i * task_size) for i in range(n_tasks)])
                task_t.append(t)
            elif sid == d.HK_ORBIT_SID and len(body) == d.HK_ORBIT_STRUCT.size + 4 * n_tasks:
                orbit_rows.append(d.HK_ORBIT_STRUCT.unpack_from(body))
                orbit_energy.append(struct.unpack_from(f">{n_tasks}f", body, d.HK_ORBIT_STRUCT.size))
                orbit_t.append(t)
            elif sid == dev_sid and len(body) == dev_struct.size:
                dev_rows.append(dev_struct.unpack(body))
                dev_t.append(t)
            elif sid == d.HK_SA_SID and len(body) % sa_size == 0:
                sa_rows.append([d.HK_SA_STRUCT.unpack_from(body, i * sa_size) for i in range(len(body) // sa_size)])
                sa_t.append(t)
            elif sid == getattr(d, "HK_SAMPLES_SID", None):
                pass  # labelled samples: archived by `groundtools ingest` (samples table)
            elif sid == getattr(d, "HK_EXEC_SID", None) and len(body) == d.HK_EXEC_STRUCT.size * n_tasks:
                pass  # measured task execution of a flight process: archived by ingest (hk_exec table)
            else:
                bad(f"unknown HK structure {sid} or wrong length")
        elif h.service == d.PUS_SERVICE_EVENT and len(data) >= 2:
            eid = d.EVENT_ID_STRUCT.unpack_from(data)[0]
            tm.events.append({"t_s": t, "id": eid, "severity": h.subtype, "params": data[2:]})
        elif h.service in tc_services:
            tm.verifications += 1  # telecommand verification / test replies: the archive decodes them
        elif h.service == d.PUS_SERVICE_STORAGE and store_report(h.subtype, data) is not None:
            tm.store_reports += 1
        else:
            bad(f"unexpected service {h.service}")
    if core_rows:
        cols = list(zip(*core_rows, strict=True))
        tm.hk_core = {prm.name: np.array(c) for prm, c in zip(d.HK_CORE, cols, strict=True)}
        tm.hk_core["t_s"] = np.array(core_t)
    if task_rows:
        arr = np.array(task_rows, dtype=np.float64)  # (reports, tasks, fields)
        tm.hk_tasks = {prm.name: arr[:, :, i] for i, prm in enumerate(d.HK_TASK_RECORD)}
        tm.hk_tasks["t_s"] = np.array(task_t)
    if sa_rows and len({len(r) for r in sa_rows}) == 1:
        arr = np.array(sa_rows, dtype=np.uint64)  # (reports, associations, fields): ARSNs are 64-bit
        tm.hk_sa = {prm.name: arr[:, :, i] for i, prm in enumerate(d.HK_SA_RECORD)}
        tm.hk_sa["t_s"] = np.array(sa_t)
    if orbit_rows:
        cols = list(zip(*orbit_rows, strict=True))
        tm.orbits = {prm.name: np.array(c) for prm, c in zip(d.HK_ORBIT, cols, strict=True)}
        tm.orbits["t_s"] = np.array(orbit_t)
        tm.orbit_task_energy_j = np.array(orbit_energy)
    if dev_rows:
        cols = list(zip(*dev_rows, strict=True))
        tm.hk_device = {prm.name: np.array(c) for prm, c in zip(d.HK_DEVICE, cols, strict=True)}
        tm.hk_device["t_s"] = np.array(dev_t)
    return tm


def training_updates(tm: Telemetry) -> list[dict]:
    """Training-update events as dicts with the dictionary's field names."""
    out = []
    for ev in tm.events:
        if ev["id"] == d.EVENT_TRAINING_UPDATE and len(ev["params"]) == d.TRAINING_UPDATE_STRUCT.size:
            vals = d.TRAINING_UPDATE_STRUCT.unpack(ev["params"])
            row = {p.name: v for p, v in zip(d.TRAINING_UPDATE, vals, strict=True)}
            row["t_s"] = ev["t_s"]
            row["outcome"] = d.TRAINING_OUTCOMES[row["outcome"]]
            out.append(row)
    return out


def mode_changes(tm: Telemetry) -> list[dict]:
    out = []
    for ev in tm.events:
        if ev["id"] == d.EVENT_MODE_CHANGE and len(ev["params"]) == 3:
            old, new, reason = struct.unpack(">BBB", ev["params"])
            out.append({"t_s": ev["t_s"], "from": old, "to": new, "reason": d.MODE_REASONS[reason]})
    return out


def contact_events(tm: Telemetry) -> list[tuple[float, int]]:
    return [
        (ev["t_s"], ev["params"][0]) for ev in tm.events if ev["id"] == d.EVENT_CONTACT and len(ev["params"]) == 1
    ]
