"""The whitened-basis preconditioner of the head statistics (flight_sw/ml/precondition.py).

The learner keeps its statistics for whitened features phi' = T phi and hands the
optimizer Q' = T Q T^T, B' = T B; the head goes back to the flight basis as T^T x'. A
mistake anywhere in that chain (a kernel reading the wrong triangle, a refresh that
forgets one statistic, a basis that drifts between accumulation and solve) changes the
head silently: the solver still sees an SPD system and reports success. So the tests
compare everything with independent numpy references:

* every kernel against its dense numpy equivalent, for n = 33 (the learner's size) and
  an odd small n;
* the Lanczos condition estimate against a Rayleigh-Ritz reference on the same Krylov
  space, the Ritz bounds (never above the true kappa) and its breakdown / indefinite paths;
* a basis refresh: the new system is the identity, while the flight-basis statistics and
  the head are unchanged; a refused refresh changes nothing;
* the start-up basis: the anchored ground system is the identity once whitened;
* the learner end to end: the candidate head after a SOLVE step equals the ridge
  solution of statistics accumulated in the flight basis straight from the ground's
  image and the labelled batches, with and without basis refreshes.
"""

import dataclasses

import numpy as np
import pytest

from flight_sw.devices.optimizer import DigitalSolver
from flight_sw.memory import LANCZOS_STEPS, allocate_buffers
from flight_sw.ml import precondition as pc
from flight_sw.ml.learner import HOLDOUT_EVERY, IDLE, VALIDATE, OnboardLearner
from flight_sw.ml.model import FeatureExtractor

SIZES = (33, 5)
N_CLASSES = 6
DRIFTED_T_S = 100 * 86400.0  # 100 days of sensor ageing plus the abrupt gain shift


# -- helpers -------------------------------------------------------------------------


def _with_spectrum(rng, eigenvalues):
    """A symmetric matrix with the given eigenvalues in a random orthonormal basis."""
    n = len(eigenvalues)
    basis, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (basis * np.asarray(eigenvalues)) @ basis.T
    return 0.5 * (a + a.T)


def _spd(rng, n):
    x = rng.standard_normal((2 * n, n))
    return x.T @ x / (2 * n) + 0.5 * np.eye(n)


def _lower(rng, n):
    """A well-conditioned lower-triangular matrix (random triangular ones are not)."""
    return np.linalg.cholesky(_spd(rng, n))


def _true_kappa(a):
    ev = np.linalg.eigvalsh(a)
    return ev[-1] / ev[0]


def _lanczos(a):
    vecs = np.zeros((3, a.shape[0]))
    tri = np.zeros((2, LANCZOS_STEPS))
    return pc.lanczos_kappa(a, LANCZOS_STEPS, vecs, tri)


def _reference_ritz_kappa(a, steps):
    """kappa of the Rayleigh-Ritz values of `a` on K_steps(a, v0), with v0 the kernel's start
    vector: an orthonormal Krylov basis by fully re-orthogonalised Gram-Schmidt."""
    n = a.shape[0]
    v0 = np.zeros(n)
    pc._start_vector(v0)
    assert np.linalg.norm(v0) == pytest.approx(1.0, abs=1e-14)
    basis = np.zeros((n, min(steps, n)))
    basis[:, 0] = v0
    dim = 1
    for j in range(1, basis.shape[1]):
        w = a @ basis[:, j - 1]
        scale = np.linalg.norm(w)
        for _ in range(2):
            w -= basis[:, :j] @ (basis[:, :j].T @ w)
        if np.linalg.norm(w) <= 1e-10 * scale:
            break
        basis[:, j] = w / np.linalg.norm(w)
        dim = j + 1
    v = basis[:, :dim]
    ritz = np.linalg.eigvalsh(v.T @ a @ v)
    return ritz[-1] / ritz[0]


def _system(stats_q, stats_b, prior_system, prior_b):
    n, m = stats_b.shape
    q_out = np.full((n, n), np.nan)
    b_out = np.full((n, m), np.nan)
    pc.system_into(stats_q, stats_b, prior_system, prior_b, q_out, b_out)
    return q_out, b_out


