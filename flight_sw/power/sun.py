"""Analytic apparent Sun position, expressed in SGP4's TEME frame.

Why analytic and why this series: the flight software carries no ephemeris
file, and a simple low-precision sun (about 300 arcsec off) moves eclipse edges by
up to ~4 s (REFERENCES.md). We use the truncated VSOP87D Earth series of Meeus,
"Astronomical Algorithms" 2nd ed. (1998) ch. 25 / Appendix III, in the
selection tabulated by Reda & Andreas, "Solar Position Algorithm for Solar
Radiation Applications", NREL/TP-560-34302 (2004), Table A4.2, which they
quote at +/-0.0003 deg. On top of it: the FK5 correction (Meeus eq. 25.9), the
annual aberration -20.4898"/R (Meeus eq. 25.10) and nutation in longitude and
obliquity from the 13 largest IAU 1980 terms (Meeus table 22.A; truncation
< 0.1"). Against JPL DE421 (skyfield, apparent place) over 2020-2040 we
measure 0.16 arcsec median, 0.5 arcsec max; the tests hold it under 0.01 deg.

Frame choice: SGP4 outputs TEME (true equator, *mean* equinox of date), so the Sun
is put in TEME too rather than rotating every satellite sample to GCRS. TEME
differs from GCRS by precession (~0.35 deg in 2026) and nutation, far above the
0.01 deg budget, but from true-of-date only by the equation of the equinoxes:
RA_TEME = RA_TOD - dpsi*cos(eps) (AIAA 2006-6753 App. C; skyfield's
`sgp4lib.TEME`). The Sun returned is the *apparent* one (aberrated), i.e. the
direction light arrives from, which is what casts the shadow.

Time scale: Julian date in TT. From UTC, TT = UTC + 32.184 s + (TAI-UTC);
TAI-UTC = 37 s since 2017-01-01 (IERS Bulletin C). An unannounced future leap
second moves the Sun by 0.04 arcsec: irrelevant here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

__all__ = [
    "AU_KM",
    "SUN_RADIUS_KM",
    "TT_MINUS_UTC_S",
    "jd_utc_from_datetime",
    "sun_position_teme_km",
]

#: Astronomical unit [km] (IAU 2012 Resolution B2, exact).
AU_KM = 149_597_870.7
#: Nominal solar radius [km] (IAU 2015 Resolution B3).
SUN_RADIUS_KM = 695_700.0
#: TT - UTC [s] = 32.184 + 37 leap seconds (valid from 2017-01-01 until the next leap second).
TT_MINUS_UTC_S = 69.184
_J2000_JD = 2451545.0
_ARCSEC = np.pi / (180.0 * 3600.0)
_UNIX_EPOCH_JD = 2440587.5

# fmt: off
# VSOP87D Earth, truncated (Meeus App. III / NREL SPA Table A4.2): rows of
# (A [1e-8 rad or 1e-8 AU], B [rad], C [rad per Julian millennium]).
_L0 = (
    (175347046, 0.0, 0.0), (3341656, 4.6692568, 6283.07585), (34894, 4.6261, 12566.1517),
    (3497, 2.7441, 5753.3849), (3418, 2.8289, 3.5231), (3136, 3.6277, 77713.7715),
    (2676, 4.4181, 7860.4194), (2343, 6.1352, 3930.2097), (1324, 0.7425, 11506.7698),
    (1273, 2.0371, 529.691), (1199, 1.1096, 1577.3435), (990, 5.233, 5884.927),
    (902, 2.045, 26.298), (857, 3.508, 398.149), (780, 1.179, 5223.694),
    (753, 2.533, 5507.553), (505, 4.583, 18849.228), (492, 4.205, 775.523),
    (357, 2.92, 0.067), (317, 5.849, 11790.629), (284, 1.899, 796.298),
    (271, 0.315, 10977.079), (243, 0.345, 5486.778), (206, 4.806, 2544.314),
    (205, 1.869, 5573.143), (202, 2.4458, 6069.777), (156, 0.833, 213.299),
    (132, 3.411, 2942.463), (126, 1.083, 20.775), (115, 0.645, 0.98),
    (103, 0.636, 4694.003), (102, 0.976, 15720.839), (102, 4.267, 7.114),
    (99, 6.21, 2146.17), (98, 0.68, 155.42), (86, 5.98, 161000.69),
    (85, 1.3, 6275.96), (85, 3.67, 71430.7), (80, 1.81, 17260.15),
    (79, 3.04, 12036.46), (71, 1.76, 5088.63), (74, 3.5, 3154.69),
    (74, 4.68, 801.82), (70, 0.83, 9437.76), (62, 3.98, 8827.39),
    (61, 1.82, 7084.9), (57, 2.78, 6286.6), (56, 4.39, 14143.5),
    (56, 3.47, 6279.55), (52, 0.19, 12139.55), (52, 1.33, 1748.02),
    (51, 0.28, 5856.48), (49, 0.49, 1194.45), (41, 5.37, 8429.24),
    (41, 2.4, 19651.05), (39, 6.17, 10447.39), (37, 6.04, 10213.29),
    (37, 2.57, 1059.38), (36, 1.71, 2352.87), (36, 1.78, 6812.77),
    (33, 0.59, 17789.85), (30, 0.44, 83996.85), (30, 2.74, 1349.87),
    (25, 3.16, 4690.48),
)
_L1 = (
    (628331966747, 0.0, 0.0), (206059, 2.678235, 6283.07585), (4303, 2.6351, 12566.1517),
    (425, 1.59, 3.523), (119, 5.796, 26.298), (109, 2.966, 1577.344),
    (93, 2.59, 18849.23), (72, 1.14, 529.69), (68, 1.87, 398.15),
    (67, 4.41, 5507.55), (59, 2.89, 5223.69), (56, 2.17, 155.42),
    (45, 0.4, 796.3), (36, 0.47, 775.52), (29, 2.65, 7.11),
    (21, 5.34, 0.98), (19, 1.85, 5486.78), (19, 4.97, 213.3),
    (17, 2.99, 6275.96), (16, 0.03, 2544.31), (16, 1.43, 2146.17),
    (15, 1.21, 10977.08), (12, 2.83, 1748.02), (12, 3.26, 5088.63),
    (12, 5.27, 1194.45), (12, 2.08, 4694.0), (11, 0.77, 553.57),
    (10, 1.3, 3286.6), (10, 4.24, 1349.87), (9, 2.7, 242.73),
    (9, 5.64, 951.72), (8, 5.3, 2352.87), (6, 2.65, 9437.76),
    (6, 4.67, 4690.48),
)
_L2 = (
    (52919, 0.0, 0.0), (8720, 1.0721, 6283.0758), (309, 0.867, 12566.152),
    (27, 0.05, 3.52), (16, 5.19, 26.3), (16, 3.68, 155.42),
    (10, 0.76, 18849.23), (9, 2.06, 77713.77), (7, 0.83, 775.52),
    (5, 4.66, 1577.34), (4, 1.03, 7.11), (4, 3.44, 5573.14),
    (3, 5.14, 796.3), (3, 6.05, 5507.55), (3, 1.19, 242.73),
    (3, 6.12, 529.69), (3, 0.31, 398.15), (3, 2.28, 553.57),
    (2, 4.38, 5223.69), (2, 3.75, 0.98),
)
_L3 = (
    (289, 5.844, 6283.076), (35, 0.0, 0.0), (17, 5.49, 12566.15),
    (3, 5.2, 155.42), (1, 4.72, 3.52), (1, 5.3, 18849.23), (1, 5.97, 242.73),
)
_L4 = ((114, 3.142, 0.0), (8, 4.13, 6283.08), (1, 3.84, 12566.15))
_L5 = ((1, 3.14, 0.0),)
_B0 = (
    (280, 3.199, 84334.662), (102, 5.422, 5507.553), (80, 3.88, 5223.69),
    (44, 3.7, 2352.87), (32, 4.0, 1577.34),
)
_B1 = ((9, 3.9, 5507.55), (6, 1.73, 5223.69))
_R0 = (
    (100013989, 0.0, 0.0), (1670700, 3.0984635, 6283.07585), (13956, 3.05525, 12566.1517),
    (3084, 5.1985, 77713.7715), (1628, 1.1739, 5753.3849), (1576, 2.8469, 7860.4194),
    (925, 5.453, 11506.77), (542, 4.564, 3930.21), (472, 3.661, 5884.927),
    (346, 0.964, 5507.553), (329, 5.9, 5223.694), (307, 0.299, 5573.143),
    (243, 4.273, 11790.629), (212, 5.847, 1577.344), (186, 5.022, 10977.079),
    (175, 3.012, 18849.228), (110, 5.055, 5486.778), (98, 0.89, 6069.78),
    (86, 5.69, 15720.84), (86, 1.27, 161000.69), (85, 0.27, 17260.15),
    (63, 0.92, 529.69), (57, 2.01, 83996.85), (56, 5.24, 71430.7),
    (49, 3.25, 2544.31), (47, 2.58, 775.52), (45, 5.54, 9437.76),
    (43, 6.01, 6275.96), (39, 5.36, 4694.0), (38, 2.39, 8827.39),
    (37, 0.83, 19651.05), (37, 4.9, 12139.55), (36, 1.67, 12036.46),
    (35, 1.84, 2942.46), (33, 0.24, 7084.9), (32, 0.18, 5088.63),
    (32, 1.78, 398.15), (28, 1.21, 6286.6), (28, 1.9, 6279.55),
    (26, 4.59, 10447.39),
)
_R1 = (
    (103019, 1.10749, 6283.07585), (1721, 1.0644, 12566.1517), (702, 3.142, 0.0),
    (32, 1.02, 18849.23), (31, 2.84, 5507.55), (25, 1.32, 5223.69),
    (18, 1.42, 1577.34), (10, 5.91, 10977.08), (9, 1.42, 6275.96),
    (9, 0.27, 5486.78),
)
_R2 = (
    (4359, 5.7846, 6283.0758), (124, 5.579, 12566.152), (12, 3.14, 0.0),
    (9, 3.63, 77713.77), (6, 1.87, 5573.14), (3, 5.47, 18849.0),
)
_R3 = ((145, 4.273, 6283.076), (7, 3.92, 12566.15))
_R4 = ((4, 2.56, 6283.08),)
# fmt: on

_L = tuple(np.array(s, dtype=np.float64) for s in (_L0, _L1, _L2, _L3, _L4, _L5))
_B = tuple(np.array(s, dtype=np.float64) for s in (_B0, _B1))
_R = tuple(np.array(s, dtype=np.float64) for s in (_R0, _R1, _R2, _R3, _R4))

# Largest 13 IAU 1980 nutation terms (Meeus table 22.A): multipliers of
# (D, M, M', F, Omega), then dpsi = (a + b T) sin(arg), deps = (c + d T) cos(arg), in 1e-4".
_NUT = np.array(
    (
        (0, 0, 0, 0, 1, -171996, -174.2, 92025, 8.9),
        (-2, 0, 0, 2, 2, -13187, -1.6, 5736, -3.1),
        (0, 0, 0, 2, 2, -2274, -0.2, 977, -0.5),
        (0, 0, 0, 0, 2, 2062, 0.2, -895, 0.5),
        (0, 1, 0, 0, 0, 1426, -3.4, 54, -0.1),
        (0, 0, 1, 0, 0, 712, 0.1, -7, 0.0),
        (-2, 1, 0, 2, 2, -517, 1.2, 224, -0.6),
        (0, 0, 0, 2, 1, -386, -0.4, 200, 0.0),
        (0, 0, 1, 2, 2, -301, 0.0, 129, -0.1),
        (-2, -1, 0, 2, 2, 217, -0.5, -95, 0.3),
        (-2, 0, 1, 0, 0, -158, 0.0, 0, 0.0),
        (-2, 0, 0, 2, 1, 129, 0.1, -70, 0.0),
        (0, 0, -1, 2, 2, 123, 0.0, -53, 0.0),
    ),
    dtype=np.float64,
)


def jd_utc_from_datetime(t_utc: datetime) -> tuple[float, float]:
    """(whole, fraction) UTC Julian date of a tz-aware datetime; whole ends in .5.

    Split in two so float64 keeps microseconds (one float JD resolves only ~40 us).
    """
    if t_utc.tzinfo is None or t_utc.utcoffset() is None:
        raise ValueError(f"t_utc must be timezone-aware (UTC), got naive {t_utc!r}")
    t = t_utc.astimezone(UTC)
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    whole = _UNIX_EPOCH_JD + (midnight - datetime(1970, 1, 1, tzinfo=UTC)).days
    frac = (t - midnight).total_seconds() / 86400.0
    return float(whole), frac


def _series(terms: tuple[np.ndarray, ...], tau: np.ndarray) -> np.ndarray:
    """sum_k tau^k sum_i A_i cos(B_i + C_i tau), Horner in tau (Meeus eq. 32.2)."""
    out = np.zeros_like(tau)
    for coeffs in reversed(terms):
        a, b, c = coeffs[:, 0], coeffs[:, 1], coeffs[:, 2]
        # Row-wise sum, not BLAS matmul: bit-identical per date whatever the batch size.
        s = (np.cos(b[None, :] + c[None, :] * tau[:, None]) * a[None, :]).sum(axis=1)
        out = out * tau + s
    return out * 1e-8


def _nutation(t_cy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nutation in longitude and obliquity [rad] (Meeus ch. 22, IAU 1980 series)."""
    t = t_cy
    deg = np.pi / 180.0
    d = (297.85036 + 445267.111480 * t - 0.0019142 * t**2 + t**3 / 189474.0) * deg
    m = (357.52772 + 35999.050340 * t - 0.0001603 * t**2 - t**3 / 300000.0) * deg
    mp = (134.96298 + 477198.867398 * t + 0.0086972 * t**2 + t**3 / 56250.0) * deg
    f = (93.27191 + 483202.017538 * t - 0.0036825 * t**2 + t**3 / 327270.0) * deg
    om = (125.04452 - 1934.136261 * t + 0.0020708 * t**2 + t**3 / 450000.0) * deg
    fund = (d, m, mp, f, om)
    args = sum(fund[j][:, None] * _NUT[None, :, j] for j in range(5))  # (N, 13)
    dpsi = (np.sin(args) * (_NUT[:, 5] + _NUT[:, 6] * t[:, None])).sum(axis=1)
    deps = (np.cos(args) * (_NUT[:, 7] + _NUT[:, 8] * t[:, None])).sum(axis=1)
    return dpsi * 1e-4 * _ARCSEC, deps * 1e-4 * _ARCSEC


