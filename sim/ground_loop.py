"""The ground retraining loop, run as a comparison arm in the same world and seed.

The classic repair: the satellite keeps the labelled samples it collects (the same
site-map and teacher labels the onboard learner gets: the same label budget); at
each contact a share of the downlink carries them down; the ground refits the head
on the most recent samples (with the same frozen int8 extractor), and after a
turnaround (review, scheduling) the new head goes up at the next contact.

It reacts to drift: a drift alarm the satellite raised reaches the ground in the
telemetry of the next contact; from then on the ground drops every sample collected
before the alarm and retrains as soon as `REACT_MIN_SAMPLES` post-alarm samples are
down, without waiting for its regular retraining slot. The arm
never flies: the simulator scores it on the same frames as the onboard model and
the frozen pre-launch model, so the three are compared like with like.
"""

from __future__ import annotations

import bisect

import numba
import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.ml.kernels import classify_into
from flight_sw.ml.model import FeatureExtractor, ModelImage


#: Bytes per downlinked labelled sample: bands x float32 + a label byte + 8 B time.
def sample_bytes(bands: int) -> int:
    return 4 * bands + 1 + 8


#: Post-alarm samples the ground needs before a reactive retraining.
REACT_MIN_SAMPLES = 256


@numba.njit(cache=True)
def _gram(phi, y, n_cls):  # pragma: no cover - compiled
    """phi^T phi and phi^T onehot(y), in plain loops (steady cost, no BLAS thread start-up)."""
    n, aug = phi.shape
    q = np.zeros((aug, aug))
    b = np.zeros((aug, n_cls))
    for i in range(n):
        for r in range(aug):
            v = phi[i, r]
            if v == 0.0:
                continue
            for c in range(aug):
                q[r, c] += v * phi[i, c]
            b[r, y[i]] += v
    return q, b


