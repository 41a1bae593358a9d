"""Offline ephemeris, mission time scale and tables of slowly varying frame quantities.

Everything here is loaded from disk (DE421 from the ``skyfield-data`` package, the
timescale built into skyfield) so the simulator never touches the network.

Speed: skyfield's cost is dominated by precession-nutation (about 35 us per sample,
REFERENCES.md "Gotchas"). The sun direction and the TEME->GCRS rotation change
slowly (the sun moves ~1 deg/day, nutation's fastest large term has a 13.7 day
period), so :class:`SlowFrameTables` evaluates them with skyfield on an hourly grid
and interpolates linearly. Linear interpolation over one hour is off by at most
~10 km in the 1.5e11 m sun vector (0.013 arcsec) and by ~1e-13 rad in the rotation:
far below anything the shadow or contact geometry can see.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import warnings

import numpy as np

DAY_S = 86400.0

# WGS84 ellipsoid (NIMA TR8350.2): the Earth shape for shadows and geodetic positions.
WGS84_A_M = 6378137.0
WGS84_F = 1.0 / 298.257223563
WGS84_B_M = WGS84_A_M * (1.0 - WGS84_F)
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)

# IAU 2015 Resolution B3 nominal solar radius; sets the apparent disc for penumbra.
SUN_RADIUS_M = 695_700_000.0

EPHEMERIS_FILE = "de421.bsp"

_EXPIRED_FINALS_WARNING = r"The file finals2000A\.all has expired"


@functools.lru_cache(maxsize=1)
def skyfield_loader():
    """Return a skyfield ``Loader`` rooted in the skyfield-data package directory.

    skyfield-data's bundled ``finals2000A.all`` is past its expiry date; that file is
    not used (the builtin timescale is), so only that one warning is silenced.
    """
    import skyfield_data
    from skyfield.api import Loader

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EXPIRED_FINALS_WARNING, category=RuntimeWarning)
        path = skyfield_data.get_skyfield_data_path()
    return Loader(path, verbose=False)


@functools.lru_cache(maxsize=1)
def load_ephemeris():
    """Return DE421 opened from disk; raise rather than let skyfield try a download."""
    loader = skyfield_loader()
    path = loader.path_to(EPHEMERIS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} is missing: reinstall the skyfield-data package (the simulator never downloads)"
        )
    return loader(EPHEMERIS_FILE)


@functools.lru_cache(maxsize=1)
def load_timescale():
    """Return skyfield's builtin timescale (leap seconds and delta T ship with skyfield)."""
    return skyfield_loader().timescale(builtin=True)


def clear_caches() -> None:
    """Close the cached ephemeris file and forget the cached loader/timescale (tests)."""
    if load_ephemeris.cache_info().currsize:
        load_ephemeris().close()
    for cached in (load_ephemeris, load_timescale, skyfield_loader):
        cached.cache_clear()


