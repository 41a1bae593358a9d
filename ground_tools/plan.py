"""Eclipse and power planning product: per-orbit eclipse table, energy and optional budget.

What the ground team plans with before (and during) a mission: for each orbit of the
coming days, when the spacecraft is in umbra, how much sunlight it gets, how much energy
the array delivers, what the essential loads take and how much optional energy
(training, extra imaging) the onboard power manager will allow; plus a year-long view
of the eclipse seasons (umbra fraction and beta angle) with the worst orbit marked.

Sources:

- Geometry is the simulator's truth (:class:`sim.orbit_truth.OrbitTruth`: SGP4 from the
  config's TLE, DE421 sun, conical WGS84 shadow, edges refined to 0.1 s). Orbits run
  ascending node to ascending node. Each orbit lists the eclipse that overlaps it most
  (entry, exit and full duration of that passage, which may straddle a node: on an
  inclined orbit the eclipse drifts across the node over the days), while
  ``umbra_in_orbit_min``, ``sunlit_fraction`` and the energies cover the orbit itself.
  Where an eclipse sits right on a node, one passage can be listed by two orbits.
- Array energy uses the truth array model (:class:`sim.power_truth.SolarArrayTruth`:
  irradiance x area x efficiency x temperature derating x age degradation). A
  sun-pointing array gives ``peak_w * age * sunlit_s``; a body-mounted zenith panel
  (``nadir_body_mounted``) integrates the real cos(incidence) x illumination on a 30 s
  grid, as :mod:`sim.world` does.
- The optional budget is what the flight software itself computes
  (:class:`flight_sw.power.budget.PowerBudget`, its own onboard array model) when the
  orbit opens at the reserve state of charge, i.e. the steady-state budget: no reserve
  deficit to repay and no surplus to spend. For a nadir body-mounted panel the onboard
  model integrates cos(incidence) x illumination from its own SGP4 and analytic sun, so
  ``onboard_generation_j`` tracks ``array_energy_j`` (the truth); the gap is what the
  budget leaves on the table (or over-promises).
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import sys
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import TextIO

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.power.budget import PowerBudget
from flight_sw.power.eclipse_predictor import EclipsePredictor
from flight_sw.power.tle import parse_tle
from sim.orbit_truth import OrbitSummary, OrbitTruth
from sim.power_truth import SECONDS_PER_YEAR, SolarArrayTruth

#: Integration grid for the body-mounted panel's cos(incidence) [s] (as sim.world).
INCIDENCE_GRID_S = 30.0
#: Length of the year view [days].
YEAR_DAYS = 365
#: Rows printed to the terminal; the CSV always has every orbit.
PRINT_ROWS = 40
CSV_NAME = "eclipse_plan.csv"
YEAR_PNG_NAME = "eclipse_year.png"
_CHUNK = 1 << 17  # grid samples per truth evaluation (bounds temporaries)


@dataclass(frozen=True)
class OrbitPlanRow:
    """One orbit of the plan. Field names carry the unit (CSV header = field names)."""

    orbit: int  # 0 = first complete orbit (ascending node) after the mission start
    start_utc: str
    end_utc: str
    duration_min: float
    umbra_entry_utc: str  # "" when the orbit's eclipse is penumbra-only or there is none
    umbra_exit_utc: str
    umbra_duration_min: float  # umbra exit - entry of the eclipse overlapping this orbit most
    penumbra_s: float  # penumbra-only time of that eclipse (both edges)
    umbra_in_orbit_min: float  # umbra time inside this orbit (what the energy sees)
    sunlit_fraction: float  # visible solar disc integrated over this orbit / duration
    beta_deg: float  # at orbit start
    array_energy_j: float  # truth array model, this orbit
    onboard_generation_j: float  # flight software's own prediction (its array model)
    essential_energy_j: float  # bus base load + essential tasks over the orbit
    optional_budget_j: float  # onboard optional budget opened at reserve SoC (>= 0)


CSV_COLUMNS = tuple(f.name for f in fields(OrbitPlanRow))


# ------------------------------------------------------------------ computation


def essential_power_w(cfg: MissionConfig) -> float:
    """Bus base load plus the essential tasks' mean power (what flight_sw.app uses)."""
    return cfg.power.bus_base_load_w + sum(
        t.energy_j / t.period_s for t in cfg.tasks if t.criticality == "essential"
    )


