"""Ground TM frame decoding (ground_tools.tm_frames) against the onboard framer and hand-made frames.

The loss tests compute the packets that must survive without the decoder: each VC's data
fields are concatenated, packets are cut from that stream by their length fields, and a
packet survives exactly when none of the frames it touches was lost.

Bit errors inside frames are limited to three per frame or one burst of at most 16 bits:
the FECF polynomial X^16+X^12+X^5+1 = (X+1)p(X), p primitive of degree 15, detects every
such pattern in frames up to 32751 data bits (all frames here, 2048 octets at most). Beyond
that the CRC misses one corrupted frame in 65536, which no decoder can see.
"""

import fastcrc
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacepackets.ccsds.spacepacket import PacketType, SpacePacket, SpacePacketHeader
from spacepackets.ccsds.tm_frame import (
    MasterChannelId,
    TmFramePrimaryHeader,
    TmTransferFrame,
    TransferFrameDataFieldStatus,
)

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
    packet_length,
)
from ground_tools.tm_frames import TmFrameDecoder, decode_tm_stream

SCID = 0x2C5
CLCW = bytes.fromhex("01040000")
BIG_RINGS = ((VC_EVENTS, 1 << 18), (VC_HK, 1 << 18), (VC_PLAYBACK, 1 << 18))
VCS = (VC_HK, VC_EVENTS, VC_PLAYBACK)


def space_packet(apid: int, seq: int, data: bytes) -> bytes:
    header = SpacePacketHeader(PacketType.TM, apid=apid, seq_count=seq, data_len=len(data) - 1)
    return SpacePacket(header, None, data).pack()


def random_packets(rng: np.random.Generator, n: int) -> list[tuple[int, bytes]]:
    """n packets of 7..1200 octets on random VCs (a space packet has at least 7 octets)."""
    out = []
    for i in range(n):
        size = int(rng.integers(7, 1201))
        data = rng.integers(0, 256, size - 6, dtype=np.uint8).tobytes()
        out.append((VCS[int(rng.integers(3))], space_packet(int(rng.integers(0, 0x7FF)), i, data)))
    return out


def transmit(items, frame_bytes: int, frames_per_push, clcw=lambda: CLCW) -> list[bytes]:
    """Frames (ASM included) for `items`, pushed one by one with a budget after each; drained."""
    downlink = TmDownlink(SCID, frame_bytes, clcw, channels=BIG_RINGS)
    cadus: list[bytes] = []
    for (vc, pkt), budget in zip(items, frames_per_push, strict=True):
        assert downlink.push(vc, pkt)
        downlink.send(budget, lambda v: cadus.append(bytes(v)))
    while any(q.pending_bytes for q in downlink.queues):
        downlink.send(1, lambda v: cadus.append(bytes(v)))
    downlink.send(2, lambda v: cadus.append(bytes(v)))  # idle frames close the pass
    return cadus


def by_vc(items) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for vc, pkt in items:
        out.setdefault(vc, []).append(pkt)
    return out


def survivors(cadus: list[bytes], frame_bytes: int, lost: set[int]) -> dict[int, list[bytes]]:
    """Packets touching no lost frame, found without the decoder (see the module docstring)."""
    streams: dict[int, tuple[bytearray, list[int]]] = {}
    for i, cadu in enumerate(cadus):
        h = TmFramePrimaryHeader.unpack(cadu[4:])
        if h.frame_datafield_status.first_header_pointer == FHP_IDLE:
            continue
        data, owner = streams.setdefault(h.vc_id, (bytearray(), []))
        field = cadu[4 + 6 : 4 + frame_bytes - 6]
        data += field
        owner += [i] * len(field)
    out: dict[int, list[bytes]] = {}
    for vc, (data, owner) in streams.items():
        pos = 0
        while pos + 6 <= len(data) and pos + packet_length(data[pos : pos + 6]) <= len(data):
            n = packet_length(data[pos : pos + 6])
            apid = (data[pos] & 7) << 8 | data[pos + 1]
            if apid != IDLE_APID and not lost & set(owner[pos : pos + n]):
                out.setdefault(vc, []).append(bytes(data[pos : pos + n]))
            pos += n
    return out


