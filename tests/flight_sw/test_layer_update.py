"""Training beyond the head (flight_sw/ml/layer_update.py): the last layer's Gauss-Newton system,
its solve through the analog path, the gate, commit, bit-identical rollback, memory."""

from __future__ import annotations

import numpy as np
import pytest

from flight_sw.config import load_mission_config
from flight_sw.devices.factory import make_optimizer
from flight_sw.devices.optimizer import DigitalSolver
from flight_sw.devices.transport import InProcessTransport
from flight_sw.memory import SOLVE_ARENA, allocate_buffers, arena_groups, buffer_sizes_bytes
from flight_sw.ml import layer_update as lu
from flight_sw.ml.learner import HOLDOUT_EVERY, VALIDATE, OnboardLearner

from .conftest import DEFAULT, digital

LEARNING_WORKING_SET_BYTES = 262_144  # issue 13: training state, buffers, calibration


def _parts(cfg, image, solver=None):
    buffers = allocate_buffers(cfg)
    n = max(cfg.model.feature_dim + 1, cfg.model.layer_units * cfg.model.layer_basis)
    solver = solver or DigitalSolver(n, len(cfg.payload.classes), 1e-9)
    learner = OnboardLearner(cfg, image, buffers, solver)
    learner.set_reliability(0.9, 0.9)
    return buffers, learner, lu.LayerUpdate(cfg, buffers, solver)


def _samples(cfg, n, seed, split="flight"):
    from sim.prelaunch import prelaunch_dataset

    return prelaunch_dataset(cfg, np.random.default_rng(seed), n, split=split)


def _fill(learner, layer, x, y):
    """Labelled batches (truth labels of a test scene: a stand-in for a label source) into the
    head's statistics, its held-back ring and the layer's training ring, as the pipeline does."""
    batch = learner.feat.shape[0]
    pred = np.zeros(batch, np.int64)
    cols = np.full(batch, -1, np.int64)
    for i in range(0, len(x) - batch + 1, batch):
        px, lab = x[i:i + batch], y[i:i + batch]
        seen = learner.labelled_seen
        learner.accumulate(px, lab, pred, source=0, columns=cols)
        layer.take(px, lab, cols, batch, seen, HOLDOUT_EVERY)


def _network_logits(learner, x, w2f, b2, gates=None):
    """Float reference of the onboard network from the int8 hidden layer on, with a float last
    layer (w2f: feat x hidden) and optionally fixed ReLU gates."""
    ext = learner.extractor
    hid = np.zeros((len(x), ext.w1.shape[0]))
    feat = np.zeros((len(x), ext.w2.shape[0] + 1))
    for i, row in enumerate(x):
        learner.extractor.features_into(row[None, :], feat[i:i + 1])
        hid[i] = ext.hid_row / ext.ih
    z = hid @ w2f.T + b2
    f = z * (gates if gates is not None else (z > 0))
    head = learner.slots[learner.active]
    return np.hstack([f, np.ones((len(x), 1))]) @ head, hid, z > 0


