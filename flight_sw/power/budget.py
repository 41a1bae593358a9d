"""Per-orbit optional-energy budget: how much training and extra inference an orbit can pay for.

    budget = predicted generation - essential loads - energy to end the orbit at
             the reserve state of charge - margin            (never below zero)

The generation comes from the onboard eclipse prediction (sunlit seconds of the
orbit) and the satellite's own array model; the reserve term turns state of
charge above the reserve into spendable energy and a deficit into a charge the
orbit must make first. Recomputed at every orbit start and after a TLE uplink;
the executive debits it as optional tasks run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flight_sw.config.schema import MissionConfig

SECONDS_PER_YEAR = 365.25 * 86400.0



@dataclass
class OrbitBudgetState:
    orbit_index: int = -1
    orbit_start_s: float = math.nan
    orbit_end_s: float = math.nan
    umbra_entry_s: float = math.nan
    umbra_exit_s: float = math.nan
    sunlit_s: float = 0.0
    generation_j: float = 0.0
    essential_j: float = 0.0
    reserve_need_j: float = 0.0
    margin_j: float = 0.0
    budget_j: float = 0.0
    remaining_j: float = 0.0
    used_j: float = 0.0


class PowerBudget:
    """Computes and debits the optional-energy budget of the current orbit."""

    def __init__(self, cfg: MissionConfig, essential_power_w: float):
        arr = cfg.power.solar_array
        self._array_peak_w = (
            arr.solar_constant_w_m2
            * arr.area_m2
            * arr.cell_efficiency
            * (1.0 + arr.temperature_coefficient_per_k * (arr.cell_temperature_k - arr.reference_temperature_k))
        )
        self._degradation_per_s = arr.degradation_per_year / SECONDS_PER_YEAR
        bat = cfg.power.battery
        self._capacity_j = bat.capacity_wh * 3600.0
        self._fade_per_s = bat.capacity_fade_per_year / SECONDS_PER_YEAR
        self._eta_c = bat.charge_efficiency
        self._eta_d = bat.discharge_efficiency
        self._reserve_soc = bat.reserve_soc
        self._margin_j = cfg.power.budget.margin_j
        self.essential_power_w = essential_power_w
        self.state = OrbitBudgetState()

    def array_power_w(self, t_s: float) -> float:
        """Onboard model of array output in full sun at normal incidence at mission time t_s."""
        return self._array_peak_w * (1.0 - self._degradation_per_s * t_s)

    def new_orbit(
        self,
        orbit_index: int,
        start_s: float,
        end_s: float,
        umbra_entry_s: float,
        umbra_exit_s: float,
        sunlit_s: float,
        soc: float,
        sun_equivalent_s: float | None = None,
    ) -> OrbitBudgetState:
        """Open a new orbit's budget from its prediction and the current state of charge.

        `sun_equivalent_s` is the orbit's full-sun-equivalent time of the array (illumination
        x cos(incidence) integrated); it defaults to `sunlit_s` (a sun-pointing array).
        """
        s = self.state
        s.orbit_index = orbit_index
        s.orbit_start_s, s.orbit_end_s = start_s, end_s
        s.umbra_entry_s, s.umbra_exit_s = umbra_entry_s, umbra_exit_s
        s.sunlit_s = sunlit_s
        s.generation_j = self.array_power_w(start_s) * (sunlit_s if sun_equivalent_s is None else sun_equivalent_s)
        s.essential_j = self.essential_power_w * (end_s - start_s)
        capacity_j = self._capacity_j * (1.0 - self._fade_per_s * start_s)
        delta_stored_j = (self._reserve_soc - soc) * capacity_j
        # A deficit must be charged in (losing charge efficiency); a surplus can be
        # drawn down (losing discharge efficiency).
        s.reserve_need_j = delta_stored_j / self._eta_c if delta_stored_j > 0 else delta_stored_j * self._eta_d
        s.margin_j = self._margin_j
        s.budget_j = max(0.0, s.generation_j - s.essential_j - s.reserve_need_j - s.margin_j)
        s.remaining_j = s.budget_j
        s.used_j = 0.0
        return s

    def can_afford(self, energy_j: float) -> bool:
        return self.state.remaining_j >= energy_j

    def spend(self, energy_j: float) -> None:
        self.state.remaining_j -= energy_j
        self.state.used_j += energy_j
