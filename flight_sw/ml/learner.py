"""Onboard head training: streaming statistics, a resumable update job, gate, A/B slots.

Training is cut into bounded steps that the executive runs one per `training`
task run, so no step exceeds its frame: SOLVE (Q X = B through the optimizer
interface), VALIDATE (candidate vs active on held-back samples), COMMIT (atomic
switch of the active slot). Statistics accumulate when calibration labels arrive.
After a commit the previous head stays in the other slot; if live labels show the
new head doing worse than the previous one, it rolls back automatically.
"""

from __future__ import annotations

import math

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.devices.optimizer import DigitalSolver, SolveReport
from flight_sw.ml.model import FeatureExtractor, ModelImage

IDLE, SOLVE, VALIDATE, COMMIT = 0, 1, 2, 3
#: Every HOLDOUT_EVERY-th labelled sample goes to the replay (validation) buffer.
HOLDOUT_EVERY = 4
#: Labelled samples after a commit used to judge it against the previous head.
ROLLBACK_WINDOW = 64
ROLLBACK_MARGIN = 0.05


class OnboardLearner:
    def __init__(self, cfg: MissionConfig, image: ModelImage, buffers: dict[str, np.ndarray], solver: DigitalSolver):
        m = cfg.model
        self.cfg = m
        self.buf = buffers
        self.extractor = FeatureExtractor(image, buffers["ml.extractor_weights_int8"], buffers["ml.extractor_scales"])
        self.slots = (buffers["ml.head_slot_a"], buffers["ml.head_slot_b"])
        self.slots[0][...] = image.head
        self.slots[1][...] = image.head
        self.slot_versions = [image.version, image.version]
        self.active = 0
        self.version = image.version
        self.next_version = image.version + 1
        self.candidate = buffers["ml.candidate_head"]
        self.q = buffers["ml.stats_q"]
        self.b = buffers["ml.stats_b"]
        self.q[...] = image.stats_q
        self.b[...] = image.stats_b
        self.q_solve = buffers["ml.solver_work"]
        self.replay_x = buffers["ml.replay_samples"]
        self.replay_y = buffers["ml.replay_labels"]
        self.replay_count = 0
        self.replay_next = 0
        self.feat = buffers["ml.batch_features"]
        self.scores = buffers["ml.batch_scores"]
        self.solver = solver
        self.n_classes = self.slots[0].shape[1]
        self.state = IDLE
        self.new_labels = 0
        self.labels_total = 0
        self.effective_labels = float(image.prior_samples)
        self.accepted = self.refused = self.rollbacks = 0
        self.label_accuracy = math.nan
        self._acc_ema_alpha = 0.2
        self._labelled_seen = 0
        self._watch_remaining = 0
        self._watch_new_correct = 0
        self._watch_old_correct = 0
        self.pred_tmp = buffers["ml.batch_pred_tmp"]
        self.rollback_pending_report = False
        self.last_report: SolveReport | None = None
        self.last_candidate_acc = math.nan
        self.last_active_acc = math.nan

    # -- inference ---------------------------------------------------------------
    def predict(self, pixels: np.ndarray, out_labels: np.ndarray, head: np.ndarray | None = None) -> None:
        """Classify a batch into `out_labels` with the active head (or the given one)."""
        n = pixels.shape[0]
        feat = self.feat[:n]
        self.extractor.features_into(pixels, feat)
        np.dot(feat, self.slots[self.active] if head is None else head, out=self.scores[:n])
        out_labels[:n] = np.argmax(self.scores[:n], axis=1)

    # -- statistics --------------------------------------------------------------
    def accumulate(self, pixels: np.ndarray, labels: np.ndarray, pred: np.ndarray) -> None:
        """Fold a calibration batch into the statistics; hold every 4th sample back for validation."""
        n = pixels.shape[0]
        self.predict(pixels, pred)
        acc = float(np.mean(pred[:n] == labels[:n]))
        a = self._acc_ema_alpha
        self.label_accuracy = acc if math.isnan(self.label_accuracy) else (1 - a) * self.label_accuracy + a * acc
        self._watch_after_commit(pixels, labels, pred)
        feat = self.feat[:n]
        f = self.cfg.forgetting_factor
        train_rows = [i for i in range(n) if (self._labelled_seen + i) % HOLDOUT_EVERY]
        for i in range(n):
            if (self._labelled_seen + i) % HOLDOUT_EVERY == 0:
                self.replay_x[self.replay_next] = pixels[i]
                self.replay_y[self.replay_next] = labels[i]
                self.replay_next = (self.replay_next + 1) % self.replay_x.shape[0]
                self.replay_count = min(self.replay_count + 1, self.replay_x.shape[0])
        self._labelled_seen += n
        if train_rows:
            phi = feat[train_rows]
            self.q *= f
            self.b *= f
            self.q += phi.T @ phi
            for row, lab in zip(phi, labels[train_rows], strict=True):
                self.b[:, lab] += row
            self.effective_labels = self.effective_labels * f + len(train_rows)
            self.new_labels += len(train_rows)
        self.labels_total += n

    def _watch_after_commit(self, pixels: np.ndarray, labels: np.ndarray, pred: np.ndarray) -> None:
        if self._watch_remaining <= 0:
            return
        n = pixels.shape[0]
        self._watch_new_correct += int(np.sum(pred[:n] == labels[:n]))
        old = self.pred_tmp
        self.predict(pixels, old, head=self.slots[1 - self.active])
        self._watch_old_correct += int(np.sum(old[:n] == labels[:n]))
        self._watch_remaining -= n
        if self._watch_remaining <= 0:
            seen = ROLLBACK_WINDOW - self._watch_remaining
            if (self._watch_old_correct - self._watch_new_correct) / max(seen, 1) > ROLLBACK_MARGIN:
                self.rollback()
                self.rollback_pending_report = True

    # -- the resumable update job ----------------------------------------------
    def wants_training(self) -> bool:
        return self.state != IDLE or self.new_labels >= self.cfg.min_new_labels

    def training_step(self) -> str | None:
        """Run one bounded step; returns 'committed'/'refused' when an update finishes."""
        if self.state == IDLE:
            if self.new_labels < self.cfg.min_new_labels:
                return None
            self.state = SOLVE
        if self.state == SOLVE:
            self.q_solve[...] = self.q
            self.q_solve[np.diag_indices_from(self.q_solve)] += self.cfg.ridge_lambda
            x, report = self.solver.solve(self.q_solve, self.b)
            self.last_report = report
            self.new_labels = 0
            if not report.ok:
                self.state = IDLE
                self.refused += 1
                return "refused"
            self.candidate[...] = x
            self.state = VALIDATE
            return None
        if self.state == VALIDATE:
            self.last_candidate_acc = self._replay_accuracy(self.candidate)
            self.last_active_acc = self._replay_accuracy(self.slots[self.active])
            if self.last_candidate_acc >= self.last_active_acc + self.cfg.validation_margin and self.replay_count:
                self.state = COMMIT
                return None
            self.state = IDLE
            self.refused += 1
            return "refused"
        if self.state == COMMIT:
            inactive = 1 - self.active
            self.slots[inactive][...] = self.candidate
            self.slot_versions[inactive] = self.next_version
            self.active = inactive  # the atomic switch
            self.version = self.next_version
            self.next_version += 1
            self.accepted += 1
            self.state = IDLE
            self._watch_remaining = ROLLBACK_WINDOW
            self._watch_new_correct = self._watch_old_correct = 0
            return "committed"
        return None

    def rollback(self) -> None:
        """Switch back to the other slot (the previous head, bit-identical)."""
        self.active = 1 - self.active
        self.version = self.slot_versions[self.active]
        self.rollbacks += 1
        self._watch_remaining = 0

    def _replay_accuracy(self, head: np.ndarray) -> float:
        n = self.replay_count
        if n == 0:
            return math.nan
        batch = self.feat.shape[0]
        correct = 0
        pred = self.pred_tmp
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            self.predict(self.replay_x[start:stop], pred, head=head)
            correct += int(np.sum(pred[: stop - start] == self.replay_y[start:stop]))
        return correct / n