def test_the_layer_system_is_the_gauss_newton_system_of_the_real_network(default_cfg, image):
    """The kernel's normal equations equal those built from the network's own Jacobian with
    respect to the chosen units' weights in the basis (gates fixed), by finite differences."""
    buffers, learner, layer = _parts(default_cfg, image)
    x, y = _samples(default_cfg, 1200, seed=5)
    _fill(learner, layer, x, y)
    ext, head = learner._ext_args, learner.slots[learner.active]
    n_ring = layer.ring_count
    lu.hidden_gram(layer.ring_x, n_ring, *ext, layer.feat_row, layer.hidden_row, layer.gram)
    gram = layer.gram.copy()
    lu.jacobi_eigh(layer.eigvecs, layer.gram, lu.JACOBI_SWEEPS)
    np.testing.assert_allclose(np.sort(np.diag(layer.gram)), np.linalg.eigvalsh(gram), rtol=1e-8, atol=1e-10)
    assert lu.principal_basis(layer.gram, layer.eigvecs, layer.basis, lu.EIGEN_FLOOR) == layer.basis.shape[1]
    basis = layer.basis.copy()
    np.testing.assert_allclose(basis.T @ gram @ basis, np.eye(basis.shape[1]), atol=1e-8)  # whitened directions
    lu.unit_gradients(layer.ring_x, layer.ring_y, n_ring, *ext, head, basis, layer.feat_row, layer.score_row,
                      layer.hidden_row, layer.u_row, layer.grad, layer.mass)
    assert lu.choose_units(layer.grad, layer.mass, layer.units) == layer.units.shape[0]
    units = layer.units.copy()
    lu.layer_system(layer.ring_x, layer.ring_y, n_ring, *ext, head, units, basis, layer.feat_row,
                    layer.score_row, layer.hidden_row, layer.u_row, layer.system, layer.rhs)
    # Reference: the Jacobian of the logits with respect to each unit's weights along each basis direction.
    xr, yr = layer.ring_x[:n_ring], layer.ring_y[:n_ring]
    w2f = ext[6].astype(np.float64) * (ext[7] * ext[5])[:, None]
    b2 = ext[8].copy()
    logits0, hid, gates = _network_logits(learner, xr, w2f, b2)
    r = basis.shape[1]
    jac = np.zeros((n_ring, head.shape[1], len(units) * r))
    eps = 1e-6
    for a, j in enumerate(units):
        for p in range(r):
            w_eps, b_eps = w2f.copy(), b2.copy()
            w_eps[j] += eps * basis[:-1, p]
            b_eps[j] += eps * basis[-1, p]
            jac[:, :, a * r + p] = (_network_logits(learner, xr, w_eps, b_eps, gates)[0] - logits0) / eps
    resid = np.eye(head.shape[1])[yr] - logits0
    q_ref = np.einsum("sci,scj->ij", jac, jac)
    b_ref = np.einsum("sci,sc->i", jac, resid)
    scale = np.abs(q_ref).max()
    np.testing.assert_allclose(layer.system, q_ref, atol=1e-5 * scale)
    np.testing.assert_allclose(layer.rhs[:, 0], b_ref, atol=1e-5 * np.abs(b_ref).max())


def test_the_analog_path_recovers_the_layer_least_squares_solution(image):
    """Through the real driver and the device emulator, the layer's system is solved to the
    driver's tolerance: the weights found are the exact least-squares minimiser (numpy)."""
    from sim.analog import DeviceEndpoint

    cfg = load_mission_config(DEFAULT).with_optimizer("analog")
    n = cfg.model.layer_units * cfg.model.layer_basis
    ep = DeviceEndpoint.from_config(cfg.device, 7)
    driver = make_optimizer(cfg.device, max(n, cfg.model.feature_dim + 1), len(cfg.payload.classes),
                            transport=InProcessTransport(ep))
    buffers, learner, layer = _parts(cfg, image, solver=driver)
    x, y = _samples(cfg, 1200, seed=6)
    _fill(learner, layer, x, y)
    ext, head = learner._ext_args, learner.slots[learner.active]
    lu.hidden_gram(layer.ring_x, layer.ring_count, *ext, layer.feat_row, layer.hidden_row, layer.gram)
    lu.jacobi_eigh(layer.eigvecs, layer.gram, lu.JACOBI_SWEEPS)
    lu.principal_basis(layer.gram, layer.eigvecs, layer.basis, lu.EIGEN_FLOOR)
    lu.unit_gradients(layer.ring_x, layer.ring_y, layer.ring_count, *ext, head, layer.basis, layer.feat_row,
                      layer.score_row, layer.hidden_row, layer.u_row, layer.grad, layer.mass)
    lu.choose_units(layer.grad, layer.mass, layer.units)
    lu.layer_system(layer.ring_x, layer.ring_y, layer.ring_count, *ext, head, layer.units, layer.basis,
                    layer.feat_row, layer.score_row, layer.hidden_row, layer.u_row, layer.system, layer.rhs)
    lu.scale_system(layer.system, layer.rhs, layer.ring_count, cfg.model.layer_ridge, layer.jacobi)
    assert np.allclose(np.diag(layer.system), 1.0)
    kappa = np.linalg.cond(layer.system)
    truth = np.linalg.solve(layer.system, layer.rhs)
    sol, report = driver.solve(layer.system, layer.rhs)
    assert report.ok and report.path == 1, (repr(report), kappa)  # the analog path, not the fallback
    assert report.rel_residual <= 1e-6
    np.testing.assert_allclose(sol, truth, rtol=0, atol=1e-5 * np.abs(truth).max())
    digital_solver = DigitalSolver(n, 1, cfg.device.digital_energy_per_flop_j)
    assert digital_solver.solve(layer.system.copy(), layer.rhs.copy())[1].energy_j > report.energy_j, (
        "one right-hand side of n = 48: the analog path should cost less than a Cholesky")


