"""Onboard radiometric self-calibration: dark signal and gain per detector column, versioned.

Real imagers correct radiometry before any classifier sees a pixel: Sentinel-2 MSI
and Landsat 8 OLI take dark frames (shutter closed or night side) for the dark
signal and its non-uniformity, and view a sun diffuser of known reflectance for the
gain of every detector. This module does the same in bounded steps that the
`calibration` task runs, one chunk of `radiometry.chunk_columns` columns per run:

- Dark (when the payload can give dark readings, the night side, and
  `dark_sweep_interval_s` has passed since the last sweep): each reading updates its
  column's running dark estimate (weight `dark_ema`), or replaces it when it jumps by
  more than `dark_jump` (a radiation event: hot columns).
- Sun diffuser (when a calibration is asked for, the geometry allows, and a whole
  dark sweep has been made since it was asked for): gain = (reading - dark) /
  the diffuser's characterised reflectance factor, per column and band, written
  into the inactive slot as the candidate table together with the dark estimates.
- Validate: the candidate must be finite and physical, change something beyond
  noise (`min_change`), and not cost the active model more than `max_heldback_drop`
  on the held-back *site* labels collected since the calibration was asked for (the
  teacher labels pixels through the active table, so its labels side with it).
- Commit: the atomic switch of the active slot; the previous table stays in the
  other slot and comes back (bit-identical) if the next site labels favour it, or on
  ground command, until the next diffuser sweep starts overwriting it.

What the flight software does not know: the diffuser's characterisation error and
its UV darkening with use (both bias the gains it finds), and anything between two
dark sweeps. A calibration is asked for at start-up (commissioning), after a drift
alarm, and every `diffuser_period_days`.

Tables are int16 fixed point (gain = 1 + q / 16384, offset = q * 4e-6 reflectance):
two slots of 1,024 columns x 10 bands fit in 80 KB.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.ml.commit_watch import VersionedSlots
from flight_sw.tmtc import dictionary as d

#: Calibration acquisition kinds and the payload's answers (PayloadDevice.acquire_calibration).
CAL_DARK, CAL_DIFFUSER = 0, 1
CAL_OK, CAL_UNAVAILABLE = 0, 1
#: Fixed-point steps of the stored table.
GAIN_STEP = 1.0 / 16384.0
OFFSET_STEP = 4e-6
Q_MAX = 32767
#: Physical limits of a candidate table (outside: refused as out of range).
GAIN_MIN, GAIN_MAX = 0.3, 2.0
#: Share of column-bands that must move for a non-uniform change to count (see RadiometryConfig.min_change).
MIN_CHANGED_SHARE = 0.005
#: Held-back labels needed before the gate uses them; site labels watched after a commit.
MIN_HELDBACK = 32
WATCH_WINDOW = 64

IDLE, DIFFUSER, VALIDATE, COMMIT = 0, 1, 2, 3
PHASE_NAMES = ("idle", "diffuser", "validate", "commit")
OUTCOMES = d.CALIBRATION_OUTCOMES
REFUSALS = d.CALIBRATION_REFUSALS
REQUEST_REASONS = d.CALIBRATION_REASONS

STATE_FIELDS = (
    "active", "version", "next_version", "slot_versions", "phase", "next_dark_chunk", "dark_sweeps",
    "dark_sweeps_at_request", "requested", "request_reason", "heldback_at_request", "next_diffuser_chunk",
    "last_diffuser_t_s", "accepted", "refused", "rollbacks", "last_refusal", "dark_jumps", "hot_count",
    "diffuser_sweeps", "sweeps_abandoned", "last_dark_sweep_t_s", "watch_remaining", "watch_new_correct", "watch_old_correct",
    "last_band_change", "last_changed_share", "last_candidate_acc", "last_active_acc", "rollback_pending_report",
)


class RadiometricCalibration(VersionedSlots):
    def __init__(self, cfg: MissionConfig, buffers: dict[str, np.ndarray], diffuser_reflectance=None):
        self.cfg = cfg.radiometry
        self.watch_window, self.watch_margin = WATCH_WINDOW, cfg.radiometry.max_heldback_drop
        self.gain_q = buffers["cal.gain_q"]
        self.offset_q = buffers["cal.offset_q"]
        self.dark_q = buffers["cal.dark_q"]
        self.dark_seen = buffers["cal.dark_seen"]
        self.reading = buffers["cal.reading"]
        self.diffuser = buffers["cal.diffuser_reflectance"]
        self.band_change = buffers["cal.band_change"]
        self.rows = buffers["cal.rows"]
        self.columns, self.bands = self.dark_q.shape
        self.chunk = self.reading.shape[0]
        self.n_chunks = -(-self.columns // self.chunk)
        self.gain_q[...] = 0
        self.offset_q[...] = 0
        self.dark_q[...] = 0
        self.dark_seen[...] = 0
        self.has_diffuser = diffuser_reflectance is not None
        self.diffuser[...] = diffuser_reflectance if self.has_diffuser else 1.0
        self.active = 0
        self.version = 0
        self.next_version = 1
        self.slot_versions = [0, 0]
        self.phase = IDLE
        self.next_dark_chunk = 0
        self.dark_sweeps = 0
        self.dark_sweeps_at_request = 0
        self.requested = False
        self.request_reason = 0
        self.heldback_at_request = 0
        self.next_diffuser_chunk = 0
        self.last_diffuser_t_s = 0.0
        self.accepted = self.refused = self.rollbacks = 0
        self.last_refusal = 0
        self.dark_jumps = 0
        self.hot_count = 0
        self.diffuser_sweeps = 0
        self.sweeps_abandoned = 0
        self.last_dark_sweep_t_s = -1e30
        self.watch_remaining = 0
        self.watch_new_correct = self.watch_old_correct = 0
        self.last_band_change = 0.0
        self.last_changed_share = 0.0
        self.last_candidate_acc = math.nan
        self.last_active_acc = math.nan
        self.rollback_pending_report = False
        self.last_step_flops = 0.0
        self.request(0, 0)  # commissioning: calibrate once the first dark sweep and diffuser window come

    # -- applying the table ---------------------------------------------------------------
    def apply_into(self, pixels: np.ndarray, columns: np.ndarray, n: int) -> None:
        """Correct pixels[:n] in place with the active table (columns: each pixel's detector column)."""
        calibrate_rows(pixels, columns, n, self.gain_q[self.active], self.offset_q[self.active])

    def remap_into(self, pixels: np.ndarray, columns: np.ndarray, n: int, from_slot: int, to_slot: int,
                   out: np.ndarray) -> None:
        """pixels[:n] corrected with slot `from_slot`, re-corrected with slot `to_slot`, into out."""
        remap_rows(pixels, columns, n, self.gain_q[from_slot], self.offset_q[from_slot], self.gain_q[to_slot],
                   self.offset_q[to_slot], out)

    def gain_of(self, slot: int) -> np.ndarray:
        """Gains of a slot as floats (allocates: for reports and tests, not the tick path)."""
        return 1.0 + self.gain_q[slot].astype(np.float64) * GAIN_STEP

    def offset_of(self, slot: int) -> np.ndarray:
        return self.offset_q[slot].astype(np.float64) * OFFSET_STEP

    # -- the resumable job ----------------------------------------------------------------
    def request(self, reason: int, heldback_total: int) -> None:
        """Ask for a calibration (drift alarm, routine, ground); ignored while one is under way."""
        if self.requested or self.phase != IDLE:
            return
        self.requested = True
        self.request_reason = reason
        self.dark_sweeps_at_request = self.dark_sweeps
        self.heldback_at_request = heldback_total

    def step(self, t_s: float, payload, heldback, heldback_total: int) -> str | None:
        """One bounded step; returns an outcome ('committed', 'refused') when a candidate is judged.

        `payload.acquire_calibration(kind, first_column, out)` gives readings (CAL_OK) or says
        the geometry does not allow them (CAL_UNAVAILABLE). `heldback(from_slot, to_slot, n)`
        is the learner's accuracy of the active model on its n most recent held-back site
        labels under either table: (accuracy under from_slot, under to_slot, samples used);
        `heldback_total` counts those labels since start.
        """
        self.last_step_flops = 0.0
        if self.phase == VALIDATE:
            return self._validate(heldback, heldback_total)
        if self.phase == COMMIT:
            self._commit()
            return "committed"
        if self.phase == IDLE and not self.requested and t_s - self.last_diffuser_t_s >= self.cfg.diffuser_period_days * 86400.0:
            self.request(2, heldback_total)
        first = self.next_dark_chunk * self.chunk
        m = min(self.chunk, self.columns - first)
        dark_due = first > 0 or t_s - self.last_dark_sweep_t_s >= self.cfg.dark_sweep_interval_s
        if dark_due and payload.acquire_calibration(CAL_DARK, first, self.reading[:m]) == CAL_OK:
            self.dark_jumps += dark_update(self.reading, m, first, self.dark_q, self.dark_seen, self.cfg.dark_ema,
                                           self.cfg.dark_jump)
            self.next_dark_chunk = (self.next_dark_chunk + 1) % self.n_chunks
            if self.next_dark_chunk == 0:
                self.dark_sweeps += 1
                self.last_dark_sweep_t_s = t_s
                self.hot_count = count_above(self.dark_q, self.cfg.hot_threshold / OFFSET_STEP)
            self.last_step_flops = 6.0 * m * self.bands
            return None
        if not self.requested or not self.has_diffuser or self.dark_sweeps <= self.dark_sweeps_at_request:
            return None
        first = self.next_diffuser_chunk * self.chunk
        m = min(self.chunk, self.columns - first)
        if payload.acquire_calibration(CAL_DIFFUSER, first, self.reading[:m]) != CAL_OK:
            if self.phase == DIFFUSER:  # the window closed mid-sweep: start again at the next one
                self.phase = IDLE
                self.next_diffuser_chunk = 0
                self.sweeps_abandoned += 1
            return None
        cand = 1 - self.active
        if self.phase == IDLE:  # the sweep overwrites the previous table: no rollback to it from now on
            self.phase = DIFFUSER
            self.slot_versions[cand] = -1
            self.watch_remaining = 0
        diffuser_candidate(self.reading, m, first, self.dark_q, self.diffuser, self.gain_q[cand],
                           self.offset_q[cand])
        self.last_step_flops = 6.0 * m * self.bands
        self.next_diffuser_chunk += 1
        if self.next_diffuser_chunk >= self.n_chunks:
            self.next_diffuser_chunk = 0
            self.diffuser_sweeps += 1
            self.last_diffuser_t_s = t_s
            self.phase = VALIDATE
        return None

    def install_candidate(self, gain_q: np.ndarray, offset_q: np.ndarray, heldback_total: int) -> bool:
        """A table the ground uplinked (quantised like the onboard ones) becomes the candidate:
        the next step judges it by the same gate as a diffuser sweep's (bounds, significance,
        the held-back labels that arrive after it) and commits it, then watches it and rolls it
        back like any other. False (nothing changes) while a sweep or a judgement is under way."""
        if self.phase != IDLE or gain_q.shape != self.gain_q[0].shape or offset_q.shape != self.offset_q[0].shape:
            return False
        cand = 1 - self.active
        self.gain_q[cand] = gain_q
        self.offset_q[cand] = offset_q
        self.slot_versions[cand] = -1  # the previous table is overwritten: no rollback to it from now on
        self.watch_remaining = 0
        self.request_reason = REQUEST_REASONS.index("ground_command")
        self.heldback_at_request = heldback_total
        self.phase = VALIDATE
        return True

    def _validate(self, heldback, heldback_total: int) -> str | None:
        cand, act = 1 - self.active, self.active
        self.phase = IDLE
        self.requested = False
        self.last_step_flops = 8.0 * self.columns * self.bands
        ok, changed_share, self.last_band_change = table_change(
            self.gain_q[act], self.offset_q[act], self.gain_q[cand], self.offset_q[cand], GAIN_MIN, GAIN_MAX,
            4.0 * self.cfg.min_change, self.cfg.dark_jump, self.band_change)
        self.last_changed_share = changed_share
        self.last_candidate_acc = self.last_active_acc = math.nan
        if not ok:
            return self._refuse(1)
        if self.last_band_change < self.cfg.min_change and changed_share < MIN_CHANGED_SHARE:
            return self._refuse(2)
        n_new = heldback_total - self.heldback_at_request
        if n_new >= MIN_HELDBACK:
            acc_active, acc_cand, used = heldback(act, cand, n_new)
            self.last_active_acc, self.last_candidate_acc = acc_active, acc_cand
            self.last_step_flops += used * 2.0e3
            if used >= MIN_HELDBACK and acc_cand < acc_active - self.cfg.max_heldback_drop:
                return self._refuse(3)
        self.phase = COMMIT
        return None

    def can_roll_back(self) -> bool:
        """The other slot holds a committed table (a diffuser sweep writing into it marks it -1),
        whatever the phase: the ground's rollback command must work during a sweep too."""
        return self.slot_versions[1 - self.active] >= 0

    # -- snapshot -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in STATE_FIELDS}

    def load_state_dict(self, state: dict) -> None:
        for name in STATE_FIELDS:
            setattr(self, name, state[name])


# -- kernels -----------------------------------------------------------------------------
@numba.njit(cache=True)
def calibrate_rows(pixels, columns, n, gain_q, offset_q):  # pragma: no cover - compiled
    """pixels[i] = (pixels[i] - offset[col]) / gain[col], in place (a column outside the table: as is)."""
    n_cols, bands = gain_q.shape
    for i in range(n):
        c = columns[i]
        if c < 0 or c >= n_cols:
            continue
        for k in range(bands):
            pixels[i, k] = (pixels[i, k] - offset_q[c, k] * OFFSET_STEP) / (1.0 + gain_q[c, k] * GAIN_STEP)


@numba.njit(cache=True)
def remap_rows(pixels, columns, n, g_from, o_from, g_to, o_to, out):  # pragma: no cover - compiled
    """Undo one table and apply another: the raw value is exactly recoverable (affine per column)."""
    n_cols, bands = g_from.shape
    for i in range(n):
        c = columns[i]
        for k in range(bands):
            if c < 0 or c >= n_cols:
                out[i, k] = pixels[i, k]
                continue
            raw = pixels[i, k] * (1.0 + g_from[c, k] * GAIN_STEP) + o_from[c, k] * OFFSET_STEP
            out[i, k] = (raw - o_to[c, k] * OFFSET_STEP) / (1.0 + g_to[c, k] * GAIN_STEP)


@numba.njit(cache=True)
def _quantise(value, step):  # pragma: no cover - compiled
    q = round(value / step)
    if q > Q_MAX:
        return Q_MAX
    if q < -Q_MAX:
        return -Q_MAX
    return q


@numba.njit(cache=True)
def dark_update(reading, m, first, dark_q, dark_seen, ema, jump):  # pragma: no cover - compiled
    """Fold m dark readings into their columns' estimates; return how many jumped (replaced)."""
    bands = dark_q.shape[1]
    jumps = 0
    for i in range(m):
        c = first + i
        for k in range(bands):
            r = reading[i, k]
            if not math.isfinite(r):
                continue
            est = dark_q[c, k] * OFFSET_STEP
            if dark_seen[c] == 0 or abs(r - est) > jump:
                if dark_seen[c] != 0:
                    jumps += 1
                est = r
            else:
                est += ema * (r - est)
            dark_q[c, k] = _quantise(est, OFFSET_STEP)
        dark_seen[c] = 1
    return jumps


@numba.njit(cache=True)
def diffuser_candidate(reading, m, first, dark_q, rho, gain_q, offset_q):  # pragma: no cover - compiled
    """Candidate gain = (diffuser reading - dark) / characterised reflectance; offset = dark."""
    bands = dark_q.shape[1]
    for i in range(m):
        c = first + i
        for k in range(bands):
            dark = dark_q[c, k] * OFFSET_STEP
            g = (reading[i, k] - dark) / rho[k]
            if not math.isfinite(g):
                g = 1e9  # out of range: the gate refuses the candidate
            gain_q[c, k] = _quantise(g - 1.0, GAIN_STEP)
            offset_q[c, k] = dark_q[c, k]


@numba.njit(cache=True)
def table_change(g_a, o_a, g_c, o_c, gain_min, gain_max, col_gain_step, offset_step, band_change):  # pragma: no cover
    """(candidate physical?, share of column-bands that moved, largest |band_change|);
    band_change[k] = mean relative gain change of band k."""
    n_cols, bands = g_a.shape
    changed = 0
    ok = True
    for k in range(bands):
        band_change[k] = 0.0
    for c in range(n_cols):
        for k in range(bands):
            ga = 1.0 + g_a[c, k] * GAIN_STEP
            gc = 1.0 + g_c[c, k] * GAIN_STEP
            if not (gain_min <= gc <= gain_max) or abs(g_c[c, k]) >= Q_MAX or abs(o_c[c, k]) >= Q_MAX:
                ok = False
            rel = gc / ga - 1.0
            band_change[k] += rel
            if abs(rel) > col_gain_step or abs((o_c[c, k] - o_a[c, k]) * OFFSET_STEP) > offset_step:
                changed += 1
    biggest = 0.0
    for k in range(bands):
        band_change[k] /= n_cols
        biggest = max(biggest, abs(band_change[k]))
    return ok, changed / (n_cols * bands), biggest


@numba.njit(cache=True)
def count_above(dark_q, threshold_q):  # pragma: no cover - compiled
    n = 0
    for c in range(dark_q.shape[0]):
        for k in range(dark_q.shape[1]):
            if dark_q[c, k] > threshold_q:
                n += 1
    return n
