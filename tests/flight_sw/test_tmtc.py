"""Telemetry packets: library-conformant timestamps, round trips, the downlink queue."""

import binascii
import json
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest
from spacepackets.ccsds.time import CdsShortTimestamp
from spacepackets.ccsds.tm_frame import TmFramePrimaryHeader
from spacepackets.ecss import PusTm

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.cop1 import Clcw
from flight_sw.tmtc.downlink import (
    CLCW_REFRESH_MINOR_FRAMES,
    DEFAULT_SPACECRAFT_ID,
    DEFAULT_TM_FRAME_BYTES,
    NO_COP_CLCW,
    DownlinkQueue,
)
from flight_sw.tmtc.packets import TmEncoder, cds_short
from flight_sw.tmtc.tm_frames import ASM
from ground_tools.tm_frames import decode_tm_stream

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


CADU_BYTES = 4 + DEFAULT_TM_FRAME_BYTES
CADU_BITS = 8 * CADU_BYTES


def pus(tag: int, length: int = 40, service: int = 3, apid: int = 0x65, seq: int = 0) -> bytes:
    """A PUS-C TM packet of `length` octets whose source data starts with `tag`."""
    data = bytes([tag]) * (length - 22)
    raw = PusTm(service=service, message_subtype=1, timestamp=bytes(7), source_data=data, apid=apid,
                seq_count=seq).pack()
    assert len(raw) == length
    return raw


def queue(rows: int, row_bytes: int, rate_bps: float, sent: list):
    return DownlinkQueue(np.zeros((rows, row_bytes), np.uint8), np.zeros(rows, np.uint16), rate_bps, 1.0,
                         sent.append)


def ground(cadus: list[bytes]):
    """What the ground decodes from the CADUs: (packets in the order sent, link result)."""
    res = decode_tm_stream(b"".join(cadus), DEFAULT_TM_FRAME_BYTES, DEFAULT_SPACECRAFT_ID)
    return [p for _, p in res.in_order], res


def tags(packets: list[bytes]) -> list[int]:
    return [PusTm.unpack(p, timestamp_len=7).source_data[0] for p in packets]


def test_downlink_queue_drains_only_in_contact_at_the_rate_and_counts_overflow():
    sent: list[bytes] = []
    q = queue(6, 1024, CADU_BITS, sent)  # one frame per minor frame
    assert q.low.capacity == 4  # one row of six is reserved for events, one for other high priority
    for i in range(6):
        q.push(pus(i, 1000))
    assert q.count == 4 and q.overflow == 2
    q.drain(10, in_contact=False)
    assert sent == []
    q.drain(1, in_contact=True)  # 1,119 octets per minor frame: packet 0 and the start of 1
    assert len(sent) == 1 and all(len(c) == CADU_BYTES and c[:4] == ASM for c in sent)
    assert tags(ground(sent)[0]) == [0]
    q.drain(2, in_contact=True)
    assert len(sent) == 3 and tags(ground(sent)[0]) == [0, 1, 2]
    q.drain(1, in_contact=True)
    assert len(sent) == 4 and tags(ground(sent)[0]) == [0, 1, 2, 3] and q.count == 0
    packets, res = ground(sent)
    assert packets[0][20:-2] == bytes([0]) * 978 and res.stats.idle_frames == 0
    q.drain(CLCW_REFRESH_MINOR_FRAMES - 1, in_contact=True)  # nothing pending: quiet until the refresh
    assert len(sent) == 4
    q.drain(1, in_contact=True)  # one idle frame (VC7) for the CLCW
    packets, res = ground(sent)
    assert len(sent) == 5 and len(packets) == 4 and res.stats.idle_frames == 1
    assert TmFramePrimaryHeader.unpack(sent[-1][4:]).vc_id == 7


def test_idle_frames_only_refresh_the_clcw_and_never_exceed_the_rate():
    sent: list[bytes] = []
    q = queue(16, 256, 1e6, sent)  # the link could carry 111 frames per minor frame
    q.drain(1, in_contact=True)
    assert len(sent) == 1  # the contact opens with one idle frame (a CLCW), not 111 per minor frame
    q.drain(CLCW_REFRESH_MINOR_FRAMES - 1, in_contact=True)
    assert len(sent) == 1 and q._allowance_bits <= CADU_BITS  # nothing banked while idle
    q.drain(1, in_contact=True)
    assert len(sent) == 2  # the periodic refresh
    q.clcw_source = lambda: bytes.fromhex("01000000")
    q.drain(1, in_contact=True)
    assert len(sent) == 3 and sent[-1][-6:-2] == bytes.fromhex("01000000")  # a changed CLCW at once
    q.drain(100, in_contact=False)
    assert len(sent) == 3
    q.drain(1, in_contact=True)
    assert len(sent) == 4  # acquisition of signal: a CLCW at once
    slow: list[bytes] = []
    q = queue(16, 1024, 0.4 * CADU_BITS, slow)  # a frame costs 2.5 minor frames
    for i in range(3):
        q.push(pus(i, 1000))  # about a frame each
    q.drain(10, in_contact=True)
    assert len(slow) == 3  # at minor frames 3, 6 and 9: the credit below a frame carries over
    fast: list[bytes] = []
    q = queue(64, 256, 2.5 * CADU_BITS, fast)
    for i in range(50):
        q.push(pus(i, 200))
    q.drain(1, in_contact=True)
    assert len(fast) == 2
    q.drain(1, in_contact=True)
    assert len(fast) == 5  # 2.5 frames per minor frame: the half carries while data waits


