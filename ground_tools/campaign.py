"""Campaigns: many simulations (missions x seeds) in parallel through Dask, one table and one plot.

`groundtools campaign CONFIG... --seeds N --days D` runs every config with seeds
`mission.seed + 0 .. N-1`. By default it starts a `distributed.LocalCluster` with W
worker *processes* of one thread each (the simulator is CPU-bound Python and numba:
threads would share one interpreter lock); `--scheduler tcp://HOST:8786` submits to
an existing cluster instead (its workers need this project installed and a shared
file system for the output folder). Each run writes an ordinary run folder under
OUT/runs/, and the client gathers the summaries into OUT/campaign.csv and
OUT/campaign.png as they finish, printing one progress line per run.

A run that fails is a row with its error, never the end of the campaign.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Summary columns first in the CSV (the rest of summary.json follows, sorted).
LEAD_COLUMNS = (
    "run", "config", "seed", "days", "status", "wall_time_s", "min_soc", "final_soc", "orbits",
    "training_updates_committed", "training_updates_refused", "rollbacks",
    "accuracy_onboard_last_day", "accuracy_frozen_last_day", "optional_runs_skipped", "brownout_deficit_j",
)
CSV_NAME = "campaign.csv"
PNG_NAME = "campaign.png"


@dataclass(frozen=True)
class RunSpec:
    name: str
    config: str  # path to the mission YAML
    seed: int
    days: float
    out: str  # run folder


def run_one(spec: RunSpec) -> dict:
    """Executed on a worker: one simulation into its run folder; returns its summary row."""
    t0 = time.perf_counter()
    row = {"run": spec.name, "config": spec.config, "seed": spec.seed, "days": spec.days}
    try:
        from flight_sw.config import load_mission_config
        from sim.runner import run_mission

        cfg = load_mission_config(spec.config)
        text = Path(spec.config).read_text(encoding="utf-8")
        result = run_mission(cfg, text, Path(spec.out), days=spec.days, seed=spec.seed, show_progress=False,
                             command=f"groundtools campaign ({spec.name})")
        row.update(result.summary)
        row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failed run is reported as a row, the campaign goes on
        row["status"] = f"failed: {type(exc).__name__}: {exc}"
    row["run"], row["seed"], row["days"] = spec.name, spec.seed, spec.days
    row["wall_time_s"] = round(time.perf_counter() - t0, 3)
    return row


def plan_runs(configs: list[str], seeds: int, days: float | None, out: Path) -> list[RunSpec]:
    from flight_sw.config import load_mission_config

    specs = []
    for path in configs:
        cfg = load_mission_config(path)  # raises ConfigError: the CLI turns it into exit 2
        d = cfg.mission.duration_days if days is None else days
        for k in range(seeds):
            seed = cfg.mission.seed + k
            name = f"{Path(path).stem}-s{seed}"
            specs.append(RunSpec(name, str(Path(path).resolve()), seed, d, str((out / "runs" / name).resolve())))
    return specs


def _warm(config: str) -> float:
    """On a worker: import the simulator and load its compiled kernels with a tiny run."""
    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="campaign-warm-") as tmp:
        run_one(RunSpec("warm", config, 0, 0.005, tmp))
    return time.perf_counter() - t0


def warm_workers(client, config: str) -> dict:
    """Run `_warm` once on every worker (benchmarks: keep start-up out of the timed part)."""
    return client.run(_warm, config)


def _quiet_dask() -> None:
    for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker",
                 "distributed.core", "distributed.http.proxy"):
        logging.getLogger(name).setLevel(logging.ERROR)


def start_client(workers: int, scheduler: str | None, connect_timeout_s: float = 15.0):
    """A Dask client: on a new LocalCluster (W processes x 1 thread) or on `scheduler`."""
    import dask
    from distributed import Client, LocalCluster

    _quiet_dask()
    dask.config.set({"distributed.worker.daemon": False, "distributed.admin.system-monitor.gil.enabled": False})
    if scheduler:
        return Client(scheduler, timeout=f"{connect_timeout_s}s"), None
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
        memory_limit=0, silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster


def run_campaign(
    specs: list[RunSpec], client, log: Callable[[str], None] = print,
) -> list[dict]:
    """Submit every run, report each as it completes; rows in submission order."""
    from distributed import as_completed

    t0 = time.perf_counter()
    futures = {client.submit(run_one, s, key=f"run-{s.name}-{i}", pure=False): i for i, s in enumerate(specs)}
    rows: list[dict | None] = [None] * len(specs)
    for done, fut in enumerate(as_completed(futures), 1):
        row = fut.result()
        rows[futures[fut]] = row
        extra = (f"min SoC {row.get('min_soc', float('nan')):.3f}, accuracy last day "
                 f"{row.get('accuracy_onboard_last_day', float('nan')):.3f}") if row["status"] == "ok" else row["status"]
        log(f"[{done}/{len(specs)}] {row['run']}: {row['wall_time_s']:.1f} s, {extra} "
            f"(elapsed {time.perf_counter() - t0:.1f} s)")
    return [r for r in rows if r is not None]


def write_table(rows: list[dict], out: Path) -> Path:
    keys = list(LEAD_COLUMNS)
    for r in rows:
        keys += sorted(k for k in r if k not in keys)
    path = out / CSV_NAME
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})
    return path


def _num(r: dict, key: str) -> float:
    v = r.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def write_plot(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok"]
    names = [r["run"] for r in ok]
    x = list(range(len(ok)))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(6.0, 0.55 * len(ok) + 3), 6), sharex=True)
    a1.bar([i - 0.2 for i in x], [_num(r, "accuracy_onboard_last_day") for r in ok], 0.4, label="onboard model")
    a1.bar([i + 0.2 for i in x], [_num(r, "accuracy_frozen_last_day") for r in ok], 0.4, label="frozen pre-launch model")
    lows = [v for r in ok for v in (_num(r, "accuracy_onboard_last_day"), _num(r, "accuracy_frozen_last_day"))
            if math.isfinite(v)]
    a1.set_ylim(max(0.0, min(lows, default=0.5) - 0.05), 1.0)
    a1.set_ylabel("accuracy, last day")
    a1.legend(fontsize=8, loc="lower right")
    a1.set_title(f"Campaign: {len(ok)} runs" + (f" ({len(rows) - len(ok)} failed)" if len(rows) > len(ok) else ""))
    a2.bar(x, [_num(r, "min_soc") for r in ok], 0.6, color="tab:green", label="minimum SoC")
    a2.plot(x, [_num(r, "final_soc") for r in ok], "k_", ms=14, label="final SoC")
    a2.set_ylim(0, 1)
    a2.set_ylabel("state of charge")
    a2.legend(fontsize=8, loc="lower right")
    a2.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    path = out / PNG_NAME
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
