"""numba kernels of the onboard ML tick path: every output goes into a preallocated buffer.

The executive's steady state must not allocate (DESIGN.md, "Memory"), so the hot
path (features, scores, argmax, accuracy counts, statistics updates) is written
as loops over buffers sized at start-up. Plain numpy references live in the tests.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def features_into(pixels, w, bias, out):  # pragma: no cover - compiled
    """out[i, :F] = relu(pixels[i] @ w + bias); out[i, F] = 1 (the head's bias input)."""
    n, bands = pixels.shape
    f = w.shape[1]
    for i in range(n):
        for j in range(f):
            s = bias[j]
            for k in range(bands):
                s += pixels[i, k] * w[k, j]
            out[i, j] = s if s > 0.0 else 0.0
        out[i, f] = 1.0


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
    feat, labels, pixels, n, seen, holdout_every, forgetting, q, b, replay_x, replay_y, replay_next, replay_cap
):  # pragma: no cover - compiled
    """Forget, then add the training rows' phi phi^T and phi y^T; copy held-out rows to replay.

    Row i is held out when (seen + i) % holdout_every == 0. Returns
    (training rows added, new replay_next, held-out rows).
    """
    aug = q.shape[0]
    added = 0
    held = 0
    for i in range(n):
        if (seen + i) % holdout_every != 0:
            added += 1
    if added > 0:
        for r in range(aug):
            for c in range(aug):
                q[r, c] *= forgetting
            for c in range(b.shape[1]):
                b[r, c] *= forgetting
    for i in range(n):
        if (seen + i) % holdout_every == 0:
            for k in range(pixels.shape[1]):
                replay_x[replay_next, k] = pixels[i, k]
            replay_y[replay_next] = labels[i]
            replay_next = (replay_next + 1) % replay_cap
            held += 1
        else:
            for r in range(aug):
                fr = feat[i, r]
                if fr == 0.0:
                    continue
                for c in range(aug):
                    q[r, c] += fr * feat[i, c]
                b[r, labels[i]] += fr
    return added, replay_next, held


@numba.njit(cache=True)
def copy_add_diagonal(src, dst, value):  # pragma: no cover - compiled
    n = src.shape[0]
    for r in range(n):
        for c in range(n):
            dst[r, c] = src[r, c]
        dst[r, r] += value


@numba.njit(cache=True)
def replay_correct(replay_x, replay_y, n, w, bias, head, feat_row, score_row):  # pragma: no cover - compiled
    """Correct classifications of the first n replay samples by `head` (one row at a time)."""
    correct = 0
    f = w.shape[1]
    bands = replay_x.shape[1]
    c = head.shape[1]
    for i in range(n):
        for j in range(f):
            s = bias[j]
            for k in range(bands):
                s += replay_x[i, k] * w[k, j]
            feat_row[j] = s if s > 0.0 else 0.0
        feat_row[f] = 1.0
        best = 0
        for j in range(c):
            s = 0.0
            for k in range(f + 1):
                s += feat_row[k] * head[k, j]
            score_row[j] = s
            if s > score_row[best]:
                best = j
        if best == replay_y[i]:
            correct += 1
    return correct


@numba.njit(cache=True)
def all_finite(a):  # pragma: no cover - compiled
    for v in a.flat:
        if not np.isfinite(v):
            return False
    return True
