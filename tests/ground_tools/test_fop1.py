"""FOP-1 (CCSDS 232.1-B section 5) alone, and against FARM-1 over a lossy, reordering link."""

import numpy as np
import pytest

from flight_sw.tmtc.cltu import decode_cltu, encode_cltu
from flight_sw.tmtc.cop1 import Clcw, Farm1, FarmState
from flight_sw.tmtc.tc_frames import FrameType, decode_tc_frame
from ground_tools.fop1 import Fop1, FopState

S1, S2, S3, S4, S5, S6 = FopState
SCID, VC = 0x1AB, 2


class Harness:
    def __init__(self, **kwargs):
        self.sent, self.notes = [], []
        args = {"sliding_window": 8, "t1_initial_s": 5.0, "transmission_limit": 5} | kwargs
        self.fop = Fop1(spacecraft_id=SCID, virtual_channel_id=VC, send=self.sent.append,
                        notify=lambda kind, payload: self.notes.append((kind, payload)), **args)

    def kinds(self, kind):
        return [p for k, p in self.notes if k == kind]


def clcw(n_r, *, r=False, w=False, lockout=False, vc=VC):
    return Clcw(virtual_channel_id=vc, report_value=n_r % 256, retransmit=r, wait=w,
                lockout=lockout)


def active(n_fdus=3, **kwargs):
    """S1 with V(S) = 3, NN(R) = 0 and frames 0, 1, 2 on the Sent_Queue."""
    h = Harness(**kwargs)
    assert h.fop.initiate_ad_without_clcw_check(0.0)
    for i in range(n_fdus):
        assert h.fop.request_transfer(bytes([i]), 0.0)
    assert (h.fop.state, h.fop.v_s, h.fop.nn_r, len(h.fop.sent_queue)) == (S1, 3, 0, 3)
    return h


def fop_in(state):
    h = active()
    if state is S2:
        assert h.fop.on_clcw(clcw(0, r=True), 0.0) == "E10"
    elif state is S3:
        assert h.fop.on_clcw(clcw(0, r=True, w=True), 0.0) == "E11"
    assert h.fop.state is state
    return h


# CLCW (given V(S)=3, NN(R)=0) that produces each event of table 5-1.
EVENT_CLCW = {
    "E2": clcw(3), "E3": clcw(3, w=True), "E4": clcw(3, r=True), "E5": clcw(0),
    "E6": clcw(1), "E7": clcw(1, w=True), "E8": clcw(1, r=True), "E9": clcw(1, r=True, w=True),
    "E10": clcw(0, r=True), "E11": clcw(0, r=True, w=True), "E12": clcw(0, r=True),
    "E103": clcw(0, r=True, w=True), "E101": clcw(1, r=True), "E102": clcw(0, r=True),
    "E13": clcw(5), "E14": clcw(1, lockout=True),
}
# (state, event) -> next state or the alert raised (which always leads to S6).
CLCW_TABLE = {
    S1: {"E2": S1, "E3": "CLCW", "E4": "SYNCH", "E5": S1, "E6": S1, "E7": "CLCW", "E8": S2,
         "E9": S3, "E10": S2, "E11": S3, "E12": S2, "E103": S3, "E101": "LIMIT",
         "E102": "LIMIT", "E13": "NN(R)", "E14": "LOCKOUT"},
    S2: {"E2": S1, "E3": "CLCW", "E4": "SYNCH", "E5": "SYNCH", "E6": S1, "E7": "CLCW",
         "E8": S2, "E9": S3, "E10": S2, "E11": S3, "E12": S2, "E103": S3, "E101": "LIMIT",
         "E102": "LIMIT", "E13": "NN(R)", "E14": "LOCKOUT"},
    S3: {"E2": S1, "E3": "CLCW", "E4": "SYNCH", "E5": "SYNCH", "E6": S1, "E7": "CLCW",
         "E8": S2, "E9": S3, "E10": S2, "E11": S3, "E12": S2, "E103": S3, "E101": "LIMIT",
         "E102": "LIMIT", "E13": "NN(R)", "E14": "LOCKOUT"},
}
CELLS = [(s, e) for s, row in CLCW_TABLE.items() for e in row]


