"""Review report: one self-contained HTML file (plots embedded as PNG) for a run folder.

Reads the run's telemetry from its SQLite archive (ingesting it first when needed),
plus summary.json, truth.npz (simulator truth, marked as such), config.yaml and
run.json from the run folder. Sections, top to bottom:

- the summary table (summary.json) and the limit violations (table);
- eclipses, contacts and state of charge, with limit markers;
- the per-orbit optional-energy budget against what each optional task used;
- a task execution timeline for one orbit (`--orbit N`; default: the orbit with the
  most power-skipped runs): one lane per task, one cell per housekeeping period,
  coloured by what the HK SID-2 counters say happened in it;
- model accuracy (onboard and frozen arms from truth, label accuracy from HK), drift
  statistics with detections marked (when the dictionary has them), training updates
  and the model versions (lifecycle);
- optimizer solves by path, analog device health and faults (when present), the
  command history (when present), the limit-checked parameters, generation and load,
  task counters, mode transitions, events and the start-up memory report.

A section whose data the run does not have says so in words instead of showing an
empty plot.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from datetime import timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from flight_sw.tmtc import dictionary as d  # noqa: E402
from ground_tools.archive import Archive, ensure_archive  # noqa: E402
from ground_tools.decode import Telemetry, contact_events, training_updates  # noqa: E402
from ground_tools.limits import LEVELS, check, load_limits, series, violation_mask  # noqa: E402
from ground_tools.models import lifecycle  # noqa: E402
from ground_tools.runfolder import REQUIRED_FILES, OptionError, RunFolderError, open_run  # noqa: E402

__all__ = ["REQUIRED_FILES", "RunFolderError", "write_report"]

LEVEL_COLOR = {"warning": "tab:orange", "alarm": "red"}
OUTCOME_COLOR = {"committed": "tab:green", "refused": "tab:red", "rolled_back": "tab:purple"}
LANE_COLORS = {
    "ran": "#2ca02c",
    "ran, some skipped": "#f2c12e",
    "skipped (power)": "#d62728",
    "not due / nothing to do": "#eeeeee",
    "disabled": "#555555",
}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _hours(t_s):
    return np.asarray(t_s, dtype=np.float64) / 3600.0


def _shade_eclipses(ax, truth, scale=3600.0, offset=0.0) -> None:
    for a, b in zip(truth["umbra_entry_s"], truth["umbra_exit_s"], strict=True):
        if np.isfinite(a) and np.isfinite(b):
            ax.axvspan((a - offset) / scale, (b - offset) / scale, color="0.85", lw=0)


def _mark_violations(ax, t_s, values, violations, parameter, scale=3600.0) -> int:
    """Mark samples outside limits: a coloured strip along the top of the axes spans each
    excursion, and hollow circles mark the samples themselves when there are few enough to see."""
    n = 0
    masks = violation_mask(violations, parameter, t_s)
    pad = 30.0  # s: a one-sample excursion stays visible
    for lv in LEVELS:
        spans = [((v.start_s - pad) / scale, (v.end_s - v.start_s + 2 * pad) / scale)
                 for v in violations if v.parameter == parameter and v.level == lv]
        if spans:  # one collection per level: fast for thousands of excursions
            ax.broken_barh(spans, (0.94, 0.06), transform=ax.get_xaxis_transform(), color=LEVEL_COLOR[lv], lw=0)
    for lv in LEVELS:
        m = masks[lv]
        if m.any():
            n += int(m.sum())
            label = f"limit {lv}: {int(m.sum())} samples (strip at top)"
            if m.sum() <= 300:
                ax.plot(np.asarray(t_s)[m] / scale, np.asarray(values)[m], "o", ms=5, mfc="none",
                        color=LEVEL_COLOR[lv], label=label)
            else:
                ax.plot([], [], "s", color=LEVEL_COLOR[lv], label=label)
    return n


# -- plots --------------------------------------------------------------------------------------
#: Runs longer than this are drawn as per-orbit envelopes: individual eclipses and contacts
#: would fill the plot (the task timeline shows one orbit in detail).
DETAIL_LIMIT_S = 4 * 86400.0
ORBIT_BIN_S = 5700.0


def _envelope(ax, t_s, v, color, label):
    t_s, v = np.asarray(t_s, dtype=float), np.asarray(v, dtype=float)
    which = (t_s // ORBIT_BIN_S).astype(int)
    bins = np.unique(which)
    lo = np.array([np.nanmin(v[which == b]) for b in bins])
    hi = np.array([np.nanmax(v[which == b]) for b in bins])
    x = (bins + 0.5) * ORBIT_BIN_S / 3600.0
    ax.fill_between(x, lo, hi, color=color, alpha=0.35, lw=0, label=label)
    ax.plot(x, lo, color=color, lw=0.8)


def plot_soc(tm: Telemetry, truth, cfg, violations=()) -> str:
    fig, ax = plt.subplots(figsize=(11, 3.4))
    long_run = len(truth["t_s"]) and truth["t_s"][-1] > DETAIL_LIMIT_S
    if long_run:
        _envelope(ax, truth["t_s"], truth["soc"], "0.5", "state of charge, per-orbit min-max (simulator truth)")
        if tm.hk_core:
            _envelope(ax, tm.hk_core["t_s"], tm.hk_core["soc"], "tab:blue", "state of charge, per-orbit min-max (HK)")
        xlabel = "mission time [h]  (long run: per-orbit envelopes; see the task timeline for one orbit in detail)"
    else:
        _shade_eclipses(ax, truth)
        ax.plot(_hours(truth["t_s"]), truth["soc"], lw=0.8, color="0.35", label="state of charge (simulator truth)")
        if tm.hk_core:
            ax.plot(_hours(tm.hk_core["t_s"]), tm.hk_core["soc"], ".", ms=2, color="tab:blue",
                    label="state of charge (HK telemetry)")
        for t, aos in contact_events(tm):
            if aos:
                ax.axvline(t / 3600.0, color="tab:green", lw=0.5, alpha=0.6)
        xlabel = "mission time [h]  (grey bands: umbra; green lines: contact start)"
    if tm.hk_core:
        _mark_violations(ax, tm.hk_core["t_s"], tm.hk_core["soc"], violations, "soc")
    bat = cfg.power.battery
    for level, name, style in ((bat.reserve_soc, "reserve", "--"), (bat.floor_soc, "floor", ":"),
                               (bat.safe_mode_soc, "SAFE entry", "-.")):
        ax.axhline(level, ls=style, color="k", lw=0.8)
        ax.text(0, level, f" {name} {level:g}", va="bottom", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("SoC")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize=8, ncol=2)
    ax.set_title("Eclipses, contacts and battery state of charge")
    return _png(fig)


def plot_power(truth) -> str:
    fig, ax = plt.subplots(figsize=(11, 2.8))
    if len(truth["t_s"]) and truth["t_s"][-1] > DETAIL_LIMIT_S:
        _envelope(ax, truth["t_s"], truth["solar_w"], "tab:blue", "array power [W], per-orbit min-max")
        _envelope(ax, truth["t_s"], truth["load_w"], "tab:orange", "bus load [W] (30 s mean), per-orbit min-max")
        ax.set_xlabel("mission time [h]  (simulator truth; long run: per-orbit envelopes)")
    else:
        _shade_eclipses(ax, truth)
        ax.plot(_hours(truth["t_s"]), truth["solar_w"], lw=0.8, label="array power [W]")
        ax.plot(_hours(truth["t_s"]), truth["load_w"], lw=0.8, label="bus load [W] (30 s mean)")
        ax.set_xlabel("mission time [h]  (simulator truth; grey: umbra)")
    ax.set_ylabel("W")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Generation and load")
    return _png(fig)


def _orbit_table(tm: Telemetry) -> dict[int, dict]:
    """Per orbit index: the last budget report of it (a TLE uplink reopens an orbit)."""
    o = tm.orbits
    out = {}
    if not o:
        return out
    for i, k in enumerate(o["orbit_index"].astype(int)):
        out[int(k)] = {name: o[name][i] for name in o}
        out[int(k)]["row"] = i
    return out


def plot_budget(tm: Telemetry, cfg) -> str | None:
    o = tm.orbits
    if not o or tm.orbit_task_energy_j is None or len(o["orbit_index"]) < 2:
        return None
    index = o["orbit_index"].astype(int)
    # A TLE uplink reopens an orbit (same index reported again): its budget is the
    # last report of that index; its use arrives with the first report of the next.
    last = {int(k): i for i, k in enumerate(index)}
    first: dict[int, int] = {}
    for i, k in enumerate(index):
        first.setdefault(int(k), i)
    idx = np.array([k for k in sorted(last) if k + 1 in first])
    if not len(idx):
        return None
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(11, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    budget = o["budget_j"][[last[k] for k in idx]] / 1000.0
    generation = o["generation_j"][[last[k] for k in idx]] / 1000.0
    used = tm.orbit_task_energy_j[[first[k + 1] for k in idx]]
    bottom = np.zeros(len(idx))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, task in enumerate(cfg.tasks):
        c = colors[i % len(colors)]
        if task.criticality == "optional":
            ax.bar(idx, used[:, i] / 1000.0, bottom=bottom, color=c, label=f"{task.name}")
            bottom += used[:, i] / 1000.0
        bx.plot(idx, np.maximum(used[:, i], 1e-3), "-o" if task.criticality == "optional" else "--.", ms=3, color=c,
                label=f"{task.name} ({task.criticality[:3]})")
    ax.step(idx, budget, where="mid", color="k", lw=1.4, label="optional budget granted")
    ax.set_ylabel("kJ")
    ax.set_ylim(0, max(float(np.max(budget)), float(np.max(bottom))) * 1.35 + 1e-9)
    ax.legend(fontsize=8, loc="upper right", ncol=3)
    ax.set_title(f"Per-orbit optional-energy budget and what optional tasks used (bars, stacked)\n"
                 f"predicted generation per orbit: {np.median(generation):.1f} kJ median", fontsize=10)
    bx.set_yscale("log")
    bx.set_ylabel("J per orbit (log)")
    bx.set_xlabel("orbit")
    bx.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    bx.set_title("Energy per task and orbit (all tasks; small users visible)", fontsize=9)
    return _png(fig)


def choose_orbit(tm: Telemetry, requested: int | None) -> tuple[int, str]:
    """The orbit for the task timeline: the requested one, else the one with the most skips."""
    orbits = _orbit_table(tm)
    ht = tm.hk_tasks
    if not orbits:
        raise OptionError("the telemetry has no orbit budget reports")
    complete = [k for k in sorted(orbits) if ht and np.any((ht["t_s"] >= orbits[k]["orbit_start_s"])
                                                          & (ht["t_s"] < orbits[k]["orbit_end_s"]))]
    if not complete:
        raise OptionError("no orbit has both a budget report and task housekeeping in this run"
                          + (f" (--orbit {requested})" if requested is not None else ""))
    if requested is not None:
        if requested not in orbits:
            raise OptionError(
                f"--orbit {requested}: no such orbit in the telemetry; orbits {min(orbits)} to {max(orbits)} are archived"
            )
        return requested, "chosen with --orbit"
    skipped = ht["skipped"].sum(axis=1)
    best, best_n = None, 0.0
    for k in complete:
        o = orbits[k]
        m = (ht["t_s"] >= o["orbit_start_s"]) & (ht["t_s"] < o["orbit_end_s"])
        idx = np.flatnonzero(m)
        if len(idx) < 2:
            continue
        n = skipped[idx[-1]] - skipped[max(idx[0] - 1, 0)]
        if n > best_n:
            best, best_n = k, n
    if best is not None:
        return best, f"the orbit with the most power-skipped runs ({int(best_n)}); choose another with --orbit N"
    mid = complete[len(complete) // 2]
    return mid, "no runs were skipped in any orbit: a middle orbit; choose another with --orbit N"


def plot_task_timeline(tm: Telemetry, cfg, orbit: int, why: str) -> str:
    o = _orbit_table(tm)[orbit]
    t0, t1 = float(o["orbit_start_s"]), float(o["orbit_end_s"])
    ht, hk = tm.hk_tasks, tm.hk_core
    idx = np.flatnonzero((ht["t_s"] >= t0) & (ht["t_s"] <= t1))
    if len(idx) and idx[0] > 0:
        idx = np.concatenate([[idx[0] - 1], idx])
    names = [t.name for t in cfg.tasks]
    n_tasks = len(names)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(11, 0.42 * n_tasks + 3.2), sharex=True,
                                 gridspec_kw={"height_ratios": [n_tasks * 0.42 + 0.6, 1.6]})
    for a in (ax, bx):
        if np.isfinite(o["umbra_entry_s"]) and np.isfinite(o["umbra_exit_s"]):
            a.axvspan((o["umbra_entry_s"] - t0) / 60, (o["umbra_exit_s"] - t0) / 60, color="0.85", lw=0, zorder=0)
    cells: dict[tuple[int, str], list[tuple[float, float]]] = {}
    overrun_pts, miss_pts = [], []
    for j in range(1, len(idx)):
        a, b = idx[j - 1], idx[j]
        x0, x1 = (max(ht["t_s"][a], t0) - t0) / 60, (ht["t_s"][b] - t0) / 60
        for i in range(n_tasks):
            runs = ht["runs"][b, i] - ht["runs"][a, i]
            skipped = ht["skipped"][b, i] - ht["skipped"][a, i]
            if ht["disabled"][b, i]:
                state = "disabled"
            elif runs > 0 and skipped > 0:
                state = "ran, some skipped"
            elif runs > 0:
                state = "ran"
            elif skipped > 0:
                state = "skipped (power)"
            else:
                state = "not due / nothing to do"
            y = n_tasks - 1 - i
            cells.setdefault((y, state), []).append((x0, x1 - x0))
            if ht["overruns"][b, i] > ht["overruns"][a, i]:
                overrun_pts.append(((x0 + x1) / 2, y))
            if ht["deadline_misses"][b, i] > ht["deadline_misses"][a, i]:
                miss_pts.append(((x0 + x1) / 2, y))
    for (y, state), spans in cells.items():
        ax.broken_barh(spans, (y - 0.4, 0.8), facecolor=LANE_COLORS[state], edgecolor="white", lw=0.3)
    if overrun_pts:
        ax.plot(*zip(*overrun_pts, strict=True), "kx", ms=5)
    if miss_pts:
        ax.plot(*zip(*miss_pts, strict=True), "v", color="purple", ms=5)
    ax.set_ylim(-0.6, n_tasks - 0.4)
    labels = [f"{n} ({cfg.tasks[i].criticality[:3]})" for i, n in enumerate(names)]
    ax.set_yticks(range(n_tasks), labels[::-1], fontsize=8)
    handles = [Patch(color=c, label=k) for k, c in LANE_COLORS.items()]
    handles += [plt.Line2D([], [], marker="x", color="k", ls="", label="overrun"),
                plt.Line2D([], [], marker="v", color="purple", ls="", label="deadline miss"),
                Patch(color="0.85", label="predicted umbra")]
    ax.legend(handles=handles, fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.02), frameon=False)
    ax.set_title(f"Task execution in orbit {orbit}: {why}\n(one cell per housekeeping period; "
                 f"HK SID 2 counter changes)", fontsize=10)
    if hk:
        m = (hk["t_s"] >= t0) & (hk["t_s"] <= t1)
        tt = (hk["t_s"][m] - t0) / 60
        bx.plot(tt, hk["budget_remaining_j"][m] / 1000.0, color="k", lw=1.2, label="optional budget left [kJ]")
        bx.set_ylabel("kJ")
        cx = bx.twinx()
        cx.plot(tt, hk["soc"][m], color="tab:blue", lw=1, label="SoC")
        cx.set_ylabel("SoC", color="tab:blue")
        contact = hk["in_contact"][m] > 0
        if contact.any():
            bx.fill_between(tt, 0, 1, where=contact, transform=bx.get_xaxis_transform(), color="tab:green",
                            alpha=0.15, lw=0, label="ground contact")
        bx.legend(fontsize=7, loc="upper right")
    bx.set_xlabel(f"minutes since orbit {orbit} start (mission time {t0 / 3600:.2f} h)")
    bx.set_xlim(0, (t1 - t0) / 60)
    fig.subplots_adjust(hspace=0.45)
    return _png(fig)


def _bin_mean(t, v, width_s):
    t = np.asarray(t)
    bins = np.arange(0.0, t[-1] + width_s, width_s)
    which = np.digitize(t, bins)
    centres, means = [], []
    for b in np.unique(which):
        m = which == b
        centres.append(t[m].mean())
        means.append(np.asarray(v)[m].mean())
    return np.array(centres), np.array(means)


#: Legend names of accuracy arms in truth.npz beyond onboard and frozen.
ARM_LABELS = {
    "acc_ground": ("ground retraining loop (truth)", "-^", "tab:cyan"),
    "acc_calibration": ("calibration-only: onboard calibration table + frozen model (truth)", "-v", "tab:olive"),
    "acc_selftrain": ("self-training only (truth)", "-x", "tab:purple"),
    "acc_bound": ("clairvoyant bound: head on truth labels (truth)", "--", "0.4"),
}


def plot_accuracy(tm: Telemetry, truth, cfg, violations=()) -> str:
    fig, ax = plt.subplots(figsize=(11, 3.6))
    t = truth.get("acc_t_s", np.zeros(0))
    lows = []
    if len(t):
        arms = [("acc_onboard", "onboard model (truth, per ~orbit)", "-o", "tab:blue"),
                ("acc_frozen", "frozen pre-launch model (truth)", "-s", "tab:brown")]
        arms += [(k, *ARM_LABELS.get(k, (f"{k[4:]} arm (truth)", "-^", "tab:cyan"))) for k in sorted(truth)
                 if k.startswith("acc_") and k not in ("acc_t_s", "acc_onboard", "acc_frozen")
                 and len(truth[k]) == len(t)]
        for key, label, style, color in arms:
            c, m = _bin_mean(t, truth[key], 5400.0)
            ax.plot(_hours(c), m, style, ms=3, color=color, label=label)
            lows.append(np.nanmin(m))
    if tm.hk_core:
        ax.step(_hours(tm.hk_core["t_s"]), tm.hk_core["label_accuracy"], where="post", lw=0.9, color="0.45",
                label="onboard accuracy on calibration labels (HK)")
        _mark_violations(ax, tm.hk_core["t_s"], tm.hk_core["label_accuracy"], violations, "label_accuracy")
        lab = tm.hk_core["label_accuracy"]
        if np.isfinite(lab).any():
            lows.append(np.nanmin(lab))
    bottom = max(0.0, min([*lows, 1.0]) - 0.06)
    uplinks = np.asarray(truth.get("ground_uplink_s", []), dtype=float)
    if len(uplinks):
        ax.plot(uplinks / 3600.0, [bottom + 0.025] * len(uplinks), "d", color="tab:cyan", ms=5,
                label=f"ground-loop model uplink ({len(uplinks)})")
    updates = training_updates(tm)
    for outcome, color in OUTCOME_COLOR.items():
        tu = [u["t_s"] / 3600.0 for u in updates if u["outcome"] == outcome]
        if tu:
            ax.plot(tu, [bottom + 0.01] * len(tu), "^", color=color, ms=6,
                    label=f"training update {outcome.replace('_', ' ')} ({len(tu)})")
    shift = cfg.payload.drift.abrupt_shift_day
    if shift is not None and len(t) and shift * 86400.0 <= t[-1]:
        ax.axvline(shift * 24.0, color="k", ls="--", lw=1)
        ax.text(shift * 24.0, 0.9, " abrupt sensor shift", fontsize=8, transform=ax.get_xaxis_transform())
    ax.set_ylim(bottom, 1.005)
    ax.set_xlabel("mission time [h]")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    ax.set_title("Model accuracy under drift")
    return _png(fig)


LABEL_SOURCES = ("site", "teacher", "self")


def plot_labels(truth) -> str | None:
    """Labels the onboard learner received per source and ~orbit, and their agreement with truth
    (scored by the simulator for review; the satellite never knows it), with the teacher's accuracy."""
    t = np.asarray(truth.get("label_t_s", []), dtype=float)
    if not len(t):
        return None
    src = np.asarray(truth["label_source"])
    n = np.asarray(truth["label_n"], dtype=float)
    agree = np.asarray(truth["label_agree"], dtype=float)
    width = 5400.0
    bins = np.arange(0.0, t.max() + width, width)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 4.6), sharex=True)
    for code, name in enumerate(LABEL_SOURCES):
        m = src == code
        if not m.any():
            continue
        cnt, _ = np.histogram(t[m], bins, weights=n[m])
        ok, _ = np.histogram(t[m], bins, weights=agree[m])
        x = _hours(bins[:-1] + width / 2)
        a1.plot(x, cnt, "-o", ms=2, label=f"{name} ({int(n[m].sum())} labels)")
        with np.errstate(invalid="ignore", divide="ignore"):
            a2.plot(x, np.where(cnt > 0, ok / cnt, np.nan), "-o", ms=2, label=f"{name} labels agreeing with truth")
    tt = np.asarray(truth.get("teacher_t_s", []), dtype=float)
    if len(tt):
        c, m = _bin_mean(tt, truth["teacher_acc"], width)
        a2.plot(_hours(c), m, ":", color="tab:pink", label="teacher model accuracy on scene frames")
    a1.set_yscale("symlog", linthresh=10)
    a1.set_ylabel("labels per ~orbit")
    a1.legend(fontsize=8, loc="upper right")
    a2.set_ylim(0, 1)
    a2.set_ylabel("share (simulator truth)")
    a2.set_xlabel("hours since start")
    a2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def drift_fields() -> list[str]:
    return [p.name for p in d.HK_CORE if p.name.startswith("drift_")]


