"""Truth eclipse durations against an independent analytic model and published figures."""

from pathlib import Path

import numpy as np
import pytest

from flight_sw.config import load_mission_config
from sim.orbit_truth import OrbitTruth

ROOT = Path(__file__).resolve().parents[2]
R_EARTH_KM = 6378.137
MU_KM3_S2 = 398600.4418


def _cylinder_umbra_min(h_km, a_km, beta_deg, period_s):
    x = np.sqrt(h_km**2 + 2 * R_EARTH_KM * h_km) / (a_km * np.cos(np.radians(beta_deg)))
    return np.where(x < 1, np.arccos(np.clip(x, -1, 1)) / np.pi, 0.0) * period_s / 60.0


@pytest.mark.parametrize("config,days", [("default_sso.yaml", 20), ("iss_like.yaml", 60)])
def test_umbra_durations_just_below_the_cylindrical_shadow(config, days):
    cfg = load_mission_config(ROOT / "mission_configs" / config)
    truth = OrbitTruth(cfg.orbit.tle_line1, cfg.orbit.tle_line2, cfg.mission.start_utc)
    s = truth.orbit_summaries(0.0, days * 86400.0)
    a_km = (MU_KM3_S2 / (2 * np.pi / truth.period_s) ** 2) ** (1 / 3)
    ana = _cylinder_umbra_min(a_km - R_EARTH_KM, a_km, s.beta_deg, s.end_s - s.start_s)
    umbra = s.umbra_s / 60.0
    m = (np.abs(s.beta_deg) < 50.0) & (ana > 0)
    assert m.sum() > 10
    diff = umbra[m] - ana[m]
    print(f"{config}: truth - cylinder median {np.median(diff):.3f} min, range {diff.min():.3f}..{diff.max():.3f}")
    # Conical umbra and the WGS84 limb make the truth slightly shorter, never longer.
    assert np.all(diff < 0.0) and np.all(diff > -0.6)


def test_published_eclipse_figures():
    cfg = load_mission_config(ROOT / "mission_configs" / "default_sso.yaml")
    truth = OrbitTruth(cfg.orbit.tle_line1, cfg.orbit.tle_line2, cfg.mission.start_utc)
    s = truth.orbit_summaries(0.0, 3 * 86400.0)
    # REFERENCES.md: 550 km 10:30 SSO, max eclipse about 34.5-35 min, sunlit fraction about 0.63.
    assert 33.8 < np.max(s.umbra_s) / 60 < 35.2
    assert 0.62 < np.median(s.sunlit_fraction) < 0.65
