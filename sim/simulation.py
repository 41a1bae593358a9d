"""The simulation loop: world truth and flight software advanced together, tick by tick.

Truth comes in vectorised blocks (`World.block`). Within a block only the ticks at
which the executive has a task due are stepped in Python; the frames between them
are crossed in one call: the battery integrates over them in a compiled kernel
(the same arithmetic as a single step) and the flight software drains its
downlink for them (`FlightSoftware.idle`). Telemetry is byte-identical to
stepping every frame, which `skip_idle=False` does and the tests compare.
"""

from __future__ import annotations

import bisect
import copy
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from flight_sw.app import FlightSoftware
from flight_sw.config.schema import MissionConfig
from flight_sw.ml.kernels import classify_into, count_equal
from flight_sw.ml.labels import SOURCE_SELF
from flight_sw.ml.model import FeatureExtractor, ModelImage
from flight_sw.tmtc.nv_store import RedundantStore
from sim.ground_link import GroundTerminal
from sim.ground_loop import GroundLoopArm
from sim.prelaunch import prelaunch_teacher, reference_data, train_prelaunch_model
from sim.world import PayloadTruth, World

#: Ticks of truth prepared per vectorised block (6 h at 1 s frames).
BLOCK_TICKS = 21600
#: Truth series sampling period in truth.npz.
TRUTH_SAMPLE_S = 30.0
#: The review scores the teacher model on every n-th inference frame (it costs as much as the rest).
TEACHER_SCORE_EVERY = 4


def spawn_rngs(seed: int) -> dict[str, np.random.Generator]:
    """One generator per component, spawned from the mission seed."""
    names = ("prelaunch", "scene", "payload_labels", "sites")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children, strict=True)}


@dataclass
class TruthLog:
    """Simulator truth kept for the review (sampled every TRUTH_SAMPLE_S)."""

    t_s: list = field(default_factory=list)
    soc: list = field(default_factory=list)
    solar_w: list = field(default_factory=list)
    load_w: list = field(default_factory=list)
    illumination: list = field(default_factory=list)
    in_contact: list = field(default_factory=list)
    acc_t_s: list = field(default_factory=list)
    acc_onboard: list = field(default_factory=list)
    acc_frozen: list = field(default_factory=list)
    acc_ground: list = field(default_factory=list)
    acc_calibration: list = field(default_factory=list)
    acc_selftrain: list = field(default_factory=list)
    acc_bound: list = field(default_factory=list)
    acc_teacher: list = field(default_factory=list)  # every TEACHER_SCORE_EVERY-th scored frame
    acc_teacher_t_s: list = field(default_factory=list)
    # One row per labelled batch the onboard learner received: time, source, count, and how many
    # agree with truth (scored here for the review; the flight software never sees it).
    lab_t_s: list = field(default_factory=list)
    lab_source: list = field(default_factory=list)
    lab_n: list = field(default_factory=list)
    lab_agree: list = field(default_factory=list)
    drift_alarm_t_s: list = field(default_factory=list)
    min_soc: float = 1.0


