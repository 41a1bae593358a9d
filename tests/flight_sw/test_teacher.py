"""The onboard teacher: numba kernel against the numpy reference, abstention, no allocation,
buffer plan, import rule; and its ground training (accuracy, robustness from augmentation)."""

import ast
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import flight_sw.ml.teacher as teacher_mod
from flight_sw.ml.teacher import (
    Teacher,
    TeacherImage,
    teacher_buffer_specs,
    teacher_forward_reference,
)

BANDS, CLASSES, BATCH = 10, 6, 16


def random_image(rng, dims=(BANDS, 64, 64, CLASSES), min_confidence=0.6, scale=1.0):
    ws = tuple((rng.standard_normal((a, b)) * scale * np.sqrt(2.0 / a)).astype(np.float32)
               for a, b in zip(dims[:-1], dims[1:], strict=True))
    bs = tuple((0.1 * rng.standard_normal(b)).astype(np.float32) for b in dims[1:])
    return TeacherImage(1, rng.uniform(0.1, 0.4, dims[0]), rng.uniform(0.05, 0.2, dims[0]), ws, bs,
                        min_confidence)


def pixels(rng, n=BATCH, bands=BANDS):
    return rng.uniform(0.0, 1.0, (n, bands)).astype(np.float32)


@pytest.mark.parametrize("dims", [(BANDS, 64, 64, CLASSES), (BANDS, CLASSES), (BANDS, 7, 96, 20, 3)])
def test_kernel_matches_the_numpy_reference(dims):
    rng = np.random.default_rng(0)
    image = random_image(rng, dims, min_confidence=0.0)
    t = Teacher(image, batch=BATCH)
    x = pixels(rng, bands=dims[0])
    labels = np.zeros(BATCH, np.int64)
    conf = np.zeros(BATCH)
    given = t.label_into(x, BATCH, labels, conf)
    ref = teacher_forward_reference(image, x)
    np.testing.assert_allclose(t.probs, ref, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(labels, np.argmax(ref, axis=1))
    np.testing.assert_allclose(conf, ref.max(axis=1), atol=1e-5, rtol=0)
    assert given == BATCH


def test_partial_batch_touches_only_the_first_n_outputs():
    rng = np.random.default_rng(1)
    image = random_image(rng, min_confidence=0.0)
    t = Teacher(image, batch=BATCH)
    labels = np.full(BATCH, 99, np.int64)
    conf = np.full(BATCH, 7.0)
    assert t.label_into(pixels(rng), 5, labels, conf) == 5
    assert np.all(labels[5:] == 99) and np.all(conf[5:] == 7.0)
    assert np.all(labels[:5] >= 0)


def test_abstains_below_min_confidence_and_counts_only_given_labels():
    rng = np.random.default_rng(2)
    base = random_image(rng, scale=0.3)  # small weights: flat, uncertain probabilities
    x = pixels(rng)
    conf_ref = teacher_forward_reference(base, x).max(axis=1)
    threshold = float(np.median(conf_ref))
    image = TeacherImage(base.version, base.input_mean, base.input_std, base.weights, base.biases, threshold)
    t = Teacher(image, batch=BATCH)
    labels = np.zeros(BATCH, np.int64)
    conf = np.zeros(BATCH)
    given = t.label_into(x, BATCH, labels, conf)
    abstain = conf < threshold
    assert 0 < abstain.sum() < BATCH
    assert np.all(labels[abstain] == -1)
    assert np.all(labels[~abstain] == np.argmax(teacher_forward_reference(image, x), axis=1)[~abstain])
    assert given == int((~abstain).sum())
    # A teacher that is never sure enough labels nothing; NaN pixels never get a label.
    never = TeacherImage(1, image.input_mean, image.input_std, image.weights, image.biases, 1.0)
    assert Teacher(never, batch=BATCH).label_into(x, BATCH, labels, conf) <= 1
    x[3, 2] = np.nan
    t.label_into(x, BATCH, labels, conf)
    assert labels[3] == -1


def test_label_into_allocates_nothing_per_call_and_writes_in_place():
    rng = np.random.default_rng(3)
    image = random_image(rng)
    t = Teacher(image, batch=BATCH)
    x = pixels(rng)
    labels = np.zeros(BATCH, np.int64)
    conf = np.zeros(BATCH)
    probs_before = t.probs
    t.label_into(x, BATCH, labels, conf)  # compile / load the cached kernel outside the trace
    tracemalloc.start()
    try:
        t.label_into(x, BATCH, labels, conf)
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(1000):
            t.label_into(x, BATCH, labels, conf)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 4096, after - before
    assert t.probs is probs_before
    np.testing.assert_allclose(t.probs, teacher_forward_reference(image, x), atol=1e-5)
    np.testing.assert_allclose(conf, t.probs.max(axis=1))


def test_label_into_makes_no_numba_runtime_allocations():
    """tracemalloc does not see numba's own heap (NRT): count its allocations in a child.

    Unboxing each array argument at the Python -> numba boundary wraps it in a
    MemInfo (freed on return), so the teacher's call is compared with an empty
    kernel taking the same arguments: the kernel body itself must add nothing, and
    nothing may stay allocated.
    """
    code = (
        "import numba, numpy as np\n"
        "from numba.core.runtime import rtsys\n"
        "from flight_sw.ml.teacher import Teacher, teacher_label_kernel\n"
        "from tests.flight_sw.test_teacher import random_image, pixels, BATCH\n"
        "@numba.njit\n"
        "def empty(*args):\n"
        "    return 0\n"
        "rng = np.random.default_rng(0)\n"
        "t = Teacher(random_image(rng), batch=BATCH)\n"
        "x, lab, conf = pixels(rng), np.zeros(BATCH, np.int64), np.zeros(BATCH)\n"
        "args = (x, BATCH, t.mean, t.scale, t.dims, t.weights, t.biases, t.act_a, t.act_b, t.probs,\n"
        "        t.min_confidence, lab, conf)\n"
        "def count(f):\n"
        "    f(*args)\n"
        "    s0 = rtsys.get_allocation_stats()\n"
        "    for _ in range(100):\n"
        "        f(*args)\n"
        "    s1 = rtsys.get_allocation_stats()\n"
        "    return s1.alloc - s0.alloc, (s1.alloc - s1.free) - (s0.alloc - s0.free)\n"
        "print(*count(teacher_label_kernel), *count(empty))\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env)
    kernel_allocs, kernel_live, boundary_allocs, _ = map(int, out.stdout.split())
    assert kernel_live == 0
    assert kernel_allocs == boundary_allocs


def test_buffer_specs_match_what_the_teacher_uses():
    rng = np.random.default_rng(4)
    image = random_image(rng)
    specs = teacher_buffer_specs(image.shapes, BATCH)
    assert all(name.startswith("teacher.") for name in specs)
    buffers = {name: np.zeros(shape, dtype) for name, (shape, dtype) in specs.items()}
    t = Teacher(image, buffers)
    assert t.batch == BATCH
    # The teacher holds exactly the planned arrays (no private copies), weights included.
    for name, arr in buffers.items():
        assert any(arr is getattr(t, a) for a in vars(t)), name
    planned = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in specs.values())
    assert t.nbytes == planned
    n_params = sum(w.size + b.size for w, b in zip(image.weights, image.biases, strict=True))
    assert buffers["teacher.weights"].size + buffers["teacher.biases"].size == n_params == t.n_params
    assert t.flops_per_sample == 2 * (10 * 64 + 64 * 64 + 64 * 6)
    # The same labels as a teacher with its own buffers.
    x = pixels(rng)
    a, b = np.zeros(BATCH, np.int64), np.zeros(BATCH, np.int64)
    ca, cb = np.zeros(BATCH), np.zeros(BATCH)
    t.label_into(x, BATCH, a, ca)
    Teacher(image, batch=BATCH).label_into(x, BATCH, b, cb)
    np.testing.assert_array_equal(a, b)
    # A buffer of the wrong shape or dtype is refused, naming it.
    bad = dict(buffers, **{"teacher.act_a": np.zeros((BATCH, 63), np.float32)})
    with pytest.raises(ValueError, match="teacher.act_a"):
        Teacher(image, bad)
    bad = dict(buffers, **{"teacher.weights": buffers["teacher.weights"].astype(np.float64)})
    with pytest.raises(ValueError, match="teacher.weights"):
        Teacher(image, bad)


def test_inconsistent_images_and_oversized_calls_are_refused():
    rng = np.random.default_rng(5)
    image = random_image(rng)
    with pytest.raises(ValueError, match="layer 1"):
        teacher_buffer_specs(((10, 64), (32, 6)), BATCH)
    broken = TeacherImage(1, image.input_mean, image.input_std, image.weights, image.biases[:2], 0.6)
    with pytest.raises(ValueError, match="bias"):
        Teacher(broken)
    t = Teacher(image, batch=BATCH)
    with pytest.raises(ValueError, match="n="):
        t.label_into(pixels(rng, 32), 32, np.zeros(32, np.int64), np.zeros(32))


def test_teacher_module_imports_nothing_from_sim_or_ground_tools():
    tree = ast.parse(Path(teacher_mod.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert not roots & {"sim", "ground_tools", "skyfield", "matplotlib"}, roots
    assert roots <= {"__future__", "dataclasses", "numba", "numpy"}, roots


# --- ground training ------------------------------------------------------------------------

# Three classes that differ in spectral shape, not just brightness (reflectance-like).
MEANS = np.array([[0.50] * 3 + [0.30] * 7, [0.38] * 3 + [0.34] * 7, [0.15] * 3 + [0.45] * 7])


def gaussian_classes(rng, n, sd=0.02):
    y = rng.integers(0, len(MEANS), n)
    return (MEANS[y] + rng.normal(0.0, sd, (n, MEANS.shape[1]))).astype(np.float32), y.astype(np.int64)


def test_train_teacher_learns_and_augmentation_buys_robustness_to_a_band_gain_drop():
    from sim.teacher_training import train_teacher

    rng = np.random.default_rng(6)
    x, y = gaussian_classes(rng, 3000)
    xt, yt = gaussian_classes(rng, 3000)
    gain = np.ones(MEANS.shape[1])
    gain[:3] = 0.8  # a 20 % responsivity loss on three adjacent bands
    acc = {}
    for augment in (True, False):
        image = train_teacher(x, y, 3, np.random.default_rng(7), epochs=30, augment=augment)
        assert [w.dtype for w in image.weights] == [np.float32] * 3
        assert image.shapes == ((10, 64), (64, 64), (64, 3)) and image.min_confidence == 0.6
        clean = np.mean(teacher_forward_reference(image, xt).argmax(axis=1) == yt)
        drifted = np.mean(teacher_forward_reference(image, xt * gain).argmax(axis=1) == yt)
        acc[augment] = (clean, drifted)
        # The flight kernel agrees with the reference on a trained image too.
        t = Teacher(image, batch=64)
        labels, conf = np.zeros(64, np.int64), np.zeros(64)
        t.label_into(xt[:64], 64, labels, conf)
        np.testing.assert_allclose(t.probs, teacher_forward_reference(image, xt[:64]), atol=1e-5)
    print(f"teacher accuracy (clean, 20 % gain drop on 3 bands): augmented {acc[True]}, plain {acc[False]}")
    assert acc[True][0] > 0.95 and acc[False][0] > 0.95
    assert acc[True][1] > acc[False][1] + 0.15
    assert acc[True][1] > 0.85
