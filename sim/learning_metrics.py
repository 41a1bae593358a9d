"""Learning figures of one run from its truth: per-orbit accuracy of each arm, drops, recovery.

(The evaluation suite over scenarios and seeds has its own figures: `sim.learning_suite`.)

Definitions (the issue's goals are stated in these terms):
- per-orbit accuracy: mean truth accuracy of an arm over the frames scored in an orbit;
- pre-drift level: an arm's mean per-orbit accuracy over the orbits that end before the
  abrupt shift (or over the whole run when there is none);
- mean drop [points]: pre-drift level minus the mean over every orbit of the run;
- recovery [orbits]: from the orbit containing the shift, how many orbits until the first
  orbit whose accuracy is back within `tolerance` of the pre-drift level (0: it never
  left); NaN when it never comes back within the run.
"""

from __future__ import annotations

import math

import numpy as np

ARMS = ("onboard", "frozen", "ground", "calibration", "selftrain", "bound")


def per_orbit(t_s: np.ndarray, acc: np.ndarray, period_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(orbit index, mean accuracy) for every orbit with scored frames."""
    k = np.floor(np.asarray(t_s) / period_s).astype(np.int64)
    if len(k) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    counts = np.bincount(k)
    sums = np.bincount(k, weights=acc)
    idx = np.flatnonzero(counts)
    return idx, sums[idx] / counts[idx]


def arm_figures(t_s, acc, period_s: float, shift_s: float | None, tolerance: float = 0.02) -> dict:
    idx, mean = per_orbit(t_s, acc, period_s)
    if len(idx) == 0:
        return {"pre_level": math.nan, "mean": math.nan, "mean_drop_pts": math.nan, "recovery_orbits": math.nan}
    if shift_s is None:
        pre = mean
    else:
        pre = mean[(idx + 1) * period_s <= shift_s]
    level = float(np.mean(pre)) if len(pre) else math.nan
    overall = float(np.mean(mean))
    recovery = math.nan
    if shift_s is not None and math.isfinite(level):
        k0 = int(shift_s // period_s)
        after = idx >= k0
        ok = np.flatnonzero(after & (mean >= level - tolerance))
        if len(ok):
            recovery = float(idx[ok[0]] - k0)
    return {
        "pre_level": level,
        "mean": overall,
        "mean_drop_pts": (level - overall) * 100.0,
        "recovery_orbits": recovery,
    }


def learning_figures(truth: dict, period_s: float, shift_s: float | None) -> dict[str, dict]:
    out = {}
    for arm in ARMS:
        key = f"acc_{arm}"
        if key in truth and len(truth[key]):
            out[arm] = arm_figures(truth["acc_t_s"], truth[key], period_s, shift_s)
    return out