def sun_position_teme_km(jd_tt: np.ndarray | float) -> np.ndarray:
    """Apparent geocentric Sun position [km] in TEME of date, shape (N, 3).

    `jd_tt`: Julian date(s) in TT (TDB-TT < 2 ms is ignored). Direction accuracy
    ~0.5 arcsec over 2020-2040 (see module docstring); distance ~1e-6 relative.
    """
    jd = np.atleast_1d(np.asarray(jd_tt, dtype=np.float64))
    t_cy = (jd - _J2000_JD) / 36525.0
    tau = t_cy / 10.0
    # Heliocentric ecliptic coordinates of the Earth, mean ecliptic and equinox of date.
    l_rad = _series(_L, tau)
    b_rad = _series(_B, tau)
    r_au = _series(_R, tau)
    # Geocentric Sun, then FK5 (Meeus eq. 25.9).
    lam = l_rad + np.pi
    beta = -b_rad
    lam_p = lam - (1.397 * t_cy + 0.00031 * t_cy**2) * np.pi / 180.0
    lam = lam - 0.09033 * _ARCSEC
    beta = beta + 0.03916 * _ARCSEC * (np.cos(lam_p) - np.sin(lam_p))
    # Nutation and aberration -> apparent longitude, true equinox of date.
    dpsi, deps = _nutation(t_cy)
    lam = lam + dpsi - 20.4898 * _ARCSEC / r_au
    eps0 = (84381.448 - 46.8150 * t_cy - 0.00059 * t_cy**2 + 0.001813 * t_cy**3) * _ARCSEC
    eps = eps0 + deps
    # Ecliptic of date -> true equator of date.
    cb = np.cos(beta)
    x = cb * np.cos(lam)
    yl = cb * np.sin(lam)
    zl = np.sin(beta)
    y = yl * np.cos(eps) - zl * np.sin(eps)
    z = yl * np.sin(eps) + zl * np.cos(eps)
    # True equinox -> TEME's mean equinox: rotate RA back by the equation of the equinoxes.
    eqeq = dpsi * np.cos(eps)
    ce, se = np.cos(eqeq), np.sin(eqeq)
    xt = x * ce + y * se
    yt = -x * se + y * ce
    scale = r_au * AU_KM
    return np.stack((xt * scale, yt * scale, z * scale), axis=-1)
