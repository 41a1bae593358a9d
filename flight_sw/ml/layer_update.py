"""Training beyond the head: a sparse, data-chosen update of the extractor's last layer.

The head alone cannot change what the features see. This job changes a few units of the
frozen extractor's second layer (hidden -> features), chosen by the data, by one
Gauss-Newton least-squares step with the head and the ReLU gates held fixed: for the
chosen units S the logits move linearly in the units' weight changes,

    logits(x) + sum_{j in S} m_j(x) H_j (dw_j . h~(x)),    h~ = (hidden activations, 1),

so fitting them to the one-hot labels of recent training samples is a quadratic energy
(one right-hand side), the analog optimizer's natural problem. The weight change of a
unit lives in the span of the top `layer_basis` principal directions of the hidden
activations (32 ReLU units of 10 bands span about 10 directions; the rest is noise), each
scaled to unit variance, so the system has k x r unknowns and is well conditioned; a
Jacobi scaling finishes it. A ridge in that basis (a penalty on how much the unit's
output moves, `model.layer_ridge`) is the anchor that holds forgetting down.

The candidate is the active layer with the chosen rows changed and requantised to int8
(one scale per output channel, like the ground's), built in the inactive of two slots.
It is judged like a head: the active head under the active and the candidate layer on the
held-back labels (reliability-weighted paired test, site-label veto), committed by the
atomic switch of the slot the extractor reads, watched on the next site labels and
rolled back bit-identically if they favour the previous layer. The head's statistics
describe the old features after a commit, so the owner scales them down.

Steps, one per `training` task run while the head's job is idle: SOLVE (choose the
units, form the system, solve through the optimizer interface, requantise), VALIDATE,
COMMIT. Training samples come from a ring of the labelled samples the head trains on
(not the held-back ones, which judge).

Lin et al. (NeurIPS 2022, on-device training under 256 KB) update a data-chosen sparse
set of layers and channels; layer-wise least squares with fixed gates is the
Gauss-Newton step of that update for a squared loss.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.ml.commit_watch import VersionedSlots
from flight_sw.ml.kernels import _mlp_row
from flight_sw.ml.model import ground_last_layer
from flight_sw.tmtc import dictionary as d

IDLE, VALIDATE, COMMIT = 0, 1, 2
OUTCOMES = d.LAYER_OUTCOMES
REFUSALS = d.LAYER_REFUSALS
#: Held-back samples the gate needs before it may judge a candidate.
MIN_HELDBACK = 32
#: Site labels watched after a commit, and the margin by which they must favour the previous layer.
WATCH_WINDOW = 64
WATCH_MARGIN = 0.05
#: Cyclic Jacobi sweeps for the hidden activations' principal directions (33 x 33 converges in 6-8).
JACOBI_SWEEPS = 10
#: Eigenvalues below this share of the largest are noise: their directions are not used.
EIGEN_FLOOR = 1e-6

STATE_FIELDS = (
    "active", "version", "next_version", "slot_versions", "phase", "ring_count", "ring_next", "ring_new",
    "accepted", "refused", "rollbacks", "last_refusal", "last_candidate_acc", "last_active_acc", "last_gate_z",
    "last_units", "last_residual", "last_energy_j", "last_path", "last_rounds", "watch_remaining",
    "watch_new_correct", "watch_old_correct", "rollback_pending_report", "solves", "trial_replaced",
    "trial_report",
)


def layer_buffer_specs(cfg: MissionConfig) -> tuple[dict, list[dict]]:
    """(persistent buffers, step-local scratch groups) of the layer update, name -> (shape, dtype).

    The scratch lives in the learning solve arena (flight_sw.memory): it is used only inside
    one SOLVE step, like the head solve's work matrices."""
    m = cfg.model
    bands, hidden, feat = cfg.payload.bands, m.hidden_units, m.feature_dim
    if m.layer_units <= 0:
        return {}, []
    n = m.layer_units * m.layer_basis
    aug_h = hidden + 1
    persistent = {
        "layer.slots_w2": ((2, feat, hidden), "int8"),
        "layer.slots_c2": ((2, feat), "float64"),
        "layer.slots_b2": ((2, feat), "float64"),
        "layer.ring_pixels": ((m.layer_ring_size, bands), "float32"),
        "layer.ring_labels": ((m.layer_ring_size,), "int16"),
        "layer.ring_columns": ((m.layer_ring_size,), "int16"),
        "layer.units": ((m.layer_units,), "int64"),
    }
    # Two phases of one SOLVE step, each laid out from the arena's start; the basis and the
    # hidden row come first in both, so both phases see the same ones.
    shared = {
        "layer.basis": ((aug_h, m.layer_basis), "float64"),
        "layer.hidden_row": ((aug_h,), "float64"),
    }
    eigen_phase = {  # the hidden Gram (its eigenvalues in place) and its eigenvectors
        **shared,
        "layer.gram": ((aug_h, aug_h), "float64"),
        "layer.eigvecs": ((aug_h, aug_h), "float64"),
    }
    system_phase = {  # the units' gradients in the basis, then the system
        **shared,
        "layer.grad": ((feat, m.layer_basis), "float64"),
        "layer.mass": ((feat,), "float64"),
        "layer.system": ((n, n), "float64"),
        "layer.rhs": ((n, 1), "float64"),
        "layer.jacobi": ((n,), "float64"),
        "layer.u_row": ((m.layer_basis,), "float64"),
    }
    scratch = [eigen_phase, system_phase]
    return persistent, scratch


