"""The payload and learning component: acquisition, radiometric calibration, inference, the
label sources, label-free adaptation, onboard training and their reports.

It owns the learner (`ml/learner.py`), the calibration table (`ml/radiometry.py`), the input
adaptation (`ml/adaptation.py`), the teacher and the site maps, with their buffers from the
start-up memory plan, and its snapshot. It reaches the rest of the flight software only
through what it is handed: the payload device, the optimizer (through the learner), the
telemetry encoder, the executive's `outputs` (the inference product the host reads after a
tick) and `training_blocked()` (true while an uploaded model is on trial: no onboard commit
may overwrite its fallback slot). Each `task_*` method is one executive task: it returns its
modelled compute time [s], or -1 when it had nothing to do.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.ml.adaptation import InputAdaptation
from flight_sw.ml.kernels import count_equal
from flight_sw.ml.labels import (
    ANC_DETECTOR,
    NO_CLASS,
    SOURCE_NAMES,
    SOURCE_SELF,
    SOURCE_SITE,
    SOURCE_TEACHER,
    ReferenceData,
    compact_labelled,
    confident_into,
    site_labels_into,
)
from flight_sw.ml.layer_update import IDLE, LayerUpdate
from flight_sw.ml.learner import HOLDOUT_EVERY, OnboardLearner
from flight_sw.ml.model import ModelImage
from flight_sw.ml.radiometry import OUTCOMES as CAL_OUTCOMES
from flight_sw.ml.radiometry import RadiometricCalibration
from flight_sw.ml.teacher import Teacher
from flight_sw.tmtc import dictionary as d

#: Payload acquisition status: night (no pixels), an ordinary scene, a calibration-site scene.
ACQ_DARK, ACQ_SCENE, ACQ_SITE = 0, 1, 2


class PayloadLearning:
    def __init__(self, cfg: MissionConfig, image: ModelImage, buffers: dict[str, np.ndarray], solver, payload,
                 tm, outputs, reference: ReferenceData | None, adapting: bool):
        """`adapting`: the task table has an adaptation task (inference then feeds its window)."""
        self.cfg = cfg
        self.payload = payload
        self.tm = tm
        self.outputs = outputs
        self.cpu_flops_per_s = cfg.executive.cpu_flops_per_s
        self.training_blocked: Callable[[], bool] = lambda: False
        self.learner = OnboardLearner(cfg, image, buffers, solver)
        self.calibration = RadiometricCalibration(
            cfg, buffers, None if reference is None else reference.diffuser_reflectance)
        self._heldback = lambda a, b, n: self.learner.heldback_accuracy(self.calibration, a, b, n)
        self.adaptation = InputAdaptation(cfg, image, buffers)
        self.layer = LayerUpdate(cfg, buffers, solver, image)
        self._adapting = adapting
        self.reference = reference
        if reference is not None:
            self.learner.set_reliability(reference.site_map_accuracy, reference.teacher_reliability
                                         if cfg.model.gate_on_teacher_labels else 0.5)
        self.label_sources = frozenset(SOURCE_NAMES.index(s) for s in cfg.payload.label_sources)
        self._site_maps = buffers["ml.site_maps"]
        if reference is not None:
            maps = np.asarray(reference.site_maps, dtype=np.uint8)
            if maps.shape != self._site_maps.shape:
                raise ValueError(f"reference.site_maps: shape {maps.shape}, expected {self._site_maps.shape} "
                                 "(calibration sites x SITE_MAP_CELLS x SITE_MAP_CELLS)")
            self._site_maps[...] = maps
        else:
            self._site_maps[...] = NO_CLASS
        self.teacher = None
        if reference is not None and reference.teacher is not None and SOURCE_TEACHER in self.label_sources:
            self.teacher = Teacher(reference.teacher, buffers)
        #: Host tap (simulator, bench): called with (source, t, pixels, labels, ancillary) for every
        #: labelled batch the learner receives. Output only: nothing is ever read back from it.
        self.label_tap: Callable | None = None
        self._pixels = buffers["ml.batch_pixels"]
        self._anc = buffers["ml.batch_ancillary"]
        # Calibration acquisitions have their own buffers so they never clobber the
        # inference product that the host reads after the tick.
        self._cal_pixels = buffers["ml.label_pixels"]
        self._cal_labels = buffers["ml.label_labels"]
        self._cal_anc = buffers["ml.label_ancillary"]
        self._teacher_conf = buffers["ml.teacher_confidence"]
        self._cal_pred = buffers["ml.label_pred"]
        self._sample_fmt = struct.Struct(f">{cfg.payload.bands}f")
        # Every kernel in memory from start-up: a steady-state tick must not grow the process.
        self.learner.load_kernels()
        if adapting:
            self.adaptation.load_kernels()
        self.layer.load_kernels(self.learner._ext_args, self.learner.slots[self.learner.active],
                                self._cal_pixels[:0], self._cal_labels[:0], self._cal_anc[:0, ANC_DETECTOR])

    def acquisition_of(self, kind: str) -> str | None:
        """The buffer a task of `kind` acquires into when it runs ("" for a calibration reading,
        None when it acquires nothing): the flight's plan for a host that draws frames ahead."""
        if kind == "inference":
            return "ml.batch_pixels"
        if kind == "label_collect":
            return "ml.label_pixels" if SOURCE_SITE in self.label_sources else None
        if kind == "teacher_label":
            return "ml.label_pixels" if self.teacher is not None else None
        if kind == "calibration":
            return ""
        return None

    def task_inference(self, t: float) -> float:
        if self.payload.acquire(self._pixels, self._anc) == ACQ_DARK:
            return -1.0
        n = self._pixels.shape[0]
        self.calibration.apply_into(self._pixels, self._anc[:, ANC_DETECTOR], n)
        self.learner.predict(self._pixels, self.outputs.predictions)
        self.outputs.predictions_valid = True
        sun_elevation_deg = getattr(self.payload, "sun_elevation_deg", 90.0)
        self.learner.monitor(self._pixels, self.outputs.predictions, n, sun_elevation_deg)
        self._report_drift(t)
        aug = self.learner.feat.shape[1]
        cost = 2.0 * n * aug * (self.cfg.payload.bands + len(self.cfg.payload.classes)) + 2.0 * n * self.cfg.payload.bands
        if self._adapting:
            cost += 3.0 * self.adaptation.observe(self._pixels, n, sun_elevation_deg) * self.cfg.payload.bands
        if SOURCE_SELF in self.label_sources:
            m = confident_into(self._pixels, self.outputs.predictions, self.learner.margins, n,
                               self.cfg.payload.self_training_margin, self._cal_pixels, self._cal_labels,
                               self._anc, self._cal_anc)
            self._learn(SOURCE_SELF, m, t, monitor=False)
            cost += 2.0 * m * aug * aug
        return cost / self.cpu_flops_per_s

    def task_label_collect(self, t: float) -> float:
        """Over a calibration site: the reference map's class at each pixel's onboard geolocation."""
        if SOURCE_SITE not in self.label_sources:
            return -1.0
        if self.payload.acquire(self._cal_pixels, self._cal_anc) != ACQ_SITE:
            return -1.0
        ref = self.reference
        n = self._cal_pixels.shape[0]
        self.calibration.apply_into(self._cal_pixels, self._cal_anc[:, ANC_DETECTOR], n)
        if ref is None:
            m = 0
        else:
            blue, green, swir = ref.cloud_bands
            m = site_labels_into(self._cal_pixels, self._cal_anc, n, self._site_maps, ref.cloud_class,
                                 blue, green, swir, self._cal_labels)
        self._learn(SOURCE_SITE, m, t, monitor=True)
        if m:
            self._report_samples(t, m)
        aug = self.learner.feat.shape[1]
        return 2.0 * n * aug * aug / self.cpu_flops_per_s

    def task_teacher_label(self, t: float) -> float:
        """Label a fresh frame with the onboard teacher model (optional, power permitting)."""
        if self.teacher is None:
            return -1.0
        if self.payload.acquire(self._cal_pixels, self._cal_anc) == ACQ_DARK:
            return -1.0
        n = self._cal_pixels.shape[0]
        self.calibration.apply_into(self._cal_pixels, self._cal_anc[:, ANC_DETECTOR], n)
        self.teacher.label_into(self._cal_pixels, n, self._cal_labels, self._teacher_conf)
        m = compact_labelled(self._cal_pixels, self._cal_labels, n, self._cal_anc)
        self._learn(SOURCE_TEACHER, m, t, monitor=False)
        aug = self.learner.feat.shape[1]
        return (n * self.teacher.flops_per_sample + 2.0 * m * aug * aug) / self.cpu_flops_per_s

    def _learn(self, source: int, m: int, t: float, monitor: bool) -> None:
        """Fold the first m labelled pixels of the label buffers into the learner."""
        if m <= 0:
            return
        px, lab, anc = self._cal_pixels[:m], self._cal_labels[:m], self._cal_anc[:m]
        if self.label_tap is not None:
            self.label_tap(source, t, px, lab, anc)
        if monitor and self.calibration.watch_remaining > 0:
            self._watch_calibration(px, lab, anc, m, t)
        if monitor and self.adaptation.watch_remaining > 0:
            self._watch_adaptation(px, lab, m, t)
        if monitor and self.layer.watch_remaining > 0:
            self._watch_layer(px, lab, m, t)
        seen = self.learner.labelled_seen
        self.learner.accumulate(px, lab, self._cal_pred[:m], monitor=monitor, source=source,
                                columns=anc[:, ANC_DETECTOR])
        self.layer.take(px, lab, anc[:, ANC_DETECTOR], m, seen, HOLDOUT_EVERY)
        if self.learner.rollback_pending_report:
            self.learner.rollback_pending_report = False
            self.report_update("rolled_back", t)
        self._report_drift(t)

    def _watch_calibration(self, px: np.ndarray, lab: np.ndarray, anc: np.ndarray, m: int, t: float) -> None:
        """Site labels after a calibration commit: the active model under the new and the previous table."""
        cal, learner = self.calibration, self.learner
        pred = self._cal_pred[:m]
        learner.predict(px, pred)
        new_ok = count_equal(pred, lab, m)
        old_px = cal.rows[:m]
        cal.remap_into(px, anc[:, ANC_DETECTOR], m, cal.active, 1 - cal.active, old_px)
        learner.predict(old_px, pred)
        old_ok = count_equal(pred, lab, m)
        if cal.watch(new_ok, old_ok, m):
            learner.remap_replay(cal, 1 - cal.active, cal.active)
            self.layer.remap_ring(cal, 1 - cal.active, cal.active)
            np.copyto(px, old_px)  # this batch too: the learner takes it in the restored table
            learner.forget()
            self.adaptation.restart_window()
            cal.rollback_pending_report = False
            self._report_calibration("rolled_back", t)

    def _watch_adaptation(self, px: np.ndarray, lab: np.ndarray, m: int, t: float) -> None:
        """Site labels after an adaptation commit: the active head under the new and the previous normalisation."""
        if self._watch_features(self.adaptation, self.learner.predict_with_inputs, px, lab, m):
            self.learner.forget()
            self._report_adaptation("rolled_back", t)

    def _watch_layer(self, px: np.ndarray, lab: np.ndarray, m: int, t: float) -> None:
        """Site labels after a layer commit: the active head with the new and the previous last layer."""
        if self._watch_features(self.layer, self.learner.predict_with_layer, px, lab, m):
            self.learner.features_changed()
            self._report_layer("rolled_back", t)

    def _watch_features(self, owner, predict_previous, px: np.ndarray, lab: np.ndarray, m: int) -> bool:
        """Score the batch with the active features and with `owner`'s previous version
        (`predict_previous(px, pred, *owner.previous())`); True when the owner rolled back."""
        pred = self._cal_pred[:m]
        self.learner.predict(px, pred)
        new_ok = count_equal(pred, lab, m)
        predict_previous(px, pred, *owner.previous())
        old_ok = count_equal(pred, lab, m)
        if owner.watch(new_ok, old_ok, m):
            owner.rollback_pending_report = False
            return True
        return False

    def task_adaptation(self, t: float) -> float:
        """One bounded step of the label-free input adaptation (flight_sw/ml/adaptation.py)."""
        adapt = self.adaptation
        outcome = adapt.step(self.learner.compare_inputs)
        if outcome == "committed":
            self.learner.forget()  # the features moved: the head's statistics describe the old ones
        if outcome in ("committed", "refused"):
            self._report_adaptation(outcome, t)
        if adapt.last_step_flops <= 0.0:
            return -1.0
        return adapt.last_step_flops / self.cpu_flops_per_s

    def _report_adaptation(self, outcome: str, t: float) -> None:
        a = self.adaptation
        payload = d.ADAPTATION_UPDATE_STRUCT.pack(
            d.ADAPTATION_OUTCOMES.index(outcome),
            a.version if outcome != "refused" else a.next_version,
            a.last_refusal if outcome == "refused" else 0,
            a.last_change,
            a.last_candidate_acc,
            a.last_active_acc,
            a.last_gate_z,
            a.last_window_pixels,
        )
        self.tm.event(d.EVENT_ADAPTATION_UPDATE, "info" if outcome == "committed" else "low", payload, t)

    def request_calibration(self) -> None:
        """Ground command: a calibration at the next dark sweep and diffuser window."""
        self.calibration.request(3, self.learner.held_by_source[SOURCE_SITE])

    def rollback_calibration(self, t: float) -> bool:
        """Ground command: back to the other calibration slot; held-back samples and statistics follow.
        False (nothing changes) when the other slot no longer holds a committed table."""
        cal = self.calibration
        before = cal.active
        if not cal.rollback():
            return False
        self.learner.remap_replay(cal, before, cal.active)
        self.layer.remap_ring(cal, before, cal.active)
        self.learner.forget()
        self.adaptation.restart_window()
        self._report_calibration("rolled_back", t)
        return True

    def install_calibration(self, gain_q: np.ndarray, offset_q: np.ndarray) -> bool:
        """A ground-uplinked calibration table becomes the candidate (judged at the next step)."""
        return self.calibration.install_candidate(gain_q, offset_q, self.learner.held_by_source[SOURCE_SITE])

    def task_calibration(self, t: float) -> float:
        """One bounded step of the radiometric self-calibration (flight_sw/ml/radiometry.py)."""
        if not hasattr(self.payload, "acquire_calibration"):
            return -1.0
        cal = self.calibration
        before = cal.active
        outcome = cal.step(t, self.payload, self._heldback, self.learner.held_by_source[SOURCE_SITE])
        if outcome == "committed":  # held-back samples and statistics follow the new table
            self.learner.remap_replay(cal, before, cal.active)
            self.layer.remap_ring(cal, before, cal.active)
            self.learner.forget()
            self.adaptation.restart_window()  # its pixels were corrected by the old table
        if outcome is not None:
            self._report_calibration(outcome, t)
        if cal.last_step_flops <= 0.0:
            return -1.0
        return cal.last_step_flops / self.cpu_flops_per_s

    def _report_calibration(self, outcome: str, t: float) -> None:
        cal = self.calibration
        payload = d.CALIBRATION_UPDATE_STRUCT.pack(
            CAL_OUTCOMES.index(outcome),
            cal.version if outcome != "refused" else cal.next_version,
            cal.request_reason,
            cal.last_refusal if outcome == "refused" else 0,
            cal.last_band_change,
            cal.last_changed_share,
            cal.last_candidate_acc,
            cal.last_active_acc,
            cal.hot_count,
            cal.dark_jumps,
            cal.diffuser_sweeps,
        )
        self.tm.event(d.EVENT_CALIBRATION_UPDATE, "info" if outcome == "committed" else "low", payload, t)

    def task_training(self, t: float) -> float:
        learner = self.learner
        self._report_trial_switches(t)  # before the block: the switch happens when a trial starts
        if self.training_blocked():
            return -1.0  # issue 7 hook: no onboard commit may overwrite an uploaded model's fallback slot
        layer = self.layer
        if layer.phase != IDLE or (not learner.wants_training() and layer.wants_step()):
            return self._layer_step(t)  # a layer update, once started, finishes before the next head update
        if not learner.wants_training():
            return -1.0
        outcome = learner.training_step()
        cost_s = learner.last_step_flops / self.cpu_flops_per_s  # what the step really did
        while learner.stats_reset_events:
            reason = learner.stats_reset_events.pop(0)
            self.tm.event(d.EVENT_STATISTICS_RESET, "high",
                          d.STATISTICS_RESET_STRUCT.pack(reason, min(learner.stats_resets, 0xFFFF)), t)
        if outcome is not None:
            self.report_update(outcome, t)
        return cost_s

    def _layer_step(self, t: float) -> float:
        """One step of the last-layer update (flight_sw/ml/layer_update.py) in a `training` task run."""
        learner, layer = self.learner, self.layer
        outcome = layer.step(learner._ext_args, learner.slots[learner.active], learner.compare_layer)
        if outcome == "committed":
            learner.features_changed()  # the head's statistics and basis describe the old features
        if outcome in ("committed", "refused"):
            self._report_layer(outcome, t)
        return layer.last_step_flops / self.cpu_flops_per_s

    def _report_trial_switches(self, t: float) -> None:
        """Switches an uploaded head's trial made (flight_sw/tmtc/upload.py), as the owners' events."""
        a = self.adaptation
        if a.trial_report:
            outcome, a.trial_report = a.trial_report, ""
            payload = d.ADAPTATION_UPDATE_STRUCT.pack(d.ADAPTATION_OUTCOMES.index(outcome), a.version, 0, 0.0,
                                                      math.nan, math.nan, math.nan, 0)
            self.tm.event(d.EVENT_ADAPTATION_UPDATE, "info", payload, t)
        a = self.layer
        if a.trial_report:
            outcome, a.trial_report = a.trial_report, ""
            payload = d.LAYER_UPDATE_STRUCT.pack(d.LAYER_OUTCOMES.index(outcome), a.version, 0, 0, math.nan,
                                                 math.nan, math.nan, 0, 0.0, math.nan)
            self.tm.event(d.EVENT_LAYER_UPDATE, "info", payload, t)

    def _report_layer(self, outcome: str, t: float) -> None:
        a = self.layer
        payload = d.LAYER_UPDATE_STRUCT.pack(
            d.LAYER_OUTCOMES.index(outcome),
            a.version if outcome != "refused" else a.next_version,
            a.last_refusal if outcome == "refused" else 0,
            a.last_units,
            a.last_candidate_acc,
            a.last_active_acc,
            a.last_gate_z,
            a.last_path,
            a.last_energy_j,
            a.last_residual,
        )
        self.tm.event(d.EVENT_LAYER_UPDATE, "info" if outcome == "committed" else "low", payload, t)

    def _report_samples(self, t: float, m: int) -> None:
        """Send a few site-labelled samples down (HK SID 5) for the ground's replay and retraining."""
        k = min(d.SAMPLES_PER_REPORT, m)
        fmt = self._sample_fmt
        parts = [d.SAMPLES_HEADER.pack(self.learner.version, k)]
        for i in range(k):
            parts.append(d.SAMPLE_RECORD_HEAD.pack(int(self._cal_labels[i]), int(self._cal_pred[i])))
            parts.append(fmt.pack(*self._cal_pixels[i].tolist()))
        self.tm.housekeeping(d.HK_SAMPLES_SID, b"".join(parts), t)

    def _report_drift(self, t: float) -> None:
        events = self.learner.drift_events
        while events:
            source, samples = events.pop(0)
            self.calibration.request(1, self.learner.held_by_source[SOURCE_SITE])  # a drift alarm asks for one
            self.tm.event(d.EVENT_DRIFT_DETECTED, "medium", struct.pack(">BI", source, samples), t)

    def report_update(self, outcome: str, t: float) -> None:
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
            learner.last_kappa,
            learner.precond_refreshes,
            learner.last_refusal if outcome == "refused" else 0,
            learner.last_gate_z,
        )
        severity = "info" if outcome == "committed" else "low"
        self.tm.event(d.EVENT_TRAINING_UPDATE, severity, payload, t)

    # -- snapshot ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"learner": self.learner.state_dict(), "calibration": self.calibration.state_dict(),
                "adaptation": self.adaptation.state_dict(), "layer": self.layer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state["learner"])
        self.calibration.load_state_dict(state["calibration"])
        self.adaptation.load_state_dict(state["adaptation"])
        self.layer.load_state_dict(state["layer"])