@pytest.mark.parametrize("state, event", CELLS, ids=[f"S{int(s)}-{e}" for s, e in CELLS])
def test_clcw_state_table_cell(state, event):
    h = fop_in(state)
    fop = h.fop
    if event in ("E101", "E102"):
        fop.set_transmission_limit(1)
    if event in ("E12", "E103"):
        fop.transmission_count = fop.transmission_limit
    sent_before = len(h.sent)
    assert fop.on_clcw(EVENT_CLCW[event], 1.0) == event
    expected = CLCW_TABLE[state][event]
    if isinstance(expected, str):
        assert fop.state is S6 and h.kinds("alert") == [expected]
        assert not fop.sent_queue and fop.wait_queue is None and fop.timer_deadline_s is None
        return
    assert fop.state is expected and not h.kinds("alert")
    acked = {"E2": 3, "E6": 1, "E8": 1, "E9": 1}.get(event, 0)
    assert h.kinds("positive_confirm") == [bytes([i]) for i in range(acked)]
    assert fop.nn_r == acked
    resent = h.sent[sent_before:]
    retransmits = event == "E8" or (event == "E10" and state is not S2)
    assert [f.frame_sequence_number for f in resent] == (
        list(range(acked, 3)) if retransmits else [])


def test_clcws_for_another_vc_or_without_cop1_are_ignored():
    h = active()
    assert h.fop.on_clcw(clcw(3, vc=VC + 1), 0.0) == "ignored"
    other = Clcw(virtual_channel_id=VC, report_value=3, cop_in_effect=2)
    assert h.fop.on_clcw(other, 0.0) == "ignored" and h.fop.nn_r == 0


def test_sliding_window_and_wait_queue():
    h = Harness(sliding_window=2)
    h.fop.initiate_ad_without_clcw_check(0.0)
    assert h.fop.request_transfer(b"a", 0.0) and h.fop.request_transfer(b"b", 0.0)
    assert h.fop.request_transfer(b"c", 0.0)  # E19: waits, K = 2 frames are outstanding
    assert h.fop.wait_queue == b"c" and len(h.sent) == 2
    assert not h.fop.request_transfer(b"d", 0.0) and h.fop.last_event == "E20"
    assert h.kinds("reject") == [b"d"]
    h.fop.on_clcw(clcw(1), 1.0)  # E6 acknowledges frame 0, the window opens
    assert [f.data for f in h.sent] == [b"a", b"b", b"c"] and h.fop.wait_queue is None
    assert h.kinds("positive_confirm") == [b"a"]


def test_timer_retransmits_then_alerts_at_the_limit():
    h = active(transmission_limit=2)
    assert h.fop.tick(4.9) is None
    assert h.fop.tick(5.0) == "E16"  # count 1 < 2: retransmit all, restart T1
    assert [f.frame_sequence_number for f in h.sent[3:]] == [0, 1, 2]
    assert h.fop.transmission_count == 2 and h.fop.timer_deadline_s == 10.0
    assert h.fop.tick(10.0) == "E17"
    assert h.fop.state is S6 and h.kinds("alert") == ["T1"]
    assert h.kinds("negative_confirm") == [b"\x00", b"\x01", b"\x02"]


def test_timeout_type_1_suspends_and_resume_returns_to_the_state():
    h = active(transmission_limit=1, timeout_type=1)
    assert h.fop.tick(5.0) == "E18"
    assert h.fop.state is S6 and h.fop.suspend_state == 1 and h.kinds("suspend") == [1]
    assert len(h.fop.sent_queue) == 3  # suspension keeps the frames
    assert not h.fop.set_vs(9)  # E35 refused while a suspension is pending
    assert h.fop.resume_ad(7.0) and h.fop.state is S1 and h.fop.timer_deadline_s == 12.0
    assert not h.fop.resume_ad(7.0)  # E30: nothing to resume outside S6


def test_initiate_with_clcw_check():
    h = Harness()
    assert h.fop.set_vs(40)
    assert h.fop.initiate_ad_with_clcw_check(0.0) and h.fop.state is S4
    assert not h.fop.request_transfer(b"x", 0.0)  # E19 rejected while initialising
    assert h.fop.on_clcw(clcw(40, lockout=True), 1.0) == "E14"
    assert h.fop.state is S6 and h.kinds("alert") == ["LOCKOUT"]
    h.fop.initiate_ad_with_clcw_check(2.0)
    assert h.fop.on_clcw(clcw(40), 3.0) == "E1" and h.fop.state is S1
    assert h.kinds("directive_confirm")[-1] == "initiate AD with CLCW check"
    h2 = Harness()
    h2.fop.initiate_ad_with_clcw_check(0.0)
    assert h2.fop.tick(5.0) == "E16" and h2.kinds("alert") == ["T1"]


def test_initiate_with_unlock_and_set_vr_use_bc_frames():
    h = Harness(transmission_limit=2)
    assert h.fop.initiate_ad_with_unlock(0.0) and h.fop.state is S5
    bc = h.sent[-1]
    assert bc.frame_type is FrameType.BC and bc.data == b"\x00"
    assert h.fop.on_clcw(clcw(9, lockout=True), 1.0) == "E14" and h.fop.state is S5  # ignored
    assert h.fop.tick(5.0) == "E16" and h.sent[-1] == bc  # BC retransmission
    assert h.fop.tick(10.0) == "E17" and h.kinds("alert") == ["T1"]
    assert h.fop.initiate_ad_with_set_vr(9, 11.0) and h.sent[-1].data == b"\x82\x00\x09"
    assert (h.fop.v_s, h.fop.nn_r) == (9, 9)
    assert not h.fop.initiate_ad_with_unlock(11.0)  # directives other than E29 wait for S6
    assert h.fop.on_clcw(clcw(9), 12.0) == "E1" and h.fop.state is S1
    assert not h.fop.sent_queue and h.fop.timer_deadline_s is None


