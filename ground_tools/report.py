"""Review report: one self-contained HTML file (plots embedded as PNG) for a run folder.

Thin version (issue 2): summary table, eclipse/state-of-charge timeline, per-orbit
budget against use split by task, model accuracy (onboard vs the frozen model),
training updates, per-task execution counters, memory report. Issue 8 adds the
archive, limits, task timelines, device health and the command history.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from flight_sw.config.loader import parse_mission_config  # noqa: E402
from flight_sw.config.schema import MODES  # noqa: E402
from ground_tools.decode import (  # noqa: E402
    Telemetry,
    contact_events,
    decode_file,
    mode_changes,
    training_updates,
)

REQUIRED_FILES = ("config.yaml", "run.json", "telemetry.bin", "truth.npz", "summary.json")


class RunFolderError(ValueError):
    """The run folder is incomplete or unreadable; the message says what is missing."""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _hours(t_s):
    return np.asarray(t_s) / 3600.0


def _shade_eclipses(ax, truth) -> None:
    for a, b in zip(truth["umbra_entry_s"], truth["umbra_exit_s"], strict=True):
        if np.isfinite(a) and np.isfinite(b):
            ax.axvspan(a / 3600.0, b / 3600.0, color="0.85", lw=0)


def plot_soc(tm: Telemetry, truth, cfg) -> str:
    fig, ax = plt.subplots(figsize=(11, 3.2))
    _shade_eclipses(ax, truth)
    ax.plot(_hours(truth["t_s"]), truth["soc"], lw=1, label="state of charge (truth)")
    if tm.hk_core:
        ax.plot(_hours(tm.hk_core["t_s"]), tm.hk_core["soc"], ".", ms=2, label="state of charge (HK)")
    bat = cfg.power.battery
    for level, name, style in ((bat.reserve_soc, "reserve", "--"), (bat.floor_soc, "floor", ":"), (bat.safe_mode_soc, "safe", "-.")):
        ax.axhline(level, ls=style, color="k", lw=0.8)
        ax.text(0, level, f" {name}", va="bottom", fontsize=7)
    for t, aos in contact_events(tm):
        if aos:
            ax.axvline(t / 3600.0, color="tab:green", lw=0.5, alpha=0.6)
    ax.set_xlabel("mission time [h]  (grey: umbra, green: contact start)")
    ax.set_ylabel("SoC")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Eclipses, contacts and battery state of charge")
    return _png(fig)


def plot_power(truth) -> str:
    fig, ax = plt.subplots(figsize=(11, 2.8))
    _shade_eclipses(ax, truth)
    ax.plot(_hours(truth["t_s"]), truth["solar_w"], lw=0.8, label="array power [W]")
    ax.plot(_hours(truth["t_s"]), truth["load_w"], lw=0.8, label="bus load [W] (30 s mean)")
    ax.set_xlabel("mission time [h]")
    ax.set_ylabel("W")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Generation and load")
    return _png(fig)


def plot_budget(tm: Telemetry, cfg) -> str:
    fig, ax = plt.subplots(figsize=(11, 3.4))
    o = tm.orbits
    if o and tm.orbit_task_energy_j is not None and len(o["orbit_index"]) > 1:
        index = o["orbit_index"]
        # A TLE uplink reopens an orbit (same index reported again): its budget is the
        # last report of that index; its use arrives with the first report of the next.
        last = {int(k): i for i, k in enumerate(index)}
        first = {}
        for i, k in enumerate(index):
            first.setdefault(int(k), i)
        idx = np.array([k for k in sorted(last) if k + 1 in first])
        budget = o["budget_j"][[last[k] for k in idx]] / 1000.0
        generation = o["generation_j"][[last[k] for k in idx]] / 1000.0
        used = tm.orbit_task_energy_j[[first[k + 1] for k in idx]] / 1000.0
        bottom = np.zeros(len(idx))
        for i, task in enumerate(cfg.tasks):
            if task.criticality != "optional":
                continue
            ax.bar(idx, used[:, i], bottom=bottom, label=f"{task.name} (optional)")
            bottom += used[:, i]
        ax.step(idx, budget, where="mid", color="k", lw=1.2, label="optional budget")
        ax.plot(idx, generation, "v", color="tab:orange", ms=3, label="predicted generation")
    ax.set_xlabel("orbit")
    ax.set_ylabel("kJ")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Per-orbit optional-energy budget and what optional tasks used")
    return _png(fig)


def plot_accuracy(tm: Telemetry, truth, cfg) -> str:
    fig, ax = plt.subplots(figsize=(11, 3.4))
    t = truth["acc_t_s"]
    if len(t):
        bins = np.arange(0.0, t[-1] + 5400.0, 5400.0)  # ~one orbit
        which = np.digitize(t, bins)
        centres, on, fr = [], [], []
        for b in np.unique(which):
            m = which == b
            centres.append(t[m].mean())
            on.append(truth["acc_onboard"][m].mean())
            fr.append(truth["acc_frozen"][m].mean())
        ax.plot(_hours(centres), on, "-o", ms=3, label="onboard model (truth, per orbit)")
        ax.plot(_hours(centres), fr, "-s", ms=3, label="frozen pre-launch model (truth)")
    if tm.hk_core:
        ax.plot(_hours(tm.hk_core["t_s"]), tm.hk_core["label_accuracy"], ".", ms=2, alpha=0.5,
                label="onboard accuracy on calibration labels (HK)")
    for u in training_updates(tm):
        color = {"committed": "tab:green", "refused": "tab:red", "rolled_back": "tab:purple"}[u["outcome"]]
        ax.axvline(u["t_s"] / 3600.0, color=color, lw=0.6, alpha=0.7)
    shift = cfg.payload.drift.abrupt_shift_day
    if shift is not None:
        ax.axvline(shift * 24.0, color="k", ls="--", lw=1)
        ax.text(shift * 24.0, 0.02, " abrupt sensor shift", fontsize=8)
    lows = [np.nanmin(v) for v in (truth["acc_onboard"], truth["acc_frozen"]) if len(v)]
    ax.set_ylim(min([0.5, *lows]) - 0.02, 1.01)
    ax.set_xlabel("mission time [h]  (vertical: training updates, green committed, red refused, purple rolled back)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Model accuracy under drift")
    return _png(fig)


def plot_tasks(tm: Telemetry, cfg) -> str:
    fig, ax = plt.subplots(figsize=(11, 2.8))
    names = [t.name for t in cfg.tasks]
    if tm.hk_tasks:
        runs = tm.hk_tasks["runs"][-1]
        skipped = tm.hk_tasks["skipped"][-1]
        overruns = tm.hk_tasks["overruns"][-1]
        x = np.arange(len(names))
        ax.bar(x - 0.27, runs, 0.27, label="runs")
        ax.bar(x, skipped, 0.27, label="skipped by power admission")
        ax.bar(x + 0.27, overruns, 0.27, label="overruns")
        ax.set_xticks(x, names)
        ax.set_yscale("symlog")
    ax.legend(fontsize=8)
    ax.set_title("Task execution counters (last housekeeping report)")
    return _png(fig)


def load_run(run_dir: Path):
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: not a run folder (directory not found)")
    missing = [f for f in REQUIRED_FILES if not (run_dir / f).is_file()]
    if missing:
        raise RunFolderError(f"{run_dir}: incomplete run folder, missing {', '.join(missing)}")
    cfg = parse_mission_config((run_dir / "config.yaml").read_text(encoding="utf-8"), str(run_dir / "config.yaml"))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    run_info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    truth = dict(np.load(run_dir / "truth.npz"))
    tm = decode_file(run_dir / "telemetry.bin", cfg.mission.start_utc, len(cfg.tasks))
    return cfg, summary, run_info, truth, tm


def _table(rows) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Render report.html in the run folder (or at `out`); returns its path."""
    run_dir = Path(run_dir)
    cfg, summary, run_info, truth, tm = load_run(run_dir)
    plots = [
        ("Eclipses, contacts and state of charge", plot_soc(tm, truth, cfg)),
        ("Per-orbit energy budget", plot_budget(tm, cfg)),
        ("Model accuracy", plot_accuracy(tm, truth, cfg)),
        ("Generation and load", plot_power(truth)),
        ("Task execution", plot_tasks(tm, cfg)),
    ]
    updates = training_updates(tm)
    modes = mode_changes(tm)
    upd_rows = "".join(
        f"<tr><td>{u['t_s'] / 3600:.2f}</td><td>{u['outcome']}</td><td>{u['version']}</td>"
        f"<td>{u['candidate_accuracy']:.3f}</td><td>{u['active_accuracy']:.3f}</td>"
        f"<td>{u['solve_energy_j']:.2e}</td><td>{u['rel_residual']:.1e}</td></tr>"
        for u in updates[:200]
    )
    mode_rows = "".join(
        f"<tr><td>{m['t_s'] / 3600:.2f}</td><td>{MODES[m['from']]}</td><td>{MODES[m['to']]}</td><td>{m['reason']}</td></tr>" for m in modes
    )
    figs = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        for title, data in plots
    )
    decode_note = (
        f"{tm.packets} packets decoded, {tm.bad_packets} bad"
        + (f" ({', '.join(f'{k}: {v}' for k, v in tm.bad_reasons.items())})" if tm.bad_reasons else "")
    )
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Review: {html.escape(cfg.mission.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}}
table{{border-collapse:collapse;margin:0.5em 0}}th,td{{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}}
th{{background:#f3f3f3}}img{{max-width:100%}}.note{{color:#666;font-size:13px}}</style></head><body>
<h1>Review: {html.escape(cfg.mission.name)}</h1>
<p class="note">Run folder {html.escape(str(run_dir.resolve()))}; seed {run_info.get('seed')};
git {html.escape(str(run_info.get('git_revision')))}; {html.escape(decode_note)}.
Accuracy curves marked "truth" come from the simulator (truth.npz); everything else is decoded telemetry.</p>
<h2>Summary</h2>{_table(summary.items())}
{figs}
<h2>Training updates ({len(updates)})</h2>
<table><tr><th>t [h]</th><th>outcome</th><th>version</th><th>candidate acc</th><th>active acc</th><th>solve energy [J]</th><th>rel. residual</th></tr>{upd_rows}</table>
<h2>Mode transitions ({len(modes)})</h2>
<table><tr><th>t [h]</th><th>from</th><th>to</th><th>reason</th></tr>{mode_rows}</table>
<h2>Start-up memory report</h2>{_table(run_info.get('memory_report_bytes', {}).items())}
</body></html>
"""
    out = Path(out) if out else run_dir / "report.html"
    out.write_text(doc, encoding="utf-8")
    return out
