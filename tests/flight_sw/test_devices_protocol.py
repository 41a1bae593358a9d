"""The analog optimizer's byte protocol: golden bytes, round trips, and malformed frames rejected."""

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight_sw.devices import protocol as p

CODES = sorted(p.COMMANDS) + sorted(c | p.RESPONSE_BIT for c in p.COMMANDS)


def test_golden_ping_frame():
    frame = p.encode_frame(p.CMD_PING, 0x1234)
    head = bytes.fromhex("eb90" "01" "01" "1234" "00" "00" "00000000")
    assert frame[:12] == head
    assert frame[12:14] == struct.pack(">H", p.crc16(head))
    assert frame[14:] == struct.pack(">I", p.crc32(frame[:14]))
    assert len(frame) == p.OVERHEAD
    # CRC-16/CCITT-FALSE check value, as used by CCSDS/PUS
    assert p.crc16(b"123456789") == 0x29B1


@given(
    code=st.sampled_from(CODES),
    seq=st.integers(0, 0xFFFF),
    status=st.integers(0, 255),
    flags=st.integers(0, 255),
    payload=st.binary(max_size=300),
)
def test_frame_round_trip(code, seq, status, flags, payload):
    raw = p.encode_frame(code, seq, payload, status, flags)
    f = p.decode_frame(raw)
    assert (f.code, f.seq, f.status, f.flags, f.payload) == (code, seq, status, flags, payload)
    out = p.FrameDecoder().feed(raw)
    assert out == [f]


@given(
    frames=st.lists(st.tuples(st.sampled_from(CODES), st.integers(0, 0xFFFF), st.binary(max_size=64)), max_size=6),
    junk=st.lists(st.binary(max_size=20), min_size=7, max_size=7),
    cuts=st.lists(st.integers(1, 50), max_size=10),
)
def test_stream_with_junk_and_arbitrary_chunking(frames, junk, cuts):
    """Frames separated by junk, fed in arbitrary chunks, all come out intact and in order."""
    stream = b""
    for i, (code, seq, payload) in enumerate(frames):
        stream += junk[i].replace(p.SYNC, b"") + p.encode_frame(code, seq, payload)
    stream += junk[-1].replace(p.SYNC[:1], b"")
    dec = p.FrameDecoder()
    got, pos = [], 0
    for c in cuts + [len(stream)]:
        got += dec.feed(stream[pos : pos + c])
        pos += c
    decoded = [(f.code, f.seq, f.payload) for f in got if isinstance(f, p.Frame)]
    assert decoded == [(c, s, pl) for c, s, pl in frames]


@settings(max_examples=300)
@given(
    payload=st.binary(max_size=80),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), min_size=1, max_size=4),
)
def test_corrupted_frames_are_rejected_never_raise(payload, flips):
    raw = bytearray(p.encode_frame(p.CMD_SOLVE | p.RESPONSE_BIT, 7, payload))
    for pos, bit in flips:
        raw[pos % len(raw)] ^= 1 << bit
    raw = bytes(raw)
    if raw == p.encode_frame(p.CMD_SOLVE | p.RESPONSE_BIT, 7, payload):
        return  # flips cancelled out
    out = p.FrameDecoder().feed(raw)
    frames = [f for f in out if isinstance(f, p.Frame)]
    # 1-4 bit errors are always caught by the CRCs (a valid frame can appear only if the
    # corruption produced a different complete, CRC-consistent frame, which 32 bits forbid)
    assert frames == []
    assert all(isinstance(f, p.Rejected) and f.reason for f in out) and out
    with pytest.raises(p.ProtocolError) as info:
        p.decode_frame(raw)
    assert info.value.reason


@given(st.binary(max_size=400))
def test_decoder_survives_any_bytes(data):
    dec = p.FrameDecoder()
    for item in dec.feed(data) + dec.feed(data[::-1]):
        assert isinstance(item, p.Frame | p.Rejected)
    assert dec.pending <= len(data) * 2


def test_reject_reasons():
    good = p.encode_frame(p.CMD_PING, 1)
    bad_version = bytearray(good)
    bad_version[2] = 9
    bad_version[12:14] = struct.pack(">H", p.crc16(bytes(bad_version[:12])))
    body = bytes(bad_version[:14])
    bad_version = body + struct.pack(">I", p.crc32(body))
    cases = {
        p.REJECT_TRUNCATED: good[:-1],
        p.REJECT_JUNK: b"\x00" + good[1:],
        p.REJECT_HEADER_CRC: good[:12] + b"\x00\x00" + good[14:],
        p.REJECT_PAYLOAD_CRC: good[:-1] + bytes([good[-1] ^ 1]),
        p.REJECT_VERSION: bad_version,
    }
    for reason, raw in cases.items():
        with pytest.raises(p.ProtocolError) as info:
            p.decode_frame(raw)
        assert info.value.reason == reason
    # an oversized length field is refused from the header alone, without waiting for the payload
    head = p._HEADER.pack(p.SYNC, 1, p.CMD_PING, 1, 0, 0, p.MAX_PAYLOAD + 1)
    out = p.FrameDecoder().feed(head + struct.pack(">H", p.crc16(head)))
    assert any(isinstance(r, p.Rejected) and r.reason == p.REJECT_LENGTH for r in out)


