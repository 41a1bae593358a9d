"""Orbit truth for the simulator: position, sun, umbra/penumbra, beta, ground track, contacts.

Deliberately higher fidelity than the onboard predictor (DESIGN.md "sim"): SGP4 with the
DE421 apparent sun, a conical shadow on the WGS84 ellipsoid (:mod:`sim.shadow_truth`)
and event edges refined by root finding rather than read off a sampling grid.

Why it is fast enough for a year in a few seconds: the satellite is propagated with the
C SGP4 (``Satrec.sgp4_array``, ~0.5 us/sample) in its native TEME frame, and everything
skyfield computes with nutation (sun, TEME->GCRS) comes from hourly tables
(:class:`sim.ephemeris.SlowFrameTables`). Events are found by sampling on a coarse grid,
then refining every bracket at once (vectorised bisection finished by one secant step)
and probing local minima between samples so short grazing events are not missed.
Positions agree with skyfield's ``EarthSatellite.at()`` to millimetres (see tests).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sgp4.api import SGP4_ERRORS, Satrec
from skyfield.sgp4lib import theta_GMST1982

from sim import contacts as _geo
from sim import shadow_truth as _shadow
from sim.contacts import CalibrationSite, GroundStation, Pass, SiteOverpass
from sim.ephemeris import MissionClock, SlowFrameTables

__all__ = [
    "CalibrationSite",
    "EclipseEvents",
    "GroundStation",
    "OrbitSummary",
    "OrbitTruth",
    "Pass",
    "SiteOverpass",
    "find_intervals",
    "validate_tle",
]

_CHUNK = 1 << 16  # samples per evaluation batch: bounds temporaries to a few tens of MB
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class EclipseEvents:
    """One row per eclipse (penumbra entry to penumbra exit), all ``t_s``.

    ``umbra_*`` are NaN when the passage only grazes the penumbra. Eclipses cut by the
    search window's edges are dropped, so every row is a complete passage.
    """

    penumbra_entry_s: np.ndarray
    umbra_entry_s: np.ndarray
    umbra_exit_s: np.ndarray
    penumbra_exit_s: np.ndarray

    def __len__(self) -> int:
        return len(self.penumbra_entry_s)

    @property
    def umbra_duration_s(self) -> np.ndarray:
        """Umbra duration per eclipse (NaN for penumbra-only grazes)."""
        return self.umbra_exit_s - self.umbra_entry_s

    @property
    def duration_s(self) -> np.ndarray:
        """Penumbra entry to penumbra exit."""
        return self.penumbra_exit_s - self.penumbra_entry_s


@dataclass(frozen=True, eq=False)
class OrbitSummary:
    """One row per orbit, ascending node to the next ascending node (true equator).

    ``umbra_s``/``penumbra_s`` are the time spent in each inside that orbit (an
    eclipse straddling a node is split between orbits); ``sunlit_fraction`` is the
    integral of the visible solar fraction over the orbit divided by its duration, so
    it is what a solar array actually sees; ``beta_deg`` is taken at the orbit start.
    """

    start_s: np.ndarray
    end_s: np.ndarray
    umbra_s: np.ndarray
    penumbra_s: np.ndarray
    sunlit_fraction: np.ndarray
    beta_deg: np.ndarray

    def __len__(self) -> int:
        return len(self.start_s)

    @property
    def duration_s(self) -> np.ndarray:
        return self.end_s - self.start_s


# --------------------------------------------------------------------------- TLE


def _tle_checksum(line: str) -> int:
    return sum(int(ch) if ch.isdigit() else (1 if ch == "-" else 0) for ch in line[:68]) % 10


def validate_tle(line1: str, line2: str) -> tuple[str, str]:
    """Check line numbers, lengths, checksums and matching catalogue numbers.

    ``sgp4`` accepts corrupted TLEs silently (REFERENCES.md), so the truth refuses them.
    """
    lines = (line1.rstrip(), line2.rstrip())
    for number, line in enumerate(lines, start=1):
        if len(line) != 69 or line[0] != str(number):
            raise ValueError(
                f"TLE line {number} must be 69 characters starting with '{number}': {line!r}"
            )
        if not line[68].isdigit() or int(line[68]) != _tle_checksum(line):
            raise ValueError(
                f"TLE line {number} checksum is {line[68]!r}, computed {_tle_checksum(line)}: {line!r}"
            )
    if lines[0][2:7] != lines[1][2:7]:
        raise ValueError(f"TLE catalogue numbers differ: {lines[0][2:7]!r} vs {lines[1][2:7]!r}")
    return lines


# ------------------------------------------------------------------ event search


@dataclass(frozen=True, eq=False)
class Intervals:
    """Time intervals where one search function is negative; ``*_cut`` marks an
    interval clipped by the window edge (already in progress / still running)."""

    start_s: np.ndarray
    end_s: np.ndarray
    start_cut: np.ndarray
    end_cut: np.ndarray


def _grid(t0_s: float, t1_s: float, step_s: float) -> np.ndarray:
    n = int(np.floor((t1_s - t0_s) / step_s + 1e-9))
    t = t0_s + np.arange(n + 1, dtype=np.float64) * step_s
    t = t[t < t1_s - 1e-6]
    return np.append(t, t1_s)


def _column_evaluator(func: Callable[[np.ndarray], np.ndarray]):
    def evaluate(t: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if t.size == 0:
            return np.empty(0)
        return func(t)[np.arange(t.size), cols]

    return evaluate


def golden_minimise(
    evaluate, lo: np.ndarray, hi: np.ndarray, cols: np.ndarray, tol_s: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised golden-section search: minimum of each column over its [lo, hi].

    One batched evaluation per iteration for all candidates at once.
    """
    lo, hi = lo.astype(np.float64).copy(), hi.astype(np.float64).copy()
    if lo.size == 0:
        return lo, lo.copy()
    c = hi - _GOLDEN * (hi - lo)
    d = lo + _GOLDEN * (hi - lo)
    fcd = evaluate(np.concatenate([c, d]), np.concatenate([cols, cols]))
    fc, fd = fcd[: lo.size], fcd[lo.size :]
    width = float(np.max(hi - lo))
    n_iter = int(np.ceil(np.log(max(width, tol_s) / tol_s) / np.log(1.0 / _GOLDEN))) + 1
    for _ in range(n_iter):
        left = fc < fd  # minimum in [lo, d]
        hi = np.where(left, d, hi)
        lo = np.where(left, lo, c)
        new_t = np.where(left, hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo))
        f_new = evaluate(new_t, cols)
        c, d, fc, fd = (
            np.where(left, new_t, d),
            np.where(left, c, new_t),
            np.where(left, f_new, fd),
            np.where(left, fc, f_new),
        )
    better_c = fc < fd
    return np.where(better_c, c, d), np.where(better_c, fc, fd)


