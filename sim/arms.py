"""Comparison arms scored beside the flight software, on the same frames of the same world.

None of them flies: the simulator hands each the pixels (and, where the arm stands for
a ground process, the labelled samples the satellite collected), then scores its
predictions against the truth of the frame. Every arm but the clairvoyant bound sees
only what a real satellite or ground segment would see:

- calibration only (scored in `sim.simulation`, no class here): the unchanged frozen
  model behind the flight software's own radiometric calibration table (dark signal and
  sun-diffuser gain per detector column, `flight_sw.ml.radiometry`).
- `SelfTrainArm`: the frozen model's head refitted on its own confident predictions
  (pseudo-labels whose score margin exceeds `payload.self_training_margin`).
- `BoundArm`: the same head refitted on *truth* labels of the drifted frames seen so
  far (prequential: scored before it learns from a frame). The limit a head update on
  the frozen features can reach; it is not a bound for an arm that changes the
  features themselves.
"""

from __future__ import annotations

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.ml.kernels import classify_into, margins_into
from flight_sw.ml.model import ModelImage

#: Frames between two refits of a head arm.
REFIT_EVERY_FRAMES = 30
#: Forgetting per frame of the head arms' statistics (effective memory ~200 frames, ~3,200 pixels).
ARM_FORGETTING = 0.995
#: Weight of the ground's statistics kept in every head-arm solve (the learner's anchor default).
ARM_ANCHOR = 0.1


class HeadArm:
    """A head refitted on streaming statistics of the frozen features (ridge, anchored)."""

    def __init__(self, cfg: MissionConfig, image: ModelImage):
        aug, n_cls = image.head.shape
        self.head = np.ascontiguousarray(image.head, dtype=np.float64)
        self.q = np.zeros((aug, aug))
        self.b = np.zeros((aug, n_cls))
        self.prior_q = ARM_ANCHOR * image.stats_q.sum(axis=0) + cfg.model.ridge_lambda * np.eye(aug)
        self.prior_b = ARM_ANCHOR * image.stats_b
        self.frames = 0
        self.eye = np.eye(n_cls)
        self._scores = np.zeros((cfg.payload.samples_per_acquisition, n_cls))
        self.pred = np.zeros(cfg.payload.samples_per_acquisition, np.int64)
        self.margins = np.zeros(cfg.payload.samples_per_acquisition)
        self.labels_used = 0

    def predict(self, feat: np.ndarray) -> np.ndarray:
        classify_into(feat, self.head, self._scores, self.pred)
        return self.pred

    def learn(self, feat: np.ndarray, labels: np.ndarray) -> None:
        self.q *= ARM_FORGETTING
        self.b *= ARM_FORGETTING
        if len(labels):
            self.q += feat.T @ feat
            self.b += feat.T @ self.eye[labels]
            self.labels_used += len(labels)
        self.frames += 1
        if self.frames % REFIT_EVERY_FRAMES == 0:
            self.head = np.linalg.solve(self.q + self.prior_q, self.b + self.prior_b)


class SelfTrainArm(HeadArm):
    def __init__(self, cfg: MissionConfig, image: ModelImage):
        super().__init__(cfg, image)
        self.min_margin = cfg.payload.self_training_margin

    def step(self, feat: np.ndarray) -> np.ndarray:
        """Predict this frame, then learn from its own confident predictions."""
        pred = self.predict(feat).copy()
        margins_into(self._scores, len(pred), self.margins)
        keep = self.margins > self.min_margin
        self.learn(feat[keep], pred[keep])
        return pred


class BoundArm(HeadArm):
    def step(self, feat: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Predict this frame, then learn from its truth (prequential)."""
        pred = self.predict(feat).copy()
        self.learn(feat, truth)
        return pred
