"""Benchmark group `ground`: archive ingest, report generation and campaign scaling.

- ``ground.ingest_ratio_vs_raw``: packets per second of `ground_tools.archive.ingest`
  (framing with CRC checks, decoding, SQLite inserts into a fresh archive) divided by
  packets per second of a raw read of the same file (read the bytes and split them by
  the CCSDS length fields, nothing else); both medians (ingest of 5, quick 2), same
  process. The file is the default mission's telemetry of 30 days (quick: 3 days).
- ``ground.report_s_30d``: wall time of `write_report` on the 30-day run from a run
  folder without an archive (so it includes the ingest), median of 3. Quick mode
  uses a 3-day run, one repetition, and says so: the figure is then the 3-day time.
- ``ground.campaign_speedup_2_workers``: wall time of 8 runs of 1 day on a Dask
  LocalCluster with 1 worker process divided by the same 8 runs with 2 workers
  (quick: 4 runs of 0.05 day). Clusters are started and warmed (imports, compiled
  kernels loaded) before the clock starts; start-up time is logged separately.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from sim.bench import median_time_s

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


def _make_run(days: float, out: Path) -> Path:
    from flight_sw.config import load_mission_config
    from sim.runner import run_mission

    cfg = load_mission_config(DEFAULT_CONFIG)
    return run_mission(cfg, DEFAULT_CONFIG.read_text(), out, days=days, show_progress=False).run_dir


def _ingest_ratio(run_dir: Path, tmp: Path, log, repeats: int) -> float:
    from ground_tools.archive import ingest
    from ground_tools.decode import split_packets

    tm_path = run_dir / "telemetry.bin"
    n_packets = len(split_packets(tm_path.read_bytes())[0])
    t_raw = median_time_s(lambda: split_packets(tm_path.read_bytes()), repeats=7, warmup=1)
    counter = [0]

    def one_ingest():
        counter[0] += 1
        db = tmp / f"bench-{counter[0]}.sqlite"
        rep = ingest(run_dir, db)
        assert rep.new_packets == n_packets, (rep.new_packets, n_packets)
        db.unlink()

    t_ingest = median_time_s(one_ingest, repeats=repeats, warmup=1)
    log(f"{n_packets} packets ({tm_path.stat().st_size / 1e6:.1f} MB): raw read {n_packets / t_raw:,.0f} packets/s, "
        f"ingest {n_packets / t_ingest:,.0f} packets/s ({t_ingest:.2f} s)")
    return t_raw / t_ingest


def _report_s(run_dir: Path, log, repeats: int) -> float:
    from ground_tools.archive import DEFAULT_NAME
    from ground_tools.report import write_report

    def one():
        (run_dir / DEFAULT_NAME).unlink(missing_ok=True)
        write_report(run_dir)

    t = median_time_s(one, repeats=repeats, warmup=0)
    t_warm = median_time_s(lambda: write_report(run_dir), repeats=1, warmup=0)
    log(f"report from a run folder without archive: {t:.2f} s (median of {repeats}); with the archive in place: "
        f"{t_warm:.2f} s")
    return t


def _campaign_wall(workers: int, specs, log) -> float:
    from ground_tools.campaign import run_campaign, start_client, warm_workers

    t0 = time.perf_counter()
    client, cluster = start_client(workers, None)
    try:
        warm_workers(client, specs[0].config)  # imports and compiled kernels on every worker
        log(f"{workers} worker(s): cluster up and warm in {time.perf_counter() - t0:.1f} s")
        t1 = time.perf_counter()
        rows = run_campaign(specs, client, log=lambda m: None)
        wall = time.perf_counter() - t1
    finally:
        client.close()
        cluster.close()
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        raise RuntimeError(f"campaign runs failed: {bad[0]['status']}")
    log(f"{workers} worker(s): {len(specs)} runs in {wall:.2f} s wall")
    return wall


def run(quick: bool, log) -> dict[str, float]:
    from ground_tools.campaign import plan_runs

    days = 3.0 if quick else 30.0
    with tempfile.TemporaryDirectory(prefix="bench-ground-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        run_dir = _make_run(days, tmp / "run")
        log(f"simulated a {days:g}-day default mission in {time.perf_counter() - t0:.1f} s"
            + (" (quick mode: report figure is for 3 days, not 30)" if quick else ""))
        ratio = _ingest_ratio(run_dir, tmp, log, repeats=2 if quick else 5)
        report_s = _report_s(run_dir, log, repeats=1 if quick else 3)
        n_runs, run_days = (4, 0.05) if quick else (8, 1.0)
        seeds = n_runs
        walls = {}
        for workers in (1, 2):
            out = tmp / f"campaign-{workers}"
            specs = plan_runs([str(DEFAULT_CONFIG)], seeds, run_days, out)
            walls[workers] = _campaign_wall(workers, specs, log)
            shutil.rmtree(out, ignore_errors=True)
        log(f"campaign of {n_runs} runs x {run_days:g} d: 1 worker {walls[1]:.2f} s, 2 workers {walls[2]:.2f} s")
    return {
        "ground.ingest_ratio_vs_raw": ratio,
        "ground.report_s_30d": report_s,
        "ground.campaign_speedup_2_workers": walls[1] / walls[2],
    }
