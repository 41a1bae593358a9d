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

    def gain_offset(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
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
        mix = self.base_mix.copy()
        amp = self.cfg.drift.seasonal_amplitude * math.sin(2 * math.pi * t_s / (365.25 * 86400.0))
        names = list(self.cfg.classes)
        if "snow_ice" in names and "vegetation" in names:
            mix[names.index("snow_ice")] *= 1 + amp
            mix[names.index("vegetation")] *= 1 - amp
        return mix / mix.sum()

    def sample(self, t_s: float, n: int, mix: np.ndarray, sun_elevation_deg: float, pixels: np.ndarray, labels: np.ndarray, drifted: bool = True) -> None:
        """Fill pixels (n, bands) and labels (n,) in place."""
        rng = self.rng
        labels[:n] = rng.choice(self.n_classes, size=n, p=mix)
        refl = self.signatures[labels[:n]]
        refl = refl * rng.lognormal(0.0, 0.15, size=(n, 1)) * (1.0 + 0.03 * rng.standard_normal(refl.shape))
        elev = max(sun_elevation_deg, MIN_SUN_ELEVATION_DEG)
        noise = self.cfg.noise_sigma / math.sin(math.radians(elev))
        if drifted:
            gain, offset = self.gain_offset(t_s)
            refl = refl * gain + offset
        pixels[:n] = refl + noise * rng.standard_normal(refl.shape)
