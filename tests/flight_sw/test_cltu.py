"""CLTU coding (CCSDS 231.0-B): BCH parity, golden CLTUs, randomiser, never-raise decoding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight_sw.tmtc.cltu import (
    RANDOMISER_SEQUENCE,
    TAIL_SEQUENCE,
    bch_parity_octet,
    decode_cltu,
    encode_cltu,
    randomise,
)
from flight_sw.tmtc.tc_frames import TcFrame
from tests.flight_sw.test_tc_frames import TC_FRAME_01, TC_FRAME_02

# Codeblocks with their parity octet: yamcs-core/src/test/java/org/yamcs/tctm/ccsds/error/
# BchEncoderTest.java (the first two are SpacePyLibrary UnitTest/testData.py BCH_BLOCK_01/02).
CODEBLOCKS = ["22F600FF00421A12", "8CC00E010D19065A", "301B000900820054", "10E4C1555555553E"]

# CLTU_02 of yamcs BchCltuGeneratorTest.java (TC_FRAME_02, no randomiser, real tail sequence).
CLTU_02 = bytes([
    0xEB, 0x90, 0x22, 0xF6, 0x00, 0x23, 0x00, 0x82, 0x00, 0x24, 0x0F, 0x00, 0x1D, 0xFF,
    0x00, 0x00, 0x00, 0x34, 0x00, 0x0F, 0x00, 0x1E, 0xFF, 0x00, 0x00, 0x10, 0x00, 0x00,
    0x0F, 0x00, 0x1F, 0xFF, 0x00, 0xD8, 0x00, 0x00, 0x00, 0x0F, 0xAC, 0x8F, 0x00, 0x90,
    0x68, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x06, 0xC5, 0xC5, 0xC5, 0xC5, 0xC5, 0xC5,
    0xC5, 0x79,
])


@pytest.mark.parametrize("block", CODEBLOCKS)
def test_bch_parity_of_known_codeblocks(block):
    raw = bytes.fromhex(block)
    assert bch_parity_octet(raw[:7]) == raw[7]


def test_golden_cltus_from_yamcs():
    assert encode_cltu(TC_FRAME_02) == CLTU_02
    cltu_01 = encode_cltu(TC_FRAME_01)
    # CLTU_01 of the same test: 37 codeblocks, last one 00 00 AD 1A 55 55 55 | EC.
    assert len(cltu_01) == 2 + 37 * 8 + 8
    assert cltu_01[:18] == bytes.fromhex("EB9022F600FF00421A128CC00E010D19065A")
    assert cltu_01[-16:] == bytes.fromhex("0000AD1A555555EC") + TAIL_SEQUENCE
    assert decode_cltu(CLTU_02) == (TC_FRAME_02, "ok (tail sequence, 0 codeblocks corrected)")
    assert decode_cltu(cltu_01)[0] == TC_FRAME_01


def test_randomiser_sequence_first_octets():
    # 231.0-B section 6 lists the first 40 bits of the TC pseudo-random sequence:
    # 1111 1111 0011 1001 1001 1110 0101 1010 0110 1000 (also asserted by yamcs
    # yamcs-core/src/test/java/org/yamcs/tctm/ccsds/RandomizerTest.java).
    assert RANDOMISER_SEQUENCE[:5] == bytes([0xFF, 0x39, 0x9E, 0x5A, 0x68])
    # h(x) is primitive of degree 8: the sequence repeats every 255 bits.
    bits = np.unpackbits(np.frombuffer(RANDOMISER_SEQUENCE[:64], np.uint8))
    assert np.array_equal(bits[:200], bits[255:455]) and not np.array_equal(bits[:200], bits[1:201])


@pytest.mark.parametrize("randomised", [False, True])
@pytest.mark.parametrize("size", [8, 13, 14, 15, 255, 1024])
def test_round_trip(size, randomised):
    frame = TcFrame(spacecraft_id=5, virtual_channel_id=1, frame_sequence_number=7,
                    data=bytes(i % 251 for i in range(size - 7))).pack()
    cltu = encode_cltu(frame, randomised=randomised)
    assert decode_cltu(cltu, randomised=randomised)[0] == frame
    if randomised:  # the information octets on the air are not the frame's
        assert cltu[2:9] != frame[:7]


def test_detection_mode_rejects_a_corrupted_codeblock_and_ends_the_cltu():
    cltu = bytearray(CLTU_02)
    cltu[2 + 8 * 2 + 3] ^= 0x10  # third codeblock
    frame, why = decode_cltu(bytes(cltu))
    assert frame is None and "codeblock 2 rejected" in why


def test_correction_mode_repairs_every_single_bit_error():
    for bit in range(63):  # all 56 information and 7 parity bits of each codeblock
        for block in range(6):
            cltu = bytearray(CLTU_02)
            cltu[2 + 8 * block + bit // 8] ^= 0x80 >> (bit % 8)
            frame, why = decode_cltu(bytes(cltu), correct_errors=True)
            assert frame == TC_FRAME_02 and "1 codeblocks corrected" in why
            assert decode_cltu(bytes(cltu))[0] is None  # detection mode refuses the same


def test_correction_mode_refuses_double_errors():
    # g(x) = (x+1)(x^6+x+1): minimum distance 4, so two errors are detected, never miscorrected.
    rng = np.random.default_rng(7)
    for _ in range(300):
        cltu = bytearray(CLTU_02)
        a, b = rng.choice(63, size=2, replace=False)
        for bit in (a, b):
            cltu[2 + bit // 8] ^= 0x80 >> (bit % 8)
        assert decode_cltu(bytes(cltu), correct_errors=True)[0] is None


def test_missing_start_or_short_cltu():
    assert decode_cltu(CLTU_02[1:])[1].startswith("start sequence")
    assert decode_cltu(b"")[0] is None
    frame, why = decode_cltu(CLTU_02[:2 + 8 * 3] + TAIL_SEQUENCE)
    assert frame is None and "frame length field says 36" in why
    # A CLTU cut before its tail still yields the frame if every codeblock was good.
    assert decode_cltu(CLTU_02[:-8])[0] == TC_FRAME_02


def test_encoder_refuses_bad_frames():
    with pytest.raises(ValueError, match="frame"):
        encode_cltu(b"")
    with pytest.raises(ValueError, match="frame"):
        encode_cltu(bytes(1025))
    assert randomise(randomise(b"abc")) == b"abc"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1300), st.booleans(), st.booleans())
def test_decoder_never_raises_on_arbitrary_bytes(raw, randomised, correct):
    frame, why = decode_cltu(raw, randomised=randomised, correct_errors=correct)
    assert (frame is None) != why.startswith("ok")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_decoder_never_raises_on_mutated_cltus(data):
    cltu = bytearray(CLTU_02)
    for _ in range(data.draw(st.integers(1, 6))):
        cltu[data.draw(st.integers(0, len(cltu) - 1))] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(cltu)))
    frame, _ = decode_cltu(bytes(cltu[:cut]), correct_errors=data.draw(st.booleans()))
    assert frame is None or len(frame) == ((frame[2] & 3) << 8 | frame[3]) + 1