def _whitened_statistics(rng, n, n_cls):
    """Per-class Gram matrices, right-hand sides and the anchored prior, whitened with a
    stale basis T (not the one of the current system): (raw, whitened) dicts."""
    scales = rng.uniform(0.2, 3.0, n)  # unequal feature scales: an ill-conditioned system
    rows = rng.standard_normal((n_cls, 3 * n, n)) * scales
    s = np.einsum("cri,crj->cij", rows, rows)
    b = np.einsum("cri,c->ic", rows, np.ones(n_cls)) + rng.standard_normal((n, n_cls))
    raw = {
        "q": s,
        "b": b,
        "prior_system": 0.1 * s.sum(axis=0) + 1e-2 * np.eye(n),
        "prior_b": 0.1 * b,
    }
    t = _lower(rng, n)
    q = np.einsum("ij,cjk,lk->cil", t, s, t)
    prior = t @ raw["prior_system"] @ t.T
    white = {
        "q": 0.5 * (q + np.swapaxes(q, 1, 2)),
        "b": t @ b,
        "prior_system": 0.5 * (prior + prior.T),
        "prior_b": t @ raw["prior_b"],
        "t": t,
    }
    return raw, white


def _flight_head(t, q_system, b_system):
    """The head in the flight basis from a whitened system: T^T Q'^-1 B'."""
    return t.T @ np.linalg.solve(q_system, b_system)


def _unwhiten(t, s):
    """T^-1 S T^-T: a whitened statistic back in the flight basis."""
    t_inv = np.linalg.inv(t)
    return t_inv @ s @ t_inv.T


