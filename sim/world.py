"""The simulated world: orbit, sun, power, contacts, calibration passes and the payload.

Truth is evaluated in vectorised blocks (never one skyfield call per tick): eclipse
events, contact windows and site overpasses are found once for the whole run with
refined edges, then expanded into per-tick arrays a block at a time; the
penumbra seconds are the only ones whose illumination is evaluated pointwise.
"""

from __future__ import annotations

import numpy as np

from flight_sw.app import ACQ_DARK, ACQ_LABELLED, ACQ_SCENE
from flight_sw.config.schema import MissionConfig
from sim.orbit_truth import CalibrationSite, GroundStation, OrbitTruth
from sim.power_truth import BatteryTruth, SolarArrayTruth
from sim.scene import MIN_SUN_ELEVATION_DEG, SceneTruth

#: Grid of the smooth truth quantities (incidence, sun elevation) before interpolation.
SMOOTH_GRID_S = 30.0


class WorldBlock:
    """Per-tick truth arrays for ticks [tick0, tick0 + n)."""

    def __init__(self, tick0: int, t_s: np.ndarray, illumination, solar_w, in_contact, site, sun_elev_deg):
        self.tick0 = tick0
        self.t_s = t_s
        self.illumination = illumination
        self.solar_w = solar_w
        self.in_contact = in_contact
        self.site = site
        self.sun_elev_deg = sun_elev_deg


class World:
    def __init__(self, cfg: MissionConfig, duration_s: float, rng: np.random.Generator):
        self.cfg = cfg
        self.duration_s = duration_s
        self.frame_s = cfg.executive.minor_frame_s
        self.orbit = OrbitTruth(cfg.orbit.tle_line1, cfg.orbit.tle_line2, cfg.mission.start_utc)
        self.array = SolarArrayTruth(cfg.power.solar_array)
        self.battery = BatteryTruth(cfg.power.battery)
        self.scene = SceneTruth(cfg.payload, rng)
        end = duration_s + 600.0
        self.eclipses = self.orbit.eclipse_events(0.0, end)
        stations = [
            GroundStation(s.name, s.lat_deg, s.lon_deg, s.alt_m, s.elevation_mask_deg) for s in cfg.ground_stations
        ]
        self.contacts = self.orbit.contact_windows(stations, 0.0, end)
        sites = [CalibrationSite(s.name, s.lat_deg, s.lon_deg, s.radius_km) for s in cfg.calibration_sites]
        self.overpasses = self.orbit.site_overpasses(sites, 0.0, end) if sites else []
        self.site_names = [s.name for s in cfg.calibration_sites]
        names = list(cfg.payload.classes)
        self.site_mix = []
        for s in cfg.calibration_sites:
            mix = np.zeros(len(names))
            for cls, frac in s.class_mix.items():
                mix[names.index(cls)] = frac
            self.site_mix.append(mix / mix.sum())

    def block(self, tick0: int, n: int) -> WorldBlock:
        """Truth for n ticks starting at tick0, vectorised."""
        t = (tick0 + np.arange(n)) * self.frame_s
        t_lo, t_hi = t[0], t[-1]
        illum = np.ones(n)
        ev = self.eclipses
        for pe, px in zip(ev.penumbra_entry_s, ev.penumbra_exit_s, strict=True):
            if px < t_lo or pe > t_hi:
                continue
            i0, i1 = np.searchsorted(t, [pe, px])
            if i1 > i0:
                illum[i0:i1] = self.orbit.illumination(t[i0:i1])
        grid = np.arange(t_lo - SMOOTH_GRID_S, t_hi + 2 * SMOOTH_GRID_S, SMOOTH_GRID_S)
        sun_elev = np.interp(t, grid, self.orbit.sun_elevation_at_subpoint_deg(grid))
        if self.cfg.power.solar_array.attitude_mode == "sun_pointing":
            cos_inc = np.ones(n)
        else:
            sat, sun = self.orbit.positions_m(grid)
            zenith = sat / np.linalg.norm(sat, axis=1, keepdims=True)
            sun_dir = (sun - sat) / np.linalg.norm(sun - sat, axis=1, keepdims=True)
            cos_inc = np.interp(t, grid, np.clip(np.sum(zenith * sun_dir, axis=1), 0.0, 1.0))
        solar_w = self.array.power_w(illum, cos_inc, t)
        in_contact = np.zeros(n, dtype=bool)
        for p in self.contacts:
            if p.end_s >= t_lo and p.start_s <= t_hi:
                i0, i1 = np.searchsorted(t, [p.start_s, p.end_s])
                in_contact[i0:i1] = True
        site = np.full(n, -1, dtype=np.int64)
        for p in self.overpasses:
            if p.end_s >= t_lo and p.start_s <= t_hi:
                i0, i1 = np.searchsorted(t, [p.start_s, p.end_s])
                site[i0:i1] = self.site_names.index(p.name)
        return WorldBlock(tick0, t, illum, solar_w, in_contact, site, sun_elev)


