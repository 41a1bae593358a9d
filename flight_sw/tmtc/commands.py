"""Telecommand handling: CLTUs -> TC frames -> PUS-C TCs -> service 1 verified actions.

`FlightSoftware.telecommand(cltu)` queues a CLTU (bounded queue); the `tc_handler` task
calls `TcHandler.run`, which passes each through the receiving chain (tc_link.py: CLTU,
TC Transfer Frame, SDLS security, FARM-1), unpacks the PUS packet with spacepackets (CRC
checked), and executes it with the full service 1
sequence: acceptance (1,1 / 1,2), start (1,3), completion (1,7) or failure (1,8, with
a failure code and a text naming the field and the bound). A frame refused by
security never gets a service 1 report (its request id is unauthenticated): it is
reported as event EVENT_TC_REJECTED with the reason, the key id and the claimed
sequence number. No exception escapes `process`: anything unexpected is a rejection.

Services: 17,1 ping; 8,1 functions (mode, TLE, task enable/disable, model rollback,
activate, confirm, security-association procedures, parameter activation, recovery);
20,3 parameter load; 13,9 / 13,10 / 13,11 large packet uplink (the parts of a signed model
package, ECSS-E-ST-70-41C 6.13) with TM[13,16] when a transaction is aborted; 11, 12, 19
onboard tables. Service 23 (file management) is not provided: files come by CFDP.

The handler cannot be driven into a lockout or a fault by what arrives: one run handles
at most the frames its compute budget pays for (the rest wait in the bounded queue), so a
flood of frames, valid or not, never overruns the task and never steps the mode down; a
refusal names the association's onboard ARSN, so a ground that lost count finds the
window again; the last operational command association cannot be stopped; a lost NV
record is left only through FN_TC_RECOVER bound to this boot's nonce.

Boots are counted in the NV record. `fdir.boot_escalation_count` consecutive boots that
each end before `fdir.boot_stable_s` of uptime set the safe latch: the satellite boots
into SAFE and stays there, across further boots, until a ground mode command.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from spacepackets.ecss import PusTc
from spacepackets.ecss.pus_1_verification import ErrorCode, FailureNotice, RequestId

from flight_sw.config.schema import MODES
from flight_sw.fdir.modes import SAFE
from flight_sw.memory import CFDP_FILE_SLOTS
from flight_sw.power.tle import TleError
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc import packet_store as ps
from flight_sw.tmtc.cfdp_link import CfdpReceiver
from flight_sw.tmtc.nv_store import RedundantStore
from flight_sw.tmtc.onboard_tables import OnboardTables
from flight_sw.tmtc.params import ParamTable
from flight_sw.tmtc.security import SA_STATES, Authenticator, NvState, SaError
from flight_sw.tmtc.tc_link import FARM_DISCARD, TcReceiver
from flight_sw.tmtc.upload import (
    PART_FIRST,
    PART_INTERMEDIATE,
    PART_LAST,
    ModelUploader,
    UploadError,
)

#: SA procedures: function id -> argument layout (u16 SPI first).
SA_PROCEDURES = {
    d.FN_SA_START: struct.Struct(">H"),
    d.FN_SA_STOP: struct.Struct(">H"),
    d.FN_SA_REKEY: struct.Struct(">HH"),
    d.FN_SA_SET_ARSN: struct.Struct(">HQ"),
    d.FN_SA_STATUS: struct.Struct(">H"),
}
SA_ARG_TEXT = {d.FN_SA_REKEY: ", u16 key slot", d.FN_SA_SET_ARSN: ", u64 ARSN"}
#: PUS failure code field width (PFC 16 -> u16), as spacepackets' ErrorCode.
PFC_BITS = 16
MAX_FAIL_TEXT = 96
FRAME_COST_S = 2e-4  # modelled compute per frame (HMAC + unpack + dispatch)
RUN_BASE_COST_S = 1e-5  # modelled compute of a run (queue check, trial countdown)


class CommandTargets(Protocol):
    """What telecommands act on, and nothing more: the wiring (`flight_sw.app.FlightSoftware`)
    provides it, so the handler reaches the components only through these."""

    specs: Sequence  # the task table (names and kinds, for enable/disable)
    learner: object  # the model slots (upload installs, rollback)
    learning: object  # the payload and learning component (install_calibration)
    modes: object  # the mode manager (cap at a boot escalation)
    downlink: object  # the downlink queue and its PUS 15 packet store

    def command_mode(self, mode: str) -> bool: ...
    def load_tle(self, line1: str, line2: str) -> None: ...
    def enable_task(self, name: str) -> None: ...
    def disable_task(self, name: str, reason: str) -> None: ...
    def request_calibration(self) -> None: ...
    def rollback_calibration(self, t: float) -> bool: ...
    def _apply_params(self, table: dict[int, float]) -> None: ...
    def _report_update(self, outcome: str, t: float) -> None: ...


class TcHandler:
    def __init__(self, cfg, tm, targets: CommandTargets, filestore, store: RedundantStore, entropy):
        """`tm`: the telemetry encoder (reports, events); `targets`: what commands act on;
        `filestore`: the CFDP receiver's buffer; `store`: the NV store (A/B record and staging
        log); `entropy(n) -> bytes`: the platform's random source (a hardware RNG in flight),
        used only for the recovery nonce."""
        self.tm = tm
        self.targets = targets
        self.apid = cfg.telemetry.apid
        self.nv = NvState(store, cfg.tmtc)
        self.auth = Authenticator(cfg.tmtc, self.nv)
        self.link = TcReceiver(cfg, self.auth)
        learning = getattr(targets, "learning", None)
        self.upload = ModelUploader(cfg, self.nv, self.auth, targets.learner, store.staging,
                                    getattr(learning, "adaptation", None), getattr(learning, "layer", None))
        self.params = ParamTable(self.nv, targets._apply_params)
        self.tables = OnboardTables(cfg, self.nv)
        #: CFDP class 2 destination (file uplink: model packages, tables) in its filestore buffer.
        self.cfdp = CfdpReceiver(cfg, CFDP_FILE_SLOTS, region=filestore)
        #: Stored commands due to run (released time-tagged ones, triggered event actions).
        self.internal: deque[bytes] = deque()
        tm.on_event = self._event_action
        self.entropy = entropy
        self.queue: deque[bytes] = deque()
        self._queued_changes: deque[bool] = deque()  # per queued frame: may change the security state
        self._state_changes_queued = 0
        self.queue_max = cfg.tmtc.tc_queue_frames
        budget_s = next(s.compute_budget_s for s in cfg.tasks if s.kind == "tc_handler")
        #: Frames one run may handle within its compute budget (at least one).
        self.frames_per_run = max(1, int((budget_s - RUN_BASE_COST_S) / FRAME_COST_S))
        self.escalation_count = cfg.fdir.boot_escalation_count
        self.stable_s = cfg.fdir.boot_stable_s
        self.boot_t = 0.0
        self.nonce = 0
        self.accepted = 0
        self.rejected = 0
        self.farm_discards = 0
        self.last_reject: str | None = None

    # -- boot ---------------------------------------------------------------------------------
    def boot(self, cold: bool, t: float) -> None:
        """Cold start or restore: reload NV, count the boot (escalating to the safe latch),
        revert unconfirmed trials, re-apply parameters."""
        self.nv.reload()
        self._clear_queue()
        self.boot_t = t
        self.nonce = int.from_bytes(self.entropy(8), "big")
        if self.nv.lost:
            self.tm.event(d.EVENT_TC_STATE_LOST, "high", d.TC_STATE_LOST_STRUCT.pack(self.nonce), t)
            return
        boot = self.nv.data["boot"]
        boot["count"] += 1
        boot["unstable"] = min(boot["unstable"] + 1, 255)
        if boot["unstable"] >= self.escalation_count:
            boot["safe_latch"] = True
        self.nv.commit()
        self.tm.event(d.EVENT_BOOT, "high" if boot["safe_latch"] else "info",
                          d.BOOT_STRUCT.pack(boot["count"] & 0xFFFFFFFF, boot["unstable"], int(boot["safe_latch"])), t)
        if boot["safe_latch"]:
            self.targets.modes.cap(SAFE, "boot_escalation", t)
        for stage in self.upload.boot(cold):
            self._model_event(stage, self.targets.learner.version, self.nv.data["sc"], t)
        if self.nv.data["params"]["active"]:
            self.targets._apply_params(self.params.active())

    def state_dict(self) -> dict:
        """What a checkpoint needs beyond the NV record (counters since boot, queued frames)."""
        return {"accepted": self.accepted, "rejected": self.rejected, "last_reject": self.last_reject,
                "boot_t": self.boot_t, "nonce": self.nonce, "trial_runs_left": self.upload.trial_runs_left,
                "queue": [f.hex() for f in self.queue], "queue_changes": list(self._queued_changes),
                "farm": self.link.state_dict(),
                "farm_discards": self.farm_discards}

    def resume(self, state: dict) -> None:
        """Continue from a checkpoint whose NV device was restored with it: no boot happened."""
        self.nv.reload()
        st = self.nv.data["staging"]
        self.upload.staging.scan(st["session"] if st is not None else -1)
        self.accepted, self.rejected, self.last_reject = state["accepted"], state["rejected"], state["last_reject"]
        self.boot_t, self.nonce = state["boot_t"], state["nonce"]
        self.upload.trial_runs_left = state["trial_runs_left"]
        self._clear_queue()
        self.queue.extend(bytes.fromhex(f) for f in state["queue"])
        self._queued_changes.extend(state["queue_changes"])
        self._state_changes_queued = sum(self._queued_changes)
        self.link.load_state_dict(state["farm"])
        self.farm_discards = state["farm_discards"]

    def sa_report(self) -> bytes:
        """Housekeeping SID 6: every association's key slot, state and ARSN, by SPI."""
        return b"".join(d.HK_SA_STRUCT.pack(int(spi), sa["key"], SA_STATES.index(sa["state"]), sa["arsn"])
                        for spi, sa in sorted(self.nv.data["sa"].items(), key=lambda kv: int(kv[0])))

    def boot_record(self) -> tuple[int, int, int]:
        """(boot count, consecutive unstable boots, safe latch) for housekeeping."""
        b = self.nv.data["boot"]
        return b["count"] & 0xFFFFFFFF, b["unstable"], int(b["safe_latch"])

    def _note_stable(self, t: float) -> None:
        """Uptime reached fdir.boot_stable_s: this boot was stable, the escalation count restarts."""
        boot = self.nv.data["boot"]
        if boot["unstable"] and not self.nv.lost and t - self.boot_t >= self.stable_s:
            boot["unstable"] = 0
            self.nv.commit()

    # -- queue and task ---------------------------------------------------------------------
    def enqueue(self, frame: bytes, t: float) -> None:
        """Queue a CLTU for the next run. The receiver checks it first, as processing will
        (`TcReceiver.prescreen`: CLTU, frame, MAC, anti-replay window; nothing committed), and
        refuses what fails without giving it a queue slot, so no flood of noise, forgeries or
        recorded frames can fill the queue ahead of a fresh command. While a queued frame may
        change the security or FARM state before this one's turn (an association procedure, a
        recovery, a COP control frame), only the CLTU and frame checks are made here: its
        verdict could change by then."""
        if len(frame) > self.link.max_cltu:
            self._reject("too_long", 0, 0, t)
            return
        try:
            reason, spi, arsn, carried = self.link.prescreen(frame)
        except Exception:  # noqa: BLE001 - no input may crash the receiver
            reason, spi, arsn, carried = "bad_packet", 0, 0, None
        if reason and (reason in ("bad_cltu", "bad_frame") or not self._state_changes_queued):
            if reason == FARM_DISCARD:
                self.farm_discards += 1
            else:
                self._reject(reason, spi, arsn, t)
        elif len(self.queue) >= self.queue_max:
            self._reject("queue_full", 0, 0, t)
        else:
            changes = carried is not None and self._changes_state(carried)
            self.queue.append(bytes(frame))
            self._queued_changes.append(changes)
            self._state_changes_queued += changes

    def _clear_queue(self) -> None:
        self.queue.clear()
        self._queued_changes.clear()
        self._state_changes_queued = 0

    @staticmethod
    def _changes_state(carried: bytes) -> bool:
        """A control frame, or a packet that runs an association procedure or the recovery."""
        if not carried:
            return True
        if len(carried) < 13 or carried[7] != d.PUS_SERVICE_FUNCTION or carried[8] != 1:
            return False  # the PUS-C TC secondary header: service at octet 7, subtype at 8
        fn = int.from_bytes(carried[11:13], "big")
        return fn in SA_PROCEDURES and fn != d.FN_SA_STATUS or fn == d.FN_TC_RECOVER

    def _dequeue(self) -> bytes:
        self._state_changes_queued -= self._queued_changes.popleft()
        return self.queue.popleft()

    def run(self, t: float) -> float:
        """The tc_handler task: due stored commands (services 11, 19), then queued CLTUs, as many
        as the budget pays for in all, then the trial countdown. -1: nothing to do."""
        self._note_stable(t)
        if not self.nv.lost:
            self.internal.extend(self.tables.due(t))
        if not self.queue and not self.internal and self.upload.trial is None:
            return -1.0
        cost = RUN_BASE_COST_S
        budget = self.frames_per_run
        # Stored commands first (they were due before this run), but while frames wait they take
        # at most half the run: an event-action whose command raises its own event again would
        # otherwise take every run, and the ground could never get the frame through that
        # deletes it (the lockout search found that loop).
        stored = budget if not self.queue else max(1, budget // 2)
        while self.internal and stored:
            self._run_stored(self.internal.popleft(), t)
            budget -= 1
            stored -= 1
            cost += FRAME_COST_S
        for _ in range(min(len(self.queue), budget)):
            self.process(self._dequeue(), t)
            cost += FRAME_COST_S
        if self.upload.trial is not None:
            self.upload.trial_runs_left -= 1
            if self.upload.trial_runs_left <= 0:
                tr = self.upload.trial
                self.upload.revert()
                self._model_event("trial_reverted", tr["version"], tr["sc"], t)
        return cost

    def process(self, frame: bytes, t: float) -> str | None:
        """Receive and execute one CLTU; returns the reject reason (None: accepted)."""
        try:
            reason, key_id, seq, packet = self.link.receive(frame)
        except Exception:  # noqa: BLE001 - no input may crash the handler
            reason, key_id, seq, packet = "bad_packet", 0, 0, b""
        if reason == FARM_DISCARD:
            self.farm_discards += 1  # COP-1: reported by the CLCW, retransmitted by the ground
            return reason
        if reason and reason != "state_corrupt" or reason == "state_corrupt" and not packet:
            self._reject(reason, key_id, seq, t)
            return reason
        if not packet:  # a COP-1 control command (Unlock, Set V(R)): done by the FARM
            self.accepted += 1
            return None
        if reason is None and (replies := self.cfdp.on_packet(packet, t)) is not None:
            self.accepted += 1  # a CFDP PDU (its own APID): replies go down at high priority
            for reply in replies:
                self.tm.sink(reply, True)
            for name, blob in self.cfdp.completed():
                self._stage_file(name, blob, t)
            return None
        try:
            tc = PusTc.unpack(packet)
            if len(packet) != tc.packet_len:
                raise ValueError("trailing bytes after the PUS packet")
        except Exception:  # noqa: BLE001 - CRC errors, truncation, bad headers
            self._reject("bad_packet", key_id, seq, t)
            return "bad_packet"
        if reason == "state_corrupt":  # authentic, but the ARSN cannot be judged: recovery only
            if not self._is_recovery(tc):
                self._reject(reason, key_id, seq, t)
                return reason
        self.accepted += 1
        self._execute(tc, t)
        return None

    def _run_stored(self, packet: bytes, t: float) -> None:
        """Execute a stored command (authenticated when it was loaded) like an uplinked one."""
        try:
            tc = PusTc.unpack(packet)
        except Exception:  # noqa: BLE001 - checked when stored; an upset copy is dropped, counted
            self._reject("bad_packet", 0, 0, t)
            return
        self.accepted += 1
        self._execute(tc, t)

    def _event_action(self, event_id: int) -> None:
        """Service 19: an event with an enabled definition queues its stored command (bounded)."""
        if self.nv.lost:
            return
        packet = self.tables.action_for(event_id)
        if packet is not None and len(self.internal) < self.queue_max:
            self.internal.append(packet)

    def monitor_event(self, monitor_id: int, event_id: int, state: int, value: float, t: float) -> None:
        """Service 12 check transition: the definition's event (rate-limited like every event)."""
        self.tm.event(event_id, "high", d.MONITOR_CHECK_STRUCT.pack(monitor_id, state, value), t)

    def _is_recovery(self, tc: PusTc) -> bool:
        data = bytes(tc.app_data)
        return ((tc.service, tc.message_subtype) == (d.PUS_SERVICE_FUNCTION, 1)
                and len(data) == d.FN_STRUCT.size + d.TC_RECOVER_STRUCT.size
                and d.FN_STRUCT.unpack_from(data)[0] == d.FN_TC_RECOVER)

    def _reject(self, reason: str, key_id: int, seq: int, t: float) -> None:
        self.rejected += 1
        self.last_reject = reason
        onboard = self.auth.last_seq(key_id) if not self.nv.lost else 0
        self.tm.event(
            d.EVENT_TC_REJECTED, "medium",
            d.TC_REJECTED_STRUCT.pack(d.TC_REJECT_REASONS.index(reason), key_id & 0xFFFF, seq & (2**64 - 1),
                                      onboard), t,
        )
        if self.nv.lost:  # the ground needs the nonce to recover: repeat it (rate-limited)
            self.tm.event(d.EVENT_TC_STATE_LOST, "high", d.TC_STATE_LOST_STRUCT.pack(self.nonce), t)

    # -- service 1 -----------------------------------------------------------------------------
    def _verif(self, subtype: int, req: bytes, t: float, code: str | None = None, text: str = "") -> None:
        data = req
        if code is not None:
            data += FailureNotice(
                ErrorCode(pfc=PFC_BITS, val=d.TC_FAILURES.index(code)), text.encode()[:MAX_FAIL_TEXT]
            ).pack()
        self.tm.emit(d.PUS_SERVICE_VERIFICATION, subtype, data, t)  # the encoder's APID counter

    def _execute(self, tc: PusTc, t: float) -> None:
        req = RequestId.from_sp_header(tc.sp_header).pack()
        action = self._lookup(tc)
        if tc.apid != self.apid:
            self._verif(d.TM_ACCEPT_FAIL, req, t, "apid_mismatch", f"apid {tc.apid} != {self.apid}")
            return
        if action is None:
            self._verif(d.TM_ACCEPT_FAIL, req, t, "unknown_command", f"service {tc.service},{tc.message_subtype}")
            return
        ack = tc.pus_tc_sec_header.ack_flags  # success reports only where asked (70-41C 5.3.5)
        if ack & d.ACK_ACCEPTANCE:
            self._verif(d.TM_ACCEPT_OK, req, t)
        if ack & d.ACK_START:
            self._verif(d.TM_START_OK, req, t)
        try:
            action(bytes(tc.app_data), t)
        except (UploadError, SaError, ps.StoreCommandError) as e:
            self._verif(d.TM_COMPLETE_FAIL, req, t, e.code, e.text)
            return
        except Exception as e:  # noqa: BLE001 - a malformed argument must not crash the executive
            self._verif(d.TM_COMPLETE_FAIL, req, t, "bad_arguments", type(e).__name__)
            return
        if ack & d.ACK_COMPLETION:
            self._verif(d.TM_COMPLETE_OK, req, t)

    def _lookup(self, tc: PusTc):
        return {
            (d.PUS_SERVICE_TEST, 1): self._ping,
            (d.PUS_SERVICE_FUNCTION, 1): self._function,
            (d.PUS_SERVICE_PARAMS, 3): self._param_load,
            (d.PUS_SERVICE_LARGE_PACKET, d.LPT_UPLINK_FIRST): self._part_first,
            (d.PUS_SERVICE_LARGE_PACKET, d.LPT_UPLINK_INTERMEDIATE): self._part_intermediate,
            (d.PUS_SERVICE_LARGE_PACKET, d.LPT_UPLINK_LAST): self._part_last,
            **self._table_commands,
            **self._storage_commands,
        }.get((tc.service, tc.message_subtype))

    @property
    def _table_commands(self) -> dict:
        tb = self.tables
        sch, mon, act = d.PUS_SERVICE_SCHEDULE, d.PUS_SERVICE_MONITORING, d.PUS_SERVICE_EVENT_ACTION

        def switch(name, on):
            return lambda data, t: tb.set_function(name, on)

        return {
            (sch, 1): switch("schedule_on", True), (sch, 2): switch("schedule_on", False),
            (sch, 3): lambda data, t: tb.reset_schedule(), (sch, 4): lambda data, t: tb.schedule_insert(data),
            (mon, 1): lambda data, t: tb.set_enabled("monitors", data, True),
            (mon, 2): lambda data, t: tb.set_enabled("monitors", data, False),
            (mon, 5): lambda data, t: tb.monitor_add(data), (mon, 6): lambda data, t: tb.delete("monitors", data),
            (mon, 15): switch("monitoring_on", True), (mon, 16): switch("monitoring_on", False),
            (act, 1): lambda data, t: tb.action_add(data), (act, 2): lambda data, t: tb.delete("actions", data),
            (act, 4): lambda data, t: tb.set_enabled("actions", data, True),
            (act, 5): lambda data, t: tb.set_enabled("actions", data, False),
            (act, 8): switch("actions_on", True), (act, 9): switch("actions_on", False),
        }

    @property
    def _storage_commands(self) -> dict:
        """Service 15 on the one packet store (ECSS-E-ST-70-41C 6.15; layouts in docs/tmtc.md)."""
        sto, rep = d.PUS_SERVICE_STORAGE, self._store_report

        def on_stores(action):
            def run(data, t):
                action(self._stores(data, 0))
            return run

        def at_time(action):
            def run(data, t):
                (t_s,) = ps.TIME_STRUCT.unpack_from(data)
                action(self._stores(data, ps.TIME_STRUCT.size), t_s)
            return run

        def set_attr(name, value):
            return on_stores(lambda st: setattr(st, name, value))

        return {
            (sto, ps.ENABLE_STORAGE): set_attr("storing", True),
            (sto, ps.DISABLE_STORAGE): set_attr("storing", False),
            (sto, ps.START_BY_TIME_RANGE): self._store_range,
            (sto, ps.DELETE_UP_TO): at_time(lambda st, t_s: st.delete_up_to(t_s)),
            (sto, ps.REPORT_CONTENT_SUMMARY): lambda data, t: rep(ps.CONTENT_SUMMARY_REPORT, data, t),
            (sto, ps.CHANGE_OPEN_RETRIEVAL_START): at_time(lambda st, t_s: st.move_open_start(t_s)),
            (sto, ps.RESUME_OPEN_RETRIEVAL): set_attr("open_in_progress", True),
            (sto, ps.SUSPEND_OPEN_RETRIEVAL): set_attr("open_in_progress", False),
            (sto, ps.ABORT_BY_TIME_RANGE): set_attr("range_active", False),
            (sto, ps.REPORT_STATUS): lambda data, t: rep(ps.STATUS_REPORT, data, t),
        }

    def _stores(self, data: bytes, offset: int) -> ps.PacketStore:
        """The store named by `N (u8), N x store id (u16)` at `offset` (N = 0: all stores)."""
        store = self.targets.downlink.store
        if store is None:
            raise ps.StoreCommandError("store_unknown", "this configuration has no TM store (downlink.store_bytes 0)")
        if len(data) < offset + 1:
            raise ps.StoreCommandError("bad_arguments", "expected N (u8) and N store ids (u16)")
        n = data[offset]
        ids = struct.unpack_from(f">{n}H", data, offset + 1) if len(data) == offset + 1 + 2 * n else None
        if ids is None:
            raise ps.StoreCommandError("bad_arguments", f"N = {n}: expected {offset + 1 + 2 * n} octets, got {len(data)}")
        if any(i != ps.STORE_ID for i in ids):
            raise ps.StoreCommandError("store_unknown", f"store ids {list(ids)}: the only store is {ps.STORE_ID}")
        return store

    def _store_range(self, data: bytes, t: float) -> None:
        """15,9: N (u8), then per store: id (u16), from, to (u32 s since mission start)."""
        if not data or len(data) != 1 + data[0] * ps.RANGE_STRUCT.size or data[0] == 0:
            raise ps.StoreCommandError("bad_arguments", "expected N >= 1 (u8), N x (u16 store id, u32 from, u32 to)")
        for k in range(data[0]):
            sid, t1, t2 = ps.RANGE_STRUCT.unpack_from(data, 1 + k * ps.RANGE_STRUCT.size)
            self._stores(struct.pack(">BH", 1, sid), 0).start_range(float(t1), float(t2))

    def _store_report(self, subtype: int, data: bytes, t: float) -> None:
        """15,12 -> 15,13 content summary, 15,18 -> 15,19 status: N (u8) then the records."""
        store = self._stores(data, 0)
        record = store.content_summary() if subtype == ps.CONTENT_SUMMARY_REPORT else store.status()
        self.tm.emit(d.PUS_SERVICE_STORAGE, subtype, bytes([1]) + record, t)

    # -- actions ------------------------------------------------------------------------------
    def _ping(self, data: bytes, t: float) -> None:
        self.tm.emit(d.PUS_SERVICE_TEST, 2, b"", t)

    def _function(self, data: bytes, t: float) -> None:
        if len(data) < 2:
            raise UploadError("bad_arguments", "missing function id")
        fn = d.FN_STRUCT.unpack_from(data)[0]
        args = data[2:]
        targets = self.targets
        if self.nv.lost and fn != d.FN_TC_RECOVER:
            raise UploadError("recovery_refused", "the TC state is lost: only FN_TC_RECOVER runs")
        if fn == d.FN_MODE:
            if len(args) != 1 or args[0] >= len(MODES):
                raise UploadError("bad_arguments", f"mode index must be 0..{len(MODES) - 1}")
            self._clear_safe_latch()
            if not targets.command_mode(MODES[args[0]]):
                raise UploadError("mode_refused", f"a fault holds the satellite below {MODES[args[0]]}")
        elif fn == d.FN_LOAD_TLE:
            if len(args) != 138:
                raise UploadError("bad_arguments", "TLE: two 69-character lines")
            try:
                targets.load_tle(args[:69].decode("ascii"), args[69:].decode("ascii"))
            except (TleError, UnicodeDecodeError, ValueError) as e:
                raise UploadError("bad_tle", str(e)[:MAX_FAIL_TEXT]) from None
        elif fn in (d.FN_TASK_ENABLE, d.FN_TASK_DISABLE):
            if len(args) != 1 or args[0] >= len(targets.specs) or targets.specs[args[0]].kind == "tc_handler":
                raise UploadError("unknown_task", "task index out of range (tc_handler cannot be disabled)")
            name = targets.specs[args[0]].name
            if fn == d.FN_TASK_ENABLE:
                targets.enable_task(name)
            else:
                targets.disable_task(name, "ground_command")
        elif fn == d.FN_MODEL_ROLLBACK:
            if args:
                raise UploadError("bad_arguments", "rollback takes no arguments")
            if self.upload.trial is not None:
                tr = self.upload.trial
                self.upload.revert()
                self._model_event("trial_reverted", tr["version"], tr["sc"], t)
            else:
                targets.learner.rollback()
                targets._report_update("rolled_back", t)
        elif fn == d.FN_MODEL_ACTIVATE:
            m = self.upload.activate()
            self._model_event("trial_started", m["version"], m["security_counter"], t)
        elif fn == d.FN_MODEL_CONFIRM:
            m = self.upload.confirm()
            self._model_event("confirmed", m["version"], m["security_counter"], t)
        elif fn in SA_PROCEDURES:
            self._sa_procedure(fn, args, t)
        elif fn == d.FN_TC_RECOVER:
            self._recover(args, t)
        elif fn in (d.FN_CAL_ROLLBACK, d.FN_CAL_REQUEST):
            if args:
                raise UploadError("bad_arguments", "calibration commands take no arguments")
            if fn == d.FN_CAL_ROLLBACK:
                if not targets.rollback_calibration(t):
                    raise UploadError("calibration_no_previous",
                                      "no previous calibration table (a diffuser sweep has overwritten it)")
            else:
                targets.request_calibration()
        elif fn == d.FN_PARAM_ACTIVATE:
            version = self.params.activate()
            self.tm.event(d.EVENT_PARAMS_ACTIVATED, "info", struct.pack(">I", version), t)
        else:
            raise UploadError("unknown_command", f"function {fn}")

    def _sa_procedure(self, fn: int, args: bytes, t: float) -> None:
        """Start, stop, rekey, set ARSN, status: a u16 SPI then the procedure's arguments."""
        arg_struct = SA_PROCEDURES[fn]
        if len(args) != arg_struct.size:
            raise UploadError("bad_arguments", f"expected {arg_struct.size} bytes (u16 SPI{SA_ARG_TEXT[fn]})")
        spi, *rest = arg_struct.unpack(args)
        auth = self.auth
        if fn == d.FN_SA_START:
            auth.start(spi)
        elif fn == d.FN_SA_STOP:
            auth.stop(spi)
        elif fn == d.FN_SA_REKEY:
            auth.rekey(spi, rest[0])
        elif fn == d.FN_SA_SET_ARSN:
            auth.set_arsn(spi, rest[0])
        sa = auth._known(spi)
        self.tm.event(d.EVENT_SA_STATUS, "info", d.SA_STATUS_STRUCT.pack(
            spi, sa["key"], SA_STATES.index(sa["state"]), sa["arsn"]), t)

    def _recover(self, args: bytes, t: float) -> None:
        """Leave the lost state (the only command that runs in it): the nonce must be this boot's."""
        if not self.nv.lost:
            raise UploadError("recovery_refused", "the TC state is not lost")
        nonce, arsn_floor, sc_floor = d.TC_RECOVER_STRUCT.unpack(args)
        if nonce != self.nonce:
            raise UploadError("recovery_refused", "nonce is not this boot's (see event TC_STATE_LOST)")
        self.nv.data["sc"] = sc_floor
        self.auth.recover(arsn_floor)
        boot = self.nv.data["boot"]
        boot["count"] += 1  # the boot that found the state lost is counted now
        self.nv.commit()

    def _clear_safe_latch(self) -> None:
        boot = self.nv.data["boot"]
        if boot["safe_latch"] or boot["unstable"]:
            boot["safe_latch"], boot["unstable"] = False, 0
            self.nv.commit()

    def _param_load(self, data: bytes, t: float) -> None:
        self.params.load(data)

    # -- service 13: large packet uplink (ECSS-E-ST-70-41C 6.13, 8.13) ------------------------
    def _part_first(self, data: bytes, t: float) -> None:
        self._lpt_part(PART_FIRST, data, t)

    def _part_intermediate(self, data: bytes, t: float) -> None:
        self._lpt_part(PART_INTERMEDIATE, data, t)

    def _part_last(self, data: bytes, t: float) -> None:
        self._lpt_part(PART_LAST, data, t)

    def _lpt_part(self, kind: str, data: bytes, t: float) -> None:
        """One part: u16 transaction id, u16 part sequence number, the part's octets. Aborted
        transactions are reported by TM[13,16] (even when this TC's completion fails)."""
        if len(data) <= d.LPT_PART_STRUCT.size:
            raise UploadError("bad_arguments", "expected u16 transaction id, u16 part sequence number, part")
        tid, seq = d.LPT_PART_STRUCT.unpack_from(data)
        sessions = self.nv.data["upload_sessions"]
        try:
            m = self.upload.receive_part(kind, tid, seq, data[d.LPT_PART_STRUCT.size :])
        except UploadError as e:
            if getattr(e, "package_refused", False):
                self._model_event("refused", 0, 0, t)
            raise
        finally:
            self._report_aborts(t)
        if m is not None:
            self._model_event("verified", m["version"], m["security_counter"], t)
        elif self.nv.data["upload_sessions"] != sessions and self.upload.transaction() == tid:
            self._model_event("session_open", 0, 0, t)  # a first part began a transaction

    def _report_aborts(self, t: float) -> None:
        """TM[13,16] for every service 13 transaction the uploader aborted."""
        for aborted, code in self.upload.take_aborts():
            self.tm.emit(d.PUS_SERVICE_LARGE_PACKET, d.LPT_UPLINK_ABORT,
                             d.LPT_ABORT_STRUCT.pack(aborted, d.TC_FAILURES.index(code)), t)

    def _stage_file(self, name: str, blob: bytes, t: float) -> None:
        """A file CFDP delivered: a model package goes through the signed-manifest checks (an
        open service 13 transaction it replaces is aborted: TM[13,16]); a parameter table
        (magic PARAM_TABLE_MAGIC, then a 20,3 body) is checked and staged like a 20,3 load, and
        activated by FN_PARAM_ACTIVATE. Its PDUs came in authenticated command frames, as a 20,3
        would; a model package is also signed end to end because it replaces what flies."""
        if blob.startswith(d.CAL_TABLE_MAGIC):
            self._stage_calibration(blob, t)
            return
        if blob.startswith(d.PARAM_TABLE_MAGIC):
            try:
                n = self.params.load(blob[len(d.PARAM_TABLE_MAGIC):])
            except UploadError as e:
                self.tm.event(d.EVENT_PARAMS_STAGED, "medium",
                                  d.PARAMS_STAGED_STRUCT.pack(1, d.TC_FAILURES.index(e.code), 0), t)
                return
            self.tm.event(d.EVENT_PARAMS_STAGED, "info", d.PARAMS_STAGED_STRUCT.pack(0, 0, n), t)
            return
        try:
            m = self.upload.stage_package(blob)
        except UploadError:
            self._model_event("refused", 0, 0, t)
            return
        finally:
            self._report_aborts(t)
        self._model_event("verified", m["version"], m["security_counter"], t)

    def _stage_calibration(self, blob: bytes, t: float) -> None:
        """A calibration table file: shape checked, then the candidate of the onboard gate."""
        import numpy as np

        head = d.CAL_TABLE_HEAD
        cols = bands = 0
        ok = False
        if len(blob) >= head.size:
            _, cols, bands = head.unpack_from(blob)
            n = cols * bands
            if len(blob) == head.size + 4 * n:
                q = np.frombuffer(blob, dtype=">i2", offset=head.size).astype(np.int16).reshape(2, cols, bands)
                ok = self.targets.learning.install_calibration(q[0], q[1])
        self.tm.event(d.EVENT_CALIBRATION_FILE, "info" if ok else "medium",
                          d.CALIBRATION_FILE_STRUCT.pack(int(ok), cols & 0xFFFF, bands & 0xFFFF), t)

    def _model_event(self, stage: str, version: int, sc: int, t: float) -> None:
        self.tm.event(
            d.EVENT_MODEL_UPLOAD, "info" if stage != "refused" else "medium",
            d.MODEL_UPLOAD_STRUCT.pack(d.MODEL_UPLOAD_STAGES.index(stage), version & 0xFFFFFFFF, sc & 0xFFFFFFFF), t,
        )