#: Config keys holding the alarm threshold of a drift statistic (drawn when the config has them).
DRIFT_THRESHOLD_KEYS = {"drift_stat": "drift_threshold"}


def plot_drift(tm: Telemetry, events: list[dict], cfg) -> str | None:
    fields = [f for f in drift_fields() if f != "drift_alarms"]
    hk = tm.hk_core
    if not fields or not hk:
        return None
    sources = getattr(d, "DRIFT_SOURCES", ())
    det = [e for e in events if e["name"] == "drift_detected"]
    fig, axes = plt.subplots(len(fields), 1, figsize=(11, 1.9 * len(fields) + 0.8), sharex=True, squeeze=False)
    for k, (ax, f) in enumerate(zip(axes[:, 0], fields, strict=True)):
        ax.plot(_hours(hk["t_s"]), hk[f], lw=0.8, color="tab:blue", label=f"{f} (HK)")
        thr = getattr(cfg.model, DRIFT_THRESHOLD_KEYS.get(f, ""), None)
        if isinstance(thr, int | float):
            ax.axhline(thr, color="red", ls="--", lw=0.8, label=f"alarm threshold (model.{DRIFT_THRESHOLD_KEYS[f]})")
        # detections of the monitor that feeds this statistic (events carry the source index)
        mine = [e for e in det if e["params"] and e["params"][0] == k] if len(sources) == len(fields) else det
        for e in mine:
            ax.axvline(e["t_s"] / 3600.0, color="red", lw=0.7, alpha=0.7)
        name = sources[k].replace("_", "-") if len(sources) == len(fields) else ""
        ax.set_title(f"{f}{f' ({name} monitor)' if name else ''}: {len(mine)} detections (red lines)", fontsize=9)
        ax.set_ylabel("statistic", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("mission time [h]")
    fig.suptitle("Drift monitor statistics (Page-Hinkley, HK) and detections (events)", fontsize=10)
    fig.subplots_adjust(hspace=0.5)
    return _png(fig)


def plot_training(tm: Telemetry, updates: list[dict]) -> str | None:
    if not updates:
        return None
    fig, ax = plt.subplots(figsize=(11, 3.2))
    t = np.array([u["t_s"] for u in updates]) / 3600.0
    cand = np.array([u["candidate_accuracy"] for u in updates], dtype=float)
    act = np.array([u["active_accuracy"] for u in updates], dtype=float)
    ax.plot(t, act, "_", color="0.3", ms=10, label="active model on the same held-back samples")
    for outcome, color in OUTCOME_COLOR.items():
        m = np.array([u["outcome"] == outcome for u in updates])
        if m.any():
            ax.plot(t[m], cand[m], "o", color=color, ms=5, label=f"candidate, {outcome.replace('_', ' ')} ({int(m.sum())})")
    ax.set_ylabel("held-back accuracy")
    ax.set_xlabel("mission time [h]")
    if tm.hk_core:
        bx = ax.twinx()
        bx.step(_hours(tm.hk_core["t_s"]), tm.hk_core["model_version"], where="post", color="tab:blue", lw=0.8,
                alpha=0.6)
        bx.set_ylabel("active model version (HK)", color="tab:blue")
    ax.plot([], [], color="tab:blue", lw=0.8, label="active model version (right axis)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, frameon=False)
    ax.set_title("Training updates: candidate vs active accuracy at the validation gate")
    return _png(fig)


def plot_conditioning(updates: list[dict], kappa_max: float | None) -> str | None:
    """Condition estimate of each head system handed to the optimizer, and the basis refreshes."""
    rows = [u for u in updates if "system_kappa" in u and np.isfinite(float(u["system_kappa"]))]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(11, 2.6))
    t = np.array([u["t_s"] for u in rows]) / 3600.0
    kappa = np.array([float(u["system_kappa"]) for u in rows])
    ax.plot(t, kappa, ".", ms=3, color="tab:purple", label="condition estimate of the system solved (Lanczos)")
    refreshes = np.array([int(u["precond_refreshes"]) for u in rows])
    new = np.flatnonzero(np.diff(refreshes, prepend=0) > 0)
    if len(new):
        ax.plot(t[new], kappa[new], "v", color="tab:red", ms=6,
                label=f"after a basis refresh ({int(refreshes[-1])} in the run)")
    if kappa_max is not None:
        ax.axhline(kappa_max, color="k", ls="--", lw=0.8, label=f"refresh threshold {kappa_max:g}")
    top = max(float(np.max(kappa)), kappa_max or 0.0)
    ax.set_ylim(0.0, top * 1.15 if top < 50 else top * 1.5)
    if top >= 50:
        ax.set_yscale("symlog", linthresh=10.0)
    ax.set_ylabel("kappa")
    ax.set_xlabel("mission time [h]")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, frameon=False)
    ax.set_title("Head-system conditioning (the analog optimizer needs kappa x its error << 1)")
    return _png(fig)


