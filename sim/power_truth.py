"""Power truth: solar array output and battery state, with exact energy bookkeeping.

The array model is the usual cell-area model (irradiance x area x efficiency x
temperature derating x age degradation x cos(incidence) x illuminated fraction
of the solar disc). The battery integrates net power with charge/discharge
efficiencies and hard state-of-charge limits; energy that cannot be stored is
shunted, energy that cannot be delivered is a brown-out deficit. Every joule is
booked so that generated - consumed - losses == change in stored energy.
"""

from __future__ import annotations

import numpy as np

from flight_sw.config.schema import BatteryConfig, SolarArrayConfig

SECONDS_PER_YEAR = 365.25 * 86400.0


class SolarArrayTruth:
    def __init__(self, cfg: SolarArrayConfig):
        self.cfg = cfg
        temp = 1.0 + cfg.temperature_coefficient_per_k * (cfg.cell_temperature_k - cfg.reference_temperature_k)
        self.peak_w = cfg.solar_constant_w_m2 * cfg.area_m2 * cfg.cell_efficiency * temp

    def power_w(self, illumination: np.ndarray, cos_incidence: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """Array output [W] for illuminated disc fraction, incidence cosine and mission time."""
        age = 1.0 - self.cfg.degradation_per_year * (t_s / SECONDS_PER_YEAR)
        return self.peak_w * age * illumination * np.clip(cos_incidence, 0.0, 1.0)


class BatteryTruth:
    """Energy-bookkept battery; `soc` is stored energy over (faded) capacity."""

    def __init__(self, cfg: BatteryConfig):
        self.cfg = cfg
        self.capacity_j = cfg.capacity_wh * 3600.0
        self.stored_j = cfg.initial_soc * self.capacity_j
        self.generated_j = 0.0
        self.consumed_j = 0.0  # delivered to loads
        self.charge_loss_j = 0.0
        self.discharge_loss_j = 0.0
        self.shunt_j = 0.0  # sunlight that could not be stored
        self.deficit_j = 0.0  # load that could not be served (brown-out)
        self._fade_per_s = cfg.capacity_fade_per_year / SECONDS_PER_YEAR

    @property
    def soc(self) -> float:
        return self.stored_j / self.capacity_j

    def step(self, gen_w: float, load_w: float, dt_s: float, t_s: float) -> None:
        """Advance by dt_s with array power gen_w feeding loads load_w first."""
        cap = self.capacity_j * (1.0 - self._fade_per_s * t_s) if self._fade_per_s else self.capacity_j
        gen = gen_w * dt_s
        load = load_w * dt_s
        self.generated_j += gen
        net = gen - load
        min_j = 0.0
        if net >= 0.0:
            self.consumed_j += load
            stored = net * self.cfg.charge_efficiency
            room = max(cap - self.stored_j, 0.0)
            if stored > room:
                # Only what fits is drawn from the array for charging; the rest is shunted.
                self.shunt_j += (stored - room) / self.cfg.charge_efficiency
                stored = room
            self.charge_loss_j += stored / self.cfg.charge_efficiency - stored
            self.stored_j += stored
        else:
            need = -net / self.cfg.discharge_efficiency
            avail = max(self.stored_j - min_j, 0.0)
            if need > avail:
                served = avail * self.cfg.discharge_efficiency
                self.deficit_j += -net - served
                self.consumed_j += gen + served
                self.discharge_loss_j += avail - served
                self.stored_j -= avail
            else:
                self.consumed_j += load
                self.discharge_loss_j += need + net  # need - (-net)
                self.stored_j -= need
