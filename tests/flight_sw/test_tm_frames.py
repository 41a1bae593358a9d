"""Onboard TM framing (flight_sw.tmtc.tm_frames) against CCSDS 132.0-B and 131.0-B.

Golden frames below were derived by hand from the standard's field definitions (section
numbers beside each field); their FECF is checked against two CRC implementations that
share no code with `fecf` (fastcrc, which spacepackets uses to check TM frames, and a
bit-serial CRC written from §4.1.6.2), and the frames are parsed back with spacepackets.
"""

import fastcrc
import pytest
from spacepackets.ccsds.spacepacket import PacketType, SpacePacket, SpacePacketHeader
from spacepackets.ccsds.tm_frame import TmFramePrimaryHeader, TmTransferFrame

from flight_sw.tmtc.tm_frames import (
    ASM,
    FHP_IDLE,
    FHP_NO_PACKET_START,
    IDLE_APID,
    VC_EVENTS,
    VC_HK,
    VC_IDLE,
    VC_PLAYBACK,
    TmDownlink,
    buffer_bytes,
    fecf,
    packet_length,
)

CLCW = bytes.fromhex("0104002A")  # 232.0-B §4.2: COP-1 in effect, VC 1, report value 42


def crc16_from_text(data: bytes) -> int:
    """132.0-B §4.1.6.2: G(X) = X^16 + X^12 + X^5 + 1, shift register preset to all ones."""
    reg = 0xFFFF
    for octet in data:
        for bit in range(7, -1, -1):
            feedback = ((reg >> 15) ^ (octet >> bit)) & 1
            reg = (reg << 1) & 0xFFFF
            if feedback:
                reg ^= 0x1021
    return reg


def space_packet(apid: int, seq: int, data: bytes) -> bytes:
    header = SpacePacketHeader(PacketType.TM, apid=apid, seq_count=seq, data_len=len(data) - 1)
    return SpacePacket(header, None, data).pack()


def run(downlink: TmDownlink, frames: int) -> list[bytes]:
    out: list[bytes] = []
    downlink.send(frames, lambda view: out.append(bytes(view)))
    return out


def header(cadu: bytes) -> TmFramePrimaryHeader:
    return TmFramePrimaryHeader.unpack(cadu[len(ASM) :])


# --- CRC ---------------------------------------------------------------------------------


def test_fecf_matches_check_value_and_independent_crcs():
    # Check value of CRC-16/IBM-3740 (= CCITT-FALSE, the 132.0-B FECF) in the RevEng
    # catalogue of parametrised CRC algorithms: 0x29B1 for "123456789".
    assert fecf(b"123456789") == crc16_from_text(b"123456789") == 0x29B1
    frame = bytes(range(256)) * 4
    assert fecf(frame) == crc16_from_text(frame) == fastcrc.crc16.ibm_3740(frame)


def test_fecf_reproduces_spacepackets_test_vectors():
    # spacepackets-py tests/ccsds/test_tm_frame.py (us-irs/spacepackets-py @ b9c6bb1):
    # test_pack_unpack_transfer_frame_no_sec_header_ocf_fefc gives FECF 0x60AD and
    # test_unpack_transfer_frame_invalid_fefc notes "actual is \x81\x4a".
    assert fecf(bytes.fromhex("003F00001FFE00010210000000")) == 0x60AD
    assert fecf(bytes.fromhex("003F00001FFE0000010201000000")) == 0x814A


# --- golden frames -----------------------------------------------------------------------

