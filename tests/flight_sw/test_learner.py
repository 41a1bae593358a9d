"""Head training: the solver, the gate, commit and bit-identical rollback."""

import numpy as np
import pytest

from flight_sw.devices.optimizer import DigitalSolver
from flight_sw.memory import allocate_buffers
from flight_sw.ml.learner import OnboardLearner


def test_digital_solver_solves_spd_systems_in_place():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 33))
    q = a.T @ a + 0.1 * np.eye(33)
    b = rng.standard_normal((33, 6))
    solver = DigitalSolver(33, 6, 1e-9)
    x, rep = solver.solve(q, b)
    assert rep.ok and rep.rel_residual < 1e-10
    np.testing.assert_allclose(x, np.linalg.solve(q, b), rtol=1e-9, atol=1e-12)
    assert x is solver.x  # preallocated output
    assert rep.energy_j == pytest.approx(rep.flops * 1e-9)


def test_digital_solver_refuses_non_spd():
    q = -np.eye(5)
    x, rep = DigitalSolver(5, 2, 1e-9).solve(q, np.ones((5, 2)))
    assert not rep.ok


def _learner(cfg, image):
    bufs = allocate_buffers(cfg)
    solver = DigitalSolver(cfg.model.feature_dim + 1, len(cfg.payload.classes), 1e-9)
    return OnboardLearner(cfg, image, bufs, solver)


def _feed(learner, scene, n_batches, rng, t_s=0.0):
    batch = learner.feat.shape[0]
    px = np.zeros((batch, scene.cfg.bands), np.float32)
    lab = np.zeros(batch, np.int64)
    pred = np.zeros(batch, np.int64)
    for _ in range(n_batches):
        scene.sample(t_s, batch, scene.base_mix, 45.0, px, lab)
        learner.accumulate(px, lab, pred)


def _finish_update(learner):
    for _ in range(5):
        outcome = learner.training_step()
        if outcome:
            return outcome
    return None


def test_training_recovers_accuracy_after_a_gain_shift(default_cfg, image):
    from sim.scene import SceneTruth

    rng = np.random.default_rng(3)
    scene = SceneTruth(default_cfg.payload, rng)
    learner = _learner(default_cfg, image)
    t_drift = 100 * 86400.0  # 100 days of ageing plus the abrupt shift
    batch = learner.feat.shape[0]
    px = np.zeros((batch, default_cfg.payload.bands), np.float32)
    lab = np.zeros(batch, np.int64)
    pred = np.zeros(batch, np.int64)

    def accuracy():
        correct = 0
        for _ in range(50):
            scene.sample(t_drift, batch, scene.base_mix, 45.0, px, lab)
            learner.predict(px, pred)
            correct += int(np.sum(pred == lab))
        return correct / (50 * batch)

    before = accuracy()
    for _ in range(6):
        _feed(learner, scene, 20, rng, t_s=t_drift)
        _finish_update(learner)
    after = accuracy()
    assert learner.accepted >= 1
    # The measured-spectra scene (mixed pixels) puts a 10-band pixel classifier's ceiling near
    # 0.87 (docs/learning.md); recovering to 0.8 is most of the way back from ~0.71.
    assert after > before + 0.05 and after > 0.8, (before, after)


def test_gate_refuses_a_worse_candidate(default_cfg, image):
    from sim.scene import SceneTruth

    rng = np.random.default_rng(4)
    scene = SceneTruth(default_cfg.payload, rng)
    learner = _learner(default_cfg, image)
    _feed(learner, scene, 20, rng)
    # Poison the statistics: a candidate from them is worse on the held-back samples.
    learner.b[...] = learner.b[:, ::-1]
    learner.new_labels = default_cfg.model.min_new_labels
    active_before = learner.slots[learner.active].copy()
    assert _finish_update(learner) == "refused"
    assert learner.refused == 1 and learner.accepted == 0
    np.testing.assert_array_equal(learner.slots[learner.active], active_before)


