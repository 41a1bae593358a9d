"""int8 MLP kernel against its float reference, and the Page-Hinkley drift monitor."""

import numpy as np
import pytest

from flight_sw.ml.drift import STATE_SIZE, PageHinkley
from flight_sw.ml.kernels import classify_into, margins_into
from flight_sw.ml.model import FeatureExtractor, float_features, quantise_per_channel


def test_per_channel_quantisation_bound():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((10, 32)) * rng.uniform(0.1, 3.0, size=32)
    q, s = quantise_per_channel(w)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127
    assert np.all(np.abs(q * s - w) <= s / 2 + 1e-7)  # half a step per channel


def test_int8_features_match_the_float_reference_within_the_quantisation_bound(default_cfg, image):
    from sim.prelaunch import prelaunch_dataset

    x, y = prelaunch_dataset(default_cfg, np.random.default_rng(7), 2000)
    ext = FeatureExtractor(image)
    q = np.zeros((len(x), default_cfg.model.feature_dim + 1))
    ext.features_into(x, q)
    ref = float_features(image, x)
    # Bound: input and hidden rounding (half a step each) through the layers' weights.
    scale = np.abs(ref).max()
    assert np.abs(q - ref).max() < 0.05 * scale
    assert np.mean(np.abs(q - ref)) < 0.005 * scale
    acc_q = np.mean(np.argmax(q @ image.head, axis=1) == y)
    acc_f = np.mean(np.argmax(ref @ image.head, axis=1) == y)
    # The int8 path costs under a point against float; the absolute level is the scene's:
    # mixed pixels of measured spectra cap a 10-band pixel classifier near 0.87.
    assert acc_q > 0.8 and abs(acc_q - acc_f) < 0.01


def test_classify_and_margins_match_numpy():
    rng = np.random.default_rng(1)
    feat = rng.standard_normal((16, 33))
    head = rng.standard_normal((33, 6))
    scores = np.zeros((16, 6))
    pred = np.zeros(16, np.int64)
    classify_into(feat, head, scores, pred)
    np.testing.assert_allclose(scores, feat @ head, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(pred, np.argmax(feat @ head, axis=1))
    m = np.zeros(16)
    margins_into(scores, 16, m)
    top2 = np.sort(scores, axis=1)[:, -2:]
    np.testing.assert_allclose(m, top2[:, 1] - top2[:, 0])


@pytest.mark.parametrize("shift", [0.3, 0.5])
def test_page_hinkley_fires_soon_after_a_step_drop(shift):
    rng = np.random.default_rng(2)
    ph = PageHinkley(np.zeros(STATE_SIZE), delta=0.05, threshold=10.0)
    before = rng.normal(1.0, 0.2, 2000)
    after = rng.normal(1.0 - shift, 0.2, 2000)
    assert ph.update(before, len(before)) == -1
    hit = ph.update(after, len(after))
    assert 0 <= hit < 10.0 / (shift - 0.05) * 2  # about threshold / (shift - delta) samples


def test_page_hinkley_false_alarm_rate_on_stationary_data():
    rng = np.random.default_rng(3)
    ph = PageHinkley(np.zeros(STATE_SIZE), delta=0.05, threshold=10.0)
    x = rng.normal(1.0, 0.2, 1_000_000)
    for i in range(0, len(x), 16):
        ph.update(x[i : i + 16], 16)
    print(f"false alarms per million stationary samples: {ph.alarms}")
    assert ph.alarms <= 1