def test_terminate_alerts_outside_s6_and_parameter_checks():
    h = active()
    assert h.fop.terminate_ad() and h.fop.state is S6 and h.kinds("alert") == ["TERM"]
    assert h.fop.terminate_ad() and h.kinds("alert") == ["TERM"]  # in S6: no second alert
    for setter, bad, field in ((h.fop.set_fop_sliding_window, 0, "sliding_window"),
                               (h.fop.set_t1_initial, 0.0, "t1_initial_s"),
                               (h.fop.set_transmission_limit, 0, "transmission_limit"),
                               (h.fop.set_timeout_type, 2, "timeout_type"),
                               (h.fop.set_vs, 256, "v_star_s")):
        with pytest.raises(ValueError, match=field):
            setter(bad)


def test_expedited_frames_bypass_the_queues():
    h = Harness()
    assert h.fop.request_expedited(b"now")
    assert h.sent[-1].frame_type is FrameType.BD and h.fop.state is S6


# --- end to end: FOP-1 on the ground, FARM-1 onboard, the CLCW as the only feedback ------

def run_link(seed, n_fdus=200, max_steps=6000):
    rng = np.random.default_rng(seed)
    dt_s = 1.0
    uplink = []  # (arrival step, order key, CLTU)
    step = 0

    def send(frame):
        cltu = bytearray(encode_cltu(frame.pack()))
        if rng.random() < 0.2:
            return  # lost
        if rng.random() < 0.1:
            cltu[rng.integers(len(cltu))] ^= 1 << int(rng.integers(8))  # bit error
        uplink.append((step + int(rng.integers(0, 3)), rng.random(), bytes(cltu)))

    notes = []
    fop = Fop1(spacecraft_id=SCID, virtual_channel_id=VC, send=send,
               notify=lambda kind, payload: notes.append((kind, payload)),
               sliding_window=6, t1_initial_s=6.0, transmission_limit=20)
    farm = Farm1(VC, window_width=32, buffer_frames=2, v_r=37, state=FarmState.LOCKOUT)
    downlink = []  # (arrival step, CLCW octets): in order, some lost
    fdus = [f"fdu {i}".encode() * (1 + i % 5) for i in range(n_fdus)]
    delivered, queued = [], 0
    assert fop.set_vs(37) and fop.initiate_ad_with_unlock(0.0)
    for step in range(max_steps):
        now_s = step * dt_s
        # Onboard: CLTUs due now, in the channel's (shuffled) order.
        due = sorted((u for u in uplink if u[0] <= step), key=lambda u: u[1])
        uplink[:] = [u for u in uplink if u[0] > step]
        for _, _, cltu in due:
            raw, _ = decode_cltu(cltu)
            frame, _ = decode_tc_frame(raw, spacecraft_id=SCID) if raw else (None, "")
            if frame is not None:
                farm.receive(frame)
        for _ in range(int(rng.integers(0, 3))):  # a consumer slower than the link at times
            fdu = farm.take_fdu()
            if fdu is not None:
                delivered.append(fdu[0])
        if rng.random() < 0.7:
            downlink.append((step + 1, farm.clcw().pack()))
        # Ground.
        while downlink and downlink[0][0] <= step:
            fop.on_clcw(Clcw.unpack(downlink.pop(0)[1]), now_s)
        fop.tick(now_s)
        while queued < n_fdus and fop.state is not FopState.INITIALISING_WITH_BC and (
            fop.wait_queue is None and fop.request_transfer(fdus[queued], now_s)
        ):
            queued += 1
        if len(delivered) == n_fdus and not fop.sent_queue:
            break
    return fdus, delivered, notes, fop, farm


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_fdu_is_delivered_exactly_once_in_order(seed):
    fdus, delivered, notes, fop, farm = run_link(seed)
    assert not [n for n in notes if n[0] in ("alert", "negative_confirm", "reject")]
    assert delivered == fdus
    assert [p for k, p in notes if k == "positive_confirm"] == fdus
    assert fop.state is S1 and farm.state is FarmState.OPEN
    assert farm.v_r == fop.v_s == (37 + len(fdus)) % 256  # sequence numbers wrapped past 255
    assert farm.frames_discarded > 0  # the channel did lose, corrupt and reorder frames