def _bisect(evaluate, lo, hi, f_lo, f_hi, cols, tol_s: float) -> np.ndarray:
    """Vectorised bisection of sign brackets to width ``tol_s``, then one secant step.

    Bisection guarantees the bracket; the final linear interpolation makes the error
    much smaller than ``tol_s`` for the smooth functions used here.
    """
    if lo.size == 0:
        return lo
    width = float(np.max(hi - lo))
    n_iter = max(0, int(np.ceil(np.log2(width / tol_s)))) if width > tol_s else 0
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        f_mid = evaluate(mid, cols)
        same = (f_mid < 0) == (f_lo < 0)
        lo, f_lo = np.where(same, mid, lo), np.where(same, f_mid, f_lo)
        hi, f_hi = np.where(same, hi, mid), np.where(same, f_hi, f_mid)
    denom = f_hi - f_lo
    safe = np.where(denom != 0.0, denom, 1.0)
    root = np.where(denom != 0.0, lo - f_lo * (hi - lo) / safe, 0.5 * (lo + hi))
    return np.clip(root, lo, hi)


def find_intervals(
    func: Callable[[np.ndarray], np.ndarray],
    t0_s: float,
    t1_s: float,
    step_s: float,
    tol_s: float,
    rate_bounds: Sequence[float | None],
) -> list[Intervals]:
    """Find where each column of ``func(t) -> (N, K)`` is negative over [t0_s, t1_s].

    1. Sample on a coarse grid (in batches).
    2. Probe discrete local minima that are still >= 0 but within ``rate * step`` of
       zero (``rate_bounds[k]`` bounds |df/dt|; None disables): a golden-section search
       finds the true minimum, and if it is negative the dip becomes a sampled point.
       This catches grazing events shorter than the step.
    3. Refine every sign change of every column in one vectorised bisection.
    """
    if not t1_s > t0_s:
        raise ValueError(f"need t1_s > t0_s, got [{t0_s}, {t1_s}]")
    if not step_s > 0 or not tol_s > 0:
        raise ValueError(f"step_s and tol_s must be > 0, got {step_s}, {tol_s}")
    t = _grid(float(t0_s), float(t1_s), float(step_s))
    values = np.concatenate([func(t[i : i + _CHUNK]) for i in range(0, t.size, _CHUNK)])
    n_cols = values.shape[1]
    evaluate = _column_evaluator(func)

    # Step 2: grazing dips between samples.
    g_lo, g_hi, g_col = [], [], []
    if t.size >= 3:
        span = t[2:] - t[:-2]
        for k, rate in enumerate(rate_bounds):
            if rate is None:
                continue
            f = values[:, k]
            mid = f[1:-1]
            sel = (mid >= 0) & (mid <= f[:-2]) & (mid <= f[2:]) & (mid < rate * span)
            i = np.nonzero(sel)[0] + 1
            g_lo.append(t[i - 1])
            g_hi.append(t[i + 1])
            g_col.append(np.full(i.size, k))
    extra: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if g_lo and sum(a.size for a in g_lo):
        cols = np.concatenate(g_col)
        t_min, f_min = golden_minimise(
            evaluate, np.concatenate(g_lo), np.concatenate(g_hi), cols, tol_s=min(tol_s, 0.01)
        )
        dips = f_min < 0
        for k in np.unique(cols[dips]):
            m = dips & (cols == k)
            extra[int(k)] = (t_min[m], f_min[m])

    # Step 3: sign-change brackets for every column, refined together.
    b_lo, b_hi, f_lo, f_hi, b_col, b_entry = [], [], [], [], [], []
    inside_first = np.zeros(n_cols, bool)
    inside_last = np.zeros(n_cols, bool)
    for k in range(n_cols):
        tk, fk = t, values[:, k]
        if k in extra:
            te, fe = extra[k]
            order = np.argsort(te)
            pos = np.searchsorted(tk, te[order])
            tk, fk = np.insert(tk, pos, te[order]), np.insert(fk, pos, fe[order])
        inside = fk < 0
        inside_first[k], inside_last[k] = inside[0], inside[-1]
        j = np.nonzero(inside[:-1] != inside[1:])[0]
        b_lo.append(tk[j])
        b_hi.append(tk[j + 1])
        f_lo.append(fk[j])
        f_hi.append(fk[j + 1])
        b_col.append(np.full(j.size, k))
        b_entry.append(~inside[j])
    col = np.concatenate(b_col)
    entry = np.concatenate(b_entry)
    roots = _bisect(
        evaluate,
        np.concatenate(b_lo),
        np.concatenate(b_hi),
        np.concatenate(f_lo),
        np.concatenate(f_hi),
        col,
        tol_s,
    )

    result = []
    for k in range(n_cols):
        mine = col == k
        starts = roots[mine & entry]
        ends = roots[mine & ~entry]
        start_cut = np.zeros(starts.size, bool)
        end_cut = np.zeros(ends.size, bool)
        if inside_first[k]:
            starts = np.insert(starts, 0, t0_s)
            start_cut = np.insert(start_cut, 0, True)
        if inside_last[k]:
            ends = np.append(ends, t1_s)
            end_cut = np.append(end_cut, True)
        assert starts.size == ends.size, "unpaired interval edges"
        result.append(Intervals(starts, ends, start_cut, end_cut))
    return result


