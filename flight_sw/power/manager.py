"""The power manager component: the onboard TLE and eclipse prediction, the per-orbit energy
budget, and the power admission of every optional run.

It owns its state (TLE, budget, orbit counter, the previous orbit's umbra, the eclipse
policy the parameter table may override) and its snapshot; it reaches the rest of the
flight software only through what it is handed: the telemetry encoder (the orbit budget
report, HK SID 3) and, per call, the battery state of charge and the executive's per-task
energy tallies of the orbit.
"""

from __future__ import annotations

import struct
from dataclasses import asdict

from flight_sw.config.schema import MissionConfig
from flight_sw.power.budget import OrbitBudgetState, PowerBudget
from flight_sw.power.eclipse_predictor import EclipsePredictor
from flight_sw.power.feasibility import essential_power_w
from flight_sw.power.tle import parse_tle
from flight_sw.tmtc import dictionary as d

#: Parameter-table ids this component applies (dictionary.PARAMS).
PARAM_MARGIN_J, PARAM_ECLIPSE_POLICY, PARAM_ECLIPSE_SOC_MARGIN = 1, 2, 3


class PowerManager:
    def __init__(self, cfg: MissionConfig, tm):
        """`tm`: the telemetry encoder (`housekeeping(sid, payload, t, high)`)."""
        self.cfg = cfg
        self.tm = tm
        self.battery = cfg.power.battery
        self.tle = parse_tle(cfg.orbit.tle_line1, cfg.orbit.tle_line2)
        self.predictor = EclipsePredictor(self.tle, cfg.mission.start_utc)
        self.budget = PowerBudget(cfg, essential_power_w(cfg))
        self.orbit_index = -1
        self.prev_umbra = (float("nan"), float("nan"))
        # The parameter table (service 20) may override these config values.
        self.eclipse_policy = cfg.power.budget.eclipse_policy
        self.eclipse_soc_margin = cfg.power.budget.eclipse_soc_margin

    # -- admission ---------------------------------------------------------------------
    def admit(self, energy_j: float, claim_w: float, t: float, soc: float) -> bool:
        """Power admission of one optional run: budget, battery floor and eclipse policy.

        Optional tasks of higher priority keep a first claim on the budget for the rest of
        the orbit (`claim_w`), so bulk work such as extra imaging cannot starve training by
        spending the budget early in the orbit.
        """
        claim_j = claim_w * max(self.budget.state.orbit_end_s - t, 0.0)
        if soc <= self.battery.floor_soc or not self.budget.can_afford(energy_j + claim_j):
            return False
        if self.predicted_eclipse(t):
            if self.eclipse_policy == "never":
                return False
            if self.eclipse_policy == "soc_margin" and soc < self.battery.reserve_soc + self.eclipse_soc_margin:
                return False
        return True

    def predicted_eclipse(self, t: float) -> bool:
        """In umbra by the onboard prediction (this orbit's pass or the previous one's tail)."""
        s = self.budget.state
        # Comparisons with NaN are False: no eclipse predicted.
        return s.umbra_entry_s <= t < s.umbra_exit_s or self.prev_umbra[0] <= t < self.prev_umbra[1]

    # -- orbits ------------------------------------------------------------------------
    def open_orbit(self, t: float, soc: float, task_orbit_energy_j: list[float], reopen: bool = False) -> None:
        """Predict the coming orbits, open the next orbit's budget and report it (HK SID 3).

        `reopen` recomputes the current orbit (after a TLE uplink) instead of starting the
        next: the orbit index, the energy already used and the per-task tallies stay. Else
        the per-task tallies (the executive's list) are reported and zeroed.
        """
        pred = self.predictor.predict_orbits(t, self.cfg.power.budget.horizon_orbits)
        prev = self.budget.state
        prev_used = prev.used_j
        if not reopen:
            self.prev_umbra = (prev.umbra_entry_s, prev.umbra_exit_s)
            self.orbit_index += 1
        start, end = float(pred.orbit_start_s[0]), float(pred.orbit_end_s[0])
        sun_eq = None
        if self.cfg.power.solar_array.attitude_mode == "nadir_body_mounted":
            sun_eq = self.predictor.zenith_panel_sun_s(start, end)
        s = self.budget.new_orbit(
            self.orbit_index, start, end, float(pred.umbra_entry_s[0]), float(pred.umbra_exit_s[0]),
            float(pred.sunlit_s[0]), soc, sun_equivalent_s=sun_eq,
        )
        payload = d.HK_ORBIT_STRUCT.pack(
            s.orbit_index, s.orbit_start_s, s.orbit_end_s, s.umbra_entry_s, s.umbra_exit_s, s.sunlit_s,
            s.generation_j, s.essential_j, s.reserve_need_j, s.margin_j, s.budget_j, prev_used,
        ) + struct.pack(f">{len(task_orbit_energy_j)}f", *task_orbit_energy_j)
        if reopen:
            s.used_j = prev_used
            s.remaining_j = max(0.0, s.budget_j - prev_used)
        else:
            for i in range(len(task_orbit_energy_j)):
                task_orbit_energy_j[i] = 0.0
        self.tm.housekeeping(d.HK_ORBIT_SID, payload, t, high=True)  # the budget matters to operators

    def load_tle(self, line1: str, line2: str, t: float, soc: float, task_orbit_energy_j: list[float]) -> None:
        """Adopt an uplinked TLE: validate it, re-predict, and reopen this orbit's budget.

        Energy already spent on optional work in this orbit stays spent. A bad TLE raises
        `TleError` and changes nothing (the old TLE keeps flying).
        """
        tle = parse_tle(line1, line2)
        self.predictor.set_tle(tle)
        self.tle = tle
        self.open_orbit(t, soc, task_orbit_energy_j, reopen=True)

    def apply_params(self, table: dict[int, float]) -> None:
        """The power entries of an activated parameter table (the margin counts from the next orbit)."""
        pb = self.cfg.power.budget
        self.budget._margin_j = table.get(PARAM_MARGIN_J, pb.margin_j)
        self.eclipse_policy = d.ECLIPSE_POLICIES[
            int(table.get(PARAM_ECLIPSE_POLICY, d.ECLIPSE_POLICIES.index(pb.eclipse_policy)))]
        self.eclipse_soc_margin = table.get(PARAM_ECLIPSE_SOC_MARGIN, pb.eclipse_soc_margin)

    # -- snapshot ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"orbit_index": self.orbit_index, "prev_umbra": list(self.prev_umbra),
                "budget": asdict(self.budget.state), "tle": [self.tle.line1, self.tle.line2]}

    def load_state_dict(self, state: dict) -> None:
        if state["tle"] != [self.tle.line1, self.tle.line2]:
            self.tle = parse_tle(*state["tle"])
            self.predictor.set_tle(self.tle)
        self.orbit_index = state["orbit_index"]
        self.prev_umbra = tuple(state["prev_umbra"])
        self.budget.state = OrbitBudgetState(**state["budget"])