class Simulation:
    def __init__(
        self,
        cfg: MissionConfig,
        seed: int,
        duration_s: float,
        downlink_sink: Callable[[bytes], None],
        skip_idle: bool = True,
        image: ModelImage | None = None,
        optimizer=None,
        executor_factory: Callable[[FlightSoftware], object] | None = None,
        device_url: str | None = None,
        uplink: list[tuple[int, bytes]] | None = None,
        teacher=None,
        ground_terminal: GroundTerminal | None = None,
        remote=None,
        world_arms_only: bool = False,
    ):
        """`executor_factory(fsw)` may return an object whose `run_tick(tick)` replaces
        `fsw.step(tick)` (the real-time executive for HIL); idle frames are then not skipped.

        `uplink`: (contact group, CLTU) pairs radiated as they are at the start of each group's
        contact. `ground_terminal` (sim.ground_link): a ground station running a command link;
        it sees every downlinked CADU (the run's `downlink_sink` still gets them all) and
        radiates what it wants during contacts, stepped frame by frame while it has work.

        `remote` (sim.remote_flight.RemoteFlight): the flight software runs in another process
        and is driven over the world link. The world serves its payload from here; the arms
        that need the flight software's insides (its labels, its calibration table, its drift
        alarms: ground loop, calibration only, teacher) are not scored, and there is no
        checkpoint (the flight process keeps its own state in its NV folder).
        `world_arms_only`: score only those arms in an in-process run too (the like-for-like
        baseline of the split deployment's speed)."""
        self.terminal = ground_terminal
        self._now_s = 0.0  # mission time of the frame being stepped or crossed (for the terminal)
        if ground_terminal is not None:
            sink = downlink_sink

            def downlink_sink(cadu: bytes) -> None:
                sink(cadu)
                ground_terminal.on_cadu(cadu, self._now_s)
        self.cfg = cfg
        self.frame_s = cfg.executive.minor_frame_s
        self.n_ticks = int(round(duration_s / self.frame_s))
        self.skip_idle = skip_idle
        self.rngs = spawn_rngs(seed)
        self.image = image or train_prelaunch_model(cfg, self.rngs["prelaunch"])
        self.teacher_image = teacher if teacher is not None else (
            prelaunch_teacher(cfg, seed) if "teacher" in cfg.payload.label_sources else None)
        self.world = World(cfg, self.n_ticks * self.frame_s, self.rngs["scene"], self.rngs["sites"])
        self.payload = PayloadTruth(self.world, self.rngs["payload_labels"])
        self.ground = GroundLoopArm(cfg, self.image, self.world.contacts)
        self.reference = reference_data(cfg, self.world.sites.reference_maps, self.teacher_image)
        # The flight computer's non-volatile memory: part of the world, kept in a checkpoint.
        self.nv_store = RedundantStore.in_memory(cfg.tmtc.max_upload_bytes)
        self.remote = remote is not None
        self.world_arms_only = world_arms_only or self.remote
        if remote is not None:
            remote.payload = self.payload
            remote.sink = downlink_sink
            self.fsw = remote
        else:
            self.fsw = FlightSoftware(
                cfg, self.image, self.payload, downlink_sink, optimizer=optimizer,
                check_energy_days=self.check_energy_days(cfg, duration_s),
                device_transport=self._device_transport(cfg, seed, device_url),
                reference=self.reference, tc_store=self.nv_store,
            )
            self.fsw.label_tap = self._on_labels
        fsw = self.fsw
        self._build_arms(cfg, seed)
        self._frozen_ext = FeatureExtractor(self.image)  # the same int8 network, own buffers
        self._frozen_feat = np.zeros_like(fsw.buffers["ml.batch_features"])
        self._frozen_head = np.ascontiguousarray(self.image.head, dtype=np.float64)
        self._frozen_scores = np.zeros_like(fsw.buffers["ml.batch_scores"])
        self._frozen_pred = np.zeros_like(fsw.buffers["ml.batch_pred"])
        self._cal_feat = np.zeros_like(self._frozen_feat)
        self.executor = executor_factory(fsw) if executor_factory else None
        if self.executor is not None:
            self.skip_idle = False  # every frame is paced in real time
        self._step = self.executor.run_tick if self.executor is not None else fsw.step
        self.tick = 0
        self.log = TruthLog(min_soc=self.world.battery.soc)
        # The ground station radiates plan group k at the start of the k-th contact of the run.
        self._uplink = sorted(uplink or [], key=lambda e: e[0])
        self._uplink_next = 0
        self.frames_uplinked = 0
        self._contact_starts = [p.start_s for p in self.world.contacts]
        self._sample_every = max(1, int(round(TRUTH_SAMPLE_S / self.frame_s)))

    @staticmethod
    def check_energy_days(cfg: MissionConfig, duration_s: float) -> float:
        """How far ahead the flight software checks its essential load: the run's length."""
        return max(duration_s / 86400.0, cfg.executive.minor_frame_s / 86400.0)

    @staticmethod
    def device_endpoint(cfg: MissionConfig, seed: int):
        """The emulated analog device of this mission and seed (its own generator)."""
        from sim.analog.endpoint import DeviceEndpoint

        child = np.random.SeedSequence(seed).spawn(4)[3]  # the device's own generator
        return DeviceEndpoint.from_config(cfg.device, child)

    @staticmethod
    def _device_transport(cfg: MissionConfig, seed: int, url: str | None):
        """For the analog backend: the emulated device in-process, or the HIL server at `url`."""
        if cfg.device.backend != "analog":
            return None
        from flight_sw.devices.transport import InProcessTransport, transport_from_url

        url = url or cfg.device.url
        if url.startswith("inproc://"):
            return InProcessTransport(Simulation.device_endpoint(cfg, seed))
        return transport_from_url(url)

    @property
    def done(self) -> bool:
        return self.tick >= self.n_ticks

    def advance(self, n_ticks: int) -> None:
        """Advance up to n ticks (block by block)."""
        end = min(self.tick + n_ticks, self.n_ticks)
        while self.tick < end:
            block_start = (self.tick // BLOCK_TICKS) * BLOCK_TICKS
            block_n = min(BLOCK_TICKS, self.n_ticks - block_start)
            stop = min(end, block_start + block_n)
            self._run_span(block_start, block_n, self.tick, stop)
            self.tick = stop

    def _block(self, block_start: int, block_n: int):
        cached = getattr(self, "_blk", None)
        if cached is None or cached.tick0 != block_start:
            self._blk = self.world.block(block_start, block_n)
            self._blk_lists = (
                self._blk.solar_w.tolist(), self._blk.in_contact.tolist(),
                self._blk.site.tolist(), self._blk.sun_elev_deg.tolist(),
            )
            self._soc = np.empty(block_n)
            self._load = np.empty(block_n)
        return self._blk

    def _run_span(self, block_start: int, block_n: int, t_from: int, t_to: int) -> None:
        blk = self._block(block_start, block_n)
        solar, contact, site, elev = self._blk_lists
        fsw, battery, payload = self.fsw, self.world.battery, self.payload
        inputs, outputs = fsw.inputs, fsw.outputs
        frame_s = self.frame_s
        base_w = self.cfg.power.bus_base_load_w
        soc_arr, load_arr = self._soc, self._load
        terminal = self.terminal
        tick = t_from
        while tick < t_to:
            i = tick - block_start
            nxt = fsw.next_due_tick(tick) if self.skip_idle else tick
            work = False
            if terminal is not None and contact[i]:
                t = tick * frame_s
                k = bisect.bisect_right(self._contact_starts, t) - 1
                work = terminal.pending(t, k)
                if work:
                    nxt = tick  # the link's timer and the CLCWs need every frame
            if nxt < 0 or nxt > tick:
                gap_end = t_to if nxt < 0 else min(nxt, t_to)
                if terminal is not None:  # stop at a contact start: the terminal may have a group for it
                    e = i + 1
                    while e < gap_end - block_start and not (contact[e] and not contact[e - 1]):
                        e += 1
                    gap_end = e + block_start
                j = gap_end - block_start
                battery.integrate(blk.solar_w[i:j], base_w, frame_s, tick * frame_s, soc_arr[i:j])
                load_arr[i:j] = base_w
                # Drain per stretch of constant contact state.
                seg = i
                while seg < j:
                    c = contact[seg]
                    e = seg + 1
                    while e < j and contact[e] == c:
                        e += 1
                    inputs.in_contact = c
                    self._now_s = (block_start + seg) * frame_s
                    fsw.idle(block_start + seg, e - seg, c)
                    seg = e
                tick = gap_end
                continue
            t = tick * frame_s
            if self._uplink_next < len(self._uplink) and contact[i]:
                self._radiate(t)
            self._now_s = t
            if work:
                for cltu in terminal.radiate(t, k):
                    fsw.telecommand(cltu)
                    self.frames_uplinked += 1
            inputs.soc = battery.soc
            inputs.solar_power_w = solar[i]
            inputs.in_contact = contact[i]
            payload.set_state(t, site[i], elev[i])
            self._step(tick)
            load_w = base_w + outputs.energy_j / frame_s
            battery.step(solar[i], load_w, frame_s, t)
            soc_arr[i] = battery.soc
            load_arr[i] = load_w
            if outputs.predictions_valid:
                self._score(t)
            tick += 1
        self._sample_truth(blk, block_start, t_from, t_to)

    def _radiate(self, t: float) -> None:
        """Hand the frames of every plan group whose contact has started to the flight radio."""
        contacts = self.world.contacts
        while self._uplink_next < len(self._uplink):
            group, frame = self._uplink[self._uplink_next]
            if group >= len(contacts) or contacts[group].start_s > t:
                break
            self.fsw.telecommand(frame)
            self._uplink_next += 1
            self.frames_uplinked += 1

    def _build_arms(self, cfg: MissionConfig, seed: int) -> None:
        """The comparison arms (sim.arms) and the review's own copy of the teacher."""
        from flight_sw.ml.teacher import Teacher
        from sim.arms import BoundArm, SelfTrainArm

        self.selftrain = SelfTrainArm(cfg, self.image)
        self.bound = BoundArm(cfg, self.image)
        b = cfg.payload.samples_per_acquisition
        self.review_teacher = Teacher(self.teacher_image, batch=b) if self.teacher_image is not None else None
        self._t_labels = np.zeros(b, np.int64)
        self._t_conf = np.zeros(b)
        self._alarms_seen = 0

    def _on_labels(self, source: int, t: float, pixels: np.ndarray, labels: np.ndarray,
                   ancillary: np.ndarray) -> None:
        """The flight software's label tap: keep the samples for the ground loop, score agreement.

        The ground loop gets the pixels as the payload delivered them: it stands for a
        satellite without onboard calibration (the flight software's are corrected)."""
        buffer = self.fsw.learning._pixels if source == SOURCE_SELF else self.fsw.learning._cal_pixels
        truth = self.payload.truth_of_rows(buffer, ancillary)
        log = self.log
        log.lab_t_s.append(t)
        log.lab_source.append(source)
        log.lab_n.append(len(labels))
        log.lab_agree.append(int(np.count_nonzero(truth == labels)))
        self.ground.on_labelled(t, self.payload.drawn_rows(buffer, ancillary), labels)

    def _score(self, t: float) -> None:
        """Truth accuracy of every arm on this batch (the flight software's inference frame)."""
        if self.world_arms_only:
            self._score_world_arms(t)
            return
        fsw = self.fsw
        truth = self.payload.truth_for(fsw._pixels)
        n = truth.shape[0]
        log = self.log
        log.acc_t_s.append(t)
        log.acc_onboard.append(count_equal(fsw.outputs.predictions, truth, n) / n)
        # The arms without onboard calibration see the pixels as delivered; the flight software's
        # buffer holds them corrected by its active calibration table.
        self._frozen_ext.features_into(self.payload.drawn_rows(fsw._pixels), self._frozen_feat)
        feat = self._frozen_feat
        classify_into(feat, self._frozen_head, self._frozen_scores, self._frozen_pred)
        log.acc_frozen.append(count_equal(self._frozen_pred, truth, n) / n)
        alarms = fsw.learner.drift_free.alarms + fsw.learner.drift_labels.alarms
        if alarms > self._alarms_seen:
            self._alarms_seen = alarms
            log.drift_alarm_t_s.append(t)
            self.ground.on_drift_alarm(t)
        self.ground.advance(t)
        log.acc_ground.append(count_equal(self.ground.predict(feat), truth, n) / n)
        log.acc_selftrain.append(count_equal(self.selftrain.step(feat), truth, n) / n)
        log.acc_bound.append(count_equal(self.bound.step(feat, truth), truth, n) / n)
        # Calibration only: the frozen model behind the flight software's calibration table. While
        # the flight extractor is the image's (no input adaptation, no last-layer update active),
        # its features of this corrected batch are the frozen ones and are reused.
        reuse = (fsw.learner.feat_source is fsw._pixels and fsw.adaptation.version == 0
                 and fsw.learning.layer.version == 0)
        cal_feat = fsw.learner.feat if reuse else self._cal_feat
        if cal_feat is self._cal_feat:
            self._frozen_ext.features_into(fsw._pixels, cal_feat)
        classify_into(cal_feat, self._frozen_head, self._frozen_scores, self._frozen_pred)
        log.acc_calibration.append(count_equal(self._frozen_pred, truth, n) / n)
        if self.review_teacher is not None and len(log.acc_t_s) % TEACHER_SCORE_EVERY == 0:
            self.review_teacher.label_into(fsw._pixels, n, self._t_labels, self._t_conf)
            log.acc_teacher.append(count_equal(self._t_labels, truth, n) / n)
            log.acc_teacher_t_s.append(t)

    def _score_world_arms(self, t: float) -> None:
        """The arms a world can score without the flight software's insides: onboard (from the
        predictions it answered), frozen, self-training and the bound (from the pixels drawn)."""
        pixels = self.fsw.buffers["ml.batch_pixels"]  # the world's copy of the frame it served
        truth = self.payload.truth_for(pixels)
        n = truth.shape[0]
        log = self.log
        log.acc_t_s.append(t)
        log.acc_onboard.append(count_equal(self.fsw.outputs.predictions, truth, n) / n)
        self._frozen_ext.features_into(self.payload.drawn_rows(pixels), self._frozen_feat)
        feat = self._frozen_feat
        classify_into(feat, self._frozen_head, self._frozen_scores, self._frozen_pred)
        log.acc_frozen.append(count_equal(self._frozen_pred, truth, n) / n)
        log.acc_selftrain.append(count_equal(self.selftrain.step(feat), truth, n) / n)
        log.acc_bound.append(count_equal(self.bound.step(feat, truth), truth, n) / n)

    def _sample_truth(self, blk, block_start: int, t_from: int, t_to: int) -> None:
        i0, i1 = t_from - block_start, t_to - block_start
        log = self.log
        soc = self._soc[i0:i1]
        if len(soc):
            log.min_soc = min(log.min_soc, float(soc.min()))
        every = self._sample_every
        first = (-t_from) % every
        for i in range(i0 + first, i1, every):
            lo = max(i - every + 1, i0)
            log.t_s.append(float(blk.t_s[i]))
            log.soc.append(float(self._soc[i]))
            log.solar_w.append(float(blk.solar_w[i]))
            log.load_w.append(float(self._load[lo : i + 1].mean()))
            log.illumination.append(float(blk.illumination[i]))
            log.in_contact.append(bool(blk.in_contact[i]))

    # -- snapshot / resume -------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Flight snapshot plus the simulator's own state (battery, generators, tick, log)."""
        if self.remote:
            raise ValueError("no checkpoint of a split run: the flight process keeps its own state")
        sim_state = {
            "tick": self.tick,
            "battery": self.world.battery.state.copy(),
            "scene_stream": self.world.scene.stream_state(),
            "rng_payload": self.payload.rng.bit_generator.state,
            "log": copy.deepcopy(self.log),
            "ground": copy.deepcopy(self.ground),
            "arms": copy.deepcopy((self.selftrain, self.bound, self._alarms_seen)),
            "uplink_next": self._uplink_next,
            "frames_uplinked": self.frames_uplinked,
            "terminal": self.terminal.state_dict() if self.terminal is not None else None,
            # the emulated device is part of the world: it keeps running across a flight reboot
            "device": self._device_endpoint(),
            "nv": bytes(self.nv_store.device.cells),
        }
        return pickle.dumps((self.fsw.snapshot(), sim_state))

    def _device_endpoint(self):
        """The in-process device emulator, if the flight software talks to one."""
        transport = getattr(self.fsw.solver, "transport", None)
        return getattr(transport, "endpoint", None)

    def restore(self, blob: bytes) -> None:
        fsw_blob, sim_state = pickle.loads(blob)  # noqa: S301 - our own snapshot format
        if (self.terminal is None) != (sim_state.get("terminal") is None):  # before anything changes
            raise ValueError("the checkpoint was taken " + ("with" if self.terminal is None else "without")
                             + " a ground terminal; resume it the same way")
        self.nv_store.device.cells[:] = sim_state["nv"]
        self.fsw.restore(fsw_blob, reboot=False)  # a checkpoint resumed, not a flight reboot
        self.tick = sim_state["tick"]
        self.world.battery.state[:] = sim_state["battery"]
        self.world.scene.load_stream_state(sim_state["scene_stream"])
        self.payload.rng.bit_generator.state = sim_state["rng_payload"]
        self.log = sim_state["log"]
        self.ground = sim_state["ground"]
        self.selftrain, self.bound, self._alarms_seen = sim_state["arms"]
        self._uplink_next = sim_state["uplink_next"]
        self.frames_uplinked = sim_state.get("frames_uplinked", self.frames_uplinked)
        if self.terminal is not None:
            self.terminal.load_state_dict(sim_state["terminal"])
        if sim_state.get("device") is not None and self._device_endpoint() is not None:
            self.fsw.solver.transport.endpoint = sim_state["device"]
            self.fsw.solver.transport.reopen()
