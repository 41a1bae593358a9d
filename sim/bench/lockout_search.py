"""A stateful search for command lockouts (issue 14: "the satellite stays commandable").

Hypothesis drives a real flight software through random sequences of what can happen to a
command path: security-association procedures with random arguments (signed by any
association, operational or not), pings, floods of garbage, mode commands, reboots, power
cuts in the middle of an NV write, upsets that damage both NV copies, and onboard automation
loaded by the ground: time-tagged commands (PUS 11), monitoring definitions (PUS 12) and
event-actions (PUS 19) whose stored command is any of the above, model uploads by service 13
(parts in order, with gaps, repeated, superseded) with activation, confirm and rollback, and
sequence-controlled (Type-AD) frames through FOP-1 and FARM-1 with CLCWs lost. After every step a
model ground, which knows only what a real ground knows (its keys, the ARSNs it used, and
the telemetry: refusal events with the onboard ARSN, the lost-state nonce), must get a ping
and a mode command through. A sequence after which it cannot is a lockout.

Used by tests/flight_sw/test_lockout_search.py (a short search) and `flightsim bench tmtc`
(`tmtc.lockout_states_found`, a longer one).
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from flight_sw.config.schema import MODES
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.nv_store import MemoryDevice, NvLayout, RedundantStore
from flight_sw.tmtc.security import ARSN_SET_MAX, SEQ_MAX


class PowerCut(BaseException):  # noqa: N818 - not an error: the power went (no `except Exception` may catch it)
    """Raised by `CuttableDevice` mid-write."""


class CuttableDevice(MemoryDevice):
    """NV memory whose next write can be cut after a given number of bytes."""

    def __init__(self, size: int):
        super().__init__(size)
        self.cut_after: int | None = None

    def write(self, offset: int, data: bytes) -> None:
        if self.cut_after is not None and self.cut_after < len(data):
            k, self.cut_after = self.cut_after, None
            super().write(offset, data[:k])
            raise PowerCut
        super().write(offset, data)


class GroundModel:
    """What the ground knows and does to regain commanding: keys, its ARSNs, the telemetry."""

    def __init__(self, cfg):
        from ground_tools.uplink import Uplinker

        self.cfg = cfg
        self.command_spis = [k.key_id for k in cfg.tmtc.keys if k.purpose == "command"]
        self.uplinkers = {spi: Uplinker(cfg, key_id=spi) for spi in self.command_spis}

        self.materials = {k.key_id: (bytes.fromhex(k.key_hex), k.service) for k in cfg.tmtc.keys}

    def highest_arsn(self) -> int:
        return max(up.seq for up in self.uplinkers.values())

    def saw_status(self, spi: int, key_slot: int) -> None:
        """An SA_STATUS event: the association now signs with `key_slot`'s key (after a rekey)."""
        if spi in self.uplinkers and key_slot in self.materials:
            self.uplinkers[spi].use_key(*self.materials[key_slot])

    def reset_to_config(self) -> None:
        """After a lost record the associations are the config's again (keys included)."""
        for spi, up in self.uplinkers.items():
            up.use_key(*self.materials[spi])