def flip_bits(cadu: bytes, rng: np.random.Generator) -> bytes:
    """1..3 bit errors anywhere in the ASM and frame, or one burst of at most 16 bits."""
    out = bytearray(cadu)
    if rng.random() < 0.5:
        for bit in rng.choice(8 * len(out), int(rng.integers(1, 4)), replace=False):
            out[bit // 8] ^= 0x80 >> (bit % 8)
    else:
        start = int(rng.integers(0, 8 * len(out) - 16))
        burst = int(rng.integers(1, 1 << 16)) | 1
        for k in range(16):
            if burst >> k & 1:
                out[(start + k) // 8] ^= 0x80 >> ((start + k) % 8)
    return bytes(out)


def idle_packet(size: int) -> bytes:
    return space_packet(IDLE_APID, 0, bytes(size - 6))


def hand_frame(vc: int, mc: int, vcc: int, fhp: int, data: bytes, length: int = 64,
               scid: int = SCID, sync: bool = False) -> bytes:
    """A frame built with spacepackets and an FECF from fastcrc: nothing from flight_sw."""
    status = TransferFrameDataFieldStatus(False, sync, False, 0b11, fhp)
    header = TmFramePrimaryHeader(MasterChannelId(0, scid), vc, True, mc, vcc, status)
    body = header.pack() + data.ljust(length - 12, b"\x55") + CLCW
    fecf = fastcrc.crc16.ibm_3740(body).to_bytes(2, "big")
    frame = TmTransferFrame(length, header, None, body[6:-4], CLCW, fecf).pack()
    return ASM + frame


# --- round trip ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), frame_bytes=st.sampled_from([256, 1115]),
       budgets=st.lists(st.integers(0, 4), min_size=60, max_size=60))
def test_round_trip_is_exact_per_vc(seed, n, frame_bytes, budgets):
    items = random_packets(np.random.default_rng(seed), n)
    cadus = transmit(items, frame_bytes, budgets[:n])
    result = decode_tm_stream(b"".join(cadus), frame_bytes, SCID)
    assert result.packets == by_vc(items)
    s = result.stats
    assert (s.frames, s.bad_crc, s.frames_lost, s.gaps, s.packets_dropped, s.inconsistent) == (
        len(cadus), 0, 0, 0, 0, 0)
    assert s.packets == n and s.bytes_skipped == 0
    assert s.idle_frames == sum(
        TmFramePrimaryHeader.unpack(c[4:]).frame_datafield_status.first_header_pointer == FHP_IDLE
        for c in cadus)
    assert result.last_clcw == CLCW


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 10**6), max_size=20))
def test_feeding_in_pieces_gives_the_same_packets(seed, cuts):
    items = random_packets(np.random.default_rng(seed), 20)
    stream = b"".join(transmit(items, 256, [1] * 20))
    dec = TmFrameDecoder(256, SCID)
    got: dict[int, list[bytes]] = {}
    edges = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for a, b in zip(edges, edges[1:], strict=False):
        for vc, pkts in dec.feed(stream[a:b]).items():
            got.setdefault(vc, []).extend(pkts)
    assert not dec.flush()
    assert got == by_vc(items)


def test_master_channel_count_wraps_without_false_gaps():
    rng = np.random.default_rng(3)
    items = random_packets(rng, 400)
    cadus = transmit(items, 256, [0] * 400)
    assert len(cadus) > 600
    result = decode_tm_stream(b"".join(cadus), 256, SCID)
    assert result.packets == by_vc(items) and result.stats.frames_lost == 0


# --- lost and damaged frames --------------------------------------------------------------


