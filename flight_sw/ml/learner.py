"""Onboard head training: streaming statistics, a resumable update job, gate, A/B slots.

Training is cut into bounded steps that the executive runs one per `training`
task run, so no step exceeds its frame: SOLVE (Q X = B through the optimizer
interface), VALIDATE (candidate vs active on held-back samples), COMMIT (atomic
switch of the active slot). Statistics accumulate when calibration labels arrive.
After a commit the previous head stays in the other slot; if live labels show the
new head doing worse than the previous one, it rolls back automatically.

Every array lives in a buffer allocated at start-up; the steady-state path runs
numba kernels over them and allocates nothing.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.devices.optimizer import SolveReport
from flight_sw.memory import VALIDATION_WINDOW
from flight_sw.ml import kernels as k
from flight_sw.ml import precondition as pc
from flight_sw.ml.commit_watch import previous_wins
from flight_sw.ml.drift import PageHinkley
from flight_sw.ml.model import FeatureExtractor, ModelImage
from flight_sw.tmtc.dictionary import TRAINING_REFUSALS

IDLE, SOLVE, VALIDATE, COMMIT = 0, 1, 2, 3
#: Why the gate refused a candidate (TRAINING_UPDATE.refusal).
REFUSALS = TRAINING_REFUSALS
STEP_NAMES = ("idle", "solve", "validate", "commit")
#: Every HOLDOUT_EVERY-th labelled sample goes to the replay (validation) buffer.
HOLDOUT_EVERY = 4
#: Labelled samples after a commit used to judge it against the previous head.
ROLLBACK_WINDOW = 64
ROLLBACK_MARGIN = 0.05
#: The head gate judges on the whole replay ring (noisy labels need every sample); the
#: calibration gate and uploaded-model trials on the most recent VALIDATION_WINDOW
#: (flight_sw.memory): after a drift the old ones describe a sensor that no longer exists.
#: Below this sun elevation the label-free drift statistic is dominated by noise.
DRIFT_MIN_SUN_ELEV_DEG = 25.0
#: Pixels darker than this reflectance-vector norm are left out of the drift statistic,
#: and a batch needs DRIFT_MIN_BRIGHT bright pixels to give a reading.
DRIFT_MIN_NORM = 0.4
DRIFT_MIN_BRIGHT = 4
#: Label-based Page-Hinkley on per-sample correctness at calibration sites: ignore accuracy
#: dips under 5 points, alarm after a cumulative excess of 15 errors (about 300 samples
#: after a 10-point drop; the label-free monitor is the fast one).
LABEL_PH_DELTA = 0.05
LABEL_PH_THRESHOLD = 15.0
ACCURACY_EMA_ALPHA = 0.2

#: Scalar state that a snapshot must carry (buffers are saved separately).
STATE_FIELDS = (
    "active", "version", "next_version", "replay_count", "replay_next", "state", "new_labels",
    "labels_total", "effective_labels", "accepted", "refused", "rollbacks", "label_accuracy",
    "labelled_seen", "watch_remaining", "watch_new_correct", "watch_old_correct",
    "rollback_pending_report", "last_candidate_acc", "last_active_acc", "slot_versions", "drift_pending",
    "precond_refreshes", "last_kappa", "stats_resets", "labels_by_source", "held_by_source",
    "last_refusal", "last_gate_z", "last_site_vote", "basis_stale",
)
#: Reasons for re-seeding the statistics (flight_sw.tmtc.dictionary.STATISTICS_RESET_REASONS).
RESET_NOT_FINITE, RESET_NOT_PD = 0, 1


class OnboardLearner:
    def __init__(self, cfg: MissionConfig, image: ModelImage, buffers: dict[str, np.ndarray], solver):
        self.cfg = cfg.model
        self.buf = buffers
        self.extractor = FeatureExtractor(image, buffers)
        self._ext_args = self.extractor.args()
        self.slots = (buffers["ml.head_slot_a"], buffers["ml.head_slot_b"])
        self.slots[0][...] = image.head
        self.slots[1][...] = image.head
        self.slot_versions = [image.version, image.version]
        self.active = 0
        self.version = image.version
        self.next_version = image.version + 1
        self.candidate = buffers["ml.candidate_head"]
        # Statistics live in the whitened basis of flight_sw/ml/precondition.py (phi' = T phi).
        self.q = buffers["ml.stats_q"]
        self.b = buffers["ml.stats_b"]
        self.prior_system = buffers["ml.prior_system"]
        self.prior_b = buffers["ml.prior_b"]
        self.precond = buffers["ml.precond"]
        self._ground_stats = (image.stats_q, image.stats_b, float(image.prior_samples))
        self._seed_statistics()
        self.stats_resets = 0
        self.stats_reset_events: list[int] = []  # reasons not yet reported
        self._precond_factor = buffers["ml.precond_factor"]
        self._precond_scratch = buffers["ml.precond_scratch"]
        self._lanczos_vectors = buffers["ml.lanczos_vectors"]
        self._lanczos_tridiag = buffers["ml.lanczos_tridiag"]
        self.feat_white = buffers["ml.batch_features_white"]
        self.precond_refreshes = 0
        self.basis_stale = False  # the features changed under the basis: refresh at the next solve
        self.last_kappa = math.nan  # estimate for the last system handed to the optimizer
        self.last_step_flops = 0.0
        self.b_solve = buffers["ml.solver_rhs"]
        self.q_solve = buffers["ml.solver_work"]
        self.replay_x = buffers["ml.replay_samples"]
        self.replay_y = buffers["ml.replay_labels"]
        self.replay_cols = buffers["ml.replay_columns"]
        self.replay_src = buffers["ml.replay_sources"]
        #: Weight of a held-back label in the gate by source (site, teacher, self): 2 r - 1 for a
        #: source right with probability r (set from the uplinked reliabilities, `set_reliability`).
        self.source_weights = buffers["ml.source_weights"]
        self.source_weights[...] = (1.0, 1.0, 0.0)
        self._paired = buffers["ml.paired"]
        self.last_refusal = 0
        self.last_gate_z = math.nan
        self.last_site_vote = 0
        self.replay_remap = buffers["ml.replay_remap"]
        self.window_labels = buffers["ml.replay_window_labels"]
        self.window_cols = buffers["ml.replay_window_columns"]
        self._no_columns = np.zeros(0, np.int64)
        self.held_by_source = [0, 0, 0]  # held-back samples ever taken, per label source (the calibration
        # gate counts the site ones since its request)
        self.replay_count = 0
        self.replay_next = 0
        self.feat = buffers["ml.batch_features"]
        self.scores = buffers["ml.batch_scores"]
        self.pred_tmp = buffers["ml.batch_pred_tmp"]
        self.feat_source = None
        self.feat_row = buffers["ml.feat_row"]
        self.score_row = buffers["ml.score_row"]
        self.solver = solver
        self.n_classes = self.slots[0].shape[1]
        self.state = IDLE
        self.new_labels = 0
        self.labels_total = 0
        self.labels_by_source = [0, 0, 0]  # site, teacher, self (flight_sw.ml.labels.SOURCE_*)
        self.effective_labels = float(image.prior_samples)
        self.accepted = self.refused = self.rollbacks = 0
        self.label_accuracy = math.nan
        self.labelled_seen = 0
        self.watch_remaining = 0
        self.watch_new_correct = 0
        self.watch_old_correct = 0
        self.rollback_pending_report = False
        self.last_report: SolveReport | None = None
        self.last_candidate_acc = math.nan
        self.last_active_acc = math.nan
        self.margins = buffers["ml.batch_margins"]
        self.class_spectra = buffers["ml.class_spectra"]
        self.class_spectra[...] = image.class_spectra
        self.drift_scratch = buffers["ml.drift_scratch"]
        self.drift_sample = buffers["ml.drift_sample"]
        self.last_angle_deg = math.nan
        self.last_free_alarm_samples = 0  # monitored samples seen when the label-free test last fired
        self.angle_ab = buffers["ml.angle_model"]
        self.angle_ab[...] = image.angle_model
        self.present = buffers["ml.class_present"]
        self.correct = buffers["ml.batch_correct"]
        m = cfg.model
        self.drift_free = PageHinkley(buffers["ml.drift_state_margin"], m.drift_delta, m.drift_threshold)
        # Correctness is a 0/1 stream: its own tolerance and threshold (LABEL_PH_*).
        self.drift_labels = PageHinkley(buffers["ml.drift_state_labels"], LABEL_PH_DELTA, LABEL_PH_THRESHOLD)
        self.drift_pending = False  # an alarm asks the next labels to start an update at once
        self.drift_events: list[tuple[int, int]] = []  # (source, samples) not yet reported

    # -- inference ---------------------------------------------------------------
    def predict(self, pixels: np.ndarray, out_labels: np.ndarray, head: np.ndarray | None = None) -> None:
        """Classify a batch (all rows of `pixels`, at most the planned batch) into `out_labels`
        with the active head (or the given one)."""
        n = pixels.shape[0]
        full = n == self.feat.shape[0]
        feat = self.feat if full else self.feat[:n]
        k.mlp_features_into(pixels, *self._ext_args, feat)
        self.feat_source = pixels  # which batch `feat` describes (hosts may reuse it)
        k.classify_into(feat, self.slots[self.active] if head is None else head,
                        self.scores if full else self.scores[:n], out_labels)

    def predict_with_inputs(self, pixels: np.ndarray, out_labels: np.ndarray, mean: np.ndarray,
                            scale: np.ndarray) -> None:
        """Classify with the active head but inputs normalised by (mean, scale) (an input
        adaptation's previous or candidate normalisation). Leaves `feat` describing no batch."""
        e = self._ext_args
        self._predict_with(pixels, out_labels, (mean, scale, *e[2:]))

    def predict_with_layer(self, pixels: np.ndarray, out_labels: np.ndarray, w2: np.ndarray, c2: np.ndarray,
                           b2: np.ndarray) -> None:
        """Classify with the active head but the extractor's last layer (w2, c2, b2) (a layer
        update's previous or candidate layer). Leaves `feat` describing no batch."""
        e = self._ext_args
        self._predict_with(pixels, out_labels, (*e[:6], w2, c2, b2, *e[9:]))

    def _predict_with(self, pixels: np.ndarray, out_labels: np.ndarray, ext_args: tuple) -> None:
        n = pixels.shape[0]
        feat = self.feat[:n]
        k.mlp_features_into(pixels, *ext_args, feat)
        self.feat_source = None
        k.classify_into(feat, self.slots[self.active], self.scores[:n], out_labels)

    def monitor(self, pixels: np.ndarray, pred: np.ndarray, n: int, sun_elevation_deg: float) -> None:
        """Label-free drift check on the batch just classified.

        The statistic is the batch median, over bright pixels, of the spectral angle to the
        predicted class's reference spectrum minus what a healthy sensor shows for that
        class at this sun elevation (the ground's per-class fit a_c + b_c / sin(e); the
        frame's ancillary data give e).
        It is fed to Page-Hinkley negated, so the test fires on an *increase*. Frames under
        DRIFT_MIN_SUN_ELEV_DEG are skipped: there, noise dominates the angles.
        """
        k.margins_into(self.scores, n, self.margins)
        if not sun_elevation_deg >= DRIFT_MIN_SUN_ELEV_DEG:
            return
        resid = k.spectral_angle_stat(
            pixels, pred, self.class_spectra, self.angle_ab, 1.0 / math.sin(math.radians(sun_elevation_deg)),
            n, DRIFT_MIN_NORM, DRIFT_MIN_BRIGHT, self.drift_scratch[0],
        )
        if resid < -1e8:
            return  # too few bright pixels (ocean, shadow): no reading
        self.last_angle_deg = resid
        self.drift_sample[0] = -resid
        if self.drift_free.update(self.drift_sample, 1) >= 0:
            self.last_free_alarm_samples = self.drift_free.samples * n
            self._on_drift(0, self.drift_free.samples * n)

    def _on_drift(self, source: int, samples: int) -> None:
        """Forget old statistics so new labels dominate, and bring the next update forward."""
        self.forget()
        if len(self.drift_events) < 8:
            self.drift_events.append((source, samples))

    def set_reliability(self, site: float, teacher: float) -> None:
        """Gate weights from each source's published reliability (site maps' accuracy, the
        teacher's pre-launch validation precision); self-labels never judge."""
        self.source_weights[...] = (max(2.0 * site - 1.0, 0.0), max(2.0 * teacher - 1.0, 0.0), 0.0)

    def features_changed(self) -> None:
        """The extractor's last layer changed (a layer commit or rollback): forget as after a
        calibration, and re-whiten at the next solve. New features can change the head system's
        spectrum at once, which the 8-step Lanczos estimate can miss (it saw kappa 4 where the
        system had 11 after layer commits)."""
        self.forget()
        self.basis_stale = True

    def forget(self) -> None:
        """Scale the statistics by `model.drift_forget` and start an update at the next labels
        (after a drift alarm, or when the radiometric calibration changes the pixels)."""
        f = self.cfg.drift_forget
        self.q *= f
        self.b *= f
        self.effective_labels *= f
        self.drift_pending = True

    # -- the radiometric calibration's view of the held-back samples -----------------------
    def load_kernels(self) -> None:
        """Load at start-up the kernels otherwise first needed days into a mission (the held-back
        checks of a calibration update): numba loads a kernel from its cache at its first call,
        which would grow the process then. Calls on zero samples, which touch nothing."""
        window, labels, cols = self.replay_remap, self.window_labels, self.window_cols
        k.gather_recent(self.replay_x, self.replay_y, self.replay_cols, self.replay_src, self.replay_next, 0, 0, 0,
                        window, labels, cols)
        head = self.slots[self.active]
        for x, y in ((window, labels), (self.replay_x, self.replay_y)):
            k.replay_correct(x, y, 0, 0, *self._ext_args, head, self.feat_row, self.score_row)

    def heldback_accuracy(self, calibration, from_slot: int, to_slot: int, n: int,
                          source: int = 0) -> tuple[float, float, int]:
        """Active head's accuracy on the n most recent held-back samples of one label source (at
        most the validation window) as stored (calibrated with `from_slot`) and re-calibrated
        with `to_slot`."""
        window, labels, cols = self.replay_remap, self.window_labels, self.window_cols
        n = k.gather_recent(self.replay_x, self.replay_y, self.replay_cols, self.replay_src, self.replay_next,
                            min(self.replay_count, self.replay_x.shape[0]), source, min(n, window.shape[0]),
                            window, labels, cols)
        if n == 0:
            return math.nan, math.nan, 0
        head = self.slots[self.active]
        acc_from = k.replay_correct(window, labels, 0, n, *self._ext_args, head, self.feat_row, self.score_row) / n
        calibration.remap_into(window, cols, n, from_slot, to_slot, window)
        acc_to = k.replay_correct(window, labels, 0, n, *self._ext_args, head, self.feat_row, self.score_row) / n
        return acc_from, acc_to, n

    def remap_replay(self, calibration, from_slot: int, to_slot: int) -> None:
        """Re-express every held-back sample in another calibration table (after a commit or rollback)."""
        n = self.replay_count
        calibration.remap_into(self.replay_x, self.replay_cols, n, from_slot, to_slot, self.replay_x)

    def head_is_valid(self) -> bool:
        """The active head is usable (finite weights): the 'invalid model' FDIR check."""
        return bool(k.all_finite(self.slots[self.active]))

    # -- statistics --------------------------------------------------------------
    def accumulate(self, pixels: np.ndarray, labels: np.ndarray, pred: np.ndarray, monitor: bool = True,
                   source: int = 0, columns: np.ndarray | None = None) -> None:
        """Fold a labelled batch (every row of `pixels`) into the statistics; hold every 4th
        sample back for validation.

        `monitor` feeds the label-based drift test; only calibration-site labels do (the
        teacher's own error rate differs and would read as a change of accuracy). `source`
        counts the labels per source (flight_sw.ml.labels.SOURCE_*). `columns` are the rows'
        detector columns (kept with the held-back samples for the radiometric calibration).
        """
        n = pixels.shape[0]
        if n == 0:
            return
        self.labels_by_source[source] += n
        self.predict(pixels, pred)
        correct = k.count_equal(pred, labels, n)
        acc = correct / n
        if monitor:
            for i in range(n):
                self.correct[i] = 1.0 if pred[i] == labels[i] else 0.0
            if self.drift_labels.update(self.correct, n) >= 0:
                self._on_drift(1, self.drift_labels.samples)
        a = ACCURACY_EMA_ALPHA
        self.label_accuracy = acc if math.isnan(self.label_accuracy) else (1 - a) * self.label_accuracy + a * acc
        self._watch_after_commit(pixels, labels, pred, n)
        pc.whiten_rows_into(self.feat, self.precond, n, self.feat_white)
        added, self.replay_next, held = k.fold_batch_into_stats(
            self.feat_white, labels, pixels, n, self.labelled_seen, HOLDOUT_EVERY, self.cfg.forgetting_factor,
            self.q, self.b, self.replay_x, self.replay_y, self.replay_next, self.replay_x.shape[0],
            self.present, self._no_columns if columns is None else columns, self.replay_cols, source,
            self.replay_src,
        )
        self.replay_count = min(self.replay_count + held, self.replay_x.shape[0])
        self.held_by_source[source] += held
        self.labelled_seen += n
        if added:
            self.effective_labels = self.effective_labels * self.cfg.forgetting_factor + added
            self.new_labels += added
        self.labels_total += n

    def _watch_after_commit(self, pixels: np.ndarray, labels: np.ndarray, pred: np.ndarray, n: int) -> None:
        if self.watch_remaining <= 0:
            return
        new_ok = k.count_equal(pred, labels, n)
        self.predict(pixels, self.pred_tmp[:n], head=self.slots[1 - self.active])
        # predict() overwrote the shared feature buffer with the same features: harmless.
        old_ok = k.count_equal(self.pred_tmp, labels, n)
        if previous_wins(self, new_ok, old_ok, n, ROLLBACK_WINDOW, ROLLBACK_MARGIN):
            self.rollback()
            self.rollback_pending_report = True

    # -- the resumable update job ----------------------------------------------
    def _enough_labels(self) -> bool:
        # After a drift alarm one batch of new labels is enough to start an update.
        return self.new_labels >= (1 if self.drift_pending else self.cfg.min_new_labels)

    def wants_training(self) -> bool:
        return self.state != IDLE or self._enough_labels()

    def step_flops(self) -> float:
        """Modelled floating-point work of the step that will run next (for compute costing).

        A SOLVE step: forming the system, the condition estimate, the solve (costed as the
        digital Cholesky) and the head back to the flight basis; a basis refresh, when one
        is due, adds `precondition.refresh_flops` (`last_step_flops` has what really ran).
        """
        aug = self.q.shape[1]
        c = self.n_classes
        if self.state in (IDLE, SOLVE):
            return (self.q.shape[0] * aug * aug + pc.kappa_flops(aug) + aug**3 / 3.0 + 4.0 * aug * aug * c
                    + aug * aug * c)
        if self.state == VALIDATE:
            bands = self.replay_x.shape[1]
            hidden = self.extractor.w1.shape[0]
            n = self.replay_count  # features once, both heads
            return 2.0 * n * (bands * hidden + hidden * (aug - 1)) + 2.0 * 2.0 * n * aug * c
        return float(aug * c)

    def training_step(self) -> str | None:
        """Run one bounded step; returns 'committed'/'refused' when an update finishes."""
        self.last_step_flops = self.step_flops()
        if self.state == IDLE:
            if not self._enough_labels():
                return None
            self.drift_pending = False
            self.state = SOLVE
        if self.state == SOLVE:
            self._prepare_system()
            x, report = self.solver.solve(self.q_solve, self.b_solve)
            self.last_report = report
            self.new_labels = 0
            if not report.ok:
                self.state = IDLE
                return self._refuse(1)
            pc.lower_transpose_times_into(self.precond, x, self.candidate)  # back to the flight basis
            self.state = VALIDATE
            return None
        if self.state == VALIDATE:
            self.state = IDLE
            if not self.replay_count:
                self.last_candidate_acc = self.last_active_acc = self.last_gate_z = math.nan
                return self._refuse(2)
            self._compare_on_replay()
            if math.isnan(self.last_active_acc):
                return self._refuse(2)  # held-back samples, but none from a source that may judge
            if self.last_candidate_acc < self.last_active_acc + self.cfg.validation_margin:
                return self._refuse(3)
            if not self.last_gate_z >= self.cfg.validation_z:
                return self._refuse(4)
            if self.last_site_vote < 0:
                return self._refuse(5)  # the site labels, independent of the teacher, prefer the active head
            self.last_refusal = 0
            self.state = COMMIT
            return None
        if self.state == COMMIT:
            inactive = 1 - self.active
            np.copyto(self.slots[inactive], self.candidate)
            self.slot_versions[inactive] = self.next_version
            self.active = inactive  # the atomic switch
            self.version = self.next_version
            self.next_version += 1
            self.accepted += 1
            self.state = IDLE
            self.watch_remaining = ROLLBACK_WINDOW
            self.watch_new_correct = self.watch_old_correct = 0
            return "committed"
        return None

    def _refuse(self, reason: int) -> str:
        self.refused += 1
        self.last_refusal = reason
        return "refused"

    def _compare_on_replay(self) -> None:
        """Active against candidate on every held-back sample of the sources that may judge
        (`model.replay_buffer_size`, the most recent): accuracies and the reliability-weighted
        paired statistic z (flight_sw.ml.kernels.replay_paired)."""
        self.last_active_acc, self.last_candidate_acc, self.last_gate_z, self.last_site_vote, _ = self._paired_on_replay(
            self.candidate, False, self.extractor.mean, self.extractor.cx)

    def compare_inputs(self, mean: np.ndarray, scale: np.ndarray) -> tuple[float, float, float, int, int]:
        """The active head with the active input normalisation against the same head with
        inputs normalised by (mean, scale), on the whole held-back ring (the label-free
        adaptation's gate, flight_sw/ml/adaptation.py): (active accuracy, candidate accuracy,
        weighted paired z, site-label vote, samples judged)."""
        e = self._ext_args
        return self._paired_on_replay(self.slots[self.active], True, mean, scale, e[6], e[7], e[8])

    def compare_layer(self, w2: np.ndarray, c2: np.ndarray, b2: np.ndarray) -> tuple[float, float, float, int, int]:
        """The active head with the active last layer against the same head with the layer
        (w2, c2, b2), on the whole held-back ring (the layer update's gate,
        flight_sw/ml/layer_update.py): as `compare_inputs`."""
        e = self._ext_args
        return self._paired_on_replay(self.slots[self.active], True, e[0], e[1], w2, c2, b2)

    def _paired_on_replay(self, head_b: np.ndarray, features_differ: bool, mean_b: np.ndarray,
                          scale_b: np.ndarray, w2_b: np.ndarray | None = None, c2_b: np.ndarray | None = None,
                          b2_b: np.ndarray | None = None) -> tuple[float, float, float, int, int]:
        n = self.replay_count  # the whole ring: noisy labels need every held-back sample to see a real gain
        start = (self.replay_next - n) % self.replay_x.shape[0]
        out = self._paired
        e = self._ext_args
        k.replay_paired(self.replay_x, self.replay_y, self.replay_src, start, n, *e,
                        self.slots[self.active], head_b, features_differ, mean_b, scale_b,
                        e[6] if w2_b is None else w2_b, e[7] if c2_b is None else c2_b, e[8] if b2_b is None else b2_b,
                        self.source_weights,
                        0,  # 0: site labels veto
                        self.feat_row, self.score_row, out)
        judged = out[4]
        acc_a = out[0] / judged if judged else math.nan
        acc_b = out[1] / judged if judged else math.nan
        z = out[2] / math.sqrt(out[3]) if out[3] > 0.0 else 0.0
        return acc_a, acc_b, z, int(out[5]), int(judged)

    def _seed_statistics(self) -> None:
        """Statistics, prior and whitening basis from the ground's statistics (start-up, reset)."""
        stats_q, stats_b, _ = self._ground_stats
        self.precond[...], self.q[...], self.b[...], self.prior_system[...], self.prior_b[...] = pc.initial_basis(
            stats_q, stats_b, self.cfg.prior_anchor, self.cfg.ridge_lambda
        )

    def _prepare_system(self) -> None:
        """The whitened head system into the solver buffers, re-whitened first if it has drifted.

        A system that is not finite, or not positive definite (it always is, by
        construction, unless memory was corrupted), re-seeds the statistics from the
        ground's: training goes on from the pre-launch knowledge instead of refusing
        every update from then on.
        """
        self._form_system()
        if not (k.all_finite(self.q_solve) and k.all_finite(self.b_solve)):
            self._reset_statistics(RESET_NOT_FINITE)
        if self.last_kappa > self.cfg.precondition_kappa_max or self.basis_stale:
            self.basis_stale = False
            if pc.refresh_basis(self.q_solve, self.q, self.b, self.prior_system, self.prior_b, self.precond,
                                self._precond_factor, self._precond_scratch):
                self.precond_refreshes += 1
                self.last_step_flops += pc.refresh_flops(self.q.shape[1], self.n_classes) + pc.kappa_flops(
                    self.q.shape[1])
                self._form_system()
            else:
                self._reset_statistics(RESET_NOT_PD)

    def _form_system(self) -> None:
        pc.system_into(self.q, self.b, self.prior_system, self.prior_b, self.q_solve, self.b_solve)
        self.last_kappa = pc.lanczos_kappa(self.q_solve, pc.LANCZOS_STEPS, self._lanczos_vectors,
                                           self._lanczos_tridiag)

    def _reset_statistics(self, reason: int) -> None:
        """Fault response: back to the ground's statistics (allocates once; not the steady state)."""
        self._seed_statistics()
        self.effective_labels = self._ground_stats[2]
        self.stats_resets += 1
        self.last_step_flops += pc.refresh_flops(self.q.shape[1], self.n_classes) + pc.kappa_flops(self.q.shape[1])
        if len(self.stats_reset_events) < 8:
            self.stats_reset_events.append(reason)
        self._form_system()

    def rollback(self) -> None:
        """Switch back to the other slot (the previous head, bit-identical)."""
        self.active = 1 - self.active
        self.version = self.slot_versions[self.active]
        self.rollbacks += 1
        self.watch_remaining = 0

    def replay_accuracy(self, head: np.ndarray, ext_args: tuple | None = None) -> float:
        """A head's accuracy on the most recent held-back samples, every source (uploaded-model
        trials), with the extractor as it is or with the given kernel arguments (`_ext_args`'s
        layout: another normalisation or last layer)."""
        n = self.replay_count
        if n == 0:
            return math.nan
        n = min(n, VALIDATION_WINDOW)
        start = (self.replay_next - n) % self.replay_x.shape[0]
        e = self._ext_args if ext_args is None else ext_args
        return k.replay_correct(
            self.replay_x, self.replay_y, start, n, *e, head, self.feat_row, self.score_row
        ) / n

    # -- snapshot -----------------------------------------------------------------
    def state_dict(self) -> dict:
        out = {name: getattr(self, name) for name in STATE_FIELDS}
        out["drift"] = [self.drift_free.alarms, self.drift_free.samples, self.drift_labels.alarms,
                        self.drift_labels.samples, [list(e) for e in self.drift_events]]
        # The last solve's report goes into the next update event, which may come after a reboot.
        out["last_report"] = None if self.last_report is None else dataclasses.asdict(self.last_report)
        return out

    def load_state_dict(self, state: dict) -> None:
        for name in STATE_FIELDS:
            setattr(self, name, state[name])
        fa, fs, la, ls, events = state["drift"]
        self.drift_free.alarms, self.drift_free.samples = fa, fs
        self.drift_labels.alarms, self.drift_labels.samples = la, ls
        self.drift_events = [tuple(e) for e in events]
        rep = state.get("last_report")
        self.last_report = None if rep is None else SolveReport(**rep)
