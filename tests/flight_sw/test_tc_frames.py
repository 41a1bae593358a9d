"""TC Transfer Frames (CCSDS 232.0-B 4.1): golden vectors, refusals, never-raise decoding."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight_sw.tmtc.tc_frames import (
    MAX_FRAME_LEN,
    SEQ_LAST,
    SEQ_UNSEGMENTED,
    FrameType,
    TcFrame,
    crc16,
    decode_tc_frame,
    parse_control_command,
    set_vr_command,
)

# Golden frames from yamcs, yamcs-core/src/test/java/org/yamcs/tctm/ccsds/error/
# BchCltuGeneratorTest.java (TC_FRAME_01/02, copied there from SpacePyLibrary
# UnitTest/testData.py, which lists the decoded header fields: SCID 758, VC 0, bypass 1,
# length fields 255 and 35, sequence number 0).
TC_FRAME_01 = bytes(
    [0x22, 0xF6, 0x00, 0xFF, 0x00, 0x42, 0x1A, 0x8C, 0xC0, 0x0E, 0x01, 0x0D, 0x19, 0x06,
     0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xFF, 0x00,
     0x00, 0x00, 0x00, 0x0F]
    + sum(([0x00, i, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x0F] for i in range(1, 0x1C)), [])
    + [0x00, 0x1C, 0xFF, 0x00, 0x00, 0x00, 0xAD, 0x1A]
)
TC_FRAME_02 = bytes([
    0x22, 0xF6, 0x00, 0x23, 0x00, 0x82, 0x00, 0x0F, 0x00, 0x1D, 0xFF, 0x00, 0x00, 0x00,
    0x00, 0x0F, 0x00, 0x1E, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x0F, 0x00, 0x1F, 0xFF, 0x00,
    0x00, 0x00, 0x00, 0x0F, 0xAC, 0x8F, 0x00, 0x68,
])
SCID = 758


def test_golden_frames_unpack_to_the_published_fields():
    f1 = TcFrame.unpack(TC_FRAME_01, segment_header=True)
    f2 = TcFrame.unpack(TC_FRAME_02, segment_header=True)
    assert len(TC_FRAME_01) == 256
    for f in (f1, f2):
        assert (f.spacecraft_id, f.virtual_channel_id, f.frame_sequence_number) == (758, 0, 0)
        assert f.bypass and not f.control_command and f.frame_type is FrameType.BD
        assert f.map_id == 2
    assert f1.sequence_flags == 1 and f2.sequence_flags == SEQ_LAST
    assert f1.data[:2] == b"\x1a\x8c"  # the TC space packet that starts in the frame
    assert f1.pack() == TC_FRAME_01 and f2.pack() == TC_FRAME_02


def test_crc16_golden_values():
    # FECFs of the golden frames above (0xAD1A, 0x0068).
    assert crc16(TC_FRAME_01[:-2]) == 0xAD1A
    assert crc16(TC_FRAME_02[:-2]) == 0x0068
    # yamcs CrcCciitCalculatorTest.java (same polynomial and preset): 0x75FB.
    data = bytes([6, 0, 0x0C, 0xF0, 0, 4, 0, 0x55, 0x88, 0x73, 0xC9, 0, 0, 5, 0x21])
    assert crc16(data) == 0x75FB
    # CRC-16/IBM-3740 (a.k.a. CCITT-FALSE) catalogue check value of "123456789".
    assert crc16(b"123456789") == 0x29B1


def test_pack_layout_by_hand():
    frame = TcFrame(spacecraft_id=0x2AB, virtual_channel_id=5, frame_sequence_number=0x7F,
                    data=b"\x01\x02")
    raw = frame.pack()
    assert raw[:5] == bytes([0x02, 0xAB, 5 << 2, 0x08, 0x7F])  # length field 8 = 9 - 1
    assert len(raw) == 9 and raw[-2:] == crc16(raw[:-2]).to_bytes(2, "big")
    assert TcFrame.unpack(raw) == frame


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"spacecraft_id": 1024}, "spacecraft_id"),
        ({"virtual_channel_id": 64}, "virtual_channel_id"),
        ({"frame_sequence_number": 256}, "frame_sequence_number"),
        ({"map_id": 64}, "map_id"),
        ({"sequence_flags": 4, "map_id": 0}, "sequence_flags"),
        ({"data": b""}, "data"),
        ({"data": bytes(MAX_FRAME_LEN - 6)}, "data"),
        ({"control_command": True}, "control_command"),
        ({"control_command": True, "bypass": True, "map_id": 1}, "map_id"),
    ],
)
def test_out_of_range_fields_name_the_field(kwargs, field):
    args = {"spacecraft_id": 1, "virtual_channel_id": 0, "frame_sequence_number": 0,
            "data": b"x"} | kwargs
    with pytest.raises(ValueError, match=field):
        TcFrame(**args)


def test_largest_frame_is_1024_octets():
    frame = TcFrame(spacecraft_id=1, virtual_channel_id=0, frame_sequence_number=0,
                    data=bytes(MAX_FRAME_LEN - 7))
    assert len(frame.pack()) == MAX_FRAME_LEN
    assert TcFrame.unpack(frame.pack()) == frame


def _good(**kw):
    args = {"spacecraft_id": SCID, "virtual_channel_id": 1, "frame_sequence_number": 9,
            "data": b"hello"} | kw
    return TcFrame(**args).pack()


def _refit(raw: bytearray) -> bytes:
    body = bytes(raw[:-2])
    return body + crc16(body).to_bytes(2, "big")


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda r: _refit(bytearray([r[0] | 0x40]) + r[1:]), "version"),
        (lambda r: _refit(bytearray([r[0] | 0x04]) + r[1:]), "spare"),
        (lambda r: _refit(bytearray([r[0] | 0x10]) + r[1:]), "control command flag"),
        (lambda r: _refit(r[:3] + bytearray([r[3] + 1]) + r[4:]), "frame length"),
        (lambda r: r[:-1] + bytes([r[-1] ^ 1]), "frame error control"),
        (lambda r: r[:-3] + r[-2:], "frame length"),
        (lambda r: _refit(bytearray([r[0] ^ 0x01]) + r[1:]), "spacecraft_id"),
        (lambda r: _refit(r[:2] + bytearray([r[2] ^ 0x08]) + r[3:]), "virtual_channel_id"),
        (lambda r: r[:4], "shorter"),
        (lambda r: r + bytes(MAX_FRAME_LEN), "at most"),
    ],
)
def test_decode_refuses_with_a_specific_reason(mutate, reason):
    raw = mutate(bytearray(_good()))
    frame, why = decode_tc_frame(bytes(raw), spacecraft_id=SCID, virtual_channel_ids=frozenset({1}))
    assert frame is None and reason in why


def test_decode_accepts_and_uses_the_vc_segment_header_option():
    raw = _good(map_id=3)
    frame, why = decode_tc_frame(raw, spacecraft_id=SCID, segment_header_vcids=frozenset({1}))
    assert why == "ok" and frame.map_id == 3 and frame.data == b"hello"
    frame, _ = decode_tc_frame(raw, spacecraft_id=SCID)
    assert frame.map_id is None and frame.data == bytes([SEQ_UNSEGMENTED << 6 | 3]) + b"hello"


def test_control_commands():
    # 232.1-B 4.1.3 / 232.0-B 4.1.3.3: Unlock 0x00, Set V(R) 0x82 0x00 V*(R).
    assert parse_control_command(b"\x00") == ("unlock", 0)
    assert set_vr_command(0xA5) == b"\x82\x00\xa5"
    assert parse_control_command(b"\x82\x00\xa5") == ("set_vr", 0xA5)
    for bad in (b"\x01", b"\x82\x01\x00", b"\x82\x00", b"\x00\x00"):
        assert parse_control_command(bad) is None
    with pytest.raises(ValueError, match="v_r"):
        set_vr_command(256)
    bc = TcFrame(spacecraft_id=SCID, virtual_channel_id=1, frame_sequence_number=0,
                 data=b"\x00", bypass=True, control_command=True)
    # A BC frame never carries a segment header, even on a VC that uses one.
    frame, why = decode_tc_frame(bc.pack(), spacecraft_id=SCID,
                                 segment_header_vcids=frozenset({1}))
    assert frame == bc and frame.frame_type is FrameType.BC


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1100))
def test_decode_never_raises_on_arbitrary_bytes(raw):
    frame, why = decode_tc_frame(raw, spacecraft_id=SCID, segment_header_vcids=frozenset({0}))
    assert (frame is None) == (why != "ok")
    if frame is not None:
        assert frame.pack() == raw


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_good_frames_are_refused_or_identical(data):
    raw = bytearray(_good(frame_sequence_number=data.draw(st.integers(0, 255))))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    frame, why = decode_tc_frame(bytes(raw), spacecraft_id=SCID)
    assert frame is None or frame.pack() == bytes(raw)
