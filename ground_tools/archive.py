"""The telemetry archive: one SQLite file per run, raw packets kept beside the decoded tables.

As the large ground systems do (COSMOS keeps raw logs beside QuestDB, Yamcs raw
packets beside its parameter archive), every packet that arrived is stored as bytes
with its header fields, CRC verdict and decoding status, and the decoded
housekeeping and events live in tables derived from it. Decoding is driven by the
shared dictionary (`flight_sw.tmtc.dictionary`): the `hk_core` columns are the SID-1
parameters, in dictionary order, so a dictionary change shows up in the schema.

Ingest is idempotent: each packet has a content key (apid, t_s, sha1 of the packet
without its sequence count and CRC), unique in `packets`; rows already present are
skipped (and the inserts are `INSERT OR IGNORE` besides), so ingesting the same file
twice, or a longer file of the same run later, adds only what is new. The sequence count
and CRC are left out because they are stamped when a packet leaves for the link: a
packet of the onboard TM store played back a second time (PUS 15,9) comes down with a
new count but is the same packet, and is counted as a duplicate. A CADU file (ASM + TM frames, what runs
write now) is unframed first (`ground_tools.decode.unframe`); what the link lost (bad
FECF, frame gaps and the packets in them) is counted in the ingest report and its
reasons. Everything is written in one transaction: a file that cannot be decoded (another dictionary version) leaves the
archive untouched.

Schema (see docs/ground_tools.md for every column):

    meta(key, value)                   schema/dictionary version, run identity, config text, tasks
    ingests(file_sha1, ...)            one row per distinct telemetry file ingested, with its counts
    packets(id, apid, seq, service, subtype, struct_id, t_s, length, crc_ok, status, sha1, raw)
    rejects(id, file_offset, length, reason, sha1, raw)   unframed bytes (corrupted headers, truncation);
                                       the offset is into the packet stream (of a CADU file: unframed)
    hk_core(packet_id, t_s, <SID-1 parameters>)           wide: one row per core HK report
    hk_tasks(packet_id, task_index, t_s, runs, skipped, ...)   long: one row per task per report
    orbits(packet_id, t_s, <SID-3 fields>) + orbit_task_energy(packet_id, task_index, energy_j)
    events(packet_id, t_s, event_id, name, severity, detail, params)
    training_updates(packet_id, t_s, outcome, version, ...)     decoded training-update events
    mode_changes(packet_id, t_s, from_mode, to_mode, reason)
    samples(id, t_s, pixels, label, onboard_label, model_version)   downlinked labelled samples
    tasks(task_index, name, kind, criticality)                    the run's task table
    hk_device(packet_id, t_s, <SID-4 parameters>)                 optimizer-device health (dictionary v3+)
    hk_sa(packet_id, spi, t_s, key_slot, state, arsn)             security associations (SID 6, v9+)
    verifications(packet_id, t_s, subtype, stage, success, request_apid, request_seq, failure_code,
                  failure, detail)                                 PUS service 1 reports (telecommands)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import sqlite3
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from flight_sw.config.schema import MODES
from flight_sw.tmtc import dictionary as d
from ground_tools.decode import (
    CRC_LEN,
    DATA_OFFSET,
    SEVERITIES,
    TIME_OFFSET,
    DecodeError,
    Telemetry,
    check_dictionary_version,
    epoch_offset_s,
    event_names,
    link_problems,
    link_summary,
    packet_frames,
    store_report,
    unframe,
)
from ground_tools.runfolder import INGEST_FILES, RunFolder, RunFolderError, open_run

SCHEMA_VERSION = 2  # 2: the content key leaves out the sequence count and CRC
DEFAULT_NAME = "archive.sqlite"
#: PUS service 1 (request verification, dictionary v4+: telecommands) and 17 (test).
VERIFICATION_SERVICE = getattr(d, "PUS_SERVICE_VERIFICATION", None)
TEST_SERVICE = getattr(d, "PUS_SERVICE_TEST", None)
#: TM[13,16] large packet uplink abortion report (dictionary v10+).
LPT_SERVICE = getattr(d, "PUS_SERVICE_LARGE_PACKET", None)
LPT_ABORT = getattr(d, "LPT_UPLINK_ABORT", None)
VERIFICATION_STAGES = {1: "acceptance", 2: "acceptance", 3: "start", 4: "start", 5: "progress", 6: "progress",
                       7: "completion", 8: "completion"}
#: Optimizer-device housekeeping (SID 4, dictionary v3+): absent from older dictionaries.
HK_DEVICE = getattr(d, "HK_DEVICE", ())
HK_DEVICE_SID = getattr(d, "HK_DEVICE_SID", None)
HK_DEVICE_STRUCT = getattr(d, "HK_DEVICE_STRUCT", None)
_HDR = struct.Struct(">HHH")
_SEC = struct.Struct(">BBBHH")
_CDS = struct.Struct(">xHI")
_U16 = struct.Struct(">H")


class ArchiveError(ValueError):
    """The archive is missing, empty, not SQLite, or belongs to another run or dictionary."""


def _sql_type(fmt: str) -> str:
    return "REAL" if fmt in "fd" else "INTEGER"


def _cols(params) -> str:
    return ", ".join(f"{p.name} {_sql_type(p.fmt)}" for p in params)


def schema_statements() -> list[str]:
    task_fields = [p for p in d.HK_TASK_RECORD if p.name != "task_index"]
    tu_fields = ", ".join(
        f"{p.name} {'TEXT' if p.name == 'outcome' else _sql_type(p.fmt)}" for p in d.TRAINING_UPDATE
    )
    return [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS ingests (file_sha1 TEXT PRIMARY KEY, path TEXT, bytes INTEGER, "
        "frames INTEGER, new_packets INTEGER, bad INTEGER, reasons TEXT, ingested_utc TEXT)",
        "CREATE TABLE IF NOT EXISTS packets (id INTEGER PRIMARY KEY, apid INTEGER, seq INTEGER, service INTEGER, "
        "subtype INTEGER, struct_id INTEGER, t_s REAL, length INTEGER, crc_ok INTEGER, status TEXT, "
        "sha1 BLOB NOT NULL, raw BLOB NOT NULL, UNIQUE (apid, t_s, sha1))",
        "CREATE INDEX IF NOT EXISTS packets_time ON packets (t_s)",
        "CREATE INDEX IF NOT EXISTS packets_type ON packets (service, subtype, struct_id, t_s)",
        "CREATE TABLE IF NOT EXISTS rejects (id INTEGER PRIMARY KEY, file_offset INTEGER, length INTEGER, "
        "reason TEXT, sha1 BLOB NOT NULL, raw BLOB NOT NULL, UNIQUE (file_offset, sha1))",
        f"CREATE TABLE IF NOT EXISTS hk_core (packet_id INTEGER PRIMARY KEY REFERENCES packets (id), "
        f"t_s REAL NOT NULL, {_cols(d.HK_CORE)})",
        "CREATE INDEX IF NOT EXISTS hk_core_time ON hk_core (t_s)",
        f"CREATE TABLE IF NOT EXISTS hk_tasks (packet_id INTEGER REFERENCES packets (id), task_index INTEGER, "
        f"t_s REAL NOT NULL, {_cols(task_fields)}, PRIMARY KEY (packet_id, task_index))",
        "CREATE INDEX IF NOT EXISTS hk_tasks_time ON hk_tasks (t_s)",
        "CREATE INDEX IF NOT EXISTS hk_tasks_task ON hk_tasks (task_index, t_s)",
        f"CREATE TABLE IF NOT EXISTS orbits (packet_id INTEGER PRIMARY KEY REFERENCES packets (id), "
        f"t_s REAL NOT NULL, {_cols(d.HK_ORBIT)})",
        "CREATE INDEX IF NOT EXISTS orbits_index ON orbits (orbit_index, t_s)",
        "CREATE TABLE IF NOT EXISTS orbit_task_energy (packet_id INTEGER REFERENCES packets (id), "
        "task_index INTEGER, energy_j REAL, PRIMARY KEY (packet_id, task_index))",
        "CREATE TABLE IF NOT EXISTS events (packet_id INTEGER PRIMARY KEY REFERENCES packets (id), t_s REAL NOT NULL, "
        "event_id INTEGER, name TEXT, severity TEXT, detail TEXT, params BLOB)",
        "CREATE INDEX IF NOT EXISTS events_time ON events (t_s)",
        "CREATE INDEX IF NOT EXISTS events_type ON events (event_id, t_s)",
        f"CREATE TABLE IF NOT EXISTS training_updates (packet_id INTEGER PRIMARY KEY REFERENCES packets (id), "
        f"t_s REAL NOT NULL, {tu_fields})",
        "CREATE INDEX IF NOT EXISTS training_updates_time ON training_updates (t_s)",
        "CREATE TABLE IF NOT EXISTS mode_changes (packet_id INTEGER PRIMARY KEY REFERENCES packets (id), "
        "t_s REAL NOT NULL, from_mode TEXT, to_mode TEXT, reason TEXT)",
        "CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, t_s REAL NOT NULL, pixels BLOB NOT NULL, "
        "label INTEGER NOT NULL, onboard_label INTEGER, model_version INTEGER)",
        "CREATE INDEX IF NOT EXISTS samples_time ON samples (t_s)",
        "CREATE TABLE IF NOT EXISTS tasks (task_index INTEGER PRIMARY KEY, name TEXT, kind TEXT, criticality TEXT)",
        "CREATE TABLE IF NOT EXISTS verifications (packet_id INTEGER PRIMARY KEY REFERENCES packets (id), "
        "t_s REAL NOT NULL, subtype INTEGER, stage TEXT, success INTEGER, request_apid INTEGER, request_seq INTEGER, "
        "failure_code INTEGER, failure TEXT, detail TEXT)",
        "CREATE INDEX IF NOT EXISTS verifications_request ON verifications (request_apid, request_seq, t_s)",
        f"CREATE TABLE IF NOT EXISTS hk_sa (packet_id INTEGER REFERENCES packets (id), spi INTEGER, "
        f"t_s REAL NOT NULL, {_cols(d.HK_SA_RECORD[1:])}, PRIMARY KEY (packet_id, spi))",
        "CREATE INDEX IF NOT EXISTS hk_sa_time ON hk_sa (spi, t_s)",
        f"CREATE TABLE IF NOT EXISTS hk_exec (packet_id INTEGER REFERENCES packets (id), task_index INTEGER, "
        f"t_s REAL NOT NULL, {_cols(d.HK_EXEC_RECORD[1:])}, PRIMARY KEY (packet_id, task_index))",
        "CREATE INDEX IF NOT EXISTS hk_exec_task ON hk_exec (task_index, t_s)",
        *(
            [f"CREATE TABLE IF NOT EXISTS hk_device (packet_id INTEGER PRIMARY KEY REFERENCES packets (id), "
             f"t_s REAL NOT NULL, {_cols(HK_DEVICE)})",
             "CREATE INDEX IF NOT EXISTS hk_device_time ON hk_device (t_s)"]
            if HK_DEVICE else []
        ),
    ]


def default_db(run_dir: Path | str) -> Path:
    return Path(run_dir) / DEFAULT_NAME


# -- ingest ---------------------------------------------------------------------------------
@dataclass
class IngestReport:
    db: Path
    file_sha1: str
    frames: int = 0  # packets and rejected chunks found in the file
    new_packets: int = 0
    duplicates: int = 0
    bad: int = 0  # bad packets and rejected chunks
    reasons: dict[str, int] = field(default_factory=dict)  # theirs, plus what the link lost ("link: ...")
    already_ingested: bool = False
    new_rows: dict[str, int] = field(default_factory=dict)
    link: dict[str, int] | None = None  # TM frame statistics (None: a bare packet file)

    def lines(self) -> list[str]:
        out = [f"archive: {self.db}"]
        if self.link is not None:
            k = self.link
            out.append(f"{k['frames']} TM frames ({k['idle_frames']} idle): {k['bad_fecf']} failed the FECF, "
                       f"{k['gaps']} gaps ({k['frames_lost']} frames lost), {k['packets_missing']} packets missing "
                       f"by sequence count")
        out.append(
            f"{self.frames} packets in the file: {self.new_packets} new, {self.duplicates} already archived, "
            f"{self.bad} bad")
        if self.new_packets:
            out.append("new rows: " + ", ".join(f"{t} {n}" for t, n in self.new_rows.items() if n))
        for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1]):
            out.append(f"  bad: {n} x {reason}")
        return out


class _Decoder:
    """Turns frames into table rows (no database access): the heart of ingest."""

    def __init__(self, cfg, where: str):
        """`cfg`: the run's MissionConfig (epoch, APID, tasks, frame length); `where`: what the
        packets come from, for error messages (a file, or a radio link)."""
        self.where = where
        self.offset_s = epoch_offset_s(cfg.mission.start_utc)
        self.apid = cfg.telemetry.apid
        self.task_names = [t.name for t in cfg.tasks]
        self.n_tasks = len(cfg.tasks)
        self.names = event_names()
        self.rows: dict[str, list[tuple]] = {
            k: [] for k in ("packets", "rejects", "hk_core", "hk_tasks", "orbits", "orbit_task_energy", "events",
                            "training_updates", "mode_changes", "hk_device", "verifications", "samples", "hk_sa",
                            "hk_exec")
        }
        self.frame_bytes = cfg.downlink.tm_frame_bytes
        self.spacecraft_id = cfg.telemetry.spacecraft_id
        self.reasons: Counter[str] = Counter()
        self.stream = None  # the unframed file (link statistics of a CADU file)
        self.frames = 0
        self.duplicates = 0

    def _task(self, i: int) -> str:
        return self.task_names[i] if 0 <= i < self.n_tasks else f"#{i}"

    def run(self, raw: bytes, existing: set, next_id: int) -> int:
        """Decode a whole telemetry file (CADU stream or bare packets); returns the next id."""
        self.stream = stream = unframe(raw, self.frame_bytes, self.spacecraft_id)
        return self.decode(packet_frames(stream.packets, self.apid), existing, next_id)

    def decode(self, frames, existing: set, next_id: int) -> int:
        """Rows of packets (`packet_frames` units) whose content key is not in `existing`
        (which gains the new keys); the new packets get ids from `next_id`. Returns the
        next free id. The live station feeds the packets of each received batch here."""
        rows = self.rows
        packets, hk_core, hk_tasks = rows["packets"], rows["hk_core"], rows["hk_tasks"]
        sha1 = hashlib.sha1
        off = self.offset_s
        task_size = d.HK_TASK_STRUCT.size
        core_size = d.HK_CORE_STRUCT.size
        core_unpack = d.HK_CORE_STRUCT.unpack
        task_unpack = d.HK_TASK_STRUCT.unpack_from
        for fr in frames:
            self.frames += 1
            pkt = fr.raw
            if not fr.is_packet:
                self.reasons[fr.reason.split(":")[0]] += 1
                rows["rejects"].append((fr.offset, len(pkt), fr.reason, sha1(pkt).digest(), pkt))
                continue
            h0, h1, _ = _HDR.unpack_from(pkt)
            _v, service, subtype, _c, _dst = _SEC.unpack_from(pkt, 6)
            days, ms = _CDS.unpack_from(pkt, TIME_OFFSET)
            t = days * 86400.0 + ms / 1000.0 - off
            apid, seq = h0 & 0x7FF, h1 & 0x3FFF
            digest = sha1(pkt[:2] + pkt[4:-CRC_LEN]).digest()  # the count and CRC are the link's
            key = (apid, t, digest)
            if key in existing:
                self.duplicates += 1
                continue
            existing.add(key)
            pid = next_id
            next_id += 1
            status = "ok"
            struct_id = None
            data = pkt[DATA_OFFSET:-CRC_LEN]
            if not fr.crc_ok:
                status = "CRC mismatch"
            elif service == d.PUS_SERVICE_HK and subtype == d.PUS_SUBTYPE_HK_REPORT and len(data) >= 2:
                struct_id = sid = _U16.unpack_from(data)[0]
                body = data[2:]
                if sid == d.HK_CORE_SID and len(body) >= 2:
                    check_dictionary_version(_U16.unpack_from(body)[0], self.where)
                    if len(body) == core_size:
                        hk_core.append((pid, t, *core_unpack(body)))
                    else:
                        status = "wrong length for HK SID 1"
                elif sid == d.HK_TASKS_SID and len(body) == task_size * self.n_tasks:
                    for i in range(self.n_tasks):
                        rec = task_unpack(body, i * task_size)
                        hk_tasks.append((pid, rec[0], t, *rec[1:]))
                elif sid == d.HK_ORBIT_SID and len(body) == d.HK_ORBIT_STRUCT.size + 4 * self.n_tasks:
                    rows["orbits"].append((pid, t, *d.HK_ORBIT_STRUCT.unpack_from(body)))
                    energy = struct.unpack_from(f">{self.n_tasks}f", body, d.HK_ORBIT_STRUCT.size)
                    rows["orbit_task_energy"].extend((pid, i, e) for i, e in enumerate(energy))
                elif sid == HK_DEVICE_SID and len(body) == HK_DEVICE_STRUCT.size:
                    rows["hk_device"].append((pid, t, *HK_DEVICE_STRUCT.unpack(body)))
                elif sid == d.HK_SA_SID and len(body) % d.HK_SA_STRUCT.size == 0:
                    size = d.HK_SA_STRUCT.size
                    for i in range(len(body) // size):
                        spi, *rec = d.HK_SA_STRUCT.unpack_from(body, i * size)
                        rows["hk_sa"].append((pid, spi, t, *rec))
                elif sid == d.HK_EXEC_SID and len(body) == d.HK_EXEC_STRUCT.size * self.n_tasks:
                    size = d.HK_EXEC_STRUCT.size
                    for i in range(self.n_tasks):
                        idx, *rec = d.HK_EXEC_STRUCT.unpack_from(body, i * size)
                        rows["hk_exec"].append((pid, idx, t, *rec))
                elif sid == d.HK_SAMPLES_SID:
                    decoded = decode_samples(body)
                    if decoded is None:
                        status = "malformed sample report (HK SID 5)"
                    else:
                        version, recs = decoded
                        rows["samples"].extend(
                            (t, np.asarray(px, dtype="<f4").tobytes(), lab, pred, version) for lab, pred, px in recs
                        )
                elif sid in (d.HK_CORE_SID, d.HK_TASKS_SID, d.HK_ORBIT_SID, HK_DEVICE_SID, d.HK_SA_SID, d.HK_EXEC_SID):
                    status = f"wrong length for HK SID {sid}"
                else:
                    status = f"unknown HK structure {sid}"
            elif service == d.PUS_SERVICE_EVENT and len(data) >= 2:
                struct_id = eid = _U16.unpack_from(data)[0]
                status = self._event(pid, t, eid, subtype, data[2:])
            elif service == VERIFICATION_SERVICE and subtype in VERIFICATION_STAGES and len(data) >= 4:
                rows["verifications"].append(verification_row(pid, t, subtype, data))
            elif service == TEST_SERVICE:
                pass  # connection test reply: kept in `packets`
            elif service == d.PUS_SERVICE_STORAGE and store_report(subtype, data) is not None:
                pass  # TM store content summary / status (15,13 / 15,19): kept in `packets`
            elif (service, subtype) == (LPT_SERVICE, LPT_ABORT) and len(data) == d.LPT_ABORT_STRUCT.size:
                struct_id = d.LPT_ABORT_STRUCT.unpack(data)[0]  # 13,16: kept in `packets`, struct_id = transaction id
            else:
                status = f"unexpected service {service}/{subtype}"
            if status != "ok":
                self.reasons[status] += 1
            packets.append(
                (pid, apid, seq, service, subtype, struct_id, t, len(pkt), int(fr.crc_ok), status, digest, pkt)
            )
        return next_id

    def _event(self, pid: int, t: float, eid: int, subtype: int, params: bytes) -> str:
        name = self.names.get(eid, f"unknown_{eid}")
        severity = SEVERITIES.get(subtype, str(subtype))
        detail, status = params.hex(), "ok"
        try:
            detail = self._detail(pid, t, eid, params)
        except (struct.error, IndexError, ValueError):
            status = f"malformed parameters of event {name}"
        self.rows["events"].append((pid, t, eid, name, severity, detail, params))
        return status

    def _detail(self, pid: int, t: float, eid: int, p: bytes) -> str:
        if eid == d.EVENT_MODE_CHANGE:
            old, new, reason = struct.unpack(">BBB", p)
            row = (pid, t, MODES[old], MODES[new], d.MODE_REASONS[reason])
            self.rows["mode_changes"].append(row)
            return f"{row[2]} -> {row[3]} ({row[4]})"
        if eid == d.EVENT_TRAINING_UPDATE:
            vals = list(d.TRAINING_UPDATE_STRUCT.unpack(p))
            names = [f.name for f in d.TRAINING_UPDATE]
            vals[names.index("outcome")] = d.TRAINING_OUTCOMES[vals[names.index("outcome")]]
            self.rows["training_updates"].append((pid, t, *vals))
            r = dict(zip(names, vals, strict=True))
            return (
                f"{r['outcome']} v{r['version']}: candidate {r['candidate_accuracy']:.3f} vs active "
                f"{r['active_accuracy']:.3f}, {r['labels_used']} labels, "
                f"{'analog' if r['solve_path'] else 'digital'} solve {r['solve_energy_j']:.3g} J"
                + (f", system kappa {r['system_kappa']:.3g} ({r['precond_refreshes']} basis refreshes)"
                   if "system_kappa" in r else "")
                + (f"; refused: {d.TRAINING_REFUSALS[r['refusal']]} (gate z {r['gate_z']:.2f})"
                   if r["outcome"] == "refused" and "refusal" in r else "")
            )
        if eid == getattr(d, "EVENT_CALIBRATION_UPDATE", None):
            r = dict(zip([f.name for f in d.CALIBRATION_UPDATE], d.CALIBRATION_UPDATE_STRUCT.unpack(p), strict=True))
            text = (f"calibration table v{r['version']} {d.CALIBRATION_OUTCOMES[r['outcome']]} "
                    f"({d.CALIBRATION_REASONS[r['reason']]}): largest band gain change "
                    f"{r['max_band_gain_change'] * 100:+.2f} %, {r['changed_share'] * 100:.1f} % of column-bands moved, "
                    f"{r['hot_column_bands']} hot column-bands")
            if r["outcome"] == 1:
                text += f"; refused: {d.CALIBRATION_REFUSALS[r['refusal']]}"
            return text
        if eid == getattr(d, "EVENT_LAYER_UPDATE", None):
            r = dict(zip([f.name for f in d.LAYER_UPDATE], d.LAYER_UPDATE_STRUCT.unpack(p), strict=True))
            if r["outcome"] >= 3:  # an uploaded head's trial switched the layer: no candidate to describe
                return f"last layer v{r['version']} active: {d.LAYER_OUTCOMES[r['outcome']].replace('_', ' ')}"
            units = [j for j in range(32) if r["units"] >> j & 1]
            text = (f"last layer v{r['version']} {d.LAYER_OUTCOMES[r['outcome']]}: units {units}, candidate "
                    f"{r['candidate_accuracy']:.3f} vs active {r['active_accuracy']:.3f} (gate z {r['gate_z']:.2f}), "
                    f"{'analog' if r['solve_path'] else 'digital'} solve {r['solve_energy_j']:.3g} J")
            if r["outcome"] == 1:
                text += f"; refused: {d.LAYER_REFUSALS[r['refusal']]}"
            return text
        if eid == d.EVENT_CONTACT:
            (aos,) = struct.unpack(">B", p)
            return "AOS (carrier lock)" if aos else "LOS"
        if eid == d.EVENT_TASK_OVERRUN:
            idx, cost = struct.unpack(">Bf", p)
            return f"task {self._task(idx)} ran {cost:.3g} s (over its compute budget)"
        if eid == d.EVENT_TASK_DISABLED:
            idx, reason = struct.unpack(">BB", p)
            return f"task {self._task(idx)} disabled ({d.TASK_DISABLE_REASONS[reason]})"
        if eid == d.EVENT_DEADLINE_MISS:
            idx, load = struct.unpack(">Bf", p)
            return f"task {self._task(idx)} ended after its frame (frame load {load:.3g} s)"
        if eid == getattr(d, "EVENT_TC_REJECTED", None):
            reason, spi, seq, onboard = d.TC_REJECTED_STRUCT.unpack(p)
            return (f"telecommand frame rejected: {d.TC_REJECT_REASONS[reason]} (SA {spi}, ARSN {seq}, "
                    f"onboard ARSN {onboard})")
        if eid == getattr(d, "EVENT_SA_STATUS", None):
            spi, key, state, arsn = d.SA_STATUS_STRUCT.unpack(p)
            return f"security association {spi}: {d.SA_STATES[state]}, key slot {key}, ARSN {arsn}"
        if eid == getattr(d, "EVENT_TC_STATE_LOST", None):
            (nonce,) = d.TC_STATE_LOST_STRUCT.unpack(p)
            return f"telecommand record lost (both NV copies damaged): recover with nonce {nonce:#018x}"
        if eid == getattr(d, "EVENT_BOOT", None):
            count, unstable, latch = d.BOOT_STRUCT.unpack(p)
            return (f"boot {count} ({unstable} consecutive unstable)"
                    + (": safe latch set, held in SAFE until a ground mode command" if latch else ""))
        if eid == getattr(d, "EVENT_MODEL_UPLOAD", None):
            stage, version, counter = d.MODEL_UPLOAD_STRUCT.unpack(p)
            return f"model upload v{version}: {d.MODEL_UPLOAD_STAGES[stage]} (security counter {counter})"
        if eid == getattr(d, "EVENT_PARAMS_ACTIVATED", None):
            (version,) = struct.unpack(">I", p)
            return f"parameter table v{version} activated"
        if eid == getattr(d, "EVENT_STATISTICS_RESET", None):
            reason, count = d.STATISTICS_RESET_STRUCT.unpack(p)
            return (f"head statistics re-seeded from the ground's ({d.STATISTICS_RESET_REASONS[reason]}; "
                    f"{count} since start)")
        if eid == getattr(d, "EVENT_DRIFT_DETECTED", None):
            source, samples = struct.unpack(">BI", p)
            sources = getattr(d, "DRIFT_SOURCES", ())
            src = sources[source] if source < len(sources) else f"source {source}"
            return f"{src} drift detector fired after {samples} samples"
        return p.hex()


def verification_row(pid: int, t: float, subtype: int, data: bytes) -> tuple:
    """PUS service 1 report: request id (packet id u16 + sequence control u16 of the TC), then
    for a failure a u16 failure code (index in TC_FAILURES) and an ASCII text."""
    pkt_id, seq_ctrl = struct.unpack_from(">HH", data)
    success = subtype % 2 == 1
    code, failure, detail = None, None, ""
    if not success and len(data) >= 6:
        (code,) = struct.unpack_from(">H", data, 4)
        names = getattr(d, "TC_FAILURES", ())
        failure = names[code] if code < len(names) else f"code {code}"
        detail = data[6:].decode("ascii", errors="replace").strip("\x00 ")
    return (pid, t, subtype, VERIFICATION_STAGES[subtype], int(success), pkt_id & 0x7FF, seq_ctrl & 0x3FFF,
            code, failure, detail)


def _connect(db: Path, readonly: bool, any_thread: bool = False) -> sqlite3.Connection:
    """`any_thread`: the connection is used by a thread other than its creator's (the live
    station opens its archive before its radio thread starts; one thread uses it at a time)."""
    if readonly:
        if not db.is_file():
            raise ArchiveError(f"{db}: no archive here (run `groundtools ingest RUN` first)")
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=not any_thread)
    else:
        db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db, check_same_thread=not any_thread)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ArchiveError(f"{db}: not an SQLite archive ({exc})") from None
    return conn


def _read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError:
        return {}


def _check_meta(meta: dict[str, str], db: Path, run: RunFolder | None) -> None:
    if not meta:
        return
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise ArchiveError(f"{db}: archive schema version {meta.get('schema_version')}, expected {SCHEMA_VERSION}")
    if meta.get("dictionary_version") != str(d.DICTIONARY_VERSION):
        raise ArchiveError(
            f"{db}: archive holds telemetry of dictionary version {meta.get('dictionary_version')}; this ground "
            f"software decodes version {d.DICTIONARY_VERSION}. Re-ingest into a new archive (--db) or use the "
            f"matching groundtools release."
        )
    if run is not None:
        ident = run.identity
        if any(meta.get(k) != v for k, v in ident.items()):
            raise ArchiveError(
                f"{db}: this archive holds another run ({meta.get('mission')!r}, seed {meta.get('seed')}, config "
                f"{meta.get('config_sha1', '')[:10]}); {run.path} is ({ident['mission']!r}, seed {ident['seed']}, config "
                f"{ident['config_sha1'][:10]}). Use --db to archive it elsewhere."
            )


def ingest(run_dir: Path | str, db: Path | str | None = None) -> IngestReport:
    """Decode RUN/telemetry.bin into the archive (default RUN/archive.sqlite); idempotent."""
    run = open_run(run_dir, need=INGEST_FILES)
    version = run.run_info.get("dictionary_version")
    if version is not None:
        check_dictionary_version(int(version), str(run.path / "run.json"))
    db = Path(db) if db else default_db(run.path)
    raw = run.telemetry_path.read_bytes()
    if not raw:
        raise RunFolderError(
            f"{run.telemetry_path}: empty telemetry file, nothing to ingest (no packet reached the ground: "
            f"was there a contact in this run?)"
        )
    file_sha1 = hashlib.sha1(raw).hexdigest()
    with _writer_lock(db):  # two ingests at once would both see the packets as new
        return _ingest_locked(run, db, raw, file_sha1)


@contextlib.contextmanager
def _writer_lock(db: Path):
    """One writer per archive: an exclusive lock on a file beside it (waits for the other;
    the kernel drops it if that process dies)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db.with_name(db.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ingest_locked(run: RunFolder, db: Path, raw: bytes, file_sha1: str) -> IngestReport:
    conn = _connect(db, readonly=False)
    try:
        meta = _read_meta(conn)
        _check_meta(meta, db, run)
        existing: set = set()
        next_id = 1
        if meta:
            existing = set(conn.execute("SELECT apid, t_s, sha1 FROM packets"))
            next_id = (conn.execute("SELECT max(id) FROM packets").fetchone()[0] or 0) + 1
        dec = _Decoder(run.cfg, str(run.telemetry_path))
        dec.run(raw, existing, next_id)  # raises DecodeError before anything is written
        report = IngestReport(db, file_sha1, dec.frames, len(dec.rows["packets"]), dec.duplicates,
                              sum(dec.reasons.values()), {**dec.reasons, **link_problems(dec.stream)},
                              new_rows={t: len(r) for t, r in dec.rows.items()}, link=link_summary(dec.stream))
        with conn:
            conn.execute("BEGIN")  # schema and rows in one transaction: one commit, all or nothing
            _write_identity(conn, run)
            _write_rows(conn, dec.rows)
            cur = conn.execute(
                "INSERT OR IGNORE INTO ingests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (file_sha1, str(run.telemetry_path.resolve()), len(raw), dec.frames, report.new_packets, report.bad,
                 json.dumps(report.reasons, sort_keys=True), datetime.now(UTC).isoformat(timespec="seconds")),
            )
            report.already_ingested = cur.rowcount == 0
    finally:
        conn.close()
    return report


