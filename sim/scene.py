"""Payload scene truth: multispectral pixels of surface classes seen by an ageing sensor.

Thin version (issue 2), behind the interface the learning issue (5) fills in.
Class signatures are approximate top-of-atmosphere reflectances in the ten
Sentinel-2 bands B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 (490-2190 nm), read
off typical library spectra (water, green vegetation, dry soil, thick cloud,
fresh snow, urban mix; cf. the USGS spectral library and ESA's S2 L1C
examples). Natural variability: a lognormal brightness factor per pixel and
per-band jitter. Sensor: per-band gain that decays with age (blue bands faster),
a growing dark offset, an optional abrupt gain step on the NIR module (a
radiation event), and noise that grows as the sun gets low. Issue 5 documents
and calibrates these rates properly.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from flight_sw.config.schema import PayloadConfig

BAND_CENTRES_NM = (490, 560, 665, 705, 740, 783, 842, 865, 1610, 2190)
SIGNATURES = {
    "water": (0.06, 0.05, 0.03, 0.025, 0.02, 0.018, 0.015, 0.014, 0.010, 0.008),
    "vegetation": (0.04, 0.08, 0.04, 0.12, 0.30, 0.38, 0.42, 0.43, 0.22, 0.11),
    "bare_soil": (0.12, 0.16, 0.21, 0.24, 0.26, 0.28, 0.29, 0.30, 0.36, 0.32),
    "cloud": (0.55, 0.56, 0.57, 0.57, 0.58, 0.58, 0.58, 0.58, 0.45, 0.30),
    "snow_ice": (0.90, 0.88, 0.85, 0.82, 0.80, 0.78, 0.74, 0.72, 0.08, 0.05),
    "urban": (0.10, 0.12, 0.14, 0.16, 0.17, 0.18, 0.19, 0.20, 0.24, 0.22),
}
#: Period over which drift and season are held constant [s].
DRIFT_STEP_S = 60.0
#: Bands hit by the abrupt shift: the red-edge/NIR detector module (B5-B8A).
ABRUPT_BANDS = slice(3, 8)
MIN_SUN_ELEVATION_DEG = 10.0


def _signature(name: str, bands: int) -> np.ndarray:
    base = np.array(SIGNATURES.get(name, SIGNATURES["urban"]), dtype=np.float64)
    if bands == base.size:
        return base
    return np.interp(np.linspace(0, base.size - 1, bands), np.arange(base.size), base)


class SceneTruth:
    """Draws pixels and their true classes for a given time, class mix and sun elevation."""

    def __init__(self, cfg: PayloadConfig, rng: np.random.Generator):
        self.cfg = cfg
        self.rng = rng
        self.signatures = np.stack([_signature(c, cfg.bands) for c in cfg.classes])
        self.n_classes = len(cfg.classes)
        self.base_mix = np.full(self.n_classes, 1.0 / self.n_classes)
        # Shorter wavelengths age faster (browning of optics); weights 1.5 .. 0.5.
        self.gain_weights = np.linspace(1.5, 0.5, cfg.bands)
        self._unit_gain = np.ones(cfg.bands)
        self._zero_offset = np.zeros(cfg.bands)
        self._u = np.empty(0)
        self._z = np.empty(0)
        self._ui = self._zi = 0
        # Drift and season change over hours, not seconds: evaluate them once per minute.
        self._drift_key = None
        self._drift = (self._unit_gain, self._zero_offset)
        self._mix_key = None
        self._mix = self.base_mix
        self._cum_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def gain_offset(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Sensor gain and dark offset at t_s (held for a minute: drift is hours-slow, except
        the abrupt shift, whose minute boundary is exact because day N starts on one)."""
        key = int(t_s // DRIFT_STEP_S)
        if key != self._drift_key:
            self._drift_key = key
            self._drift = self._gain_offset(key * DRIFT_STEP_S)
        return self._drift

    def _gain_offset(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        drift = self.cfg.drift
        day = t_s / 86400.0
        gain = np.maximum(1.0 - drift.gain_decay_per_day * day * self.gain_weights, 0.05)
        if drift.abrupt_shift_day is not None and day >= drift.abrupt_shift_day:
            gain = gain.copy()
            gain[ABRUPT_BANDS] *= drift.abrupt_gain_factor
        offset = np.full(self.cfg.bands, drift.dark_offset_growth_per_day * day)
        return gain, offset

    def global_mix(self, t_s: float) -> np.ndarray:
        """Class mix of an arbitrary scene, with a yearly seasonal swing (snow vs vegetation)."""
        key = int(t_s // DRIFT_STEP_S)
        if key != self._mix_key:
            self._mix_key = key
            self._mix = self._global_mix(key * DRIFT_STEP_S)
        return self._mix

    def _global_mix(self, t_s: float) -> np.ndarray:
        mix = self.base_mix.copy()
        amp = self.cfg.drift.seasonal_amplitude * math.sin(2 * math.pi * t_s / (365.25 * 86400.0))
        names = list(self.cfg.classes)
        if "snow_ice" in names and "vegetation" in names:
            mix[names.index("snow_ice")] *= 1 + amp
            mix[names.index("vegetation")] *= 1 - amp
        return mix / mix.sum()

    def sample(
        self,
        t_s: float,
        n: int,
        mix: np.ndarray,
        sun_elevation_deg: float,
        pixels: np.ndarray,
        labels: np.ndarray,
        drifted: bool = True,
    ) -> None:
        """Fill pixels (n, bands) and labels (n,) in place.

        Random numbers come from blocks drawn in advance from the scene's generator
        (one numpy call per block instead of several per acquisition); a compiled
        kernel turns them into pixels. The stream position is part of `stream_state`.
        """
        bands = self.cfg.bands
        need_u, need_z = n, n * (1 + 2 * bands)
        if self._ui + need_u > self._u.size or self._zi + need_z > self._z.size:
            self._refill()
        elev = max(sun_elevation_deg, MIN_SUN_ELEVATION_DEG)
        noise = self.cfg.noise_sigma / math.sin(math.radians(elev))
        if drifted:
            gain, offset = self.gain_offset(t_s)
        else:
            gain, offset = self._unit_gain, self._zero_offset
        cum = self._cum_cache.get(id(mix))
        if cum is None or cum[0] is not mix:
            cum = (mix, np.cumsum(mix))
            if len(self._cum_cache) > 64:
                self._cum_cache.clear()
            self._cum_cache[id(mix)] = cum
        _sample_kernel(
            self.signatures, cum[1], gain, offset, noise, n,
            self._u, self._ui, self._z, self._zi, pixels, labels,
        )
        self._ui += need_u
        self._zi += need_z

    def _refill(self) -> None:
        self._u = self.rng.random(STREAM_BLOCK)
        self._z = self.rng.standard_normal(STREAM_BLOCK * (1 + 2 * self.cfg.bands))
        self._ui = self._zi = 0

    def stream_state(self) -> dict:
        """Generator state plus the unread part of the current block (for snapshots)."""
        return {"rng": self.rng.bit_generator.state, "u": self._u.copy(), "z": self._z.copy(),
                "ui": self._ui, "zi": self._zi}

    def load_stream_state(self, st: dict) -> None:
        self.rng.bit_generator.state = st["rng"]
        self._u, self._z, self._ui, self._zi = st["u"].copy(), st["z"].copy(), st["ui"], st["zi"]


#: Acquisitions' worth of random numbers drawn per refill.
STREAM_BLOCK = 1 << 14


@numba.njit(cache=True)
def _sample_kernel(sig, cum_mix, gain, offset, noise, n, u, ui, z, zi, pixels, labels):  # pragma: no cover
    """Class by inverse CDF, lognormal(0, 0.15) brightness, 3 % per-band jitter, sensor drift, noise."""
    bands = sig.shape[1]
    n_cls = cum_mix.shape[0]
    total = cum_mix[n_cls - 1]
    for i in range(n):
        r = u[ui + i] * total
        c = 0
        while c < n_cls - 1 and r >= cum_mix[c]:
            c += 1
        labels[i] = c
        base = zi + i * (1 + 2 * bands)
        bright = np.exp(0.15 * z[base])
        for k in range(bands):
            refl = sig[c, k] * bright * (1.0 + 0.03 * z[base + 1 + k])
            pixels[i, k] = refl * gain[k] + offset[k] + noise * z[base + 1 + bands + k]
