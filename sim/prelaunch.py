"""Pre-launch model: what the ground trains on the undrifted distribution before launch.

A small MLP (bands -> hidden -> features, ReLU) with a softmax head is trained with
Adam on labelled scenes of the undrifted sensor. The int8 quantisation ranges are
calibrated on the same data (inputs with headroom for sensor drift). The head that
flies is then refitted as ridge regression on the *quantised* onboard features, and
its sufficient statistics, scaled to `PRIOR_SAMPLES`, seed the onboard statistics.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.ml.kernels import classify_into
from flight_sw.ml.learner import DRIFT_MIN_NORM
from flight_sw.ml.learner import DRIFT_MIN_SUN_ELEV_DEG as DRIFT_MIN_ELEV_FIT_DEG
from flight_sw.ml.model import FeatureExtractor, ModelImage
from sim.scene import SceneTruth

PRELAUNCH_SAMPLES = 8000
#: Healthy-sensor batches used to fit the drift statistic's dependence on sun elevation.
ANGLE_FIT_BATCHES = 2000
#: Weight of the ground statistics onboard, in equivalent labelled samples.
PRIOR_SAMPLES = 512.0
EPOCHS = 40
BATCH = 256
LEARNING_RATE = 0.01
#: Input range headroom over the training data (drifted inputs must not saturate early).
INPUT_HEADROOM = 1.5
HIDDEN_HEADROOM = 1.25


def prelaunch_dataset(cfg: MissionConfig, rng: np.random.Generator, n: int,
                      split: str = "prelaunch") -> tuple[np.ndarray, np.ndarray]:
    """Labelled undrifted samples over a range of sun elevations (the ground's training set).

    Drawn from the pre-launch half of the spectral library (`sim.spectra`): the spectra
    the satellite meets in flight are others, so launch is a domain gap. `split="flight"`
    gives the flight distribution instead (held-out test sets for scoring only).
    """
    scene = SceneTruth(cfg.payload, rng, split)
    x = np.zeros((n, cfg.payload.bands), np.float32)
    y = np.zeros(n, dtype=np.int64)
    elev = rng.uniform(15.0, 70.0, size=n // 100 + 1)
    for j, i in enumerate(range(0, n, 100)):
        m = min(100, n - i)
        scene.sample(0.0, m, scene.base_mix, float(elev[j]), x[i : i + m], y[i : i + m], drifted=False)
    return x, y


def _train_mlp(x, y, n_classes, hidden, feat, rng):
    """Adam on softmax cross-entropy; returns (w1, b1, w2, b2)."""
    bands = x.shape[1]
    params = [
        rng.standard_normal((bands, hidden)) * np.sqrt(2.0 / bands), np.zeros(hidden),
        rng.standard_normal((hidden, feat)) * np.sqrt(2.0 / hidden), np.zeros(feat),
        rng.standard_normal((feat, n_classes)) * np.sqrt(1.0 / feat), np.zeros(n_classes),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(n_classes)[y]
    step = 0
    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for s in range(0, len(x), BATCH):
            idx = order[s : s + BATCH]
            xb, tb = x[idx], onehot[idx]
            w1, b1, w2, b2, w3, b3 = params
            h1 = np.maximum(xb @ w1 + b1, 0.0)
            h2 = np.maximum(h1 @ w2 + b2, 0.0)
            z = h2 @ w3 + b3
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            g = (p - tb) / len(idx)
            gw3, gb3 = h2.T @ g, g.sum(0)
            g2 = (g @ w3.T) * (h2 > 0)
            gw2, gb2 = h1.T @ g2, g2.sum(0)
            g1 = (g2 @ w2.T) * (h1 > 0)
            gw1, gb1 = xb.T @ g1, g1.sum(0)
            step += 1
            for i, grad in enumerate((gw1, gb1, gw2, gb2, gw3, gb3)):
                m[i] = 0.9 * m[i] + 0.1 * grad
                v[i] = 0.999 * v[i] + 0.001 * grad * grad
                mh = m[i] / (1 - 0.9**step)
                vh = v[i] / (1 - 0.999**step)
                params[i] -= LEARNING_RATE * mh / (np.sqrt(vh) + 1e-8)
    return params[0], params[1], params[2], params[3]


def train_prelaunch_model(cfg: MissionConfig, rng: np.random.Generator) -> ModelImage:
    x, y = prelaunch_dataset(cfg, rng, PRELAUNCH_SAMPLES)
    n_classes = len(cfg.payload.classes)
    mean = x.mean(axis=0).astype(np.float64)
    std = x.std(axis=0).astype(np.float64) + 1e-6
    xn = (x - mean) / std
    w1, b1, w2, b2 = _train_mlp(xn, y, n_classes, cfg.model.hidden_units, cfg.model.feature_dim, rng)
    input_clip = float(np.percentile(np.abs(xn), 99.9)) * INPUT_HEADROOM
    hidden_clip = float(np.max(np.maximum(xn @ w1 + b1, 0.0))) * HIDDEN_HEADROOM
    f = cfg.model.feature_dim
    zeros_head = np.zeros((f + 1, n_classes))
    image = ModelImage(
        1, mean, std, input_clip, w1.astype(np.float32), b1, hidden_clip, w2.astype(np.float32), b2,
        zeros_head, np.zeros((n_classes, f + 1, f + 1)), zeros_head, 0.0, np.zeros((n_classes, x.shape[1])),
        np.zeros((n_classes, 2)),
    )
    phi = np.zeros((len(x), f + 1))
    FeatureExtractor(image).features_into(x, phi)  # the quantised onboard features
    onehot = np.eye(n_classes)[y]
    scale = PRIOR_SAMPLES / len(x)
    q = np.stack([phi[y == c].T @ phi[y == c] * scale for c in range(n_classes)])  # one Gram matrix per class
    b = phi.T @ onehot * scale
    head = np.linalg.solve(q.sum(axis=0) + cfg.model.ridge_lambda * np.eye(f + 1), b)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    spectra = np.stack([unit[y == c].mean(axis=0) for c in range(n_classes)])
    spectra /= np.linalg.norm(spectra, axis=1, keepdims=True)
    angle_model = _fit_angle_model(cfg, rng, dataclasses.replace(image, head=head), spectra)
    return ModelImage(
        1, mean, std, input_clip, w1.astype(np.float32), b1, hidden_clip, w2.astype(np.float32), b2,
        head, q, b, PRIOR_SAMPLES, spectra, angle_model,
    )


def _fit_angle_model(cfg: MissionConfig, rng: np.random.Generator, image: ModelImage, spectra: np.ndarray):
    """Per class, least-squares fit of angle(e) = a_c + b_c / sin(e) to a healthy sensor's
    bright pixels, grouped by the class the flight model predicts (as the monitor does)."""
    scene = SceneTruth(cfg.payload, rng, "prelaunch")
    batch = cfg.payload.samples_per_acquisition
    ext = FeatureExtractor(image)
    n_cls = spectra.shape[0]
    px = np.zeros((batch, cfg.payload.bands), np.float32)
    lab = np.zeros(batch, np.int64)
    feat = np.zeros((batch, image.head.shape[0]))
    scores = np.zeros((batch, n_cls))
    pred = np.zeros(batch, np.int64)
    head = np.ascontiguousarray(image.head)
    angles, inv_sin, cls = [], [], []
    for e in rng.uniform(DRIFT_MIN_ELEV_FIT_DEG, 80.0, size=ANGLE_FIT_BATCHES):
        scene.sample(0.0, batch, scene.base_mix, float(e), px, lab, drifted=False)
        ext.features_into(px, feat)
        classify_into(feat, head, scores, pred)
        norm = np.linalg.norm(px, axis=1)
        bright = norm >= DRIFT_MIN_NORM
        cosv = np.clip(np.sum(px[bright] * spectra[pred[bright]], axis=1) / norm[bright], -1.0, 1.0)
        angles.append(np.degrees(np.arccos(cosv)))
        inv_sin.append(np.full(bright.sum(), 1.0 / np.sin(np.radians(e))))
        cls.append(pred[bright])
    angles, inv_sin, cls = np.concatenate(angles), np.concatenate(inv_sin), np.concatenate(cls)
    model = np.zeros((n_cls, 2))
    for c in range(n_cls):
        m = cls == c
        if m.sum() < 20:  # a class that is never bright (water): unused by the monitor
            continue
        design = np.column_stack([np.ones(m.sum()), inv_sin[m]])
        model[c] = np.linalg.lstsq(design, angles[m], rcond=None)[0]
    return model


#: Labelled pre-launch samples the teacher is trained on (twice the flight model's set).
TEACHER_SAMPLES = 16000
_TEACHER_CACHE: dict[tuple, object] = {}


def prelaunch_teacher(cfg: MissionConfig, seed: int):
    """The ground-trained teacher for this mission and seed (cached per process: it takes seconds)."""
    from sim.teacher_training import train_teacher

    key = (seed, cfg.payload.bands, tuple(cfg.payload.classes), cfg.model.teacher_hidden)
    if key not in _TEACHER_CACHE:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        x, y = prelaunch_dataset(cfg, rng, TEACHER_SAMPLES)
        _TEACHER_CACHE[key] = train_teacher(x, y, len(cfg.payload.classes), rng, hidden=cfg.model.teacher_hidden)
    return _TEACHER_CACHE[key]


def reference_data(cfg: MissionConfig, site_maps: np.ndarray, teacher):
    """What the ground uplinks for onboard labelling and calibration: site maps, the cloud-test
    bands, the teacher, the sun diffuser's pre-flight characterisation."""
    from flight_sw.ml.labels import ReferenceData
    from sim.scene import diffuser_reflectance_factor
    from sim.spectra import band_set

    names = [b[0] for b in band_set(cfg.payload.bands)]
    classes = list(cfg.payload.classes)
    cloud_bands = (names.index("B2"), names.index("B3"), names.index("B11"))
    return ReferenceData(
        site_maps=np.asarray(site_maps, np.uint8),
        site_map_accuracy=cfg.payload.site_map_accuracy,
        cloud_class=classes.index("cloud") if "cloud" in classes else -1,
        cloud_bands=cloud_bands,
        teacher=teacher,
        diffuser_reflectance=diffuser_reflectance_factor(np.array([b[1] for b in band_set(cfg.payload.bands)])),
        teacher_reliability=0.0 if teacher is None else teacher_precision(cfg, teacher),
    )


def teacher_precision(cfg: MissionConfig, teacher) -> float:
    """Share of the teacher's non-abstaining labels that are right on a pre-launch validation set
    (what the ground can say of its teacher before launch; cached per teacher)."""
    from flight_sw.ml.teacher import Teacher

    key = id(teacher)
    hit = _PRECISION_CACHE.get(key)
    if hit is not None and hit[0] is teacher:
        return hit[1]
    x, y = prelaunch_dataset(cfg, np.random.default_rng(np.random.SeedSequence([7, 13])), 2048)
    t = Teacher(teacher, batch=len(x))
    labels = np.zeros(len(x), np.int64)
    conf = np.zeros(len(x))
    t.label_into(x.astype(np.float32), len(x), labels, conf)
    given = labels >= 0
    precision = float(np.mean(labels[given] == y[given])) if given.any() else 0.0
    _PRECISION_CACHE[key] = (teacher, precision)
    return precision


_PRECISION_CACHE: dict = {}