class LayerUpdate(VersionedSlots):
    def __init__(self, cfg: MissionConfig, buffers: dict[str, np.ndarray], solver, image=None):
        """`image`: the boot image (flight_sw.ml.model.ModelImage), read again only when a
        ground-built head needs the ground's layer back (`install_ground`); no copy is kept."""
        self.cfg = cfg.model
        self.image = image
        self.enabled = cfg.model.layer_units > 0
        self.watch_window, self.watch_margin = WATCH_WINDOW, WATCH_MARGIN
        self.solver = solver
        self.ring_count = self.ring_next = self.ring_new = 0
        self.active = 0
        self.version = 0  # 0: the ground's layer
        self.next_version = 1
        self.slot_versions = [0, 0]
        self.phase = IDLE
        self.accepted = self.refused = self.rollbacks = self.solves = 0
        self.last_refusal = 0
        self.last_candidate_acc = self.last_active_acc = self.last_gate_z = math.nan
        self.last_units = 0  # bit mask of the units of the last candidate
        self.last_residual = self.last_energy_j = math.nan
        self.last_path = 0
        self.last_rounds = 0
        self.watch_remaining = 0
        self.watch_new_correct = self.watch_old_correct = 0
        self.rollback_pending_report = False
        self.last_step_flops = 0.0
        if not self.enabled:
            return
        b = buffers
        # The extractor reads its second layer from these three buffers (flight_sw/ml/model.py).
        self.live_w2, self.live_c2, self.live_b2 = b["ml.w2_int8"], b["ml.w2_scales"], b["ml.b2"]
        self.slots_w2, self.slots_c2, self.slots_b2 = b["layer.slots_w2"], b["layer.slots_c2"], b["layer.slots_b2"]
        for s in range(2):
            self.slots_w2[s], self.slots_c2[s], self.slots_b2[s] = self.live_w2, self.live_c2, self.live_b2
        self.ring_x, self.ring_y, self.ring_cols = b["layer.ring_pixels"], b["layer.ring_labels"], b["layer.ring_columns"]
        self.units = b["layer.units"]
        # Step-local views into the solve arena (flight_sw.memory): valid only inside `_solve`.
        self.gram, self.eigvecs, self.grad, self.mass = b["layer.gram"], b["layer.eigvecs"], b["layer.grad"], b["layer.mass"]
        self.basis, self.system, self.rhs, self.jacobi = b["layer.basis"], b["layer.system"], b["layer.rhs"], b["layer.jacobi"]
        self.hidden_row, self.u_row = b["layer.hidden_row"], b["layer.u_row"]
        self.feat_row, self.score_row = b["ml.feat_row"], b["ml.score_row"]

    # -- the training ring, fed with the head's training samples ------------------------------
    def take(self, pixels: np.ndarray, labels: np.ndarray, columns: np.ndarray, n: int, seen: int,
             holdout_every: int) -> None:
        """Copy the batch's training rows (those the head's fold does not hold back) into the ring."""
        if not self.enabled or n <= 0:
            return
        self.ring_next, added = ring_take(pixels, labels, columns, n, seen, holdout_every, self.ring_x, self.ring_y,
                                          self.ring_cols, self.ring_next)
        self.ring_count = min(self.ring_count + added, self.ring_x.shape[0])
        self.ring_new += added

    def remap_ring(self, calibration, from_slot: int, to_slot: int) -> None:
        """Re-express the ring's pixels in another calibration table (after a commit or rollback)."""
        if self.enabled and self.ring_count:
            calibration.remap_into(self.ring_x, self.ring_cols, self.ring_count, from_slot, to_slot, self.ring_x)

    def wants_step(self) -> bool:
        """A step is due: a candidate in flight, or `model.layer_interval_labels` new training samples
        (and a full ring)."""
        return self.enabled and (self.phase != IDLE or (
            self.ring_new >= max(self.cfg.layer_interval_labels, self.ring_x.shape[0])))

    def load_kernels(self, ext_args: tuple, head: np.ndarray, pixels: np.ndarray, labels: np.ndarray,
                     columns: np.ndarray) -> None:
        """Load at start-up the kernels first needed when the ring is full (see
        `OnboardLearner.load_kernels`): calls on zero samples, with arrays of the real calls' types
        (`pixels`, `labels`, `columns`: empty slices of the label buffers); the scratch slot is
        restored afterwards."""
        if not self.enabled:
            return
        hidden_gram(self.ring_x, 0, *ext_args, self.feat_row, self.hidden_row, self.gram)
        jacobi_eigh(self.eigvecs, self.gram, 0)
        principal_basis(self.gram, self.eigvecs, self.basis, EIGEN_FLOOR)
        unit_gradients(self.ring_x, self.ring_y, 0, *ext_args, head, self.basis, self.feat_row, self.score_row,
                       self.hidden_row, self.u_row, self.grad, self.mass)
        choose_units(self.grad, self.mass, self.units)
        layer_system(self.ring_x, self.ring_y, 0, *ext_args, head, self.units, self.basis, self.feat_row,
                     self.score_row, self.hidden_row, self.u_row, self.system, self.rhs)
        scale_system(self.system, self.rhs, 0, 1.0, self.jacobi)
        candidate_layer(self.rhs, self.jacobi, self.basis, self.units, self.live_w2, self.live_c2, self.live_b2,
                        ext_args[5], self.hidden_row, self.slots_w2[1], self.slots_c2[1], self.slots_b2[1])
        ring_take(pixels, labels, columns, 0, 0, 4, self.ring_x, self.ring_y, self.ring_cols, 0)
        self._activate(self.active)
        self.slots_w2[1 - self.active], self.slots_c2[1 - self.active], self.slots_b2[1 - self.active] = (
            self.live_w2, self.live_c2, self.live_b2)

    # -- the resumable job ----------------------------------------------------------------------
    def step(self, ext_args: tuple, head: np.ndarray, judge) -> str | None:
        """One bounded step; 'committed' or 'refused' when an update finishes.

        `ext_args` are the extractor's kernel arguments (its live buffers), `head` the active
        head, `judge(w2, c2, b2)` the learner's paired comparison of the active head under the
        active layer against the given one on the held-back labels: (active accuracy, candidate
        accuracy, weighted z, site vote, samples judged)."""
        self.last_step_flops = 0.0
        if self.phase == VALIDATE:
            return self._validate(judge)
        if self.phase == COMMIT:
            self._commit()
            return "committed"
        if not self.wants_step():
            return None
        self.ring_new = 0
        return self._solve(ext_args, head)

    def _solve(self, ext_args: tuple, head: np.ndarray) -> str | None:
        cand = 1 - self.active
        self.slot_versions[cand] = -1  # being overwritten: no rollback to it from now on
        self.watch_remaining = 0
        self.last_candidate_acc = self.last_active_acc = self.last_gate_z = math.nan
        n_ring = self.ring_count
        k, r = self.units.shape[0], self.basis.shape[1]
        aug_h = self.gram.shape[0]
        feat, hidden = self.live_w2.shape
        bands = self.ring_x.shape[1]
        per_sample = 2.0 * (bands * hidden + feat * hidden)  # one pass of the extractor
        # Eigen phase: the hidden activations' principal directions (their Gram, cyclic Jacobi).
        hidden_gram(self.ring_x, n_ring, *ext_args, self.feat_row, self.hidden_row, self.gram)
        sweeps = jacobi_eigh(self.eigvecs, self.gram, JACOBI_SWEEPS)
        chosen = principal_basis(self.gram, self.eigvecs, self.basis, EIGEN_FLOOR)
        # System phase: the units' gradients in that basis, the chosen units, their system.
        unit_gradients(self.ring_x, self.ring_y, n_ring, *ext_args, head, self.basis, self.feat_row,
                       self.score_row, self.hidden_row, self.u_row, self.grad, self.mass)
        picked = choose_units(self.grad, self.mass, self.units)
        self.last_units = 0
        for j in self.units[:picked]:
            self.last_units |= 1 << int(j)
        n = k * r
        self.last_step_flops = (n_ring * (3.0 * per_sample + aug_h * aug_h + 2.0 * aug_h * r * 2.0 + 2.0 * feat * r
                                          + 2.0 * n * n) + sweeps * 6.0 * aug_h**3 + 3.0 * n * n)
        if picked < k or chosen < r or sweeps == 0:
            return self._refuse(1)  # too few units that the labels reach, or a degenerate hidden layer
        layer_system(self.ring_x, self.ring_y, n_ring, *ext_args, head, self.units, self.basis, self.feat_row,
                     self.score_row, self.hidden_row, self.u_row, self.system, self.rhs)
        scale_system(self.system, self.rhs, n_ring, self.cfg.layer_ridge, self.jacobi)
        x, report = self.solver.solve(self.system, self.rhs)
        self.solves += 1
        self.last_residual, self.last_energy_j, self.last_path = report.rel_residual, report.energy_j, report.path
        self.last_rounds = report.rounds
        if not report.ok:
            return self._refuse(2)
        candidate_layer(x, self.jacobi, self.basis, self.units, self.live_w2, self.live_c2, self.live_b2,
                        ext_args[5], self.hidden_row, self.slots_w2[cand], self.slots_c2[cand], self.slots_b2[cand])
        self.phase = VALIDATE
        return None

    def _validate(self, judge) -> str | None:
        cand = 1 - self.active
        self.phase = IDLE
        acc_a, acc_c, z, site_vote, judged = judge(self.slots_w2[cand], self.slots_c2[cand], self.slots_b2[cand])
        self.last_active_acc, self.last_candidate_acc, self.last_gate_z = acc_a, acc_c, z
        self.last_step_flops = 4.0 * judged * 1.5e3
        refused = self._gate_verdict(judged, MIN_HELDBACK, acc_c >= acc_a and z >= self.cfg.layer_gate_z, site_vote)
        if refused is None:
            self.phase = COMMIT
        return refused

    def _activate(self, slot: int) -> None:
        self.active = slot  # the atomic switch: the extractor's buffers follow at once
        np.copyto(self.live_w2, self.slots_w2[slot])
        np.copyto(self.live_c2, self.slots_c2[slot])
        np.copyto(self.live_b2, self.slots_b2[slot])

    # -- after a commit -------------------------------------------------------------------------
    def previous(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(w2, c2, b2) of the other slot (the previous layer while it can come back)."""
        o = 1 - self.active
        return self.slots_w2[o], self.slots_c2[o], self.slots_b2[o]

    def can_roll_back(self) -> bool:
        return self.enabled and super().can_roll_back()

    # -- a ground-built head ----------------------------------------------------------------------
    def _write_ground(self, slot: int) -> bool:
        """The boot image's last layer into `slot` (recomputed from the image: no copy is kept)."""
        if not self.enabled or self.image is None:
            return False
        self.slots_w2[slot], self.slots_c2[slot], self.slots_b2[slot] = ground_last_layer(self.image)
        return True

    # -- snapshot -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in STATE_FIELDS}

    def load_state_dict(self, state: dict) -> None:
        for name in STATE_FIELDS:
            setattr(self, name, state[name])
        if self.enabled:
            self._activate(self.active)


# -- kernels -------------------------------------------------------------------------------------
@numba.njit(cache=True)
def ring_take(pixels, labels, columns, n, seen, holdout_every, ring_x, ring_y, ring_cols, next_):  # pragma: no cover
    """Copy rows that are not held back ((seen + i) % holdout_every != 0, the head's rule) into the ring."""
    cap = ring_x.shape[0]
    added = 0
    for i in range(n):
        if (seen + i) % holdout_every == 0:
            continue
        for b in range(pixels.shape[1]):
            ring_x[next_, b] = pixels[i, b]
        ring_y[next_] = labels[i]
        ring_cols[next_] = columns[i] if i < columns.shape[0] else -1
        next_ = (next_ + 1) % cap
        added += 1
    return next_, added


@numba.njit(cache=True)
def _residual_and_hidden(x, y, mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, head, feat_row, score_row,
                         hidden_row):  # pragma: no cover - compiled
    """Features and scores of one sample; score_row becomes the residual one-hot(y) - scores and
    hidden_row the dequantised hidden activations with the bias input 1 last."""
    _mlp_row(x, mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, feat_row)
    n_cls = head.shape[1]
    for c in range(n_cls):
        s = 0.0
        for k in range(feat_row.shape[0]):
            s += feat_row[k] * head[k, c]
        score_row[c] = (1.0 if c == y else 0.0) - s
    hidden = hid.shape[0]
    for k in range(hidden):
        hidden_row[k] = hid[k] / ih
    hidden_row[hidden] = 1.0


@numba.njit(cache=True)
def hidden_gram(ring_x, n, mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, feat_row, hidden_row,
                gram):  # pragma: no cover - compiled
    """Mean over the ring of h~ h~^T, h~ the dequantised hidden activations with the bias input 1."""
    aug_h = gram.shape[0]
    hidden = hid.shape[0]
    gram[:, :] = 0.0
    for s in range(n):
        _mlp_row(ring_x[s], mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, feat_row)
        for k in range(hidden):
            hidden_row[k] = hid[k] / ih
        hidden_row[hidden] = 1.0
        for a in range(aug_h):
            ha = hidden_row[a]
            if ha == 0.0:
                continue
            for b in range(a + 1):
                gram[a, b] += ha * hidden_row[b]
    if n > 0:
        for a in range(aug_h):
            for b in range(a + 1):
                gram[a, b] /= n
                gram[b, a] = gram[a, b]


@numba.njit(cache=True)
def _project(basis, hidden_row, u_row):  # pragma: no cover - compiled
    """u = basis^T h~: the sample's coordinates along the principal directions."""
    for p in range(basis.shape[1]):
        acc = 0.0
        for i in range(basis.shape[0]):
            acc += basis[i, p] * hidden_row[i]
        u_row[p] = acc


@numba.njit(cache=True)
def unit_gradients(ring_x, ring_y, n, mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, head, basis, feat_row,
                   score_row, hidden_row, u_row, grad, mass):  # pragma: no cover - compiled
    """Each unit's Gauss-Newton gradient in the basis, grad[j] = sum m_j (H_j . r) u, and its gated
    reach mass[j] = sum m_j |H_j|^2 (m_j: the unit's ReLU gate is open; r = one-hot(y) - scores)."""
    feat = grad.shape[0]
    r = basis.shape[1]
    grad[:, :] = 0.0
    mass[:] = 0.0
    for s in range(n):
        _residual_and_hidden(ring_x[s], ring_y[s], mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, head, feat_row,
                             score_row, hidden_row)
        _project(basis, hidden_row, u_row)
        for j in range(feat):
            if feat_row[j] <= 0.0:
                continue  # the unit's gate is closed: its weights do not reach the logits
            hr = 0.0
            hh = 0.0
            for c in range(head.shape[1]):
                hr += head[j, c] * score_row[c]
                hh += head[j, c] * head[j, c]
            mass[j] += hh
            for p in range(r):
                grad[j, p] += hr * u_row[p]


@numba.njit(cache=True)
def jacobi_eigh(vecs, a, sweeps):  # pragma: no cover - compiled
    """Cyclic Jacobi eigen-decomposition of symmetric `a` in place: its diagonal becomes the
    eigenvalues, the columns of `vecs` the eigenvectors. Returns the sweeps used (0 if none ran)."""
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            vecs[i, j] = 1.0 if i == j else 0.0
    for sweep in range(sweeps):
        off = 0.0
        diag = 0.0
        for i in range(n):
            diag += a[i, i] * a[i, i]
            for j in range(i + 1, n):
                off += a[i, j] * a[i, j]
        if off <= 1e-24 * diag or diag == 0.0:
            return sweep + 1 if diag > 0.0 else 0
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = a[p, q]
                if apq == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * apq)
                t = (1.0 if theta >= 0.0 else -1.0) / (abs(theta) + math.sqrt(theta * theta + 1.0))
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(n):
                    akp = a[k, p]
                    akq = a[k, q]
                    a[k, p] = c * akp - s * akq
                    a[k, q] = s * akp + c * akq
                for k in range(n):
                    apk = a[p, k]
                    aqk = a[q, k]
                    a[p, k] = c * apk - s * aqk
                    a[q, k] = s * apk + c * aqk
                for k in range(n):
                    vkp = vecs[k, p]
                    vkq = vecs[k, q]
                    vecs[k, p] = c * vkp - s * vkq
                    vecs[k, q] = s * vkp + c * vkq
    return sweeps


