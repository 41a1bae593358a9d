"""The analog optimizer's physics: programming, drift, settling, noise, conversion, energy.

The device solves A y = u for the normalised matrix A = Q / max|Q| (|a_ij| <= 1)
by a gradient-flow circuit dy/dt = -(A y - u)/tau (Sun & Ielmini, PNAS 2019).
What it really holds and does (all seeded, one numpy Generator per device):

- Programming. Each value is a differential conductance pair, a = (g+ - g-)/g_max,
  written through a `dac_bits` DAC (symmetric codes, L = 2^(bits-1) - 1 levels per
  side) with write-verify error `program_noise` (1 sigma, fraction of g_max). One
  programmed element couples nodes i and j, so A stays symmetric. With
  `program_slices` = S > 1, slice k+1 is programmed with the *measured* remaining
  error of slices 1..k (verify reads averaged `verify_reads` times), scaled to full
  range and recombined with 1/scale (Song et al., Science 2024): the static error
  falls to about the verify-read noise.
- Stuck cells (fault): a cell of the first slice sits at a rail (+-1) or at 0
  whatever was written; write-verify notices it (reported as failed cells).
- Drift: after programming, every cell decays as g(t) = g0 (t/t0)^-nu_ij, nu_ij ~
  N(nu, nu_std), for t > t0 (aihwkit's PCM model). Reference cells programmed at
  0.5 g_max drift the same way; a calibration reads them.
- Settling: the flow's modes decay as exp(-lambda_i t/tau); the device stops when
  the slowest significant mode is within half an ADC step, so the settling time
  grows with 1/lambda_min (not with n) (Sun & Ielmini, IEEE TED 2020). A matrix
  that is not positive definite does not settle: its unstable mode runs into the
  rails (SATURATED). Beyond the settle timeout the outputs are the transient.
- Read noise: conductances fluctuate by `read_noise` per 1 us read; the output is
  integrated over the ADC window, which averages the white part by sqrt(window/1 us)
  (1/f noise would not average: a documented optimism).
- Inputs through the DAC, outputs through a `adc_bits` ADC over +-out_range, with
  `output_noise` of full scale per conversion, averaged over `adc_averages`
  conversions (the noise dithers the quantiser). Outputs beyond the range clip at
  the rails and are counted as saturated.
- Energy: write-verify per cell and slice, DAC/ADC conversions, column amplifiers
  and array dissipation (V^2 g) while settling and converting.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, fields

import numba
import numpy as np

from flight_sw.devices.optimizer import cholesky_into

READ_WINDOW_S = 1e-6  # the read window the read-noise figure refers to


@dataclass
class DeviceParams:
    n_max: int = 64
    dac_bits: int = 8
    input_bits: int = 12
    adc_bits: int = 12
    program_slices: int = 2
    program_noise: float = 0.01
    verify_reads: int = 1024
    read_noise: float = 0.01
    output_noise: float = 0.04
    adc_averages: int = 1024
    g_max_s: float = 25e-6
    drift_nu: float = 0.05
    drift_nu_std: float = 0.005
    drift_t0_s: float = 20.0
    tau_s: float = 1e-6
    reference_cells: int = 32
    program_energy_per_cell_j: float = 1e-10
    program_time_per_row_s: float = 1e-5
    conversion_energy_j: float = 5e-12
    conversion_time_s: float = 1e-7
    column_power_w: float = 1e-4
    read_voltage_v: float = 0.2

    @classmethod
    def from_config(cls, dev) -> DeviceParams:
        """From a `flight_sw.config.schema.DeviceConfig` (its `analog_*` keys)."""
        return cls(**{f.name: getattr(dev, "analog_" + f.name) for f in fields(cls)})


@numba.njit(cache=True)
def _lambda_min(a, iters):  # pragma: no cover - compiled
    """(positive definite?, lambda_min, its eigenvector) by Cholesky + inverse iteration.

    Thread-free and ~50x cheaper than a full eigendecomposition at n ~ 33: the
    settling model needs only the slowest mode.
    """
    n = a.shape[0]
    ell = np.zeros((n, n))
    if not cholesky_into(a, ell):
        return False, 0.0, np.zeros(n)
    v = np.empty(n)
    for i in range(n):
        v[i] = 1.0 + 0.01 * i  # deterministic start with a component along every mode
    lam = 0.0
    w = np.empty(n)
    for _ in range(iters):
        nv = 0.0
        for i in range(n):
            nv += v[i] * v[i]
        nv = math.sqrt(nv)
        for i in range(n):
            v[i] /= nv
        for i in range(n):  # forward: L w = v
            s = v[i]
            for k in range(i):
                s -= ell[i, k] * w[k]
            w[i] = s / ell[i, i]
        for i in range(n - 1, -1, -1):  # back: L^T w = w
            s = w[i]
            for k in range(i + 1, n):
                s -= ell[k, i] * w[k]
            w[i] = s / ell[i, i]
        dot = 0.0
        for i in range(n):
            dot += v[i] * w[i]
        lam = 1.0 / dot if dot > 0.0 else 0.0
        for i in range(n):
            v[i] = w[i]
    nv = 0.0
    for i in range(n):
        nv += v[i] * v[i]
    nv = math.sqrt(nv)
    for i in range(n):
        v[i] /= nv
    return True, lam, v


@dataclass
class ProgramOutcome:
    crc: int
    failed_cells: int
    time_s: float
    energy_j: float


@dataclass
class SettleOutcome:
    y: np.ndarray
    settled: bool
    saturated: int
    settle_time_s: float
    time_s: float
    energy_j: float


class AnalogArray:
    """The physical device state: programmed slices, drift clocks, reference cells."""

    def __init__(self, params: DeviceParams, rng: np.random.Generator):
        self.p = params
        self.rng = rng
        self.time_s = 0.0
        self.levels = (1 << (params.dac_bits - 1)) - 1
        nm = params.n_max
        # stuck cells of the first slice (fault): value or nan
        self.stuck = np.full((nm, nm), np.nan)
        self.programmed = False
        self.n = 0
        self.codes: list[np.ndarray] = []
        self.slice_scale = np.zeros(0)
        self.values: list[np.ndarray] = []  # programmed value of each slice (before drift)
        self.nu: list[np.ndarray] = []
        self.t_prog = 0.0
        self._a_cache_key = None
        self._a = np.zeros((0, 0))
        self._eig = (False, 0.0, np.zeros(0))
        self._reference_program()

    # -- reference cells (calibration) ---------------------------------------------------
    def _reference_program(self) -> None:
        p = self.p
        k = p.reference_cells
        self.ref_g0 = 0.5 + self.rng.normal(0.0, p.program_noise / math.sqrt(p.verify_reads), k)
        self.ref_nu = np.maximum(self.rng.normal(p.drift_nu, p.drift_nu_std, k), 0.0)
        self.t_ref = self.time_s

    def refresh_reference(self) -> tuple[float, float]:
        p = self.p
        self._reference_program()
        t = p.reference_cells / max(p.n_max, 1) * p.program_time_per_row_s + p.program_time_per_row_s
        e = p.reference_cells * p.program_energy_per_cell_j
        self.time_s += t
        return t, e

    def calibrate(self) -> tuple[float, float, float, float]:
        """(gain, reference age, time, energy): mean reference conductance / nominal 0.5 g_max."""
        p = self.p
        age = self.time_s - self.t_ref
        g = self.ref_g0 * self._drift_factor(age, self.ref_nu)
        reads = p.adc_averages
        noise = self.rng.normal(0.0, p.read_noise / math.sqrt(reads), g.size)
        gain = float(np.mean(g * (1.0 + noise)) / 0.5)
        t = reads * p.conversion_time_s
        e = reads * p.reference_cells * p.conversion_energy_j + p.column_power_w * t
        self.time_s += t
        return gain, age, t, e

    def _drift_factor(self, age: float, nu: np.ndarray) -> np.ndarray | float:
        t0 = self.p.drift_t0_s
        if age <= t0:
            return 1.0
        return np.power(age / t0, -nu)

    # -- programming -------------------------------------------------------------------
    def _sym_noise(self, n: int, sigma: float) -> np.ndarray:
        z = self.rng.normal(0.0, sigma, (n, n))
        return np.triu(z) + np.triu(z, 1).T

    def program(self, target: np.ndarray) -> ProgramOutcome:
        """Write-verify the normalised symmetric matrix `target` (|t| <= 1) into S slices."""
        p = self.p
        n = target.shape[0]
        t_sym = 0.5 * (target + target.T)
        L = self.levels
        verify_sigma = p.read_noise / math.sqrt(p.verify_reads)
        self.codes = []
        self.values = []
        scales = []
        measured_sum = np.zeros((n, n))
        failed = 0
        for k in range(p.program_slices):
            if k == 0:
                scale = 1.0
                want = t_sym
            else:
                err = t_sym - measured_sum
                emax = float(np.max(np.abs(err)))
                if emax == 0.0:
                    break
                scale = min(1.0 / emax, float(L))  # full range of the slice's DAC
                want = err * scale
            code = np.clip(np.rint(want * L), -L, L).astype(np.int16)
            v = code / L + self._sym_noise(n, p.program_noise)
            np.clip(v, -1.0, 1.0, out=v)
            if k == 0:
                stuck = self.stuck[:n, :n]
                mask = ~np.isnan(stuck)
                if mask.any():
                    v[mask] = stuck[mask]
                    tol = 4.0 * p.program_noise + 1.0 / L
                    failed = int(np.count_nonzero(np.abs(v - want)[mask] > tol))
            meas = v + self._sym_noise(n, verify_sigma)
            measured_sum += meas / scale
            self.codes.append(code)
            self.values.append(v)
            scales.append(scale)
        self.slice_scale = np.array(scales)
        self.nu = [np.maximum(self._sym_nu(n), 0.0) for _ in self.values]
        self.n = n
        self.programmed = True
        self.t_prog = self.time_s
        self._a_cache_key = None
        t = n * len(self.values) * p.program_time_per_row_s
        e = n * n * 2 * len(self.values) * p.program_energy_per_cell_j  # two devices per pair
        self.time_s += t
        return ProgramOutcome(self.codes_crc(), failed, t, e)

    def _sym_nu(self, n: int) -> np.ndarray:
        p = self.p
        z = self.rng.normal(p.drift_nu, p.drift_nu_std, (n, n))
        return np.triu(z) + np.triu(z, 1).T

    def codes_crc(self) -> int:
        crc = 0
        for c, s in zip(self.codes, self.slice_scale, strict=True):
            crc = zlib.crc32(c.tobytes(), crc)
            crc = zlib.crc32(np.float64(s).tobytes(), crc)
        return crc & 0xFFFFFFFF

    def flip_code_bit(self, i: int, j: int, bit: int) -> None:
        """SEU: flip one bit of the stored first-slice code of cell (i, j) (and its mirror).

        The refresh logic rewrites the cell from the corrupted code, so the conductance
        follows the register.
        """
        code = self.codes[0]
        L = self.levels
        old = int(code[i, j])
        new = int(np.int16(old ^ (1 << bit)))
        new = max(-L, min(L, new))
        delta = (new - old) / L
        for a, b in ((i, j), (j, i)) if i != j else ((i, j),):
            code[a, b] = new
            self.values[0][a, b] = float(np.clip(self.values[0][a, b] + delta, -1.0, 1.0))
        self._a_cache_key = None

    def reset(self) -> None:
        """Power loss: the programmed state is gone (reference cells are non-volatile)."""
        self.programmed = False
        self.n = 0
        self.codes = []
        self.values = []
        self._a_cache_key = None

    # -- the matrix the circuit really has now ------------------------------------------
    def effective_matrix(self) -> np.ndarray:
        age = self.time_s - self.t_prog
        t0 = self.p.drift_t0_s
        key = 0 if age <= t0 else int(round(math.log(age / t0) * 200))  # 0.5% steps of log-age
        if key != self._a_cache_key:
            a = np.zeros((self.n, self.n))
            for v, s, nu in zip(self.values, self.slice_scale, self.nu, strict=True):
                a += v * self._drift_factor(age, nu) / s
            self._a = a
            pd, lam, vec = _lambda_min(a, 12)
            self._eig = (bool(pd), float(lam), vec)
            self._a_cache_key = key
        return self._a

    # -- settling ---------------------------------------------------------------------
    def settle(
        self,
        u: np.ndarray,
        out_range: np.ndarray,
        timeout_s: float,
        tau_factor: float = 1.0,
        never_settle: bool = False,
        force_saturate: bool = False,
    ) -> SettleOutcome:
        """Settle on each column of u (already within [-1, 1]); outputs via the ADC."""
        p = self.p
        n, m = u.shape
        a = self.effective_matrix()
        stable, lam_min, v_min = self._eig
        li = (1 << (p.input_bits - 1)) - 1
        uq = np.rint(u * li) / li  # input DAC (static during the settle)
        out_range = np.broadcast_to(np.asarray(out_range, dtype=np.float64), (m,))
        lsb = 2.0 * out_range / ((1 << p.adc_bits) - 1)  # per column
        window = p.adc_averages * p.conversion_time_s
        tau = p.tau_s * tau_factor
        if stable and not never_settle:
            # read noise, averaged over the settling + ADC window, perturbs each column's end point
            sigma_read = p.read_noise * math.sqrt(READ_WINDOW_S / max(window, READ_WINDOW_S))
            noise = self.rng.normal(0.0, sigma_read, (m, n, n))
            noise = np.triu(noise) + np.swapaxes(np.triu(noise, 1), 1, 2)
            try:
                x = np.linalg.solve(a[None, :, :] * (1.0 + noise), uq.T[:, :, None])[:, :, 0].T
            except np.linalg.LinAlgError:
                x = np.linalg.solve(a, uq)
            # from y = 0 the error is x*; the slowest mode (1/lambda_min) sets the time to half an LSB
            amp = np.sqrt(np.sum(x * x, axis=0))
            t_c = np.where(amp > 0.5 * lsb, tau / lam_min * np.log(np.maximum(amp / (0.5 * lsb), 1.0)), 0.0)
            settled = bool(np.all(t_c <= timeout_s))
            t_run = np.minimum(t_c, timeout_s)
            if not settled:
                # transient at the timeout: the slow mode has not decayed yet
                c = v_min @ x
                x = x - np.outer(v_min, c * np.exp(-lam_min * t_run / tau))
        elif never_settle:
            settled = False
            t_run = np.full(m, timeout_s)
            x = self.rng.normal(0.0, 1.0, (n, m)) * out_range  # oscillating: whatever the ADC catches
        else:
            # not positive definite: the unstable mode grows into the rails
            settled = True  # it comes to rest, at the rails
            t_run = np.full(m, min(timeout_s, 20.0 * tau))
            x = np.sign(self.rng.standard_normal((n, 1))) * np.ones((1, m)) * 2.0 * out_range
        if force_saturate:
            x = np.sign(self.rng.standard_normal((n, m))) * 2.0 * out_range
        # output: clip at the rails, ADC noise + quantisation averaged over the window
        saturated = int(np.count_nonzero(np.abs(x) >= out_range))
        x = np.clip(x, -out_range, out_range)
        sigma_out = p.output_noise * out_range
        if p.output_noise >= 0.5 * 2.0 / ((1 << p.adc_bits) - 1):
            # the noise dithers the quantiser: averaging N conversions leaves sqrt(s^2 + q^2/12)/sqrt(N)
            eff = np.sqrt(sigma_out**2 + lsb**2 / 12.0) / math.sqrt(p.adc_averages)
            y = x + self.rng.normal(0.0, 1.0, x.shape) * eff
        else:
            y = x + self.rng.normal(0.0, 1.0, x.shape) * (sigma_out / math.sqrt(p.adc_averages))
            y = np.rint(y / lsb) * lsb
        y = np.clip(y, -out_range, out_range)
        # time and energy
        t_settle = float(np.sum(t_run))
        t = t_settle + m * window
        cond = p.g_max_s * float(np.sum(np.abs(a))) * 2.0 if n else 0.0
        power = n * p.column_power_w + cond * p.read_voltage_v**2
        conversions = m * n * (1 + p.adc_averages)
        e = power * t + conversions * p.conversion_energy_j
        self.time_s += t
        return SettleOutcome(y, settled, saturated, float(np.max(t_run)), t, e)
