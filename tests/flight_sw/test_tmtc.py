"""Telemetry packets: library-conformant timestamps, round trips, the downlink queue."""

from datetime import UTC, datetime

import numpy as np
import pytest
from spacepackets.ccsds.time import CdsShortTimestamp
from spacepackets.ecss import PusTm

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.downlink import DownlinkQueue
from flight_sw.tmtc.packets import TmEncoder, cds_short

START = datetime(2026, 3, 1, tzinfo=UTC)


def test_cds_short_matches_the_library():
    for t in (0.0, 1.5, 86399.999, 86400.0, 1e6 + 0.25):
        ref = CdsShortTimestamp.from_datetime(datetime.fromtimestamp(START.timestamp() + t, UTC)).pack()
        assert cds_short(START, t) == ref


def test_hk_packet_golden_bytes_and_round_trip():
    out = []
    enc = TmEncoder(0x65, START, lambda p, high: out.append(p))
    enc.housekeeping(d.HK_ORBIT_SID, b"\x01\x02", 1.5)
    raw = out[0]
    # CCSDS primary header: version 0, TM, secondary header flag, APID 0x065, unsegmented, seq 0.
    assert raw[:4] == bytes.fromhex("0865c000")
    assert raw[6] >> 4 == 2  # PUS-C
    assert raw[7:9] == bytes([3, 25])
    p = PusTm.unpack(raw, timestamp_len=7)
    assert (p.apid, p.service, p.seq_count) == (0x65, 3, 0)
    assert bytes(p.source_data) == b"\x00\x03\x01\x02"
    assert bytes(p.timestamp) == cds_short(START, 1.5)


def test_sequence_count_wraps_at_14_bits():
    out = []
    enc = TmEncoder(1, START, lambda p, high: out.append(p))
    enc.seq_count = (1 << 14) - 1
    enc.event(d.EVENT_CONTACT, "info", b"\x01", 0.0)
    enc.event(d.EVENT_CONTACT, "info", b"\x00", 0.0)
    assert [PusTm.unpack(r, timestamp_len=7).seq_count for r in out] == [(1 << 14) - 1, 0]


def test_downlink_queue_drains_only_in_contact_at_the_rate_and_counts_overflow():
    sent = []
    q = DownlinkQueue(np.zeros((6, 64), np.uint8), np.zeros(6, np.uint16), 8 * 100, 1.0, sent.append)
    assert q.low.capacity == 4  # one row of six is reserved for events, one for other high priority
    for i in range(6):
        q.push(bytes([i]) * 50)
    assert q.count == 4 and q.overflow == 2
    q.drain(10, in_contact=False)
    assert sent == []
    q.drain(1, in_contact=True)  # 100 bytes per frame: two 50-byte packets
    assert [p[0] for p in sent] == [0, 1]
    q.drain(1, in_contact=True)
    assert [p[0] for p in sent] == [0, 1, 2, 3] and q.count == 0
    assert sent[0] == bytes([0]) * 50


def test_draining_k_frames_at_once_equals_k_single_frames():
    def run(chunks):
        sent = []
        q = DownlinkQueue(np.zeros((64, 64), np.uint8), np.zeros(64, np.uint16), 8 * 37, 1.0, sent.append)
        for i in range(40):
            q.push(bytes([i]) * (10 + i))
        for n in chunks:
            q.drain(n, in_contact=True)
        return sent, q.state_dict()

    assert run([1] * 25) == run([25]) == run([3, 7, 15])


def test_high_priority_drains_first_and_each_class_counts_its_overflow():
    sent = []
    q = DownlinkQueue(np.zeros((16, 64), np.uint8), np.zeros(16, np.uint16), 8 * 1000, 1.0, sent.append)
    assert (q.event.capacity, q.high.capacity, q.low.capacity) == (2, 2, 12)
    for i in range(14):
        q.push(bytes([i]) * 10)  # low: 12 fit, 2 refused
    for i in range(3):
        q.push(bytes([100 + i]) * 10, high=True)  # high (not an event report): 2 fit, 1 refused
    event = bytes(7) + bytes([d.PUS_SERVICE_EVENT]) + bytes(2)
    for i in range(4):
        q.push(bytes([200 + i]) + event[1:], high=True)  # event reports: 2 fit, 2 refused
    assert (q.low.overflow, q.high.overflow, q.event.overflow, q.count) == (2, 1, 2, 16)
    q.drain(1, in_contact=True)
    assert [p[0] for p in sent] == [200, 201, 100, 101, *range(12)]


def test_a_flood_of_verification_reports_cannot_crowd_out_an_event():
    q = DownlinkQueue(np.zeros((16, 64), np.uint8), np.zeros(16, np.uint16), 8 * 1000, 1.0, lambda p: None)
    for _ in range(100):
        q.push(bytes(7) + bytes([d.PUS_SERVICE_VERIFICATION]) + bytes(4), high=True)
    assert q.push(bytes(7) + bytes([d.PUS_SERVICE_EVENT]) + bytes(4), high=True)
    with pytest.raises(ValueError, match="at least 3"):
        DownlinkQueue(np.zeros((2, 64), np.uint8), np.zeros(2, np.uint16), 8 * 1000, 1.0, lambda p: None)


def test_encoder_routes_events_high_and_housekeeping_low():
    got = []
    enc = TmEncoder(1, START, lambda p, high: got.append(high))
    enc.housekeeping(d.HK_CORE_SID, b"", 0.0)
    enc.event(d.EVENT_CONTACT, "info", b"\x01", 0.0)
    enc.housekeeping(d.HK_ORBIT_SID, b"", 0.0, high=True)
    assert got == [False, True, True]


def test_the_downlink_queue_rows_hold_the_task_table_report(default_cfg):
    """A task table of any length fits its HK report (SID 2) into one downlink queue row."""
    from dataclasses import replace

    from flight_sw.memory import HK_TASK_RECORD_BYTES, TM_PACKET_OVERHEAD_BYTES, tm_packet_bytes
    from flight_sw.tmtc import dictionary as d

    assert d.HK_TASK_STRUCT.size == HK_TASK_RECORD_BYTES
    many = replace(default_cfg, tasks=default_cfg.tasks * 3)
    need = TM_PACKET_OVERHEAD_BYTES + d.HK_TASK_STRUCT.size * len(many.tasks)
    assert tm_packet_bytes(many) >= need > 256
