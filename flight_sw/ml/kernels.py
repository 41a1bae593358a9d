"""numba kernels of the onboard ML tick path: every output goes into a preallocated buffer.

The executive's steady state must not allocate (DESIGN.md, "Memory"), so the hot
path (features, scores, argmax, accuracy counts, statistics updates) is written
as loops over buffers sized at start-up. Plain numpy references live in the tests.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _mlp_row(x, mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, out_row):  # pragma: no cover
    """One sample through the int8 MLP: int8 x int8 products accumulated in int32.

    cx = 1 / (std * input step) quantises the input; c1 = input step x per-channel weight
    scale and c2 = hidden step x weight scale dequantise the int32 sums; ih = 1 / hidden
    step requantises the hidden layer. Weights are stored transposed (output-channel
    major) so each dot product runs over contiguous int8 memory. `xq` and `hid` are
    int32 scratch rows.
    """
    hidden, bands = w1t.shape
    feat = w2t.shape[0]
    for k in range(bands):
        q = np.int32(np.rint((x[k] - mean[k]) * cx[k]))
        xq[k] = 127 if q > 127 else (-127 if q < -127 else q)
    for j in range(hidden):
        acc = np.int32(0)
        for k in range(bands):
            acc += xq[k] * np.int32(w1t[j, k])
        h = acc * c1[j] + b1[j]
        if h > 0.0:  # ReLU, then requantise per tensor
            v = np.int32(np.rint(h * ih))
            hid[j] = v if v < 127 else 127
        else:
            hid[j] = 0
    for j in range(feat):
        acc = np.int32(0)
        for k in range(hidden):
            acc += hid[k] * np.int32(w2t[j, k])
        f = acc * c2[j] + b2[j]
        out_row[j] = f if f > 0.0 else 0.0
    out_row[feat] = 1.0


@numba.njit(cache=True)
def mlp_features_into(pixels, mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, out):  # pragma: no cover
    """Features of every row of `pixels` into `out` (n, F + 1); last column is the bias input."""
    for i in range(pixels.shape[0]):
        _mlp_row(pixels[i], mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, out[i])


@numba.njit(cache=True)
def classify_into(feat, head, scores, pred):  # pragma: no cover - compiled
    """scores = feat @ head; pred = argmax over classes (first maximum wins, like numpy)."""
    n, aug = feat.shape
    c = head.shape[1]
    for i in range(n):
        best = 0
        for j in range(c):
            s = 0.0
            for k in range(aug):
                s += feat[i, k] * head[k, j]
            scores[i, j] = s
            if s > scores[i, best]:
                best = j
        pred[i] = best


@numba.njit(cache=True)
def count_equal(a, b, n):  # pragma: no cover - compiled
    c = 0
    for i in range(n):
        if a[i] == b[i]:
            c += 1
    return c


@numba.njit(cache=True)
def fold_batch_into_stats(
    feat, labels, pixels, n, seen, holdout_every, forgetting, q, b, replay_x, replay_y, replay_next, replay_cap,
    present, columns, replay_cols, source, replay_src,
):  # pragma: no cover - compiled
    """Class-wise forgetting, then add the training rows' phi phi^T (to their class's Q) and phi y^T.

    q is (classes, aug, aug): one Gram matrix per class, so a class forgets only when it
    receives new labels (calibration sites show few classes at a time; the others keep
    what they knew). Row i is held out for validation when (seen + i) % holdout_every == 0.
    A held-out row keeps its detector column (columns[i], or -1 when `columns` is
    shorter than the batch) so the radiometric calibration can re-express it later, and
    its label source.
    Returns (training rows added, new replay_next, held-out rows).
    """
    n_cls, aug, _ = q.shape
    added = 0
    held = 0
    for c in range(n_cls):
        present[c] = 0
    for i in range(n):
        if (seen + i) % holdout_every != 0:
            added += 1
            present[labels[i]] = 1
    for c in range(n_cls):
        if present[c]:
            for r in range(aug):
                for j in range(aug):
                    q[c, r, j] *= forgetting
                b[r, c] *= forgetting
    for i in range(n):
        if (seen + i) % holdout_every == 0:
            for k in range(pixels.shape[1]):
                replay_x[replay_next, k] = pixels[i, k]
            replay_y[replay_next] = labels[i]
            replay_cols[replay_next] = columns[i] if i < columns.shape[0] else -1
            replay_src[replay_next] = source
            replay_next = (replay_next + 1) % replay_cap
            held += 1
        else:
            c = labels[i]
            for r in range(aug):
                fr = feat[i, r]
                if fr == 0.0:
                    continue
                for j in range(aug):
                    q[c, r, j] += fr * feat[i, j]
                b[r, c] += fr
    return added, replay_next, held


@numba.njit(cache=True)
def gather_recent(replay_x, replay_y, replay_cols, replay_src, next_, count, source, want, out_x, out_y,
                  out_cols):  # pragma: no cover - compiled
    """Copy the `want` most recent replay samples of one label source (newest first) into the
    out buffers; return how many there were."""
    cap = replay_x.shape[0]
    n = 0
    i = next_
    for _ in range(count):
        i = (i - 1 + cap) % cap
        if replay_src[i] != source:
            continue
        for k in range(replay_x.shape[1]):
            out_x[n, k] = replay_x[i, k]
        out_y[n] = replay_y[i]
        out_cols[n] = replay_cols[i]
        n += 1
        if n >= want:
            break
    return n


@numba.njit(cache=True)
def sum_classes_add_diagonal(q, dst, value):  # pragma: no cover - compiled
    """dst = sum over classes of q[c] + value * I (the ridge system matrix)."""
    n_cls, n, _ = q.shape
    for r in range(n):
        for j in range(n):
            acc = 0.0
            for c in range(n_cls):
                acc += q[c, r, j]
            dst[r, j] = acc
        dst[r, r] += value


@numba.njit(cache=True)
def replay_correct(
    replay_x, replay_y, start, n, mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, head, feat_row, score_row
):  # pragma: no cover - compiled
    """Correct classifications by `head` of n replay samples from ring index `start` (wrapping)."""
    correct = 0
    c = head.shape[1]
    aug = feat_row.shape[0]
    cap = replay_x.shape[0]
    for r in range(n):
        i = (start + r) % cap
        _mlp_row(replay_x[i], mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, feat_row)
        best = 0
        for j in range(c):
            s = 0.0
            for k in range(aug):
                s += feat_row[k] * head[k, j]
            score_row[j] = s
            if s > score_row[best]:
                best = j
        if best == replay_y[i]:
            correct += 1
    return correct


@numba.njit(cache=True)
def _argmax_row(feat_row, head, score_row):  # pragma: no cover - compiled
    best = 0
    for j in range(head.shape[1]):
        s = 0.0
        for k in range(feat_row.shape[0]):
            s += feat_row[k] * head[k, j]
        score_row[j] = s
        if s > score_row[best]:
            best = j
    return best


@numba.njit(cache=True)
def replay_paired(
    replay_x, replay_y, replay_src, start, n, mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, head_a, head_b,
    features_differ, mean_b, cx_b, w2t_b, c2_b, b2_b, weights, veto_source, feat_row, score_row, out,
):  # pragma: no cover - compiled
    """Two models on the same n replay samples (ring from `start`): a paired comparison.

    Model a is the extractor with inputs normalised by (mean, cx) and head_a; model b the
    same extractor with head_b and, when `features_differ`, inputs normalised by (mean_b,
    cx_b) (a label-free input adaptation, flight_sw/ml/adaptation.py) and the last layer
    (w2t_b, c2_b, b2_b) (a layer update, flight_sw/ml/layer_update.py); otherwise the
    features are computed once for both heads.

    Only samples whose source has a positive weight (w = weights[source]) take part.
    out[0], out[1]: correct counts of head_a and head_b; out[2]: the reliability-weighted
    score sum over samples where exactly one head is right (+w when head_b is, -w when
    head_a is); out[3]: the sum of w^2 over those samples (its variance under the
    hypothesis that neither head is better); out[4]: the samples judged; out[5]: the
    unweighted +-1 sum over the disagreements of source `veto_source` alone (an
    independent source's say: the gate can refuse a candidate it does not favour).
    """
    cap = replay_x.shape[0]
    for j in range(6):
        out[j] = 0.0
    for r in range(n):
        i = (start + r) % cap
        w = weights[replay_src[i]]
        if w <= 0.0:
            continue
        out[4] += 1.0
        _mlp_row(replay_x[i], mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, feat_row)
        y = replay_y[i]
        ok_a = _argmax_row(feat_row, head_a, score_row) == y
        if features_differ:
            _mlp_row(replay_x[i], mean_b, cx_b, w1t, c1, b1, ih, w2t_b, c2_b, b2_b, xq, hid, feat_row)
        ok_b = _argmax_row(feat_row, head_b, score_row) == y
        if ok_a:
            out[0] += 1.0
        if ok_b:
            out[1] += 1.0
        if ok_a != ok_b:
            out[2] += w if ok_b else -w
            out[3] += w * w
            if replay_src[i] == veto_source:
                out[5] += 1.0 if ok_b else -1.0


@numba.njit(cache=True)
def spectral_angle_stat(pixels, pred, ref, angle_ab, inv_sin_elev, n, min_norm, min_count, resid):  # pragma: no cover
    """Median over the bright pixels of (spectral angle to the reference spectrum of the
    predicted class) minus (what a healthy sensor shows for that class at this sun
    elevation: a_c + b_c / sin(e)), in degrees: a label-free drift signal.

    A sensor gain change alters the spectral *shape* of a pixel; brightness (sun,
    albedo) does not change the angle, and the per-class expectation removes the
    dependence on the scene's class mix and on noise at low sun. Dark pixels (norm
    below `min_norm`: water, shadow) are left out. Returns -1e9 when fewer than
    `min_count` pixels are bright. `resid` is a scratch buffer of length >= n.
    """
    bands = pixels.shape[1]
    m = 0
    for i in range(n):
        s = 0.0
        for k in range(bands):
            s += pixels[i, k] * pixels[i, k]
        norm = np.sqrt(s)
        if norm < min_norm:
            continue
        c = pred[i]
        dot = 0.0
        for k in range(bands):
            dot += pixels[i, k] * ref[c, k]
        cosv = dot / norm
        if cosv > 1.0:
            cosv = 1.0
        elif cosv < -1.0:
            cosv = -1.0
        resid[m] = np.degrees(np.arccos(cosv)) - (angle_ab[c, 0] + angle_ab[c, 1] * inv_sin_elev)
        m += 1
    if m < min_count:
        return -1e9
    for i in range(1, m):  # insertion sort of at most n values
        v = resid[i]
        j = i - 1
        while j >= 0 and resid[j] > v:
            resid[j + 1] = resid[j]
            j -= 1
        resid[j + 1] = v
    if m % 2:
        return resid[m // 2]
    return 0.5 * (resid[m // 2 - 1] + resid[m // 2])


@numba.njit(cache=True)
def margins_into(scores, n, out):  # pragma: no cover - compiled
    """Per-sample confidence margin: best score minus second best (label-free drift signal)."""
    c = scores.shape[1]
    for i in range(n):
        b1 = -1e300
        b2 = -1e300
        for j in range(c):
            v = scores[i, j]
            if v > b1:
                b2 = b1
                b1 = v
            elif v > b2:
                b2 = v
        out[i] = b1 - b2


@numba.njit(cache=True)
def all_finite(a):  # pragma: no cover - compiled
    for v in a.flat:
        if not np.isfinite(v):
            return False
    return True
