"""Benchmark problems for the optimizer: the learner's head-training systems Q X = B.

`learner_problems` builds them the way `flight_sw.ml.learner.OnboardLearner`
does: the pre-launch statistics (`train_prelaunch_model(cfg, rng).stats_q`,
`stats_b`) are the start; labelled calibration batches (16 pixels from a random
calibration site's class mix, every 4th held back, forgetting factor per batch)
drawn from the drifting scene over the mission are folded in; every
`min_new_labels` new labels a problem (Q + ridge I, B) is taken, as the training
task would. F = 32 features + bias -> n = 33, C = 6 classes -> m = 6.

Two bases:

- ``raw``: exactly what learner.py hands the optimizer today. Its condition number
  is ~4e4-6e4 (random ReLU features of 10 bands are strongly collinear): no analog
  device with percent-level conductance errors can refine that (the contraction
  per round is ~ kappa * error >> 1), so the driver falls back.
- ``whitened``: the same statistics accumulated in the basis whitened by the
  ground's pre-launch Cholesky factor (phi' = W^T phi, W = L0^-T; O(n^2) per
  sample onboard, the cost of the accumulation itself; X = W X'). Q' starts at
  ~I and drifts with the scene (kappa ~1-150 over a 3-day mission with an abrupt
  detector shift). This is the form in which the analog path works.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.ml.learner import HOLDOUT_EVERY
from flight_sw.ml.model import FeatureExtractor


@dataclass
class ProblemSet:
    q: list[np.ndarray]
    b: list[np.ndarray]
    kappa: np.ndarray
    t_s: np.ndarray  # mission time of each problem

    def __len__(self) -> int:
        return len(self.q)


def _site_mixes(cfg: MissionConfig) -> list[np.ndarray]:
    classes = list(cfg.payload.classes)
    mixes = []
    for site in cfg.calibration_sites:
        v = np.zeros(len(classes))
        for name, frac in site.class_mix.items():
            v[classes.index(name)] = frac
        mixes.append(v / v.sum())
    if not mixes:
        mixes.append(np.full(len(classes), 1.0 / len(classes)))
    return mixes


def _extractor(image, bands: int, f: int) -> FeatureExtractor:
    """The onboard feature extractor, across the two constructor forms of flight_sw.ml.model."""
    try:
        return FeatureExtractor(image)
    except TypeError:  # the earlier random-feature extractor took its int8 buffers
        return FeatureExtractor(image, np.zeros((bands, f), np.int8), np.zeros(f, np.float32))


def learner_problems(
    cfg: MissionConfig,
    seed: int,
    batches: int = 80,
    days: float = 3.0,
    basis: str = "whitened",
    batches_per_pass: int = 3,
) -> ProblemSet:
    """Training problems along one mission's label stream (see module doc).

    The default rate matches the default mission (`flightsim run`, 3 days: 27
    calibration-site passes, 1280 labels = 80 batches of 16, 15 training solves):
    batches come in passes over one site.
    """
    from sim.prelaunch import train_prelaunch_model
    from sim.scene import SceneTruth

    if basis not in ("raw", "whitened"):
        raise ValueError("basis must be 'raw' or 'whitened'")
    ss = np.random.SeedSequence(seed)
    rng_model, rng_scene, rng_pick = (np.random.default_rng(s) for s in ss.spawn(3))
    image = train_prelaunch_model(cfg, rng_model)
    f = cfg.model.feature_dim
    ext = _extractor(image, cfg.payload.bands, f)
    scene = SceneTruth(cfg.payload, rng_scene)
    lam = cfg.model.ridge_lambda
    forget = cfg.model.forgetting_factor
    n = f + 1
    # the learner solves (sum of its Gram statistics) + ridge I; per-class Grams are summed
    stats_q = image.stats_q.sum(axis=0) if image.stats_q.ndim == 3 else image.stats_q
    q0 = stats_q + lam * np.eye(n)
    w = np.linalg.inv(np.linalg.cholesky(q0)).T if basis == "whitened" else np.eye(n)
    q = w.T @ stats_q @ w
    b = w.T @ image.stats_b
    mixes = _site_mixes(cfg)
    px_n = cfg.payload.samples_per_acquisition
    pixels = np.zeros((px_n, cfg.payload.bands))
    labels = np.zeros(px_n, dtype=np.int64)
    phi = np.zeros((px_n, n))
    out = ProblemSet([], [], np.zeros(0), np.zeros(0))
    kappas, times = [], []
    new_labels = 0
    seen = 0
    mix = mixes[0]
    elevation = 45.0
    for k in range(batches):
        t = (k + 0.5) / batches * days * 86400.0
        if k % batches_per_pass == 0:  # a new pass over a random site
            mix = mixes[int(rng_pick.integers(len(mixes)))]
            elevation = float(rng_pick.uniform(20.0, 70.0))
        scene.sample(t, px_n, mix, elevation, pixels, labels)
        ext.features_into(pixels, phi)
        rows = [i for i in range(px_n) if (seen + i) % HOLDOUT_EVERY]
        seen += px_n
        p = phi[rows] @ w
        q *= forget
        b *= forget
        q += p.T @ p
        for row, lab in zip(p, labels[rows], strict=True):
            b[:, lab] += row
        new_labels += len(rows)
        if new_labels >= cfg.model.min_new_labels:
            new_labels = 0
            qs = q + lam * np.eye(n)
            qs = 0.5 * (qs + qs.T)
            out.q.append(qs)
            out.b.append(b.copy())
            kappas.append(np.linalg.cond(qs))
            times.append(t)
    out.kappa = np.array(kappas)
    out.t_s = np.array(times)
    return out


def random_spd(rng: np.random.Generator, n: int, kappa: float) -> np.ndarray:
    """A random SPD matrix with eigenvalues log-spaced over [1, kappa]."""
    qo, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (qo * np.geomspace(1.0, kappa, n)) @ qo.T