class PayloadTruth:
    """The payload as the flight software sees it: acquire a batch of pixels (and site labels).

    Labels exist only over a calibration site in daylight, and carry configurable noise.
    """

    def __init__(self, world: World, rng: np.random.Generator):
        self.world = world
        self.rng = rng
        self.label_noise = world.cfg.payload.site_label_noise
        self.on_labelled = None  # callback(t, pixels, labels): the ground-loop arm's tap
        self.teacher_noise = world.cfg.payload.teacher_label_noise
        self.t_s = 0.0
        self.site = -1
        self.sun_elev_deg = -90.0
        self._truth: dict[int, np.ndarray] = {}  # true classes of the last acquisition into each buffer

    def set_state(self, t_s: float, site: int, sun_elev_deg: float) -> None:
        self.t_s = t_s
        self.site = site
        self.sun_elev_deg = sun_elev_deg

    @property
    def sun_elevation_deg(self) -> float:
        """Ancillary data of the current frame: sun elevation at the ground track."""
        return self.sun_elev_deg

    def acquire_teacher(self, pixels: np.ndarray, labels: np.ndarray) -> int:
        """A lit frame of the current scene, labelled by the emulated teacher model."""
        if self.sun_elev_deg < MIN_SUN_ELEVATION_DEG:
            return ACQ_DARK
        self._label(pixels, labels, self._sample(pixels), self.teacher_noise)
        return ACQ_LABELLED

    def acquire(self, pixels: np.ndarray, labels: np.ndarray) -> int:
        """Fill pixels (and labels over a calibration site); return the ACQ_* status."""
        if self.sun_elev_deg < MIN_SUN_ELEVATION_DEG:
            return ACQ_DARK
        truth = self._sample(pixels)
        if self.site < 0:
            return ACQ_SCENE
        self._label(pixels, labels, truth, self.label_noise)
        return ACQ_LABELLED

    def truth_for(self, pixels: np.ndarray) -> np.ndarray:
        """True classes of the last acquisition written into `pixels` (for scoring)."""
        return self._truth[id(pixels)]

    def _sample(self, pixels: np.ndarray) -> np.ndarray:
        """Draw the current scene (site mix over a calibration site) into pixels; return the truth."""
        scene = self.world.scene
        mix = self.world.site_mix[self.site] if self.site >= 0 else scene.global_mix(self.t_s)
        truth = self._truth.get(id(pixels))
        if truth is None:
            truth = self._truth[id(pixels)] = np.zeros(pixels.shape[0], dtype=np.int64)
        scene.sample(self.t_s, pixels.shape[0], mix, self.sun_elev_deg, pixels, truth)
        return truth

    def _label(self, pixels: np.ndarray, labels: np.ndarray, truth: np.ndarray, noise: float) -> None:
        """Labels = truth with a `noise` fraction replaced at random; tap them for the ground loop."""
        n = pixels.shape[0]
        labels[:n] = truth[:n]
        flip = self.rng.random(n) < noise
        if flip.any():
            labels[:n][flip] = self.rng.integers(0, self.world.scene.n_classes, size=int(flip.sum()))
        if self.on_labelled is not None:
            self.on_labelled(self.t_s, pixels, labels)
