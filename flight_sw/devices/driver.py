"""The analog optimizer driver: solve(Q, B) -> (X, report), fault tolerant, never wrong.

What it guarantees: an X with `report.ok` has relative residual
||Q X - B||_F / ||B||_F <= `residual_tolerance`, computed here in float64 on
the true Q and B (the *gate*). Nothing the device says is trusted: outputs
pass the gate or are not used. When the analog path cannot deliver (device
fault, non-convergence, budget), the digital fallback (`DigitalSolver`)
solves the same problem, and the report says which path produced X.

One solve on the analog path:

1. program the normalised matrix Q/max|Q| (skipped if the same Q is still
   programmed, its checksum unchanged and its drift gain within threshold);
2. up to `max_rounds` analog rounds of mixed-precision refinement: the device
   settles on the normalised residual R/max|R| (per column), the digital side
   takes its output as a search direction, conjugates it against the previous
   one and steps with an exact line search (flexible CG, Notay 2000). Each
   round costs one digital mat-mat product Q·D (2 n^2 m flops); with a device
   whose relative error is e per settle the residual shrinks by about e per
   round (Le Gallo et al. 2018; Zuo et al. 2025: FP32 level in ~3 rounds). The
   exact line search makes every step decrease the energy E(X), so even a bad
   device output cannot make X worse in the Q-norm;
3. the final X is re-verified from scratch (R = B - Q X) before acceptance.

Faults on a round (timeout, rejected frame, error status, checksum change of
the programmed codes = SEU, reset flag = brown-out, non-finite output, a round
that does not reduce the residual) are counted and retried with exponential
backoff booked in modelled time (a sleep callable may be injected for real
benches; flight code never sleeps on its own). Progress made before a fault
is kept: X and R stay valid, only the conjugation restarts.

Health (FSFW-style fault counting): OK -> DEGRADED after `degrade_after`
consecutive failed analog solves or a failed self-test; DEGRADED -> FAILED
after `fail_after`; FAILED uses the fallback only and runs the self-test (a
canary problem with a known answer) every `selftest_period_solves` solves;
a passed self-test lifts FAILED -> DEGRADED -> OK, and `recover_after`
clean analog solves lift DEGRADED -> OK. A non-convergence with a passing
self-test is the problem's fault (conditioning), not the device's: after
`skip_after_nonconverged` of them the analog path is skipped for 2, 4, 8 ...
up to `skip_solves` solves (the budget rule) without touching health.

Calibration (once per `calibration_period_s`, modelled or mission time): read
the device's reference cells against their nominal conductance; the gain g
and the reference age give the drift exponent nu_hat (g = (t/t0)^-nu), from
which the gain of any programmed matrix of known age is corrected digitally;
when the reference gain has moved past `calibration_gain_threshold` the
reference is reprogrammed, and a cached matrix whose gain moved past it is
reprogrammed before use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numba
import numpy as np

from flight_sw.devices import protocol as p
from flight_sw.devices.optimizer import (
    PATH_ANALOG,
    PATH_DIGITAL,
    DigitalSolver,
    SolveReport,
    _rel_residual,
)

HEALTH_OK = 0
HEALTH_DEGRADED = 1
HEALTH_FAILED = 2
HEALTH_NAMES = ("OK", "DEGRADED", "FAILED")

# Why a solve used the fallback (report.fallback_reason, stats.fallback_by_reason).
FB_NONE = 0
FB_FAILED = 1  # health FAILED
FB_DEVICE = 2  # analog attempt ended on device faults after retries
FB_NONCONVERGED = 3  # analog rounds did not reach the tolerance
FB_BUDGET = 4  # budget rule: forced digital, time budget, skip after non-convergence
FB_INVALID = 5  # problem not representable on the device (size, non-finite, zero matrix)
FB_ENERGY = 6  # energy rule: the analog path measured dearer than a Cholesky for this problem shape
FALLBACK_REASONS = ("none", "failed", "device", "nonconverged", "budget", "invalid", "energy")
#: Problem shapes (n, m) whose analog-path energy the energy rule remembers (fixed table).
ENERGY_SHAPES = 4
#: Weight of a new analog solve in a shape's energy average.
ENERGY_EMA = 0.2

# Outcome of one device round (internal).
_R_OK, _R_FAULT, _R_REPROGRAM, _R_RANGE = 0, 1, 2, 3


@dataclass
class DriverConfig:
    """Driver parameters (the flight config's `device.driver_*` keys; see schema.DeviceConfig)."""

    residual_tolerance: float = 1e-6
    max_rounds: int = 6
    max_retries: int = 3
    backoff_base_s: float = 0.01
    backoff_factor: float = 2.0
    reply_timeout_s: float = 0.5
    settle_timeout_s: float = 0.01
    max_polls: int = 64
    initial_out_range: float = 8.0
    stall_ratio: float = 0.7
    degrade_after: int = 3
    fail_after: int = 6
    recover_after: int = 3
    selftest_period_solves: int = 20
    canary_raw_tolerance: float = 0.1
    calibration_period_s: float = 5700.0
    calibration_gain_threshold: float = 0.1
    drift_t0_s: float = 20.0
    skip_after_nonconverged: int = 2
    skip_solves: int = 20
    solve_time_budget_s: float = 1.0
    energy_per_flop_j: float = 1e-9
    #: Energy rule: send a problem shape to the digital solver while the analog path's measured
    #: energy on it exceeds a Cholesky's; one analog probe every `energy_probe_solves` keeps the
    #: measurement current. Off: every problem tries the device.
    energy_aware: bool = False
    energy_probe_solves: int = 50


@dataclass
class DriverStats:
    """Counters for telemetry (plain ints/floats; all monotonic except health/last_*)."""

    solves: int = 0
    analog_accepted: int = 0  # X from the analog path
    analog_first_try: int = 0  # ... with no retry at all (refinement only)
    analog_after_retry: int = 0  # ... after at least one retry
    fallbacks: int = 0  # X from the digital fallback
    fallback_failed: int = 0
    fallback_device: int = 0
    fallback_nonconverged: int = 0
    fallback_budget: int = 0
    fallback_invalid: int = 0
    fallback_energy: int = 0  # sent to the digital solver by the energy rule (no fault)
    rejected_by_gate: int = 0  # solves whose final X failed the residual gate (reported not ok)
    rounds_total: int = 0
    retries_total: int = 0
    programs: int = 0
    program_reuses: int = 0
    timeouts: int = 0  # no (complete) reply within reply_timeout_s
    frames_rejected: int = 0  # frames dropped by the decoder (CRC, junk, version...)
    crc_errors: int = 0  # ... of which CRC mismatches
    stale_replies: int = 0  # replies with an old sequence number
    bad_replies: int = 0  # well-framed but malformed payloads / wrong code
    transport_errors: int = 0  # link down (connect/reset); reopened on retry
    settle_timeouts: int = 0
    saturations: int = 0
    range_increases: int = 0
    not_programmed: int = 0
    device_resets: int = 0  # FLAG_RESET seen (brown-out / reboot)
    seu_detected: int = 0  # programmed-code checksum changed between PROGRAM and SOLVE
    verify_failures: int = 0  # PROGRAM reported cells missing their target (stuck cells)
    stuck_cells_reported: int = 0
    bad_outputs: int = 0  # non-finite outputs or a useless search direction
    stalled_rounds: int = 0  # a round that did not reduce the residual enough
    nonconverged: int = 0
    device_errors: int = 0  # error statuses not counted above
    selftests: int = 0
    selftest_failures: int = 0
    calibrations: int = 0
    reference_refreshes: int = 0
    health: int = HEALTH_OK
    health_changes: int = 0
    skips_remaining: int = 0
    last_gain: float = 1.0
    last_nu_hat: float = 0.0
    last_rounds: int = 0
    last_rel_residual: float = float("nan")
    last_raw_rel_residual: float = float("nan")
    last_canary_error: float = float("nan")
    energy_analog_path_j: float = 0.0  # energy of solves served by the analog path
    energy_fallback_path_j: float = 0.0  # energy of solves served by the fallback (incl. wasted analog)
    energy_device_j: float = 0.0  # device-reported energy, all commands
    energy_wasted_j: float = 0.0  # analog energy spent on solves that fell back
    device_time_s: float = 0.0  # modelled device + timeout + backoff time, all solves

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _Programmed:
    """What the driver believes is programmed on the device."""

    valid: bool = False
    n: int = 0
    scale: float = 0.0
    crc: int = 0
    t_prog_s: float = 0.0
    q: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    is_canary: bool = False


class DeviceFault(Exception):
    """Internal: a round failed for a device/link reason (never escapes solve()).

    `soft` faults (settle timeout, persistent saturation) can be the problem's
    doing (slow modes, huge solutions) as much as the device's: the self-test
    decides which, as for a non-convergence.
    """

    def __init__(self, kind: str, soft: bool = False):
        super().__init__(kind)
        self.kind = kind
        self.soft = soft


@numba.njit(cache=True)
def _fcg_update(x, r, d, qd, pp, qpp, have_prev, alpha_out):  # pragma: no cover - compiled
    """One flexible-CG step per column, in place.

    d: new direction (device output), qd = Q d. If have_prev, d is made
    Q-conjugate to the previous direction pp (qpp = Q pp). Then x += a d,
    r -= a Q d with the exact line search a = (r.d)/(d.Qd). pp/qpp receive the
    used direction. alpha_out[c] = a, or nan if the column's direction was useless.
    """
    n, m = d.shape
    for c in range(m):
        if have_prev:
            num = 0.0
            den = 0.0
            for i in range(n):
                num += qd[i, c] * pp[i, c]
                den += pp[i, c] * qpp[i, c]
            if den > 0.0:
                beta = num / den
                for i in range(n):
                    d[i, c] -= beta * pp[i, c]
                    qd[i, c] -= beta * qpp[i, c]
        rd = 0.0
        dqd = 0.0
        for i in range(n):
            rd += r[i, c] * d[i, c]
            dqd += d[i, c] * qd[i, c]
        if not (dqd > 0.0) or not np.isfinite(rd) or not np.isfinite(dqd):
            alpha_out[c] = np.nan
            for i in range(n):
                pp[i, c] = 0.0
                qpp[i, c] = 0.0
            continue
        a = rd / dqd
        alpha_out[c] = a
        for i in range(n):
            x[i, c] += a * d[i, c]
            r[i, c] -= a * qd[i, c]
            pp[i, c] = d[i, c]
            qpp[i, c] = qd[i, c]


def _canary_problem(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed SPD matrix with a known answer (no inverse needed: b = Q x*).

    Q = I + 0.45 (S + S^T)/2 scaled so it stays diagonally dominant-ish, where S
    is a deterministic +-1 band pattern; x* a deterministic smooth vector; 2 RHS.
    """
    i = np.arange(n)
    q = np.eye(n)
    for k, w in ((1, -0.3), (2, 0.15), (3, -0.05)):
        idx = i[: n - k]
        q[idx, idx + k] = w
        q[idx + k, idx] = w
    x = np.stack([np.cos(0.7 * i + 0.3), np.sin(0.31 * i) + 0.5], axis=1)
    return q, x, q @ x


class AnalogDriver:
    """solve(Q, B) -> (X, SolveReport) on the analog device, verified, with fallback.

    `transport`: any `flight_sw.devices.transport.Transport`. `clock`: optional
    callable returning mission time [s] (calibration schedule; TIME sync to the
    device). `sleep`: optional callable(seconds) used for backoff on real
    benches; flight code passes none and backoff is only booked in modelled time.
    All buffers are allocated here for the largest problem (n, m).
    """

    def __init__(
        self,
        n: int,
        m: int,
        transport,
        cfg: DriverConfig | None = None,
        fallback: DigitalSolver | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        self.cfg = cfg or DriverConfig()
        self.n = n
        self.m = m
        self.transport = transport
        self.clock = clock
        self.sleep = sleep
        self.fallback = fallback or DigitalSolver(n, m, self.cfg.energy_per_flop_j, self.cfg.residual_tolerance)
        self.stats = DriverStats()
        self.report = SolveReport()
        self.decoder = p.FrameDecoder()
        self._seq = 0
        self._prog = _Programmed(q=np.zeros((n, n)))
        self._consecutive_failures = 0
        self._clean_streak = 0
        self._nonconv_streak = 0
        self._skip_len = 2  # doubles per consecutive skip decision, up to skip_solves
        self._solves_since_selftest = 0
        self._last_calibration_s = -math.inf
        self._nu_hat = 0.0
        self._device_time_s = 0.0
        self._last_time_sync_s = -math.inf
        self._out_range = np.full(m, self.cfg.initial_out_range)  # per-column ADC full scale
        self._first_range = np.full(m, self.cfg.initial_out_range)  # learned for first rounds
        self.force_digital = False  # set by the host (power manager / FDIR) to keep the device off
        self.x = np.zeros((n, m))
        self._r = np.zeros(n * m)  # flat, like _qd: the residual is written by np.dot
        self._d = np.zeros((n, m))
        self._qd = np.zeros(n * m)  # flat: np.dot writes only into a C-contiguous (n', m') view of it
        self._pp = np.zeros((n, m))
        self._qpp = np.zeros((n, m))
        self._alpha = np.zeros(m)
        self._rscale = np.zeros(m)
        self._canary = _canary_problem(n)
        # per-solve bookkeeping
        self._solve_flops = 0.0
        self._solve_dev_energy = 0.0
        self._solve_time = 0.0
        self._solve_retries = 0
        self._hard_faults = 0  # link/device faults this solve
        self._stalls = 0  # rounds that did not reduce the residual this solve
        self._soft_faults = 0  # settle timeouts / persistent saturation this solve
        self._verified_res = -1.0  # true residual already computed for the current X
        self._prog_suspect = False
        self._reranges = 0  # ADC re-rangings in the current round
        # Energy rule: per problem shape, n, m, the analog path's average energy [J] (nan: not
        # measured yet) and the solves sent digital since its last analog probe.
        self._energy_table = np.zeros((ENERGY_SHAPES, 4))
        self._energy_table[:, 2] = np.nan

    # -- public -------------------------------------------------------------------
    @property
    def health(self) -> int:
        return self.stats.health

    @property
    def solves(self) -> int:  # the name app.py reads from DigitalSolver
        return self.stats.solves

    @property
    def energy_total_j(self) -> float:
        """Energy of every solve, both paths (the name app.py reads from DigitalSolver)."""
        return self.stats.energy_analog_path_j + self.stats.energy_fallback_path_j

    # -- snapshot ---------------------------------------------------------------------
    #: Scalars that carry across a flight-computer reboot (with the counters and ranges).
    _STATE_SCALARS = (
        "_seq", "_consecutive_failures", "_clean_streak", "_nonconv_streak", "_skip_len",
        "_solves_since_selftest", "_last_calibration_s", "_nu_hat", "_device_time_s", "_last_time_sync_s",
        "force_digital",
    )

    def state_dict(self) -> dict:
        """What the driver knows and has counted, for the host's snapshot (JSON-able).

        The knowledge of the programmed matrix is kept: every SOLVE reply is checked against
        it (codes checksum, RESET flag), so a device that lost its state meanwhile is noticed.
        """
        pr = self._prog
        return {
            "scalars": {name: getattr(self, name) for name in self._STATE_SCALARS},
            "stats": self.stats.as_dict(),
            "out_range": self._out_range.tolist(),
            "first_range": self._first_range.tolist(),
            "programmed": {"valid": pr.valid, "n": pr.n, "scale": pr.scale, "crc": pr.crc, "t_prog_s": pr.t_prog_s,
                           "is_canary": pr.is_canary, "q": pr.q[: pr.n, : pr.n].tolist()},
            "fallback": self.fallback.state_dict(),
            "energy_table": self._energy_table.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name in self._STATE_SCALARS:
            setattr(self, name, state["scalars"][name])
        for name, value in state["stats"].items():
            setattr(self.stats, name, value)
        self._out_range[:] = state["out_range"]
        self._first_range[:] = state["first_range"]
        prog = state["programmed"]
        pr = self._prog
        pr.valid, pr.n, pr.scale, pr.crc = prog["valid"], prog["n"], prog["scale"], prog["crc"]
        pr.t_prog_s, pr.is_canary = prog["t_prog_s"], prog["is_canary"]
        if pr.n:
            pr.q[: pr.n, : pr.n] = np.asarray(prog["q"], dtype=np.float64)
        self.fallback.load_state_dict(state["fallback"])
        if "energy_table" in state:
            self._energy_table[...] = np.asarray(state["energy_table"], dtype=np.float64)
        self.decoder = p.FrameDecoder()  # bytes in flight at the reboot are gone

    def solve(self, q: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, SolveReport]:
        """Solve Q X = B; `report.ok` False means X must not be used. Never raises on device faults."""
        st = self.stats
        st.solves += 1
        rep = self.report
        rep.path = PATH_ANALOG
        rep.ok = False
        rep.rounds = 0
        rep.retries = 0
        rep.fallback = False
        rep.fallback_reason = FB_NONE
        rep.raw_rel_residual = float("nan")
        self._solve_flops = 0.0
        self._solve_dev_energy = 0.0
        self._solve_time = 0.0
        self._solve_retries = 0
        self._hard_faults = 0
        self._stalls = 0
        self._soft_faults = 0
        self._verified_res = -1.0
        q = np.asarray(q, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if b.ndim != 2 or q.ndim != 2 or q.shape != (b.shape[0], b.shape[0]):
            return self._invalid(q, b)
        try:
            reason = self._choose_path(q, b)
            if reason == FB_NONE:
                reason = self._analog_solve(q, b)
        except Exception:  # noqa: BLE001 - last line of defence: a driver bug must not crash the flight software
            st.device_errors += 1
            self._prog.valid = False
            reason = FB_DEVICE
        n, m = b.shape
        if reason == FB_NONE:
            x = self.x[:n, :m]
            if self._gate(q, x, b):
                st.analog_accepted += 1
                if self._solve_retries:
                    st.analog_after_retry += 1
                else:
                    st.analog_first_try += 1
                self._after_analog_success()
                st.energy_analog_path_j += rep.energy_j
                self._note_analog_energy(n, m, rep.energy_j)
                return x, rep
            st.rejected_by_gate += 1  # cannot happen unless memory is corrupted; fall back
            reason = FB_DEVICE
        return self._run_fallback(q, b, reason)

    def self_test(self) -> bool:
        """Run the canary problem now; updates health. True when it passed."""
        return self._self_test()

    def calibrate(self) -> bool:
        """Read the reference cells now (normally automatic once per calibration period)."""
        try:
            self._calibrate()
            return True
        except Exception:  # noqa: BLE001 - counted; never escapes to the caller
            return False

    # -- path choice and budget ------------------------------------------------------
    def _choose_path(self, q: np.ndarray, b: np.ndarray) -> int:
        st = self.stats
        n, m = b.shape
        if n > self.n or m > self.m or n < 1 or m < 1:
            return FB_INVALID
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(b))):
            return FB_INVALID
        if self.force_digital:
            return FB_BUDGET
        if st.health != HEALTH_OK:
            self._solves_since_selftest += 1
            if self._solves_since_selftest >= self.cfg.selftest_period_solves:
                self._self_test()
            if st.health == HEALTH_FAILED:
                return FB_FAILED
        if st.skips_remaining > 0:
            st.skips_remaining -= 1
            return FB_BUDGET
        if self.cfg.energy_aware and self._digital_is_cheaper(n, m):
            return FB_ENERGY
        return FB_NONE

    def digital_energy_j(self, n: int, m: int) -> float:
        """Modelled energy of the digital solver on an (n, m) problem: factor, substitutions, check."""
        return (n**3 / 3.0 + 4.0 * n * n * m) * self.cfg.energy_per_flop_j

    def _energy_row(self, n: int, m: int) -> int:
        """The energy table's row for shape (n, m): found, else a free one, else the last (reused)."""
        t = self._energy_table
        for i in range(ENERGY_SHAPES):
            if t[i, 0] == n and t[i, 1] == m:
                return i
        for i in range(ENERGY_SHAPES):
            if t[i, 0] == 0:
                t[i, :] = (n, m, np.nan, 0)
                return i
        t[-1, :] = (n, m, np.nan, 0)
        return ENERGY_SHAPES - 1

    def _digital_is_cheaper(self, n: int, m: int) -> bool:
        """The energy rule: True (solve digitally) while this shape's measured analog energy exceeds
        a Cholesky's, except every `energy_probe_solves`-th time (a probe keeps the measurement)."""
        row = self._energy_table[self._energy_row(n, m)]
        if not row[2] > self.digital_energy_j(n, m):
            return False  # not measured yet (nan), or the device is the cheaper path
        if row[3] + 1 >= self.cfg.energy_probe_solves:
            row[3] = 0
            return False  # the probe
        row[3] += 1
        return True

    def _note_analog_energy(self, n: int, m: int, energy_j: float) -> None:
        row = self._energy_table[self._energy_row(n, m)]
        row[2] = energy_j if not row[2] == row[2] else (1 - ENERGY_EMA) * row[2] + ENERGY_EMA * energy_j

    # -- the analog path -----------------------------------------------------------
    def _analog_solve(self, q: np.ndarray, b: np.ndarray) -> int:
        cfg = self.cfg
        st = self.stats
        n, m = b.shape
        bnorm = float(np.linalg.norm(b))
        x = self.x[:n, :m]
        x[...] = 0.0
        if bnorm == 0.0:
            return FB_NONE  # X = 0 is exact
        scale = float(np.max(np.abs(q)))
        if not scale > 0.0:
            return FB_INVALID
        try:
            self._maybe_calibrate()
        except DeviceFault:
            self._hard_faults += 1  # counted; calibration is retried next solve
        r = self._r[: n * m].reshape(n, m)
        r[...] = b
        self._reranges = 0
        res = 1.0
        rounds = 0
        have_prev = False
        exhausted = False
        while res > cfg.residual_tolerance:
            if self._solve_time > cfg.solve_time_budget_s:
                break
            if rounds >= cfg.max_rounds:
                exhausted = True
                break
            failed = False
            try:
                self._ensure_programmed(q, scale, force=self._prog_suspect)
                outcome, new_res = self._round(q, r, x, scale, bnorm, have_prev, first=rounds == 0)
            except DeviceFault as fault:
                if fault.soft:
                    self._soft_faults += 1
                else:
                    self._hard_faults += 1
                failed = True
                outcome, new_res = _R_FAULT, res
            if outcome == _R_RANGE:
                continue  # re-ranged the ADC; bounded by the range cap
            self._reranges = 0
            if outcome == _R_OK:
                rounds += 1
                st.rounds_total += 1
                have_prev = True
                if new_res > cfg.stall_ratio * res and new_res > cfg.residual_tolerance:
                    st.stalled_rounds += 1
                    self._stalls += 1
                    self._prog_suspect = True  # next attempt reprograms
                    failed = True
                res = new_res
                if res <= cfg.residual_tolerance:
                    res = self._true_residual(q, b, x, r, bnorm)  # never trust the recursion alone
                    self._verified_res = res
                    have_prev = False
            if failed:
                have_prev = False
                if self._solve_retries >= cfg.max_retries:
                    break
                self._retry_backoff()
        self.report.rounds = rounds
        st.last_rounds = rounds
        if res <= cfg.residual_tolerance:
            return FB_NONE
        if self._hard_faults:
            self._record_failure(device=True)
            return FB_DEVICE
        if exhausted or self._stalls or self._soft_faults:
            st.nonconverged += 1
            self._on_nonconverged()
            return FB_NONCONVERGED
        return FB_BUDGET  # time budget ran out without faults

    def _round(self, q, r, x, scale, bnorm, have_prev, first):
        """One device settle on the normalised residual, then the FCG update."""
        st = self.stats
        n, m = r.shape
        rs = self._rscale[:m]
        np.max(np.abs(r), axis=0, out=rs)
        rs[rs == 0.0] = 1.0
        ranges = self._out_range[:m]
        if first:  # a first round sees B itself: start from what past first rounds needed
            ranges[...] = self._first_range[:m]
        reply = self._transact(p.CMD_SOLVE, p.pack_solve(r / rs, ranges, self.cfg.settle_timeout_s))
        sr = self._decode(p.unpack_solve_response, reply)
        if sr.n != n or sr.m != m:
            st.bad_replies += 1
            raise DeviceFault("bad_reply")
        self._book_device(sr.time_s, sr.energy_j, sr.device_time_s)
        status = reply.status
        # count every symptom first (one reply can carry several), then act on the worst
        if status == p.STATUS_SETTLE_TIMEOUT:
            st.settle_timeouts += 1
        elif status == p.STATUS_SATURATED:
            st.saturations += 1
        if status == p.STATUS_NOT_PROGRAMMED:
            st.not_programmed += 1
            self._prog.valid = False
            raise DeviceFault("not_programmed")
        if sr.codes_crc != self._prog.crc:
            st.seu_detected += 1
            self._prog.valid = False
            raise DeviceFault("seu")
        if status == p.STATUS_SATURATED:
            # A clipped output reads a little under the rail once the ADC noise is added: columns
            # within _RAIL_BAND of full scale count as clipped (all of them if none is).
            at_rail = np.max(np.abs(sr.y), axis=0) >= ranges * (1.0 - _RAIL_BAND)
            if not at_rail.any():
                at_rail[:] = True
            if np.all(ranges[at_rail] < _RANGE_MAX):
                # A first overflow is usually a near miss of the 1.5x headroom: doubling keeps the
                # ADC's resolution (x8 at once cost a whole refinement round in precision); more
                # in the same round mean a real excursion, so widen fast.
                ranges[at_rail] *= _RANGE_STEP_SMALL if self._reranges < 2 else _RANGE_STEP_LARGE
                self._reranges += 1
                if first:
                    self._first_range[:m] = ranges
                st.range_increases += 1
                return _R_RANGE, 0.0
            ranges[:] = self.cfg.initial_out_range
            self._first_range[:m] = self.cfg.initial_out_range
            raise DeviceFault("saturated", soft=True)
        if status == p.STATUS_SETTLE_TIMEOUT:
            raise DeviceFault("settle_timeout", soft=True)
        if status != p.STATUS_OK:
            st.device_errors += 1
            raise DeviceFault(f"status_{status}")
        y = sr.y
        if not np.all(np.isfinite(y)):
            st.bad_outputs += 1
            raise DeviceFault("bad_output")
        # auto-range: each column's ADC full scale 1.5x its largest output for the next round
        ymax = np.max(np.abs(y), axis=0)
        np.clip(1.5 * ymax, 1e-3, _RANGE_MAX, out=ranges)
        if first:
            self._first_range[:m] = ranges
        d = self._d[:n, :m]
        np.multiply(y, rs / scale, out=d)
        gain = self._matrix_gain()
        if gain != 1.0:
            d *= gain
        qd = self._qd[: n * m].reshape(n, m)
        np.dot(q, d, out=qd)
        self._solve_flops += 2.0 * n * n * m
        if first:
            raw = float(np.linalg.norm(r - qd) / bnorm)
            self.report.raw_rel_residual = raw
            st.last_raw_rel_residual = raw
        alpha = self._alpha[:m]
        _fcg_update(x, r, d, qd, self._pp[:n, :m], self._qpp[:n, :m], have_prev, alpha)
        self._verified_res = -1.0  # X moved: any earlier verification is void
        self._solve_flops += 10.0 * n * m
        useless = np.isnan(alpha)
        if np.any(useless & (np.max(np.abs(r), axis=0) > 0.0)):
            st.bad_outputs += 1
            raise DeviceFault("bad_output")
        return _R_OK, float(np.linalg.norm(r) / bnorm)

    def _true_residual(self, q, b, x, r, bnorm) -> float:
        np.dot(q, x, out=r)
        np.subtract(b, r, out=r)
        n, m = b.shape
        self._solve_flops += 2.0 * n * n * m
        return float(np.linalg.norm(r) / bnorm)

    # -- programming -----------------------------------------------------------------
    def _ensure_programmed(self, q: np.ndarray, scale: float, force: bool = False) -> None:
        n = q.shape[0]
        pr = self._prog
        if (
            not force
            and pr.valid
            and not pr.is_canary
            and pr.n == n
            and pr.scale == scale
            and abs(1.0 - self._matrix_gain()) <= self.cfg.calibration_gain_threshold
            and np.array_equal(pr.q[:n, :n], q)
        ):
            self.stats.program_reuses += 1
            return
        self._program(q / scale, n)
        pr.scale = scale
        pr.q[:n, :n] = q
        pr.is_canary = False
        self._prog_suspect = False

    def _program(self, qn: np.ndarray, n: int) -> None:
        st = self.stats
        pr = self._prog
        pr.valid = False
        rows = p.program_rows_per_frame(n)
        result = None
        status = p.STATUS_OK
        for row0 in range(0, n, rows):
            k = min(rows, n - row0)
            reply = self._transact(p.CMD_PROGRAM, p.pack_program(n, row0, qn[row0 : row0 + k]))
            result = self._decode(p.unpack_program_response, reply)
            self._book_device(result.time_s, result.energy_j, result.device_time_s)
            status = reply.status
            if row0 + k < n and status != p.STATUS_ACK_PARTIAL:
                st.bad_replies += 1
                raise DeviceFault("bad_reply")
        assert result is not None
        if status == p.STATUS_VERIFY_FAIL:
            st.verify_failures += 1
            st.stuck_cells_reported += result.failed_cells
        elif status != p.STATUS_OK:
            st.device_errors += 1
            raise DeviceFault(f"status_{status}")
        if result.rows_received != n or result.n != n:
            st.bad_replies += 1
            raise DeviceFault("bad_reply")
        st.programs += 1
        pr.valid = True
        pr.n = n
        pr.crc = result.codes_crc
        pr.t_prog_s = result.device_time_s

    def _matrix_gain(self) -> float:
        """Estimated drift gain g of the programmed matrix, (age/t0)^-nu_hat (1 below t0).

        The device holds g A, so it answers (g A)^-1 u = A^-1 u / g: multiplying its output
        by g is the digital gain correction.
        """
        if not self._prog.valid or self._nu_hat <= 0.0:
            return 1.0
        age = self._device_time_s - self._prog.t_prog_s
        t0 = self.cfg.drift_t0_s
        if age <= t0:
            return 1.0
        return float((age / t0) ** -self._nu_hat)

    # -- calibration and self-test --------------------------------------------------------
    def _now(self) -> float:
        return float(self.clock()) if self.clock is not None else self._device_time_s

    def _maybe_calibrate(self) -> None:
        if self._now() - self._last_calibration_s >= self.cfg.calibration_period_s:
            self._calibrate()

    def _calibrate(self) -> None:
        st = self.stats
        if self.clock is not None:
            t = float(self.clock())
            if t > self._last_time_sync_s:
                self._cost_reply(self._transact(p.CMD_TIME, p.pack_time(max(t, 0.0))))
                self._last_time_sync_s = t
        reply = self._transact(p.CMD_CALIBRATE, b"")
        cal = self._decode(p.unpack_calibrate_response, reply)
        self._book_device(cal.time_s, cal.energy_j, cal.device_time_s)
        self._last_calibration_s = self._now()
        st.calibrations += 1
        st.last_gain = cal.gain
        t0 = self.cfg.drift_t0_s
        if cal.reference_age_s > 2.0 * t0 and 0.0 < cal.gain < 1.0:
            self._nu_hat = min(-math.log(cal.gain) / math.log(cal.reference_age_s / t0), 1.0)
            st.last_nu_hat = self._nu_hat
        if abs(1.0 - cal.gain) > self.cfg.calibration_gain_threshold:
            self._cost_reply(self._transact(p.CMD_REFRESH_REFERENCE, b""))
            st.reference_refreshes += 1

    def _decode(self, unpack, reply: p.Frame):
        """`unpack(reply.payload)`; a malformed payload is a counted bad reply (a hard fault)."""
        try:
            return unpack(reply.payload)
        except p.ProtocolError as exc:
            self.stats.bad_replies += 1
            raise DeviceFault("bad_reply") from exc

    def _cost_reply(self, reply: p.Frame) -> None:
        c = self._decode(p.unpack_cost_response, reply)
        self._book_device(c.time_s, c.energy_j, c.device_time_s)

    def _self_test(self) -> bool:
        """Canary: program a known SPD problem; judge the raw residual and the refinement.

        Passes when the first device answer's relative residual is within
        `canary_raw_tolerance` and refinement reaches the tolerance within
        `max_rounds` without a stalled round.
        """
        st = self.stats
        st.selftests += 1
        self._solves_since_selftest = 0
        qc, xc, bc = self._canary
        n, m = bc.shape
        passed = False
        stalled = False
        err = float("nan")
        saved_range = self._out_range.copy()
        ranges = np.full(m, self.cfg.initial_out_range)
        try:
            scale = float(np.max(np.abs(qc)))
            self._program(qc / scale, n)
            self._prog.is_canary = True
            x = np.zeros((n, m))
            r = bc.copy()
            pp = np.zeros((n, m))
            qpp = np.zeros((n, m))
            alpha = np.zeros(m)
            bnorm = float(np.linalg.norm(bc))
            res = 1.0
            k = 0
            for _ in range(self.cfg.max_rounds + 6):  # + a few re-ranging steps
                rs = np.max(np.abs(r), axis=0)
                rs[rs == 0] = 1.0
                if k == 0:  # the answer is known: range the ADC for it, as a calibrated test would
                    ranges = np.clip(1.5 * np.max(np.abs(xc), axis=0) * scale / rs, 1e-3, _RANGE_MAX)
                reply = self._transact(p.CMD_SOLVE, p.pack_solve(r / rs, ranges, self.cfg.settle_timeout_s))
                sr = p.unpack_solve_response(reply.payload)
                self._book_device(sr.time_s, sr.energy_j, sr.device_time_s)
                if reply.status == p.STATUS_SATURATED:
                    st.saturations += 1
                elif reply.status == p.STATUS_SETTLE_TIMEOUT:
                    st.settle_timeouts += 1
                if sr.codes_crc != self._prog.crc:
                    st.seu_detected += 1
                if reply.status == p.STATUS_SATURATED and np.all(ranges < _RANGE_MAX):
                    ranges *= 8.0
                    continue
                if reply.status != p.STATUS_OK or sr.codes_crc != self._prog.crc or not np.all(np.isfinite(sr.y)):
                    break
                ranges = np.clip(1.5 * np.max(np.abs(sr.y), axis=0), 1e-3, _RANGE_MAX)
                d = sr.y * rs / scale
                qd = qc @ d
                if k == 0:  # raw residual of the first answer: the device's precision as specified
                    err = float(np.linalg.norm(r - qd) / bnorm)
                _fcg_update(x, r, d, qd, pp, qpp, k > 0, alpha)
                k += 1
                new_res = float(np.linalg.norm(bc - qc @ x) / bnorm)
                if new_res > self.cfg.stall_ratio * res and new_res > self.cfg.residual_tolerance:
                    st.stalled_rounds += 1  # a bad canary round is a fault too, even if it recovers
                    stalled = True
                res = new_res
                if res <= self.cfg.residual_tolerance or k >= self.cfg.max_rounds:
                    break
            passed = err <= self.cfg.canary_raw_tolerance and res <= self.cfg.residual_tolerance and not stalled
        except Exception:  # noqa: BLE001 - a self-test that cannot complete has failed
            passed = False
        self._out_range = saved_range
        self._prog.valid = False  # the canary replaced the matrix
        st.last_canary_error = err
        if passed:
            self._consecutive_failures = 0
            if st.health == HEALTH_FAILED:
                self._set_health(HEALTH_DEGRADED)
            elif st.health == HEALTH_DEGRADED:
                self._set_health(HEALTH_OK)
        else:
            st.selftest_failures += 1
            self._set_health(HEALTH_FAILED if st.health != HEALTH_OK else HEALTH_DEGRADED)
        return passed

    # -- health ----------------------------------------------------------------------
    def _set_health(self, h: int) -> None:
        if h != self.stats.health:
            self.stats.health = h
            self.stats.health_changes += 1
            self._solves_since_selftest = 0
            self._clean_streak = 0

    def _record_failure(self, device: bool) -> None:
        self._clean_streak = 0
        if not device:
            return
        self._consecutive_failures += 1
        cfg = self.cfg
        if self._consecutive_failures >= cfg.fail_after:
            self._set_health(HEALTH_FAILED)
        elif self._consecutive_failures >= cfg.degrade_after and self.stats.health == HEALTH_OK:
            self._set_health(HEALTH_DEGRADED)

    def _after_analog_success(self) -> None:
        self._consecutive_failures = 0
        self._nonconv_streak = 0
        self._skip_len = 2
        if self._solve_retries == 0:
            self._clean_streak += 1
        if self.stats.health == HEALTH_DEGRADED and self._clean_streak >= self.cfg.recover_after:
            self._set_health(HEALTH_OK)

    def _on_nonconverged(self) -> None:
        """Device or problem? The canary decides; a problem issue only skips the analog path."""
        self._nonconv_streak += 1
        if self._self_test():
            if self._nonconv_streak >= self.cfg.skip_after_nonconverged:
                # short at first (a transient fault can look like a hard problem), longer if it persists
                self.stats.skips_remaining = min(self._skip_len, self.cfg.skip_solves)
                self._skip_len = min(2 * self._skip_len, max(self.cfg.skip_solves, 1))
                self._nonconv_streak = 0
        else:
            self._record_failure(device=True)

    def _retry_backoff(self) -> None:
        cfg = self.cfg
        delay = cfg.backoff_base_s * cfg.backoff_factor**self._solve_retries
        self._solve_retries += 1
        self.stats.retries_total += 1
        self._solve_time += delay
        if self.sleep is not None:
            self.sleep(delay)

    # -- the link ----------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _transact(self, cmd: int, payload: bytes) -> p.Frame:
        """Send one command and wait (bounded) for its response; DeviceFault otherwise."""
        st = self.stats
        seq = self._next_seq()
        frame = p.encode_frame(cmd, seq, payload)
        try:
            self.transport.send(frame)
        except OSError as exc:
            st.transport_errors += 1
            self._reopen()
            raise DeviceFault("transport") from exc
        want = cmd | p.RESPONSE_BIT
        timeout = self.cfg.reply_timeout_s
        for _ in range(self.cfg.max_polls):
            try:
                chunk = self.transport.recv(timeout)
            except OSError as exc:
                st.transport_errors += 1
                self._reopen()
                raise DeviceFault("transport") from exc
            if not chunk:
                break
            for item in self.decoder.feed(chunk):
                if isinstance(item, p.Rejected):
                    st.frames_rejected += 1
                    if "crc" in item.reason:
                        st.crc_errors += 1
                    continue
                if item.seq != seq or item.code != want:
                    st.stale_replies += 1
                    continue
                if item.flags & p.FLAG_RESET:
                    st.device_resets += 1
                    self._prog.valid = False
                    if cmd == p.CMD_SOLVE:  # the device lost its matrix: no answer to trust
                        raise DeviceFault("reset")
                if item.status in _FATAL_STATUS:
                    st.device_errors += 1
                    raise DeviceFault(f"status_{item.status}")
                return item
        st.timeouts += 1
        self._solve_time += timeout
        self.decoder.reset()
        raise DeviceFault("timeout")

    def _reopen(self) -> None:
        self.decoder.reset()
        try:
            self.transport.reopen()
        except OSError:
            pass

    def _book_device(self, time_s: float, energy_j: float, device_time_s: float) -> None:
        t = float(time_s) if math.isfinite(time_s) and time_s >= 0 else 0.0
        e = float(energy_j) if math.isfinite(energy_j) and energy_j >= 0 else 0.0
        self._solve_time += t
        self._solve_dev_energy += e
        self.stats.energy_device_j += e
        if math.isfinite(device_time_s):
            self._device_time_s = max(self._device_time_s, float(device_time_s))

    # -- finishing -----------------------------------------------------------------------
    def _gate(self, q: np.ndarray, x: np.ndarray, b: np.ndarray) -> bool:
        """The acceptance gate: true relative residual in float64, and the report filled."""
        rep = self.report
        ok = bool(np.all(np.isfinite(x)))
        n, m = b.shape
        if not ok:
            res = float("inf")
        elif self._verified_res >= 0.0:
            res = self._verified_res  # computed from scratch on this very X just before
        else:
            res = float(_rel_residual(q, x, b))
            self._solve_flops += 2.0 * n * n * m
        rep.rel_residual = res
        rep.ok = ok and res <= self.cfg.residual_tolerance
        st = self.stats
        rep.retries = self._solve_retries
        rep.health = st.health
        rep.flops = self._solve_flops
        rep.digital_energy_j = self._solve_flops * self.cfg.energy_per_flop_j
        rep.analog_energy_j = self._solve_dev_energy
        rep.energy_j = rep.digital_energy_j + rep.analog_energy_j
        rep.device_time_s = self._solve_time
        st.device_time_s += self._solve_time
        st.last_rel_residual = res
        return rep.ok

    def _invalid(self, q: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, SolveReport]:
        st = self.stats
        st.fallbacks += 1
        st.fallback_invalid += 1
        rep = self.report
        rep.path = PATH_DIGITAL
        rep.fallback = True
        rep.fallback_reason = FB_INVALID
        rep.rel_residual = float("inf")
        rep.health = st.health
        rep.flops = rep.energy_j = rep.digital_energy_j = rep.analog_energy_j = rep.device_time_s = 0.0
        return np.zeros((0, 0)), rep

    def _run_fallback(self, q: np.ndarray, b: np.ndarray, reason: int) -> tuple[np.ndarray, SolveReport]:
        st = self.stats
        st.fallbacks += 1
        name = FALLBACK_REASONS[reason]
        setattr(st, f"fallback_{name}", getattr(st, f"fallback_{name}") + 1)
        st.energy_wasted_j += self._solve_dev_energy + self._solve_flops * self.cfg.energy_per_flop_j
        n, m = b.shape
        rep = self.report
        rep.path = PATH_DIGITAL
        rep.fallback = True
        rep.fallback_reason = reason
        fits = n <= self.n and m <= self.m
        # The fallback's buffers are sized for (self.n, self.m) and hold any smaller problem.
        solver = self.fallback if fits else DigitalSolver(n, m, self.cfg.energy_per_flop_j, self.cfg.residual_tolerance)
        x = self.x[:n, :m] if fits else np.zeros((n, m))
        try:
            xf, frep = solver.solve(q, b)
            x[...] = xf
            self._verified_res = frep.rel_residual if np.isfinite(frep.rel_residual) else -1.0
            self._solve_flops += frep.flops  # includes its own residual check, reused by the gate
        except Exception:  # noqa: BLE001 - malformed input: report not ok rather than crash
            x[...] = np.nan
        self._gate(q, x, b)
        if not rep.ok:
            st.rejected_by_gate += 1
        st.energy_fallback_path_j += rep.energy_j
        return x, rep


_RANGE_MAX = 1e5
_RANGE_STEP_SMALL = 2.0  # ADC range step for the first two overflows of a round
_RANGE_STEP_LARGE = 8.0  # ... and for any further ones
_RAIL_BAND = 0.02  # 16x the averaged ADC noise of the default device (0.04 FS / sqrt(1024))
_FATAL_STATUS = frozenset(
    (p.STATUS_BAD_VERSION, p.STATUS_BAD_COMMAND, p.STATUS_BAD_PAYLOAD, p.STATUS_TOO_LARGE, p.STATUS_INTERNAL)
)