def test_draining_k_frames_at_once_equals_k_single_frames():
    def run(chunks):
        sent: list[bytes] = []
        q = queue(64, 256, 1.3 * CADU_BITS, sent)
        for i in range(40):
            q.push(pus(i, 30 + 5 * i), high=i % 7 == 0)
        for n in chunks:
            q.drain(n, in_contact=True)
        return sent, q.state_dict()

    assert run([1] * 25) == run([25]) == run([3, 7, 15])


def test_high_priority_drains_first_and_each_class_counts_its_overflow():
    sent: list[bytes] = []
    q = queue(16, 64, 1e6, sent)
    assert (q.event.capacity, q.high.capacity, q.low.capacity) == (2, 2, 12)
    for i in range(14):
        q.push(pus(i))  # low: 12 fit, 2 refused
    for i in range(3):
        q.push(pus(100 + i, service=d.PUS_SERVICE_VERIFICATION), high=True)  # high: 2 fit, 1 refused
    for i in range(4):
        q.push(pus(200 + i, service=d.PUS_SERVICE_EVENT), high=True)  # event reports: 2 fit, 2 refused
    assert (q.low.overflow, q.high.overflow, q.event.overflow, q.count) == (2, 1, 2, 16)
    q.drain(1, in_contact=True)
    packets, res = ground(sent)
    assert tags(packets) == [200, 201, 100, 101, *range(12)]
    assert sorted(res.packets) == [0, 1]  # events and verification on VC1, housekeeping on VC0
    assert tags(res.packets[1]) == [200, 201, 100, 101]


def test_a_flood_of_verification_reports_cannot_crowd_out_an_event():
    q = queue(16, 64, 8 * 1000, [])
    for _ in range(100):
        q.push(pus(1, service=d.PUS_SERVICE_VERIFICATION), high=True)
    assert q.push(pus(2, service=d.PUS_SERVICE_EVENT), high=True)
    with pytest.raises(ValueError, match="at least 3"):
        DownlinkQueue(np.zeros((2, 64), np.uint8), np.zeros(2, np.uint16), 8 * 1000, 1.0, lambda p: None)


def test_push_refuses_what_is_not_a_space_packet():
    q = queue(16, 64, 1e6, [])
    with pytest.raises(ValueError, match="length field says"):
        q.push(bytes(50))
    with pytest.raises(ValueError, match="exceeds the queue row size 64"):
        q.push(pus(1, 65))


def test_sequence_counts_are_stamped_on_leaving_the_queue_and_increase_on_the_ground():
    """The encoder stamps counts when it packs; events overtake housekeeping in the queue, so
    the counts are rewritten (PUS-C CRC recomputed) when packets leave for the frames."""
    sent: list[bytes] = []
    q = queue(256, 256, 3 * CADU_BITS, sent)
    emitted: list[bytes] = []

    def tap(packet: bytes, high: bool = False) -> None:
        emitted.append(packet)
        q.push(packet, high)

    enc = TmEncoder(0x65, START, tap)
    other = TmEncoder(0x66, START, tap)
    q._seq[0x66] = (1 << 14) - 3  # this APID wraps during the test
    for tick in range(120):
        enc.housekeeping(d.HK_CORE_SID, bytes(100 + tick % 50), tick)
        if tick % 3 == 0:
            enc.event(d.EVENT_CONTACT, "info", b"\x01", tick)
            other.housekeeping(d.HK_ORBIT_SID, bytes(30), tick, high=True)
        q.drain(1, in_contact=tick % 40 > 10)
    packets, res = ground(sent)
    assert res.stats.packets == len(packets) == q.sent > 100
    assert {0, 1} <= set(res.packets)  # both channels carried packets
    seen: dict[int, list[int]] = {}
    for raw in packets:
        p = PusTm.unpack(raw, timestamp_len=7)  # raises when the CRC does not check
        seen.setdefault(p.apid, []).append(p.seq_count)
        assert raw[2] >> 6 == 0b11 and binascii.crc_hqx(raw, 0xFFFF) == 0  # flags kept, CRC recomputed
    for apid, counts in seen.items():
        assert all((b - a) % (1 << 14) == 1 for a, b in zip(counts, counts[1:], strict=False)), apid
    assert seen[0x65][0] == 0 and seen[0x66][:4] == [(1 << 14) - 3, (1 << 14) - 2, (1 << 14) - 1, 0]
    # Events overtook housekeeping (so the encoder's counts would have arrived out of order);
    # apart from count and CRC the packets are the ones emitted, none lost or duplicated.
    def masked(r: bytes) -> bytes:
        return bytes(r[:2] + r[4:-2])

    got = [masked(r) for r in packets]
    sent_masked = [masked(r) for r in emitted]
    assert got != sent_masked[: len(got)]
    assert not Counter(got) - Counter(sent_masked)
    assert len(emitted) == len(packets) + q.count + q.overflow