# SCID 0x1AB, VC 1, OCF present, 32-octet frames (data field 20 octets), one 9-octet packet.
GOLDEN_PACKET = bytes.fromhex("0123C0050002AABBCC")  # APID 0x123, seq 5, 3 data octets
GOLDEN_FRAME_0 = bytes.fromhex(
    "1ACFFC1D"  # ASM (131.0-B §9)
    "1AB3"  # TFVN '00' §4.1.2.2.2, SCID 0x1AB §4.1.2.2.3, VCID 1 §4.1.2.3, OCF flag 1 §4.1.2.4
    "00"  # master channel frame count §4.1.2.5
    "00"  # virtual channel frame count §4.1.2.6
    "1800"  # data field status §4.1.2.7: no secondary header, sync '0', order '0',
    #       segment length id '11' (§4.1.2.7.5), first header pointer 0 (§4.1.2.7.6)
    "0123C0050002AABBCC"  # the packet, data field §4.1.4
    "07FFC00000045555555555"  # idle packet (APID all ones, 133.0-B) filling the data field
    "0104002A"  # operational control field: the CLCW §4.1.5
    "04FB"  # FECF §4.1.6
)
GOLDEN_FRAME_1 = bytes.fromhex(
    "1ACFFC1D"
    "1ABF"  # VCID 7 (idle), OCF flag 1
    "01"  # master channel count 1
    "00"  # VC 7's first frame
    "1FFE"  # first header pointer '11111111110': only idle data (§4.1.2.7.6)
    + "55" * 20
    + "0104002A"
    "8979"
)


def test_golden_frames():
    downlink = TmDownlink(0x1AB, 32, lambda: CLCW)
    assert downlink.push(VC_EVENTS, GOLDEN_PACKET)
    assert run(downlink, 2) == [GOLDEN_FRAME_0, GOLDEN_FRAME_1]


@pytest.mark.parametrize("cadu", [GOLDEN_FRAME_0, GOLDEN_FRAME_1])
def test_golden_fecf_by_independent_crcs(cadu):
    frame = cadu[len(ASM) :]
    expected = int.from_bytes(frame[-2:], "big")
    assert crc16_from_text(frame[:-2]) == fastcrc.crc16.ibm_3740(frame[:-2]) == expected


def test_golden_frame_parses_with_spacepackets():
    parsed = TmTransferFrame.unpack(GOLDEN_FRAME_0[len(ASM) :], 32, True)  # checks the CRC
    h = parsed.primary_header
    assert (h.master_channel_id.transfer_frame_version, h.master_channel_id.spacecraft_id) == (0, 0x1AB)
    assert (h.vc_id, h.ocf_flag, h.master_ch_frame_count, h.vc_frame_count) == (1, True, 0, 0)
    s = h.frame_datafield_status
    assert (s.secondary_header_flag, s.sync_flag, s.packet_order_flag) == (False, False, False)
    assert (s.segment_len_id, s.first_header_pointer) == (0b11, 0)
    assert parsed.data_field[: len(GOLDEN_PACKET)] == GOLDEN_PACKET
    assert parsed.op_ctrl_field == CLCW


def test_without_clcw_there_is_no_ocf():
    downlink = TmDownlink(5, 64, None)
    (cadu,) = run(downlink, 1)
    assert len(cadu) == 4 + 64 and not header(cadu).ocf_flag
    parsed = TmTransferFrame.unpack(cadu[4:], 64, True)
    assert parsed.op_ctrl_field is None and len(parsed.data_field) == 64 - 8


# --- counters, pointers, OCF --------------------------------------------------------------


def test_counters_wrap_at_256_per_master_and_virtual_channel():
    downlink = TmDownlink(1, 64, lambda: CLCW)
    cadus = []
    for i in range(600):
        downlink.push(VC_HK if i % 3 else VC_EVENTS, space_packet(0x10, i, bytes(40)))
        cadus += run(downlink, 1)
    heads = [header(c) for c in cadus]
    assert [h.master_ch_frame_count for h in heads] == [i % 256 for i in range(600)]
    for vc in (VC_HK, VC_EVENTS):
        counts = [h.vc_frame_count for h in heads if h.vc_id == vc]
        assert counts == [i % 256 for i in range(len(counts))]


