"""Benchmark group `eclipse`: the onboard predictor against the truth and against skyfield.

Figures (all measured in this run; timings are medians, ratios of two medians):

- ``eclipse.max_err_s_7d`` / ``eclipse.median_err_s_7d``: |predicted - truth| over every
  eclipse edge of 7 days for both test orbits (550 km sun-synchronous, ISS-like), the
  predictor (`flight_sw.power.EclipsePredictor`) started from the same fresh TLE as
  the truth (`sim.orbit_truth.OrbitTruth`). Like is compared with like: umbra entry
  with umbra entry, penumbra exit with penumbra exit, etc., each edge matched to the
  nearest of its kind, in both directions (a missed or a spurious pass shows up as a
  huge error). Both propagate the same TLE with SGP4, so this measures the onboard
  Sun, frame and shadow model and the root finding, not TLE/SGP4 error.
- ``eclipse.max_err_s_30d``: the same over 30 days (a report, not a gate).
- ``eclipse.speedup_vs_skyfield``: skyfield's vectorised ``find_discrete`` on
  ``is_sunlit`` (300 s step, default 1 ms epsilon) over one day, divided by the
  predictor's ``eclipse_events`` for the same day (built from scratch inside the timed
  call, so Satrec init and its Sun table are included). skyfield finds only the
  binary sunlit/shadow edges on a sphere; the predictor finds umbra and penumbra.
  The 300 s step was the fastest of 60/300/600 s here (all find the same 30 edges),
  so the ratio is the conservative one; a 60 s step makes skyfield ~1.6x slower.
- ``eclipse.speedup_vs_skyfield_bruteforce``: skyfield ``is_sunlit`` at 1 s over a
  day (86,400 samples, evaluated in 4 chunks of 21,600 to keep the peak memory near
  0.5 GB instead of ~2 GB; the work is the same) divided by the predictor's day.
  Quick mode times one chunk and multiplies by 4 (skyfield's cost is not linear in
  small batches, so fewer samples scaled up would overstate it), as the log says.
- ``eclipse.truth_year_s``: wall time of a fresh `OrbitTruth` finding a year of
  eclipse events (default settings). Quick mode times 60 days and scales to 365.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from flight_sw.power.eclipse_predictor import EclipsePredictor
from flight_sw.power.tle import parse_tle
from sim.bench import median_time_s

START_UTC = datetime(2026, 3, 1, tzinfo=UTC)
#: The mission test TLEs (epoch = START_UTC).
TLES = {
    "sso550": (
        "1 60001U 26001A   26060.00000000  .00000000  00000-0  21000-4 0  9997",
        "2 60001  97.5930 319.3000 0001000  90.0000 270.0000 15.05490646    18",
    ),
    "iss_like": (
        "1 60002U 26002A   26060.00000000  .00000000  00000-0  31000-4 0  9990",
        "2 60002  51.6400 120.0000 0004000  60.0000 300.0000 15.48880433    17",
    ),
}
FIELDS = ("penumbra_entry_s", "umbra_entry_s", "umbra_exit_s", "penumbra_exit_s")
DAY_S = 86400.0


def _edge_errors(truth, pred, t0: float, t1: float) -> np.ndarray:
    """|error| of every edge, matched to the nearest edge of the same kind both ways."""
    errs = []
    for name in FIELDS:
        a = np.asarray(getattr(truth, name))
        a = a[~np.isnan(a)]
        b = np.asarray(getattr(pred, name))
        b = b[~np.isnan(b)]
        if a.size == 0 and b.size == 0:
            continue
        if a.size == 0 or b.size == 0:
            return np.array([np.inf])
        errs.append(np.abs(a[:, None] - b[None, :]).min(axis=1))
        # predicted passes fully inside the window must exist in the truth too
        inner = b[(b > t0 + 3600.0) & (b < t1 - 3600.0)]
        errs.append(np.abs(inner[:, None] - a[None, :]).min(axis=1))
    return np.concatenate(errs)


def _errors(days: float, log: Callable[[str], None]) -> np.ndarray:
    from sim.orbit_truth import OrbitTruth

    out = []
    for name, (l1, l2) in TLES.items():
        truth = OrbitTruth(l1, l2, START_UTC).eclipse_events(0.0, days * DAY_S, tol_s=1e-3)
        pred = EclipsePredictor(parse_tle(l1, l2), START_UTC).eclipse_events(0.0, days * DAY_S)
        e = _edge_errors(truth, pred, 0.0, days * DAY_S)
        log(
            f"  {name} {days:g} d: {len(truth)} truth / {len(pred)} predicted passes, "
            f"edge error max {e.max():.4f} s, median {np.median(e):.4f} s"
        )
        out.append(e)
    return np.concatenate(out)


def _skyfield():
    from sim.ephemeris import load_ephemeris, load_timescale

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*finals2000A\.all.*expired")
        return load_ephemeris(), load_timescale()


def run(quick: bool, log: Callable[[str], None]) -> dict[str, float]:
    from skyfield.api import EarthSatellite
    from skyfield.searchlib import find_discrete

    from sim.orbit_truth import OrbitTruth

    figures: dict[str, float] = {}

    # ---- accuracy against the truth
    log("eclipse: predictor vs truth (same fresh TLE), 7 days")
    e7 = _errors(7.0, log)
    figures["eclipse.max_err_s_7d"] = float(e7.max())
    figures["eclipse.median_err_s_7d"] = float(np.median(e7))
    days_long = 30.0
    log(f"eclipse: predictor vs truth, {days_long:g} days")
    figures["eclipse.max_err_s_30d"] = float(_errors(days_long, log).max())

    # ---- speed against skyfield on one day of the sun-synchronous orbit
    eph, ts = _skyfield()
    l1, l2 = TLES["sso550"]
    tle = parse_tle(l1, l2)
    sat = EarthSatellite(l1, l2, ts=ts)
    t0 = ts.from_datetime(START_UTC)
    repeats = 3 if quick else 7

    def predictor_day():
        return EclipsePredictor(tle, START_UTC).eclipse_events(0.0, DAY_S)

    t_pred = median_time_s(predictor_day, repeats=max(repeats, 11), warmup=2)
    warm = EclipsePredictor(tle, START_UTC)
    t_warm = median_time_s(lambda: warm.eclipse_events(0.0, DAY_S), repeats=11, warmup=2)
    log(f"  predictor, one day: {t_pred * 1e3:.2f} ms from scratch, {t_warm * 1e3:.2f} ms warm")

    def sunlit(t):
        return sat.at(t).is_sunlit(eph)

    sunlit.step_days = 300.0 / DAY_S

    def skyfield_day():
        return find_discrete(t0, t0 + 1.0, sunlit)

    t_sky = median_time_s(skyfield_day, repeats=repeats, warmup=1)
    n_sky = len(skyfield_day()[0])
    n_pred = len(predictor_day())
    log(
        f"  skyfield find_discrete(is_sunlit), one day: {t_sky * 1e3:.1f} ms "
        f"({n_sky} sunlit/shadow edges; predictor: {n_pred} passes x 4 edges)"
    )
    figures["eclipse.speedup_vs_skyfield"] = t_sky / t_pred

    chunks = np.array_split(np.arange(DAY_S, dtype=np.float64), 4)
    timed = chunks[:1] if quick else chunks

    def skyfield_brute():
        for c in timed:
            sat.at(ts.tt_jd(t0.tt + c / DAY_S)).is_sunlit(eph)

    t_brute = median_time_s(skyfield_brute, repeats=3, warmup=0) * len(chunks) / len(timed)
    note = f" (quick: 1 of {len(chunks)} chunks timed, scaled x{len(chunks)})" if quick else ""
    log(f"  skyfield is_sunlit at 1 s over a day: {t_brute:.2f} s{note}")
    figures["eclipse.speedup_vs_skyfield_bruteforce"] = t_brute / t_pred

    # ---- truth cost for a year
    days_truth = 60.0 if quick else 365.0

    def truth_span():
        OrbitTruth(l1, l2, START_UTC).eclipse_events(0.0, days_truth * DAY_S)

    t_truth = median_time_s(truth_span, repeats=1 if quick else 3, warmup=0) * 365.0 / days_truth
    note = f" (quick: {days_truth:g} days timed, scaled to 365)" if quick else ""
    log(f"  truth, a year of eclipse events: {t_truth:.2f} s{note}")
    figures["eclipse.truth_year_s"] = t_truth
    t = time.perf_counter()
    EclipsePredictor(tle, START_UTC).eclipse_events(0.0, 365.0 * DAY_S)
    log(f"  (predictor, a year of eclipse events: {time.perf_counter() - t:.2f} s)")
    return figures
