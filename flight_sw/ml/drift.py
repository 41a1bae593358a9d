"""Drift monitors: Page-Hinkley tests on per-sample streams, in fixed memory.

Label-free: the per-sample confidence margin of the active head (best minus second
best score) on every inference batch; a sensor that ages or jumps pushes samples
towards the decision boundaries and the margin drops. Label-based: per-sample
correctness on calibration labels. Page-Hinkley for a decrease of the mean
(Page 1954; Hinkley 1971): with the running mean m_t,

    U_t = sum_{i<=t} (m_i - x_i - delta),   alarm when U_t - min_{i<=t} U_i > lambda,

then the test restarts. river's defaults on a step shift fire after about 6 samples
(REFERENCES.md); delta and lambda trade delay against false alarms and are set in the
mission config (`model.drift_delta`, `model.drift_threshold`).
"""

from __future__ import annotations

import numba
import numpy as np

# State vector layout (float64): samples seen, running mean, U, min U.
N, MEAN, CUM, MIN_CUM = range(4)
STATE_SIZE = 4


@numba.njit(cache=True)
def page_hinkley_update(state, xs, n, delta, threshold):  # pragma: no cover - compiled
    """Feed n samples; return the index of the sample that raised the alarm, or -1.

    After an alarm the state restarts from the samples that follow it.
    """
    for i in range(n):
        x = xs[i]
        state[N] += 1.0
        state[MEAN] += (x - state[MEAN]) / state[N]
        state[CUM] += state[MEAN] - x - delta
        if state[CUM] < state[MIN_CUM]:
            state[MIN_CUM] = state[CUM]
        if state[CUM] - state[MIN_CUM] > threshold:
            state[N] = 0.0
            state[MEAN] = 0.0
            state[CUM] = 0.0
            state[MIN_CUM] = 0.0
            return i
    return -1


class PageHinkley:
    """A Page-Hinkley test whose state lives in a preallocated buffer."""

    def __init__(self, state: np.ndarray, delta: float, threshold: float):
        self.state = state
        self.state[:] = 0.0
        self.delta = delta
        self.threshold = threshold
        self.alarms = 0
        self.samples = 0

    def update(self, xs: np.ndarray, n: int) -> int:
        """Feed n samples; return the alarm's sample index within xs, or -1."""
        hit = page_hinkley_update(self.state, xs, n, self.delta, self.threshold)
        self.samples += n
        if hit >= 0:
            self.alarms += 1
        return hit

    @property
    def statistic(self) -> float:
        """Current U_t - min U: how close the test is to its threshold."""
        return float(self.state[CUM] - self.state[MIN_CUM])
