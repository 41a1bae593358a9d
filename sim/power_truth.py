"""Power truth: solar array output and battery state, with exact energy bookkeeping.

The array model is the usual cell-area model (irradiance x area x efficiency x
temperature derating x age degradation x cos(incidence) x illuminated fraction
of the solar disc). The battery integrates net power with charge/discharge
efficiencies and hard state-of-charge limits; energy that cannot be stored is
shunted, energy that cannot be delivered is a brown-out deficit. Every joule is
booked so that generated - consumed - losses == change in stored energy.
"""

from __future__ import annotations

import numba
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


# Battery state vector layout (float64): one array so the per-tick step and the bulk
# integration over idle frames share the same compiled arithmetic, bit for bit.
STORED, GENERATED, CONSUMED, CHARGE_LOSS, DISCHARGE_LOSS, SHUNT, DEFICIT = range(7)


@numba.njit(cache=True)
def battery_step(st, gen_w, load_w, dt_s, cap_j, eta_c, eta_d):  # pragma: no cover - compiled
    """Advance one step with array power gen_w feeding loads load_w first."""
    gen = gen_w * dt_s
    load = load_w * dt_s
    st[GENERATED] += gen
    net = gen - load
    if net >= 0.0:
        st[CONSUMED] += load
        stored = net * eta_c
        room = cap_j - st[STORED]
        if room < 0.0:
            room = 0.0
        if stored > room:
            # Only what fits is drawn from the array for charging; the rest is shunted.
            st[SHUNT] += (stored - room) / eta_c
            stored = room
        st[CHARGE_LOSS] += stored / eta_c - stored
        st[STORED] += stored
    else:
        need = -net / eta_d
        avail = st[STORED] if st[STORED] > 0.0 else 0.0
        if need > avail:
            served = avail * eta_d
            st[DEFICIT] += -net - served
            st[CONSUMED] += gen + served
            st[DISCHARGE_LOSS] += avail - served
            st[STORED] -= avail
        else:
            st[CONSUMED] += load
            st[DISCHARGE_LOSS] += need + net  # need - (-net)
            st[STORED] -= need


@numba.njit(cache=True)
def battery_integrate(st, gen_w, load_w, dt_s, t0_s, cap0_j, fade_per_s, eta_c, eta_d, soc_out):  # pragma: no cover
    """Run battery_step over consecutive ticks at constant load; soc_out[i] = SoC after tick i."""
    for i in range(gen_w.shape[0]):
        cap = cap0_j * (1.0 - fade_per_s * (t0_s + i * dt_s)) if fade_per_s != 0.0 else cap0_j
        battery_step(st, gen_w[i], load_w, dt_s, cap, eta_c, eta_d)
        soc_out[i] = st[STORED] / cap0_j


class BatteryTruth:
    """Energy-bookkept battery; `soc` is stored energy over beginning-of-life capacity."""

    def __init__(self, cfg: BatteryConfig):
        self.cfg = cfg
        self.capacity_j = cfg.capacity_wh * 3600.0
        self.state = np.zeros(7)
        self.state[STORED] = cfg.initial_soc * self.capacity_j
        self._fade_per_s = cfg.capacity_fade_per_year / SECONDS_PER_YEAR

    stored_j = property(lambda self: float(self.state[STORED]))
    generated_j = property(lambda self: float(self.state[GENERATED]))
    consumed_j = property(lambda self: float(self.state[CONSUMED]))
    charge_loss_j = property(lambda self: float(self.state[CHARGE_LOSS]))
    discharge_loss_j = property(lambda self: float(self.state[DISCHARGE_LOSS]))
    shunt_j = property(lambda self: float(self.state[SHUNT]))  # sunlight that could not be stored
    deficit_j = property(lambda self: float(self.state[DEFICIT]))  # load not served (brown-out)

    @property
    def soc(self) -> float:
        return float(self.state[STORED]) / self.capacity_j

    def capacity_at(self, t_s: float) -> float:
        return self.capacity_j * (1.0 - self._fade_per_s * t_s) if self._fade_per_s else self.capacity_j

    def step(self, gen_w: float, load_w: float, dt_s: float, t_s: float) -> None:
        """Advance by dt_s with array power gen_w feeding loads load_w first."""
        c = self.cfg
        battery_step(self.state, gen_w, load_w, dt_s, self.capacity_at(t_s), c.charge_efficiency, c.discharge_efficiency)

    def integrate(self, gen_w: np.ndarray, load_w: float, dt_s: float, t0_s: float, soc_out: np.ndarray) -> None:
        """Many steps at constant load (idle frames), identical to calling `step` per tick."""
        c = self.cfg
        battery_integrate(
            self.state, gen_w, load_w, dt_s, t0_s, self.capacity_j, self._fade_per_s,
            c.charge_efficiency, c.discharge_efficiency, soc_out,
        )
