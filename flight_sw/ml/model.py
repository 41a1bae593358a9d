"""The onboard model: a frozen int8-quantised feature extractor and a trainable head.

Thin version (issue 2). The extractor is a fixed random-feature layer
phi(x) = relu(((x - mu) / sigma) W + c) with W quantised to int8 with per-channel
scales and used dequantised in float; the head is linear on [phi, 1] and is what
trains onboard. Issue 5 replaces the extractor with a ground-trained MLP, adds the
numba int8 x int8 -> int32 kernels and the drift monitors behind this interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flight_sw.ml.kernels import features_into


@dataclass(frozen=True)
class ModelImage:
    """What the ground hands to the satellite before launch (or uplinks): a versioned model."""

    version: int
    input_mean: np.ndarray  # (bands,)
    input_std: np.ndarray  # (bands,)
    extractor_w: np.ndarray  # (bands, feature_dim) float32, quantised onboard
    extractor_bias: np.ndarray  # (feature_dim,)
    head: np.ndarray  # (feature_dim + 1, classes)
    # Ground sufficient statistics behind `head`, scaled to a prior sample count: the
    # onboard statistics start from them, so training refines rather than forgets.
    stats_q: np.ndarray  # (feature_dim + 1, feature_dim + 1), without the ridge term
    stats_b: np.ndarray  # (feature_dim + 1, classes)
    prior_samples: float


def quantise_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantisation with one scale per output channel (column)."""
    scale = np.max(np.abs(w), axis=0) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


class FeatureExtractor:
    """Frozen onboard: int8 weights with per-channel scales, folded once with the input
    normalisation into float weights (all in preallocated buffers)."""

    def __init__(
        self,
        image: ModelImage,
        w_int8: np.ndarray,
        scales: np.ndarray,
        folded_w: np.ndarray | None = None,
        folded_bias: np.ndarray | None = None,
    ):
        q, s = quantise_per_channel(image.extractor_w)
        w_int8[...] = q
        scales[...] = s
        dequant = w_int8.astype(np.float64) * scales.astype(np.float64)
        self.w = np.empty(dequant.shape) if folded_w is None else folded_w
        self.bias = np.empty(dequant.shape[1]) if folded_bias is None else folded_bias
        self.w[...] = dequant / image.input_std[:, None]
        self.bias[...] = image.extractor_bias - (image.input_mean / image.input_std) @ dequant

    def features_into(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """Fill out[:, :F] with relu(features) and out[:, F] with the bias input 1."""
        features_into(pixels, self.w, self.bias, out)
