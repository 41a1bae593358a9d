"""Payload scene truth: mixed pixels of measured spectra, seen through an atmosphere by a drifting sensor.

Surface: every pixel is a mixture of two spectra from the measured library
(`sim.spectra`: earthlib's field and PROSAIL spectra, published water, cloud and
snow families), a dominant one (55-100 % of the pixel, its class is the pixel's true
class) and a partner drawn from the scene's class mix, times a lognormal brightness
factor (sigma 0.1: slope and shading). The pre-launch set and the flight set are
different spectra of the same classes (`split`), so launch is a domain gap.

Atmosphere (simple, documented, the same for every class): Rayleigh optical depth
tau_R(lambda) = 0.008569 l^-4 (1 + 0.0113 l^-2 + 0.00013 l^-4) (l in um; Hansen &
Travis 1974), continental aerosol tau_A = 0.12 (l / 0.55)^-1.3 (Angstrom); nadir view,
sun at elevation e (mu = sin e): effective two-way transmittance
exp(-(tau_R / 2 + tau_A / 3) (1 / mu + 1)) and single-scattering path reflectance
(tau_R + 0.18 tau_A) / (4 mu). Pixels are top-of-atmosphere reflectance: the
instrument's radiance normalised by the sun elevation of the frame (ancillary data
that a real satellite has), so noise grows as 1 / sin(e).

Sensor (the drift scenarios, `payload.drift`): per-band gain and dark offset
(ageing), per-detector-column gain, hot columns and dark-signal non-uniformity (a
radiation event), band-centre shifts (the spectral response moves: the band
reflectance of every spectrum changes differently, which no per-band gain undoes),
vegetation phenology and snow cover by date (season), and a new surface mixed into
the scene (burn scars or flood water) after an event.
"""

from __future__ import annotations

import math
from datetime import datetime

import numba
import numpy as np

from flight_sw.config.schema import PayloadConfig
from sim import spectra

#: Period over which drift, season and phenology are held constant [s].
DRIFT_STEP_S = 60.0
MIN_SUN_ELEVATION_DEG = 10.0
#: Lines the instrument co-adds into one calibration reading (dark or sun diffuser): the
#: reading's noise is the pixel noise / sqrt(CAL_LINES_COADDED).
CAL_LINES_COADDED = 64
#: Calibration acquisitions (flight_sw.ml.radiometry): closed-shutter / night dark, sun diffuser.
CAL_DARK, CAL_DIFFUSER = 0, 1
#: The dominant spectrum covers at least this share of a pixel (so its class is the truth).
MIN_DOMINANT_FRACTION = 0.55
BRIGHTNESS_SIGMA = 0.1
#: Random numbers per pixel: uniforms (class, fraction, partner, spectrum x2, column) and normals.
U_PER_PIXEL = 6
#: Acquisitions' worth of random numbers drawn per refill.
STREAM_BLOCK = 1 << 14
#: Day of year of peak green (mid-July) and of peak snow (mid-January), northern hemisphere.
PEAK_GREEN_DOY = 196.0
PEAK_SNOW_DOY = 15.0
NEW_SURFACE_POOL = {"burned": ("burned", "bare_soil"), "flood": ("flood_water", "water")}


