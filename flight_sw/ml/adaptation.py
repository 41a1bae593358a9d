"""Label-free adaptation of the model's input normalisation, versioned and gated like a model.

AdaBN (Li et al., 2016) and TENT (Wang et al., ICLR 2021) adapt a network to a shifted
input distribution by re-estimating its normalisation statistics on unlabelled target
data. Our extractor's only normalisation is at its input (per band, (x - mean) * scale),
so the adaptation works there: per band, the mean and standard deviation of the
calibrated pixels of recent daylight frames are matched to those of a *flight
reference* window, taken once after commissioning (the first complete window: the
scenes the model saw when it was known healthy, not the ground's training set, whose
class mix differs from what the orbit sees). Per band, x' = a x + c with
a = std_ref / std_recent and c = mean_ref - a mean_recent; folded into the
extractor's normalisation, nothing else changes:

    mean' = (mean_0 - c) / a,   scale' = scale_0 * a      (mean_0, scale_0: the image's)

What it can and cannot do: it undoes a change of the per-band pixel statistics with the
scene mix held fixed (a band's response moving in a way the diffuser does not see, a
filter shift); it cannot tell that change from a change of the scenes themselves (a
season, new surfaces), where matching the statistics is harmful. That is why the
candidate is judged, like a head, on the held-back labels with the active head
(reliability-weighted paired test, site-label veto) and refused when it does worse; after
a commit the next site labels are watched and the previous normalisation comes back
(bit-identical) if they favour it.

Steps run one per `adaptation` task run (bounded: a candidate is O(bands); the gate is
two extractor passes over the held-back ring).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.ml.commit_watch import VersionedSlots
from flight_sw.ml.model import INT8_MAX, ModelImage
from flight_sw.tmtc import dictionary as d

IDLE, VALIDATE, COMMIT = 0, 1, 2
OUTCOMES = d.ADAPTATION_OUTCOMES
REFUSALS = d.ADAPTATION_REFUSALS
#: Held-back samples the gate needs before it may judge a candidate.
MIN_HELDBACK = 32
#: Site labels watched after a commit.
WATCH_WINDOW = 64
#: Per-band scale factor a = std_ref / std_recent outside this range is not a scene-statistics
#: matter (a detector failure, a calibration gone wrong): refused as out of range.
SCALE_MIN, SCALE_MAX = 0.5, 2.0

STATE_FIELDS = (
    "active", "version", "next_version", "slot_versions", "phase", "window_pixels", "has_reference",
    "accepted", "refused", "rollbacks", "last_refusal", "last_change", "last_candidate_acc", "last_active_acc",
    "last_gate_z", "last_window_pixels", "watch_remaining", "watch_new_correct", "watch_old_correct",
    "rollback_pending_report", "windows", "trial_replaced", "trial_report",
)


class InputAdaptation(VersionedSlots):
    def __init__(self, cfg: MissionConfig, image: ModelImage, buffers: dict[str, np.ndarray]):
        self.cfg = cfg.adaptation
        self.watch_window, self.watch_margin = WATCH_WINDOW, cfg.adaptation.watch_drop
        self.slots = buffers["adapt.norm_slots"]  # (2 slots, mean / scale, bands)
        self.reference = buffers["adapt.reference"]  # (mean / std, bands) of the reference window
        self.window = buffers["adapt.window"]  # (sum / sum of squares, bands) of the current window
        # The extractor reads its normalisation from these two buffers (flight_sw/ml/model.py).
        self.live_mean = buffers["ml.input_mean"]
        self.live_scale = buffers["ml.input_scale"]
        # The image's normalisation (the model image, like the ground statistics: not working memory).
        self.base_mean = image.input_mean
        self.base_std = image.input_std
        self.base_step = image.input_clip / INT8_MAX
        for slot in range(2):
            self.slots[slot, 0] = self.live_mean
            self.slots[slot, 1] = self.live_scale
        self.reference[...] = 0.0
        self.window[...] = 0.0
        self.active = 0
        self.version = 0  # 0: the image's own normalisation
        self.next_version = 1
        self.slot_versions = [0, 0]
        self.phase = IDLE
        self.window_pixels = 0
        self.has_reference = False
        self.accepted = self.refused = self.rollbacks = 0
        self.windows = 0
        self.last_refusal = 0
        self.last_change = 0.0
        self.last_candidate_acc = self.last_active_acc = self.last_gate_z = math.nan
        self.last_window_pixels = 0
        self.watch_remaining = 0
        self.watch_new_correct = self.watch_old_correct = 0
        self.rollback_pending_report = False
        self.last_step_flops = 0.0

    def _write_ground(self, slot: int) -> bool:
        """The image's own normalisation into `slot`, as the extractor computes it at start-up."""
        self.slots[slot, 0] = self.base_mean
        self.slots[slot, 1] = 1.0 / (self.base_std * self.base_step)
        return True

    # -- the window, fed by inference -------------------------------------------------------
    def observe(self, pixels: np.ndarray, n: int, sun_elevation_deg: float) -> int:
        """Fold the calibrated pixels of a daylight frame into the window; returns the rows taken."""
        if not sun_elevation_deg >= self.cfg.min_sun_elevation_deg or self.phase != IDLE:
            return 0
        taken = window_add(pixels, n, self.window)
        self.window_pixels += taken
        return taken

    def load_kernels(self) -> None:
        """Load at start-up the kernels first needed when the first window is full (see
        `OnboardLearner.load_kernels`); they write only into scratch copies here."""
        reference = np.empty_like(self.reference)
        out = np.empty_like(self.slots[0])
        window_stats(self.window, 1, reference)
        candidate_into(self.window, 1, reference, self.base_mean, self.base_std, self.base_step,
                       self.slots[self.active], out, SCALE_MIN, SCALE_MAX)

    def restart_window(self) -> None:
        """Forget the current window (the calibration table changed under it)."""
        self.window[...] = 0.0
        self.window_pixels = 0
        if self.phase == VALIDATE:
            self.phase = IDLE  # a candidate from the old table's pixels is no longer meaningful

    # -- the resumable job --------------------------------------------------------------------
    def step(self, judge) -> str | None:
        """One bounded step; returns 'committed', 'refused' or 'reference' when something happened.

        `judge(mean, scale)` is the learner's paired comparison of the active head under the
        active normalisation against (mean, scale) on the held-back labels: (active accuracy,
        candidate accuracy, weighted z, site vote, samples judged).
        """
        self.last_step_flops = 0.0
        if self.phase == VALIDATE:
            return self._validate(judge)
        if self.phase == COMMIT:
            self._commit()
            return "committed"
        if self.window_pixels < self.cfg.window_pixels:
            return None
        self.windows += 1
        self.last_window_pixels = self.window_pixels
        self.last_step_flops = 12.0 * self.window.shape[1]
        if not self.has_reference:
            window_stats(self.window, self.window_pixels, self.reference)
            self.has_reference = True
            self.restart_window()
            return "reference"
        cand = 1 - self.active
        self.slot_versions[cand] = -1  # being overwritten: no rollback to it from now on
        self.watch_remaining = 0
        ok, self.last_change = candidate_into(
            self.window, self.window_pixels, self.reference, self.base_mean, self.base_std, self.base_step,
            self.slots[self.active], self.slots[cand], SCALE_MIN, SCALE_MAX)
        self.restart_window()
        self.last_candidate_acc = self.last_active_acc = self.last_gate_z = math.nan
        if not ok:
            return self._refuse(1)
        if self.last_change < self.cfg.min_change:
            return self._refuse(2)
        self.phase = VALIDATE
        return None

    def _validate(self, judge) -> str | None:
        cand = self.slots[1 - self.active]
        self.phase = IDLE
        acc_a, acc_c, z, site_vote, judged = judge(cand[0], cand[1])
        self.last_active_acc, self.last_candidate_acc, self.last_gate_z = acc_a, acc_c, z
        self.last_step_flops = 4.0 * judged * 1.5e3
        refused = self._gate_verdict(judged, MIN_HELDBACK, z >= self.cfg.min_gate_z, site_vote)
        if refused is None:
            self.phase = COMMIT
        return refused

    def _activate(self, slot: int) -> None:
        self.active = slot  # the atomic switch: the extractor's buffers follow at once
        np.copyto(self.live_mean, self.slots[slot, 0])
        np.copyto(self.live_scale, self.slots[slot, 1])

    # -- after a commit ------------------------------------------------------------------------
    def previous(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale) of the other slot (the previous normalisation while it can come back)."""
        return self.slots[1 - self.active, 0], self.slots[1 - self.active, 1]

    # -- snapshot ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in STATE_FIELDS}

    def load_state_dict(self, state: dict) -> None:
        for name in STATE_FIELDS:
            setattr(self, name, state[name])
        self._activate(self.active)


# -- kernels -------------------------------------------------------------------------------
@numba.njit(cache=True)
def window_add(pixels, n, window):  # pragma: no cover - compiled
    """Add the finite rows of pixels[:n] to the per-band sums; return how many were taken."""
    bands = window.shape[1]
    taken = 0
    for i in range(n):
        ok = True
        for k in range(bands):
            if not math.isfinite(pixels[i, k]):
                ok = False
                break
        if not ok:
            continue
        for k in range(bands):
            v = float(pixels[i, k])
            window[0, k] += v
            window[1, k] += v * v
        taken += 1
    return taken


@numba.njit(cache=True)
def window_stats(window, count, out):  # pragma: no cover - compiled
    """out[0] = per-band mean, out[1] = per-band standard deviation of the window."""
    for k in range(window.shape[1]):
        m = window[0, k] / count
        out[0, k] = m
        out[1, k] = math.sqrt(max(window[1, k] / count - m * m, 0.0))


@numba.njit(cache=True)
def candidate_into(window, count, reference, base_mean, base_std, base_step, active, out,
                   scale_min, scale_max):  # pragma: no cover - compiled
    """The normalisation that maps the window's band statistics onto the reference's, into
    out (mean, scale); returns (physical?, largest change against the active normalisation:
    scale ratio - 1, or mean shift in units of the image's band std)."""
    ok = True
    change = 0.0
    for k in range(window.shape[1]):
        m = window[0, k] / count
        s = math.sqrt(max(window[1, k] / count - m * m, 0.0))
        if not (s > 0.0 and reference[1, k] > 0.0):
            ok = False
            continue
        a = reference[1, k] / s
        if not (scale_min <= a <= scale_max):
            ok = False
        c = reference[0, k] - a * m
        out[0, k] = (base_mean[k] - c) / a
        out[1, k] = a / (base_std[k] * base_step)
        change = max(change, abs(out[1, k] / active[1, k] - 1.0), abs(out[0, k] - active[0, k]) / base_std[k])
    return ok, change
