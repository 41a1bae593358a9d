"""Can the power system carry the essential loads on the worst orbit of the mission?

Checked before a mission runs (config validation and start of a run), from the
onboard eclipse prediction and the onboard array model, so the answer is the one
the flight software itself would reach. An orbit is energy-feasible for the
essential set when the array's sunlit energy covers the essential load in
sunlight plus what the battery must deliver in shadow, grossed up by the round
trip through the battery: E_gen >= P_ess * t_sun + P_ess * t_shadow / (eta_c * eta_d).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.exec.schedule import build_task_specs, essential_energy_per_orbit_j
from flight_sw.power.budget import PowerBudget
from flight_sw.power.eclipse_predictor import EclipsePredictor, OrbitPrediction
from flight_sw.power.tle import parse_tle

#: Orbits predicted per request when sweeping a long horizon.
CHUNK_ORBITS = 32


class PowerInfeasibleError(ValueError):
    """The essential loads cannot be carried on some orbit; the message names the fields."""


@dataclass(frozen=True)
class FeasibilityReport:
    orbits: int
    worst_orbit: int
    worst_margin_j: float  # generation minus requirement on the worst orbit
    worst_generation_j: float
    worst_required_j: float
    essential_power_w: float


def essential_power_w(cfg: MissionConfig) -> float:
    """Bus base load plus the orbit-mean power of the essential tasks."""
    specs = build_task_specs(cfg.tasks, cfg.executive.minor_frame_s)
    return cfg.power.bus_base_load_w + essential_energy_per_orbit_j(specs, cfg.executive.minor_frame_s, 1.0)


def check_essential_feasibility(cfg: MissionConfig, days: float) -> FeasibilityReport:
    """Predict every orbit of the first `days` and raise if any cannot carry the essential set."""
    tle = parse_tle(cfg.orbit.tle_line1, cfg.orbit.tle_line2)
    predictor = EclipsePredictor(tle, cfg.mission.start_utc)
    horizon_s = days * 86400.0
    # Predict in chunks: the node-to-node period differs slightly from the TLE's mean
    # motion, so one long request would run out of nodes over months.
    chunks = []
    t = 0.0
    while t < horizon_s:
        chunk = predictor.predict_orbits(t, CHUNK_ORBITS)
        chunks.append(chunk)
        t = float(chunk.orbit_end_s[-1])
    pred = OrbitPrediction(*(
        np.concatenate([getattr(c, f) for c in chunks]) for f in OrbitPrediction.__dataclass_fields__
    ))
    keep = pred.orbit_start_s < max(horizon_s, 1.0)
    pred = OrbitPrediction(*(getattr(pred, f)[keep] for f in OrbitPrediction.__dataclass_fields__))
    k = len(pred)
    p_ess = essential_power_w(cfg)
    budget = PowerBudget(cfg, p_ess)
    bat = cfg.power.battery
    duration = pred.orbit_end_s - pred.orbit_start_s
    sunlit = pred.sunlit_s
    shadow = duration - sunlit
    if cfg.power.solar_array.attitude_mode == "nadir_body_mounted":
        sun_eq = np.array([predictor.zenith_panel_sun_s(float(a), float(b))
                           for a, b in zip(pred.orbit_start_s, pred.orbit_end_s, strict=True)])
    else:
        sun_eq = sunlit
    gen = np.array([budget.array_power_w(float(t)) for t in pred.orbit_start_s]) * sun_eq
    required = p_ess * sunlit + p_ess * shadow / (bat.charge_efficiency * bat.discharge_efficiency)
    margin = gen - required
    worst = int(np.argmin(margin))
    report = FeasibilityReport(k, worst, float(margin[worst]), float(gen[worst]), float(required[worst]), p_ess)
    if margin[worst] < 0:
        raise PowerInfeasibleError(
            f"power: the essential loads ({p_ess:.2f} W: power.bus_base_load_w = {cfg.power.bus_base_load_w:g} W "
            f"plus essential tasks) need {required[worst] / 1000:.1f} kJ on orbit {worst} "
            f"({shadow[worst] / 60:.1f} min of shadow) but the array delivers {gen[worst] / 1000:.1f} kJ; "
            "expected a larger power.solar_array.area_m2 or cell_efficiency, or a lower bus_base_load_w "
            "or essential task energy_j"
        )
    return report