def test_packet_spanning_frames_and_first_header_pointer():
    downlink = TmDownlink(1, 32, lambda: CLCW)  # 20-octet data fields
    big = space_packet(0x20, 0, bytes(range(39)))  # 45 octets: 20 + 20 + 5
    small = space_packet(0x21, 1, b"xyz")  # 9 octets
    downlink.push(VC_HK, big)
    downlink.push(VC_HK, small)
    frames = run(downlink, 3)
    assert [header(c).frame_datafield_status.first_header_pointer for c in frames] == [
        0, FHP_NO_PACKET_START, 5]
    # 20 - 5 - 9 = 6 octets left: too few for an idle packet, which spills into the next frame.
    assert frames[2][4 + 6 + 14 : 4 + 6 + 20] == bytes.fromhex("07FFC0000000")
    downlink.push(VC_HK, small)
    (nxt,) = run(downlink, 1)
    assert header(nxt).frame_datafield_status.first_header_pointer == 1
    assert nxt[4 + 6] == 0x55 and nxt[4 + 7 : 4 + 16] == small
    stream = b"".join(c[4 + 6 : 4 + 26] for c in [*frames, nxt])
    assert stream[:45] == big and stream[45:54] == small


def test_idle_frames_when_nothing_is_pending():
    downlink = TmDownlink(7, 256, lambda: CLCW)
    frames = run(downlink, 3)
    for cadu in frames:
        h = header(cadu)
        assert h.vc_id == VC_IDLE
        assert h.frame_datafield_status.first_header_pointer == FHP_IDLE
        assert set(cadu[10 : 4 + 256 - 6]) == {0x55}
    assert downlink.idle_frames == 3
    assert downlink.send(3, lambda v: None, fill_idle=False) == 0 and downlink.frames_sent == 3


def test_ocf_carries_the_clcw_of_the_moment():
    words = iter(range(1000))
    downlink = TmDownlink(7, 128, lambda: next(words).to_bytes(4, "big"))
    downlink.push(VC_HK, space_packet(1, 0, bytes(300)))
    frames = run(downlink, 5)
    assert [int.from_bytes(c[-6:-2], "big") for c in frames] == [0, 1, 2, 3, 4]


def test_priority_events_then_housekeeping_then_playback():
    downlink = TmDownlink(7, 128, lambda: CLCW)
    downlink.push(VC_PLAYBACK, space_packet(3, 0, bytes(10)))
    downlink.push(VC_HK, space_packet(2, 0, bytes(10)))
    downlink.push(VC_EVENTS, space_packet(1, 0, bytes(10)))
    assert [header(c).vc_id for c in run(downlink, 5)] == [VC_EVENTS, VC_HK, VC_PLAYBACK,
                                                           VC_IDLE, VC_IDLE]


def test_idle_packets_fill_a_partly_used_frame():
    downlink = TmDownlink(7, 128, lambda: CLCW)
    pkt = space_packet(9, 0, bytes(50))
    downlink.push(VC_HK, pkt)
    (cadu,) = run(downlink, 1)
    fill = cadu[10 + len(pkt) : 4 + 128 - 6]
    assert fill[:2] == bytes([0x07, 0xFF]) and packet_length(fill) == len(fill)
    assert (fill[0] & 7) << 8 | fill[1] == IDLE_APID


# --- limits and errors --------------------------------------------------------------------


def test_full_ring_refuses_and_counts():
    downlink = TmDownlink(7, 128, lambda: CLCW, channels=((VC_HK, 100),))
    pkt = space_packet(9, 0, bytes(40))
    assert downlink.push(VC_HK, pkt) and downlink.push(VC_HK, pkt)
    assert not downlink.push(VC_HK, pkt)
    assert downlink.queues[0].refused == 1


def test_ring_wraps_without_corrupting_packets():
    downlink = TmDownlink(7, 64, lambda: CLCW, channels=((VC_HK, 97),))
    sent = []
    stream = bytearray()
    for i in range(200):
        pkt = space_packet(5, i, bytes([i & 0xFF]) * (1 + i % 37))
        if downlink.push(VC_HK, pkt):
            sent.append(pkt)
        for cadu in run(downlink, 1):
            if header(cadu).vc_id == VC_HK:
                stream += cadu[10 : 4 + 64 - 6]
    got, pos = [], 0
    while pos + 6 <= len(stream):
        n = packet_length(stream[pos : pos + 6])
        if (stream[pos] & 7) << 8 | stream[pos + 1] != IDLE_APID and pos + n <= len(stream):
            got.append(bytes(stream[pos : pos + n]))
        pos += n
    assert got == sent[: len(got)] and len(got) >= len(sent) - 3


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"spacecraft_id": 1024}, "spacecraft_id"),
    ({"frame_bytes": 2049}, "frame_bytes"),
    ({"frame_bytes": 18}, "frame_bytes"),
    ({"channels": ((8, 100),)}, "virtual channel id"),
    ({"channels": ((1, 100), (1, 100))}, "distinct"),
    ({"channels": ((7, 100),)}, "distinct"),
    ({"channels": ((1, 3),)}, "capacity_bytes"),
])
def test_constructor_refuses_bad_fields(kwargs, field):
    args = {"spacecraft_id": 1, "frame_bytes": 128, "clcw": lambda: CLCW, **kwargs}
    with pytest.raises(ValueError, match=field):
        TmDownlink(**args)