def test_the_clcw_of_the_moment_is_in_every_frame_ocf():
    sent: list[bytes] = []
    q = queue(16, 64, 1e6, sent)
    assert q.clcw_source() == NO_COP_CLCW and Clcw.unpack(NO_COP_CLCW).cop_in_effect == 0
    q.drain(1, in_contact=True)
    words = [Clcw(virtual_channel_id=0, report_value=v).pack() for v in range(3)]
    for v, word in enumerate(words):
        q.clcw_source = lambda w=word: w
        q.push(pus(v))
        q.drain(1, in_contact=True)
    ocf = slice(4 + DEFAULT_TM_FRAME_BYTES - 6, 4 + DEFAULT_TM_FRAME_BYTES - 2)
    assert [c[ocf] for c in sent] == [NO_COP_CLCW, *words]
    assert all(TmFramePrimaryHeader.unpack(c[4:]).ocf_flag for c in sent)
    assert ground(sent)[1].last_clcw == words[-1]


def test_snapshot_mid_packet_continues_identically():
    def fresh(sent):
        return queue(64, 256, 0.7 * CADU_BITS, sent)

    def feed(q, start):
        for i in range(start, start + 20):
            q.push(pus(i, 120 + 3 * i, service=d.PUS_SERVICE_EVENT if i % 5 == 0 else 3), high=i % 5 == 0)

    full: list[bytes] = []
    q = fresh(full)
    feed(q, 0)
    q.drain(4, in_contact=True)
    feed(q, 20)
    q.drain(30, in_contact=True)

    first: list[bytes] = []
    a = fresh(first)
    feed(a, 0)
    a.drain(4, in_contact=True)
    assert a.link.pending_bytes  # a packet is cut between frames here
    state = json.loads(json.dumps(a.state_dict()))
    rest: list[bytes] = []
    b = DownlinkQueue(a.rows.copy(), a.lengths.copy(), 0.7 * CADU_BITS, 1.0, rest.append)
    b.load_state_dict(state)
    feed(b, 20)
    b.drain(30, in_contact=True)
    assert first + rest == full
    assert ground(full)[1].stats.packets == 40


def test_link_buffers_are_in_the_memory_plan(default_cfg):
    from flight_sw.memory import allocate_buffers, buffer_sizes_bytes, tm_packet_bytes
    from flight_sw.tmtc.downlink import link_buffer_specs

    specs = link_buffer_specs(default_cfg.downlink.tm_frame_bytes, tm_packet_bytes(default_cfg))
    sizes = buffer_sizes_bytes(default_cfg)
    assert set(specs) <= set(sizes)
    assert sizes["tmtc.tm_frame"] == 4 + default_cfg.downlink.tm_frame_bytes
    assert sizes["tmtc.tm_seq_counts"] == 2 * 2048
    bufs = allocate_buffers(default_cfg)
    sent: list[bytes] = []
    q = DownlinkQueue(bufs["tmtc.downlink_queue"], bufs["tmtc.downlink_lengths"], 1e6, 1.0, sent.append,
                      spacecraft_id=default_cfg.telemetry.spacecraft_id,
                      tm_frame_bytes=default_cfg.downlink.tm_frame_bytes, link_buffers=bufs)
    q.push(pus(7))
    q.drain(1, in_contact=True)
    assert bytes(bufs["tmtc.tm_frame"]) == sent[0]  # the framer works in the planned buffer
    assert bufs["tmtc.tm_seq_counts"][0x65] == 1
    with pytest.raises(ValueError, match="tmtc.tm_vc1_ring: expected shape"):
        DownlinkQueue(bufs["tmtc.downlink_queue"], bufs["tmtc.downlink_lengths"], 1e6, 1.0, sent.append,
                      tm_frame_bytes=default_cfg.downlink.tm_frame_bytes + 1, link_buffers=bufs)