def test_rollback_restores_bit_identical_weights(default_cfg, image):
    from sim.scene import SceneTruth

    rng = np.random.default_rng(5)
    scene = SceneTruth(default_cfg.payload, rng)
    learner = _learner(default_cfg, image)
    before = learner.slots[learner.active].copy()
    version_before = learner.version
    # Enough batches for min_new_labels training rows (every 4th row is held back), after a drift worth a commit.
    batches = -(-default_cfg.model.min_new_labels * 4 // (3 * learner.feat.shape[0])) + 2
    _feed(learner, scene, batches, rng, t_s=100 * 86400.0)
    assert _finish_update(learner) == "committed"
    assert not np.array_equal(learner.slots[learner.active], before)
    learner.rollback()
    assert learner.version == version_before
    assert learner.slots[learner.active].tobytes() == before.tobytes()


def test_statistics_and_solve_recover_a_synthetic_linear_head():
    """Streamed per-class statistics, solved through the optimizer interface, equal the batch
    ridge solution; on labels from a known linear head (with a margin) they classify like it."""
    from flight_sw.ml import kernels as k

    rng = np.random.default_rng(8)
    aug, n_cls, batch, lam = 12, 4, 16, 1e-3
    w_true = rng.standard_normal((aug, n_cls))
    q = np.zeros((n_cls, aug, aug))
    b = np.zeros((aug, n_cls))
    present = np.zeros(n_cls, np.int64)
    replay_x = np.zeros((8, 3), np.float32)
    replay_y = np.zeros(8, np.int16)
    seen, nxt = 0, 0
    rows, ys = [], []
    while len(rows) < 6000:
        feat = np.abs(rng.standard_normal((4 * batch, aug)))
        feat[:, -1] = 1.0
        scores = feat @ w_true
        top2 = np.sort(scores, axis=1)[:, -2:]
        feat = feat[top2[:, 1] - top2[:, 0] > 1.0][:batch]  # keep confidently separated samples
        if len(feat) < batch:
            continue
        labels = np.argmax(feat @ w_true, axis=1).astype(np.int64)
        _, nxt, _ = k.fold_batch_into_stats(feat, labels, np.zeros((batch, 3), np.float32), batch, seen, 4, 1.0,
                                            q, b, replay_x, replay_y, nxt, 8, present, np.zeros(0, np.int64),
                                            np.zeros(8, np.int16), 0, np.zeros(8, np.int8))
        train = [i for i in range(batch) if (seen + i) % 4]
        rows.append(feat[train])
        ys.append(labels[train])
        seen += batch
    system = np.zeros((aug, aug))
    k.sum_classes_add_diagonal(q, system, lam)
    head, report = DigitalSolver(aug, n_cls, 1e-9).solve(system, b)
    assert report.ok
    phi, y = np.vstack(rows), np.concatenate(ys)
    ref = np.linalg.solve(phi.T @ phi + lam * np.eye(aug), phi.T @ np.eye(n_cls)[y])
    np.testing.assert_allclose(head, ref, rtol=1e-8, atol=1e-10)
    # Least squares on one-hot targets is not a max-margin classifier: it agrees with the
    # true linear rule on ~92% of these samples (the exact-solution check above is the proof).
    assert np.mean(np.argmax(phi @ head, axis=1) == y) > 0.9


def _labelled_learner(default_cfg, image, batches=6):
    from sim.scene import SceneTruth

    learner = _learner(default_cfg, image)
    _feed(learner, SceneTruth(default_cfg.payload, np.random.default_rng(5)), batches, np.random.default_rng(6))
    learner.new_labels = max(learner.new_labels, default_cfg.model.min_new_labels)
    return learner


@pytest.mark.parametrize("corrupt, reason", [("nan", 0), ("indefinite", 1)])
def test_corrupted_statistics_are_reseeded_from_the_ground(default_cfg, image, corrupt, reason):
    """A memory upset in the head statistics must not stop training for good: the learner
    re-seeds them from the ground's and the update still produces a usable candidate."""
    learner = _labelled_learner(default_cfg, image)
    n = learner.q.shape[1]
    if corrupt == "nan":
        learner.q[2, 5, 7] = np.nan
    else:
        learner.prior_system[...] = -1e6 * np.eye(n)  # no Gram matrix can make that positive definite
    outcome = _finish_update(learner)
    assert learner.stats_resets == 1 and learner.stats_reset_events == [reason]
    assert learner.last_report.ok and outcome in ("committed", "refused")
    assert np.all(np.isfinite(learner.candidate))
    assert learner.last_kappa <= default_cfg.model.precondition_kappa_max  # the re-seeded system is whitened
    assert np.all(np.isfinite(learner.q)) and learner.effective_labels == image.prior_samples


def test_healthy_statistics_are_never_reseeded(default_cfg, image):
    learner = _labelled_learner(default_cfg, image)
    for _ in range(3):
        learner.new_labels = default_cfg.model.min_new_labels
        _finish_update(learner)
    assert learner.stats_resets == 0 and learner.accepted + learner.refused == 3


def test_statistics_reset_is_reported_as_an_event(make_fsw):
    import struct

    from spacepackets.ecss import PusTm

    from flight_sw.tmtc import dictionary as d

    fsw = make_fsw()
    learner = fsw.learner
    learner.q[0, 0, 0] = np.inf
    learner.new_labels = 10**6
    for _ in range(4):
        fsw.learning.task_training(100.0)
    fsw.downlink.drain(10_000, True)  # a contact: everything queued goes down
    events = []
    for raw in fsw.test_packets:
        p = PusTm.unpack(raw, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == 5 and struct.unpack(">H", data[:2])[0] == d.EVENT_STATISTICS_RESET:
            events.append((p.message_subtype, d.STATISTICS_RESET_STRUCT.unpack(data[2:])))
    assert events == [(d.EVENT_SEVERITY_SUBTYPE["high"], (0, 1))]


def _gate_learner(default_cfg, image, source):
    """A learner whose held-back samples come from one label source, after a gain shift that a
    head update really repairs (true labels: +8 points on the held-back ring, z 3.4), with an
    update waiting to be judged."""
    from sim.scene import SceneTruth

    rng = np.random.default_rng(6)
    scene = SceneTruth(default_cfg.payload, rng)
    learner = _learner(default_cfg, image)
    learner.set_reliability(0.9, 0.9)
    batch = learner.feat.shape[0]
    px = np.zeros((batch, default_cfg.payload.bands), np.float32)
    lab = np.zeros(batch, np.int64)
    pred = np.zeros(batch, np.int64)
    for _ in range(64):  # a full held-back ring (model.replay_buffer_size, 256), as in flight
        scene.sample(100 * 86400.0, batch, scene.base_mix, 45.0, px, lab)
        learner.accumulate(px, lab, pred, source=source)
    return learner


def test_gate_commits_a_clearly_better_head_on_site_labels(default_cfg, image):
    learner = _gate_learner(default_cfg, image, source=0)
    assert _finish_update(learner) == "committed"
    assert learner.last_gate_z >= default_cfg.model.validation_z
    assert learner.last_candidate_acc > learner.last_active_acc


def test_gate_refuses_a_candidate_it_cannot_tell_apart(default_cfg, image):
    learner = _gate_learner(default_cfg, image, source=0)
    learner.training_step()  # SOLVE
    learner.candidate[...] = learner.slots[learner.active]  # a candidate equal to the active head...
    learner.candidate[-1, 0] += 1e-3  # ...but for a tiny bias change
    assert learner.training_step() == "refused"
    assert learner.last_refusal == 4 or learner.last_refusal == 3  # not better / not significantly better
    assert abs(learner.last_gate_z) < default_cfg.model.validation_z


def test_teacher_labels_judge_only_when_allowed(default_cfg, image):
    """With model.gate_on_teacher_labels off the app gives the teacher weight 0: an update with
    only teacher labels held back is refused for that reason; allowed, the same update goes in."""
    learner = _gate_learner(default_cfg, image, source=1)
    learner.set_reliability(0.9, 0.5)  # what the app sets when model.gate_on_teacher_labels is off
    assert _finish_update(learner) == "refused"
    assert learner.last_refusal == 2  # no held-back labels from a source that may judge
    learner = _gate_learner(default_cfg, image, source=1)
    assert _finish_update(learner) == "committed"


def test_site_labels_veto_a_candidate_the_teacher_labels_favour(default_cfg, image):
    """Teacher labels lean towards a candidate trained on them; held-back site labels (errors tied
    to places, not spectra) that prefer the active head refuse it even when z passes."""
    from flight_sw.ml import kernels as k

    learner = _gate_learner(default_cfg, image, source=1)
    learner.training_step()  # SOLVE: the candidate is ready
    n = learner.replay_count
    idx = (learner.replay_next - n + np.arange(n)) % learner.replay_x.shape[0]
    feat = np.zeros((n, learner.feat.shape[1]))
    k.mlp_features_into(learner.replay_x[idx], *learner._ext_args, feat)
    pa = np.argmax(feat @ learner.slots[learner.active], axis=1)
    pb = np.argmax(feat @ learner.candidate, axis=1)
    differ = np.nonzero((pa != pb) & (pb == learner.replay_y[idx]))[0][:1]
    assert len(differ) == 1
    learner.replay_src[idx[differ]] = 0  # one site label...
    learner.replay_y[idx[differ]] = pa[differ]  # ...that agree with the active head, not the candidate
    assert learner.training_step() == "refused"
    assert learner.last_refusal == 5 and learner.last_site_vote == -1
    assert learner.last_gate_z >= default_cfg.model.validation_z  # the teacher-weighted test alone would commit


def test_paired_statistic_matches_a_plain_count(default_cfg, image):
    from flight_sw.ml import kernels as k
    from flight_sw.ml.model import float_features  # noqa: F401 (the float reference lives there)

    learner = _gate_learner(default_cfg, image, source=0)
    rng = np.random.default_rng(1)
    head_b = learner.slots[learner.active] + 0.05 * rng.standard_normal(learner.slots[0].shape)
    n = min(learner.replay_count, 96)
    start = (learner.replay_next - n) % learner.replay_x.shape[0]
    weights = np.array([0.8, 0.0, 0.0])
    learner.replay_src[start:start + 8] = 1  # these do not judge
    out = np.zeros(6)
    k.replay_paired(learner.replay_x, learner.replay_y, learner.replay_src, start, n, *learner._ext_args,
                    learner.slots[learner.active], head_b, False, learner.extractor.mean, learner.extractor.cx,
                    learner.extractor.w2, learner.extractor.c2, learner.extractor.b2,
                    weights, 0, learner.feat_row, learner.score_row, out)
    idx = (start + np.arange(n)) % learner.replay_x.shape[0]
    feat = np.zeros((n, learner.feat.shape[1]))
    k.mlp_features_into(learner.replay_x[idx], *learner._ext_args, feat)
    judged = learner.replay_src[idx] == 0
    y = learner.replay_y[idx]
    ok_a = np.argmax(feat @ learner.slots[learner.active], axis=1) == y
    ok_b = np.argmax(feat @ head_b, axis=1) == y
    assert out[4] == judged.sum()
    assert out[0] == (ok_a & judged).sum() and out[1] == (ok_b & judged).sum()
    diff = judged & (ok_a != ok_b)
    assert out[2] == pytest.approx(0.8 * ((ok_b & diff).sum() - (ok_a & diff).sum()))
    assert out[3] == pytest.approx(0.64 * diff.sum())
    assert out[5] == (ok_b & diff).sum() - (ok_a & diff).sum()  # the site vote (source 0 only)