def test_encode_rejects_out_of_range_fields():
    for kwargs in ({"code": 0x55, "seq": 1}, {"code": 1, "seq": -1}, {"code": 1, "seq": 70000}, {"code": 1, "seq": 1, "status": 256}):
        with pytest.raises(ValueError):
            p.encode_frame(**kwargs)
    with pytest.raises(ValueError):
        p.encode_frame(1, 1, b"\x00" * (p.MAX_PAYLOAD + 1))


finite = st.floats(-1.0, 1.0, allow_nan=False, width=32)


@given(n=st.integers(1, 12), data=st.data())
def test_program_round_trip(n, data):
    row0 = data.draw(st.integers(0, n - 1))
    k = data.draw(st.integers(1, n - row0))
    rows = np.array(data.draw(st.lists(finite, min_size=k * n, max_size=k * n)), dtype=np.float64).reshape(k, n)
    n2, r2, rows2 = p.unpack_program(p.pack_program(n, row0, rows))
    assert (n2, r2) == (n, row0)
    np.testing.assert_array_equal(rows2, rows)


@given(n=st.integers(1, 10), m=st.integers(1, 4), data=st.data())
def test_solve_round_trip(n, m, data):
    rhs = np.array(data.draw(st.lists(finite, min_size=n * m, max_size=n * m))).reshape(n, m)
    ranges = np.array(data.draw(st.lists(st.floats(0.0625, 1e4, width=32), min_size=m, max_size=m)))
    rhs2, ranges2, t = p.unpack_solve(p.pack_solve(rhs, ranges, 0.01))
    np.testing.assert_array_equal(rhs2, rhs)
    np.testing.assert_array_equal(ranges2, ranges)
    assert t == pytest.approx(0.01)
    y = np.array(data.draw(st.lists(st.floats(-1e4, 1e4, width=32), min_size=n * m, max_size=n * m))).reshape(n, m)
    r = p.SolveResult(n, m, 0xDEADBEEF, 1e-5, 2e-5, 3e-6, 42.0, 3, y)
    r2 = p.unpack_solve_response(p.pack_solve_response(r))
    assert (r2.n, r2.m, r2.codes_crc, r2.saturated, r2.device_time_s) == (n, m, 0xDEADBEEF, 3, 42.0)
    np.testing.assert_array_equal(r2.y, y)


def test_other_payload_round_trips():
    info = p.DeviceInfo(1, 64, 8, 12, 2, 3, 12.5, 0.9)
    assert p.unpack_ping_response(p.pack_ping_response(info)) == info
    pr = p.ProgramResult(33, 33, 123, 2, 1e-3, 2e-6, 5.0)
    got = p.unpack_program_response(p.pack_program_response(pr))
    assert (got.n, got.rows_received, got.codes_crc, got.failed_cells, got.device_time_s) == (33, 33, 123, 2, 5.0)
    cal = p.unpack_calibrate_response(p.pack_calibrate_response(p.CalibrationResult(0.75, 5700.0, 1e-4, 1e-9, 6000.0)))
    assert cal.gain == pytest.approx(0.75) and cal.reference_age_s == 5700.0
    cost = p.unpack_cost_response(p.pack_cost_response(p.CostResult(1e-3, 2e-9, 7.0, 4)))
    assert cost.boot_count == 4 and cost.device_time_s == 7.0
    assert p.unpack_time(p.pack_time(123.25)) == 123.25


def test_malformed_payloads_rejected_with_reason():
    good = p.pack_solve(np.zeros((3, 2)), 1.0, 0.01)
    for bad in (good[:-1], good + b"\x00", good[:4]):
        with pytest.raises(p.ProtocolError) as info:
            p.unpack_solve(bad)
        assert info.value.reason
    nan = bytearray(good)
    nan[-4:] = struct.pack(">f", float("nan"))
    with pytest.raises(p.ProtocolError, match="non-finite"):
        p.unpack_solve(bytes(nan))
    big = bytearray(p.pack_program(2, 0, np.zeros((1, 2))))
    big[-4:] = struct.pack(">f", 2.0)
    with pytest.raises(p.ProtocolError, match="out of range"):
        p.unpack_program(bytes(big))
    with pytest.raises(p.ProtocolError):
        p.unpack_program(struct.pack(">HHH", 4, 3, 2))  # rows beyond n
    with pytest.raises(ValueError):
        p.pack_program(2, 0, np.full((1, 2), 1.5))
    with pytest.raises(ValueError):
        p.pack_solve(np.zeros((2, 1)), -1.0, 0.01)