def test_defaults_follow_the_config_schema(default_cfg):
    assert (DEFAULT_SPACECRAFT_ID, DEFAULT_TM_FRAME_BYTES) == (0x1AB, 1115)


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


def stored_queue(sent: list, store_bytes: int, rate_bps: float = 3 * CADU_BITS):
    from flight_sw.tmtc.packet_store import PacketStore

    clock = {"t": 0.0}
    q = DownlinkQueue(np.zeros((64, 256), np.uint8), np.zeros(64, np.uint16), rate_bps, 1.0, sent.append,
                      store=PacketStore(np.zeros(store_bytes, np.uint8)), clock=lambda: clock["t"])
    return q, clock


def test_housekeeping_out_of_contact_is_stored_and_played_back_on_vc2_after_real_time():
    """PUS 15: what nobody hears is kept and comes down at the next contact, on its own channel,
    behind the events and the real-time housekeeping, with every APID's counts still in order."""
    sent: list[bytes] = []
    q, clock = stored_queue(sent, 64 * 1024)
    emitted: list[bytes] = []

    def tap(packet: bytes, high: bool = False) -> None:
        emitted.append(packet)
        q.push(packet, high)

    enc = TmEncoder(0x65, START, tap)
    for tick in range(300):
        clock["t"] = float(tick)
        q.link_up = 200 <= tick < 260
        enc.housekeeping(d.HK_CORE_SID, bytes([tick % 256]) * 60, tick)
        if tick % 50 == 0:
            enc.event(d.EVENT_CONTACT, "info", b"\x01", tick)
        q.drain(1, in_contact=q.link_up)
        if tick == 259:
            heard = len(emitted)  # what was emitted up to the end of the contact
        if tick == 199:
            assert q.low.count == 0 and q.store.count == 200  # the low ring waited for nothing
            assert sent == []
    packets, res = ground(sent)
    assert set(res.packets) == {0, 1, 2}  # housekeeping, events, playback
    first_vc = [vc for vc, _ in res.in_order]
    assert first_vc[:4] == [1, 1, 1, 1]  # the four events of the gap first
    assert first_vc.index(2) > first_vc.index(0)  # real time before playback
    counts = [PusTm.unpack(p, timestamp_len=7).seq_count for p in packets]
    assert counts == list(range(len(packets)))  # one APID: stamped at downlink, strictly increasing
    # the 200 stored packets all came down (60 s of contact at 3 frames/s is plenty), in time order,
    # and nothing was lost or duplicated
    playback = [bytes(p) for vc, p in res.in_order if vc == 2]
    assert [PusTm.unpack(p, timestamp_len=7).source_data[2] for p in playback] == list(range(200))

    def masked(r: bytes) -> bytes:
        return bytes(r[:2] + r[4:-2])

    assert Counter(masked(r) for r in packets) == Counter(masked(r) for r in emitted[:heard])
    assert q.store.count == 240 and q.count == 0  # played back, kept (70-41C 6.15.3.4); 40 more since
    assert q.store.played_back == 200 and q.store.lost == 0


def test_a_full_store_overwrites_the_oldest_and_counts_them_as_lost():
    sent: list[bytes] = []
    size = len(PusTm(service=3, message_subtype=25, timestamp=bytes(7), source_data=bytes(70), apid=0x65).pack())
    q, clock = stored_queue(sent, 10 * (10 + size))  # room for ten
    enc = TmEncoder(0x65, START, q.push)
    for tick in range(25):
        clock["t"] = float(tick)
        enc.housekeeping(d.HK_CORE_SID, bytes([tick]) * 68, tick)  # SID + 68 octets: `size` each
    assert q.store.count == 10 and q.store.lost == 15 and q.overflow == 0
    q.link_up = True
    q.drain(20, in_contact=True)
    packets, _ = ground(sent)
    assert [PusTm.unpack(p, timestamp_len=7).source_data[2] for p in packets] == list(range(15, 25))


def test_with_storage_disabled_housekeeping_waits_in_the_low_ring_as_before():
    sent: list[bytes] = []
    q, _ = stored_queue(sent, 4096)
    q.store.storing = False  # TC[15,2]
    enc = TmEncoder(0x65, START, q.push)
    for tick in range(5):
        enc.housekeeping(d.HK_CORE_SID, bytes(10), tick)
    assert q.low.count == 5 and q.store.count == 0
