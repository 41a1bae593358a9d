"""FARM-1 and the CLCW (CCSDS 232.1-B section 6, 232.0-B 4.2.1.4): every cell of table 6-1."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight_sw.tmtc.cop1 import Clcw, Farm1, FarmState
from flight_sw.tmtc.tc_frames import TcFrame, decode_tc_frame, set_vr_command

OPEN, WAIT, LOCKOUT = FarmState.OPEN, FarmState.WAIT, FarmState.LOCKOUT
VC = 3


def ad(n_s, data=b"ad"):
    return TcFrame(spacecraft_id=1, virtual_channel_id=VC, frame_sequence_number=n_s % 256,
                   data=data)


def bd(data=b"bd"):
    return TcFrame(spacecraft_id=1, virtual_channel_id=VC, frame_sequence_number=0, data=data,
                   bypass=True)


def bc(data):
    return TcFrame(spacecraft_id=1, virtual_channel_id=VC, frame_sequence_number=0, data=data,
                   bypass=True, control_command=True)


# --- CLCW ---------------------------------------------------------------------------------

def test_clcw_bit_layout():
    # 232.0-B 4.2.1.4 field order: type 0, version 00, status 3, COP 2, VCID 6, spare 2,
    # no RF, no bit lock, lockout, wait, retransmit, FARM-B 2, spare 1, report value 8.
    # Hand-derived: status 5, COP 1, VCID 0x2A, flags 1,0,1,0,1, FARM-B 2, N(R) 0xC3.
    clcw = Clcw(virtual_channel_id=0x2A, report_value=0xC3, lockout=True, retransmit=True,
                farm_b_counter=2, no_rf_available=True, status_field=5)
    word = (5 << 26) | (1 << 24) | (0x2A << 18) | (1 << 15) | (1 << 13) | (1 << 11) | (2 << 9)
    assert clcw.pack() == (word | 0xC3).to_bytes(4, "big") == bytes.fromhex("15A8ACC3")
    assert Clcw.unpack(clcw.pack()) == clcw
    assert Clcw(virtual_channel_id=0, report_value=0).pack() == bytes.fromhex("01000000")


def test_clcw_refusals_name_the_field():
    with pytest.raises(ValueError, match="control word type"):
        Clcw.unpack(bytes.fromhex("81000000"))
    with pytest.raises(ValueError, match="version"):
        Clcw.unpack(bytes.fromhex("21000000"))
    with pytest.raises(ValueError, match="clcw: 3 octets"):
        Clcw.unpack(b"\x01\x00\x00")
    with pytest.raises(ValueError, match="report_value"):
        Clcw(virtual_channel_id=0, report_value=256)
    with pytest.raises(ValueError, match="farm_b_counter"):
        Clcw(virtual_channel_id=0, report_value=0, farm_b_counter=4)


@given(st.binary(min_size=4, max_size=4))
def test_clcw_unpack_pack_round_trip(raw):
    try:
        clcw = Clcw.unpack(raw)
    except ValueError:
        assert raw[0] & 0xE0
        return
    # Spare bits are not carried: everything else survives.
    assert clcw.pack() == bytes([raw[0], raw[1] & 0xFC, raw[2] & 0xFE, raw[3]])


# --- the state table, cell by cell --------------------------------------------------------

def farm_in(state, *, buffer_full):
    """A FARM (W=16, 2 FDU buffers) driven into `state` by real frames only."""
    farm = Farm1(VC, window_width=16, buffer_frames=2, v_r=10)
    assert farm.receive(ad(10)) == ("E1", True)  # one FDU waiting: room for one more
    if state is OPEN and not buffer_full:
        return farm
    assert farm.receive(ad(11)) == ("E1", True)  # buffer full
    if state is OPEN:
        return farm
    assert farm.receive(ad(12)) == ("E2", False)  # -> Wait
    if state is WAIT:
        return farm
    assert farm.receive(ad(12 + 100)) == ("E5", False)  # -> Lockout, Wait still set
    if not buffer_full:
        assert farm.take_fdu() == (b"ad", None)  # E10 in S3: Wait cleared
    return farm


def trigger(farm, event):
    v = farm.v_r
    if event == "E10":
        assert farm.take_fdu() is not None
        return None
    frame = {"E1": ad(v), "E2": ad(v), "E3": ad(v + 1), "E4": ad(v - 1), "E5": ad(v + 50),
             "E6": bd(), "E7": bc(b"\x00"), "E8": bc(set_vr_command(200)),
             "E9": bc(b"\x05")}[event]
    got_event, accepted = farm.receive(frame)
    assert got_event == event
    return accepted


# (state, event): next state, accepted, Retransmit, Wait, Lockout, V(R), FARM-B increment.
# Start values: Open V(R)=11 (12 when the buffer is full), R=W=L=0; Wait V(R)=12, R=W=1;
# Lockout V(R)=12, R=W=L=1 (W=0 after the buffer release used for E1).
TABLE = {
    (OPEN, "E1"): (OPEN, True, 0, 0, 0, 12, 0),
    (OPEN, "E2"): (WAIT, False, 1, 1, 0, 12, 0),
    (OPEN, "E3"): (OPEN, False, 1, 0, 0, 11, 0),
    (OPEN, "E4"): (OPEN, False, 0, 0, 0, 11, 0),
    (OPEN, "E5"): (LOCKOUT, False, 0, 0, 1, 11, 0),
    (OPEN, "E6"): (OPEN, True, 0, 0, 0, 11, 1),
    (OPEN, "E7"): (OPEN, True, 0, 0, 0, 11, 1),
    (OPEN, "E8"): (OPEN, True, 0, 0, 0, 200, 1),
    (OPEN, "E9"): (OPEN, False, 0, 0, 0, 11, 0),
    (OPEN, "E10"): (OPEN, None, 0, 0, 0, 11, 0),
    (WAIT, "E2"): (WAIT, False, 1, 1, 0, 12, 0),
    (WAIT, "E3"): (WAIT, False, 1, 1, 0, 12, 0),
    (WAIT, "E4"): (WAIT, False, 1, 1, 0, 12, 0),
    (WAIT, "E5"): (LOCKOUT, False, 1, 1, 1, 12, 0),
    (WAIT, "E6"): (WAIT, True, 1, 1, 0, 12, 1),
    (WAIT, "E7"): (OPEN, True, 0, 0, 0, 12, 1),
    (WAIT, "E8"): (OPEN, True, 0, 0, 0, 200, 1),
    (WAIT, "E9"): (WAIT, False, 1, 1, 0, 12, 0),
    (WAIT, "E10"): (OPEN, None, 1, 0, 0, 12, 0),
    (LOCKOUT, "E1"): (LOCKOUT, False, 1, 0, 1, 12, 0),
    (LOCKOUT, "E2"): (LOCKOUT, False, 1, 1, 1, 12, 0),
    (LOCKOUT, "E3"): (LOCKOUT, False, 1, 1, 1, 12, 0),
    (LOCKOUT, "E4"): (LOCKOUT, False, 1, 1, 1, 12, 0),
    (LOCKOUT, "E5"): (LOCKOUT, False, 1, 1, 1, 12, 0),
    (LOCKOUT, "E6"): (LOCKOUT, True, 1, 1, 1, 12, 1),
    (LOCKOUT, "E7"): (OPEN, True, 0, 0, 0, 12, 1),
    (LOCKOUT, "E8"): (LOCKOUT, True, 1, 1, 1, 12, 1),  # Set V(R) not executed, only counted
    (LOCKOUT, "E9"): (LOCKOUT, False, 1, 1, 1, 12, 0),
    (LOCKOUT, "E10"): (LOCKOUT, None, 1, 0, 1, 12, 0),
}


@pytest.mark.parametrize("cell", sorted(TABLE, key=lambda c: (c[0], int(c[1][1:]))),
                         ids=lambda c: f"S{int(c[0])}-{c[1]}")
def test_state_table_cell(cell):
    state, event = cell
    nxt, accepted, r, w, lo, v_r, db = TABLE[cell]
    farm = farm_in(state, buffer_full=event == "E2" if state is OPEN else event != "E1")
    assert farm.state is state
    b0 = farm.farm_b_counter
    assert trigger(farm, event) is accepted
    assert farm.state is nxt
    assert (farm.retransmit, farm.wait, farm.lockout) == (bool(r), bool(w), bool(lo))
    assert (farm.v_r, farm.farm_b_counter - b0) == (v_r, db)
    clcw = Clcw.unpack(farm.clcw().pack())
    assert (clcw.retransmit, clcw.wait, clcw.lockout, clcw.report_value) == (
        bool(r), bool(w), bool(lo), v_r)
    assert clcw.farm_b_counter == farm.farm_b_counter & 3 and clcw.virtual_channel_id == VC


def test_e1_cannot_occur_in_wait():
    """Table 6-1 marks S2/E1 not applicable: in Wait the buffer is full, so N(S) = V(R) is E2."""
    farm = farm_in(WAIT, buffer_full=True)
    assert farm.receive(ad(farm.v_r)) == ("E2", False)


def test_window_edges_and_wraparound():
    # W = 16: PW = NW = 8; positive part V(R)+1..V(R)+7, negative part V(R)-8..V(R)-1.
    for v_r in (0, 3, 250, 255):
        for offset, event in ((7, "E3"), (8, "E5"), (-8, "E4"), (-9, "E5"), (0, "E1")):
            farm = Farm1(VC, window_width=16, v_r=v_r)
            assert farm.receive(ad(v_r + offset))[0] == event, (v_r, offset)
    farm = Farm1(VC, window_width=2, v_r=0)  # PW - 1 = 0: no positive part at all
    assert farm.receive(ad(1))[0] == "E5"
    farm = Farm1(VC, window_width=2, v_r=0)
    assert farm.receive(ad(255))[0] == "E4"


def test_delivery_order_bd_slot_and_other_vc():
    farm = Farm1(VC, buffer_frames=3)
    for n in range(3):
        farm.receive(TcFrame(spacecraft_id=1, virtual_channel_id=VC, frame_sequence_number=n,
                             data=bytes([n]), map_id=n + 1))
    farm.receive(bd(b"x"))
    farm.receive(bd(b"y"))  # overwrites the unread BD FDU
    assert farm.bd_overwritten == 1
    assert [farm.take_fdu() for _ in range(5)] == [
        (b"y", None), (b"\x00", 1), (b"\x01", 2), (b"\x02", 3), None]
    other = TcFrame(spacecraft_id=1, virtual_channel_id=VC + 1, frame_sequence_number=3, data=b"z")
    assert farm.receive(other) == ("wrong virtual channel", False)


def test_constructor_refusals():
    for kwargs, field in (({"window_width": 3}, "window_width"), ({"window_width": 256},
                          "window_width"), ({"buffer_frames": 0}, "buffer_frames"),
                          ({"v_r": 256}, "v_r")):
        with pytest.raises(ValueError, match=field):
            Farm1(VC, **kwargs)
    with pytest.raises(ValueError, match="virtual_channel_id"):
        Farm1(64)


# --- properties ---------------------------------------------------------------------------

frames = st.one_of(
    st.builds(lambda n: ("ad", n), st.integers(0, 255)),
    st.just(("bd", 0)),
    st.just(("unlock", 0)),
    st.builds(lambda n: ("set_vr", n), st.integers(0, 255)),
    st.just(("bad_bc", 0)),
    st.just(("take", 0)),
)


def make_frame(kind, n):
    if kind == "ad":
        return ad(n, bytes([n]))
    if kind == "bd":
        return bd()
    return bc({"unlock": b"\x00", "set_vr": set_vr_command(n), "bad_bc": b"\x07"}[kind])


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=80), st.sampled_from([2, 8, 16, 254]), st.integers(1, 3))
def test_farm_never_accepts_outside_its_window(ops, width, buffers):
    farm = Farm1(VC, window_width=width, buffer_frames=buffers)
    ring = farm._ring
    for kind, n in ops:
        before = (farm.state, farm.v_r)
        if kind == "take":
            farm.take_fdu()
            continue
        frame = make_frame(kind, n)
        event, accepted = farm.receive(frame)
        if kind == "ad" and accepted:
            # Only the next expected frame, and only while Open.
            assert before == (OPEN, n) and farm.v_r == (n + 1) % 256
        if kind == "ad" and not accepted:
            assert farm.v_r == before[1]
        assert farm.lockout == (farm.state is LOCKOUT)
        assert (farm.state is WAIT) <= farm.wait
    assert farm._ring is ring and len(ring) == buffers * 1024  # fixed memory


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_farm_never_raises_on_arbitrary_bytes(blobs):
    farm = Farm1(VC)
    for raw in blobs:
        frame, _ = decode_tc_frame(raw, spacecraft_id=((raw[0] & 3) << 8 | raw[1])
                                   if len(raw) > 1 else 0)
        if frame is not None:
            v_r, state = farm.v_r, farm.state
            event, accepted = farm.receive(frame)
            if accepted and frame.frame_type.value == "AD":
                assert (frame.frame_sequence_number, state) == (v_r, OPEN)
        farm.clcw().pack()