def test_largest_frame_is_accepted():
    """2048 octets is legal (132.0-B §4.1.1); spacepackets' TmTransferFrame refuses it."""
    downlink = TmDownlink(1, 2048, lambda: CLCW)
    (cadu,) = run(downlink, 1)
    assert len(cadu) == 4 + 2048 and fecf(cadu[4:]) == 0
    with pytest.raises(ValueError):
        TmTransferFrame.unpack(cadu[4:], 2048, True)


def test_push_refuses_malformed_packets():
    downlink = TmDownlink(1, 128, lambda: CLCW)
    with pytest.raises(ValueError, match="packet length"):
        downlink.push(VC_HK, bytes(6))  # a space packet has at least one data octet
    with pytest.raises(ValueError, match="data length field"):
        downlink.push(VC_HK, space_packet(1, 0, bytes(10)) + b"\x00")
    with pytest.raises(ValueError, match="vcid"):
        downlink.push(VC_IDLE, space_packet(1, 0, bytes(10)))


def test_clcw_of_wrong_size_is_refused():
    downlink = TmDownlink(1, 128, lambda: b"\x00\x00\x00")
    with pytest.raises(ValueError, match="clcw must be 4 octets"):
        run(downlink, 1)


# --- memory and determinism ---------------------------------------------------------------


def test_memory_is_fixed_and_matches_the_plan():
    downlink = TmDownlink(1, 1115, lambda: CLCW)
    plan = buffer_bytes(1115)
    assert plan["frame"] == 4 + 1115 and plan["idle_pattern"] == 1115 - 12
    assert downlink.memory_bytes == sum(plan.values())
    views = []
    for i in range(50):
        downlink.push(VC_PLAYBACK, space_packet(3, i, bytes(700)))
        downlink.send(2, views.append)
    assert all(v.obj is views[0].obj for v in views)  # one frame buffer, reused
    assert downlink.memory_bytes == sum(plan.values())


def test_same_inputs_same_octets():
    def once():
        downlink = TmDownlink(42, 256, lambda: CLCW)
        out = []
        for i in range(40):
            downlink.push((VC_HK, VC_EVENTS, VC_PLAYBACK)[i % 3], space_packet(i, i, bytes(i * 7 + 1)))
            out += run(downlink, 2)
        return out

    assert once() == once()


def test_spacepackets_quirks_that_the_framer_works_around():
    """If one of these starts failing, spacepackets fixed it and the workaround can go."""
    from spacepackets.ccsds.tm_frame import MasterChannelId, TransferFrameDataFieldStatus

    status = TransferFrameDataFieldStatus(False, False, False, 0b11, 0)
    vc8 = TmFramePrimaryHeader(MasterChannelId(0, 0x100), 8, False, 0, 0, status).pack()
    parsed = TmFramePrimaryHeader.unpack(vc8)
    assert (parsed.master_channel_id.spacecraft_id, parsed.vc_id) == (0x101, 0)  # no range check
    # unpack takes the FECF and OCF from the end of the buffer, not of the frame:
    two = b"".join(run(TmDownlink(1, 64, lambda: CLCW), 2))
    frame = TmTransferFrame.unpack(two[4:], 64, True)
    assert len(frame.data_field) != 64 - 12 and frame.frame_error_control != two[4 + 62 : 4 + 64]