class CommandPathMachine(RuleBasedStateMachine):
    """Subclassed with `cfg` and `image` set (see `machine_for`)."""

    cfg = None
    image = None

    def __init__(self):
        super().__init__()
        cfg = self.cfg
        self.layout = NvLayout(cfg.tmtc.max_upload_bytes)
        self.device = CuttableDevice(self.layout.size)
        self.store = RedundantStore(self.device, self.layout)
        self.ground = GroundModel(cfg)
        self.boots = 0
        self.tm: list[bytes] = []
        self.fsw = None
        self._boot()

    # -- plumbing ------------------------------------------------------------------------------
    def _boot(self) -> None:
        from flight_sw.app import FlightSoftware

        class Dark:
            def acquire(self, pixels, ancillary):
                return 0

        self.boots += 1
        self.tm.clear()
        while True:
            try:
                self.fsw = FlightSoftware(
                    self.cfg.with_optimizer("digital"), self.image, Dark(), lambda p: None, tc_store=self.store,
                    entropy=np.random.default_rng([11, self.boots]).bytes)
                break
            except PowerCut:  # a cut during the boot's own NV write: boot again
                self.boots += 1
        for ring in self.fsw.downlink.rings:
            while ring.count:
                self.tm.append(ring.pop())
        self.fsw.tm.sink = lambda packet, high=False: self.tm.append(packet)

    def _signer(self, index: int):
        """The ground's uplinker for its index-th command association, its counter kept in range
        (a ground at the end of the ARSN space sends SEQ_MAX and reads the window back)."""
        spis = self.ground.command_spis
        up = self.ground.uplinkers[spis[index % len(spis)]]
        up.seq = min(up.seq, SEQ_MAX)
        return up

    def _send(self, *frames: bytes) -> None:
        seen = len(self.tm)
        try:
            for f in frames:
                self.fsw.telecommand(f)
            self.fsw.tc.run(self.fsw.t_s)
        except PowerCut:
            self._boot()
            return
        for spi, key_slot, _, _ in self._events(d.EVENT_SA_STATUS, d.SA_STATUS_STRUCT, since=seen):
            self.ground.saw_status(spi, key_slot)

    def _events(self, event_id: int, layout: struct.Struct, since: int = 0) -> list[tuple]:
        from spacepackets.ecss import PusTm

        out = []
        for raw in self.tm[since:]:
            p = PusTm.unpack(raw, timestamp_len=d.CDS_SHORT_LEN)
            data = bytes(p.source_data)
            if p.service == d.PUS_SERVICE_EVENT and d.EVENT_ID_STRUCT.unpack_from(data)[0] == event_id:
                out.append(layout.unpack_from(data, 2))
        return out

    def _sa_report(self) -> list[tuple]:
        from spacepackets.ecss import PusTm

        for raw in self.tm:
            p = PusTm.unpack(raw, timestamp_len=d.CDS_SHORT_LEN)
            data = bytes(p.source_data)
            if p.service == d.PUS_SERVICE_HK and d.SID_STRUCT.unpack_from(data)[0] == d.HK_SA_SID:
                size = d.HK_SA_STRUCT.size
                return [d.HK_SA_STRUCT.unpack_from(data, 2 + i * size) for i in range((len(data) - 2) // size)]
        return []

    # -- what can happen -------------------------------------------------------------------------
    @rule(proc=st.sampled_from([d.FN_SA_START, d.FN_SA_STOP, d.FN_SA_REKEY, d.FN_SA_SET_ARSN, d.FN_SA_STATUS]),
          signer=st.integers(0, 3), spi=st.sampled_from([0, 1, 2, 3, 7]), key=st.sampled_from([1, 2, 3, 9]),
          arsn=st.one_of(st.integers(0, 3000), st.integers(ARSN_SET_MAX - 3000, ARSN_SET_MAX + 3000),
                         st.integers(SEQ_MAX - 3000, SEQ_MAX)))
    def sa_procedure(self, proc, signer, spi, key, arsn):
        up = self._signer(signer)
        args = {d.FN_SA_REKEY: struct.pack(">HH", spi, key), d.FN_SA_SET_ARSN: struct.pack(">HQ", spi, arsn)}
        self._send(up.function(proc, args.get(proc, struct.pack(">H", spi))))
        if proc == d.FN_SA_SET_ARSN and spi in self.ground.uplinkers and arsn <= ARSN_SET_MAX:
            self.ground.uplinkers[spi].seq = max(self.ground.uplinkers[spi].seq, arsn + 1)

    @rule(signer=st.integers(0, 3), jump=st.sampled_from([0, 0, 1, 5000, 2**40]))
    def ping(self, signer, jump):
        up = self._signer(signer)
        up.seq = min(up.seq + jump, SEQ_MAX)  # the ground's counter may be wrong
        self._send(up.ping())

    @rule(n=st.integers(1, 100), seed=st.integers(0, 2**16))
    def garbage(self, n, seed):
        rng = np.random.default_rng(seed)
        self._send(*(rng.bytes(int(rng.integers(0, 300))) for _ in range(n)))

    @rule(signer=st.integers(0, 3), mode=st.sampled_from(["SAFE", "NOMINAL", "TRAINING"]))
    def mode(self, signer, mode):
        self._send(self._signer(signer).mode(mode))

    def _stored(self, up, kind: int, spi: int, arg: int) -> bytes:
        """A stored command: an SA procedure, a mode, a task switch or a recovery (bare packet)."""
        fn = (d.FN_SA_STOP, d.FN_SA_START, d.FN_SA_REKEY, d.FN_SA_SET_ARSN, d.FN_MODE, d.FN_TASK_DISABLE,
              d.FN_TC_RECOVER)[kind]
        args = {d.FN_SA_REKEY: struct.pack(">HH", spi, arg % 4), d.FN_SA_SET_ARSN: struct.pack(">HQ", spi, arg),
                d.FN_MODE: bytes([arg % 3]), d.FN_TASK_DISABLE: bytes([arg % 16]),
                d.FN_TC_RECOVER: d.TC_RECOVER_STRUCT.pack(arg, arg, 0)}.get(fn, struct.pack(">H", spi))
        return up.packet(d.PUS_SERVICE_FUNCTION, 1, d.FN_STRUCT.pack(fn) + args)

    @rule(signer=st.integers(0, 3), kind=st.integers(0, 6), spi=st.sampled_from([1, 2, 3]),
          arg=st.one_of(st.integers(0, 3000), st.just(ARSN_SET_MAX)),
          when=st.sampled_from(["schedule", "event_action"]),
          event=st.sampled_from([d.EVENT_TC_REJECTED, d.EVENT_CONTACT, d.EVENT_BOOT, d.EVENT_MODE_CHANGE,
                                 d.EVENT_SA_STATUS, d.EVENT_MONITOR_CHECK]),
          delay_s=st.integers(0, 100))
    def automation(self, signer, kind, spi, arg, when, event, delay_s):
        """The ground loads a stored command: time-tagged, or run on an event."""
        up = self._signer(signer)
        packet = self._stored(up, kind, spi, arg)
        if when == "schedule":
            self._send(up.schedule([(int(self.fsw.t_s) + delay_s, packet)]))
        else:
            self._send(up.event_action_add(event, packet))

    @rule(signer=st.integers(0, 3), field=st.sampled_from(["tc_rejected", "tc_accepted", "boot_count", "mode"]),
          high=st.sampled_from([0.0, 1.0, 1e9]))
    def monitor(self, signer, field, high):
        """A monitoring definition that may trip at the next housekeeping (event EVENT_MONITOR_CHECK)."""
        self._send(self._signer(signer).monitor_add(1, field, -1.0, high, d.EVENT_MONITOR_CHECK))

    @rule(seconds=st.integers(1, 200))
    def time_passes(self, seconds):
        """Time-tagged commands fall due; housekeeping runs its monitors."""
        self.fsw.t_s += seconds
        try:
            self.fsw._task_housekeeping(self.fsw.t_s)
            self.fsw.tc.run(self.fsw.t_s)
        except PowerCut:
            self._boot()

    def _package(self, version: int):
        if not hasattr(self, "_packages"):
            self._packages = {}
        if version not in self._packages:
            from ground_tools.uplink import package_model

            self._packages[version] = package_model(
                self.cfg, self.image.head * (1.0 - 0.01 * version), version=version,
                parent_version=self.image.version, security_counter=version, chunk_size=48)
        return self._packages[version]

    @rule(signer=st.integers(0, 3), version=st.integers(2, 4), parts=st.lists(st.integers(1, 12), max_size=8))
    def upload_parts(self, signer, version, parts):
        """Service 13 parts of a signed model package, in any order, repeated or missing."""
        pkg = self._package(version)
        up = self._signer(signer)
        self._send(*(up.upload_part(pkg, n) for n in parts if n <= len(pkg.chunks)))

    @rule(signer=st.integers(0, 3), fn=st.sampled_from([d.FN_MODEL_ACTIVATE, d.FN_MODEL_CONFIRM,
                                                        d.FN_MODEL_ROLLBACK]))
    def trial(self, signer, fn):
        self._send(self._signer(signer).function(fn))

    @rule(n=st.integers(1, 6), clcw_loss=st.sampled_from([0.0, 0.5, 1.0]), seed=st.integers(0, 2**16))
    def sequence_controlled(self, n, clcw_loss, seed):
        """Pings as Type-AD frames through the ground's FOP-1 (sharing the first association's
        ARSN counter), CLCWs lost at random, for a minute of link time."""
        from flight_sw.tmtc.cop1 import Clcw
        from ground_tools.command_link import CommandLink

        up = self._signer(0)
        link = getattr(self, "_link", None)
        if link is None or link.up is not up:
            link = self._link = CommandLink(up, t1_initial_s=5.0)
        rng = np.random.default_rng(seed)
        t0 = self.fsw.t_s
        clcw = Clcw.unpack(self.fsw.tc.link.clcw())
        link.fop.terminate_ad()
        link.fop.set_vs(clcw.report_value)  # as a ground station does at the start of a pass
        if clcw.lockout:
            link.fop.initiate_ad_with_unlock(t0)
        else:
            link.fop.initiate_ad_without_clcw_check(t0)
        for _ in range(n):
            link.send_packet(up.packet(d.PUS_SERVICE_TEST, 1), t0)
        for k in range(60):
            now = t0 + k
            self._send(*link.radiate())
            if self.fsw is None:
                return
            if rng.random() >= clcw_loss:
                link.on_clcw(self.fsw.tc.link.clcw(), now)
            link.tick(now)

    @rule()
    def reboot(self):
        self._boot()

    @rule(k=st.integers(0, 4000))
    def power_cut_in_the_next_write(self, k):
        self.device.cut_after = k
        self._send(self._signer(0).ping())  # accepted or not, an NV write may follow; the cut reboots
        self.device.cut_after = None

    @precondition(lambda self: self.boots < 40)
    @rule(where=st.integers(20, 200))
    def upset_both_copies(self, where):
        rec = self.store.record
        for slot in range(2):
            self.device.cells[slot * rec.slot_bytes + where] ^= 0x5A
        self._boot()

    def _heard(self, service: int, subtype: int) -> bool:
        """A report of this kind is in the telemetry since it was last cleared."""
        from spacepackets.ecss import PusTm

        return any((p.service, p.message_subtype) == (service, subtype)
                   for p in (PusTm.unpack(raw, timestamp_len=d.CDS_SHORT_LEN) for raw in self.tm))

    def _completed(self, request_id: bytes) -> bool:
        """The telemetry holds a completion success report (1,7) for this request id."""
        from spacepackets.ecss import PusTm

        return any((p.service, p.message_subtype) == (d.PUS_SERVICE_VERIFICATION, d.TM_COMPLETE_OK)
                   and bytes(p.source_data)[:4] == request_id
                   for p in (PusTm.unpack(raw, timestamp_len=d.CDS_SHORT_LEN) for raw in self.tm))

    def _command_through(self, i: int, spi: int, make, done) -> bool:
        """Send a frame built by `make()`; on no success (`done()`), find the window from what the
        telemetry says (the refusal's onboard ARSN, else housekeeping SID 6) and send again."""
        up = self._signer(i)
        self.tm.clear()
        self._send(make())
        if done():
            return True
        refusals = self._events(d.EVENT_TC_REJECTED, d.TC_REJECTED_STRUCT)
        if refusals and d.TC_REJECT_REASONS[refusals[-1][0]] in ("replay", "outside_window"):
            up.seq = refusals[-1][3] + 1  # the window, as the refusal reports it
            self.tm.clear()
            self._send(make())
            if done():
                return True
        self.tm.clear()  # no refusal heard (rate-limited): wait for housekeeping
        self.fsw._task_housekeeping(self.fsw.t_s)
        for sa_spi, _, _, arsn in self._sa_report():
            if sa_spi == spi:
                up.seq = arsn + 1
        self.tm.clear()
        self._send(make())
        return done()

    # -- the property ------------------------------------------------------------------------------
    @invariant()
    def the_ground_can_command(self):
        """Recover if the record is lost, resynchronise ARSNs from refusals, then ping and command
        a mode, deciding with nothing but keys, own counters and telemetry (events, verification
        reports, housekeeping). The flight state is read only to score the outcome."""
        if self.fsw is None:
            return
        g = self.ground
        lost = self._events(d.EVENT_TC_STATE_LOST, d.TC_STATE_LOST_STRUCT)
        if lost:  # the satellite said its record is lost: the nonce-bound recovery, by any association
            floor = min(g.highest_arsn() + 1, ARSN_SET_MAX)
            g.reset_to_config()
            for spi in g.command_spis:
                up = g.uplinkers[spi]
                packet = up.packet(d.PUS_SERVICE_FUNCTION, 1, d.FN_STRUCT.pack(d.FN_TC_RECOVER)
                                   + d.TC_RECOVER_STRUCT.pack(lost[-1][0], floor, 0))
                self.tm.clear()
                self._send(up.protect_cltu(packet))
                if self._completed(packet[:4]):
                    break
            for up in g.uplinkers.values():
                up.seq = max(up.seq, floor + 1)
        for i, spi in enumerate(g.command_spis):
            up = self._signer(i)
            if self._command_through(i, spi, up.ping, lambda: self._heard(17, 2)):
                mode = up.packet(d.PUS_SERVICE_FUNCTION, 1, d.FN_STRUCT.pack(d.FN_MODE) + bytes([MODES.index("NOMINAL")]))
                for _ in range(3):  # a stored command may move the window between two frames
                    if self._command_through(i, spi, lambda up=up, mode=mode: up.protect_cltu(mode),
                                             lambda mode=mode: self._completed(mode[:4])):
                        # the ground heard the command completed; the truth must agree (scoring only)
                        assert self.fsw.mode == "NOMINAL", "a mode command completed but the mode is held"
                        return
                raise AssertionError("a mode command was accepted but never completed")
        raise AssertionError("lockout: no command association accepts a ping from the ground")


def machine_for(cfg, image) -> type[CommandPathMachine]:
    return type("CommandPath", (CommandPathMachine,), {"cfg": cfg, "image": image})
