"""FlightSoftware: the executive, its tasks and the components they drive, wired from a config.

Everything the flight software touches outside itself is handed in at start-up:
the mission config, the initial model image, the optimizer backend and the sink
that receives downlinked packets. Each tick the host (simulator or HIL bench)
fills `inputs` and calls `step(tick)`; it reads back `outputs` (energy drawn,
classifications produced). Mission time is `tick * minor_frame_s`; the wall clock
is never read.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from flight_sw.config.schema import MODES, MissionConfig
from flight_sw.devices.optimizer import DigitalSolver
from flight_sw.exec.schedule import (
    build_frame_table,
    build_task_specs,
    essential_energy_per_orbit_j,
)
from flight_sw.fdir.modes import ModeManager
from flight_sw.memory import allocate_buffers, memory_report
from flight_sw.ml.learner import OnboardLearner
from flight_sw.ml.model import ModelImage
from flight_sw.power.budget import PowerBudget
from flight_sw.power.eclipse_predictor import EclipsePredictor
from flight_sw.power.tle import parse_tle, tle_age_days
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.downlink import DownlinkQueue
from flight_sw.tmtc.packets import TmEncoder

ACQ_DARK, ACQ_SCENE, ACQ_LABELLED = 0, 1, 2


class PayloadDevice(Protocol):
    """The imager as the flight software drives it (simulated, HIL or real)."""

    def acquire(self, pixels: np.ndarray, labels: np.ndarray) -> int:
        """Fill pixels (and labels over a calibration site); return an ACQ_* status."""
        ...


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
    ):
        self.cfg = cfg
        self.payload = payload
        self.frame_s = cfg.executive.minor_frame_s
        self.specs = build_task_specs(cfg.tasks, self.frame_s)
        self.table = build_frame_table(self.specs, cfg.executive)
        self.n_frames = cfg.executive.frames_per_major
        self.buffers = allocate_buffers(cfg)
        self.memory_report = memory_report(cfg)
        n_tasks = len(self.specs)
        self.task_runs = np.zeros(n_tasks, dtype=np.int64)
        self.task_skipped = np.zeros(n_tasks, dtype=np.int64)
        self.task_overruns = np.zeros(n_tasks, dtype=np.int64)
        self.task_energy_j = np.zeros(n_tasks, dtype=np.float64)
        self.task_orbit_energy_j = np.zeros(n_tasks, dtype=np.float64)
        self.overruns_total = 0
        self.optional_skipped_total = 0

        self.downlink = DownlinkQueue(
            self.buffers["tmtc.downlink_queue"],
            self.buffers["tmtc.downlink_lengths"],
            cfg.downlink.rate_bps,
            downlink_sink,
        )
        self.tm = TmEncoder(cfg.telemetry.apid, cfg.mission.start_utc, self.downlink.push)
        self.modes = ModeManager(cfg, self._mode_event)

        self.tle = parse_tle(cfg.orbit.tle_line1, cfg.orbit.tle_line2)
        self.predictor = EclipsePredictor(self.tle, cfg.mission.start_utc)
        orbit_guess_s = 86400.0 / self.tle.mean_motion_rev_per_day
        essential_w = cfg.power.bus_base_load_w + essential_energy_per_orbit_j(
            self.specs, self.frame_s, orbit_guess_s
        ) / orbit_guess_s
        self.budget = PowerBudget(cfg, essential_w)
        self.orbit_index = -1
        self._prev_umbra = (math.nan, math.nan)

        flops_per_s = cfg.executive.cpu_flops_per_s
        self.cpu_flops_per_s = flops_per_s
        aug = cfg.model.feature_dim + 1
        self.solver = DigitalSolver(aug, len(cfg.payload.classes), cfg.device.digital_energy_per_flop_j)
        self.learner = OnboardLearner(cfg, image, self.buffers, self.solver)

        self.inputs = Inputs(soc=cfg.power.battery.initial_soc, solar_power_w=0.0, in_contact=False)
        self._pixels = self.buffers["ml.batch_pixels"]
        self._labels = self.buffers["ml.batch_labels"]
        self.outputs = Outputs(predictions=self.buffers["ml.batch_pred"])
        self._handlers = tuple(self._handler_for(s.kind) for s in self.specs)
        self._claim_w = tuple(
            sum(
                o.energy_j / (o.period_frames * self.frame_s)
                for o in self.specs
                if not o.essential and (o.priority, o.index) < (s.priority, s.index)
            )
            for s in self.specs
        )
        self._was_in_contact = False
        self._hk_energy_j = 0.0
        self._hk_last_tick = 0
        self._tick = 0
        self.t_s = 0.0
        self.modes.announce_start(0.0)

    # -- the executive ---------------------------------------------------------------
    def step(self, tick: int) -> None:
        """Run minor frame `tick`: every due task in priority order, power-admitted."""
        self._tick = tick
        t = tick * self.frame_s
        self.t_s = t
        out = self.outputs
        out.energy_j = 0.0
        out.predictions_valid = False
        mode_bit = 1 << self.modes.mode_index
        for idx in self.table[tick % self.n_frames]:
            spec = self.specs[idx]
            if not spec.mode_mask & mode_bit:
                continue  # not scheduled in this mode: neither run nor skip
            if not spec.essential and not self._admit(spec.energy_j, self._claim_w[idx], t):
                self.task_skipped[idx] += 1
                self.optional_skipped_total += 1
                continue
            cost_s = self._handlers[idx](t)
            if cost_s < 0.0:
                continue  # woke up, nothing to do, negligible energy
            self.task_runs[idx] += 1
            energy = spec.energy_j
            out.energy_j += energy
            self.task_energy_j[idx] += energy
            self.task_orbit_energy_j[idx] += energy
            if not spec.essential:
                self.budget.spend(energy)
            if cost_s > spec.compute_budget_s:
                self.task_overruns[idx] += 1
                self.overruns_total += 1
                self.tm.event(d.EVENT_TASK_OVERRUN, "low", struct.pack(">Bf", idx, cost_s), t)
        self._hk_energy_j += out.energy_j
        self.downlink.drain(self.frame_s, self.inputs.in_contact)

    def _admit(self, energy_j: float, claim_w: float, t: float) -> bool:
        """Power admission of one optional run: budget, battery floor and eclipse policy.

        Optional tasks of higher priority keep a first claim on the budget for the
        rest of the orbit (`claim_w`), so bulk work such as extra imaging cannot
        starve training by spending the budget early in the orbit.
        """
        inp = self.inputs
        bat = self.cfg.power.battery
        claim_j = claim_w * max(self.budget.state.orbit_end_s - t, 0.0)
        if inp.soc <= bat.floor_soc or not self.budget.can_afford(energy_j + claim_j):
            return False
        if self._predicted_eclipse(t):
            pol = self.cfg.power.budget
            if pol.eclipse_policy == "never":
                return False
            if pol.eclipse_policy == "soc_margin" and inp.soc < bat.reserve_soc + pol.eclipse_soc_margin:
                return False
        return True

    def _predicted_eclipse(self, t: float) -> bool:
        """In umbra by the onboard prediction (this orbit's pass or the previous one's tail)."""
        s = self.budget.state
        # Comparisons with NaN are False: no eclipse predicted.
        return s.umbra_entry_s <= t < s.umbra_exit_s or self._prev_umbra[0] <= t < self._prev_umbra[1]

    def _handler_for(self, kind: str) -> Callable[[float], float]:
        return {
            "power_monitor": self._task_power_monitor,
            "budget_update": self._task_budget_update,
            "housekeeping": self._task_housekeeping,
            "inference": self._task_inference,
            "label_collect": self._task_label_collect,
            "training": self._task_training,
        }[kind]

    # -- tasks: each returns its modelled compute time [s], or -1 when it had nothing to do
    def _task_power_monitor(self, t: float) -> float:
        inp = self.inputs
        self.modes.check_power(inp.soc, t)
        if inp.in_contact != self._was_in_contact:
            self._was_in_contact = inp.in_contact
            self.tm.event(d.EVENT_CONTACT, "info", struct.pack(">B", int(inp.in_contact)), t)
        if self.orbit_index < 0:
            self._open_orbit(t)
        return 1e-4

    def _task_budget_update(self, t: float) -> float:
        if t < self.budget.state.orbit_end_s:
            return -1.0
        self._open_orbit(t)
        return 5e-3

    def _open_orbit(self, t: float, reopen: bool = False) -> None:
        """Predict the coming orbits, open the next orbit's budget and report it (HK SID 3).

        `reopen` recomputes the current orbit (after a TLE uplink) instead of starting
        the next: the orbit index, the energy already used and the per-task tallies stay.
        """
        pred = self.predictor.predict_orbits(t, self.cfg.power.budget.horizon_orbits)
        prev = self.budget.state
        prev_used = prev.used_j
        if not reopen:
            self._prev_umbra = (prev.umbra_entry_s, prev.umbra_exit_s)
            self.orbit_index += 1
        s = self.budget.new_orbit(
            self.orbit_index,
            float(pred.orbit_start_s[0]),
            float(pred.orbit_end_s[0]),
            float(pred.umbra_entry_s[0]),
            float(pred.umbra_exit_s[0]),
            float(pred.sunlit_s[0]),
            self.inputs.soc,
        )
        payload = d.HK_ORBIT_STRUCT.pack(
            s.orbit_index,
            s.orbit_start_s,
            s.orbit_end_s,
            s.umbra_entry_s,
            s.umbra_exit_s,
            s.sunlit_s,
            s.generation_j,
            s.essential_j,
            s.reserve_need_j,
            s.margin_j,
            s.budget_j,
            prev_used,
        ) + struct.pack(f">{len(self.specs)}f", *self.task_orbit_energy_j)
        if reopen:
            s.used_j = prev_used
            s.remaining_j = max(0.0, s.budget_j - prev_used)
        else:
            self.task_orbit_energy_j[:] = 0.0
        self.tm.housekeeping(d.HK_ORBIT_SID, payload, t)

    def load_tle(self, line1: str, line2: str) -> None:
        """Adopt an uplinked TLE: validate it, re-predict, and reopen this orbit's budget.

        Energy already spent on optional work in this orbit stays spent. A bad TLE
        raises `TleError` and changes nothing (the old TLE keeps flying).
        """
        tle = parse_tle(line1, line2)
        self.predictor.set_tle(tle)
        self.tle = tle
        self._open_orbit(self.t_s, reopen=True)

    def _task_housekeeping(self, t: float) -> float:
        inp = self.inputs
        learner = self.learner
        s = self.budget.state
        dt = max((self._tick - self._hk_last_tick) * self.frame_s, self.frame_s)
        load_w = self.cfg.power.bus_base_load_w + self._hk_energy_j / dt
        self._hk_energy_j = 0.0
        self._hk_last_tick = self._tick
        core = d.HK_CORE_STRUCT.pack(
            d.DICTIONARY_VERSION,
            self._tick,
            self.modes.mode_index,
            inp.soc,
            inp.solar_power_w,
            load_w,
            int(self._predicted_eclipse(t)),
            max(self.orbit_index, 0),
            s.budget_j,
            s.remaining_j,
            learner.version,
            learner.active,
            learner.accepted,
            learner.refused,
            learner.rollbacks,
            learner.label_accuracy,
            learner.labels_total,
            self.overruns_total,
            self.optional_skipped_total,
            self.solver.solves,
            tle_age_days(self.tle, self.cfg.mission.start_utc) + t / 86400.0,
            int(inp.in_contact),
            self.downlink.count,
            self.downlink.overflow,
        )
        self.tm.housekeeping(d.HK_CORE_SID, core, t)
        tasks = b"".join(
            d.HK_TASK_STRUCT.pack(
                i, int(self.task_runs[i]), int(self.task_skipped[i]), int(self.task_overruns[i]), self.task_energy_j[i]
            )
            for i in range(len(self.specs))
        )
        self.tm.housekeeping(d.HK_TASKS_SID, tasks, t)
        return 1e-3

    def _task_inference(self, t: float) -> float:
        if self.payload.acquire(self._pixels, self._labels) == ACQ_DARK:
            return -1.0
        self.learner.predict(self._pixels, self.outputs.predictions)
        self.outputs.predictions_valid = True
        n = self._pixels.shape[0]
        return 2.0 * n * self.learner.feat.shape[1] * (self.cfg.payload.bands + len(self.cfg.payload.classes)) / self.cpu_flops_per_s

    def _task_label_collect(self, t: float) -> float:
        if self.payload.acquire(self._pixels, self._labels) != ACQ_LABELLED:
            return -1.0
        self.learner.accumulate(self._pixels, self._labels, self.buffers["ml.batch_pred"])
        if self.learner.rollback_pending_report:
            self.learner.rollback_pending_report = False
            self._report_update("rolled_back", t)
        aug = self.learner.feat.shape[1]
        return 2.0 * self._pixels.shape[0] * aug * aug / self.cpu_flops_per_s

    def _task_training(self, t: float) -> float:
        learner = self.learner
        if not learner.wants_training():
            return -1.0
        outcome = learner.training_step()
        if outcome is not None:
            self._report_update(outcome, t)
        rep = self.solver.report
        return rep.flops / self.cpu_flops_per_s if learner.state == 2 else 1e-3

    def _report_update(self, outcome: str, t: float) -> None:
        learner = self.learner
        rep = learner.last_report
        payload = d.TRAINING_UPDATE_STRUCT.pack(
            d.TRAINING_OUTCOMES.index(outcome),
            learner.version if outcome != "refused" else learner.next_version,
            learner.last_candidate_acc,
            learner.last_active_acc,
            int(learner.effective_labels),
            rep.path if rep else 0,
            rep.energy_j if rep else 0.0,
            rep.rel_residual if rep else math.nan,
        )
        severity = "info" if outcome == "committed" else "low"
        self.tm.event(d.EVENT_TRAINING_UPDATE, severity, payload, t)

    def _mode_event(self, old: int, new: int, reason: str, t: float) -> None:
        self.tm.event(d.EVENT_MODE_CHANGE, "medium", struct.pack(">BBB", old, new, d.MODE_REASONS.index(reason)), t)

    @property
    def mode(self) -> str:
        return MODES[self.modes.mode_index]
