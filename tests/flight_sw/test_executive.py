"""Executive: FDIR transitions, overrun and deadline accounting, the watchdog, fixed memory."""

import dataclasses
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest
from spacepackets.ecss import PusTm

from flight_sw.app import ACQ_DARK, ACQ_SCENE
from flight_sw.exec.realtime import PacedClock, RealTimeExecutive
from flight_sw.tmtc import dictionary as d


def _events(fsw, event_id):
    out = []
    for raw in fsw.test_packets:
        p = PusTm.unpack(raw, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == 5 and struct.unpack(">H", data[:2])[0] == event_id:
            out.append(data[2:])
    return out


def _mode_reasons(fsw):
    return [d.MODE_REASONS[e[2]] for e in _events(fsw, d.EVENT_MODE_CHANGE)]


def _run(fsw, start, n, soc=0.9):
    for tick in range(start, start + n):
        fsw.inputs.soc = soc
        fsw.inputs.in_contact = True  # drain everything to the test sink
        fsw.step(tick)
    return start + n


def _with_task(cfg, name, **changes):
    tasks = tuple(dataclasses.replace(t, **changes) if t.name == name else t for t in cfg.tasks)
    return dataclasses.replace(cfg, tasks=tasks)


def test_repeated_overruns_step_the_mode_down_until_the_ground_commands(make_fsw, default_cfg):
    # A 100 kFLOP/s CPU: inference and label work fit their (raised) budgets, the training
    # steps (a 33 x 33 solve, validation over the replay buffer) overrun theirs.
    cfg = dataclasses.replace(default_cfg, executive=dataclasses.replace(default_cfg.executive, cpu_flops_per_s=1e5))
    cfg = _with_task(_with_task(_with_task(cfg, "inference", compute_budget_s=0.2), "label_collect",
                                compute_budget_s=0.4), "extra_inference", compute_budget_s=0.2)
    cfg = dataclasses.replace(cfg, tasks=tuple(t for t in cfg.tasks if t.kind != "teacher_label"))
    fsw = make_fsw(cfg)
    # Feed labels so training has work; each solve step now costs far above its budget.
    from flight_sw.app import ACQ_SITE

    fsw.test_payload.mode = ACQ_SITE
    tick = _run(fsw, 0, 3000)
    training = next(s.index for s in fsw.specs if s.kind == "training")
    assert fsw.task_overruns[training] >= cfg.fdir.overrun_limit
    assert sum(fsw.task_overruns) == fsw.task_overruns[training]
    assert fsw.mode == "NOMINAL"
    assert "overruns" in _mode_reasons(fsw)
    assert fsw.task_deadline_misses[training] >= 1 and _events(fsw, d.EVENT_DEADLINE_MISS)
    # FDIR holds NOMINAL; only a ground command lifts it.
    tick = _run(fsw, tick, 600)
    assert fsw.mode == "NOMINAL"
    assert fsw.command_mode("TRAINING") and fsw.mode == "TRAINING"
    _run(fsw, tick, 1)  # downlink the event
    assert _mode_reasons(fsw)[-1] == "ground_command"


class _FlakySolver:
    """An optimizer backend whose health the test controls."""

    def __init__(self, inner):
        self.inner = inner
        self.failed = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def solve(self, q, b):
        return self.inner.solve(q, b)


def test_device_failure_holds_nominal_and_recovery_restores_training(make_fsw, default_cfg, image):
    from flight_sw.app import FlightSoftware
    from flight_sw.devices.optimizer import DigitalSolver
    from tests.flight_sw.conftest import FakePayload, GroundSink

    solver = _FlakySolver(DigitalSolver(default_cfg.model.feature_dim + 1, len(default_cfg.payload.classes), 1e-9))
    packets = []
    payload = FakePayload(default_cfg)
    fsw = FlightSoftware(default_cfg, image, payload, GroundSink(default_cfg, packets), optimizer=solver,
                         reference=payload.reference)
    fsw.test_packets = packets
    tick = _run(fsw, 0, 20)
    solver.failed = True
    tick = _run(fsw, tick, 20)
    assert fsw.mode == "NOMINAL"
    solver.failed = False
    _run(fsw, tick, 20)
    assert fsw.mode == "TRAINING"
    assert _mode_reasons(fsw)[-2:] == ["device_failure", "device_recovered"]


def test_invalid_model_is_rolled_back_then_caps_the_mode(make_fsw):
    fsw = make_fsw()
    tick = _run(fsw, 0, 10)
    fsw.learner.slots[fsw.learner.active][0, 0] = np.nan
    tick = _run(fsw, tick, 61)
    assert fsw.learner.rollbacks == 1 and fsw.mode == "TRAINING"  # the other slot was fine
    from flight_sw.app import ACQ_DARK

    fsw.test_payload.mode = ACQ_DARK  # no labels: no training update can replace the bad heads
    fsw.learner.state, fsw.learner.new_labels = 0, 0  # and no update in progress
    for slot in fsw.learner.slots:
        slot[0, 0] = np.inf
    _run(fsw, tick, 61)
    assert fsw.mode == "NOMINAL" and _mode_reasons(fsw)[-1] == "invalid_model"


def test_ground_command_refused_while_power_holds_safe(make_fsw, default_cfg):
    fsw = make_fsw()
    tick = _run(fsw, 0, 20, soc=default_cfg.power.battery.safe_mode_soc - 0.01)
    assert fsw.mode == "SAFE"
    assert not fsw.command_mode("TRAINING")
    assert fsw.mode == "SAFE"
    assert fsw.command_mode("SAFE") and fsw.mode == "SAFE"
    _run(fsw, tick, 20, soc=0.9)
    assert fsw.mode == "SAFE"  # the commanded target is now SAFE


class _HangingPayload:
    def __init__(self, cfg, hang_s=10.0):
        self.release = threading.Event()
        self.calls = 0
        self.hang_s = hang_s

    def acquire(self, pixels, ancillary):
        self.calls += 1
        if self.release.wait(self.hang_s):  # a hung imager driver ...
            return ACQ_SCENE
        return ACQ_DARK  # ... that gives up after hang_s: no image


def test_watchdog_disables_a_hung_task_and_the_executive_keeps_running(make_fsw, default_cfg):
    """Two imaging tasks hang on an imager driver that gives up after 1.5 s. The first hang
    is abandoned; the second comes while the first is still stuck, so no third thread
    starts: ticks are skipped until a stuck call returns, then essential work goes on."""
    payload = _HangingPayload(default_cfg, hang_s=1.5)
    fsw = make_fsw(payload=payload)
    # 20x real time (50 ms frames) and a 0.3 s grace: robust on a loaded 2-core machine.
    clock = PacedClock(default_cfg.executive.minor_frame_s, time.monotonic, time.sleep, speedup=20.0)
    rt = RealTimeExecutive(fsw, clock, grace_s=0.3)
    monitor = next(s.index for s in fsw.specs if s.kind == "power_monitor")
    peak = 0
    try:
        for tick in range(0, 90):
            fsw.inputs.in_contact = True
            rt.run_tick(tick)
            peak = max(peak, rt.threads())
    finally:
        payload.release.set()
        rt.close()
    # Every task that drives the hung imager hangs once, is disabled, and is never called again.
    # (the teacher task drives the imager only when a teacher model is on board; not here)
    assert fsw.teacher is None
    imaging = [s.index for s in fsw.specs if s.kind in ("inference", "label_collect")]
    assert rt.hung_tasks == len(imaging) == payload.calls
    assert all(fsw.task_disabled[i] for i in imaging)
    assert peak == 2 and rt.skipped_ticks > 0  # never a third worker: ticks waited instead
    runs_at_end = fsw.task_runs[monitor]
    assert runs_at_end >= 4  # essential work went on after the hangs
    watchdog = d.TASK_DISABLE_REASONS.index("watchdog")
    assert sorted(_events(fsw, d.EVENT_TASK_DISABLED)) == sorted(struct.pack(">BB", i, watchdog) for i in imaging)


class _SlowFsw:
    """A flight software stand-in whose every step takes `step_s` of wall time."""

    def __init__(self, step_s):
        self.step_s = step_s
        self.generation = 0
        self.current_task = None
        self.specs = ()
        self.steps = 0

    def step(self, tick, generation=None):
        time.sleep(self.step_s)
        self.steps += 1


def test_falling_far_behind_wall_time_is_lateness_not_a_hang_and_threads_stay_bounded():
    """Steps of 20 ms against frames of 0.2 ms (100x behind): every tick runs, late, on one
    worker; none is declared hung (each step is within its frame plus the grace from when it
    started) and no thread is started per tick."""
    fsw = _SlowFsw(0.02)
    clock = PacedClock(1.0, time.monotonic, time.sleep, speedup=5000.0)
    rt = RealTimeExecutive(fsw, clock, grace_s=0.1)
    before = threading.active_count()
    peak = before
    try:
        for tick in range(60):
            rt.run_tick(tick)
            peak = max(peak, threading.active_count())
    finally:
        rt.close()
    assert fsw.steps == 60 and rt.hung_tasks == 0 and rt.skipped_ticks == 0
    assert rt.late_ticks >= 50 and rt.jitter_s[-1] > 0.5  # it knows how late it is
    assert peak <= before + 1


class _StuckFsw(_SlowFsw):
    """Steps that block until their tick's event is set (a hung task per tick in `stuck`)."""

    def __init__(self, stuck):
        super().__init__(0.0)
        self.stuck = stuck
        self.ran = []

    def step(self, tick, generation=None):
        if tick in self.stuck:
            self.stuck[tick].wait(10.0)
        if generation is None or generation == self.generation:
            self.ran.append(tick)

    def disable_task(self, name, reason):
        pass


def test_at_most_one_abandoned_worker_at_a_time():
    stuck = {2: threading.Event(), 4: threading.Event(), 9: threading.Event()}
    fsw = _StuckFsw(stuck)
    clock = PacedClock(1.0, time.monotonic, time.sleep, speedup=100.0)  # 10 ms frames
    rt = RealTimeExecutive(fsw, clock, grace_s=0.02)
    before = threading.active_count()
    peak = 0
    try:
        for tick in range(14):
            if tick == 7:
                stuck[2].set()  # the abandoned step returns: room to abandon again
                time.sleep(0.05)  # (let it exit)
            rt.run_tick(tick)
            peak = max(peak, threading.active_count() - before)
    finally:
        for e in stuck.values():
            e.set()
        rt.close()
    assert peak <= 2 and rt.hung_tasks == 3
    # Tick 2 hangs: abandoned. Tick 4 hangs with tick 2 still stuck: kept, 5 and 6 skipped. At
    # tick 7 the first abandoned worker is gone, so tick 4's is abandoned and 7 runs on a new
    # worker. Tick 9 hangs with tick 4 still stuck: 10 to 13 skipped.
    assert rt.skipped_ticks == 6
    assert fsw.ran == [0, 1, 3, 7, 8]


def test_paced_clock_measures_lateness():
    now = [100.0]
    slept = []
    clock = PacedClock(1.0, lambda: now[0], lambda s: (slept.append(s), now.__setitem__(0, now[0] + s + 0.002)), 2.0)
    assert clock.wait_for(0) == 0.0  # the first tick starts the clock
    now[0] = 100.1
    assert clock.wait_for(1) == pytest.approx(0.002)
    assert slept[-1] == pytest.approx(0.4)


class _PoolPayload:
    """Cycles through pre-generated batches and calibration readings with np.copyto: allocates
    nothing per call. Calibration calls cycle through dark (60), sun diffuser (30) and nothing
    (10); the diffuser's readings switch between two gain maps every 1,000 calls, so routine
    calibrations find real changes to commit (the first inside the warm-up)."""

    def __init__(self, cfg, n=64):
        from flight_sw.memory import ANCILLARY_WIDTH
        from sim.scene import SceneTruth, diffuser_reflectance_factor

        scene = SceneTruth(cfg.payload, np.random.default_rng(0))
        b = cfg.payload.samples_per_acquisition
        self.px = np.zeros((n, b, cfg.payload.bands), np.float32)
        self.anc = np.zeros((n, b, ANCILLARY_WIDTH), np.int64)  # site 0, map row = the true class (fake_reference)
        lab = np.zeros(b, np.int64)
        rng = np.random.default_rng(1)
        for i in range(n):
            scene.sample(0.0, b, scene.base_mix, 45.0, self.px[i], lab, columns=self.anc[i, :, 3])
            self.anc[i, :, 1] = lab
            self.anc[i, :, 4] = np.arange(b)
        self.i = 0
        cols, bands = cfg.payload.detector_columns, cfg.payload.bands
        self.rho = diffuser_reflectance_factor(scene.band_centres_nm)
        self.dark = 0.001 + 0.001 * rng.standard_normal((8, cols, bands)).astype(np.float32)
        gain_b = np.ones((cols, bands))
        gain_b[:, 3:8] = 0.9
        self.diffuser = np.stack([self.rho * g + self.dark[0] for g in (np.ones((cols, bands)), gain_b)])
        self.cal_calls = 0

    def acquire(self, pixels, ancillary):
        self.i = (self.i + 1) % len(self.px)
        np.copyto(pixels, self.px[self.i])
        np.copyto(ancillary, self.anc[self.i])
        return 2  # a site frame: exercises site labelling, accumulation and training too

    def acquire_calibration(self, kind, first_column, out):
        from flight_sw.ml.radiometry import CAL_DARK, CAL_OK, CAL_UNAVAILABLE

        self.cal_calls += 1
        phase = self.cal_calls % 100
        m = out.shape[0]
        if kind == CAL_DARK:
            if phase >= 60:
                return CAL_UNAVAILABLE
            np.copyto(out, self.dark[self.cal_calls % 8, first_column:first_column + m])
            return CAL_OK
        if not 60 <= phase < 90:
            return CAL_UNAVAILABLE
        np.copyto(out, self.diffuser[(self.cal_calls // 1000) % 2, first_column:first_column + m])
        return CAL_OK


NUMPY_DOMAIN = 389047  # numpy's tracemalloc domain for array data


def _analog_fsw(cfg, payload, image):
    """The flight software with the mission's analog optimizer: the device emulator in-process,
    behind the real driver and byte protocol."""
    from flight_sw.app import FlightSoftware
    from flight_sw.config import load_mission_config
    from flight_sw.devices.transport import InProcessTransport
    from sim.analog.endpoint import DeviceEndpoint
    from tests.flight_sw.conftest import DEFAULT, fake_reference

    analog = load_mission_config(DEFAULT).device
    assert analog.backend == "analog"
    cfg = dataclasses.replace(cfg, device=analog)
    transport = InProcessTransport(DeviceEndpoint.from_config(analog, 3))
    return FlightSoftware(cfg, image, payload, lambda p: None, device_transport=transport,
                          reference=fake_reference(cfg))


@pytest.mark.parametrize("backend", ["digital", "analog"])
def test_steady_state_ticks_have_bounded_heap_and_allocate_no_arrays(make_fsw, default_cfg, image, backend):
    """100,000 ticks with every buffer of the plan in use (inference, labels, training through the
    optimizer, the last-layer update, the radiometric calibration's sweeps and commits): the heap does not grow and no
    array outlives its tick. With the analog backend the driver and the in-process emulator build
    protocol frames per solve (transient bytes), so the per-tick bound applies to ticks without a
    solve there."""
    received = [0]

    def ground(packet):  # the ground keeps its copies off the flight heap: count only
        received[0] += 1

    cfg = dataclasses.replace(default_cfg, radiometry=dataclasses.replace(
        default_cfg.radiometry, diffuser_period_days=0.05, dark_sweep_interval_s=0.0))
    payload = _PoolPayload(cfg)
    fsw = make_fsw(cfg, payload=payload) if backend == "digital" else _analog_fsw(cfg, payload, image)
    fsw.downlink.sink = ground
    ids = {name: (id(buf), buf.ctypes.data) for name, buf in fsw.buffers.items()}
    tick = 0
    for tick in range(0, 20000):  # warm-up: compile, first orbits, first training updates
        fsw.inputs.soc = 0.9
        fsw.inputs.in_contact = tick % 600 < 300
        fsw.step(tick)
    tracemalloc.start(16)
    try:
        before = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, NUMPY_DOMAIN)])
        cur0, _ = tracemalloc.get_traced_memory()
        worst_tick_peak = 0
        orbit = fsw.orbit_index
        for tick in range(20000, 120000):
            fsw.inputs.soc = 0.9
            fsw.inputs.in_contact = tick % 600 < 300
            start, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            solves = fsw.solver.solves
            fsw.step(tick)
            _, peak = tracemalloc.get_traced_memory()
            if fsw.orbit_index != orbit:
                orbit = fsw.orbit_index
                continue  # once per orbit the eclipse prediction runs (numpy, freed): growth bound below
            if backend == "analog" and fsw.solver.solves != solves:
                continue  # protocol frames of a device solve (bytes, freed): growth bound below
            worst_tick_peak = max(worst_tick_peak, peak - start)
        cur1, _ = tracemalloc.get_traced_memory()
        snap = tracemalloc.take_snapshot()
        after = snap.filter_traces([tracemalloc.DomainFilter(True, NUMPY_DOMAIN)])
        # The emulated device is not flight code (on a bench it is another process): its own
        # state (the programmed conductances, replaced at every programming) is left out.
        emulator = snap.filter_traces([tracemalloc.Filter(True, "*sim/analog/*", all_frames=True)])
        live = after.filter_traces([tracemalloc.Filter(False, "*sim/analog/*", all_frames=True)]).statistics("traceback")
    finally:
        tracemalloc.stop()
    layer = fsw.learning.layer
    assert layer.solves > 0, "the last-layer update (its ring, slots and arena scratch) ran in the window"
    growth = cur1 - cur0 - sum(t.size for t in emulator.traces)
    print(f"heap growth over 100,000 ticks: {growth} B (emulator state left out: "
          f"{sum(t.size for t in emulator.traces)} B); worst transient per ordinary tick: {worst_tick_peak} B")
    assert growth < 64 * 1024
    # Array data allocated in the window and still alive: only the eclipse predictor's
    # per-orbit cache (replaced each orbit, not grown) may remain.
    assert not before.statistics("filename")
    assert all(any("flight_sw/power" in f.filename for f in s.traceback) for s in live), [
        s.traceback.format() for s in live
    ]
    assert sum(s.size for s in live) < 16 * 1024
    # An ordinary tick (inference, labels, training steps, housekeeping) allocates no
    # array: one feature batch alone would be 16 x 33 x 8 = 4,224 bytes of numpy data.
    assert worst_tick_peak < 4096
    assert fsw.learner.accepted + fsw.learner.refused > 0  # training really ran in the window
    if backend == "analog":  # ...and the device served solves
        assert fsw.solver.stats.analog_accepted > 0
    cal = fsw.calibration  # and the radiometric calibration swept, judged and committed tables
    assert cal.dark_sweeps > 100 and cal.diffuser_sweeps >= 3 and cal.accepted >= 2
    assert received[0] > 1000  # and telemetry really went down
    assert {name: (id(buf), buf.ctypes.data) for name, buf in fsw.buffers.items()} == ids
