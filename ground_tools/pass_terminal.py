"""A ground terminal that runs COP-1 during the simulated passes: `groundtools uplink plan`'s
packets go up through FOP-1 (`command_link.CommandLink`: Type-AD frames, SDLS, CLTUs) and
the CLCW comes back in the OCF of every downlinked TM frame (`tm_frames.TmFrameDecoder`).

It implements `sim.ground_link.GroundTerminal`, so `flightsim run --uplink PLAN` can hand it
to the simulation. What it does, pass by pass:

1. At the first frame of contact k it queues the packets of every plan group <= k not yet
   queued (group k belongs to the run's k-th contact), then waits for the pass's first CLCW
   (at most `t1_initial_s`; the spacecraft sends one in its first frame of a contact).
2. While FOP-1 is in Initial (S6) and packets wait, it initiates the AD service the usual
   way from the pass's latest CLCW: Set V(S) to its N(R), then Initiate AD with CLCW check
   (the next CLCW confirms it), or with a BC Unlock when the CLCW shows Lockout, Retransmit
   or Wait (only Unlock clears them; a CLCW that agrees with V(S) confirms it). At most `MAX_INITIATIONS_PER_PASS`
   per pass, then the terminal waits for the next pass.
3. It offers the waiting packets to FOP-1 in plan order (FOP-1 takes them as its sliding
   window allows), runs FOP-1's timer T1 with mission time, and feeds every CLCW to FOP-1.
4. An FDU that FOP-1 negatively confirms (after an alert) is NOT sent again: it may have
   been accepted onboard with its CLCW lost. It is logged as unconfirmed for the operator.
   A packet FOP-1 had taken but not yet transmitted (its Wait_Queue purged) is queued again.

The PUS service 1 verification reports in the downlinked packets are matched to the sent
commands by request id (the TC's first four octets) and logged with them. `uplink_loss`
drops radiated CLTUs and `clcw_loss` ignores CLCWs, each with a seeded generator, to show
retransmission over a lossy link. Everything runs on the mission time it is handed.

A command's status in the log: planned (its contact has not come), queued (waiting for
FOP-1), with_fop (taken by FOP-1, not yet transmitted), sent (transmitted, not yet
acknowledged), confirmed (a CLCW acknowledged it), unconfirmed (FOP-1 gave up on it).
"""

from __future__ import annotations

import copy
import dataclasses
from collections import deque
from dataclasses import dataclass

import numpy as np

from flight_sw.config.schema import MissionConfig
from ground_tools.command_link import CommandLink
from ground_tools.fop1 import FopState
from ground_tools.tm_frames import TmFrameDecoder
from ground_tools.uplink import Uplinker, max_packet_bytes
from ground_tools.verification import initiate_ad, record_stage, request_id, verification_report

#: Initiations of the AD service tried in one pass before the terminal waits for the next.
MAX_INITIATIONS_PER_PASS = 3


@dataclass(frozen=True)
class PacketPlan:
    """What `groundtools uplink plan` writes for FOP-1: bare PUS packets per contact group and
    the association they go up on (SPI = key slot, first ARSN, AES-GCM IV salt)."""

    key_id: int
    first_arsn: int
    iv_salt: bytes
    entries: tuple[tuple[int, bytes], ...]


