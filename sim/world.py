"""The simulated world: orbit, sun, power, contacts, calibration passes and the payload.

Truth is evaluated in vectorised blocks (never one skyfield call per tick): eclipse
events, contact windows and site overpasses are found once for the whole run with
refined edges, then expanded into per-tick arrays a block at a time; the
penumbra seconds are the only ones whose illumination is evaluated pointwise.
"""

from __future__ import annotations

import numpy as np

from flight_sw.app import ACQ_DARK, ACQ_SCENE, ACQ_SITE
from flight_sw.config.schema import MissionConfig
from flight_sw.ml.labels import ANC_INDEX
from flight_sw.ml.radiometry import CAL_DIFFUSER, CAL_OK, CAL_UNAVAILABLE
from sim.orbit_truth import CalibrationSite, GroundStation, OrbitTruth
from sim.power_truth import BatteryTruth, SolarArrayTruth
from sim.scene import MIN_SUN_ELEVATION_DEG, SceneTruth, start_day_of_year
from sim.sites import build_sites

#: Dark readings: the satellite in the Earth's shadow (it enters it when the sun at the ground
#: track is about 23 deg below the horizon at 550 km, 26 deg at 700 km), no stray light.
DARK_MAX_SUN_ELEVATION_DEG = -30.0
#: The sun diffuser is usable while the satellite is sunlit and the ground below is dark (the
#: terminator crossings; Sentinel-2 MSI and Landsat 8 OLI view theirs near the terminator).
DIFFUSER_SUN_ELEVATION_DEG = (-20.0, -5.0)

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
    def __init__(self, cfg: MissionConfig, duration_s: float, rng: np.random.Generator,
                 sites_rng: np.random.Generator | None = None):
        self.cfg = cfg
        self.duration_s = duration_s
        self.frame_s = cfg.executive.minor_frame_s
        self.orbit = OrbitTruth(cfg.orbit.tle_line1, cfg.orbit.tle_line2, cfg.mission.start_utc)
        self.array = SolarArrayTruth(cfg.power.solar_array)
        self.battery = BatteryTruth(cfg.power.battery)
        self.scene = SceneTruth(cfg.payload, rng, "flight", start_day_of_year(cfg.mission.start_utc))
        self.sites = build_sites(cfg, sites_rng if sites_rng is not None else np.random.default_rng(rng.integers(2**63)))
        end = duration_s + 600.0
        self.eclipses = self.orbit.eclipse_events(0.0, end)
        stations = [
            GroundStation(s.name, s.lat_deg, s.lon_deg, s.alt_m, s.elevation_mask_deg) for s in cfg.ground_stations
        ]
        self.contacts = self.orbit.contact_windows(stations, 0.0, end)
        sites = [CalibrationSite(s.name, s.lat_deg, s.lon_deg, s.radius_km) for s in cfg.calibration_sites]
        self.overpasses = self.orbit.site_overpasses(sites, 0.0, end) if sites else []
        self.site_names = [s.name for s in cfg.calibration_sites]

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
    """The payload as the flight software sees it: pixels and their ancillary data, no labels.

    Over a calibration site the pixels come from the site's true land-cover map at
    random map positions (with the pass's clouds over some of them); the ancillary
    data carry the *onboard* geolocation of each pixel on the map (the true position
    plus the geolocation error) and the detector column. The truth of every
    acquisition is kept here for scoring (`truth_for`), never handed to the flight
    software.
    """

    def __init__(self, world: World, rng: np.random.Generator):
        self.world = world
        self.rng = rng
        self.t_s = 0.0
        self.site = -1
        self.sun_elev_deg = -90.0
        self.geoloc_sigma = world.cfg.payload.geolocation_sigma_px
        names = list(world.cfg.payload.classes)
        self._cloud = names.index("cloud") if "cloud" in names else -1
        self._truth: dict[int, np.ndarray] = {}  # true classes of the last acquisition into each buffer
        self._drawn: dict[int, np.ndarray] = {}  # the pixels as drawn (labellers may reorder the buffer)
        self._maps = world.sites.true_maps  # what pixels are drawn from (tests may hide the public copy)

    def set_state(self, t_s: float, site: int, sun_elev_deg: float) -> None:
        self.t_s = t_s
        self.site = site
        self.sun_elev_deg = sun_elev_deg

    @property
    def sun_elevation_deg(self) -> float:
        """Ancillary data of the current frame: sun elevation at the ground track."""
        return self.sun_elev_deg

    def mark(self) -> tuple:
        """Where the payload's random draws stand (`rewind(mark)` undoes every acquisition since:
        the split deployment draws a frame ahead of the flight software's request)."""
        return self.rng.bit_generator.state, self.world.scene.stream_mark()

    def rewind(self, mark: tuple) -> None:
        self.rng.bit_generator.state = mark[0]
        self.world.scene.rewind_stream(mark[1])

    def acquire(self, pixels: np.ndarray, ancillary: np.ndarray) -> int:
        """Fill pixels and ancillary rows; return the ACQ_* status."""
        if self.sun_elev_deg < MIN_SUN_ELEVATION_DEG:
            return ACQ_DARK
        n = pixels.shape[0]
        truth = self._truth.get(id(pixels))
        if truth is None:
            truth = self._truth[id(pixels)] = np.zeros(n, dtype=np.int64)
        scene = self.world.scene
        if self.site < 0:
            scene.sample(self.t_s, n, scene.global_mix(self.t_s), self.sun_elev_deg, pixels, truth,
                         columns=ancillary[:, 3])
            ancillary[:n, :3] = -1
            ancillary[:n, ANC_INDEX] = np.arange(n)
            self._keep_drawn(pixels)
            return ACQ_SCENE
        self._acquire_site(pixels, ancillary, truth)
        self._keep_drawn(pixels)
        return ACQ_SITE

    def _keep_drawn(self, pixels: np.ndarray) -> None:
        drawn = self._drawn.get(id(pixels))
        if drawn is None:
            drawn = self._drawn[id(pixels)] = np.empty_like(pixels)
        np.copyto(drawn, pixels)

    def _acquire_site(self, pixels: np.ndarray, ancillary: np.ndarray, truth: np.ndarray) -> None:
        n = pixels.shape[0]
        rng = self.rng
        tmap = self._maps[self.site]
        cells = tmap.shape[0]
        pos = rng.integers(0, cells, size=(n, 2))
        near = np.clip(pos + rng.integers(-1, 2, size=(n, 2)), 0, cells - 1)
        g1 = tmap[pos[:, 0], pos[:, 1]].copy()
        g2 = tmap[near[:, 0], near[:, 1]].copy()
        cover = min(1.0, self.world.sites.cloud_cover[self.site] * rng.exponential(1.0))
        if self._cloud >= 0 and cover > 0:
            cloudy = rng.random(n) < cover
            g2[cloudy] = g1[cloudy]
            g1[cloudy] = self._cloud
        self.world.scene.sample_groups(self.t_s, g1, g2, self.sun_elev_deg, pixels, truth,
                                       columns=ancillary[:, 3])
        est = np.clip(pos + np.rint(rng.standard_normal((n, 2)) * self.geoloc_sigma).astype(np.int64), 0, cells - 1)
        ancillary[:n, 0] = self.site
        ancillary[:n, 1:3] = est
        ancillary[:n, ANC_INDEX] = np.arange(n)

    def acquire_calibration(self, kind: int, first_column: int, out: np.ndarray) -> int:
        """Dark or sun-diffuser readings of a run of detector columns, when the geometry allows."""
        e = self.sun_elev_deg
        if kind == CAL_DIFFUSER:
            lo, hi = DIFFUSER_SUN_ELEVATION_DEG
            if not lo <= e <= hi:
                return CAL_UNAVAILABLE
        elif e > DARK_MAX_SUN_ELEVATION_DEG:
            return CAL_UNAVAILABLE
        self.world.scene.calibration_reading(self.t_s, kind, first_column, out)
        return CAL_OK

    def truth_for(self, pixels: np.ndarray) -> np.ndarray:
        """True classes of the last acquisition written into `pixels` (for scoring)."""
        return self._truth[id(pixels)]

    def truth_of_rows(self, buffer: np.ndarray, ancillary: np.ndarray) -> np.ndarray:
        """True classes of rows of the last acquisition into `buffer` that a labeller may have
        reordered or thinned, found by the acquisition position in their ancillary rows."""
        return self.truth_for(buffer)[ancillary[:, ANC_INDEX]]

    def drawn_rows(self, buffer: np.ndarray, ancillary: np.ndarray | None = None) -> np.ndarray:
        """The pixels as the payload delivered them (before onboard calibration), all or by ancillary rows."""
        drawn = self._drawn[id(buffer)]
        return drawn if ancillary is None else drawn[ancillary[:, ANC_INDEX]]