#: A per-band response change (as in test_adaptation): the features move in a way a new head on
#: the same features cannot fully follow.
GAIN = np.array([1.0, 0.7, 0.6, 1.0, 1.4, 1.5, 0.6, 1.3, 1.0, 0.8])


def _commit_one(cfg, image, seed=8):
    """A learner and layer job fed a drifted flight scene with honest labels, stepped until a
    candidate is judged; returns (learner, layer, outcome)."""
    buffers, learner, layer = _parts(cfg, image)
    x, y = _samples(cfg, 12_000, seed=seed)
    x = (x * GAIN).astype(np.float32)
    _fill(learner, layer, x, y)
    assert layer.wants_step()
    ext, head = learner._ext_args, learner.slots[learner.active]
    outcome = None
    for _ in range(3):
        outcome = layer.step(ext, head, learner.compare_layer) or outcome
        if outcome is not None and layer.phase == lu.IDLE:
            break
    return learner, layer, outcome


def test_a_layer_update_on_honest_labels_is_committed_and_rolls_back_bit_identically(default_cfg, image):
    learner, layer, _ = _commit_one(default_cfg, image)
    before = [a.copy() for a in layer.previous()]
    assert layer.accepted == 1 and layer.version == 1, (layer.last_refusal, layer.last_gate_z)
    assert layer.last_candidate_acc > layer.last_active_acc and layer.last_gate_z >= default_cfg.model.layer_gate_z
    live = learner._ext_args[6:9]
    changed_rows = np.flatnonzero(np.any(live[0] != before[0], axis=1))
    assert set(changed_rows) <= set(layer.units.tolist()), "only the chosen units move"
    assert layer.last_units and bin(layer.last_units).count("1") == default_cfg.model.layer_units
    assert layer.rollback()
    for live_buf, old in zip(live, before, strict=True):
        assert live_buf.tobytes() == old.tobytes()
    assert layer.version == 0 and layer.rollbacks == 1


def test_a_harmful_layer_is_refused_and_nothing_changes(default_cfg, image):
    buffers, learner, layer = _parts(default_cfg, image)
    x, y = _samples(default_cfg, 2400, seed=9)
    _fill(learner, layer, x, y)
    live = [a.copy() for a in learner._ext_args[6:9]]
    cand = 1 - layer.active
    layer.slots_w2[cand] = layer.slots_w2[layer.active]
    layer.slots_w2[cand, :8] = -layer.slots_w2[cand, :8]  # eight units inverted: a broken candidate
    layer.phase = lu.VALIDATE
    assert layer.step(learner._ext_args, learner.slots[learner.active], learner.compare_layer) == "refused"
    assert lu.REFUSALS[layer.last_refusal] == "worse"
    assert layer.last_candidate_acc < layer.last_active_acc
    for live_buf, old in zip(learner._ext_args[6:9], live, strict=True):
        assert live_buf.tobytes() == old.tobytes()


def test_the_watch_restores_the_previous_layer_when_site_labels_favour_it(default_cfg, image):
    learner, layer, outcome = _commit_one(default_cfg, image)
    assert outcome == "committed"
    prev = [a.copy() for a in layer.previous()]
    assert not layer.watch(40, 40, 32)  # half the window, a tie
    assert layer.watch(20, 32, 32)  # the previous layer right on 12 more of 64 labels
    assert layer.rollback_pending_report and layer.rollbacks == 1
    for live_buf, old in zip(learner._ext_args[6:9], prev, strict=True):
        assert live_buf.tobytes() == old.tobytes()