def atmosphere(band_centres_nm: np.ndarray, sun_elevation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(path reflectance, two-way transmittance) per band at this sun elevation (module docstring)."""
    key = (band_centres_nm.tobytes() if isinstance(band_centres_nm, np.ndarray) else tuple(band_centres_nm),
           round(max(sun_elevation_deg, MIN_SUN_ELEVATION_DEG), 2))
    hit = _ATMOSPHERE_CACHE.get(key)
    if hit is None:
        if len(_ATMOSPHERE_CACHE) > 20000:
            _ATMOSPHERE_CACHE.clear()
        hit = _ATMOSPHERE_CACHE[key] = _atmosphere(band_centres_nm, key[1])
    return hit


_ATMOSPHERE_CACHE: dict = {}


def _atmosphere(band_centres_nm, sun_elevation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    lam = np.asarray(band_centres_nm, dtype=np.float64) / 1000.0
    tau_r = 0.008569 * lam**-4 * (1 + 0.0113 * lam**-2 + 0.00013 * lam**-4)
    tau_a = 0.12 * (lam / 0.55) ** -1.3
    mu = math.sin(math.radians(max(sun_elevation_deg, MIN_SUN_ELEVATION_DEG)))
    trans = np.exp(-(tau_r / 2 + tau_a / 3) * (1 / mu + 1))
    path = (tau_r + 0.18 * tau_a) / (4 * mu)
    return path, trans


def green_fraction(day_of_year: float) -> float:
    """Phenology state 0 (dormant, mid-January) .. 1 (peak green, mid-July)."""
    return 0.5 + 0.5 * math.cos(2 * math.pi * (day_of_year - PEAK_GREEN_DOY) / 365.25)


class SceneTruth:
    """Draws pixels and their true classes for a time, a class mix and a sun elevation."""

    def __init__(self, cfg: PayloadConfig, rng: np.random.Generator, split: str = "flight",
                 start_day_of_year: float = 60.0):
        self.cfg = cfg
        self.rng = rng
        self.split = split
        self.start_doy = start_day_of_year
        names = tuple(cfg.classes)
        self.n_classes = len(names)
        self.bands_info = spectra.band_set(cfg.bands)
        self.band_centres_nm = np.array([b[1] for b in self.bands_info])
        pools = spectra.load_pools(names, split)
        drift = cfg.drift
        pool_list = [pools[c] for c in names]
        labels = list(range(self.n_classes))
        extra_name, extra_class = NEW_SURFACE_POOL[drift.new_surface_kind]
        if drift.new_surface_day is not None and extra_class in names:
            pool_list.append(spectra.load_pools((extra_name,), split)[extra_name])
            labels.append(names.index(extra_class))
        self.n_groups = len(pool_list)
        self.group_label = np.array(labels, dtype=np.int64)
        self.group_start = np.zeros(self.n_groups + 1, dtype=np.int64)
        self.group_start[1:] = np.cumsum([p.reflectance.shape[0] for p in pool_list])
        self._pools = pool_list
        self.surface = np.concatenate([p.reflectance for p in pool_list])
        self._veg = names.index("vegetation") if "vegetation" in names else -1
        self._uniform_cum = self._cumulative_weights(None)
        self.response_nominal = spectra.band_response(cfg.bands)
        self.endm_nominal = spectra.to_bands(self.surface, self.response_nominal)
        self.base_mix = np.full(self.n_groups, 1.0 / self.n_classes)
        if self.n_groups > self.n_classes:
            self.base_mix[self.n_classes:] = 0.0
        self.gain_weights = np.linspace(1.5, 0.5, cfg.bands)  # shorter wavelengths age faster
        self._unit_gain = np.ones(cfg.bands)
        self._zero_offset = np.zeros(cfg.bands)
        self._unit_det = np.ones((1, cfg.bands))
        self._zero_det = np.zeros((1, cfg.bands))
        # Radiation-event detector map: fixed per scene (which columns are hit), from the scene generator.
        det_rng = np.random.default_rng(rng.integers(2**63))
        self.columns = cfg.detector_columns
        self._det_hit = det_rng.random(self.columns) < drift.abrupt_detector_fraction
        self._det_hot = det_rng.random(self.columns) < drift.hot_pixel_fraction
        self._det_dsnu = det_rng.standard_normal((self.columns, cfg.bands)) * drift.dsnu_sigma
        # The sun diffuser: its reflectance factor as characterised on the ground (what the
        # flight software is told), the true one (characterisation error), and its UV
        # degradation per view (what nobody onboard knows).
        self.diffuser_characterised = diffuser_reflectance_factor(self.band_centres_nm)
        self._diffuser_true = self.diffuser_characterised * (
            1.0 + drift.diffuser_characterisation_sigma * det_rng.standard_normal(cfg.bands))
        self._diffuser_loss_weights = np.linspace(1.0, 0.1, cfg.bands)  # UV darkens the blue end most
        self.diffuser_views = 0.0
        self._u = np.empty(0)
        self._z = np.empty(0)
        self._ui = self._zi = 0
        self._state_key = None
        self._state = None
        #: Band values of the library for the last filter-shift ramp step (ramp, endm): the
        #: ramp moves in 1 % steps, held for many drift steps, and after it the shift stays.
        self._shifted_endm: tuple[float, np.ndarray] | None = None
        self._g1 = np.zeros(0, np.int64)
        self._g2 = np.zeros(0, np.int64)
        self._last_mix = None
        self._last_cum = None

    # -- time-dependent truth ---------------------------------------------------------
    def day_of_year(self, t_s: float) -> float:
        return (self.start_doy + t_s / 86400.0) % 365.25

    def _cumulative_weights(self, green: float | None) -> np.ndarray:
        """Per-spectrum cumulative sampling weights, restarting at 0 in every group."""
        cum = np.zeros(self.surface.shape[0])
        for g, pool in enumerate(self._pools):
            lo, hi = self.group_start[g], self.group_start[g + 1]
            if green is not None and g == self._veg:
                w = spectra.season_weights(pool, green)
            else:
                w = np.full(hi - lo, 1.0 / (hi - lo))
            cum[lo:hi] = np.cumsum(w) / np.sum(w)
        return cum

    def state(self, t_s: float, drifted: bool = True):
        """(gain, offset, det_gain, det_offset, endm, cum_weights, mix) at t_s, held per DRIFT_STEP_S."""
        if not drifted:
            return (self._unit_gain, self._zero_offset, self._unit_det, self._zero_det, self.endm_nominal,
                    self._uniform_cum, self.base_mix)
        key = int(t_s // DRIFT_STEP_S)
        if key != self._state_key:
            self._state_key = key
            self._state = self._state_at(key * DRIFT_STEP_S)
        return self._state

    def gain_offset(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Per-band sensor gain and dark offset at t_s (column effects aside)."""
        st = self.state(t_s)
        return st[0], st[1]

    def global_mix(self, t_s: float) -> np.ndarray:
        """Group mix of an ordinary scene at t_s (season, new surface)."""
        return self.state(t_s)[6]

    def _state_at(self, t_s: float):
        drift = self.cfg.drift
        day = t_s / 86400.0
        gain = np.maximum(1.0 - drift.gain_decay_per_day * day * self.gain_weights, 0.05)
        offset = np.full(self.cfg.bands, drift.dark_offset_growth_per_day * day)
        det_gain, det_off = self._unit_det, self._zero_det
        if drift.abrupt_shift_day is not None and day >= drift.abrupt_shift_day:
            det_gain = np.ones((self.columns, self.cfg.bands))
            step = np.ones(self.cfg.bands)
            step[list(drift.abrupt_bands)] = drift.abrupt_gain_factor
            det_gain[self._det_hit] = step
            det_off = self._det_dsnu + np.where(self._det_hot, drift.hot_pixel_offset, 0.0)[:, None]
        endm = self.endm_nominal
        if drift.filter_shift_day is not None and day >= drift.filter_shift_day:
            endm = self._shifted_bands(round(min((day - drift.filter_shift_day) / drift.filter_shift_ramp_days, 1.0),
                                             2))
        doy = self.day_of_year(t_s)
        cum = self._cumulative_weights(green_fraction(doy)) if drift.phenology else self._uniform_cum
        mix = self.base_mix.copy()
        names = list(self.cfg.classes)
        amp = drift.seasonal_amplitude * math.cos(2 * math.pi * (doy - PEAK_SNOW_DOY) / 365.25)
        if "snow_ice" in names and "vegetation" in names:
            mix[names.index("snow_ice")] *= 1 + amp
            mix[names.index("vegetation")] *= 1 - amp
        mix /= mix.sum()
        if drift.new_surface_day is not None and day >= drift.new_surface_day and self.n_groups > self.n_classes:
            mix *= 1.0 - drift.new_surface_fraction
            mix[self.n_classes] = drift.new_surface_fraction
        return gain, offset, det_gain, det_off, endm, cum, mix

    def _shifted_bands(self, ramp: float) -> np.ndarray:
        """The library's band values with the filter shift `ramp` of the way in (the last one reused:
        a band response over the whole library was a third of a filter-shift run's time)."""
        if self._shifted_endm is None or self._shifted_endm[0] != ramp:
            drift = self.cfg.drift
            shift = np.zeros(self.cfg.bands)
            shift[list(drift.filter_shift_bands)] = drift.filter_shift_nm * ramp
            self._shifted_endm = (ramp, spectra.to_bands(self.surface, spectra.band_response(self.cfg.bands, shift)))
        return self._shifted_endm[1]

    # -- drawing pixels -----------------------------------------------------------------
    def _take(self, n: int) -> tuple[int, int]:
        need_u, need_z = n * U_PER_PIXEL, n * (1 + self.cfg.bands)
        if self._ui + need_u > self._u.size or self._zi + need_z > self._z.size:
            block = max(STREAM_BLOCK, n)  # a request larger than a block gets a block of its own size
            self._u = self.rng.random(block * U_PER_PIXEL)
            self._z = self.rng.standard_normal(block * (1 + self.cfg.bands))
            self._ui = self._zi = 0
        ui, zi = self._ui, self._zi
        self._ui += need_u
        self._zi += need_z
        return ui, zi

    def _groups(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self._g1.shape[0] < n:
            self._g1 = np.zeros(n, np.int64)
            self._g2 = np.zeros(n, np.int64)
        return self._g1[:n], self._g2[:n]

    def sample(self, t_s: float, n: int, mix: np.ndarray, sun_elevation_deg: float, pixels: np.ndarray,
               labels: np.ndarray, drifted: bool = True, columns: np.ndarray | None = None) -> None:
        """Fill pixels (n, bands) and true classes labels (n,) of a scene with this class mix.

        `mix` is over classes (or over groups, new surface included: `global_mix`);
        `columns`, if given, receives each pixel's detector column.
        """
        st = self.state(t_s, drifted)
        cum_mix = self._cum_mix(mix)
        ui, zi = self._take(n)
        g1, g2 = self._groups(n)
        _draw_groups(cum_mix, self._u, ui, n, g1, g2)
        self._render(st, sun_elevation_deg, n, g1, g2, ui, zi, pixels, labels, columns)

    def _cum_mix(self, mix: np.ndarray) -> np.ndarray:
        """Cumulative group mix (cached for the mix arrays the scene hands out itself)."""
        if mix is self._last_mix:
            return self._last_cum
        mix_g = np.zeros(self.n_groups)
        mix_g[: len(mix)] = mix
        self._last_mix, self._last_cum = mix, np.cumsum(mix_g)
        return self._last_cum

    def sample_groups(self, t_s: float, g1: np.ndarray, g2: np.ndarray, sun_elevation_deg: float,
                      pixels: np.ndarray, labels: np.ndarray, columns: np.ndarray | None = None,
                      drifted: bool = True) -> None:
        """Pixels whose dominant and partner groups are given (a calibration site's map)."""
        n = g1.shape[0]
        st = self.state(t_s, drifted)
        ui, zi = self._take(n)
        self._render(st, sun_elevation_deg, n, g1, g2, ui, zi, pixels, labels, columns)

    def _render(self, st, elev, n, g1, g2, ui, zi, pixels, labels, columns) -> None:
        gain, offset, det_gain, det_off, endm, cum, _ = st
        path, trans = atmosphere(self.band_centres_nm, elev)
        noise = self.cfg.noise_sigma / math.sin(math.radians(max(elev, MIN_SUN_ELEVATION_DEG)))
        cols = columns if columns is not None else np.zeros(0, np.int64)
        _render_kernel(endm, cum, self.group_start, self.group_label, g1, g2, path, trans, gain, offset,
                       det_gain, det_off, noise, n, self._u, ui, self._z, zi, pixels, labels, cols, self.columns)

    def calibration_reading(self, t_s: float, kind: int, first_column: int, out: np.ndarray) -> None:
        """Co-added calibration readings of columns first_column .. first_column + len(out) - 1.

        Dark: the dark signal (per-band offset, hot columns, DSNU) plus read noise. Sun
        diffuser: the diffuser's true reflectance factor (characterisation error, UV
        degradation so far) through the column's gain, plus the dark signal and noise.
        Counts a diffuser view per full sweep of the array (degradation grows with use).
        """
        gain, offset, det_gain, det_off, *_ = self.state(t_s)
        n = out.shape[0]
        cols = (first_column + np.arange(n)) % self.columns
        dg = det_gain[cols % det_gain.shape[0]]
        do = det_off[cols % det_off.shape[0]]
        noise = self.cfg.noise_sigma / math.sqrt(CAL_LINES_COADDED)
        signal = offset + do
        if kind == CAL_DIFFUSER:
            loss = self.cfg.drift.diffuser_degradation_per_view * self.diffuser_views * self._diffuser_loss_weights
            signal = signal + self._diffuser_true * (1.0 - loss) * gain * dg
            self.diffuser_views += n / self.columns
        out[...] = signal + noise * self.rng.standard_normal(out.shape)

    def stream_mark(self) -> tuple:
        """Where the random stream stands, cheaply (no copy: a new block replaces the arrays,
        it never writes into them): `rewind_stream(mark)` undoes every draw made since."""
        return self.rng.bit_generator.state, self._u, self._z, self._ui, self._zi

    def rewind_stream(self, mark: tuple) -> None:
        self.rng.bit_generator.state, self._u, self._z, self._ui, self._zi = mark

    def stream_state(self) -> dict:
        """Generator state plus the unread part of the current block (for snapshots)."""
        return {"rng": self.rng.bit_generator.state, "u": self._u.copy(), "z": self._z.copy(),
                "ui": self._ui, "zi": self._zi, "diffuser_views": self.diffuser_views}

    def load_stream_state(self, st: dict) -> None:
        self.rng.bit_generator.state = st["rng"]
        self._u, self._z, self._ui, self._zi = st["u"].copy(), st["z"].copy(), st["ui"], st["zi"]
        self.diffuser_views = st.get("diffuser_views", 0.0)


def diffuser_reflectance_factor(band_centres_nm: np.ndarray) -> np.ndarray:
    """Characterised reflectance factor of the sun diffuser per band (Spectralon-like: about
    0.98 in the visible, falling to about 0.95 at 2.2 um; Sentinel-2 MSI and Landsat 8 OLI
    fly such panels)."""
    lam = np.asarray(band_centres_nm, dtype=np.float64)
    return 0.98 - 0.03 * np.clip((lam - 400.0) / 1800.0, 0.0, 1.0)


def start_day_of_year(start_utc: datetime) -> float:
    return float(start_utc.timetuple().tm_yday - 1) + start_utc.hour / 24.0


@numba.njit(cache=True)
def _pick(cum, u):  # pragma: no cover - compiled
    """Index of the first cum >= u (inverse CDF)."""
    lo, hi = 0, cum.shape[0] - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] < u:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True)