class _Ring:
    """Fixed-capacity FIFO of rows (oldest dropped when full)."""

    def __init__(self, cap: int, width: int, dtype):
        self.x = np.zeros((cap, width), dtype)
        self.y = np.zeros(cap, np.int64)
        self.t = np.zeros(cap)
        self.head = 0
        self.count = 0

    def push(self, t, x: np.ndarray, y: np.ndarray) -> None:
        """Append rows; `t` is one time for all or one per row."""
        cap = self.x.shape[0]
        k = min(x.shape[0], cap)
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), (x.shape[0],))
        x, y, t = x[-k:], y[-k:], t[-k:]
        idx = (self.head + self.count + np.arange(k)) % cap
        self.x[idx], self.y[idx], self.t[idx] = x, y, t
        overflow = max(self.count + k - cap, 0)
        self.count = min(self.count + k, cap)
        self.head = (self.head + overflow) % cap

    def pop(self, k: int, until_t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to k oldest rows collected by until_t (rows, labels, times)."""
        cap = self.x.shape[0]
        idx = (self.head + np.arange(min(k, self.count))) % cap
        idx = idx[self.t[idx] <= until_t]
        self.head = (self.head + len(idx)) % cap
        self.count -= len(idx)
        return self.x[idx], self.y[idx], self.t[idx]

    def drop_before(self, t: float) -> None:
        """Forget the rows collected before t (they are in time order)."""
        cap = self.x.shape[0]
        idx = (self.head + np.arange(self.count)) % cap
        old = int(np.count_nonzero(self.t[idx] < t))
        self.head = (self.head + old) % cap
        self.count -= old

    def all(self) -> tuple[np.ndarray, np.ndarray]:
        idx = (self.head + np.arange(self.count)) % self.x.shape[0]
        return self.x[idx], self.y[idx]


class GroundLoopArm:
    def __init__(self, cfg: MissionConfig, image: ModelImage, contacts):
        g = cfg.ground_loop
        self.cfg = cfg
        self.image = image
        self.extractor = FeatureExtractor(image)
        self.head = np.ascontiguousarray(image.head, dtype=np.float64)
        self.version = 1
        self.turnaround_s = g.turnaround_h * 3600.0
        self.bytes_per_s = cfg.downlink.rate_bps / 8.0 * g.downlink_share
        aug = image.head.shape[0]
        self.store = _Ring(g.onboard_store_samples, cfg.payload.bands, np.float32)  # onboard, awaiting downlink
        self.window = _Ring(g.window_samples, aug, np.float64)  # ground: features of received samples
        self.contacts = sorted(contacts, key=lambda p: p.start_s)
        self._starts = [p.start_s for p in self.contacts]
        self._next_contact = 0
        self._pending: list[tuple[float, np.ndarray]] = []  # (uplink-ready time, head)
        self.uplinks: list[tuple[float, int]] = []  # (time activated, version)
        self.samples_downlinked = 0
        self.retrain_every_s = g.retrain_every_h * 3600.0
        self._last_retrain_s = -float("inf")
        self.retrains = 0
        self.reactions = 0
        self._alarms: list[float] = []  # drift alarm times raised onboard, not yet known on the ground
        self._floor_t = -float("inf")  # samples collected before the last known alarm are dropped
        self._react_pending = False
        n_cls = image.head.shape[1]
        b = cfg.payload.samples_per_acquisition
        self._scores = np.zeros((b, n_cls))
        self.pred = np.zeros(b, dtype=np.int64)

    def on_labelled(self, t: float, pixels: np.ndarray, labels: np.ndarray) -> None:
        """The satellite collected labelled samples (site or teacher): keep them for downlink."""
        self.store.push(t, pixels, labels)

    def on_drift_alarm(self, t: float) -> None:
        """The satellite raised a drift alarm at t (an event in its telemetry)."""
        self._alarms.append(t)

    def advance(self, t: float) -> None:
        """Process every contact that has ended by t, and activate uplinks that are due."""
        while self._next_contact < len(self.contacts) and self.contacts[self._next_contact].end_s <= t:
            c = self.contacts[self._next_contact]
            self._next_contact += 1
            self._activate_due(c.start_s)
            known = [a for a in self._alarms if a <= c.start_s]
            if known:  # the alarm event came down in this contact's telemetry
                self._alarms = [a for a in self._alarms if a > c.start_s]
                self._floor_t = max(known)
                self.window.drop_before(self._floor_t)
                self._react_pending = True
                self.reactions += 1
            volume = int((c.end_s - c.start_s) * self.bytes_per_s // sample_bytes(self.cfg.payload.bands))
            x, y, tx = self.store.pop(volume, c.end_s)
            keep = tx >= self._floor_t
            x, y, tx = x[keep], y[keep], tx[keep]
            if len(x):
                phi = np.zeros((len(x), self.head.shape[0]))
                self.extractor.features_into(np.ascontiguousarray(x), phi)
                self.window.push(tx, phi, y)
                self.samples_downlinked += len(x)
            react = self._react_pending and self.window.count >= REACT_MIN_SAMPLES
            if react or (self.window.count and c.end_s - self._last_retrain_s >= self.retrain_every_s):
                if react:
                    self._react_pending = False
                self._last_retrain_s = c.end_s
                self.retrains += 1
                self._pending.append((c.end_s + self.turnaround_s, self._retrain()))
        self._activate_due(t)

    def _activate_due(self, t: float) -> None:
        """A ready head goes up at the first contact that starts after it is ready."""
        keep = []
        for ready, head in self._pending:
            i = bisect.bisect_left(self._starts, ready)
            if i < len(self._starts) and self._starts[i] <= t:
                self.head = head
                self.version += 1
                self.uplinks.append((self._starts[i], self.version))
            else:
                keep.append((ready, head))
        self._pending = keep

    def _retrain(self) -> np.ndarray:
        phi, y = self.window.all()
        n_cls = self.head.shape[1]
        q, b = _gram(phi, y, n_cls)
        q += 0.1 * self.image.stats_q.sum(axis=0)
        b += 0.1 * self.image.stats_b
        return np.linalg.solve(q + self.cfg.model.ridge_lambda * np.eye(q.shape[0]), b)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Classify frozen-extractor features with the ground arm's current head."""
        classify_into(features, self.head, self._scores, self.pred)
        return self.pred