@numba.njit(cache=True)
def principal_basis(eig_diag, vecs, basis, floor):  # pragma: no cover - compiled
    """The r eigenvectors of the largest eigenvalues (the diagonal of `eig_diag`), each divided by
    the square root of its eigenvalue (unit variance along it) into basis[:, :r]. Returns how many
    were above `floor` x the largest (the rest are left zero)."""
    n = vecs.shape[0]
    r = basis.shape[1]
    basis[:, :] = 0.0
    top = 0.0
    for i in range(n):
        top = max(top, eig_diag[i, i])
    taken = 0
    last = math.inf
    last_idx = -1
    for col in range(r):
        best = -1
        best_val = -math.inf
        for i in range(n):
            v = eig_diag[i, i]
            if (v < last or (v == last and i > last_idx)) and v > best_val:
                best, best_val = i, v
        if best < 0 or not best_val > floor * top or top <= 0.0:
            break
        inv = 1.0 / math.sqrt(best_val)
        for k in range(n):
            basis[k, col] = vecs[k, best] * inv
        last, last_idx = best_val, best
        taken += 1
    return taken


@numba.njit(cache=True)
def choose_units(grad, mass, units):  # pragma: no cover - compiled
    """The k units with the largest predicted gain |grad_j|^2 / mass_j (the gradient's size in the
    whitened basis over the unit's gated reach), in ascending order. Returns how many had any reach."""
    feat, r = grad.shape
    k = units.shape[0]
    picked = 0
    for slot in range(k):
        best = -1
        best_score = 0.0
        for j in range(feat):
            if mass[j] <= 0.0:
                continue
            taken = False
            for t in range(slot):
                if units[t] == j:
                    taken = True
            if taken:
                continue
            score = 0.0
            for p in range(r):
                score += grad[j, p] * grad[j, p]
            score /= mass[j]
            if best < 0 or score > best_score:
                best, best_score = j, score
        if best < 0:
            break
        units[slot] = best
        picked += 1
    for i in range(picked):  # ascending: the system's layout does not depend on the ranking
        for j in range(i + 1, picked):
            if units[j] < units[i]:
                units[i], units[j] = units[j], units[i]
    return picked


