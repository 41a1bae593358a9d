"""Conical Earth-shadow model: illumination fraction and smooth shadow margins.

Model (Montenbruck & Gill, "Satellite Orbits", 2000, sec. 3.4.2): as seen from
the satellite, the Sun is a disc of apparent radius a = asin(R_sun/|s-r|), the
Earth a disc of radius b = asin(R_E/|r|), their centres c apart. The visible
fraction of the solar disc is 1 minus the overlap area of the two discs over
pi*a^2 (flat-disc approximation; uniform solar disc, no limb darkening, no
atmospheric refraction or extinction).

Oblate Earth: a sphere of the equatorial radius puts the limb up to 21 km too high
near the poles, which moved eclipse edges of our 550 km sun-synchronous test
orbit by ~7 s against the WGS-84 truth. Scaling z by a_E/b_E maps the WGS-84
ellipsoid onto a sphere; lines and tangency survive an affine map, so whether the
Sun's centre is hidden is decided exactly, and only the apparent disc sizes are
distorted (<= 0.34 %, ~0.03 s on the ~9 s penumbra). This needs z along the
Earth's rotation axis: pass TEME (true pole of date) vectors, not GCRS.
`polar_scale=1.0` gives the plain spherical model.

Why the margins: the eclipse predictor needs smooth functions whose zeros are the
contact instants, not the kinked fraction. With c, a, b as above:
  penumbra margin  g_pen = c - (b + a)  (< 0: some of the Sun hidden)
  umbra margin     g_umb = c - (b - a)  (< 0: all of the Sun hidden)
Both are smooth in time, and their analytic time derivatives let the predictor
use Newton steps and cubic-Hermite checks for grazing passes between samples.

All kernels are numba-compiled loops over rows (positions in km).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .sun import SUN_RADIUS_KM

__all__ = [
    "EARTH_POLAR_RADIUS_KM",
    "EARTH_RADIUS_KM",
    "WGS84_POLAR_SCALE",
    "illumination_fraction",
    "shadow_margins",
]

#: WGS-84 equatorial radius [km] (NIMA TR8350.2).
EARTH_RADIUS_KM = 6378.137
#: WGS-84 polar radius [km], a (1 - f) with f = 1/298.257223563.
EARTH_POLAR_RADIUS_KM = 6356.752314245
#: z scale mapping the WGS-84 ellipsoid onto the equatorial sphere (the default model).
WGS84_POLAR_SCALE = EARTH_RADIUS_KM / EARTH_POLAR_RADIUS_KM


@njit(cache=True)
def _fraction(a: float, b: float, c: float) -> float:
    """Visible fraction of a disc of radius a behind a disc of radius b, centres c apart."""
    if c >= a + b:
        return 1.0
    if c <= b - a:
        return 0.0  # total eclipse (umbra)
    if c <= a - b:
        return 1.0 - (b * b) / (a * a)  # annular (never in Earth orbit)
    x = (c * c + a * a - b * b) / (2.0 * c)
    y = math.sqrt(max(a * a - x * x, 0.0))
    area = (
        a * a * math.acos(min(max(x / a, -1.0), 1.0))
        + b * b * math.acos(min(max((c - x) / b, -1.0), 1.0))
        - c * y
    )
    return 1.0 - area / (math.pi * a * a)


@njit(cache=True)
def _geometry(rx, ry, rz, sx, sy, sz, k):
    """(a, b, c) for one sample [rad]; k scales z (ellipsoid -> sphere)."""
    wx, wy, wz = sx - rx, sy - ry, sz - rz  # satellite -> Sun, true metric
    a = math.asin(min(SUN_RADIUS_KM / math.sqrt(wx * wx + wy * wy + wz * wz), 1.0))
    rz = rz * k
    wz = wz * k
    rn = math.sqrt(rx * rx + ry * ry + rz * rz)
    # angle between (-r) and w in the scaled frame, via atan2 for accuracy at all angles
    dot = -(rx * wx + ry * wy + rz * wz)
    cx = -(ry * wz - rz * wy)
    cy = -(rz * wx - rx * wz)
    cz = -(rx * wy - ry * wx)
    c = math.atan2(math.sqrt(cx * cx + cy * cy + cz * cz), dot)
    b = math.asin(min(EARTH_RADIUS_KM / rn, 1.0))
    return a, b, c


@njit(cache=True)
def illumination_fraction(
    r_sat_km: np.ndarray, r_sun_km: np.ndarray, polar_scale: float = WGS84_POLAR_SCALE
) -> np.ndarray:
    """Fraction (0..1) of the solar disc visible from each satellite position, shape (N,).

    `r_sat_km`, `r_sun_km`: (N, 3) geocentric positions in the same Earth-axis frame.
    """
    n = r_sat_km.shape[0]
    out = np.empty(n)
    for i in range(n):
        a, b, c = _geometry(
            r_sat_km[i, 0],
            r_sat_km[i, 1],
            r_sat_km[i, 2],
            r_sun_km[i, 0],
            r_sun_km[i, 1],
            r_sun_km[i, 2],
            polar_scale,
        )
        out[i] = _fraction(a, b, c)
    return out


@njit(cache=True)
def shadow_margins(
    r_sat_km: np.ndarray,
    v_sat_km_s: np.ndarray,
    r_sun_km: np.ndarray,
    polar_scale: float = WGS84_POLAR_SCALE,
):
    """Penumbra and umbra margins [rad] and their time derivatives [rad/s].

    Returns (g_pen, g_umb, dg_pen, dg_umb), each shape (N,). The derivatives neglect
    the Sun's own motion (~2e-7 rad/s against ~1e-3 rad/s for the satellite) and the
    z-scaling of the Sun's distance: they steer Newton steps, the zeros come from
    the margins themselves.
    """
    n = r_sat_km.shape[0]
    k = polar_scale
    g_pen = np.empty(n)
    g_umb = np.empty(n)
    d_pen = np.empty(n)
    d_umb = np.empty(n)
    for i in range(n):
        rx, ry, rz = r_sat_km[i, 0], r_sat_km[i, 1], r_sat_km[i, 2]
        sx, sy, sz = r_sun_km[i, 0], r_sun_km[i, 1], r_sun_km[i, 2]
        a, b, c = _geometry(rx, ry, rz, sx, sy, sz, k)
        g_pen[i] = c - (b + a)
        g_umb[i] = c - (b - a)
        # In the scaled frame: u = -r, w = s - r, u' = w' = -v (the map is linear).
        vx, vy, vz = v_sat_km_s[i, 0], v_sat_km_s[i, 1], v_sat_km_s[i, 2] * k
        rz = rz * k
        wx, wy, wz = sx - rx, sy - ry, sz * k - rz
        rn = math.sqrt(rx * rx + ry * ry + rz * rz)
        wn = math.sqrt(wx * wx + wy * wy + wz * wz)
        uw = -(rx * wx + ry * wy + rz * wz)
        rv = rx * vx + ry * vy + rz * vz
        wv = wx * vx + wy * vy + wz * vz
        d_uw = -wv + rv  # d(u.w)/dt = u'.w + u.w' = -v.w + r.v
        d_un = rv / rn  # d|u|/dt
        d_wn = -wv / wn  # d|w|/dt
        cos_c = uw / (rn * wn)
        d_cos = d_uw / (rn * wn) - cos_c * (d_un / rn + d_wn / wn)
        sin_c = math.sin(c)
        dc = -d_cos / sin_c if sin_c > 1e-12 else 0.0
        db = -EARTH_RADIUS_KM / (rn * rn * math.cos(b)) * d_un
        da = -SUN_RADIUS_KM / (wn * wn * math.cos(a)) * d_wn
        d_pen[i] = dc - db - da
        d_umb[i] = dc - db + da
    return g_pen, g_umb, d_pen, d_umb
