"""Ground geometry for contacts and calibration-site overpasses (WGS84, ITRS).

Pure vector functions; the time search lives in :mod:`sim.orbit_truth`. Polar motion
(<= ~15 m at the surface) is ignored: it is far below a pass-edge tolerance of 0.5 s
(~4 km of along-track motion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.ephemeris import WGS84_A_M, WGS84_E2, WGS84_F


def _check_lat_lon(owner: str, lat_deg: float, lon_deg: float) -> None:
    if not -90.0 <= lat_deg <= 90.0:
        raise ValueError(f"{owner}: lat_deg must be in [-90, 90], got {lat_deg}")
    if not -360.0 <= lon_deg <= 360.0:
        raise ValueError(f"{owner}: lon_deg must be in [-360, 360], got {lon_deg}")


@dataclass(frozen=True)
class GroundStation:
    """A ground antenna; contact = satellite elevation above ``elevation_mask_deg``."""

    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float
    elevation_mask_deg: float

    def __post_init__(self) -> None:
        _check_lat_lon(f"GroundStation {self.name!r}", self.lat_deg, self.lon_deg)
        if not -90.0 < self.elevation_mask_deg < 90.0:
            raise ValueError(
                f"GroundStation {self.name!r}: elevation_mask_deg must be in (-90, 90), "
                f"got {self.elevation_mask_deg}"
            )


@dataclass(frozen=True)
class CalibrationSite:
    """A ground target (e.g. a vicarious calibration site): overpass = sub-satellite
    point within ``radius_km`` (ellipsoidal surface distance) of the centre."""

    name: str
    lat_deg: float
    lon_deg: float
    radius_km: float

    def __post_init__(self) -> None:
        _check_lat_lon(f"CalibrationSite {self.name!r}", self.lat_deg, self.lon_deg)
        if not self.radius_km > 0.0:
            raise ValueError(
                f"CalibrationSite {self.name!r}: radius_km must be > 0, got {self.radius_km}"
            )


@dataclass(frozen=True)
class Pass:
    """A contact window: elevation above the mask from ``start_s`` to ``end_s``.

    A pass already in progress at the search start (or still going at its end) is
    clipped to the window rather than dropped: that contact time is real.
    """

    name: str
    start_s: float
    end_s: float
    peak_s: float
    max_elevation_deg: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class SiteOverpass:
    """Sub-satellite point inside a calibration site's radius (clipped like :class:`Pass`).

    ``max_elevation_deg`` is the satellite's elevation seen from the site centre at the
    peak and ``sun_elevation_deg`` the local solar elevation at the sub-satellite point
    at the peak (is the scene lit?).
    """

    name: str
    start_s: float
    end_s: float
    peak_s: float
    min_distance_km: float
    max_elevation_deg: float
    sun_elevation_deg: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def geodetic_to_itrs_m(lat_deg, lon_deg, alt_m) -> np.ndarray:
    """WGS84 geodetic -> Earth-fixed Cartesian, metres, shape (..., 3)."""
    lat = np.radians(np.asarray(lat_deg, np.float64))
    lon = np.radians(np.asarray(lon_deg, np.float64))
    alt = np.asarray(alt_m, np.float64)
    sin_lat = np.sin(lat)
    n = WGS84_A_M / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    return np.stack(
        [
            (n + alt) * np.cos(lat) * np.cos(lon),
            (n + alt) * np.cos(lat) * np.sin(lon),
            (n * (1.0 - WGS84_E2) + alt) * sin_lat,
        ],
        axis=-1,
    )


def up_vector(lat_deg, lon_deg) -> np.ndarray:
    """Ellipsoid normal (geodetic zenith), shape (..., 3)."""
    lat = np.radians(np.asarray(lat_deg, np.float64))
    lon = np.radians(np.asarray(lon_deg, np.float64))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def itrs_to_geodetic(r_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Earth-fixed Cartesian (...,3) -> WGS84 (lat_deg, lon_deg, alt_m).

    Fixed-point iteration tan(lat) = (z + e^2 N sin lat)/p; each step gains a factor
    ~e^2 = 0.0067, so 5 steps reach ~1e-12 rad from anywhere outside the core.
    """
    r_m = np.asarray(r_m, np.float64)
    x, y, z = r_m[..., 0], r_m[..., 1], r_m[..., 2]
    p = np.hypot(x, y)
    lat = np.arctan2(z, p * (1.0 - WGS84_E2))
    for _ in range(5):
        s = np.sin(lat)
        n = WGS84_A_M / np.sqrt(1.0 - WGS84_E2 * s * s)
        lat = np.arctan2(z + WGS84_E2 * n * s, p)
    s, c = np.sin(lat), np.cos(lat)
    n = WGS84_A_M / np.sqrt(1.0 - WGS84_E2 * s * s)
    alt = p * c + z * s - n * (1.0 - WGS84_E2 * s * s)
    return np.degrees(lat), np.degrees(np.arctan2(y, x)), alt