def _truth(cfg: MissionConfig) -> OrbitTruth:
    return OrbitTruth(cfg.orbit.tle_line1, cfg.orbit.tle_line2, cfg.mission.start_utc)


def array_energy_j(cfg: MissionConfig, truth: OrbitTruth, orbits: OrbitSummary) -> np.ndarray:
    """Truth array energy per orbit [J] (see the module docstring for the model)."""
    array = SolarArrayTruth(cfg.power.solar_array)
    degradation = cfg.power.solar_array.degradation_per_year
    start, end = orbits.start_s, orbits.end_s
    if start.size == 0:
        return np.zeros(0)
    if cfg.power.solar_array.attitude_mode == "sun_pointing":
        mid = 0.5 * (start + end)  # the age factor is linear in time: midpoint is exact
        age = 1.0 - degradation * mid / SECONDS_PER_YEAR
        return array.peak_w * age * orbits.sunlit_fraction * orbits.duration_s
    # Body-mounted zenith panel: integrate cos(incidence) x illumination on a grid.
    grid = np.arange(start[0], end[-1] + INCIDENCE_GRID_S, INCIDENCE_GRID_S)
    power = np.empty(grid.size)
    for i in range(0, grid.size, _CHUNK):
        t = grid[i : i + _CHUNK]
        sat, sun = truth.positions_m(t)
        zenith = sat / np.linalg.norm(sat, axis=1, keepdims=True)
        sun_dir = (sun - sat) / np.linalg.norm(sun - sat, axis=1, keepdims=True)
        cos_inc = np.clip(np.sum(zenith * sun_dir, axis=1), 0.0, 1.0)
        illum = np.zeros(t.size)
        lit = cos_inc > 0  # sun above the panel's horizon: only there is shadow relevant
        illum[lit] = truth.illumination(t[lit])
        power[i : i + _CHUNK] = array.power_w(illum, cos_inc, t)
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (power[1:] + power[:-1]) * np.diff(grid))])
    return np.interp(end, grid, cumulative) - np.interp(start, grid, cumulative)


def _budgets(cfg: MissionConfig, orbits: OrbitSummary, umbra_entry, umbra_exit):
    """(onboard generation, essential, optional budget) per orbit [J] at reserve SoC."""
    budget = PowerBudget(cfg, essential_power_w(cfg))
    soc = cfg.power.battery.reserve_soc
    out = np.zeros((len(orbits), 3))
    sunlit_s = orbits.sunlit_fraction * orbits.duration_s
    predictor = None
    if cfg.power.solar_array.attitude_mode == "nadir_body_mounted":
        predictor = EclipsePredictor(parse_tle(cfg.orbit.tle_line1, cfg.orbit.tle_line2), cfg.mission.start_utc)
    for i in range(len(orbits)):
        sun_eq = None
        if predictor is not None:  # the onboard geometry integral, as the flight software does it
            sun_eq = predictor.zenith_panel_sun_s(float(orbits.start_s[i]), float(orbits.end_s[i]))
        s = budget.new_orbit(
            i,
            float(orbits.start_s[i]),
            float(orbits.end_s[i]),
            float(umbra_entry[i]),
            float(umbra_exit[i]),
            float(sunlit_s[i]),
            soc=soc,
            sun_equivalent_s=sun_eq,
        )
        out[i] = (s.generation_j, s.essential_j, s.budget_j)
    return out[:, 0], out[:, 1], out[:, 2]


def _utc(cfg: MissionConfig, t_s: float) -> _dt.datetime:
    return cfg.mission.start_utc + _dt.timedelta(seconds=float(t_s))