class MissionClock:
    """Converts mission time ``t_s`` (SI seconds elapsed since ``start_utc``) to skyfield times.

    ``t_s`` counts elapsed seconds (TT rate), so a leap second inside the mission shifts
    UTC labels, not physics.
    """

    def __init__(self, start_utc: _dt.datetime):
        if not isinstance(start_utc, _dt.datetime):
            raise TypeError(
                f"start_utc must be a datetime.datetime, got {type(start_utc).__name__}"
            )
        if start_utc.tzinfo is None or start_utc.utcoffset() is None:
            raise ValueError("start_utc must be timezone-aware (UTC); got a naive datetime")
        self.start_utc = start_utc
        self.ts = load_timescale()
        t0 = self.ts.from_datetime(start_utc)
        self._jd_whole = float(t0.whole)
        self._tt_fraction0 = float(t0.tt_fraction)

    def time(self, t_s) -> object:
        """Skyfield ``Time`` for mission times ``t_s`` (array or scalar)."""
        t_s = np.asarray(t_s, dtype=np.float64)
        return self.ts.tt_jd(self._jd_whole, self._tt_fraction0 + t_s / DAY_S)

    def jd_parts(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(whole, utc_fraction, ut1_fraction) Julian dates for mission times ``t_s``.

        ``whole + utc_fraction`` is the UTC date exactly as skyfield feeds SGP4 (TLE
        epochs are UTC, AIAA 2006-6753); ``whole + ut1_fraction`` drives Earth rotation.
        One skyfield ``Time`` per batch: these are table look-ups, no nutation.
        """
        t = self.time(t_s)
        leap_s = np.rint(t.dut1 + t.delta_t - 32.184)  # TAI-UTC, an integer since 1972
        whole = np.broadcast_to(np.asarray(t.whole, dtype=np.float64), np.shape(t_s))
        return (
            np.ascontiguousarray(whole),
            np.ascontiguousarray(t.tai_fraction - leap_s / DAY_S, dtype=np.float64),
            np.ascontiguousarray(t.ut1_fraction, dtype=np.float64),
        )


class SlowFrameTables:
    """Hourly tables of the apparent geocentric sun and the GCRS->TEME rotation.

    The shadow is cast by sunlight as it arrives in the Earth-centred frame, so the sun
    is the *apparent* one (light time and annual aberration, ~20 arcsec, ~0.1 s of edge
    timing). The table grows on demand (at least one day or a quarter of its span at a
    time) so tick-by-tick callers trigger only a logarithmic number of rebuilds.
    """

    def __init__(self, clock: MissionClock, node_step_s: float = 3600.0):
        if not node_step_s > 0:
            raise ValueError(f"node_step_s must be > 0, got {node_step_s}")
        self.clock = clock
        self.node_step_s = float(node_step_s)
        self._k0 = 0
        self._k1 = -1  # empty
        self._sun_gcrs_m = np.empty((0, 3))
        self._sun_teme_m = np.empty((0, 3))
        self._teme_from_gcrs = np.empty((0, 3, 3))

    def ensure(self, t_min_s: float, t_max_s: float) -> None:
        """Make the tables cover [t_min_s, t_max_s] (rebuilding with headroom if needed)."""
        k_lo = int(np.floor(t_min_s / self.node_step_s)) - 1
        k_hi = int(np.ceil(t_max_s / self.node_step_s)) + 1
        if self._k1 >= self._k0 and k_lo >= self._k0 and k_hi <= self._k1:
            return
        if self._k1 >= self._k0:
            pad = max(int(DAY_S / self.node_step_s), (self._k1 - self._k0) // 4)
            if k_lo < self._k0:
                k_lo = min(k_lo, self._k0 - pad)
            if k_hi > self._k1:
                k_hi = max(k_hi, self._k1 + pad)
            k_lo, k_hi = min(k_lo, self._k0), max(k_hi, self._k1)
        self._build(k_lo, k_hi)

    def _build(self, k_lo: int, k_hi: int) -> None:
        from skyfield.sgp4lib import TEME

        eph = load_ephemeris()
        t = self.clock.time(np.arange(k_lo, k_hi + 1, dtype=np.float64) * self.node_step_s)
        sun_gcrs_m = eph["earth"].at(t).observe(eph["sun"]).apparent().position.m.T
        r = np.moveaxis(TEME.rotation_at(t), -1, 0)  # (M,3,3): r_teme = R @ r_gcrs
        self._sun_gcrs_m = np.ascontiguousarray(sun_gcrs_m)
        self._sun_teme_m = np.einsum("mij,mj->mi", r, sun_gcrs_m)
        self._teme_from_gcrs = np.ascontiguousarray(r)
        self._k0, self._k1 = k_lo, k_hi

    def _weights(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t_s = np.asarray(t_s, dtype=np.float64)
        if t_s.size:
            self.ensure(float(np.min(t_s)), float(np.max(t_s)))
        x = t_s / self.node_step_s - self._k0
        i = np.clip(np.floor(x).astype(np.int64), 0, self._k1 - self._k0 - 1)
        return i, x - i

    @staticmethod
    def _lerp(table: np.ndarray, i: np.ndarray, w: np.ndarray) -> np.ndarray:
        w = w.reshape(w.shape + (1,) * (table.ndim - 1))
        return table[i] * (1.0 - w) + table[i + 1] * w

    def sun_gcrs_m(self, t_s: np.ndarray) -> np.ndarray:
        """Apparent geocentric sun, GCRS, metres, shape (N,3)."""
        i, w = self._weights(t_s)  # may rebuild: read the table after
        return self._lerp(self._sun_gcrs_m, i, w)

    def sun_teme_m(self, t_s: np.ndarray) -> np.ndarray:
        """Apparent geocentric sun in the satellite's TEME frame, metres, shape (N,3)."""
        i, w = self._weights(t_s)  # may rebuild: read the table after
        return self._lerp(self._sun_teme_m, i, w)

    def teme_from_gcrs(self, t_s: np.ndarray) -> np.ndarray:
        """Rotation matrices R with r_teme = R @ r_gcrs, shape (N,3,3)."""
        i, w = self._weights(t_s)  # may rebuild: read the table after
        return self._lerp(self._teme_from_gcrs, i, w)
