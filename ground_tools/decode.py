"""Decode a run's telemetry file into per-structure columns, using the shared dictionary.

Thin version (issue 2): decodes straight into numpy columns for the report. The
SQLite archive, limits and idempotent ingest belong to issue 8. Bad packets (CRC,
truncation, unknown service) are counted and skipped, never fatal.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from spacepackets.ecss import PusTm

from flight_sw.tmtc import dictionary as d

_CCSDS_EPOCH = datetime(1958, 1, 1, tzinfo=UTC)
_PRIMARY_HEADER = 6


class DecodeError(ValueError):
    """The file cannot be decoded at all (wrong dictionary, not telemetry)."""


@dataclass
class Telemetry:
    hk_core: dict[str, np.ndarray] = field(default_factory=dict)
    hk_tasks: dict[str, np.ndarray] = field(default_factory=dict)  # (n_reports, n_tasks) each
    orbits: dict[str, np.ndarray] = field(default_factory=dict)
    orbit_task_energy_j: np.ndarray | None = None  # (n_orbits, n_tasks)
    events: list[dict] = field(default_factory=list)
    packets: int = 0
    bad_packets: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)


def _mission_seconds(stamp: bytes, start_utc: datetime) -> float:
    days, ms = struct.unpack(">HI", stamp[1:7])
    return days * 86400.0 + ms / 1000.0 - (start_utc - _CCSDS_EPOCH).total_seconds()


def split_packets(raw: bytes) -> tuple[list[bytes], int]:
    """Cut a byte stream into space packets by their length field; returns (packets, trailing bytes)."""
    out = []
    pos = 0
    while pos + _PRIMARY_HEADER <= len(raw):
        length = struct.unpack_from(">H", raw, pos + 4)[0] + 1 + _PRIMARY_HEADER
        if pos + length > len(raw):
            break
        out.append(raw[pos : pos + length])
        pos += length
    return out, len(raw) - pos


def decode_file(path: Path, start_utc: datetime, n_tasks: int) -> Telemetry:
    raw = Path(path).read_bytes()
    packets, trailing = split_packets(raw)
    tm = Telemetry()
    core_rows, task_rows, orbit_rows, orbit_energy = [], [], [], []
    core_t, task_t = [], []

    def bad(reason: str) -> None:
        tm.bad_packets += 1
        tm.bad_reasons[reason] = tm.bad_reasons.get(reason, 0) + 1

    if trailing:
        bad("truncated trailing packet")
    for pkt in packets:
        tm.packets += 1
        try:
            p = PusTm.unpack(pkt, timestamp_len=d.CDS_SHORT_LEN)
        except Exception:  # noqa: BLE001 - any malformed packet is counted, not fatal
            bad("unpack/CRC failure")
            continue
        t = _mission_seconds(bytes(p.timestamp), start_utc)
        data = bytes(p.source_data)
        if p.service == d.PUS_SERVICE_HK and len(data) >= 2:
            sid = d.SID_STRUCT.unpack_from(data)[0]
            body = data[2:]
            if sid == d.HK_CORE_SID and len(body) == d.HK_CORE_STRUCT.size:
                row = d.HK_CORE_STRUCT.unpack(body)
                if row[0] != d.DICTIONARY_VERSION:
                    raise DecodeError(
                        f"{path}: telemetry uses dictionary version {row[0]}, this decoder knows version "
                        f"{d.DICTIONARY_VERSION}"
                    )
                core_rows.append(row)
                core_t.append(t)
            elif sid == d.HK_TASKS_SID and len(body) == d.HK_TASK_STRUCT.size * n_tasks:
                task_rows.append([d.HK_TASK_STRUCT.unpack_from(body, i * d.HK_TASK_STRUCT.size) for i in range(n_tasks)])
                task_t.append(t)
            elif sid == d.HK_ORBIT_SID and len(body) == d.HK_ORBIT_STRUCT.size + 4 * n_tasks:
                orbit_rows.append(d.HK_ORBIT_STRUCT.unpack_from(body))
                orbit_energy.append(struct.unpack_from(f">{n_tasks}f", body, d.HK_ORBIT_STRUCT.size))
            else:
                bad(f"unknown HK structure {sid} or wrong length")
        elif p.service == d.PUS_SERVICE_EVENT and len(data) >= 2:
            eid = d.EVENT_ID_STRUCT.unpack_from(data)[0]
            tm.events.append({"t_s": t, "id": eid, "severity": p.message_subtype, "params": data[2:]})
        else:
            bad(f"unexpected service {p.service}")
    if core_rows:
        cols = list(zip(*core_rows, strict=True))
        tm.hk_core = {prm.name: np.array(c) for prm, c in zip(d.HK_CORE, cols, strict=True)}
        tm.hk_core["t_s"] = np.array(core_t)
    if task_rows:
        arr = np.array(task_rows, dtype=np.float64)  # (reports, tasks, fields)
        tm.hk_tasks = {prm.name: arr[:, :, i] for i, prm in enumerate(d.HK_TASK_RECORD)}
        tm.hk_tasks["t_s"] = np.array(task_t)
    if orbit_rows:
        cols = list(zip(*orbit_rows, strict=True))
        tm.orbits = {prm.name: np.array(c) for prm, c in zip(d.HK_ORBIT, cols, strict=True)}
        tm.orbit_task_energy_j = np.array(orbit_energy)
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
