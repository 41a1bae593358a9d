"""The onboard teacher: a larger float MLP, trained on the ground, that labels frames onboard.

Labels for the onboard learner must carry no simulator truth. The teacher is one
real source of them: a model several times the size of the flight model, trained
before launch with augmentation for sensor change (`sim.teacher_training`), run
onboard on the same, possibly drifted, pixels the flight model sees. Because it
is bigger and trained to tolerate gain and offset changes, it stays right longer
than the small model; where it is unsure (max softmax probability below
`min_confidence`) it abstains rather than teach the student its mistakes.

It runs in float32 (weights) with float64 accumulation: it flies only when power
allows (an optional task), so int8 would save energy it does not need to save,
and float keeps it faithful to what the ground validated. All its weights and
scratch live in buffers named `teacher.*` (`teacher_buffer_specs`), allocated at
start-up from the flight memory plan; `label_into` allocates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class TeacherImage:
    """What the ground uploads before launch: a versioned teacher model."""

    version: int
    input_mean: np.ndarray  # (bands,) float64
    input_std: np.ndarray  # (bands,) float64
    weights: tuple[np.ndarray, ...]  # float32 (in, out) per layer; ReLU between; last -> logits
    biases: tuple[np.ndarray, ...]  # float32 (out,) per layer
    min_confidence: float  # max softmax probability below which the teacher abstains (-1)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(w.shape[0]), int(w.shape[1])) for w in self.weights)


def _check_shapes(shapes: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """Layer widths (bands, hidden..., classes) of a chain of (in, out) shapes; ValueError if broken."""
    if len(shapes) == 0:
        raise ValueError("teacher needs at least one layer")
    dims = [int(shapes[0][0])]
    for i, (n_in, n_out) in enumerate(shapes):
        if n_in != dims[-1]:
            raise ValueError(f"teacher layer {i} takes {n_in} inputs, previous layer gives {dims[-1]}")
        if n_in < 1 or n_out < 1:
            raise ValueError(f"teacher layer {i} has shape {(n_in, n_out)}, expected positive sizes")
        dims.append(int(n_out))
    if dims[-1] < 2:
        raise ValueError(f"teacher needs at least 2 classes, got {dims[-1]}")
    return tuple(dims)


def teacher_buffer_specs(
    image_shapes: tuple[tuple[int, int], ...], batch: int
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every teacher buffer (flight_sw/memory.py format).

    Weights of all layers are packed in one flat float32 buffer, each layer stored
    output-channel major (out, in) so each dot product runs over contiguous memory;
    the layer widths sit in `teacher.layer_dims`. Two ping-pong activation buffers
    (batch x widest layer) hold the hidden layers; the logits go straight into
    `teacher.probs` (float64) and are turned into probabilities in place.
    """
    dims = _check_shapes(tuple(image_shapes))
    if batch < 1:
        raise ValueError(f"teacher batch must be >= 1, got {batch}")
    n_w = sum(dims[i] * dims[i + 1] for i in range(len(dims) - 1))
    n_b = sum(dims[1:])
    widest = max(dims[:-1])  # the input and the hidden layers (logits go to probs)
    return {
        "teacher.weights": ((n_w,), "float32"),
        "teacher.biases": ((n_b,), "float32"),
        "teacher.layer_dims": ((len(dims),), "int64"),
        "teacher.input_mean": ((dims[0],), "float64"),
        "teacher.input_scale": ((dims[0],), "float64"),
        "teacher.act_a": ((batch, widest), "float32"),
        "teacher.act_b": ((batch, widest), "float32"),
        "teacher.probs": ((batch, dims[-1]), "float64"),
    }


