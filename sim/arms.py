"""Comparison arms scored beside the flight software, on the same frames of the same world.

None of them flies: the simulator hands each the pixels (and, where the arm stands for
a ground process, the labelled samples the satellite collected), then scores its
predictions against the truth of the frame. Every arm but the clairvoyant bound sees
only what a real satellite or ground segment would see:

- `CalibrationArm`: label-free radiometric correction in front of the unchanged
  frozen model. Per band, a gain and an offset fitted by least squares to the clear
  pixels of calibration-site frames against the TOA reflectance the site's published
  record predicts for the frame's sun elevation (vicarious calibration over
  pseudo-invariant sites; the atmosphere model is the simulator's own, a favourable
  assumption this arm enjoys).
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
from flight_sw.ml.labels import CLOUD_BLUE_MIN, CLOUD_GREEN_MIN, CLOUD_NDSI_MAX
from flight_sw.ml.model import FeatureExtractor, ModelImage
from sim.scene import atmosphere

#: Frames between two refits of a head arm.
REFIT_EVERY_FRAMES = 30
#: Forgetting per frame of the head arms' statistics (effective memory ~200 frames, ~3,200 pixels).
ARM_FORGETTING = 0.995
#: Weight of the ground's statistics kept in every head-arm solve (the learner's anchor default).
ARM_ANCHOR = 0.1
#: Forgetting per site frame of the calibration fit (effective memory ~100 site frames).
CAL_FORGETTING = 0.99
#: Weights of the pull towards gain 1 and offset 0 in the calibration fit (reflectance^2 and frames).
CAL_PRIOR_GAIN = 0.01
CAL_PRIOR_OFFSET = 0.05


def clear_mask(pixels: np.ndarray, blue: int, green: int, swir: int) -> np.ndarray:
    """Pixels the threshold cloud test (flight_sw.ml.labels) does not flag."""
    g, w = pixels[:, green], pixels[:, swir]
    ndsi = np.where(g + w > 1e-6, (g - w) / np.maximum(g + w, 1e-6), 0.0)
    return ~((pixels[:, blue] > CLOUD_BLUE_MIN) & (g > CLOUD_GREEN_MIN) & (ndsi < CLOUD_NDSI_MAX))


class CalibrationArm:
    def __init__(self, image: ModelImage, records: np.ndarray, band_centres_nm: np.ndarray,
                 cloud_bands: tuple[int, int, int]):
        self.extractor = FeatureExtractor(image)
        self.head = np.ascontiguousarray(image.head, dtype=np.float64)
        self.records = records  # (sites, bands) published clear-sky surface reflectance
        self.centres = band_centres_nm
        self.cloud_bands = cloud_bands
        bands = records.shape[1]
        # Per band weighted sums for y = g x + o: [n, sx, sy, sxx, sxy], with the prior g=1, o=0.
        self.sums = np.zeros((bands, 5))
        self.gain = np.ones(bands)
        self.offset = np.zeros(bands)
        self.fits = 0

    def on_site_frame(self, site: int, sun_elevation_deg: float, pixels: np.ndarray) -> None:
        clear = clear_mask(pixels, *self.cloud_bands)
        if clear.sum() < 4:
            return
        path, trans = atmosphere(self.centres, sun_elevation_deg)
        x = path + trans * self.records[site]  # predicted TOA reflectance of the site
        y = pixels[clear].mean(axis=0)
        s = self.sums
        s *= CAL_FORGETTING
        s[:, 0] += 1.0
        s[:, 1] += x
        s[:, 2] += y
        s[:, 3] += x * x
        s[:, 4] += x * y
        self._fit()

    def _fit(self) -> None:
        """Per band: min sum (y - g x - o)^2 + w_g (g - 1)^2 + w_o o^2 (a weak pull to no correction)."""
        s = self.sums
        for k in range(s.shape[0]):
            n, sx, sy, sxx, sxy = s[k]
            a11, a12, a22 = sxx + CAL_PRIOR_GAIN, sx, n + CAL_PRIOR_OFFSET
            det = a11 * a22 - a12 * a12
            if det <= 1e-15:
                continue
            r1, r2 = sxy + CAL_PRIOR_GAIN, sy
            g = (r1 * a22 - a12 * r2) / det
            if g < 0.2:
                continue
            self.gain[k] = g
            self.offset[k] = (a11 * r2 - a12 * r1) / det
        self.fits += 1

    def predict(self, pixels: np.ndarray, feat: np.ndarray, scores: np.ndarray, pred: np.ndarray) -> np.ndarray:
        corrected = ((pixels - self.offset) / self.gain).astype(np.float32)
        self.extractor.features_into(corrected, feat)
        classify_into(feat, self.head, scores, pred)
        return pred


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
