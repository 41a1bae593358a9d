"""FlightSoftware: the executive, its tasks and the components they drive, wired from a config.

Everything the flight software touches outside itself is handed in at start-up:
the mission config, the initial model image, the payload device, the optimizer
backend and the sink that receives downlinked packets. Each tick the host
(simulator or HIL bench) fills `inputs` and calls `step(tick)`; it reads back
`outputs` (energy drawn, classifications produced). Mission time is
`tick * minor_frame_s`; the wall clock is never read (the real-time runner paces
ticks with a clock the host injects).

Frames in which no task is due may be crossed in one call to `idle()`: only the
downlink drains there, and it does so in whole bits per frame, so crossing k idle
frames at once gives exactly the bytes of k single steps.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from flight_sw.config.schema import MODES, MissionConfig
from flight_sw.devices.factory import make_optimizer
from flight_sw.exec.executive import Executive
from flight_sw.exec.schedule import build_frame_table, build_task_specs
from flight_sw.fdir.supervisor import Fdir
from flight_sw.memory import allocate_buffers, memory_report
from flight_sw.ml.labels import (
    ReferenceData,
)
from flight_sw.ml.model import ModelImage
from flight_sw.ml.pipeline import ACQ_DARK, ACQ_SCENE, ACQ_SITE, PayloadLearning  # noqa: F401 - re-exported
from flight_sw.power.feasibility import check_essential_feasibility
from flight_sw.power.manager import PowerManager
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.commands import TcHandler
from flight_sw.tmtc.downlink import DownlinkQueue
from flight_sw.tmtc.housekeeping import Housekeeping
from flight_sw.tmtc.nv_store import RedundantStore
from flight_sw.tmtc.packet_store import PacketStore
from flight_sw.tmtc.packets import TmEncoder

SNAPSHOT_MAGIC = b"FSWSNAP1"


class PayloadDevice(Protocol):
    """The imager as the flight software drives it (simulated, HIL or real).

    It gives pixels and their ancillary data, never labels: every label is made
    onboard (`flight_sw.ml.labels`) from pixels, ancillary data and uplinked data.
    """

    def acquire(self, pixels: np.ndarray, ancillary: np.ndarray) -> int:
        """Fill pixels (batch, bands) and ancillary (batch, 5) int64 rows (site index or -1,
        map row, map column by the onboard geolocation, detector column, position in the
        acquisition); return an ACQ_* status."""
        ...

    def acquire_calibration(self, kind: int, first_column: int, out: np.ndarray) -> int:
        """Optional (without it the radiometric calibration stays the identity): co-added dark
        (radiometry.CAL_DARK) or sun-diffuser (CAL_DIFFUSER) readings of detector columns
        first_column .. first_column + len(out) - 1 into out (columns, bands); returns
        radiometry.CAL_OK, or CAL_UNAVAILABLE when the geometry does not allow them now."""
        ...


def config_fingerprint(cfg: MissionConfig, buffers: dict[str, np.ndarray]) -> str:
    """CRC-32 of the configuration and the buffer shapes: a snapshot, and the two ends of the
    world link, must come from the same configuration."""
    shapes = {k: [list(v.shape), str(v.dtype)] for k, v in sorted(buffers.items())}
    return f"{zlib.crc32(json.dumps([repr(cfg), shapes]).encode()):08x}"


class SnapshotError(ValueError):
    """A snapshot that must not be restored (corrupt, or from another configuration)."""


@dataclass
class Inputs:
    """What the host writes before each tick (EPS and radio readings)."""

    soc: float
    solar_power_w: float
    in_contact: bool


@dataclass
class Outputs:
    """What the host reads after each tick."""

    energy_j: float = 0.0  # drawn by tasks this tick (on top of the bus base load)
    predictions_valid: bool = False
    predictions: np.ndarray | None = None  # (batch,) class indices of the last inference


class FlightSoftware:
    def __init__(
        self,
        cfg: MissionConfig,
        image: ModelImage,
        payload: PayloadDevice,
        downlink_sink: Callable[[bytes], None],
        optimizer=None,
        check_energy_days: float | None = None,
        device_transport=None,
        tc_store=None,
        reference: ReferenceData | None = None,
        entropy: Callable[[int], bytes] | None = None,
        boot: bool = True,
        cpu_clock: Callable[[], float] | None = None,
    ):
        """Build and check everything; refuse infeasible schedules and power systems.

        `optimizer` is any backend with solve(Q, B) -> (X, report) (default: the one
        `cfg.device` names, built by `make_optimizer`; an analog backend talks to the
        device over `device_transport`, or the transport its `device.url` gives). `check_energy_days` (default: the mission's duration)
        is how far ahead the essential set is checked against the worst orbit.
        `tc_store` is the non-volatile store of the telecommand state (security associations,
        upload staging, boot record, parameter table): a `tmtc.nv_store.RedundantStore` on
        the platform's NV device; default: a fresh one in memory. `entropy(n) -> bytes` is the
        platform's random source (hardware RNG), used for the recovery nonce; default: a
        generator seeded from the mission seed, which repeats across boots (simulation only).
        `reference` is what the ground uplinked for onboard labelling (site maps, teacher);
        without it the satellite has no site labels and no teacher.
        `boot=False`: skip the cold boot from the NV store, for a host that restores a snapshot
        next (`restore(reboot=True)` boots, so the boot counts once). `cpu_clock() -> s`: the
        processor's monotonic clock, handed in by a flight process to measure each task's
        execution (task housekeeping); default none: nothing is measured (the simulation).
        """
        self.cfg = cfg
        self.payload = payload
        self.frame_s = cfg.executive.minor_frame_s
        self.specs = build_task_specs(cfg.tasks, self.frame_s)
        self.table = build_frame_table(self.specs, cfg.executive)
        self.n_frames = cfg.executive.frames_per_major
        self.feasibility = check_essential_feasibility(
            cfg, cfg.mission.duration_days if check_energy_days is None else check_energy_days
        )
        self.buffers = allocate_buffers(cfg)
        self.memory_report = memory_report(cfg)
        n_tasks = len(self.specs)

        self.downlink = DownlinkQueue(
            self.buffers["tmtc.downlink_queue"],
            self.buffers["tmtc.downlink_lengths"],
            cfg.downlink.rate_bps,
            self.frame_s,
            downlink_sink,
            spacecraft_id=cfg.telemetry.spacecraft_id,
            tm_frame_bytes=cfg.downlink.tm_frame_bytes,
            link_buffers=self.buffers,
            store=PacketStore(self.buffers["tmtc.packet_store"]) if cfg.downlink.store_bytes else None,
            clock=lambda: self.t_s,
        )
        self.tm = TmEncoder(cfg.telemetry.apid, cfg.mission.start_utc, self.downlink.push)
        self.fdir = Fdir(cfg, self.tm, n_tasks, self.frame_s)
        self.modes = self.fdir.modes

        self.power = PowerManager(cfg, self.tm)
        self.inputs = Inputs(soc=cfg.power.battery.initial_soc, solar_power_w=0.0, in_contact=False)
        self.executive = Executive(
            self.specs, self.table, self.frame_s, self.tm, self.modes,
            admit=lambda energy_j, claim_w, t: self.power.admit(energy_j, claim_w, t, self.inputs.soc),
            spend_optional=lambda energy_j: self.power.budget.spend(energy_j),
            on_overrun=self.fdir.overrun, cpu_clock=cpu_clock,
        )
        ex = self.executive  # its per-task lists, shared (the executive updates them in place)
        self.task_runs, self.task_skipped, self.task_overruns = ex.task_runs, ex.task_skipped, ex.task_overruns
        self.task_deadline_misses, self.task_disabled = ex.task_deadline_misses, ex.task_disabled
        self.task_energy_j, self.task_orbit_energy_j = ex.task_energy_j, ex.task_orbit_energy_j

        self.cpu_flops_per_s = cfg.executive.cpu_flops_per_s
        aug = cfg.model.feature_dim + 1
        # Sized for the largest system: the head's (aug x classes) or the last layer's (one column).
        n_opt = max(aug, cfg.model.layer_units * cfg.model.layer_basis)
        self.solver = optimizer or make_optimizer(
            cfg.device, n_opt, len(cfg.payload.classes), device_transport, clock=lambda: self.t_s
        )
        self.outputs = Outputs(predictions=self.buffers["ml.batch_pred"])
        self.learning = PayloadLearning(cfg, image, self.buffers, self.solver, payload, self.tm, self.outputs,
                                        reference, adapting=any(s.kind == "adaptation" for s in self.specs))
        self.fdir.supervise(self.solver)
        # Issue 7: authenticated telecommands; boots from the NV store (may install a confirmed upload).
        if entropy is None:
            nonce_rng = np.random.default_rng([cfg.mission.seed, 0x5EC])
            entropy = nonce_rng.bytes
        if tc_store is None:
            tc_store = RedundantStore.in_memory(cfg.tmtc.max_upload_bytes)
        self.tc = TcHandler(cfg, self.tm, self, self.buffers["tmtc.cfdp_filestore"], tc_store, entropy)
        self.downlink.clcw_source = self.tc.link.clcw  # FARM-1's report in every TM frame's OCF
        # No onboard commit may overwrite an uploaded model's fallback slot while it is on trial.
        self.learning.training_blocked = lambda: self.tc.upload.trial is not None
        if boot:
            self.tc.boot(cold=True, t=0.0)

        self.executive.bind([self._handler_for(s.kind) for s in self.specs])
        self._was_in_contact = False
        self._tick = 0
        self.housekeeping = Housekeeping(cfg, self.tm, self.inputs, self.executive, self.power, self.learning,
                                         self.modes, self.downlink, self.solver, self.tc, lambda: self._tick,
                                         self.frame_s)
        self.t_s = 0.0
        self.modes.announce_start(0.0)

    def next_due_tick(self, tick: int) -> int:
        """First tick >= `tick` at which some task is due in the current mode (-1: never)."""
        return self.executive.next_due_tick(tick)

    def idle(self, first_tick: int, n_frames: int, in_contact: bool) -> None:
        """Cross n frames from `first_tick` in which no task is due: only the downlink drains."""
        self.downlink.link_up = in_contact
        self.downlink.drain(n_frames, in_contact)
        self._tick = first_tick + n_frames - 1
        self.t_s = self._tick * self.frame_s

    # -- the executive -----------------------------------------------------------------
    def step(self, tick: int, generation: int | None = None) -> None:
        """Run minor frame `tick`: every due task in priority order, power-admitted.

        `generation` is set by the real-time watchdog: a step whose generation has been
        retired (its worker was declared hung) runs nothing more if it ever resumes.
        """
        self._tick = tick
        t = tick * self.frame_s
        self.t_s = t
        self.downlink.link_up = self.inputs.in_contact  # out of contact, housekeeping is stored (PUS 15)
        out = self.outputs
        out.energy_j = 0.0
        out.predictions_valid = False
        self.executive.run_frame(tick, t, out, generation)
        if generation is not None and generation != self.executive.generation:
            return  # retired (watchdog): a newer step owns the state now
        self.housekeeping.note_energy(out.energy_j)
        self.downlink.drain(1, self.inputs.in_contact)

    # -- the executive's state, as the host, the watchdog and the tests know it ------------
    @property
    def generation(self) -> int:
        return self.executive.generation

    @generation.setter
    def generation(self, value: int) -> None:
        self.executive.generation = value

    @property
    def current_task(self) -> int | None:
        return self.executive.current_task

    @property
    def overruns_total(self) -> int:
        return self.executive.overruns_total

    @property
    def optional_skipped_total(self) -> int:
        return self.executive.optional_skipped_total

    @property
    def deadline_misses_total(self) -> int:
        return self.executive.deadline_misses_total

    # -- the power manager's state, as the host and the tests know it --------------------
    @property
    def budget(self):
        return self.power.budget

    @property
    def predictor(self):
        return self.power.predictor

    @property
    def tle(self):
        return self.power.tle

    @property
    def orbit_index(self) -> int:
        return self.power.orbit_index

    def _open_orbit(self, t: float, reopen: bool = False) -> None:
        self.power.open_orbit(t, self.inputs.soc, self.task_orbit_energy_j, reopen)

    def _handler_for(self, kind: str) -> Callable[[float], float]:
        return {
            "power_monitor": self._task_power_monitor,
            "budget_update": self._task_budget_update,
            "housekeeping": self._task_housekeeping,
            "inference": self.learning.task_inference,
            "label_collect": self.learning.task_label_collect,
            "teacher_label": self.learning.task_teacher_label,
            "training": self.learning.task_training,
            "tc_handler": self.tc.run,
            "calibration": self.learning.task_calibration,
            "adaptation": self.learning.task_adaptation,
            "device_health": self.fdir.device_health_task,
        }[kind]

    # -- commands (issue 7 routes authenticated telecommands here) ---------------------
    def command_mode(self, mode: str) -> bool:
        """Ground command to a mode; False when a fault holds the satellite lower."""
        return self.modes.command(MODES.index(mode), self.t_s)

    def disable_task(self, name: str, reason: str) -> None:
        self.executive.disable_task(name, reason, self.t_s)

    def enable_task(self, name: str) -> None:
        self.executive.enable_task(name)

    def telecommand(self, frame: bytes) -> None:
        """Queue one uplinked frame (issue 7); the `tc_handler` task authenticates and runs it."""
        self.tc.enqueue(frame, self.t_s)

    def _apply_params(self, table: dict[int, float]) -> None:
        """Issue 7 hook: make an activated parameter table (ids in dictionary.PARAMS) effective."""
        self.power.apply_params(table)
        self.learner.drift_free.threshold = table.get(4, self.cfg.model.drift_threshold)

    def load_tle(self, line1: str, line2: str) -> None:
        """Adopt an uplinked TLE: validate it, re-predict, and reopen this orbit's budget.

        Energy already spent on optional work in this orbit stays spent. A bad TLE
        raises `TleError` and changes nothing (the old TLE keeps flying).
        """
        self.power.load_tle(line1, line2, self.t_s, self.inputs.soc, self.task_orbit_energy_j)

    # -- tasks: each returns its modelled compute time [s], or -1 when it had nothing to do
    def _task_power_monitor(self, t: float) -> float:
        inp = self.inputs
        self.fdir.check_power_and_device(inp.soc, t)
        if inp.in_contact != self._was_in_contact:
            self._was_in_contact = inp.in_contact
            self.tm.event(d.EVENT_CONTACT, "info", struct.pack(">B", int(inp.in_contact)), t)
        if self.orbit_index < 0:
            self._open_orbit(t)
        return 1e-4

    @property
    def device_checks(self) -> int:
        return self.fdir.device_checks

    @property
    def device_recoveries(self) -> int:
        return self.fdir.device_recoveries

    def _task_budget_update(self, t: float) -> float:
        if t < self.budget.state.orbit_end_s:
            return -1.0
        self._open_orbit(t)
        return 5e-3

    def _task_housekeeping(self, t: float) -> float:
        return self.housekeeping.task(t)

    # -- the payload and learning component, as the host, the commands and the tests know it
    @property
    def learner(self):
        return self.learning.learner

    @property
    def calibration(self):
        return self.learning.calibration

    @property
    def adaptation(self):
        return self.learning.adaptation

    @property
    def teacher(self):
        return self.learning.teacher

    @property
    def reference(self):
        return self.learning.reference

    @property
    def label_sources(self):
        return self.learning.label_sources

    @property
    def label_tap(self):
        return self.learning.label_tap

    @label_tap.setter
    def label_tap(self, tap) -> None:
        self.learning.label_tap = tap

    @property
    def _pixels(self) -> np.ndarray:
        return self.learning._pixels

    def request_calibration(self) -> None:
        self.learning.request_calibration()

    def rollback_calibration(self, t: float) -> bool:
        return self.learning.rollback_calibration(t)

    def _report_update(self, outcome: str, t: float) -> None:
        self.learning.report_update(outcome, t)

    @property
    def mode(self) -> str:
        return MODES[self.modes.mode_index]

    # -- snapshot and restore ----------------------------------------------------------
    def _scalar_state(self) -> dict:
        return {
            "tick": self._tick,
            "t_s": self.t_s,
            "power": self.power.state_dict(),
            "executive": self.executive.state_dict(),
            "housekeeping": self.housekeeping.state_dict(),
            "was_in_contact": self._was_in_contact,
            "downlink": self.downlink.state_dict(),
            "tm": self.tm.state(),
            "tc": self.tc.state_dict(),
            "fdir": self.fdir.state_dict(),
            "learning": self.learning.state_dict(),
            "solver": self.solver.state_dict(),
            "config_fingerprint": self._config_fingerprint(),
        }

    def _config_fingerprint(self) -> str:
        return config_fingerprint(self.cfg, self.buffers)

    def snapshot(self) -> bytes:
        """Everything needed to continue byte-identically: scalars (JSON) + buffers + CRC-32.

        This is what a flight computer keeps in non-volatile memory across a reboot.
        """
        header = json.dumps(self._scalar_state(), sort_keys=True).encode()
        body = b"".join(self.buffers[name].tobytes() for name in sorted(self.buffers))
        blob = SNAPSHOT_MAGIC + struct.pack(">I", len(header)) + header + body
        return blob + struct.pack(">I", zlib.crc32(blob))

    def restore(self, blob: bytes, reboot: bool = True) -> None:
        """Load a snapshot taken by the same configuration; refuse a corrupt or foreign one.

        `reboot` (a flight computer restarting from its saved state): the boot is counted and
        unconfirmed trials revert. Without it (the simulator resuming a checkpoint together with
        the NV device it saved), the run continues byte for byte as if never stopped.
        """
        if len(blob) < len(SNAPSHOT_MAGIC) + 8 or not blob.startswith(SNAPSHOT_MAGIC):
            raise SnapshotError("not a flight software snapshot")
        if struct.unpack(">I", blob[-4:])[0] != zlib.crc32(blob[:-4]):
            raise SnapshotError("snapshot CRC mismatch: corrupt, refusing to restore")
        n = struct.unpack_from(">I", blob, len(SNAPSHOT_MAGIC))[0]
        start = len(SNAPSHOT_MAGIC) + 4
        state = json.loads(blob[start : start + n])
        if state["config_fingerprint"] != self._config_fingerprint():
            raise SnapshotError("snapshot was taken with a different configuration")
        pos = start + n
        for name in sorted(self.buffers):
            buf = self.buffers[name]
            buf[...] = np.frombuffer(blob, dtype=buf.dtype, count=buf.size, offset=pos).reshape(buf.shape)
            pos += buf.nbytes
        self.power.load_state_dict(state["power"])
        self._tick = state["tick"]
        self.t_s = state["t_s"]
        self.executive.load_state_dict(state["executive"])
        self.housekeeping.load_state_dict(state["housekeeping"])
        self._was_in_contact = state["was_in_contact"]
        self.downlink.load_state_dict(state["downlink"])
        self.tm.load_state(state["tm"])
        self.fdir.load_state_dict(state["fdir"])
        self.learning.load_state_dict(state["learning"])
        self.solver.load_state_dict(state["solver"])
        if reboot:
            self.tc.boot(cold=False, t=self.t_s)  # NV state wins, the boot counts, trials revert
        else:
            self.tc.resume(state["tc"])
