"""Ground training of the onboard teacher (flight_sw/ml/teacher.py) before launch.

The teacher is an N-layer ReLU MLP trained with Adam on softmax cross-entropy,
on the same undrifted pre-launch set as the flight model, but with augmentation
a ground team would use to make it tolerate sensor change it cannot observe
before launch. The augmentation ranges are the ground team's design margins,
chosen from published sensor trending (see `augment_batch`); they are not, and
must never be read from, the simulator's drift parameters.
"""

from __future__ import annotations

import numpy as np

from flight_sw.ml.teacher import TeacherImage

#: Default passes over the data. Measured (16,000 x 10 bands, hidden (64, 64), 2 CPU cores):
#: about 0.04 s per epoch, 60 epochs in ~2.5 s (budget 20 s); 150 epochs gained nothing.
EPOCHS = 60
BATCH = 256
LEARNING_RATE = 3e-3
#: Learning rate at the last epoch as a fraction of the first (cosine decay): settles the
#: weights after the noisy augmented gradients.
FINAL_LR_FRACTION = 0.05

# Augmentation ranges (all per sample, drawn afresh every epoch). Reflectance units
# where not a factor.
#: Independent per-band gain, uniform 1 +- this: relative calibration error between
#: bands and slow independent detector ageing (a few % per year in published
#: MODIS / Landsat / Sentinel-2 trending).
BAND_GAIN_SPREAD = 0.10
#: Probability that a sample also gets one common gain on a contiguous group of bands
#: (one detector module or filter segment ageing together, or a radiation step).
GROUP_GAIN_PROB = 0.5
#: Range of that group gain: mostly losses (optics browning, detector damage lower
#: responsivity; losses of 20-30 % over a mission are reported for blue bands).
GROUP_GAIN_RANGE = (0.70, 1.10)
#: Largest group, in bands (a module spans a few adjacent bands).
GROUP_MAX_BANDS = 5
#: Additive per-band offset, uniform +- this: dark-signal and stray-light residuals
#: after onboard calibration.
OFFSET_SPREAD = 0.01
#: Common brightness factor range: sun elevation, BRDF and atmosphere the radiometric
#: normalisation does not remove. Kept narrow: natural albedo already varies within a
#: class, and a wider range (0.75 .. 1.25 was tried) blurs classes that differ mostly in
#: albedo (urban vs bare soil) and cost accuracy under every band-gain change tried.
BRIGHTNESS_RANGE = (0.85, 1.15)
#: Extra Gaussian noise: per-sample sigma uniform in [0, this] (noise grows with
#: detector ageing and at low sun).
NOISE_SIGMA_MAX = 0.01


def augment_batch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sensor-change-augmented copy of reflectance samples x (n, bands).

    Per sample, in order:
      1. per-band gain, independent, uniform in 1 +- BAND_GAIN_SPREAD (10 %);
      2. with probability GROUP_GAIN_PROB (0.5), one extra gain uniform in GROUP_GAIN_RANGE
         (0.70 .. 1.10) on a contiguous group of 1 .. GROUP_MAX_BANDS (5) bands at a random
         start (a detector module or filter segment ageing together);
      3. brightness scaling, one factor uniform in BRIGHTNESS_RANGE (0.85 .. 1.15);
      4. additive per-band offset uniform in +- OFFSET_SPREAD (0.01 reflectance);
      5. Gaussian noise with a per-sample sigma uniform in [0, NOISE_SIGMA_MAX] (0.01).
    """
    n, bands = x.shape
    gain = rng.uniform(1.0 - BAND_GAIN_SPREAD, 1.0 + BAND_GAIN_SPREAD, size=(n, bands))
    width = rng.integers(1, min(GROUP_MAX_BANDS, bands) + 1, size=n)
    start = rng.integers(0, bands - width + 1)
    idx = np.arange(bands)
    in_group = (idx >= start[:, None]) & (idx < (start + width)[:, None])
    in_group &= (rng.random(n) < GROUP_GAIN_PROB)[:, None]
    group_gain = rng.uniform(*GROUP_GAIN_RANGE, size=n)
    gain = np.where(in_group, gain * group_gain[:, None], gain)
    gain *= rng.uniform(*BRIGHTNESS_RANGE, size=(n, 1))
    out = x * gain + rng.uniform(-OFFSET_SPREAD, OFFSET_SPREAD, size=(n, bands))
    out += rng.standard_normal((n, bands)) * rng.uniform(0.0, NOISE_SIGMA_MAX, size=(n, 1))
    return out


def train_teacher(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    rng: np.random.Generator,
    hidden: tuple[int, ...] = (64, 64),
    epochs: int = EPOCHS,
    min_confidence: float = 0.6,
    augment: bool = True,
    version: int = 1,
) -> TeacherImage:
    """Adam on softmax cross-entropy for a bands -> hidden... -> n_classes ReLU MLP.

    x: reflectance-like (n, bands), y: int class indices. Inputs are normalised with the
    clean set's per-band mean and std (what the teacher sees onboard is the raw sensor,
    so the augmented copies go through the same normalisation). With `augment`, every
    minibatch is freshly augmented (`augment_batch`); without, it trains on x as is.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"train_teacher: x {x.shape} and y {y.shape} do not match")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"train_teacher: labels outside 0..{n_classes - 1}")
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    dims = (x.shape[1], *hidden, n_classes)
    ws = [rng.standard_normal((a, b)) * np.sqrt(2.0 / a) for a, b in zip(dims[:-1], dims[1:], strict=True)]
    ws[-1] *= np.sqrt(0.5)  # linear head: Xavier-like, not He
    params = []
    for w in ws:
        params += [w, np.zeros(w.shape[1])]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(n_classes)[y]
    n_layers = len(ws)
    steps_per_epoch = -(-len(x) // BATCH)
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        xe = augment_batch(x[order], rng) if augment else x[order]
        xe = (xe - mean) / std
        te = onehot[order]
        for s in range(0, len(x), BATCH):
            acts = [xe[s : s + BATCH]]
            tb = te[s : s + BATCH]
            for i in range(n_layers):
                z = acts[-1] @ params[2 * i] + params[2 * i + 1]
                acts.append(np.maximum(z, 0.0) if i < n_layers - 1 else z)
            z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            g = (p - tb) / len(tb)
            grads = [None] * len(params)
            for i in range(n_layers - 1, -1, -1):
                grads[2 * i] = acts[i].T @ g
                grads[2 * i + 1] = g.sum(0)
                if i > 0:
                    g = (g @ params[2 * i].T) * (acts[i] > 0)
            step += 1
            lr = LEARNING_RATE * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + np.cos(np.pi * step / total)))
            c1, c2 = 1 - 0.9**step, 1 - 0.999**step
            for i, grad in enumerate(grads):
                m[i] = 0.9 * m[i] + 0.1 * grad
                v[i] = 0.999 * v[i] + 0.001 * grad * grad
                params[i] -= lr * (m[i] / c1) / (np.sqrt(v[i] / c2) + 1e-8)
    return TeacherImage(
        version=version,
        input_mean=mean,
        input_std=std,
        weights=tuple(params[2 * i].astype(np.float32) for i in range(n_layers)),
        biases=tuple(params[2 * i + 1].astype(np.float32) for i in range(n_layers)),
        min_confidence=float(min_confidence),
    )