class PassTerminal:
    """FOP-1 ground terminal for a simulated mission (see the module text)."""

    def __init__(self, cfg: MissionConfig, plan: PacketPlan, *, uplink_loss: float = 0.0,
                 clcw_loss: float = 0.0, seed: int = 0, sliding_window: int = 8,
                 t1_initial_s: float = 20.0, transmission_limit: int = 5):
        for name, p in (("uplink_loss", uplink_loss), ("clcw_loss", clcw_loss)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}: {p}, expected a probability in [0, 1)")
        plan = dataclasses.replace(plan, iv_salt=bytes(plan.iv_salt),
                                   entries=tuple((int(g), bytes(p)) for g, p in plan.entries))
        limit = max_packet_bytes(cfg)
        for i, (_, packet) in enumerate(plan.entries):
            if not 0 < len(packet) <= limit:
                raise ValueError(f"plan entry {i}: packet of {len(packet)} bytes, expected 1..{limit} "
                                 "(what one TC frame carries)")
        if len({p for _, p in plan.entries}) != len(plan.entries):
            raise ValueError("the plan holds the same packet twice (one would be taken for the other)")
        self.cfg = cfg
        self.plan = plan
        self.up = Uplinker(cfg, plan.first_arsn, key_id=plan.key_id, iv_salt=plan.iv_salt)
        self.link = CommandLink(self.up, sliding_window=sliding_window, t1_initial_s=t1_initial_s,
                                transmission_limit=transmission_limit)
        self.settings = {"uplink_loss": uplink_loss, "clcw_loss": clcw_loss, "seed": seed,
                         "sliding_window": sliding_window, "t1_initial_s": t1_initial_s,
                         "transmission_limit": transmission_limit}
        self.uplink_loss, self.clcw_loss = uplink_loss, clcw_loss
        self.rng = np.random.default_rng(seed)
        self.decoder = TmFrameDecoder(cfg.downlink.tm_frame_bytes, cfg.telemetry.spacecraft_id)
        order = sorted(range(len(plan.entries)), key=lambda i: plan.entries[i][0])  # stable: plan order kept
        self._order = order
        self._by_fdu = {plan.entries[i][1]: i for i in order}
        self._by_request = {request_id(plan.entries[i][1]): i for i in order}
        self.commands = [_command_record(i, g, p) for i, (g, p) in enumerate(plan.entries)]
        self.queue: deque[int] = deque()  # command indices not yet taken by FOP-1, in order
        self._next = 0  # position in `_order` of the next entry to queue
        self.contact = -1
        self.contact_t0 = 0.0
        self.clcw: bytes | None = None
        self.clcw_t = -1.0
        self.initiations = 0  # in the current pass
        self._notice_pos = 0
        self._frames_seen = (0, 0, 0)  # the link's frame counters when last attributed to a pass
        self.passes: list[dict] = []
        self.events: list[dict] = []
        self.cltus_radiated = self.cltus_dropped = self.clcws_seen = self.clcws_ignored = 0

    # -- sim.ground_link.GroundTerminal --------------------------------------------------------
    def pending(self, t: float, contact_index: int) -> bool:
        if contact_index != self.contact:
            return self._due(contact_index) or self._busy()
        if self.link.fop.state is FopState.INITIAL and self.queue and self.initiations >= MAX_INITIATIONS_PER_PASS:
            return bool(self.link.fop.sent_queue)  # gave up on this pass
        return self._busy()

    def radiate(self, t: float, contact_index: int) -> list[bytes]:
        if contact_index != self.contact:
            self._start_pass(t, contact_index)
        self._take_notices(t)
        fresh = self.clcw_t >= self.contact_t0
        if not fresh and t - self.contact_t0 < self.link.fop.t1_initial_s:
            return []  # the pass's first CLCW tells where the FARM stands: wait for it
        self.link.tick(t)
        fop = self.link.fop
        if fop.state is FopState.INITIAL and self.queue and fresh:
            self._initiate(t)
        while self.queue and fop.state in (FopState.ACTIVE, FopState.RETRANSMIT_WITHOUT_WAIT,
                                           FopState.RETRANSMIT_WITH_WAIT):
            i = self.queue[0]
            if not self.link.send_packet(self.plan.entries[i][1], t):
                break
            self.queue.popleft()
            if self.commands[i]["status"] == "queued":
                self.commands[i]["status"] = "with_fop"
        self._take_notices(t)
        out = []
        row = self.passes[-1]
        for cltu in self.link.radiate():
            self.cltus_radiated += 1
            row["cltus_radiated"] += 1
            if self.uplink_loss and self.rng.random() < self.uplink_loss:
                self.cltus_dropped += 1
                row["cltus_dropped"] += 1
                continue
            out.append(cltu)
        self._count_frames()
        return out

    def on_cadu(self, cadu: bytes, t: float) -> None:
        dec = self.decoder
        dec.last_clcw = None
        for packets in dec.feed(cadu).values():
            for p in packets:
                self._verification(p, t)
        clcw = dec.last_clcw
        if clcw is None:
            dec.last_clcw = self.clcw
            return
        if self.clcw_loss and self.rng.random() < self.clcw_loss:
            self.clcws_ignored += 1
            return
        self.clcws_seen += 1
        self.clcw, self.clcw_t = bytes(clcw), t
        self.link.on_clcw(self.clcw, t)
        self._take_notices(t)

    def summary(self) -> dict:
        c = self.commands
        return {
            "uplink_mode": "fop1",
            "uplink_commands_planned": len(c),
            "uplink_commands_confirmed": sum(1 for r in c if r["status"] == "confirmed"),
            "uplink_commands_unconfirmed": sum(1 for r in c if r["status"] == "unconfirmed"),
            "uplink_commands_not_sent": sum(1 for r in c if r["status"] in ("planned", "queued", "with_fop")),
            "uplink_commands_verified_accepted": sum(1 for r in c if r["acceptance"] == "ok"),
            "uplink_commands_verified_completed": sum(1 for r in c if r["completion"] == "ok"),
            "uplink_ad_frames": self.link.ad_frames,
            "uplink_retransmissions": self.link.ad_retransmissions,
            "uplink_bc_frames": self.link.bc_frames,
            "uplink_cltus_dropped": self.cltus_dropped,
            "uplink_fop_alerts": sum(1 for e in self.events if e["kind"] == "alert"),
        }

    def report(self) -> dict:
        fop = self.link.fop
        return {
            "format": "uplink_log/1",
            "association": {"key_id": self.plan.key_id, "first_arsn": self.plan.first_arsn,
                            "next_arsn": self.up.seq},
            "settings": dict(self.settings),
            "summary": self.summary(),
            "fop": {"state": fop.state.name, "v_s": fop.v_s, "nn_r": fop.nn_r,
                    "sent_queue": len(fop.sent_queue), "clcws_seen": self.clcws_seen,
                    "clcws_ignored": self.clcws_ignored,
                    "last_clcw": self.clcw.hex() if self.clcw is not None else None},
            "commands": copy.deepcopy(self.commands),
            "passes": copy.deepcopy(self.passes),
            "events": copy.deepcopy(self.events),
        }

    def state_dict(self) -> dict:
        return copy.deepcopy({
            "link": self.link.state_dict(), "decoder": self.decoder, "rng": self.rng.bit_generator.state,
            "commands": self.commands, "queue": list(self.queue), "next": self._next, "contact": self.contact,
            "contact_t0": self.contact_t0, "clcw": self.clcw, "clcw_t": self.clcw_t,
            "initiations": self.initiations, "notice_pos": self._notice_pos, "passes": self.passes,
            "frames_seen": self._frames_seen,
            "events": self.events, "counts": (self.cltus_radiated, self.cltus_dropped, self.clcws_seen,
                                              self.clcws_ignored)})

    def load_state_dict(self, state: dict) -> None:
        s = copy.deepcopy(state)
        self.link.load_state_dict(s["link"])
        self.decoder = s["decoder"]
        self.rng.bit_generator.state = s["rng"]
        self.commands, self.queue, self._next = s["commands"], deque(s["queue"]), s["next"]
        self.contact, self.contact_t0, self.clcw, self.clcw_t = s["contact"], s["contact_t0"], s["clcw"], s["clcw_t"]
        self.initiations, self._notice_pos = s["initiations"], s["notice_pos"]
        self._frames_seen = s["frames_seen"]
        self.passes, self.events = s["passes"], s["events"]
        self.cltus_radiated, self.cltus_dropped, self.clcws_seen, self.clcws_ignored = s["counts"]

    # -- inside ------------------------------------------------------------------------------
    def _due(self, contact_index: int) -> bool:
        return self._next < len(self._order) and self.plan.entries[self._order[self._next]][0] <= contact_index

    def _busy(self) -> bool:
        fop = self.link.fop
        return bool(self.queue or fop.sent_queue or fop.wait_queue is not None or self.link.outbox
                    or fop.state in (FopState.INITIALISING_WITHOUT_BC, FopState.INITIALISING_WITH_BC))

    def _start_pass(self, t: float, k: int) -> None:
        self.contact, self.contact_t0, self.initiations = k, t, 0
        queued = []
        while self._due(k):
            i = self._order[self._next]
            self._next += 1
            self.queue.append(i)
            self.commands[i]["status"] = "queued"
            queued.append(i)
        self.passes.append({"contact": k, "first_t_s": t, "commands_queued": queued, "cltus_radiated": 0,
                            "cltus_dropped": 0, "ad_frames": 0, "retransmissions": 0, "bc_frames": 0,
                            "confirmed": [], "negative_confirms": [], "alerts": []})
        self._frames_seen = (self.link.ad_frames, self.link.ad_retransmissions, self.link.bc_frames)
        self._event(t, "pass_start", f"contact {k}: {len(queued)} command(s) queued, "
                                     f"{len(self.queue)} waiting in all")

    def _count_frames(self) -> None:
        now = (self.link.ad_frames, self.link.ad_retransmissions, self.link.bc_frames)
        seen = self._frames_seen
        row = self.passes[-1]
        for key, a, b in zip(("ad_frames", "retransmissions", "bc_frames"), now, seen, strict=True):
            row[key] += a - b
        self._frames_seen = now

    def _initiate(self, t: float) -> None:
        self.initiations += 1
        if self.initiations > MAX_INITIATIONS_PER_PASS:
            return
        self._event(t, "initiate", initiate_ad(self.link.fop, self.clcw, t))

    def _take_notices(self, t: float) -> None:
        notices = self.link.notices
        while self._notice_pos < len(notices):
            kind, payload = notices[self._notice_pos]
            self._notice_pos += 1
            i = self._by_fdu.get(payload) if isinstance(payload, bytes) else None
            rec = self.commands[i] if i is not None else None
            row = self.passes[-1] if self.passes else None
            if kind == "accept" and rec is not None:
                rec["status"] = "sent"
                rec["first_sent_t_s"] = t if rec["first_sent_t_s"] is None else rec["first_sent_t_s"]
            elif kind == "positive_confirm" and rec is not None:
                rec.update(status="confirmed", confirmed_t_s=t, confirmed_contact=self.contact)
                row["confirmed"].append(i)
            elif kind == "negative_confirm" and rec is not None:
                rec["status"] = "unconfirmed"
                row["negative_confirms"].append(i)
                self._event(t, "negative_confirm", f"command {i} unconfirmed (not sent again: it may have run)")
            elif kind == "reject" and rec is not None and rec["status"] == "with_fop":
                rec["status"] = "queued"  # FOP-1 purged its Wait_Queue: it was never transmitted
                self.queue.appendleft(i)
            elif kind == "alert":
                if row is not None:
                    row["alerts"].append(payload)
                self._event(t, "alert", f"FOP-1 alert {payload}")
            elif kind in ("directive_confirm", "directive_reject", "suspend"):
                self._event(t, kind, str(payload))

    def _verification(self, packet: bytes, t: float) -> None:
        report = verification_report(packet)
        i = self._by_request.get(report[0]) if report is not None else None
        if i is not None:
            record_stage(self.commands[i], report[1], report[2], t)

    def _event(self, t: float, kind: str, text: str) -> None:
        self.events.append({"t_s": t, "contact": self.contact, "kind": kind, "text": text})


def _command_record(i: int, group: int, packet: bytes) -> dict:
    service, subtype = (packet[7], packet[8]) if len(packet) > 8 else (None, None)
    return {"index": i, "group": group, "service": service, "subtype": subtype,
            "request_id": packet[:4].hex(), "bytes": len(packet), "status": "planned",
            "first_sent_t_s": None, "confirmed_t_s": None, "confirmed_contact": None,
            "acceptance": None, "start": None, "completion": None,
            "reports": {"acceptance": 0, "start": 0, "completion": 0}}
