"""FOP-1, the ground half of COP-1 (CCSDS 232.1-B section 5), for one virtual channel.

FOP-1 numbers Type-AD frames with V(S), keeps every unacknowledged frame on the Sent_Queue
and learns what the spacecraft accepted only from the CLCWs that come back in telemetry:
N(R) acknowledges frames, the Retransmit flag asks for the unacknowledged ones again, Wait
says the FARM has no buffer, Lockout stops the service. Timer T1 (driven by the `now_s`
handed to every call, never the wall clock) retransmits when CLCWs stop confirming
progress, up to the transmission limit.

States: S1 Active, S2 Retransmit without Wait, S3 Retransmit with Wait, S4 Initialising
without BC frame, S5 Initialising with BC frame, S6 Initial. Event numbers follow table 5-1
of 232.1-B (E1..E14 and E101..E103 CLCW arrivals, E16/E104/E17/E18 timer expiry, E19/E20
FDU requests, E21/E22 BD requests, E23..E40 directives). The lower procedures are taken to
accept every frame at once (a frame handed to `send` is an AD/BC/BD Accept, events E41,
E43, E45), so the AD_Out, BC_Out and BD_Out flags are always Ready.

Notifications go to `notify(kind, payload)`: "accept", "reject", "positive_confirm",
"negative_confirm" for FDUs (payload: the FDU bytes), "directive_accept",
"directive_confirm", "directive_reject" (payload: directive name), "alert" (payload: the
alert code), "suspend" (payload: suspend state).
"""

from __future__ import annotations

import copy
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from flight_sw.tmtc.cop1 import COP_IN_EFFECT_COP1, Clcw
from flight_sw.tmtc.tc_frames import UNLOCK_COMMAND, TcFrame, set_vr_command


class FopState(enum.IntEnum):
    ACTIVE = 1
    RETRANSMIT_WITHOUT_WAIT = 2
    RETRANSMIT_WITH_WAIT = 3
    INITIALISING_WITHOUT_BC = 4
    INITIALISING_WITH_BC = 5
    INITIAL = 6


S1, S2, S3, S4, S5, S6 = FopState
ALERTS = ("CLCW", "SYNCH", "LIMIT", "NN(R)", "LOCKOUT", "T1", "TERM")


@dataclass
class _Sent:
    frame: TcFrame
    fdu: bytes
    to_be_retransmitted: bool = False