def _draw_groups(cum_mix, u, ui, n, g1, g2):  # pragma: no cover - compiled
    total = cum_mix[cum_mix.shape[0] - 1]
    for i in range(n):
        b = ui + i * 6
        g1[i] = _pick(cum_mix, u[b] * total)
        g2[i] = _pick(cum_mix, u[b + 2] * total)


@numba.njit(cache=True)
def _render_kernel(endm, cum, gstart, glabel, g1, g2, path, trans, gain, offset, det_gain, det_off, noise, n,
                   u, ui, z, zi, pixels, labels, columns, n_cols):  # pragma: no cover - compiled
    bands = endm.shape[1]
    n_det = det_gain.shape[0]
    for i in range(n):
        b = ui + i * 6
        frac = 0.55 + 0.45 * u[b + 1]
        a, c = g1[i], g2[i]
        e1 = gstart[a] + _pick(cum[gstart[a]:gstart[a + 1]], u[b + 3])
        e2 = gstart[c] + _pick(cum[gstart[c]:gstart[c + 1]], u[b + 4])
        col = int(u[b + 5] * n_cols)
        if columns.shape[0] > i:
            columns[i] = col
        d = col % n_det
        zb = zi + i * (1 + bands)
        bright = math.exp(0.1 * z[zb])
        labels[i] = glabel[a]
        for k in range(bands):
            surf = (frac * endm[e1, k] + (1.0 - frac) * endm[e2, k]) * bright
            toa = path[k] + trans[k] * surf
            pixels[i, k] = toa * gain[k] * det_gain[d, k] + offset[k] + det_off[d, k] + noise * z[zb + 1 + k]
