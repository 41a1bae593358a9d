"""The onboard model: a frozen, int8-quantised MLP feature extractor and a trainable head.

The ground trains the whole network before launch on the undrifted distribution
(`sim.prelaunch`): inputs normalised per band, two ReLU layers (bands -> hidden ->
features), a linear head. Onboard, the two layers are frozen and run in int8:
inputs quantised with one per-tensor scale, weights with one scale per output
channel (symmetric, 127 levels), int8 x int8 products accumulated in int32,
dequantised once per output, hidden activations requantised per tensor. Only the
head (features + bias -> classes) trains onboard, through the optimizer. This is
the TinyTL / last-layer recipe (Lin et al., NeurIPS 2022: bias/last-layer updates
save up to 6.5x memory) and what RaVAEn flew (few-shot head on a frozen encoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flight_sw.ml.kernels import mlp_features_into

INT8_MAX = 127


@dataclass(frozen=True)
class ModelImage:
    """What the ground hands to the satellite before launch (or uplinks): a versioned model."""

    version: int
    input_mean: np.ndarray  # (bands,)
    input_std: np.ndarray  # (bands,)
    input_clip: float  # |normalised input| mapped to 127 (per-tensor int8 scale x 127)
    w1: np.ndarray  # (bands, hidden) float32
    b1: np.ndarray  # (hidden,)
    hidden_clip: float  # largest hidden activation mapped to 127
    w2: np.ndarray  # (hidden, feature_dim) float32
    b2: np.ndarray  # (feature_dim,)
    head: np.ndarray  # (feature_dim + 1, classes)
    # Ground sufficient statistics behind `head`, scaled to a prior sample count: the
    # onboard statistics start from them, so training refines rather than forgets.
    stats_q: np.ndarray  # (classes, feature_dim + 1, feature_dim + 1): per-class Gram matrices, no ridge
    stats_b: np.ndarray  # (feature_dim + 1, classes)
    prior_samples: float
    # Unit mean spectrum per class (classes, bands), for the label-free drift monitor, and
    # the ground's model of a healthy sensor's spectral angle [deg] per class against sun
    # elevation e: angle_c(e) = a_c + b_c / sin(e) (classes, 2) (noise widens angles as the
    # sun gets low, and differently for dark and bright classes).
    class_spectra: np.ndarray
    angle_model: np.ndarray


def quantise_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantisation with one scale per output channel (column)."""
    scale = np.max(np.abs(w), axis=0) / INT8_MAX
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale.astype(np.float32)


def ground_last_layer(image: ModelImage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image's last layer as the extractor holds it: int8 weights output-channel major
    (feature_dim, hidden), their per-channel scales times the hidden quantisation step, the
    bias. The layer the ground built its heads for (an onboard layer update changes it)."""
    sh = image.hidden_clip / INT8_MAX  # hidden quantisation step (per tensor)
    q2, s2 = quantise_per_channel(image.w2)
    return q2.T, sh * s2.astype(np.float64), np.asarray(image.b2, np.float64)


class FeatureExtractor:
    """The frozen int8 MLP, its weights and scales held in buffers allocated at start-up."""

    def __init__(self, image: ModelImage, buffers: dict[str, np.ndarray] | None = None):
        bands, hidden = image.w1.shape
        feat = image.w2.shape[1]
        b = buffers if buffers is not None else {}

        def buf(name, shape, dtype):
            return b[name] if name in b else np.zeros(shape, dtype)

        self.mean = buf("ml.input_mean", (bands,), np.float64)
        self.cx = buf("ml.input_scale", (bands,), np.float64)
        # int8 weights stored output-channel major (transposed): contiguous dot products.
        self.w1 = buf("ml.w1_int8", (hidden, bands), np.int8)
        self.c1 = buf("ml.w1_scales", (hidden,), np.float64)
        self.b1 = buf("ml.b1", (hidden,), np.float64)
        self.w2 = buf("ml.w2_int8", (feat, hidden), np.int8)
        self.c2 = buf("ml.w2_scales", (feat,), np.float64)
        self.b2 = buf("ml.b2", (feat,), np.float64)
        self.xq_row = buf("ml.input_q_row", (bands,), np.int32)
        self.hid_row = buf("ml.hidden_row", (hidden,), np.int32)
        sx = image.input_clip / INT8_MAX  # input quantisation step (per tensor)
        q1, s1 = quantise_per_channel(image.w1)
        self.mean[...] = image.input_mean
        self.cx[...] = 1.0 / (image.input_std * sx)
        self.w1[...], self.c1[...], self.b1[...] = q1.T, sx * s1.astype(np.float64), image.b1
        self.w2[...], self.c2[...], self.b2[...] = ground_last_layer(image)
        self.ih = 1.0 / (image.hidden_clip / INT8_MAX)  # 1 / the hidden quantisation step

    def features_into(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """Fill out[:, :F] with the features and out[:, F] with the head's bias input 1."""
        mlp_features_into(pixels, *self.args(), out)

    def args(self) -> tuple:
        """The kernel arguments after the pixels (for kernels that run the extractor inline)."""
        return (self.mean, self.cx, self.w1, self.c1, self.b1, self.ih, self.w2, self.c2, self.b2,
                self.xq_row, self.hid_row)


def float_features(image: ModelImage, pixels: np.ndarray) -> np.ndarray:
    """Float reference of the extractor (no quantisation): for tests and ground training."""
    x = (np.asarray(pixels, np.float64) - image.input_mean) / image.input_std
    h = np.maximum(x @ image.w1 + image.b1, 0.0)
    f = np.maximum(h @ image.w2 + image.b2, 0.0)
    return np.hstack([f, np.ones((f.shape[0], 1))])