class Fop1:
    """FOP-1 state machine. Starts in S6 Initial; an Initiate AD directive opens it."""

    def __init__(
        self,
        *,
        spacecraft_id: int,
        virtual_channel_id: int,
        send: Callable[[TcFrame], None],
        notify: Callable[[str, object], None] | None = None,
        sliding_window: int = 8,
        t1_initial_s: float = 10.0,
        transmission_limit: int = 3,
        timeout_type: int = 0,
        map_id: int | None = None,
    ):
        self.spacecraft_id = spacecraft_id
        self.virtual_channel_id = virtual_channel_id
        self.map_id = map_id
        self._send = send
        self._notify = notify or (lambda kind, payload: None)
        self.state = S6
        self.v_s = 0
        self.nn_r = 0
        self.sent_queue: deque[_Sent] = deque()
        self.wait_queue: bytes | None = None
        self.transmission_count = 1
        self.suspend_state = 0
        self.timer_deadline_s: float | None = None
        self.sliding_window = self.t1_initial_s = self.transmission_limit = 0
        self.timeout_type = 0
        self.set_fop_sliding_window(sliding_window)
        self.set_t1_initial(t1_initial_s)
        self.set_transmission_limit(transmission_limit)
        self.set_timeout_type(timeout_type)
        self.last_event = ""

    # --- higher procedures: requests --------------------------------------------------

    def request_transfer(self, fdu: bytes, now_s: float) -> bool:
        """Request to transfer an FDU in a Type-AD frame. E19 (Wait_Queue empty) or E20."""
        if self.wait_queue is not None or self.state in (S4, S5, S6):
            self.last_event = "E20" if self.wait_queue is not None else "E19"
            self._notify("reject", fdu)
            return False
        self.last_event = "E19"
        self.wait_queue = bytes(fdu)
        if self.state is not S3:  # in S3 the FDU waits until the FARM has buffer again
            self._look_for_fdu(now_s)
        return True

    def request_expedited(self, fdu: bytes) -> bool:
        """Type-BD transfer (E21): sent at once in every state, outside COP sequencing."""
        self.last_event = "E21"
        self._send(self._frame(fdu, bypass=True, n_s=0))
        self._notify("accept", fdu)
        return True

    # --- directives (E23..E39) ----------------------------------------------------------

    def initiate_ad_without_clcw_check(self, now_s: float) -> bool:
        """E23: S6 -> S1 at once."""
        if not self._directive_allowed("E23", "initiate AD without CLCW check"):
            return False
        self._initialise()
        self.state = S1
        self._notify("directive_confirm", "initiate AD without CLCW check")
        return True

    def initiate_ad_with_clcw_check(self, now_s: float) -> bool:
        """E24: S6 -> S4; confirmed by the first CLCW that agrees with V(S) (E1)."""
        if not self._directive_allowed("E24", "initiate AD with CLCW check"):
            return False
        self._initialise()
        self._restart_timer(now_s)
        self.state = S4
        return True

    def initiate_ad_with_unlock(self, now_s: float) -> bool:
        """E25: S6 -> S5 sending a BC Unlock; confirmed when a CLCW shows it took effect."""
        if not self._directive_allowed("E25", "initiate AD with unlock"):
            return False
        self._initialise()
        self._transmit_bc(UNLOCK_COMMAND, now_s)
        self.state = S5
        return True

    def initiate_ad_with_set_vr(self, v_star_r: int, now_s: float) -> bool:
        """E27: S6 -> S5 sending a BC Set V(R); V(S) and NN(R) take V*(R)."""
        if not 0 <= v_star_r <= 0xFF:
            raise ValueError(f"v_star_r: {v_star_r} outside 0..255")
        if not self._directive_allowed("E27", "initiate AD with set V(R)"):
            return False
        self._initialise()
        self.v_s = self.nn_r = v_star_r
        self._transmit_bc(set_vr_command(v_star_r), now_s)
        self.state = S5
        return True

    def terminate_ad(self) -> bool:
        """E29: any state -> S6; outside S6 this raises the TERM alert (purging both queues)."""
        self.last_event = "E29"
        self._notify("directive_accept", "terminate AD")
        if self.state is not S6:
            self._alert("TERM")
        self._notify("directive_confirm", "terminate AD")
        return True

    def resume_ad(self, now_s: float) -> bool:
        """E30..E34: in S6 after a suspension, go back to the suspended state SS."""
        ss = self.suspend_state
        self.last_event = f"E{30 + ss}"
        if self.state is not S6 or ss == 0:
            self._notify("directive_reject", "resume AD")
            return False
        self._notify("directive_accept", "resume AD")
        self._restart_timer(now_s)
        self.suspend_state = 0
        self.state = FopState(ss)
        self._notify("directive_confirm", "resume AD")
        return True

    def set_vs(self, v_star_s: int) -> bool:
        """E35: V(S) := NN(R) := V*(S), only in S6 with no suspension pending."""
        self.last_event = "E35"
        if not 0 <= v_star_s <= 0xFF:
            raise ValueError(f"v_star_s: {v_star_s} outside 0..255")
        if self.state is not S6 or self.suspend_state:
            self._notify("directive_reject", "set V(S)")
            return False
        self.v_s = self.nn_r = v_star_s
        self._notify("directive_confirm", "set V(S)")
        return True

    def set_fop_sliding_window(self, k: int) -> None:
        """E36. K: frames sent ahead of the last acknowledged one; 1 <= K <= PW, K < 256."""
        if not 1 <= k <= 255:
            raise ValueError(f"sliding_window: {k}, expected 1..255 and at most the FARM's PW")
        self.sliding_window = k

    def set_t1_initial(self, t1_initial_s: float) -> None:
        """E37. Retransmission timer, seconds."""
        if not t1_initial_s > 0:
            raise ValueError(f"t1_initial_s: {t1_initial_s}, expected > 0")
        self.t1_initial_s = float(t1_initial_s)

    def set_transmission_limit(self, limit: int) -> None:
        """E38. Transmissions of the same frame before FOP-1 gives up (>= 1)."""
        if limit < 1:
            raise ValueError(f"transmission_limit: {limit}, expected >= 1")
        self.transmission_limit = limit

    def set_timeout_type(self, timeout_type: int) -> None:
        """E39. 0: alert when the limit is reached; 1: suspend (resumable)."""
        if timeout_type not in (0, 1):
            raise ValueError(f"timeout_type: {timeout_type}, expected 0 or 1")
        self.timeout_type = timeout_type

    # --- checkpoint ---------------------------------------------------------------------

    STATE_FIELDS = ("v_s", "nn_r", "wait_queue", "transmission_count", "suspend_state", "timer_deadline_s",
                    "sliding_window", "t1_initial_s", "transmission_limit", "timeout_type", "last_event")

    def state_dict(self) -> dict:
        """Everything FOP-1 holds (queues included), to resume it exactly; `send` and `notify`
        are the owner's and are not part of it."""
        return {"state": int(self.state), "sent_queue": copy.deepcopy(list(self.sent_queue)),
                **{name: getattr(self, name) for name in self.STATE_FIELDS}}

    def load_state_dict(self, state: dict) -> None:
        self.state = FopState(state["state"])
        self.sent_queue = deque(copy.deepcopy(state["sent_queue"]))
        for name in self.STATE_FIELDS:
            setattr(self, name, state[name])

    # --- CLCW and timer -----------------------------------------------------------------

    def on_clcw(self, clcw: Clcw, now_s: float) -> str:
        """Process one CLCW report; returns the event number it was classified as."""
        if clcw.cop_in_effect != COP_IN_EFFECT_COP1 or (
            clcw.virtual_channel_id != self.virtual_channel_id
        ):
            self.last_event = "ignored"
            return self.last_event
        event = self._classify(clcw)
        self.last_event = event
        self._apply_clcw(event, clcw.report_value, now_s)
        return event

    def tick(self, now_s: float) -> str | None:
        """Check timer T1; on expiry apply E16/E104 (count below limit) or E17/E18."""
        if self.timer_deadline_s is None or now_s < self.timer_deadline_s:
            return None
        self.timer_deadline_s = None
        below = self.transmission_count < self.transmission_limit
        event = ("E16" if below else "E17") if self.timeout_type == 0 else (
            "E104" if below else "E18")
        self.last_event = event
        st = self.state
        if st in (S1, S2) and below:
            self._initiate_ad_retransmission(now_s)
            self._look_for_fdu(now_s)
        elif st is S3 and below:
            pass  # waiting for the FARM's buffer; keep the queue
        elif st is S4 and event == "E16":
            self._alert("T1")
        elif st is S5 and below:
            self._initiate_bc_retransmission(now_s)
        elif st is S6:
            pass
        elif event in ("E17",) or st is S5:
            self._alert("T1")
        else:  # E18 in S1..S4 (E104 in S4): suspend
            self.suspend_state = int(st)
            self._stop_timer()
            self.state = S6
            self._notify("suspend", self.suspend_state)
        return event

    # --- state table for CLCW events ----------------------------------------------------

    def _classify(self, clcw: Clcw) -> str:
        n_r = clcw.report_value
        if clcw.lockout:
            return "E14"
        if n_r == self.v_s:
            if clcw.retransmit:
                return "E4"
            if clcw.wait:
                return "E3"
            return "E1" if n_r == self.nn_r else "E2"
        outstanding = (self.v_s - self.nn_r) % 256
        if not (n_r - self.nn_r) % 256 < outstanding:
            return "E13"
        if not clcw.retransmit:
            if clcw.wait:
                return "E7"
            return "E5" if n_r == self.nn_r else "E6"
        if self.transmission_limit == 1:
            return "E101" if n_r != self.nn_r else "E102"
        if n_r != self.nn_r:
            return "E9" if clcw.wait else "E8"
        if self.transmission_count < self.transmission_limit:
            return "E11" if clcw.wait else "E10"
        return "E103" if clcw.wait else "E12"

    def _apply_clcw(self, event: str, n_r: int, now_s: float) -> None:
        st = self.state
        if st is S6:
            return  # every CLCW event is ignored in Initial
        if event in ("E3", "E7"):
            self._alert("CLCW")
            return
        if event == "E13":
            if st is not S5:
                self._alert("NN(R)")
            return
        if event == "E14":
            if st is not S5:
                self._alert("LOCKOUT")
            return
        if event == "E4":
            if st is not S5:
                self._alert("SYNCH")
            return
        if st in (S4, S5):
            if event == "E1":
                self._stop_timer()
                if st is S5:
                    self.sent_queue.clear()  # release the acknowledged BC frame
                    self._notify("directive_confirm", "initiate AD with BC frame")
                else:
                    self._notify("directive_confirm", "initiate AD with CLCW check")
                self.state = S1
            return  # E2, E5..E12, E101..E103 cannot occur with an empty Sent_Queue
        if event == "E1":
            if st is not S1:
                self._alert("SYNCH")
            return
        if event == "E5":
            if st is not S1:
                self._alert("SYNCH")
            return
        if event == "E101":
            self._remove_acknowledged(n_r)
            self._alert("LIMIT")
            return
        if event == "E102":
            self._alert("LIMIT")
            return
        if event == "E2":
            self._remove_acknowledged(n_r)
            self._stop_timer()
            self.state = S1
            self._look_for_fdu(now_s)
        elif event == "E6":
            self._remove_acknowledged(n_r)
            self.state = S1
            self._look_for_fdu(now_s)
        elif event == "E8":
            self._remove_acknowledged(n_r)
            self._initiate_ad_retransmission(now_s)
            self.state = S2
            self._look_for_fdu(now_s)
        elif event == "E9":
            self._remove_acknowledged(n_r)
            self.state = S3
        elif event == "E10":
            if st is not S2:
                self._initiate_ad_retransmission(now_s)
                self.state = S2
                self._look_for_fdu(now_s)
        elif event in ("E11", "E103"):
            self.state = S3
        elif event == "E12":
            self.state = S2

    # --- actions (232.1-B 5.2) ----------------------------------------------------------

    def _directive_allowed(self, event: str, name: str) -> bool:
        self.last_event = event
        if self.state is not S6:
            self._notify("directive_reject", name)
            return False
        self._notify("directive_accept", name)
        return True

    def _frame(self, data: bytes, *, bypass: bool, n_s: int, control: bool = False) -> TcFrame:
        return TcFrame(
            spacecraft_id=self.spacecraft_id,
            virtual_channel_id=self.virtual_channel_id,
            frame_sequence_number=n_s,
            data=data,
            bypass=bypass,
            control_command=control,
            map_id=None if control else self.map_id,
        )

    def _initialise(self) -> None:
        """5.2.14: purge both queues, count := 1, SS := 0 (NN(R) := V(S): nothing is owed)."""
        self._purge_sent_queue()
        self._purge_wait_queue()
        self.transmission_count = 1
        self.suspend_state = 0
        self.nn_r = self.v_s
        self._stop_timer()

    def _alert(self, code: str) -> None:
        """5.2.15: stop the timer, purge both queues, tell the higher procedures, go to S6."""
        self._stop_timer()
        self._purge_sent_queue()
        self._purge_wait_queue()
        self.state = S6
        self._notify("alert", code)

    def _purge_sent_queue(self) -> None:
        for item in self.sent_queue:
            if not item.frame.control_command:
                self._notify("negative_confirm", item.fdu)
        self.sent_queue.clear()

    def _purge_wait_queue(self) -> None:
        if self.wait_queue is not None:
            self._notify("reject", self.wait_queue)
        self.wait_queue = None

    def _remove_acknowledged(self, n_r: int) -> None:
        """5.2.8: frames below N(R) are confirmed; NN(R) follows, the count restarts."""
        while self.nn_r != n_r and self.sent_queue:
            item = self.sent_queue.popleft()
            self._notify("positive_confirm", item.fdu)
            self.nn_r = (self.nn_r + 1) % 256
            self.transmission_count = 1

    def _initiate_ad_retransmission(self, now_s: float) -> None:
        """5.2.7: count + 1, restart T1, mark every AD frame on the Sent_Queue."""
        self.transmission_count += 1
        self._restart_timer(now_s)
        for item in self.sent_queue:
            item.to_be_retransmitted = True

    def _initiate_bc_retransmission(self, now_s: float) -> None:
        """5.2.7 for the BC frame of S5, and 5.2.9 Look for Directive: send it again."""
        self.transmission_count += 1
        self._restart_timer(now_s)
        for item in self.sent_queue:
            self._send(item.frame)

    def _look_for_fdu(self, now_s: float) -> None:
        """5.2.10: first the frames marked for retransmission, then the Wait_Queue if
        V(S) < NN(R) + K; the lower layer accepts at once, so repeat until nothing is left."""
        for item in self.sent_queue:
            if item.to_be_retransmitted:
                item.to_be_retransmitted = False
                self._send(item.frame)
        if self.wait_queue is not None and (self.v_s - self.nn_r) % 256 < self.sliding_window:
            fdu, self.wait_queue = self.wait_queue, None
            self._notify("accept", fdu)
            self._transmit_ad(fdu, now_s)

    def _transmit_ad(self, fdu: bytes, now_s: float) -> None:
        """5.2.4: number with V(S), queue, count := 1 if the queue was empty, restart T1."""
        frame = self._frame(fdu, bypass=False, n_s=self.v_s)
        if not self.sent_queue:
            self.transmission_count = 1
        self.sent_queue.append(_Sent(frame, fdu))
        self.v_s = (self.v_s + 1) % 256
        self._restart_timer(now_s)
        self._send(frame)

    def _transmit_bc(self, command: bytes, now_s: float) -> None:
        """5.2.5: the BC frame goes on the Sent_Queue, count := 1, restart T1."""
        frame = self._frame(command, bypass=True, n_s=0, control=True)
        self.sent_queue.append(_Sent(frame, command))
        self.transmission_count = 1
        self._restart_timer(now_s)
        self._send(frame)

    def _restart_timer(self, now_s: float) -> None:
        self.timer_deadline_s = now_s + self.t1_initial_s

    def _stop_timer(self) -> None:
        self.timer_deadline_s = None