def _write_identity(conn: sqlite3.Connection, run: RunFolder) -> None:
    """The schema, the run's identity in `meta` and its task table (no-ops when present)."""
    for stmt in schema_statements():
        conn.execute(stmt)
    new_meta = {
        "schema_version": str(SCHEMA_VERSION),
        "dictionary_version": str(d.DICTIONARY_VERSION),
        **run.identity,
        "apid": str(run.cfg.telemetry.apid),
        "n_tasks": str(len(run.cfg.tasks)),
        "classes": json.dumps(list(run.cfg.payload.classes)),
        "bands": str(run.cfg.payload.bands),
        "config_yaml": run.config_text,
    }
    conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", new_meta.items())
    conn.executemany(
        "INSERT OR IGNORE INTO tasks VALUES (?, ?, ?, ?)",
        [(i, t.name, t.kind, t.criticality) for i, t in enumerate(run.cfg.tasks)],
    )


def _write_rows(conn: sqlite3.Connection, decoded: dict[str, list[tuple]]) -> None:
    """Insert a decoder's rows (inside the caller's transaction)."""
    for table, rows in decoded.items():
        if not rows:
            continue
        marks = ", ".join("?" * len(rows[0]))
        if table == "rejects":
            conn.executemany(
                "INSERT OR IGNORE INTO rejects (file_offset, length, reason, sha1, raw) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        elif table == "samples":  # new packets only reach here, so re-ingesting adds none
            conn.executemany(
                "INSERT INTO samples (t_s, pixels, label, onboard_label, model_version) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        else:
            conn.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", rows)


@dataclass
class LiveBatch:
    """What one live commit added: the decoded rows by table (packet ids are the archive's)."""

    rows: dict[str, list[tuple]]
    duplicates: int
    bad: int

    @property
    def new_packets(self) -> int:
        return len(self.rows["packets"])


class LiveArchive:
    """The incremental writer of a live ground station: packets are archived as they arrive.

    It is `ingest` cut into commits: the same decoder (`_Decoder.decode`), schema, identity
    check and content keys, so a packet received twice (a reconnect that replays frames,
    a TM-store playback) is stored once, and `groundtools report RUN --db` reads the result
    like any archive of that run. One `add` is one transaction under the archive's writer
    lock, so a `groundtools ingest` of the same archive at the same time waits rather than
    interleaving; the keys another writer committed meanwhile are reloaded before decoding.
    """

    def __init__(self, db: Path | str, run: RunFolder):
        """`run`: the mission's config and identity (a RunFolder; its path only names the
        config in messages)."""
        self.db = Path(db)
        self.run = run
        self.conn = _connect(self.db, readonly=False, any_thread=True)
        try:
            _check_meta(_read_meta(self.conn), self.db, run)
        except ArchiveError:
            self.conn.close()
            raise
        with _writer_lock(self.db), self.conn:
            self.conn.execute("BEGIN")
            _write_identity(self.conn, run)
        self._load_keys()

    def _load_keys(self) -> None:
        self.existing: set = set(self.conn.execute("SELECT apid, t_s, sha1 FROM packets"))
        self.next_id = (self.conn.execute("SELECT max(id) FROM packets").fetchone()[0] or 0) + 1

    def add(self, packets: list[bytes], where: str = "radio") -> LiveBatch:
        """Decode and commit `packets` (whole space packets, in the order received)."""
        with _writer_lock(self.db):
            if (self.conn.execute("SELECT max(id) FROM packets").fetchone()[0] or 0) != self.next_id - 1:
                self._load_keys()  # another writer (an ingest) committed since our last batch
            dec = _Decoder(self.run.cfg, where)
            existing = set(self.existing)
            try:
                next_id = dec.decode(packet_frames(b"".join(packets), self.run.cfg.telemetry.apid),
                                     existing, self.next_id)
                with self.conn:
                    self.conn.execute("BEGIN")
                    _write_rows(self.conn, dec.rows)
            except BaseException:
                self._load_keys()  # nothing of this batch was kept
                raise
            self.existing, self.next_id = existing, next_id
        return LiveBatch(dec.rows, dec.duplicates, sum(dec.reasons.values()))

    def close(self) -> None:
        self.conn.close()


def ensure_archive(run_dir: Path | str, db: Path | str | None = None, log=None) -> Path:
    """The run's archive, ingesting its telemetry first when this file is not in it yet."""
    run = open_run(run_dir, need=INGEST_FILES)
    derived = db is None  # the run folder's own archive: derived data, rebuilt when it is stale
    db = Path(db) if db else default_db(run.path)
    if db.is_file():
        file_sha1 = hashlib.sha1(run.telemetry_path.read_bytes()).hexdigest()
        conn = _connect(db, readonly=True)
        stale = None
        try:
            meta = _read_meta(conn)
            try:
                _check_meta(meta, db, run)
            except ArchiveError as exc:
                if not derived:
                    raise
                stale = exc
            done = stale is None and bool(meta) and conn.execute(
                "SELECT 1 FROM ingests WHERE file_sha1 = ?", (file_sha1,)).fetchone()
        finally:
            conn.close()
        if done:
            return db
        if stale is not None:
            # A new run was written into this folder (or the ground software moved on): the
            # folder's archive describes telemetry that is no longer there. Rebuild it.
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            if log is not None:
                log(f"replaced the stale archive {db}: {stale}")
    rep = ingest(run.path, db)
    if log is not None:
        log(f"ingested {run.telemetry_path} into {db}: {rep.new_packets} packets, {rep.bad} bad")
    return db


# -- reading ----------------------------------------------------------------------------------
class Archive:
    """Read access to one archive (opened read-only)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.conn = _connect(self.path, readonly=True)
        self.meta = _read_meta(self.conn)
        if not self.meta:
            self.conn.close()
            raise ArchiveError(f"{self.path}: empty archive (no telemetry has been ingested into it)")
        _check_meta(self.meta, self.path, None)
        if not self.conn.execute("SELECT 1 FROM packets LIMIT 1").fetchone():
            self.conn.close()
            raise ArchiveError(f"{self.path}: empty archive (it holds no telemetry packets)")
        self.n_tasks = int(self.meta["n_tasks"])
        self.task_names = [r[0] for r in self.conn.execute("SELECT name FROM tasks ORDER BY task_index")]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def columns(self, table: str, order: str = "t_s, packet_id") -> dict[str, np.ndarray]:
        cur = self.conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
        names = [c[0] for c in cur.description]
        rows = cur.fetchall()
        if not rows:
            return {}
        out = {}
        for i, (name, col) in enumerate(zip(names, zip(*rows, strict=True), strict=True)):
            del i
            first = next((v for v in col if v is not None), None)
            if isinstance(first, (bytes, str)):
                out[name] = np.array(col, dtype=object)
            else:
                out[name] = np.array([np.nan if v is None else v for v in col], dtype=np.float64)
        return out

    def hk_core(self) -> dict[str, np.ndarray]:
        return self.columns("hk_core")

    def hk_tasks(self) -> dict[str, np.ndarray]:
        """Each field as an (n_reports, n_tasks) array, plus t_s (n_reports,)."""
        cols = self.columns("hk_tasks", order="t_s, packet_id, task_index")
        if not cols:
            return {}
        n = self.n_tasks
        out = {k: v.reshape(-1, n) for k, v in cols.items() if k not in ("packet_id",)}
        out["t_s"] = out["t_s"][:, 0]
        return out

    def orbits(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        o = self.columns("orbits")
        if not o:
            return {}, None
        e = self.conn.execute(
            "SELECT e.energy_j FROM orbit_task_energy e JOIN orbits o ON o.packet_id = e.packet_id "
            "ORDER BY o.t_s, o.packet_id, e.task_index"
        ).fetchall()
        return o, np.array([r[0] for r in e], dtype=np.float64).reshape(-1, self.n_tasks)

    def verifications(self) -> list[dict]:
        return self.rows("SELECT * FROM verifications ORDER BY t_s, packet_id")

    def model_uploads(self) -> list[dict]:
        """Model-upload events (dictionary v4+) as dicts: t_s, stage, version."""
        eid = getattr(d, "EVENT_MODEL_UPLOAD", None)
        if eid is None:
            return []
        out = []
        for t, p in self.conn.execute("SELECT t_s, params FROM events WHERE event_id = ? ORDER BY t_s", (eid,)):
            try:
                stage, version, counter = d.MODEL_UPLOAD_STRUCT.unpack(p)
                out.append({"t_s": t, "stage": d.MODEL_UPLOAD_STAGES[stage], "version": version, "counter": counter})
            except (struct.error, IndexError):
                continue
        return out

    def hk_device(self) -> dict[str, np.ndarray]:
        """Optimizer-device housekeeping (SID 4; empty when the run has none)."""
        if not HK_DEVICE:
            return {}
        return self.columns("hk_device")

    def rows(self, sql: str, args=()) -> list[dict]:
        cur = self.conn.execute(sql, args)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def events(self) -> list[dict]:
        return self.rows("SELECT t_s, event_id, name, severity, detail, params FROM events ORDER BY t_s, packet_id")

    def training_updates(self) -> list[dict]:
        """Decoded training-update events; NaN fields (stored as NULL by SQLite) come back as NaN."""
        rows = self.rows("SELECT * FROM training_updates ORDER BY t_s, packet_id")
        for r in rows:
            for k, v in r.items():
                if v is None:
                    r[k] = math.nan
        return rows

    def mode_changes(self) -> list[dict]:
        return self.rows("SELECT * FROM mode_changes ORDER BY t_s, packet_id")

    def contacts(self) -> list[tuple[float, int]]:
        return [
            (t, p[0]) for t, p in self.conn.execute(
                "SELECT t_s, params FROM events WHERE event_id = ? AND length(params) = 1 ORDER BY t_s",
                (d.EVENT_CONTACT,),
            )
        ]

    def decode_stats(self) -> tuple[int, int, dict[str, int]]:
        """(units archived: packets + rejected chunks, bad ones, reasons)."""
        n_packets = self.conn.execute("SELECT count(*) FROM packets").fetchone()[0]
        reasons = dict(self.conn.execute("SELECT status, count(*) FROM packets WHERE status != 'ok' GROUP BY status"))
        for reason, n in self.conn.execute("SELECT reason, count(*) FROM rejects GROUP BY reason"):
            key = reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + n
        n_rej = self.conn.execute("SELECT count(*) FROM rejects").fetchone()[0]
        return n_packets + n_rej, sum(reasons.values()), reasons

    def samples(self):
        """Downlinked labelled samples: (t_s, pixels (n, bands) float32, labels, onboard_label, model_version)."""
        rows = self.conn.execute(
            "SELECT t_s, pixels, label, onboard_label, model_version FROM samples ORDER BY t_s, id"
        ).fetchall()
        if not rows:
            return None
        bands = int(self.meta.get("bands", 0)) or len(rows[0][1]) // 4
        pixels = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4")
        if pixels.size != bands * len(rows):
            raise ArchiveError(f"{self.path}: samples table: pixel blobs are not {bands} float32 bands each")
        return (
            np.array([r[0] for r in rows]),
            pixels.reshape(len(rows), bands),
            np.array([r[2] for r in rows], dtype=np.int64),
            np.array([-1 if r[3] is None else r[3] for r in rows], dtype=np.int64),
            np.array([-1 if r[4] is None else r[4] for r in rows], dtype=np.int64),
        )

    def telemetry(self) -> Telemetry:
        """The archive's content in the decoder's column form (what the plots take)."""
        tm = Telemetry()
        tm.hk_core = self.hk_core()
        tm.hk_tasks = self.hk_tasks()
        tm.orbits, tm.orbit_task_energy_j = self.orbits()
        tm.hk_device = self.hk_device()
        tm.packets, tm.bad_packets, tm.bad_reasons = self.decode_stats()
        tm.events = [
            {"t_s": t, "id": eid, "severity": sev, "params": bytes(p)}
            for t, eid, sev, p in self.conn.execute("SELECT t_s, event_id, severity, params FROM events ORDER BY t_s")
        ]
        return tm


def decode_samples(body: bytes):
    """HK SID 5 body -> (model version, [(label, onboard label, pixels tuple)]), or None if malformed."""
    if len(body) < d.SAMPLES_HEADER.size:
        return None
    version, count = d.SAMPLES_HEADER.unpack_from(body)
    if count == 0:
        return version, []
    rec = (len(body) - d.SAMPLES_HEADER.size) // count
    bands = (rec - d.SAMPLE_RECORD_HEAD.size) // 4
    if bands < 1 or d.SAMPLES_HEADER.size + count * (d.SAMPLE_RECORD_HEAD.size + 4 * bands) != len(body):
        return None
    fmt = struct.Struct(f">{bands}f")
    out, pos = [], d.SAMPLES_HEADER.size
    for _ in range(count):
        lab, pred = d.SAMPLE_RECORD_HEAD.unpack_from(body, pos)
        px = fmt.unpack_from(body, pos + d.SAMPLE_RECORD_HEAD.size)
        out.append((lab, pred, px))
        pos += d.SAMPLE_RECORD_HEAD.size + 4 * bands
    return version, out


def add_samples(db: Path | str, t_s, pixels, labels, onboard_label=None, model_version=None) -> int:
    """Insert downlinked labelled samples (pixels stored as little-endian float32 bands)."""
    pixels = np.asarray(pixels, dtype="<f4")
    n = len(t_s)
    ob = [None] * n if onboard_label is None else [int(v) for v in onboard_label]
    mv = [None] * n if model_version is None else [int(v) for v in model_version]
    conn = _connect(Path(db), readonly=False)
    try:
        with conn:
            conn.execute("BEGIN")
            for stmt in schema_statements():
                conn.execute(stmt)
            conn.executemany(
                "INSERT INTO samples (t_s, pixels, label, onboard_label, model_version) VALUES (?, ?, ?, ?, ?)",
                [(float(t_s[i]), pixels[i].tobytes(), int(labels[i]), ob[i], mv[i]) for i in range(n)],
            )
    finally:
        conn.close()
    return n


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


__all__ = [
    "Archive", "ArchiveError", "DecodeError", "IngestReport", "LiveArchive", "LiveBatch", "RunFolderError",
    "add_samples", "default_db", "ensure_archive", "ingest",
]