HEALTH_NAMES = ("OK", "DEGRADED", "FAILED")
HEALTH_COLORS = ("#2ca02c", "#f2c12e", "#d62728")
#: Device fault counters (HK SID 4), plotted when any of them is non-zero.
FAULT_COUNTERS = ("timeouts", "frames_rejected", "crc_errors", "settle_timeouts", "saturations", "device_resets",
                  "seu_detected", "verify_failures", "selftest_failures", "retries_total")
#: Legend text where the counter's name alone would mislead.
COUNTER_LABELS = {"saturations": "saturations (ADC overflows, re-ranged by the driver; a fault only with retries)"}


def plot_solve_paths(updates: list[dict], dev: dict) -> str | None:
    """Share of solves per path: from device housekeeping when present, else from the training updates."""
    if dev:
        last = {k: float(v[-1]) for k, v in dev.items()}
        by_rule = last.get("digital_by_energy_rule", 0.0)  # dictionary v13+
        names = ["analog (first try)", "analog after retry", "digital (energy rule)", "digital fallback",
                 "no usable answer"]
        counts = [last["analog_accepted"] - last["analog_after_retry"], last["analog_after_retry"], by_rule,
                  last["fallbacks"] - by_rule, last["rejected_by_gate"]]
        energy = {"analog path": last["energy_analog_j"], "digital (rule + fallback)": last["energy_fallback_j"]}
        total, source = max(last["solves"], 1.0), "device housekeeping (HK SID 4), whole run"
        colors = ["tab:orange", "#f5b56a", "#9ecae1", "tab:blue", "tab:red"]
    elif updates:
        paths = Counter("analog" if u["solve_path"] else "digital" for u in updates)
        names, counts = ["digital", "analog"], [paths["digital"], paths["analog"]]
        energy = {n: sum(float(u["solve_energy_j"]) for u in updates if ("analog" if u["solve_path"] else "digital") == n)
                  for n in names}
        total, source = len(updates), "training-update events"
        colors = ["tab:blue", "tab:orange"]
    else:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.0), gridspec_kw={"width_ratios": [3, 2]})
    ax.barh(names, counts, color=colors)
    for y, c in enumerate(counts):
        ax.text(c, y, f" {int(c)} ({100 * c / total:.0f}%)", va="center", fontsize=8)
    ax.set_xlim(0, max(max(counts), 1) * 1.3)
    ax.invert_yaxis()
    ax.set_xlabel(f"solves (source: {source})")
    bx.barh(list(energy), list(energy.values()), color=["tab:orange", "tab:blue"][: len(energy)])
    bx.invert_yaxis()
    bx.set_xlabel("solve energy [J]")
    fig.suptitle("Optimizer solves by path", fontsize=10, y=1.02)
    fig.subplots_adjust(wspace=0.45)
    return _png(fig)