@numba.njit(cache=True)
def layer_system(ring_x, ring_y, n, mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, head, units, basis,
                 feat_row, score_row, hidden_row, u_row, system, rhs):  # pragma: no cover - compiled
    """Gauss-Newton normal equations of the chosen units (head and gates fixed), summed over
    the ring: Q[(a,p),(b,q)] = sum m_a m_b (H_a . H_b) u_p u_q, rhs[(a,p)] = sum m_a (H_a . r) u_p,
    with u = basis^T h~ and r = one-hot(y) - scores."""
    k = units.shape[0]
    r = basis.shape[1]
    n_cls = head.shape[1]
    system[:, :] = 0.0
    rhs[:, :] = 0.0
    for s in range(n):
        _residual_and_hidden(ring_x[s], ring_y[s], mean, cx, w1t, c1, b1, ih, w2t, c2, b2, xq, hid, head, feat_row,
                             score_row, hidden_row)
        _project(basis, hidden_row, u_row)
        for a in range(k):
            ja = units[a]
            if feat_row[ja] <= 0.0:
                continue
            hr = 0.0
            for c in range(n_cls):
                hr += head[ja, c] * score_row[c]
            for p in range(r):
                rhs[a * r + p, 0] += hr * u_row[p]
            for b in range(a + 1):
                jb = units[b]
                if feat_row[jb] <= 0.0:
                    continue
                g = 0.0
                for c in range(n_cls):
                    g += head[ja, c] * head[jb, c]
                for p in range(r):
                    gp = g * u_row[p]
                    for q in range(r):
                        system[a * r + p, b * r + q] += gp * u_row[q]
    m = k * r
    for i in range(m):
        for j in range(i):
            system[j, i] = system[i, j]