class Teacher:
    """The teacher's weights and scratch in start-up buffers, and its labelling call."""

    def __init__(self, image: TeacherImage, buffers: dict[str, np.ndarray] | None = None, batch: int = 64):
        """Copy `image` into `buffers` (the planned `teacher.*` arrays; `batch` is then read from
        them) or, if None, into buffers allocated here for `batch` samples per call."""
        dims = _check_shapes(image.shapes)
        if len(image.biases) != len(image.weights):
            raise ValueError(f"teacher has {len(image.weights)} weight and {len(image.biases)} bias layers")
        for i, bias in enumerate(image.biases):
            if bias.shape != (dims[i + 1],):
                raise ValueError(f"teacher bias {i} has shape {bias.shape}, expected {(dims[i + 1],)}")
        for name, v in (("input_mean", image.input_mean), ("input_std", image.input_std)):
            if np.shape(v) != (dims[0],):
                raise ValueError(f"teacher {name} has shape {np.shape(v)}, expected {(dims[0],)}")
        if np.any(~(np.asarray(image.input_std) > 0.0)):
            raise ValueError("teacher input_std must be > 0 in every band")
        if not 0.0 <= image.min_confidence <= 1.0:
            raise ValueError(f"teacher min_confidence {image.min_confidence} not in [0, 1]")
        if buffers is not None:
            if "teacher.probs" not in buffers:
                raise ValueError("teacher buffers lack 'teacher.probs'")
            batch = int(buffers["teacher.probs"].shape[0])
        specs = teacher_buffer_specs(image.shapes, batch)
        if buffers is None:
            buffers = {name: np.zeros(shape, dtype) for name, (shape, dtype) in specs.items()}
        for name, (shape, dtype) in specs.items():
            a = buffers.get(name)
            if a is None or a.shape != shape or a.dtype != np.dtype(dtype) or not a.flags.c_contiguous:
                got = None if a is None else (a.shape, str(a.dtype))
                raise ValueError(f"teacher buffer {name!r} is {got}, expected ({shape}, {dtype!r}) C-contiguous")
        self.batch = batch
        self.bands = dims[0]
        self.n_classes = dims[-1]
        self.version = image.version
        self.min_confidence = float(image.min_confidence)
        self.weights = buffers["teacher.weights"]
        self.biases = buffers["teacher.biases"]
        self.dims = buffers["teacher.layer_dims"]
        self.mean = buffers["teacher.input_mean"]
        self.scale = buffers["teacher.input_scale"]
        self.act_a = buffers["teacher.act_a"]
        self.act_b = buffers["teacher.act_b"]
        self.probs = buffers["teacher.probs"]
        self.dims[...] = dims
        self.mean[...] = image.input_mean
        self.scale[...] = 1.0 / np.asarray(image.input_std, np.float64)
        wo = bo = 0
        for w, b in zip(image.weights, image.biases, strict=True):
            n_in, n_out = w.shape
            self.weights[wo : wo + n_in * n_out] = np.asarray(w, np.float32).T.ravel()
            self.biases[bo : bo + n_out] = b
            wo += n_in * n_out
            bo += n_out
        #: Multiply-adds x 2 per labelled sample, for the executive's compute costing.
        self.flops_per_sample = float(2 * sum(a * b for a, b in image.shapes))
        #: Bytes of all teacher buffers (weights included), for the memory report.
        self.nbytes = int(sum(buffers[name].nbytes for name in specs))
        self.n_params = int(self.weights.size + self.biases.size)

    def label_into(self, pixels: np.ndarray, n: int, labels_out: np.ndarray, confidence_out: np.ndarray) -> int:
        """Label pixels[:n]; labels_out[i] = class or -1 (abstain), confidence_out[i] = max prob.

        Returns how many labels were given (not -1). Probabilities stay in `self.probs[:n]`.
        """
        if not 0 <= n <= self.batch or n > pixels.shape[0] or n > labels_out.shape[0] or n > confidence_out.shape[0]:
            raise ValueError(f"teacher: n={n} exceeds the batch ({self.batch}) or a given array")
        if pixels.ndim != 2 or pixels.shape[1] != self.bands:
            raise ValueError(f"teacher: pixels have shape {pixels.shape}, expected (n, {self.bands})")
        return teacher_label_kernel(
            pixels, n, self.mean, self.scale, self.dims, self.weights, self.biases, self.act_a, self.act_b,
            self.probs, self.min_confidence, labels_out, confidence_out,
        )


@numba.njit(cache=True)
def teacher_label_kernel(
    pixels, n, mean, scale, dims, w, b, act_a, act_b, probs, min_conf, labels_out, conf_out
):  # pragma: no cover - compiled
    """Forward pass, softmax and abstention for pixels[:n], writing only into the given buffers.

    Layer l's weights start at sum_{m<l} dims[m] * dims[m+1] in `w`, stored (out, in).
    Hidden activations alternate act_a -> act_b -> act_a ...; the last layer writes
    logits into `probs`, then a max-shifted softmax runs in place. A non-finite
    confidence (NaN pixels) fails `conf >= min_conf`, so the teacher abstains.
    """
    n_layers = dims.shape[0] - 1
    bands = dims[0]
    for i in range(n):
        for k in range(bands):
            act_a[i, k] = (pixels[i, k] - mean[k]) * scale[k]
    wo = 0
    bo = 0
    for layer in range(n_layers):
        n_in = dims[layer]
        n_out = dims[layer + 1]
        src = act_a if layer % 2 == 0 else act_b
        dst = act_b if layer % 2 == 0 else act_a
        last = layer == n_layers - 1
        for i in range(n):
            for j in range(n_out):
                acc = np.float64(b[bo + j])
                base = wo + j * n_in
                for k in range(n_in):
                    acc += np.float64(src[i, k]) * np.float64(w[base + k])
                if last:
                    probs[i, j] = acc
                elif acc > 0.0:
                    dst[i, j] = acc
                else:
                    dst[i, j] = 0.0
        wo += n_in * n_out
        bo += n_out
    n_cls = dims[n_layers]
    given = 0
    for i in range(n):
        best = 0
        for j in range(1, n_cls):
            if probs[i, j] > probs[i, best]:
                best = j
        zmax = probs[i, best]
        s = 0.0
        for j in range(n_cls):
            e = np.exp(probs[i, j] - zmax)
            probs[i, j] = e
            s += e
        for j in range(n_cls):
            probs[i, j] /= s
        conf = probs[i, best]
        conf_out[i] = conf
        if conf >= min_conf:
            labels_out[i] = best
            given += 1
        else:
            labels_out[i] = -1
    return given


def teacher_forward_reference(image: TeacherImage, pixels: np.ndarray) -> np.ndarray:
    """Plain-numpy reference of the teacher: softmax probabilities (n, classes), float64."""
    h = (np.asarray(pixels, np.float64) - image.input_mean) / image.input_std
    last = len(image.weights) - 1
    for i, (w, b) in enumerate(zip(image.weights, image.biases, strict=True)):
        h = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        if i < last:
            h = np.maximum(h, 0.0)
    h = h - h.max(axis=1, keepdims=True)
    p = np.exp(h)
    return p / p.sum(axis=1, keepdims=True)
