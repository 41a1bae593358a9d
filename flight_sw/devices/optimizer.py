"""The optimizer interface every backend implements: solve(Q, B) -> (X, report).

Training asks for the minimiser of E(X) = 1/2 tr(X^T Q X) - tr(B^T X), i.e. Q X = B
with Q symmetric positive definite. Nothing above this interface knows which path
(analog device, refinement, digital fallback) produced X; the report says so for
telemetry and energy accounting. The analog driver of issue 6 implements the same
interface (`flight_sw.devices.driver.AnalogDriver`, built by
`flight_sw.devices.factory.make_optimizer`) and uses the solver below as its fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

PATH_DIGITAL = 0
PATH_ANALOG = 1


@dataclass
class SolveReport:
    """What one solve did. The first five fields are what every backend fills.

    The analog driver (`flight_sw.devices.driver`) also fills the rest: analog
    rounds used, retries, whether (and why) the digital fallback produced X,
    the device health after the solve, the energy split per path, the modelled
    device time (settling, programming, timeouts, backoff) and the raw relative
    residual of the first device answer (no refinement).
    """

    path: int = PATH_DIGITAL
    ok: bool = False
    rel_residual: float = float("nan")
    flops: float = 0.0  # digital floating-point operations on the flight CPU
    energy_j: float = 0.0  # total: digital_energy_j + analog_energy_j
    rounds: int = 0
    retries: int = 0
    fallback: bool = False
    fallback_reason: int = 0  # flight_sw.devices.driver.FALLBACK_REASONS index
    health: int = 0  # flight_sw.devices.driver.HEALTH_* after the solve
    digital_energy_j: float = 0.0
    analog_energy_j: float = 0.0
    device_time_s: float = 0.0
    raw_rel_residual: float = float("nan")


@numba.njit(cache=True)
def cholesky_into(a, out):  # pragma: no cover - compiled
    """Lower Cholesky factor of SPD `a` into the lower triangle of `out` (which may be `a`).

    Reads only the lower triangle of `a`; leaves the upper triangle of `out` as it was.
    Returns False when `a` is not (numerically) positive definite, NaN included.
    """
    n = a.shape[0]
    for i in range(n):
        for j in range(i + 1):
            s = a[i, j]
            for k in range(j):
                s -= out[i, k] * out[j, k]
            if i == j:
                if not s > 0.0:
                    return False
                out[i, i] = np.sqrt(s)
            else:
                out[i, j] = s / out[j, j]
    return True


@numba.njit(cache=True)
def _cholesky_solve_inplace(q, b, work, x):  # pragma: no cover - compiled
    """Cholesky factorisation into `work`, then forward/back substitution into `x`.

    Preallocated buffers only: the tick path allocates nothing. Returns False when
    Q is not positive definite.
    """
    n = q.shape[0]
    if not cholesky_into(q, work):
        return False
    m = b.shape[1]
    for c in range(m):
        for i in range(n):
            s = b[i, c]
            for k in range(i):
                s -= work[i, k] * x[k, c]
            x[i, c] = s / work[i, i]
        for i in range(n - 1, -1, -1):
            s = x[i, c]
            for k in range(i + 1, n):
                s -= work[k, i] * x[k, c]
            x[i, c] = s / work[i, i]
    return True


@numba.njit(cache=True)
def _rel_residual(q, x, b):  # pragma: no cover - compiled
    n, m = b.shape
    num = 0.0
    den = 0.0
    for i in range(n):
        for c in range(m):
            s = -b[i, c]
            for k in range(n):
                s += q[i, k] * x[k, c]
            num += s * s
            den += b[i, c] * b[i, c]
    if den == 0.0:
        return np.sqrt(num)
    return np.sqrt(num / den)


class DigitalSolver:
    """Cholesky on the flight CPU: exact to rounding, energy from a per-flop CPU model."""

    def __init__(self, n: int, m: int, energy_per_flop_j: float, residual_tolerance: float = 1e-8):
        self.work = np.zeros((n, n))
        self.x = np.zeros((n, m))
        self.report = SolveReport()
        self.energy_per_flop_j = energy_per_flop_j
        self.residual_tolerance = residual_tolerance
        self.solves = 0
        self.energy_total_j = 0.0

    def solve(self, q: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, SolveReport]:
        """Solve Q X = B into a preallocated X; `report.ok` is False if X must not be used."""
        n, m = b.shape
        r = self.report
        r.path = PATH_DIGITAL
        # A smaller problem than the buffers works in their leading block (the kernels index only
        # that far; whole buffers keep their compiled signatures) and returns a view of it.
        ok = _cholesky_solve_inplace(q, b, self.work, self.x)
        r.rel_residual = _rel_residual(q, self.x, b) if ok else float("inf")
        x = self.x if (n, m) == self.x.shape else self.x[:n, :m]
        r.ok = bool(ok) and r.rel_residual <= self.residual_tolerance
        r.flops = n**3 / 3.0 + 2.0 * n * n * m + 2.0 * n * n * m  # factor, substitutions, residual check
        r.energy_j = r.flops * self.energy_per_flop_j
        r.digital_energy_j = r.energy_j
        self.solves += 1
        self.energy_total_j += r.energy_j
        return x, r

    def state_dict(self) -> dict:
        return {"solves": self.solves, "energy_total_j": self.energy_total_j}

    def load_state_dict(self, state: dict) -> None:
        self.solves = state["solves"]
        self.energy_total_j = state["energy_total_j"]