def elevation_deg(r_target_m: np.ndarray, r_observer_m: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Elevation of targets above the observer's geodetic horizon (no refraction).

    Shapes broadcast: targets (N,1,3) against observers (K,3) give (N,K).
    """
    d = np.asarray(r_target_m) - np.asarray(r_observer_m)
    return np.degrees(
        np.arcsin(np.clip(np.sum(d * up, axis=-1) / np.linalg.norm(d, axis=-1), -1.0, 1.0))
    )


def surface_distance_m(lat1_deg, lon1_deg, lat2_deg, lon2_deg) -> np.ndarray:
    """Distance along the WGS84 ellipsoid (Andoyer-Lambert, ~10 m for < 1000 km).

    A sphere would be off by up to 0.5 %; full Vincenty iteration is not needed at
    calibration-site scales.
    """
    lat1 = np.radians(np.asarray(lat1_deg, np.float64))
    lat2 = np.radians(np.asarray(lat2_deg, np.float64))
    dlon = np.radians(np.asarray(lon2_deg, np.float64) - np.asarray(lon1_deg, np.float64))
    b1 = np.arctan((1.0 - WGS84_F) * np.tan(lat1))  # reduced latitudes
    b2 = np.arctan((1.0 - WGS84_F) * np.tan(lat2))
    hav = np.sin((b2 - b1) / 2.0) ** 2 + np.cos(b1) * np.cos(b2) * np.sin(dlon / 2.0) ** 2
    sigma = 2.0 * np.arcsin(np.sqrt(np.clip(hav, 0.0, 1.0)))
    p = (b1 + b2) / 2.0
    q = (b2 - b1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (sigma - np.sin(sigma)) * np.sin(p) ** 2 * np.cos(q) ** 2 / np.cos(sigma / 2.0) ** 2
        y = (sigma + np.sin(sigma)) * np.cos(p) ** 2 * np.sin(q) ** 2 / np.sin(sigma / 2.0) ** 2
        d = WGS84_A_M * (sigma - WGS84_F / 2.0 * (x + y))
    return np.where(sigma < 1e-12, 0.0, d)


def station_vectors(stations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions (K,3) m, up vectors (K,3), masks (K,) deg) for a station list."""
    lat = np.array([s.lat_deg for s in stations], np.float64)
    lon = np.array([s.lon_deg for s in stations], np.float64)
    alt = np.array([s.alt_m for s in stations], np.float64)
    mask = np.array([s.elevation_mask_deg for s in stations], np.float64)
    return geodetic_to_itrs_m(lat, lon, alt), up_vector(lat, lon), mask


# Above any LEO ground-track speed (7.8 km/s orbital + 0.46 km/s Earth rotation):
# bounds how far a site distance can dip between two coarse samples.
MAX_GROUND_SPEED_KM_S = 8.5
# Elevation of a LEO satellite changes at most ~v/h ~ 0.8 deg/s (550 km, overhead).
MAX_ELEVATION_RATE_DEG_S = 2.0