def _gauss_legendre_integral(func, a: np.ndarray, b: np.ndarray, n: int = 16) -> np.ndarray:
    """Integral of ``func`` over each [a, b] with one batched n-point Gauss-Legendre rule."""
    if a.size == 0:
        return np.zeros(0)
    x, w = np.polynomial.legendre.leggauss(n)
    half = 0.5 * (b - a)
    t = (0.5 * (a + b))[:, None] + half[:, None] * x[None, :]
    return half * (func(t.ravel()).reshape(t.shape) @ w)


def _split_at(starts, ends, cuts):
    """Split intervals (each shorter than the gap between cuts) at the cut times."""
    k = np.searchsorted(cuts, starts, side="right")
    inner = (k < cuts.size) & (cuts[np.minimum(k, cuts.size - 1)] < ends)
    cut_t = cuts[np.minimum(k, cuts.size - 1)][inner]
    s = np.concatenate([starts[~inner], starts[inner], cut_t])
    e = np.concatenate([ends[~inner], cut_t, ends[inner]])
    order = np.argsort(s, kind="stable")
    return s[order], e[order]


# ------------------------------------------------------------------ the truth


class OrbitTruth:
    """High-fidelity orbit, sun and shadow truth for one satellite.

    All times are ``t_s``: float64 SI seconds since ``start_utc``. Methods are
    vectorised over time; the eclipse/contact searches cost one coarse pass plus a few
    batched refinement passes.
    """

    def __init__(
        self,
        tle_line1: str,
        tle_line2: str,
        start_utc: _dt.datetime,
        *,
        shadow_height_m: float = 0.0,
    ):
        line1, line2 = validate_tle(tle_line1, tle_line2)
        self.tle_line1, self.tle_line2 = line1, line2
        self.start_utc = start_utc
        self.clock = MissionClock(start_utc)
        self._tables = SlowFrameTables(self.clock)
        self._satrec = Satrec.twoline2rv(line1, line2)
        self.shadow_height_m = float(shadow_height_m)
        # Mean motion bounds how fast any shadow angle can change (grazing probe).
        self.mean_motion_rad_s = self._satrec.no_kozai / 60.0
        self.period_s = 2.0 * np.pi / self.mean_motion_rad_s

    # ---------------------------------------------------------------- states

    def _teme(self, t: np.ndarray, parts=None) -> tuple[np.ndarray, np.ndarray]:
        """SGP4 TEME position [m] and velocity [m/s], flat (N,3)."""
        if t.size == 0:
            return np.empty((0, 3)), np.empty((0, 3))
        whole, utc_frac, _ = parts if parts is not None else self.clock.jd_parts(t)
        err, r_km, v_km_s = self._satrec.sgp4_array(whole, utc_frac)
        if np.any(err):
            bad = int(np.argmax(err != 0))
            raise ValueError(
                f"SGP4 failed at t_s={t[bad]:.3f}: {SGP4_ERRORS.get(int(err[bad]), err[bad])}"
            )
        return r_km * 1e3, v_km_s * 1e3

    def _itrs(self, t: np.ndarray, with_sun: bool = False):
        """Earth-fixed satellite (and optionally sun) positions [m].

        TEME -> ITRS is a z rotation by GMST1982 (AIAA 2006-6753), the same path
        skyfield takes; polar motion is ignored (<= 15 m).
        """
        parts = self.clock.jd_parts(t)
        r, _ = self._teme(t, parts)
        theta, _ = theta_GMST1982(parts[0], parts[2])
        c, s = np.cos(theta), np.sin(theta)

        def rotate(v):
            return np.stack(
                [c * v[:, 0] + s * v[:, 1], -s * v[:, 0] + c * v[:, 1], v[:, 2]], axis=-1
            )

        if not with_sun:
            return rotate(r)
        return rotate(r), rotate(self._tables.sun_teme_m(t))

    @staticmethod
    def _flat(t_s) -> tuple[np.ndarray, tuple]:
        arr = np.asarray(t_s, dtype=np.float64)
        return arr.reshape(-1), arr.shape

    # ---------------------------------------------------------------- public API

    def positions_m(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(satellite GCRS, apparent geocentric sun GCRS), metres, shapes (..., 3)."""
        t, shape = self._flat(t_s)
        r_teme, _ = self._teme(t)
        rot = self._tables.teme_from_gcrs(t)
        r_gcrs = np.einsum("nji,nj->ni", rot, r_teme)  # R^T r: rotations are orthogonal
        sun = self._tables.sun_gcrs_m(t)
        return r_gcrs.reshape(shape + (3,)), sun.reshape(shape + (3,))

    def _disc_geometry(self, t: np.ndarray):
        r, _ = self._teme(t)
        return _shadow.disc_geometry_rad(r, self._tables.sun_teme_m(t), self.shadow_height_m)

    def illumination(self, t_s: np.ndarray) -> np.ndarray:
        """Visible fraction of the solar disc (0 umbra .. 1 full sun), disc-overlap model."""
        t, shape = self._flat(t_s)
        return _shadow.visible_fraction(*self._disc_geometry(t)).reshape(shape)

    def beta_angle_deg(self, t_s: np.ndarray) -> np.ndarray:
        """Signed angle between the sun vector and the orbit plane (+ toward r x v)."""
        t, shape = self._flat(t_s)
        r, v = self._teme(t)
        h = np.cross(r, v)
        sun = self._tables.sun_teme_m(t)
        sin_beta = np.einsum("ni,ni->n", h, sun) / (
            np.linalg.norm(h, axis=-1) * np.linalg.norm(sun, axis=-1)
        )
        return np.degrees(np.arcsin(np.clip(sin_beta, -1.0, 1.0))).reshape(shape)

    def subsatellite_point(self, t_s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """WGS84 geodetic (lat_deg, lon_deg, alt_m) of the satellite (alt = its height)."""
        t, shape = self._flat(t_s)
        lat, lon, alt = _geo.itrs_to_geodetic(self._itrs(t))
        return lat.reshape(shape), lon.reshape(shape), alt.reshape(shape)

    def sun_elevation_at_subpoint_deg(self, t_s) -> np.ndarray:
        """Solar elevation above the local horizon at the ground track (scene lighting)."""
        t, shape = self._flat(t_s)
        r, sun = self._itrs(t, with_sun=True)
        lat, lon, _ = _geo.itrs_to_geodetic(r)
        ground = _geo.geodetic_to_itrs_m(lat, lon, 0.0)
        return _geo.elevation_deg(sun, ground, _geo.up_vector(lat, lon)).reshape(shape)

    # ---------------------------------------------------------------- eclipses

    def _check_step(self, coarse_step_s: float, tol_s: float) -> None:
        if not 0 < coarse_step_s <= self.period_s / 10.0:
            raise ValueError(
                f"coarse_step_s must be in (0, {self.period_s / 10.0:.0f}] s (a tenth of an "
                f"orbit) for the search to resolve each orbit, got {coarse_step_s}"
            )
        if not tol_s > 0:
            raise ValueError(f"tol_s must be > 0, got {tol_s}")

    def _shadow_search(self, t0_s, t1_s, coarse_step_s, tol_s, with_nodes: bool):
        """Intervals of [penumbra-or-umbra, umbra(, southern half for nodes)]."""
        self._tables.ensure(t0_s - coarse_step_s, t1_s + coarse_step_s)

        def func(t):
            r, _ = self._teme(t)
            a, b, c = _shadow.disc_geometry_rad(r, self._tables.sun_teme_m(t), self.shadow_height_m)
            g_pen, g_umb = _shadow.shadow_margins_rad(a, b, c)
            if not with_nodes:
                return np.stack([g_pen, g_umb], axis=-1)
            return np.stack([g_pen, g_umb, r[:, 2] / np.linalg.norm(r, axis=-1)], axis=-1)

        # Any shadow angle moves at most ~ the orbital rate; 3x covers eccentricity/altitude.
        rate = 3.0 * self.mean_motion_rad_s
        return find_intervals(
            func, t0_s, t1_s, coarse_step_s, tol_s, [rate, rate] + ([None] if with_nodes else [])
        )

    def eclipse_events(
        self, t0_s: float, t1_s: float, coarse_step_s: float = 30.0, tol_s: float = 0.1
    ) -> EclipseEvents:
        """Complete eclipses in [t0_s, t1_s] with every edge refined to ``tol_s``."""
        self._check_step(coarse_step_s, tol_s)
        pen, umb = self._shadow_search(t0_s, t1_s, coarse_step_s, tol_s, with_nodes=False)
        keep = ~(pen.start_cut | pen.end_cut)
        p_start, p_end = pen.start_s[keep], pen.end_s[keep]
        u_entry = np.full(p_start.size, np.nan)
        u_exit = np.full(p_start.size, np.nan)
        if p_start.size and umb.start_s.size:
            # Umbra lies inside penumbra by construction (b - a < b + a).
            owner = np.searchsorted(p_start, umb.start_s, side="right") - 1
            ok = (owner >= 0) & (umb.end_s <= p_end[np.maximum(owner, 0)])
            ok &= ~(umb.start_cut | umb.end_cut)
            # If an eclipse ever had two umbra pieces, report first entry / last exit.
            first = np.full(p_start.size, np.inf)
            last = np.full(p_start.size, -np.inf)
            np.minimum.at(first, owner[ok], umb.start_s[ok])
            np.maximum.at(last, owner[ok], umb.end_s[ok])
            has = np.isfinite(first)
            u_entry[has], u_exit[has] = first[has], last[has]
        return EclipseEvents(_frozen(p_start), _frozen(u_entry), _frozen(u_exit), _frozen(p_end))

    def orbit_summaries(self, t0_s: float, t1_s: float) -> OrbitSummary:
        """Per-orbit umbra/penumbra time, sunlit fraction and beta, node to node.

        Only orbits complete inside [t0_s, t1_s] are returned.
        """
        step_s, tol_s = 30.0, 0.1
        self._check_step(step_s, tol_s)
        pen, umb, south = self._shadow_search(t0_s, t1_s, step_s, tol_s, with_nodes=True)
        nodes = south.end_s[~south.end_cut]  # z crosses - to +: ascending node
        if nodes.size < 2:
            empty = _frozen([])
            return OrbitSummary(empty, empty, empty, empty, empty, empty)
        o_start, o_end = nodes[:-1], nodes[1:]

        # Partition shadow time into umbra and penumbra-only pieces with a depth sweep.
        edges = np.concatenate([pen.start_s, umb.start_s, umb.end_s, pen.end_s])
        delta = np.concatenate(
            [
                np.ones(pen.start_s.size),
                np.ones(umb.start_s.size),
                -np.ones(umb.end_s.size),
                -np.ones(pen.end_s.size),
            ]
        )
        order = np.lexsort((-delta, edges))  # at ties open before close
        edges, depth = edges[order], np.cumsum(delta[order])
        piece_s, piece_e, piece_depth = edges[:-1], edges[1:], depth[:-1]
        nonempty = piece_e > piece_s
        n_orbits = o_start.size

        def per_orbit(starts, ends, weights_func=None):
            starts, ends = _split_at(starts, ends, nodes)
            idx = np.searchsorted(o_start, starts, side="right") - 1
            ok = (
                (idx >= 0)
                & (idx < n_orbits)
                & (ends <= o_end[np.clip(idx, 0, n_orbits - 1)] + 1e-9)
            )
            starts, ends, idx = starts[ok], ends[ok], idx[ok]
            length = ends - starts
            dark = length if weights_func is None else weights_func(starts, ends)
            return (
                np.bincount(idx, weights=length, minlength=n_orbits),
                np.bincount(idx, weights=dark, minlength=n_orbits),
            )

        def dark_integral(a, b):
            return _gauss_legendre_integral(lambda t: 1.0 - self.illumination(t), a, b)

        umbra_s, umbra_dark = per_orbit(
            piece_s[nonempty & (piece_depth == 2)], piece_e[nonempty & (piece_depth == 2)]
        )
        pen_s, pen_dark = per_orbit(
            piece_s[nonempty & (piece_depth == 1)],
            piece_e[nonempty & (piece_depth == 1)],
            dark_integral,
        )
        duration = o_end - o_start
        sunlit = (duration - umbra_dark - pen_dark) / duration
        return OrbitSummary(
            _frozen(o_start),
            _frozen(o_end),
            _frozen(umbra_s),
            _frozen(pen_s),
            _frozen(sunlit),
            _frozen(self.beta_angle_deg(o_start)),
        )

    # ---------------------------------------------------------------- ground

    def contact_windows(
        self,
        stations: Sequence[GroundStation],
        t0_s: float,
        t1_s: float,
        coarse_step_s: float = 30.0,
        tol_s: float = 0.5,
    ) -> list[Pass]:
        """Windows with elevation above each station's mask, edges refined, sorted by start."""
        self._check_step(coarse_step_s, tol_s)
        if not stations:
            return []
        pos, up, mask = _geo.station_vectors(stations)
        self._tables.ensure(t0_s - coarse_step_s, t1_s + coarse_step_s)

        def elevation(t):
            return _geo.elevation_deg(self._itrs(t)[:, None, :], pos[None], up[None])

        found = find_intervals(
            lambda t: mask - elevation(t),
            t0_s,
            t1_s,
            coarse_step_s,
            tol_s,
            [_geo.MAX_ELEVATION_RATE_DEG_S] * len(stations),
        )
        k, start, end, peak, neg_el = self._peaks(
            found, lambda t, cols: -elevation(t)[np.arange(t.size), cols]
        )
        return [
            Pass(
                stations[k[i]].name,
                float(start[i]),
                float(end[i]),
                float(peak[i]),
                float(-neg_el[i]),
            )
            for i in range(k.size)
        ]

    def site_overpasses(
        self,
        sites: Sequence[CalibrationSite],
        t0_s: float,
        t1_s: float,
        coarse_step_s: float = 10.0,
    ) -> list[SiteOverpass]:
        """Times the sub-satellite point is within each site's radius, sorted by start.

        Edges are refined to 0.1 s; between samples the distance can dip by at most
        ground speed x step, so short chord crossings of small sites are still found.
        """
        tol_s = 0.1
        self._check_step(coarse_step_s, tol_s)
        if not sites:
            return []
        lat_c = np.array([s.lat_deg for s in sites])
        lon_c = np.array([s.lon_deg for s in sites])
        radius_km = np.array([s.radius_km for s in sites])
        self._tables.ensure(t0_s - coarse_step_s, t1_s + coarse_step_s)

        def distance_km(t):
            lat, lon, _ = _geo.itrs_to_geodetic(self._itrs(t))
            return (
                _geo.surface_distance_m(lat[:, None], lon[:, None], lat_c[None], lon_c[None]) / 1e3
            )

        found = find_intervals(
            lambda t: distance_km(t) - radius_km,
            t0_s,
            t1_s,
            coarse_step_s,
            tol_s,
            [_geo.MAX_GROUND_SPEED_KM_S] * len(sites),
        )
        k, start, end, peak, d_min = self._peaks(
            found, lambda t, cols: distance_km(t)[np.arange(t.size), cols]
        )
        if k.size == 0:
            return []
        site_pos = _geo.geodetic_to_itrs_m(lat_c[k], lon_c[k], 0.0)
        sat_el = _geo.elevation_deg(self._itrs(peak), site_pos, _geo.up_vector(lat_c[k], lon_c[k]))
        sun_el = self.sun_elevation_at_subpoint_deg(peak)
        return [
            SiteOverpass(
                sites[k[i]].name,
                float(start[i]),
                float(end[i]),
                float(peak[i]),
                float(d_min[i]),
                float(sat_el[i]),
                float(sun_el[i]),
            )
            for i in range(k.size)
        ]

    @staticmethod
    def _peaks(found: list[Intervals], objective):
        """Refine each interval's extremum (golden section); rows sorted by (start, target).

        Returns (target index, start, end, peak time, objective at peak) arrays.
        """
        starts = np.concatenate([iv.start_s for iv in found])
        ends = np.concatenate([iv.end_s for iv in found])
        cols = np.concatenate([np.full(iv.start_s.size, k) for k, iv in enumerate(found)])
        t_peak, f_peak = golden_minimise(objective, starts, ends, cols, tol_s=0.01)
        order = np.lexsort((cols, starts))
        return cols[order], starts[order], ends[order], t_peak[order], f_peak[order]