def lossy_case(seed: int, frame_bytes: int):
    rng = np.random.default_rng(seed)
    items = random_packets(rng, 120)
    cadus = transmit(items, frame_bytes, rng.integers(0, 3, 120).tolist())
    middle = np.arange(1, len(cadus) - 1)  # the first and last frames bound what counts can show
    lost = {int(i) for i in rng.choice(middle, len(middle) // 8, replace=False)}
    return rng, cadus, lost


def test_dropped_frames_lose_only_the_packets_touching_them():
    for seed, frame_bytes in [(1, 256), (2, 1115), (3, 256), (4, 1115), (5, 256)]:
        _, cadus, lost = lossy_case(seed, frame_bytes)
        kept = b"".join(c for i, c in enumerate(cadus) if i not in lost)
        result = decode_tm_stream(kept, frame_bytes, SCID)
        expected = survivors(cadus, frame_bytes, lost)
        assert result.packets == expected, seed
        assert result.stats.frames_lost == len(lost)
        assert result.stats.bad_crc == 0 and result.stats.inconsistent == 0
        assert result.stats.packets == sum(map(len, expected.values()))
        sent = sum(len(v) for v in survivors(cadus, frame_bytes, set()).values())
        assert result.stats.packets_dropped <= sent - result.stats.packets


def test_bit_errors_lose_the_damaged_frames_and_corrupt_nothing():
    for seed, frame_bytes in [(11, 256), (12, 1115), (13, 256), (14, 1115)]:
        rng, cadus, damaged = lossy_case(seed, frame_bytes)
        stream = b"".join(flip_bits(c, rng) if i in damaged else c for i, c in enumerate(cadus))
        result = decode_tm_stream(stream, frame_bytes, SCID)
        assert result.packets == survivors(cadus, frame_bytes, damaged), seed
        assert result.stats.frames_lost == len(damaged)
        assert result.stats.frames == len(cadus) - len(damaged)


def garbage(rng: np.random.Generator) -> bytes:
    """Noise between frames, salted with whole and partial sync markers."""
    parts = []
    for _ in range(int(rng.integers(0, 4))):
        parts.append(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
        parts.append((ASM, ASM[:3], ASM[:2], b"\x1a")[int(rng.integers(4))])
    return b"".join(parts)


def test_garbage_between_frames_is_skipped():
    for seed, frame_bytes in [(21, 256), (22, 1115), (23, 256)]:
        rng = np.random.default_rng(seed)
        items = random_packets(rng, 80)
        cadus = transmit(items, frame_bytes, rng.integers(0, 3, 80).tolist())
        stream = b"".join(garbage(rng) + c for c in cadus) + garbage(rng)
        result = decode_tm_stream(stream, frame_bytes, SCID)
        assert result.packets == by_vc(items), seed
        assert result.stats.frames == len(cadus) and result.stats.frames_lost == 0
        assert result.stats.bytes_skipped == len(stream) - sum(map(len, cadus))


def test_garbage_and_bit_errors_together():
    for seed in (31, 32, 33):
        rng, cadus, damaged = lossy_case(seed, 256)
        stream = b"".join(garbage(rng) + (flip_bits(c, rng) if i in damaged else c)
                          for i, c in enumerate(cadus))
        result = decode_tm_stream(stream, 256, SCID)
        assert result.packets == survivors(cadus, 256, damaged), seed
        assert result.stats.frames_lost == len(damaged)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash(data):
    for chunk in (data, ASM + data, data + ASM + data):
        dec = TmFrameDecoder(64)
        dec.feed(chunk)
        dec.flush()
        assert dec.stats.frames + dec.stats.bad_crc <= chunk.count(ASM)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), at=st.integers(0, 10**6), junk=st.binary(max_size=600),
       replace=st.booleans())
def test_spliced_junk_never_yields_a_foreign_packet(seed, at, junk, replace):
    items = random_packets(np.random.default_rng(seed), 25)
    stream = b"".join(transmit(items, 256, [1] * 25))
    at %= len(stream)
    stream = stream[:at] + junk + stream[at + (len(junk) if replace else 0) :]
    result = decode_tm_stream(stream, 256, SCID)
    sent = by_vc(items)
    for vc, pkts in result.packets.items():
        it = iter(sent[vc])
        assert all(p in it for p in pkts)  # an ordered sub-sequence: nothing new, nothing twice


# --- hand-made frames: pointers, idle data, OCF, foreign frames ---------------------------


def test_packet_spanning_frames_is_rebuilt_from_hand_made_frames():
    p1 = space_packet(0x11, 0, bytes(range(70)))  # 76 octets over two 52-octet data fields
    p2 = space_packet(0x12, 1, b"abc")
    frames = [hand_frame(VC_HK, 0, 0, 0, p1[:52]),
              hand_frame(VC_HK, 1, 1, 24, p1[52:] + p2 + idle_packet(19))]
    result = decode_tm_stream(b"".join(frames), 64)
    assert result.packets == {VC_HK: [p1, p2]} and result.stats.idle_packets == 1


def test_pointer_disagreeing_with_the_packet_length_drops_the_packet():
    p1 = space_packet(0x11, 0, bytes(range(70)))
    p2 = space_packet(0x12, 1, b"abc")
    frames = [hand_frame(VC_HK, 0, 0, 0, p1[:52]),
              hand_frame(VC_HK, 1, 1, 20, p1[52:72] + p2 + idle_packet(23))]  # p1 needs 24 octets, not 20
    result = decode_tm_stream(b"".join(frames), 64)
    assert result.packets == {VC_HK: [p2]}
    assert (result.stats.inconsistent, result.stats.packets_dropped) == (1, 1)


def test_no_packet_start_while_a_packet_ends_is_inconsistent():
    p1 = space_packet(0x11, 0, bytes(60))
    frames = [hand_frame(VC_HK, 0, 0, 0, p1[:52]),
              hand_frame(VC_HK, 1, 1, FHP_NO_PACKET_START, p1[52:]),
              hand_frame(VC_HK, 2, 2, 60, b"")]  # pointer beyond the data field
    result = decode_tm_stream(b"".join(frames), 64)
    assert result.packets == {} and result.stats.inconsistent == 2


def test_bad_packet_version_is_not_delivered():
    bad = bytearray(space_packet(0x11, 0, bytes(10)))
    bad[0] |= 0x20
    good = space_packet(0x11, 1, bytes(10))
    frames = [hand_frame(VC_HK, 0, 0, 0, bytes(bad)), hand_frame(VC_HK, 1, 1, 0, good + idle_packet(36))]
    result = decode_tm_stream(b"".join(frames), 64)
    assert result.packets == {VC_HK: [good]} and result.stats.inconsistent == 1


def test_idle_frames_carry_the_idle_pointer_and_no_packets():
    cadus = []
    TmDownlink(SCID, 256, lambda: CLCW).send(5, lambda v: cadus.append(bytes(v)))
    for c in cadus:
        h = TmFramePrimaryHeader.unpack(c[4:])
        assert (h.vc_id, h.frame_datafield_status.first_header_pointer) == (VC_IDLE, FHP_IDLE)
    result = decode_tm_stream(b"".join(cadus), 256, SCID)
    assert result.packets == {} and result.stats.idle_frames == 5


def test_last_clcw_is_the_latest_ocf():
    words = iter(range(10**6))
    items = random_packets(np.random.default_rng(7), 10)
    cadus = transmit(items, 256, [1] * 10, clcw=lambda: next(words).to_bytes(4, "big"))
    dec = TmFrameDecoder(256, SCID)
    dec.feed(b"".join(cadus[:3]))
    assert dec.last_clcw == (2).to_bytes(4, "big")
    dec.feed(b"".join(cadus[3:]))
    assert dec.last_clcw == (len(cadus) - 1).to_bytes(4, "big")


def test_foreign_and_duplicate_frames_are_ignored():
    p = space_packet(0x11, 0, bytes(20))
    ours = hand_frame(VC_HK, 0, 0, 0, p)
    frames = [ours, ours, hand_frame(VC_HK, 1, 1, 0, p, scid=SCID + 1),
              hand_frame(VC_HK, 1, 1, 0, p, sync=True)]
    result = decode_tm_stream(b"".join(frames), 64, SCID)
    assert result.packets == {VC_HK: [p]}
    assert (result.stats.duplicate_frames, result.stats.foreign_frames) == (1, 2)


def test_frame_of_2048_octets_decodes():
    items = random_packets(np.random.default_rng(9), 30)
    cadus = transmit(items, 2048, [1] * 30)
    assert decode_tm_stream(b"".join(cadus), 2048, SCID).packets == by_vc(items)
