"""Pre-launch model: what the ground trains on the undrifted distribution before launch.

Thin version (issue 2): the feature extractor is a seeded random-feature layer
(standing in for the ground-trained MLP of issue 5) and the head is a ridge
regression on features of undrifted scene samples.
"""

from __future__ import annotations

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.ml.model import FeatureExtractor, ModelImage
from sim.scene import SceneTruth

PRELAUNCH_SAMPLES = 4000
#: Weight of the ground statistics onboard, in equivalent labelled samples.
PRIOR_SAMPLES = 512.0


def train_prelaunch_model(cfg: MissionConfig, rng: np.random.Generator) -> ModelImage:
    scene = SceneTruth(cfg.payload, rng)
    n = PRELAUNCH_SAMPLES
    x = np.zeros((n, cfg.payload.bands))
    y = np.zeros(n, dtype=np.int64)
    elev = rng.uniform(15.0, 70.0, size=n)
    for i in range(0, n, 100):
        scene.sample(0.0, 100, scene.base_mix, float(elev[i]), x[i : i + 100], y[i : i + 100], drifted=False)
    f = cfg.model.feature_dim
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    w = rng.standard_normal((cfg.payload.bands, f)).astype(np.float32)
    bias = rng.uniform(-1.0, 1.0, size=f)
    zeros_head = np.zeros((f + 1, scene.n_classes))
    image = ModelImage(1, mean, std, w, bias, zeros_head, np.zeros((f + 1, f + 1)), zeros_head, 0.0)
    ext = FeatureExtractor(image, np.zeros((cfg.payload.bands, f), np.int8), np.zeros(f, np.float32))
    phi = np.zeros((n, f + 1))
    ext.features_into(x, phi)
    onehot = np.eye(scene.n_classes)[y]
    scale = PRIOR_SAMPLES / n
    q = phi.T @ phi * scale
    b = phi.T @ onehot * scale
    head = np.linalg.solve(q + cfg.model.ridge_lambda * np.eye(f + 1), b)
    return ModelImage(1, mean, std, w, bias, head, q, b, PRIOR_SAMPLES)