def test_the_layer_state_survives_a_snapshot(default_cfg, image):
    learner, layer, _ = _commit_one(default_cfg, image)
    state = layer.state_dict()
    live = [a.copy() for a in learner._ext_args[6:9]]
    for buf in learner._ext_args[6:9]:
        buf[...] = 0
    layer.load_state_dict(state)  # the slots are buffers (saved with the snapshot); the live layer follows
    for live_buf, old in zip(learner._ext_args[6:9], live, strict=True):
        assert live_buf.tobytes() == old.tobytes()
    assert layer.version == 1


def test_the_learning_working_set_fits_with_the_layer_update(default_cfg):
    """Every ml.*, cal.*, adapt.* and layer.* buffer, the shared solve arena counted once."""
    sizes = buffer_sizes_bytes(default_cfg)
    working = sum(v for k, v in sizes.items() if k.split(".", 1)[0] in ("ml", "cal", "adapt", "layer"))
    assert working <= LEARNING_WORKING_SET_BYTES, working
    assert any(k.startswith("layer.") for k in sizes)
    buffers = allocate_buffers(default_cfg)
    arena = buffers[SOLVE_ARENA]
    lo, hi = arena.ctypes.data, arena.ctypes.data + arena.nbytes
    for group in arena_groups(default_cfg):
        spans = []
        for name in group:
            view = buffers[name]
            assert view.base is not None and lo <= view.ctypes.data and view.ctypes.data + view.nbytes <= hi, name
            spans.append((view.ctypes.data, view.ctypes.data + view.nbytes, name))
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
            assert end <= start, f"{a} and {b} overlap in one group"


def test_layer_update_off_plans_nothing(default_cfg):
    import dataclasses

    cfg = dataclasses.replace(default_cfg, model=dataclasses.replace(default_cfg.model, layer_units=0))
    assert not any(k.startswith("layer.") for k in buffer_sizes_bytes(cfg))
    assert buffer_sizes_bytes(cfg)[SOLVE_ARENA] < buffer_sizes_bytes(default_cfg)[SOLVE_ARENA] + 1


@pytest.mark.parametrize("units, basis, message", [
    (40, 12, "model.layer_units"), (4, 40, "model.layer_basis"), (8, 12, "device.analog_n_max")])
def test_inconsistent_layer_settings_are_refused_naming_the_key(units, basis, message):
    import dataclasses

    from flight_sw.config.consistency import check_consistency

    cfg = load_mission_config(DEFAULT).with_optimizer("analog")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, layer_units=units, layer_basis=basis))
    assert any(e.startswith(message) for e in check_consistency(cfg)), check_consistency(cfg)


def test_digital_default_config_still_plans(default_cfg):
    assert digital(default_cfg).model.layer_units > 0


def test_a_layer_commit_re_whitens_the_head_basis_at_the_next_solve(default_cfg, image):
    """New features can change the head system's spectrum at once: the next head solve refreshes
    the whitening basis (one digital Cholesky) instead of trusting the 8-step Lanczos estimate."""
    learner, layer, outcome = _commit_one(default_cfg, image)
    assert outcome == "committed"
    learner.features_changed()
    before = learner.precond_refreshes
    learner.new_labels = learner.cfg.min_new_labels
    assert learner.training_step() is None and learner.state == VALIDATE  # solved
    assert learner.precond_refreshes == before + 1 and not learner.basis_stale
    assert np.linalg.cond(learner.q_solve) < 1.5  # whitened again for the current features



def test_core_housekeeping_carries_the_layer_counters(make_fsw):
    """The last layer's version and counters close core HK (SID 1, dictionary v12), so the ground
    sees them without the events (which the per-id rate limit may drop)."""
    from flight_sw.tmtc import dictionary as d

    fsw = make_fsw()
    sent = []
    fsw.tm.housekeeping = lambda sid, body, t: sent.append((sid, body))
    layer = fsw.learning.layer
    layer.version, layer.accepted, layer.refused, layer.rollbacks = 3, 2, 70_000, 1
    fsw.housekeeping.task(100.0)
    body = next(b for sid, b in sent if sid == d.HK_CORE_SID)
    row = dict(zip((p.name for p in d.HK_CORE), d.HK_CORE_STRUCT.unpack(body), strict=True))
    assert (row["layer_version"], row["layer_accepted"], row["layer_refused"], row["layer_rollbacks"]) == (
        3, 2, 70_000, 1)
