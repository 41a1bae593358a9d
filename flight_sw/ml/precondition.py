"""Keep the head's normal equations well conditioned, so the analog optimizer can solve them.

Why: the analog device answers with a relative error eps of about 0.5 % (output noise,
quantisation, programming error), and each refinement round shrinks the residual by
roughly kappa(Q) * eps. The learner's system as the features give it (the Gram matrix
of 32 ReLU features of 10 bands, plus the ridge) has kappa ~1e7: no analog precision
refines that, and the driver fell back to the digital solver on every training solve.
Close to the identity (kappa <= 4) three rounds reach the 1e-6 residual gate.

How: the statistics are kept for whitened features phi' = T phi, with T lower
triangular, T = L^-1 where L L^T was the head system at the last *refresh*. Then
Q' = T Q T^T, B' = T B, and the head in the flight basis is h = T^T x' (Q h = B exactly
when Q' x' = B'). As labels arrive Q' moves away from I. Before each solve a Lanczos
estimate of kappa(Q') (LANCZOS_STEPS steps from a fixed start vector, 2 n^2 flops per
step) decides: above `model.precondition_kappa_max` the basis is refreshed: Cholesky of
Q' (digital, n^3/3), U = L'^-1, T <- U T and every statistic S <- U S U^T (B <- U B),
after which Q' = I up to rounding. This is a stale-factor preconditioner: the factor is
recomputed rarely (before 0.5 % of the default mission's solves; `flightsim bench analog`
reports `analog.learner_refresh_share`) and the device still solves every system.

Cost per labelled training row: n^2/2 multiply-adds for phi' (the Gram update itself
is n^2). Every kernel works in place on start-up buffers; none allocates.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Lanczos steps of the condition estimate (8; the buffer plan sizes the scratch). The Ritz
# values lie inside the spectrum, so the estimate never exceeds the true kappa. Near the
# refresh threshold it is close: median 0.98 of the true kappa on the default mission's
# 30-day sequence of head systems (0.87 at 4 steps). Far above it (a spectrum spread over
# [1, 100]) 8 steps see only 0.2-0.8 of kappa, still well past any sensible threshold.
from flight_sw.devices.optimizer import cholesky_into
from flight_sw.memory import LANCZOS_STEPS


@numba.njit(cache=True)
def whiten_rows_into(feat, t, n, out):  # pragma: no cover - compiled
    """out[i] = T feat[i] for the first n rows (T lower triangular)."""
    aug = feat.shape[1]
    for i in range(n):
        for r in range(aug):
            acc = 0.0
            for j in range(r + 1):
                acc += t[r, j] * feat[i, j]
            out[i, r] = acc


@numba.njit(cache=True)
def system_into(q, b, prior_system, prior_b, q_out, b_out):  # pragma: no cover - compiled
    """q_out = sum_c q[c] + prior_system; b_out = b + prior_b (all in the whitened basis).

    prior_system holds anchor x (the ground's statistics) + ridge x I and prior_b the
    anchor's share of the ground's right-hand sides: the part forgetting never removes.
    """
    n_cls, n, _ = q.shape
    for r in range(n):
        for j in range(n):
            acc = prior_system[r, j]
            for c in range(n_cls):
                acc += q[c, r, j]
            q_out[r, j] = acc
        for c in range(b.shape[1]):
            b_out[r, c] = b[r, c] + prior_b[r, c]


@numba.njit(cache=True)
def _start_vector(v):  # pragma: no cover - compiled
    """A fixed pseudo-random unit vector (an LCG): a component along every eigenvector."""
    s = 20261122
    norm = 0.0
    for i in range(v.size):
        s = (1103515245 * s + 12345) % 2147483648
        v[i] = s / 2147483648.0 - 0.5
        norm += v[i] * v[i]
    norm = math.sqrt(norm)
    for i in range(v.size):
        v[i] /= norm


@numba.njit(cache=True)
def _count_below(alpha, beta, k, x):  # pragma: no cover - compiled
    """Eigenvalues of the k x k tridiagonal (alpha, beta) below x (Sturm sequence)."""
    count = 0
    d = alpha[0] - x
    if d < 0.0:
        count += 1
    for i in range(1, k):
        if d == 0.0:
            d = 1e-300
        d = alpha[i] - x - beta[i - 1] * beta[i - 1] / d
        if d < 0.0:
            count += 1
    return count


@numba.njit(cache=True)
def _tridiagonal_extremes(alpha, beta, k):  # pragma: no cover - compiled
    """Smallest and largest eigenvalue of the tridiagonal by bisection in its Gershgorin interval."""
    lo = math.inf
    hi = -math.inf
    for i in range(k):
        r = 0.0
        if i > 0:
            r += abs(beta[i - 1])
        if i < k - 1:
            r += abs(beta[i])
        lo = min(lo, alpha[i] - r)
        hi = max(hi, alpha[i] + r)
    a, b = lo, hi
    for _ in range(80):
        mid = 0.5 * (a + b)
        if _count_below(alpha, beta, k, mid) >= 1:
            b = mid
        else:
            a = mid
    smallest = 0.5 * (a + b)
    a, b = lo, hi
    for _ in range(80):
        mid = 0.5 * (a + b)
        if _count_below(alpha, beta, k, mid) >= k:
            b = mid
        else:
            a = mid
    return smallest, 0.5 * (a + b)


@numba.njit(cache=True)
def lanczos_kappa(a, steps, vecs, tri):  # pragma: no cover - compiled
    """Estimate kappa(a) = lambda_max / lambda_min of a symmetric a from `steps` Lanczos steps.

    vecs: (3, n) scratch; tri: (2, >= steps) scratch for the tridiagonal. Returns inf
    when a Ritz value is <= 0 (a is not positive definite).
    """
    n = a.shape[0]
    v = vecs[0]
    vp = vecs[1]
    w = vecs[2]
    _start_vector(v)
    for i in range(n):
        vp[i] = 0.0
    alpha = tri[0]
    beta = tri[1]
    b_prev = 0.0
    k = 0
    for j in range(min(steps, n)):
        for r in range(n):
            acc = 0.0
            for c in range(n):
                acc += a[r, c] * v[c]
            w[r] = acc - b_prev * vp[r]
        al = 0.0
        for r in range(n):
            al += w[r] * v[r]
        for r in range(n):
            w[r] -= al * v[r]
        alpha[j] = al
        k = j + 1
        bn = 0.0
        for r in range(n):
            bn += w[r] * w[r]
        bn = math.sqrt(bn)
        if bn <= 1e-12 * abs(al) or k == steps:
            break  # an invariant subspace (e.g. a = c I): the Ritz values are exact
        beta[j] = bn
        for r in range(n):
            vp[r] = v[r]
            v[r] = w[r] / bn
        b_prev = bn
    smallest, largest = _tridiagonal_extremes(alpha, beta, k)
    if not smallest > 0.0:
        return math.inf
    return largest / smallest


@numba.njit(cache=True)
def cholesky_lower_inplace(a):  # pragma: no cover - compiled
    """a <- L (lower, upper triangle zeroed) with L L^T = a; False if a is not positive definite."""
    if not cholesky_into(a, a):
        return False
    n = a.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            a[i, j] = 0.0
    return True


@numba.njit(cache=True)
def invert_lower_into(ell, out):  # pragma: no cover - compiled
    """out = L^-1 (lower triangular) by forward substitution, column by column."""
    n = ell.shape[0]
    for i in range(n):
        for j in range(n):
            out[i, j] = 0.0
    for j in range(n):
        out[j, j] = 1.0 / ell[j, j]
        for i in range(j + 1, n):
            s = 0.0
            for k in range(j, i):
                s += ell[i, k] * out[k, j]
            out[i, j] = -s / ell[i, i]


@numba.njit(cache=True)
def lower_times_inplace(u, b):  # pragma: no cover - compiled
    """b <- U b for lower-triangular U; rows are done bottom-up, so no scratch is needed."""
    n = u.shape[0]
    for r in range(n - 1, -1, -1):
        for c in range(b.shape[1]):
            acc = 0.0
            for k in range(r + 1):
                acc += u[r, k] * b[k, c]
            b[r, c] = acc


@numba.njit(cache=True)
def congruence_lower_inplace(u, a, tmp):  # pragma: no cover - compiled
    """a <- U a U^T for lower-triangular U and symmetric a (tmp: n x n scratch)."""
    n = u.shape[0]
    for r in range(n):
        for c in range(n):
            acc = 0.0
            for k in range(r + 1):
                acc += u[r, k] * a[k, c]
            tmp[r, c] = acc
    for r in range(n):
        for c in range(r + 1):
            acc = 0.0
            for k in range(c + 1):
                acc += tmp[r, k] * u[c, k]
            a[r, c] = acc
            a[c, r] = acc


@numba.njit(cache=True)
def lower_transpose_times_into(t, x, out):  # pragma: no cover - compiled
    """out = T^T x (T lower triangular): the head in the flight basis from the whitened solution."""
    n = t.shape[0]
    for r in range(n):
        for c in range(x.shape[1]):
            acc = 0.0
            for k in range(r, n):
                acc += t[k, r] * x[k, c]
            out[r, c] = acc


@numba.njit(cache=True)
def refresh_basis(q_system, stats_q, stats_b, prior_system, prior_b, t, factor, scratch):  # pragma: no cover
    """Re-whiten against the current system: U = chol(q_system)^-1, T <- U T, S <- U S U^T, B <- U B.

    `factor` and `scratch` are n x n work buffers. Returns False (nothing changed) when
    q_system is not numerically positive definite.
    """
    n = q_system.shape[0]
    for i in range(n):
        for j in range(n):
            scratch[i, j] = q_system[i, j]
    if not cholesky_lower_inplace(scratch):
        return False
    invert_lower_into(scratch, factor)
    for c in range(stats_q.shape[0]):
        congruence_lower_inplace(factor, stats_q[c], scratch)
    congruence_lower_inplace(factor, prior_system, scratch)
    lower_times_inplace(factor, stats_b)
    lower_times_inplace(factor, prior_b)
    lower_times_inplace(factor, t)
    return True


def refresh_flops(n: int, n_classes: int) -> float:
    """Modelled flops of one `refresh_basis`: Cholesky and triangular inverse (n^3/3 each),
    C + 1 congruences (4 n^3/3 each), U T (n^3) and the two right-hand-side products."""
    return n**3 * (2.0 / 3.0 + (n_classes + 1) * 4.0 / 3.0 + 1.0) + 2.0 * n * n * n_classes


def kappa_flops(n: int) -> float:
    """Modelled flops of one `lanczos_kappa` (one matrix-vector product and a few axpys per step)."""
    return LANCZOS_STEPS * (2.0 * n * n + 8.0 * n)


def initial_basis(stats_q: np.ndarray, stats_b: np.ndarray, anchor: float, ridge: float):
    """The start-up basis from the ground's statistics (flight basis in, whitened out).

    Returns (T, per-class statistics, B, prior system, prior right-hand sides) with the
    anchored system sum_c S_c + anchor sum_c S_c + ridge I equal to I in the new basis.
    Runs once at start-up (allocates); raises ValueError if the statistics are unusable.
    """
    n = stats_q.shape[1]
    prior_raw = anchor * stats_q.sum(axis=0) + ridge * np.eye(n)
    system = stats_q.sum(axis=0) + prior_raw
    system = 0.5 * (system + system.T)
    try:
        ell = np.linalg.cholesky(system)
    except np.linalg.LinAlgError as exc:
        raise ValueError("model image: the head statistics + ridge are not positive definite") from exc
    t = np.linalg.solve(ell, np.eye(n))
    t = np.tril(t)
    q = np.einsum("ij,cjk,lk->cil", t, stats_q, t)
    q = 0.5 * (q + np.swapaxes(q, 1, 2))
    prior_system = t @ prior_raw @ t.T
    prior_system = 0.5 * (prior_system + prior_system.T)
    return t, q, t @ stats_b, prior_system, t @ (anchor * stats_b)