def device_fields() -> list[str]:
    return [p.name for p in getattr(d, "HK_DEVICE", ())]


def plot_device(tm: Telemetry) -> str | None:
    dev = tm.hk_device
    if not dev:
        return None
    t = _hours(dev["t_s"])
    faults = [f for f in FAULT_COUNTERS if f in dev and dev[f][-1] > 0]
    fig, axes = plt.subplots(4, 1, figsize=(11, 8.2), sharex=True,
                             gridspec_kw={"height_ratios": [0.7, 1.4, 1.6, 1.4]})
    ax = axes[0]
    health = dev["health"].astype(int)
    for k, (name, color) in enumerate(zip(HEALTH_NAMES, HEALTH_COLORS, strict=True)):
        m = health == k
        if m.any():
            ax.fill_between(t, 0, 1, where=m, step="post", color=color, lw=0,
                            label=f"{name} ({100 * m.mean():.0f}% of reports)")
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.05), ncol=3, frameon=False)
    ax.set_title("Device health state (driver state machine)", fontsize=9)
    ax = axes[1]
    paths = {"analog path": dev["analog_accepted"], "digital fallback (fault, failed device or budget)": dev["fallbacks"],
             "no usable answer": dev["rejected_by_gate"]}
    if "digital_by_energy_rule" in dev:  # dictionary v13+: the energy rule's share is not a fault
        paths["digital fallback (fault, failed device or budget)"] = dev["fallbacks"] - dev["digital_by_energy_rule"]
        paths["digital by the energy rule (cheaper there)"] = dev["digital_by_energy_rule"]
    for (label, series_), color in zip(paths.items(), ("tab:orange", "tab:blue", "tab:red", "#9ecae1"), strict=False):
        ax.step(t, series_, where="post", color=color, label=f"{label}: {int(series_[-1])}")
    ax.set_ylabel("solves (cumulative)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Solves per path", fontsize=9)
    ax = axes[2]
    if faults:
        for f in faults:
            ax.step(t, dev[f], where="post", label=f"{COUNTER_LABELS.get(f, f)}: {int(dev[f][-1])}")
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        ax.set_title("Fault and event counters (cumulative; counters that stayed 0 are not drawn)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no faults: every fault counter stayed at 0", ha="center", va="center",
                transform=ax.transAxes, fontsize=10)
        ax.set_title("Fault counters", fontsize=9)
    ax.set_ylabel("count", fontsize=8)
    ax = axes[3]
    res = np.asarray(dev["last_rel_residual"], dtype=float)
    ok = np.isfinite(res) & (res > 0)
    if ok.any():
        ax.semilogy(t[ok], res[ok], ".", ms=3, color="k", label="last solve's relative residual")
        ax.set_ylabel("||QX-B||/||B||", fontsize=8)
    gx = ax.twinx()
    gx.plot(t, dev["last_gain"], color="tab:purple", lw=0.9, label="calibrated conductance gain")
    gx.set_ylabel("gain", color="tab:purple", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    gx.legend(fontsize=7, loc="upper right")
    ax.set_title("Solution quality and drift calibration", fontsize=9)
    axes[-1].set_xlabel("mission time [h]  (HK SID 4, every housekeeping period)")
    fig.suptitle("Analog optimizer device health", fontsize=11, y=0.995)
    fig.subplots_adjust(hspace=0.55, top=0.93)
    return _png(fig)


def plot_limits(tm: Telemetry, limit_set, violations, cfg) -> str | None:
    hk = tm.hk_core
    if not hk or not limit_set.limits:
        return None
    lims = [(lim, ser) for lim in limit_set.limits
            if (ser := series(lim.parameter, hk, tm.hk_device)) is not None]
    if not lims:
        return None
    ncol = 2
    nrow = math.ceil(len(lims) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(11, 2.1 * nrow + 0.4), squeeze=False, sharex=True)
    for k, (lim, (t, vals, _mode)) in enumerate(lims):
        ax = axes[k // ncol, k % ncol]
        ax.plot(_hours(t), vals, lw=0.8, color="tab:blue")
        for lv in LEVELS:
            b = lim.levels.get(lv)
            if b is None:
                continue
            for v in (b.low, b.high):
                if v is not None:
                    ax.axhline(v, color=LEVEL_COLOR[lv], lw=0.8, ls="--")
        marks = [b for lv in LEVELS if lim.levels.get(lv) for b in (lim.levels[lv].low, lim.levels[lv].high)
                 if b is not None]
        finite = vals[np.isfinite(vals)]
        lo = min([*marks, *(finite.min(keepdims=True) if len(finite) else [])], default=0.0)
        hi = max([*marks, *(finite.max(keepdims=True) if len(finite) else [])], default=1.0)
        pad = max(0.08 * (hi - lo), 0.5 if _is_int(lim.parameter) else 0.02)
        ax.set_ylim(lo - pad, hi + pad * 1.6)
        n = _mark_violations(ax, t, vals, violations, lim.parameter)
        ax.set_title(f"{lim.parameter}: {n} samples outside limits" if n else f"{lim.parameter}: within limits",
                     fontsize=9, color="red" if n else "black")
        ax.tick_params(labelsize=7)
    for k in range(len(lims), nrow * ncol):
        axes[k // ncol, k % ncol].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("mission time [h]", fontsize=8)
    fig.suptitle("Limit-checked parameters (dashed: orange warning bound, red alarm bound)", fontsize=10)
    fig.subplots_adjust(hspace=0.45, wspace=0.18, top=1 - 0.55 / (2.1 * nrow + 0.4))
    return _png(fig)


def _is_int(name: str) -> bool:
    params = (*d.HK_CORE, *(p.__class__(f"device.{p.name}", p.fmt, p.unit, p.doc) for p in getattr(d, "HK_DEVICE", ())))
    return next((p.fmt not in "fd" for p in params if p.name == name), False)


def plot_tasks(tm: Telemetry, cfg) -> str | None:
    if not tm.hk_tasks:
        return None
    fig, ax = plt.subplots(figsize=(11, 2.8))
    names = [t.name for t in cfg.tasks]
    runs = tm.hk_tasks["runs"][-1]
    skipped = tm.hk_tasks["skipped"][-1]
    overruns = tm.hk_tasks["overruns"][-1]
    x = np.arange(len(names))
    ax.bar(x - 0.27, runs, 0.27, label="runs")
    ax.bar(x, skipped, 0.27, label="skipped by power admission")
    ax.bar(x + 0.27, overruns, 0.27, label="overruns")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_yscale("symlog")
    ax.legend(fontsize=8)
    ax.set_title("Task execution counters (last housekeeping report)")
    return _png(fig)


# -- HTML -------------------------------------------------------------------------------------
def _table(rows) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _grid(header: list[str], rows: list[list], cls: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr{f" class={chr(34)}{cls[i]}{chr(34)}" if cls and cls[i] else ""}>'
        + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
        for i, r in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _select_updates(updates: list[dict], head: int = 20, tail: int = 40, other: int = 100) -> list[dict]:
    """For long runs: the first and last committed updates and every refused / rolled back one (capped)."""
    if len(updates) <= head + tail + 20:
        return updates
    committed = [i for i, u in enumerate(updates) if u["outcome"] == "committed"]
    rest = [i for i, u in enumerate(updates) if u["outcome"] != "committed"]
    keep = set(committed[:head] + committed[-tail:] + rest[:other] + rest[-other:])
    return [updates[i] for i in sorted(keep)]


def _select_versions(versions: list, head: int = 10, tail: int = 15, longest: int = 10) -> list:
    """For long runs: the first and last versions, the longest-lived, and every one that was not
    simply superseded (rolled back, switched without an event, restored)."""
    if len(versions) <= head + tail + longest:
        return versions
    by_life = sorted(range(len(versions)), key=lambda i: -versions[i].active_s)[:longest]
    odd = [i for i, v in enumerate(versions)
           if not v.why_replaced.startswith(("superseded", "active at")) or v.origin not in ("pre-launch", "trained onboard")]
    keep = set(range(head)) | set(range(len(versions) - tail, len(versions))) | set(by_life) | set(odd[:100])
    return [versions[i] for i in sorted(keep)]


def _command_history(verifications: list[dict], events: list[dict], hms) -> str:
    """One row per telecommand (request apid + sequence): its acceptance / start / completion."""
    rejected = [e for e in events if e["name"] == "tc_rejected"]
    if not verifications and not rejected:
        return _note("No command history in this run: no telecommand verification reports (PUS service 1) "
                     "and no rejected telecommand frames in the telemetry.")
    current: dict[tuple, dict] = {}  # (apid, seq) -> the latest request with that id (seq counts wrap)
    records: list[dict] = []
    for v in verifications:
        key = (v["request_apid"], v["request_seq"])
        r = current.get(key)
        if r is None or (v["stage"] == "acceptance" and "acceptance" in r):
            r = current[key] = {"t_s": v["t_s"], "key": key}
            records.append(r)
        r[v["stage"]] = "ok" if v["success"] else f"FAILED: {v['failure']}" + (f" ({v['detail']})" if v["detail"] else "")
    rows, cls = [], []
    for r in records:
        failed = any(str(r.get(k, "")).startswith("FAILED") for k in ("acceptance", "start", "completion"))
        rows.append([hms(r["t_s"]), f"{r['key'][0]}/{r['key'][1]}", r.get("acceptance", "-"), r.get("start", "-"),
                     r.get("completion", "-")])
        cls.append("alarm" if failed else "")
    n_fail = sum(1 for c in cls if c)
    out = (f'<p class="caption">{len(rows)} telecommands, {n_fail} failed verification; '
           f"{len(rejected)} frames rejected before decoding (authentication, replay, format).</p>")
    if rows:
        out += '<div class="scroll">' + _grid(["first report (UTC)", "request apid/seq", "acceptance", "start",
                                               "completion"], rows[:500], cls[:500]) + "</div>"
    if rejected:
        out += _grid(["t (UTC)", "rejected frame"], [[hms(e["t_s"]), e["detail"]] for e in rejected[:200]])
    return out


def _chunks(items: list, n: int) -> list[list]:
    size = max(1, math.ceil(len(items) / n))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _fmt(x, spec: str) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else format(float(x), spec)


def _img(title: str, data: str) -> str:
    return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def write_report(run_dir: Path, out: Path | None = None, db: Path | None = None, orbit: int | None = None,
                 limits_path: Path | None = None, log=None) -> Path:
    """Render report.html in the run folder (or at `out`); returns its path."""
    run = open_run(run_dir, need=REQUIRED_FILES)
    cfg = run.cfg
    if run.telemetry_path.stat().st_size == 0:
        # No packet reached the ground (no contact yet): the truth sections still render.
        tm, events, updates, modes, verifications, uploads = Telemetry(), [], [], [], [], []
        archive_note = ("no telemetry reached the ground in this run (telemetry.bin is empty): only the "
                        "simulator's truth is shown")
    else:
        db = ensure_archive(run.path, db, log=log)
        with Archive(db) as ar:
            tm = ar.telemetry()
            events = ar.events()
            updates = ar.training_updates()
            modes = ar.mode_changes()
            verifications = ar.verifications()
            uploads = ar.model_uploads()
        archive_note = ""
    summary = run.summary()
    truth = run.truth()
    limit_set = load_limits(limits_path, cfg)
    violations = check(limit_set, tm.hk_core, tm.hk_device)
    start = cfg.mission.start_utc
    end_s = float(truth["t_s"][-1]) if len(truth.get("t_s", [])) else None
    versions = lifecycle(tm.hk_core, updates, truth, end_s, uploads)
    orbit_n, orbit_why = None, ""
    if orbit is not None or (tm.orbits and tm.hk_tasks):
        try:
            orbit_n, orbit_why = choose_orbit(tm, orbit)
        except OptionError:
            if orbit is not None:
                raise  # the user asked for an orbit that is not there
    if orbit is not None and not tm.orbits:
        raise OptionError(f"--orbit {orbit}: the telemetry has no orbit budget reports")

    sections: list[tuple[str, str, str]] = []  # (anchor title, html, caption)

    def plot(title: str, data: str | None, caption: str, missing: str) -> None:
        sections.append((title, _img(title, data), caption) if data else (title, _note(missing), ""))

    plot("Eclipses, contacts and state of charge", plot_soc(tm, truth, cfg, violations),
         "Battery state of charge from housekeeping (dots) over the simulator's truth (line). The strip along the "
         "top marks when a limit was violated (orange: warning, red: alarm).", "")
    plot("Per-orbit energy budget", plot_budget(tm, cfg),
         "For each orbit, the optional-energy budget the power manager granted (black step) against what the "
         "optional tasks used, stacked by task.",
         "Fewer than two orbit budget reports in the telemetry: no per-orbit comparison.")
    if orbit_n is not None:
        plot(f"Task execution timeline, orbit {orbit_n}", plot_task_timeline(tm, cfg, orbit_n, orbit_why),
             "Which task ran or was refused by power admission in each housekeeping period of the orbit; below, "
             "the optional budget left and the state of charge.", "")
    else:
        plot("Task execution timeline", None, "", "No orbit with task housekeeping in the telemetry.")
    plot("Model accuracy", plot_accuracy(tm, truth, cfg, violations),
         "Accuracy of the onboard model, the frozen pre-launch model and (when the run has it) the ground "
         "retraining loop (simulator truth, averaged per ~orbit), and the accuracy the satellite itself reports on "
         "calibration labels (HK).", "")
    plot("Labels by source", plot_labels(truth),
         "Labels the onboard learner received from each source (site maps, the onboard teacher, its own "
         "confident predictions) and how many of them agree with the simulator's truth, with the teacher "
         "model's own accuracy: review figures only, none of them is known onboard.",
         "Labels by source: this run's truth.npz has no label log.")
    drift_png = plot_drift(tm, events, cfg)
    plot("Drift statistics", drift_png,
         "Drift monitor statistics from housekeeping; red lines mark drift detections (events).",
         f"Drift statistics: not available in this run (telemetry dictionary version {d.DICTIONARY_VERSION} "
         "has no drift fields).")
    plot("Training updates", plot_training(tm, updates),
         "Each update: the candidate's accuracy on held-back samples at the validation gate against the active "
         "model's (grey); the blue step is the active model version.",
         "No training updates in this run.")
    plot("Head-system conditioning", plot_conditioning(updates, getattr(getattr(cfg, "model", None),
                                                                         "precondition_kappa_max", None)),
         "The learner keeps its statistics in a whitened basis; each point is its condition estimate of the "
         "system it handed the optimizer (training-update events). Above the threshold the basis is refreshed "
         "(one digital Cholesky) before the solve.",
         "No condition estimates in this run's training updates.")
    plot("Optimizer solves by path", plot_solve_paths(updates, tm.hk_device),
         "Which optimizer path produced the solutions (device housekeeping when the run has it, else the "
         "training-update events) and the energy spent on each path.",
         "No optimizer solves reported in this run.")
    dev = plot_device(tm)
    plot("Analog device health", dev,
         "The optimizer driver's housekeeping: health state, solves per path, fault counters, the residual of the "
         "last solve and the drift calibration gain.",
         "No device telemetry in this run: the optimizer backend is "
         f"{getattr(cfg.device, 'backend', 'digital')}, and only the analog backend reports device housekeeping "
         "(HK SID 4)." if device_fields() else
         f"No device telemetry in this run: dictionary version {d.DICTIONARY_VERSION} has no device fields.")
    plot("Limit-checked parameters", plot_limits(tm, limit_set, violations, cfg),
         f"Every parameter with a limit ({html.escape(Path(limit_set.source).name)}), its bounds and the samples "
         "outside them.", "No limit-checked parameter in the telemetry.")
    plot("Generation and load", plot_power(truth), "Simulator truth: array power and bus load.", "")
    plot("Task execution counters", plot_tasks(tm, cfg), "Counters of the last task housekeeping report.",
         "No task housekeeping in the telemetry.")

    def hms(t):
        return (start + timedelta(seconds=float(t))).strftime("%Y-%m-%d %H:%M:%S")

    n_alarm = sum(v.level == "alarm" for v in violations)
    n_warn = len(violations) - n_alarm
    viol_rows = [[v.parameter, v.level, hms(v.start_s), f"{v.start_s / 3600:.2f}", f"{(v.end_s - v.start_s) / 60:.1f}",
                  f"{v.worst:.4g}", f"{'<' if v.side == 'low' else '>'} {v.bound:g}", v.mode, v.samples]
                 for v in violations[:300]]
    per_param = Counter((v.parameter, v.level) for v in violations)
    summary_rows = []
    for (param, lv), n in sorted(per_param.items()):
        vs = [v for v in violations if v.parameter == param and v.level == lv]
        worst = min(v.worst for v in vs) if vs[0].side == "low" else max(v.worst for v in vs)
        summary_rows.append([param, lv, n, f"{sum(v.end_s - v.start_s for v in vs) / 3600:.2f}", f"{worst:.4g}",
                             f"{'<' if vs[0].side == 'low' else '>'} {vs[0].bound:g}", hms(vs[0].start_s)])
    viol_html = (
        _grid(["parameter", "level", "excursions", "total duration [h]", "worst", "bound", "first (UTC)"],
              summary_rows, [r[1] for r in summary_rows])
        + f'<details{" open" if len(violations) <= 12 else ""}><summary>every excursion ({len(violations)})</summary>'
        + '<div class="scroll">'
        + (_grid(["parameter", "level", "start (UTC)", "t [h]", "duration [min]", "worst", "bound", "mode", "samples"],
               viol_rows, [v.level for v in violations[:300]])
         + (f'<p class="note">first 300 of {len(violations)} shown; `groundtools limits RUN` lists all</p>'
            if len(violations) > 300 else "")) + "</div></details>"
        if violations else '<p class="ok">No limit violations.</p>'
    )
    shown_updates = _select_updates(updates)
    upd_rows = [[f"{u['t_s'] / 3600:.2f}", u["outcome"], u["version"], _fmt(u["candidate_accuracy"], ".3f"),
                 _fmt(u["active_accuracy"], ".3f"), u["labels_used"], "analog" if u["solve_path"] else "digital",
                 _fmt(u["solve_energy_j"], ".2e"), _fmt(u["rel_residual"], ".1e"),
                 _fmt(u.get("system_kappa", math.nan), ".2f"), u.get("precond_refreshes", "-")]
                for u in shown_updates]
    mode_rows = [[f"{m['t_s'] / 3600:.2f}", m["from_mode"], m["to_mode"], m["reason"]] for m in modes]
    ev_counts = Counter((e["name"], e["severity"]) for e in events)
    ev_rows = [[n, s, c] for (n, s), c in sorted(ev_counts.items())]
    notable = [e for e in events if e["name"] not in ("contact", "training_update")][:100]
    shown_versions = _select_versions(versions)
    model_rows = [[f"v{mv.version}", mv.origin, f"v{mv.parent}" if mv.parent is not None else "-",
                   hms(mv.activated_s) if math.isfinite(mv.activated_s) else "-", f"{mv.active_s / 3600:.2f}",
                   "n/a" if not math.isfinite(mv.label_accuracy) else f"{mv.label_accuracy:.3f}",
                   "n/a" if not math.isfinite(mv.truth_accuracy) else f"{mv.truth_accuracy:.3f}",
                   mv.refused_candidates, mv.why_replaced] for mv in shown_versions]
    n_units, n_bad, reasons = tm.packets, tm.bad_packets, tm.bad_reasons
    decode_note = archive_note or (f"archive {Path(db).resolve()}: {n_units} packets archived, {n_bad} bad" + (
        f" ({', '.join(f'{k}: {v}' for k, v in reasons.items())})" if reasons else ""))
    cmd_html = _command_history(verifications, events, hms)
    toc = "".join(f'<li><a href="#s{i}">{html.escape(title)}</a></li>' for i, (title, _, _) in enumerate(sections))
    body = "".join(
        f'<h2 id="s{i}">{html.escape(title)}</h2>'
        + (f'<p class="caption">{caption}</p>' if caption else "") + content
        for i, (title, content, caption) in enumerate(sections)
    )
    run_info = run.run_info
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Review: {html.escape(cfg.mission.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}}
table{{border-collapse:collapse;margin:0.5em 0}}th,td{{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}}
th{{background:#f3f3f3}}img{{max-width:100%}}.note,.caption{{color:#555;font-size:13px}}
.missing{{background:#f6f6f6;border-left:4px solid #bbb;padding:6px 10px;color:#444}}
.ok{{color:#1a7f37}}tr.alarm td{{background:#fde2e2}}tr.warning td{{background:#fff1d6}}
.scroll{{max-height:420px;overflow-y:auto}}summary{{cursor:pointer;color:#0645ad;font-size:13px}}
.cols{{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start}}ul.toc{{columns:3;font-size:13px}}</style></head><body>
<h1>Review: {html.escape(cfg.mission.name)}</h1>
<p class="note">Run folder {html.escape(str(run.path.resolve()))}; seed {run_info.get('seed')};
git {html.escape(str(run_info.get('git_revision')))}; telemetry dictionary v{d.DICTIONARY_VERSION};
{html.escape(decode_note)}.
Curves marked "truth" come from the simulator (truth.npz); everything else is decoded telemetry.</p>
<h2>Summary</h2><div class="cols">{"".join(_table(chunk) for chunk in _chunks(list(summary.items()), 3))}</div>
<h2 id="limits">Limit violations ({n_alarm} alarm, {n_warn} warning)</h2>
<p class="caption">Excursions of housekeeping parameters outside the limits in
{html.escape(str(limit_set.source))} (consecutive samples merged; bounds from the run's config where the file says so).</p>
{viol_html}
<h2>Contents</h2><ul class="toc">{toc}<li><a href="#models">Model versions</a></li>
<li><a href="#updates">Training update list</a></li><li><a href="#commands">Command history</a></li>
<li><a href="#modes">Mode transitions and events</a></li></ul>
{body}
<h2 id="models">Model versions ({len(versions)})</h2>
<p class="caption">Every model that was active onboard, from training-update events and the model version in
housekeeping (`groundtools models RUN`). Label accuracy: the onboard figure while the version was active;
truth accuracy: the simulator's over the same time.</p>
{f'<p class="note">{len(versions)} versions: {sum(v.origin == "trained onboard" for v in versions)} trained onboard, '
 f'median time active {np.median([v.active_s for v in versions]) / 60:.1f} min. {len(shown_versions)} shown: the first and '
 f'last, the longest-lived, and any not simply superseded; `groundtools models RUN` lists all.</p>'
 if len(shown_versions) < len(versions) else ""}
{_grid(["version", "origin", "parent", "activated (UTC)", "active [h]", "label acc (HK)", "truth acc", "refused candidates", "replaced because"], model_rows)}
<h2 id="updates">Training update list ({len(updates)})</h2>
{f'<p class="note">{len(shown_updates)} of {len(updates)} shown: the first and last committed updates and the '
 f'refused / rolled back ones.</p>' if len(shown_updates) < len(updates) else ""}
<div class="scroll">{_grid(["t [h]", "outcome", "version", "candidate acc", "active acc", "labels", "solve path", "solve energy [J]", "rel. residual", "system kappa", "basis refreshes"], upd_rows)}</div>
<h2 id="commands">Command history</h2>{cmd_html}
<h2 id="modes">Mode transitions ({len(modes)}) and events</h2>
<div class="cols"><div>{_grid(["t [h]", "from", "to", "reason"], mode_rows) if modes else _note("No mode transitions.")}</div>
<div>{_grid(["event", "severity", "count"], ev_rows)}</div></div>
{_grid(["t (UTC)", "event", "severity", "detail"], [[hms(e["t_s"]), e["name"], e["severity"], e["detail"]] for e in notable]) if notable else ""}
<h2>Start-up memory report (bytes)</h2>{_table(run_info.get('memory_report_bytes', {}).items())}
</body></html>
"""
    out = Path(out) if out else run.path / "report.html"
    out.write_text(doc, encoding="utf-8")
    return out