# -- the kernels against numpy ------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_cholesky_matches_numpy_and_zeroes_the_upper_triangle(n):
    a = _spd(np.random.default_rng(n), n)
    work = a.copy()
    assert pc.cholesky_lower_inplace(work)
    np.testing.assert_allclose(work, np.linalg.cholesky(a), rtol=1e-12, atol=1e-13)
    assert not np.any(np.triu(work, 1))
    np.testing.assert_allclose(work @ work.T, a, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("n", SIZES)
def test_cholesky_refuses_a_matrix_with_a_negative_eigenvalue(n):
    rng = np.random.default_rng(10 + n)
    eigenvalues = np.geomspace(1.0, 10.0, n)
    eigenvalues[n // 2] = -0.5
    assert not pc.cholesky_lower_inplace(_with_spectrum(rng, eigenvalues))


@pytest.mark.parametrize("n", SIZES)
def test_invert_lower_matches_numpy(n):
    ell = _lower(np.random.default_rng(20 + n), n)
    out = np.full((n, n), 7.0)  # stale contents must not survive
    pc.invert_lower_into(ell, out)
    np.testing.assert_allclose(out, np.linalg.inv(ell), rtol=1e-11, atol=1e-13)
    assert not np.any(np.triu(out, 1))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("cols", ["classes", "square"])
def test_lower_times_inplace_matches_numpy(n, cols):
    rng = np.random.default_rng(30 + n)
    u = _lower(rng, n)
    b = rng.standard_normal((n, N_CLASSES if cols == "classes" else n))
    expected = u @ b
    pc.lower_times_inplace(u, b)
    np.testing.assert_allclose(b, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", SIZES)
def test_lower_times_inplace_keeps_a_lower_triangular_product_lower(n):
    rng = np.random.default_rng(35 + n)
    u, t = _lower(rng, n), _lower(rng, n)
    expected = u @ t
    pc.lower_times_inplace(u, t)  # the basis update T <- U T of a refresh
    np.testing.assert_allclose(t, expected, rtol=1e-12, atol=1e-12)
    assert not np.any(np.triu(t, 1))


@pytest.mark.parametrize("n", SIZES)
def test_congruence_matches_numpy_and_is_symmetric(n):
    rng = np.random.default_rng(40 + n)
    u = _lower(rng, n)
    x = rng.standard_normal((n, n))
    a = x + x.T
    expected = u @ a @ u.T
    pc.congruence_lower_inplace(u, a, np.full((n, n), np.nan))
    np.testing.assert_allclose(a, expected, rtol=1e-11, atol=1e-12)
    np.testing.assert_array_equal(a, a.T)


@pytest.mark.parametrize("n", SIZES)
def test_lower_transpose_times_matches_numpy(n):
    rng = np.random.default_rng(50 + n)
    t = _lower(rng, n)
    x = rng.standard_normal((n, N_CLASSES))
    out = np.full((n, N_CLASSES), np.nan)
    pc.lower_transpose_times_into(t, x, out)
    np.testing.assert_allclose(out, t.T @ x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", SIZES)
def test_whiten_rows_matches_numpy_on_the_first_n_rows_only(n):
    rng = np.random.default_rng(60 + n)
    batch, used = 16, 11
    feat = rng.standard_normal((batch, n))
    t = _lower(rng, n)
    out = np.full((batch, n), np.nan)
    pc.whiten_rows_into(feat, t, used, out)
    np.testing.assert_allclose(out[:used], feat[:used] @ t.T, rtol=1e-12, atol=1e-12)
    assert np.all(np.isnan(out[used:]))


@pytest.mark.parametrize("n", SIZES)
def test_system_into_sums_the_classes_and_the_prior(n):
    rng = np.random.default_rng(70 + n)
    q = rng.standard_normal((N_CLASSES, n, n))
    b = rng.standard_normal((n, N_CLASSES))
    prior_system = rng.standard_normal((n, n))
    prior_b = rng.standard_normal((n, N_CLASSES))
    q_out, b_out = _system(q, b, prior_system, prior_b)
    np.testing.assert_allclose(q_out, q.sum(axis=0) + prior_system, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(b_out, b + prior_b, rtol=1e-13, atol=1e-13)


# -- the Lanczos condition estimate ---------------------------------------------------------


def test_tridiagonal_extremes_match_eigvalsh():
    rng = np.random.default_rng(80)
    for k in (1, 2, 3, LANCZOS_STEPS):
        for _ in range(5):
            alpha = rng.uniform(-2.0, 5.0, LANCZOS_STEPS)
            beta = rng.uniform(0.0, 2.0, LANCZOS_STEPS)
            alpha[0] = 0.0  # a zero pivot in the Sturm sequence
            if k > 2:
                beta[1] = 0.0  # a decoupled block
            tri = np.diag(alpha[:k]) + np.diag(beta[: k - 1], 1) + np.diag(beta[: k - 1], -1)
            ev = np.linalg.eigvalsh(tri)
            smallest, largest = pc._tridiagonal_extremes(alpha, beta, k)
            assert smallest == pytest.approx(ev[0], abs=1e-12)
            assert largest == pytest.approx(ev[-1], abs=1e-12)


@pytest.mark.parametrize("kappa", [1.5, 3.0, 10.0, 100.0])
def test_lanczos_equals_rayleigh_ritz_on_its_krylov_space(kappa):
    rng = np.random.default_rng(90)
    n = SIZES[0]
    for _ in range(6):
        eigenvalues = np.geomspace(1.0, kappa, n)
        a = _with_spectrum(rng, eigenvalues)
        assert _lanczos(a) == pytest.approx(_reference_ritz_kappa(a, LANCZOS_STEPS), rel=1e-12)


def _spread_spectrum(rng, n, kappa):
    """Eigenvalues 1 and kappa plus n - 2 log-uniform ones in between."""
    inner = np.exp(rng.uniform(0.0, np.log(kappa), n - 2))
    return np.concatenate([[1.0, kappa], inner])


@pytest.mark.parametrize("kappa", [1.5, 3.0, 4.0, 10.0, 100.0])
def test_lanczos_estimate_lies_inside_the_spectrum(kappa):
    """Ritz values lie inside the spectrum: the estimate never exceeds the true kappa. Near
    the refresh threshold (kappa <= 10) it is within 30 %; far above it (100: 8 steps do not
    resolve a dense spectrum's lower end) it still reads well above the default threshold,
    so a refresh that is due is never missed."""
    rng = np.random.default_rng(100)
    n = SIZES[0]
    ratios = []
    for _ in range(12):
        a = _with_spectrum(rng, _spread_spectrum(rng, n, kappa))
        true = _true_kappa(a)
        estimate = _lanczos(a)
        assert 1.0 <= estimate <= 1.0000001 * true
        ratios.append(estimate / true)
    if kappa <= 10.0:
        assert min(ratios) >= 0.7, ratios
    else:
        assert min(ratios) * kappa > 2 * 4.0, ratios  # default model.precondition_kappa_max: 4


@pytest.mark.parametrize("kappa", [1.5, 3.0, 10.0, 100.0])
def test_lanczos_is_exact_when_n_is_below_the_step_count(kappa):
    rng = np.random.default_rng(110)
    n = SIZES[1]
    assert n <= LANCZOS_STEPS
    for _ in range(5):
        a = _with_spectrum(rng, _spread_spectrum(rng, n, kappa))
        assert _lanczos(a) == pytest.approx(_true_kappa(a), rel=1e-8)


@pytest.mark.parametrize("n", SIZES)
def test_lanczos_breakdown_gives_the_exact_answer(n):
    assert _lanczos(2.5 * np.eye(n)) == pytest.approx(1.0, abs=1e-12)
    # Two distinct eigenvalues: the Krylov space is 2-dimensional, Lanczos stops after 2 steps.
    eigenvalues = np.ones(n)
    eigenvalues[:2] = 7.0
    a = _with_spectrum(np.random.default_rng(120 + n), eigenvalues)
    assert _lanczos(a) == pytest.approx(7.0, rel=1e-9)


@pytest.mark.parametrize("n", SIZES)
def test_lanczos_returns_inf_for_a_negative_eigenvalue(n):
    eigenvalues = np.geomspace(1.0, 10.0, n)
    eigenvalues[1] = -2.0
    assert _lanczos(_with_spectrum(np.random.default_rng(130 + n), eigenvalues)) == np.inf
    assert _lanczos(-np.eye(n)) == np.inf


# -- basis refresh and start-up basis -------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_refresh_basis_whitens_the_system_and_keeps_the_flight_basis(n):
    n_cls = N_CLASSES if n > 5 else 3
    raw, w = _whitened_statistics(np.random.default_rng(140 + n), n, n_cls)
    q_system, b_system = _system(w["q"], w["b"], w["prior_system"], w["prior_b"])
    assert _true_kappa(q_system) > 10.0  # the refresh has something to do
    head_before = _flight_head(w["t"], q_system, b_system)
    t_old = w["t"].copy()

    ok = pc.refresh_basis(q_system, w["q"], w["b"], w["prior_system"], w["prior_b"], w["t"],
                          np.zeros((n, n)), np.zeros((n, n)))

    assert ok
    t_new = w["t"]
    assert not np.any(np.triu(t_new, 1))
    # T_new = chol(Q')^-1 T_old.
    np.testing.assert_allclose(t_new, np.linalg.solve(np.linalg.cholesky(q_system), t_old),
                               rtol=1e-9, atol=1e-12)
    q_new, b_new = _system(w["q"], w["b"], w["prior_system"], w["prior_b"])
    np.testing.assert_allclose(q_new, np.eye(n), rtol=0, atol=1e-10)
    assert _lanczos(q_new) == pytest.approx(1.0, abs=1e-8)
    np.testing.assert_allclose(_flight_head(t_new, q_new, b_new), head_before, rtol=1e-9, atol=1e-12)
    # The statistics are unchanged in the flight basis.
    for c in range(n_cls):
        np.testing.assert_array_equal(w["q"][c], w["q"][c].T)
        np.testing.assert_allclose(_unwhiten(t_new, w["q"][c]), raw["q"][c], rtol=1e-9,
                                   atol=1e-10 * np.abs(raw["q"][c]).max())
    np.testing.assert_allclose(_unwhiten(t_new, w["prior_system"]), raw["prior_system"], rtol=1e-9,
                               atol=1e-10 * np.abs(raw["prior_system"]).max())
    np.testing.assert_allclose(np.linalg.solve(t_new, w["b"]), raw["b"], rtol=1e-9,
                               atol=1e-10 * np.abs(raw["b"]).max())
    np.testing.assert_allclose(np.linalg.solve(t_new, w["prior_b"]), raw["prior_b"], rtol=1e-9,
                               atol=1e-10 * np.abs(raw["prior_b"]).max())


@pytest.mark.parametrize("n", SIZES)
def test_refresh_basis_refuses_an_indefinite_system_and_changes_nothing(n):
    _, w = _whitened_statistics(np.random.default_rng(150 + n), n, 3)
    q_system, _ = _system(w["q"], w["b"], w["prior_system"], w["prior_b"])
    q_bad = q_system - (np.linalg.eigvalsh(q_system)[0] + 1.0) * np.eye(n)  # lambda_min = -1
    before = {name: value.copy() for name, value in w.items()}
    ok = pc.refresh_basis(q_bad, w["q"], w["b"], w["prior_system"], w["prior_b"], w["t"],
                          np.zeros((n, n)), np.zeros((n, n)))
    assert not ok
    for name, value in w.items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def _check_initial_basis(stats_q, stats_b, anchor, ridge):
    n = stats_q.shape[1]
    t, q, b, prior_system, prior_b = pc.initial_basis(stats_q, stats_b, anchor, ridge)
    assert not np.any(np.triu(t, 1))
    anchored = (1.0 + anchor) * stats_q.sum(axis=0) + ridge * np.eye(n)
    np.testing.assert_allclose(t @ anchored @ t.T, np.eye(n), rtol=0, atol=1e-10)
    q_system, b_system = _system(q, b, prior_system, prior_b)
    np.testing.assert_allclose(q_system, np.eye(n), rtol=0, atol=1e-10)
    head = np.linalg.solve(anchored, (1.0 + anchor) * stats_b)
    np.testing.assert_allclose(_flight_head(t, q_system, b_system), head, rtol=1e-8,
                               atol=1e-10 * np.abs(head).max())
    for c in range(stats_q.shape[0]):
        np.testing.assert_allclose(_unwhiten(t, q[c]), stats_q[c], rtol=1e-8,
                                   atol=1e-12 * np.abs(stats_q).max())


@pytest.mark.parametrize("n", SIZES)
def test_initial_basis_whitens_the_anchored_system(n):
    raw, _ = _whitened_statistics(np.random.default_rng(160 + n), n, 3)
    _check_initial_basis(raw["q"], raw["b"], 0.1, 1e-2)


def test_initial_basis_whitens_the_ground_image_statistics(default_cfg, image):
    m = default_cfg.model
    _check_initial_basis(image.stats_q, image.stats_b, m.prior_anchor, m.ridge_lambda)


@pytest.mark.parametrize("n", SIZES)
def test_initial_basis_rejects_statistics_that_are_not_positive_definite(n):
    stats_q = np.stack([-np.eye(n)] * 3)
    with pytest.raises(ValueError, match="not positive definite"):
        pc.initial_basis(stats_q, np.ones((n, 3)), 0.1, 1e-12)


# -- the learner end to end -----------------------------------------------------------------


class _FlightReference:
    """The learner's head statistics, accumulated in the flight basis from the ground's image:
    class-wise forgetting of the classes a batch trains, every HOLDOUT_EVERY-th sample held
    back, the anchored ground statistics and the ridge added at solve time."""

    def __init__(self, cfg, image):
        self.m = cfg.model
        self.q = image.stats_q.copy()
        self.b = image.stats_b.copy()
        n = self.q.shape[1]
        self.prior_system = self.m.prior_anchor * image.stats_q.sum(axis=0) + self.m.ridge_lambda * np.eye(n)
        self.prior_b = self.m.prior_anchor * image.stats_b
        self.extractor = FeatureExtractor(image)
        self.feat = np.zeros((cfg.payload.samples_per_acquisition, n))
        self.seen = 0

    def fold(self, pixels, labels, drift_alarm):
        if drift_alarm:  # the learner's _on_drift: the statistics (not the prior) are scaled
            self.q *= self.m.drift_forget
            self.b *= self.m.drift_forget
        self.extractor.features_into(pixels, self.feat)
        train = (self.seen + np.arange(len(labels))) % HOLDOUT_EVERY != 0
        for c in np.unique(labels[train]):
            self.q[c] *= self.m.forgetting_factor
            self.b[:, c] *= self.m.forgetting_factor
        for i in np.flatnonzero(train):
            phi = self.feat[i]
            self.q[labels[i]] += np.outer(phi, phi)
            self.b[:, labels[i]] += phi
        self.seen += len(labels)

    def head(self):
        return np.linalg.solve(self.q.sum(axis=0) + self.prior_system, self.b + self.prior_b)


def _learner(cfg, image, kappa_max=None):
    if kappa_max is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, precondition_kappa_max=kappa_max))
    solver = DigitalSolver(cfg.model.feature_dim + 1, len(cfg.payload.classes), 1e-9)
    return OnboardLearner(cfg, image, allocate_buffers(cfg), solver)


def _feed_until_update(learner, reference, scene, t_s):
    """Labelled batches into the learner and the reference until an update is due."""
    batch = learner.feat.shape[0]
    px = np.zeros((batch, scene.cfg.bands), np.float32)
    lab = np.zeros(batch, np.int64)
    pred = np.zeros(batch, np.int64)
    for _ in range(200):
        if learner.wants_training():
            return
        scene.sample(t_s, batch, scene.base_mix, 45.0, px, lab)
        alarms = learner.drift_labels.alarms
        learner.accumulate(px, lab, pred)
        reference.fold(px, lab, learner.drift_labels.alarms > alarms)
    raise AssertionError("the learner never asked for an update")


def _solve(learner):
    """Run the SOLVE step; the candidate head is then in learner.candidate."""
    assert learner.state == IDLE
    learner.training_step()
    assert learner.state == VALIDATE, "the solve was refused"


def _finish(learner):
    for _ in range(3):
        if learner.state == IDLE:
            return
        learner.training_step()
    assert learner.state == IDLE


def _assert_flight_basis_solution(learner):
    """The candidate solves the learner's own statistics mapped back to the flight basis."""
    t = learner.precond
    assert not np.any(np.triu(t, 1))
    q_raw = _unwhiten(t, learner.q.sum(axis=0) + learner.prior_system)
    b_raw = np.linalg.solve(t, learner.b + learner.prior_b)
    expected = np.linalg.solve(q_raw, b_raw)
    np.testing.assert_allclose(learner.candidate, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())


def _assert_reference_solution(learner, reference):
    expected = reference.head()
    np.testing.assert_allclose(learner.candidate, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())


def test_learner_candidate_is_the_flight_basis_ridge_solution(default_cfg, image):
    from sim.scene import SceneTruth

    learner = _learner(default_cfg, image)
    reference = _FlightReference(default_cfg, image)
    scene = SceneTruth(default_cfg.payload, np.random.default_rng(3))
    head_before = learner.candidate.copy()
    _feed_until_update(learner, reference, scene, 0.0)
    _solve(learner)
    assert not np.allclose(learner.candidate, head_before)
    assert 1.0 <= learner.last_kappa <= default_cfg.model.precondition_kappa_max
    _assert_flight_basis_solution(learner)
    _assert_reference_solution(learner, reference)


def test_learner_refreshes_the_basis_without_changing_the_head(default_cfg, image):
    """Drifted labels move Q' away from I; a small kappa_max re-whitens before each solve,
    a huge one never does, and both give the flight-basis solution over several updates
    (labels accumulated in one basis, then solved in the next). The step from healthy to
    drifted labels also trips the label drift test, which scales the statistics."""
    from sim.scene import SceneTruth

    kappa_max = 1.5
    runs = {}
    for kmax in (kappa_max, 1e12):
        learner = _learner(default_cfg, image, kappa_max=kmax)
        reference = _FlightReference(default_cfg, image)
        scene = SceneTruth(default_cfg.payload, np.random.default_rng(7))
        kappas, heads = [], []
        for t_s in (0.0, DRIFTED_T_S, DRIFTED_T_S, DRIFTED_T_S):
            _feed_until_update(learner, reference, scene, t_s)
            _solve(learner)
            kappas.append(learner.last_kappa)
            heads.append(learner.candidate.copy())
            _assert_flight_basis_solution(learner)
            _assert_reference_solution(learner, reference)
            _finish(learner)
        runs[kmax] = (learner, kappas, heads)

    refreshed, kappas, heads = runs[kappa_max]
    assert refreshed.precond_refreshes >= 1
    assert max(kappas) <= kappa_max * (1 + 1e-9)
    plain, plain_kappas, plain_heads = runs[1e12]
    assert plain.precond_refreshes == 0
    assert max(plain_kappas) > kappa_max  # the same data did call for a refresh
    for h_refreshed, h_plain in zip(heads, plain_heads, strict=True):
        np.testing.assert_allclose(h_refreshed, h_plain, rtol=1e-6, atol=1e-9 * np.abs(h_plain).max())
