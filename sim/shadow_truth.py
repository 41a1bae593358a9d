"""Conical umbra/penumbra model with an oblate (WGS84) Earth.

Model (Montenbruck & Gill, *Satellite Orbits*, sec. 3.4.2, extended to an ellipsoid):
seen from the satellite, the sun is a disc of angular radius ``a``, the Earth a disc of
angular radius ``b`` and their centres are ``c`` apart. The visible fraction of the
solar disc is 1 - (overlap area)/(pi a^2): 1 in full sun (c >= a + b), 0 in umbra
(c <= b - a), 1 - b^2/a^2 in the annular case (c <= a - b, impossible in LEO but
handled), the lens-overlap formula in between. skyfield's ``is_sunlit`` is only a
binary spherical test, and power budgets need the penumbra (REFERENCES.md).

Oblateness: the Earth is 21 km flatter at the poles than a sphere of equatorial radius,
which moves high-latitude shadow edges by seconds. Scaling the z axis by a/b maps the
ellipsoid onto a sphere of radius a; straight lines and tangency survive the affine
map, so whether the sun's centre is hidden is decided exactly. Only the angular sizes
are distorted (<= 0.34 %), which changes the ~9 s penumbra width by ~0.03 s. The z
axis must be the Earth's rotation axis: pass vectors in TEME (true-of-date pole), not
GCRS (whose z axis is 0.36 deg off by 2026 through precession).

An optional ``shadow_height_m`` inflates the ellipsoid to mimic the atmosphere's
absorbing layer; the default 0 is the geometric (hard) Earth.
"""

from __future__ import annotations

import numpy as np

from sim.ephemeris import SUN_RADIUS_M, WGS84_A_M, WGS84_B_M


def disc_geometry_rad(
    r_sat_m: np.ndarray, r_sun_m: np.ndarray, shadow_height_m: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (a, b, c): apparent sun radius, apparent Earth radius, centre separation [rad].

    ``r_sat_m`` and ``r_sun_m`` are geocentric (N,3) vectors in an Earth-axis-aligned
    frame (TEME). Computed in the z-scaled frame where the Earth is a sphere.
    """
    r_sat_m = np.asarray(r_sat_m, dtype=np.float64)
    r_sun_m = np.asarray(r_sun_m, dtype=np.float64)
    radius_m = WGS84_A_M + shadow_height_m
    scale = np.array([1.0, 1.0, radius_m / (WGS84_B_M + shadow_height_m)])
    rs = r_sat_m * scale
    to_sun = r_sun_m * scale - rs
    # Sun's angular size from the true distance (its disc is not flattened).
    sun_dist_m = np.linalg.norm(r_sun_m - r_sat_m, axis=-1)
    a = np.arcsin(SUN_RADIUS_M / sun_dist_m)
    sat_dist_m = np.linalg.norm(rs, axis=-1)
    b = np.arcsin(np.minimum(radius_m / sat_dist_m, 1.0))
    # Angle between the Earth's centre (-rs) and the sun: atan2 keeps precision near 0/pi.
    cross = np.cross(-rs, to_sun)
    c = np.arctan2(np.linalg.norm(cross, axis=-1), np.einsum("...i,...i->...", -rs, to_sun))
    return a, b, c


def visible_fraction(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Fraction of the solar disc not hidden by the Earth's disc (0..1)."""
    a, b, c = np.broadcast_arrays(
        np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(c, np.float64)
    )
    nu = np.ones(a.shape)
    umbra = c <= b - a
    annular = (c <= a - b) & ~umbra
    partial = (c < a + b) & ~umbra & ~annular
    nu[umbra] = 0.0
    nu[annular] = 1.0 - (b[annular] / a[annular]) ** 2
    if np.any(partial):
        ap, bp, cp = a[partial], b[partial], c[partial]
        x = (cp * cp + ap * ap - bp * bp) / (2.0 * cp)
        y = np.sqrt(np.maximum(ap * ap - x * x, 0.0))
        area = (
            ap * ap * np.arccos(np.clip(x / ap, -1.0, 1.0))
            + bp * bp * np.arccos(np.clip((cp - x) / bp, -1.0, 1.0))
            - cp * y
        )
        nu[partial] = np.clip(1.0 - area / (np.pi * ap * ap), 0.0, 1.0)
    return nu


def shadow_margins_rad(
    a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth signed functions whose zeros are the shadow edges.

    ``penumbra`` < 0 exactly when any of the sun is hidden (visible_fraction < 1) and
    ``umbra`` < 0 exactly when all of it is (visible_fraction == 0). Root-finding on
    these, rather than on the clipped fraction, gives clean brackets.
    """
    return c - (a + b), c - (b - a)