@numba.njit(cache=True)
def scale_system(system, rhs, n_samples, ridge, jacobi):  # pragma: no cover - compiled
    """Mean over samples, the ridge on the diagonal, then the Jacobi scaling D Q D y = D b
    (x = D y) that puts ones on the diagonal for the optimizer; jacobi[i] = D_ii."""
    m = system.shape[0]
    inv_n = 1.0 / max(n_samples, 1)
    for i in range(m):
        for j in range(m):
            system[i, j] *= inv_n
        system[i, i] += ridge
        rhs[i, 0] *= inv_n
    for i in range(m):
        jacobi[i] = 1.0 / math.sqrt(system[i, i])
    for i in range(m):
        for j in range(m):
            system[i, j] *= jacobi[i] * jacobi[j]
        rhs[i, 0] *= jacobi[i]


@numba.njit(cache=True)
def candidate_layer(x, jacobi, basis, units, w2, c2, b2, ih, row, out_w2, out_c2, out_b2):  # pragma: no cover
    """The active layer with each chosen unit's weights moved by basis @ (D y) and requantised to
    int8 with a new per-channel scale (c2 = hidden step x weight scale, as the ground's); `row`
    is scratch of at least hidden entries."""
    feat, hidden = w2.shape
    r = basis.shape[1]
    for j in range(feat):
        for i in range(hidden):
            out_w2[j, i] = w2[j, i]
        out_c2[j] = c2[j]
        out_b2[j] = b2[j]
    for a in range(units.shape[0]):
        j = units[a]
        wscale = c2[j] * ih  # the unit's float weight per int8 step
        peak = 0.0
        for i in range(hidden + 1):
            dw = 0.0
            for p in range(r):
                dw += basis[i, p] * jacobi[a * r + p] * x[a * r + p, 0]
            if i < hidden:
                row[i] = w2[j, i] * wscale + dw
                peak = max(peak, abs(row[i]))
            else:
                out_b2[j] = b2[j] + dw
        step = peak / 127.0 if peak > 0.0 else 1.0
        for i in range(hidden):
            q = np.rint(row[i] / step)
            out_w2[j, i] = np.int8(127 if q > 127 else (-127 if q < -127 else q))
        out_c2[j] = step / ih