def _iso(cfg: MissionConfig, t_s: float) -> str:
    """ISO 8601 UTC to 0.1 s (the event edges' accuracy), '' for NaN."""
    if not math.isfinite(t_s):
        return ""
    d = _utc(cfg, round(float(t_s), 1))
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{d.microsecond // 100_000}Z"


def eclipse_plan(cfg: MissionConfig, days: float) -> list[OrbitPlanRow]:
    """One row per complete orbit (node to node) in the first ``days`` of the mission."""
    if not days > 0:
        raise ValueError(f"days must be > 0, got {days}")
    truth = _truth(cfg)
    t1_s = days * 86400.0
    orbits = truth.orbit_summaries(0.0, t1_s)
    n = len(orbits)
    # Eclipses straddling the first or last node reach outside: search one orbit beyond.
    events = truth.eclipse_events(-truth.period_s, t1_s + truth.period_s)
    u_entry, u_exit = np.full(n, np.nan), np.full(n, np.nan)
    p_total, overlap = np.zeros(n), np.zeros(n)
    for pe, ue, ux, px in zip(
        events.penumbra_entry_s,
        events.umbra_entry_s,
        events.umbra_exit_s,
        events.penumbra_exit_s,
        strict=True,
    ):
        k0 = max(0, int(np.searchsorted(orbits.end_s, pe, side="right")))
        k1 = int(np.searchsorted(orbits.start_s, px, side="left"))
        for k in range(k0, min(k1, n)):  # orbits this eclipse overlaps
            o = min(px, orbits.end_s[k]) - max(pe, orbits.start_s[k])
            if o > overlap[k]:
                overlap[k], u_entry[k], u_exit[k], p_total[k] = o, ue, ux, px - pe
    umbra_s = np.where(np.isfinite(u_entry), u_exit - u_entry, 0.0)
    penumbra_s = p_total - umbra_s
    energy = array_energy_j(cfg, truth, orbits)
    generation, essential, budget = _budgets(cfg, orbits, u_entry, u_exit)
    return [
        OrbitPlanRow(
            orbit=i,
            start_utc=_iso(cfg, orbits.start_s[i]),
            end_utc=_iso(cfg, orbits.end_s[i]),
            duration_min=float(orbits.duration_s[i] / 60.0),
            umbra_entry_utc=_iso(cfg, u_entry[i]),
            umbra_exit_utc=_iso(cfg, u_exit[i]),
            umbra_duration_min=float(umbra_s[i] / 60.0),
            penumbra_s=float(penumbra_s[i]),
            umbra_in_orbit_min=float(orbits.umbra_s[i] / 60.0),
            sunlit_fraction=float(orbits.sunlit_fraction[i]),
            beta_deg=float(orbits.beta_deg[i]),
            array_energy_j=float(energy[i]),
            onboard_generation_j=float(generation[i]),
            essential_energy_j=float(essential[i]),
            optional_budget_j=float(budget[i]),
        )
        for i in range(n)
    ]


# ------------------------------------------------------------------ output


_CSV_FORMAT = {
    "duration_min": "{:.3f}",
    "umbra_duration_min": "{:.3f}",
    "penumbra_s": "{:.1f}",
    "umbra_in_orbit_min": "{:.3f}",
    "sunlit_fraction": "{:.5f}",
    "beta_deg": "{:.3f}",
    "array_energy_j": "{:.1f}",
    "onboard_generation_j": "{:.1f}",
    "essential_energy_j": "{:.1f}",
    "optional_budget_j": "{:.1f}",
}


def _hms(iso: str) -> str:
    return iso[11:19] if iso else "-"


def format_table(rows: list[OrbitPlanRow], max_rows: int = PRINT_ROWS) -> list[str]:
    """The terminal table (first ``max_rows`` orbits)."""
    head = (
        f"{'orbit':>5}  {'start UTC':<19}  {'umbra in':>8}  {'umbra out':>9}  {'umbra':>6}  "
        f"{'penum':>5}  {'in orb':>6}  {'sunlit':>6}  {'beta':>6}  {'array':>6}  {'essent':>6}  "
        f"{'option':>6}"
    )
    units = (
        f"{'':>5}  {'':<19}  {'hh:mm:ss':>8}  {'hh:mm:ss':>9}  {'[min]':>6}  "
        f"{'[s]':>5}  {'[min]':>6}  {'[-]':>6}  {'[deg]':>6}  {'[kJ]':>6}  {'[kJ]':>6}  {'[kJ]':>6}"
    )
    lines = [head, units]
    for r in rows[:max_rows]:
        lines.append(
            f"{r.orbit:>5}  {r.start_utc[:19].replace('T', ' '):<19}  {_hms(r.umbra_entry_utc):>8}  "
            f"{_hms(r.umbra_exit_utc):>9}  {r.umbra_duration_min:6.2f}  {r.penumbra_s:5.1f}  "
            f"{r.umbra_in_orbit_min:6.2f}  {r.sunlit_fraction:6.4f}  {r.beta_deg:6.1f}  "
            f"{r.array_energy_j / 1e3:6.2f}  {r.essential_energy_j / 1e3:6.2f}  "
            f"{r.optional_budget_j / 1e3:6.2f}"
        )
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more orbits (all {len(rows)} in the CSV)")
    lines.append(
        "umbra in/out/[min]/penum: the eclipse overlapping the orbit most; in orb: umbra inside "
        "the orbit; option: optional budget at reserve SoC"
    )
    return lines


def summary_lines(rows: list[OrbitPlanRow], margin_j: float = 0.0) -> list[str]:
    """Worst orbit (minimum optional budget), the umbra duration range, and a warning
    where the onboard budget promises more than the truth array energy affords."""
    if not rows:
        return ["no complete orbit in the planning window"]
    worst = min(rows, key=lambda r: (r.optional_budget_j, r.orbit))
    best = max(r.optional_budget_j for r in rows)
    lines = [
        f"worst orbit (min optional budget): #{worst.orbit} starting {worst.start_utc}: "
        f"{worst.optional_budget_j:.0f} J (best orbit {best:.0f} J; worst has array "
        f"{worst.array_energy_j:.0f} J, umbra {worst.umbra_in_orbit_min:.2f} min in orbit, "
        f"beta {worst.beta_deg:.1f} deg)"
    ]
    eclipses = {r.umbra_entry_utc: r for r in rows if r.umbra_entry_utc}  # one per passage
    dark_free = sum(1 for r in rows if r.umbra_in_orbit_min == 0.0)
    if eclipses:
        lo = min(eclipses.values(), key=lambda r: r.umbra_duration_min)
        hi = max(eclipses.values(), key=lambda r: r.umbra_duration_min)
        lines.append(
            f"umbra duration over {len(eclipses)} eclipses: min {lo.umbra_duration_min:.2f} min "
            f"(entry {lo.umbra_entry_utc}), max {hi.umbra_duration_min:.2f} min "
            f"(entry {hi.umbra_entry_utc})"
            + (f"; {dark_free} orbit(s) without umbra" if dark_free else "")
        )
    else:
        lines.append("umbra duration: no umbra in the planning window (full-sun season)")
    over = [
        r.optional_budget_j - max(0.0, r.array_energy_j - r.essential_energy_j - margin_j)
        for r in rows
    ]
    n_over = sum(1 for x in over if x > 100.0)  # ignore rounding-level differences
    if n_over:
        lines.append(
            f"WARNING: in {n_over} orbit(s) the onboard budget exceeds what the truth array "
            f"energy affords (by up to {max(over):.0f} J): the onboard array model over-predicts"
        )
    return lines


def write_csv(rows: list[OrbitPlanRow], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow(
                _CSV_FORMAT[name].format(v) if name in _CSV_FORMAT else v
                for name, v in zip(CSV_COLUMNS, astuple(r), strict=True)
            )
    return path


def write_plan(
    cfg: MissionConfig, days: float, out_dir: Path, out: TextIO | None = None
) -> tuple[list[OrbitPlanRow], Path]:
    """Compute the plan, write ``out_dir/eclipse_plan.csv`` and print the table."""
    out = out or sys.stdout
    rows = eclipse_plan(cfg, days)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_csv(rows, out_dir / CSV_NAME)
    bat, budget = cfg.power.battery, cfg.power.budget
    print(
        f"{cfg.mission.name}: {len(rows)} orbits in {days:g} day(s) from "
        f"{cfg.mission.start_utc.strftime('%Y-%m-%dT%H:%M:%SZ')}; array "
        f"{cfg.power.solar_array.attitude_mode}; essential load {essential_power_w(cfg):.2f} W; "
        f"budget at reserve SoC {bat.reserve_soc:g}, margin {budget.margin_j:g} J",
        file=out,
    )
    for line in format_table(rows) + [""] + summary_lines(rows, budget.margin_j):
        print(line, file=out)
    print(f"wrote {path}", file=out)
    return rows, path


# ------------------------------------------------------------------ year view


@dataclass(frozen=True)
class YearView:
    """What the year plot shows, per orbit (all orbits of the year)."""

    start_s: np.ndarray
    umbra_fraction: np.ndarray
    beta_deg: np.ndarray
    optional_budget_j: np.ndarray  # onboard budget at reserve SoC
    affordable_j: np.ndarray  # truth array energy - essential - margin (may be < 0)

    @property
    def worst(self) -> int:
        """Index of the orbit with the smallest optional budget (first if tied)."""
        return int(np.argmin(self.optional_budget_j))


def year_view(cfg: MissionConfig, days: int = YEAR_DAYS) -> YearView:
    """Every orbit of ``days`` from the mission start: umbra fraction, beta, budget."""
    truth = _truth(cfg)
    orbits = truth.orbit_summaries(0.0, days * 86400.0)
    nan = np.full(len(orbits), np.nan)
    _, essential, budget = _budgets(cfg, orbits, nan, nan)
    affordable = array_energy_j(cfg, truth, orbits) - essential - cfg.power.budget.margin_j
    return YearView(
        orbits.start_s, orbits.umbra_s / orbits.duration_s, orbits.beta_deg, budget, affordable
    )


def year_plot(
    cfg: MissionConfig, out_png: Path, plan_days: float | None = None, out: TextIO | None = None
) -> YearView:
    """Plot umbra fraction, beta angle and optional budget over a year; mark the worst orbit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    out = out or sys.stdout
    view = year_view(cfg)
    if len(view.start_s) == 0:
        raise ValueError("no complete orbit in the year view")
    start = cfg.mission.start_utc.replace(tzinfo=None)  # matplotlib dates: naive UTC
    dates = np.array([start + _dt.timedelta(seconds=float(t)) for t in view.start_s])
    w = view.worst
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    series = (
        (100.0 * view.umbra_fraction, "umbra fraction of orbit [%]", "tab:blue", None),
        (view.beta_deg, "beta angle [deg]", "tab:orange", None),
        (
            view.optional_budget_j / 1e3,
            "optional energy per orbit [kJ]",
            "tab:green",
            f"onboard optional budget at reserve SoC {cfg.power.battery.reserve_soc:g} "
            "(flight software's array model)",
        ),
    )
    for k, (ax, (y, label, color, line_label)) in enumerate(zip(axes, series, strict=True)):
        ax.plot(dates, y, color=color, lw=1.0, label=line_label)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.axvline(dates[w], color="tab:red", ls="--", lw=1.0)
        ax.plot([dates[w]], [y[w]], "o", color="tab:red", ms=6,
                label=f"worst orbit, {dates[w]:%Y-%m-%d %H:%M} UTC" if k == 0 else None)
        if plan_days:
            ax.axvspan(dates[0], start + _dt.timedelta(days=plan_days), color="0.8", lw=0,
                       label=f"plan window (first {plan_days:g} d)" if k == 0 else None)
    # Umbra: autoscaled so a season shows, but never a span under 5 points (no fake drama).
    lo, hi = axes[0].get_ylim()
    if hi - lo < 5.0:
        mid = 0.5 * (lo + hi)
        axes[0].set_ylim(max(0.0, mid - 2.5), mid + 2.5)
    axes[1].axhline(0.0, color="k", lw=0.6)
    axes[2].plot(dates, view.affordable_j / 1e3, color="tab:purple", ls=":", lw=1.2,
                 label="truth array energy - essential - margin (what the orbit affords)")
    axes[2].axhline(0.0, color="k", lw=0.6)
    axes[0].legend(loc="lower left", fontsize=8, framealpha=0.9)
    e_lo, e_hi = axes[2].get_ylim()
    axes[2].set_ylim(e_lo, e_hi + 0.35 * (e_hi - e_lo))  # headroom for the legend
    axes[2].legend(loc="upper left", fontsize=8, framealpha=0.9)
    axes[2].xaxis.set_major_locator(mdates.MonthLocator())
    axes[2].xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    axes[2].set_xlabel("orbit start date (UTC)")
    fig.suptitle(
        f"{cfg.mission.name}: eclipse seasons over {YEAR_DAYS} days from "
        f"{start:%Y-%m-%d} ({len(view.start_s)} orbits)\n"
        f"worst orbit (min optional budget at reserve SoC {cfg.power.battery.reserve_soc:g}): "
        f"{dates[w]:%Y-%m-%d %H:%M} UTC, umbra {100 * view.umbra_fraction[w]:.1f} %, "
        f"beta {view.beta_deg[w]:.1f} deg, budget {view.optional_budget_j[w] / 1e3:.2f} kJ",
        fontsize=11,
    )
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    print(
        f"year: umbra {100 * view.umbra_fraction.min():.1f}-{100 * view.umbra_fraction.max():.1f} % "
        f"of the orbit, beta {view.beta_deg.min():.1f} to {view.beta_deg.max():.1f} deg; "
        f"worst orbit {dates[w]:%Y-%m-%d %H:%M} UTC, budget {view.optional_budget_j[w]:.0f} J",
        file=out,
    )
    print(f"wrote {out_png}", file=out)
    return view
