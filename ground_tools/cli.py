"""`groundtools`: what the ground team runs (ingest, limits, report, models, replay, campaign, plan, suite-report).

Bad input (a run folder missing files, telemetry of another dictionary version, an
empty or foreign archive, an invalid limits or model file, an unknown orbit, a missing
or malformed learning-suite JSON)
ends with a message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from pathlib import Path

from flight_sw.config import ConfigError, load_mission_config
from ground_tools.archive import ArchiveError
from ground_tools.decode import DecodeError
from ground_tools.limits import LimitsError
from ground_tools.models import ModelFileError, NoSamplesError
from ground_tools.runfolder import OptionError, RunFolderError

EXIT_BAD_INPUT = 2
BAD_INPUT = (RunFolderError, DecodeError, ArchiveError, LimitsError, ModelFileError, NoSamplesError, ConfigError,
             OptionError)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _bad_output(out: Path, folder: bool = False) -> bool:
    """Report an unusable --out before any work (sim/paths.py); True when it is one."""
    from sim.paths import output_file_problem, output_folder_problem

    problem = output_folder_problem(out) if folder else output_file_problem(out)
    if problem:
        _err(f"error: --out {problem}")
    return problem is not None


def cmd_report(args) -> int:
    from ground_tools.report import write_report

    if args.out and _bad_output(Path(args.out)):
        return EXIT_BAD_INPUT
    path = write_report(Path(args.run), Path(args.out) if args.out else None, db=args.db, orbit=args.orbit,
                        limits_path=args.limits, log=_err)
    print(f"report: {path.resolve()}")
    return 0


def cmd_suite_report(args) -> int:
    """The learning-suite review page (HTML + PNGs) from `flightsim bench learning`'s JSON."""
    from ground_tools.suite_report import SuiteError, load_suite, write_suite_report

    try:
        suite = load_suite(args.suite)
    except SuiteError as exc:
        _err(f"error: {exc}")
        return EXIT_BAD_INPUT
    out = Path(args.out) if args.out else Path(args.suite).parent
    try:
        path = write_suite_report(suite, out)
    except OSError as exc:
        _err(f"error: cannot write the suite report into {out}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT
    print(f"suite report: {path.resolve()}")
    return 0


def cmd_decode(args) -> int:
    from ground_tools.decode import decode_file
    from ground_tools.runfolder import INGEST_FILES, open_run

    run = open_run(Path(args.run), need=INGEST_FILES)
    cfg = run.cfg
    tm = decode_file(run.telemetry_path, cfg.mission.start_utc, len(cfg.tasks), cfg.telemetry.apid,
                     frame_bytes=cfg.downlink.tm_frame_bytes, spacecraft_id=cfg.telemetry.spacecraft_id)
    if tm.link is not None:
        k = tm.link
        print(f"{k.frames} TM frames ({k.idle_frames} idle), {k.bad_crc} failed the FECF, {k.gaps} gaps "
              f"({k.frames_lost} frames lost), {tm.packets_missing} packets missing by sequence count")
    print(f"{tm.packets} packets, {tm.bad_packets} bad {tm.bad_reasons or ''}")
    print(f"housekeeping reports: {len(tm.hk_core.get('t_s', []))}, orbit budgets: {len(tm.orbits.get('orbit_index', []))}, "
          f"events: {len(tm.events)}")
    return 0


def cmd_ingest(args) -> int:
    from ground_tools.archive import ingest

    t0 = time.perf_counter()
    rep = ingest(Path(args.run), args.db)
    for line in rep.lines():
        print(line)
    if rep.already_ingested:
        print("this telemetry file was already ingested: nothing changed")
    print(f"done in {time.perf_counter() - t0:.2f} s")
    return 0


def _archive_for(args):
    from ground_tools.archive import ensure_archive

    return ensure_archive(Path(args.run), args.db, log=_err)


def cmd_limits(args) -> int:
    from ground_tools.archive import Archive
    from ground_tools.limits import check, format_table, load_limits
    from ground_tools.runfolder import INGEST_FILES, open_run

    run = open_run(Path(args.run), need=INGEST_FILES)
    limit_set = load_limits(args.limits, run.cfg)  # a bad limits file fails before any ingest
    db = _archive_for(args)
    with Archive(db) as ar:
        hk, dev = ar.hk_core(), ar.hk_device()
    violations = check(limit_set, hk, dev)
    n_alarm = sum(v.level == "alarm" for v in violations)
    print(f"limits {limit_set.source}: {len(limit_set.limits)} parameters, {len(limit_set.disabled)} disabled ranges; "
          f"{len(hk.get('t_s', []))} housekeeping samples checked")
    if not violations:
        print("no limit violations")
        return 0
    print(f"{len(violations)} violations ({n_alarm} alarm, {len(violations) - n_alarm} warning):")
    for line in format_table(violations, run.cfg.mission.start_utc):
        print(line)
    return 0


def cmd_models(args) -> int:
    from ground_tools.archive import Archive
    from ground_tools.models import format_lifecycle, lifecycle
    from ground_tools.runfolder import INGEST_FILES, open_run

    run = open_run(Path(args.run), need=INGEST_FILES)
    db = _archive_for(args)
    with Archive(db) as ar:
        hk, updates = ar.hk_core(), ar.training_updates()
    truth = run.truth() if (run.path / "truth.npz").is_file() else None
    end_s = float(truth["t_s"][-1]) if truth is not None and len(truth["t_s"]) else None
    versions = lifecycle(hk, updates, truth, end_s)
    if not versions:
        print("no model information in the telemetry (no housekeeping, no training updates)")
        return 0
    print(f"{len(versions)} model versions were active onboard"
          + ("" if truth is not None else " (no truth.npz: truth accuracy n/a)"))
    for line in format_lifecycle(versions, run.cfg.mission.start_utc):
        print(line)
    return 0


def cmd_replay(args) -> int:
    import json

    from ground_tools.archive import Archive
    from ground_tools.models import check_model_fits, format_replay, load_model, replay

    image = load_model(args.model)
    baseline = load_model(args.baseline) if args.baseline else None
    db = _archive_for(args)
    with Archive(db) as ar:
        samples = ar.samples()
        classes = json.loads(ar.meta["classes"])
        bands = int(ar.meta["bands"])
    if samples is None:
        raise NoSamplesError(
            f"{args.run}: no downlinked samples in the archive {db} (table `samples` is empty): labelled samples "
            f"come down from calibration-site passes (HK SID 5), and this run had none to replay {args.model} on."
        )
    check_model_fits(image, bands, classes, str(args.model))
    if baseline is not None:
        check_model_fits(baseline, bands, classes, str(args.baseline))
    res = replay(image, samples, baseline)
    for line in format_replay(res, classes, f"{args.model} (v{image.version})",
                              f"{Path(args.baseline).name} (v{baseline.version})" if baseline else None):
        print(line)
    return 0


def cmd_campaign(args) -> int:
    from ground_tools.campaign import plan_runs, run_campaign, start_client, write_plot, write_table

    if args.seeds < 1:
        _err(f"error: --seeds must be >= 1, got {args.seeds}")
        return EXIT_BAD_INPUT
    if args.workers < 1:
        _err(f"error: --workers must be >= 1, got {args.workers}")
        return EXIT_BAD_INPUT
    if args.days is not None and not 0 < args.days <= 366:
        _err(f"error: --days must be in (0, 366], got {args.days:g}")
        return EXIT_BAD_INPUT
    out = Path(args.out)
    specs = plan_runs(args.config, args.seeds, args.days, out)
    out.mkdir(parents=True, exist_ok=True)
    where = f"scheduler {args.scheduler}" if args.scheduler else f"a local Dask cluster of {args.workers} worker processes"
    print(f"campaign: {len(specs)} runs ({len(args.config)} config(s) x {args.seeds} seed(s)) on {where}", flush=True)
    t0 = time.perf_counter()
    try:
        client, cluster = start_client(args.workers, args.scheduler, args.connect_timeout)
    except (OSError, TimeoutError) as exc:
        _err(f"error: cannot reach the Dask scheduler at {args.scheduler} within {args.connect_timeout:g} s: {exc}")
        return EXIT_BAD_INPUT
    try:
        print(f"cluster ready in {time.perf_counter() - t0:.1f} s: {len(client.scheduler_info()['workers'])} workers",
              flush=True)
        rows = run_campaign(specs, client, log=lambda m: print(m, flush=True))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    csv_path = write_table(rows, out)
    png_path = write_plot(rows, out)
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"table: {csv_path.resolve()}\nplot: {png_path.resolve()}")
    print(f"{len(rows) - len(failed)} of {len(rows)} runs ok in {time.perf_counter() - t0:.1f} s wall")
    return 1 if failed else 0


def cmd_plan_eclipses(args) -> int:
    from ground_tools.plan import YEAR_PNG_NAME, write_plan, year_plot

    try:
        cfg = load_mission_config(args.config)
    except ConfigError as exc:
        _err(f"error: invalid mission config {exc}")
        return EXIT_BAD_INPUT
    if not 0 < args.days <= 366:
        _err(f"error: --days must be in (0, 366], got {args.days:g}")
        return EXIT_BAD_INPUT
    out = Path(args.out) if args.out else Path("plan") / Path(args.config).stem
    if _bad_output(out, folder=True):
        return EXIT_BAD_INPUT
    t0 = time.perf_counter()
    write_plan(cfg, args.days, out)
    if args.year_plot:
        print()
        year_plot(cfg, out / YEAR_PNG_NAME, plan_days=args.days)
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _load_cfg(path: str):
    try:
        return load_mission_config(path)
    except ConfigError as exc:
        _err(f"error: invalid mission config {exc}")
        return None


def cmd_uplink_plan(args) -> int:
    """Build what the next passes carry (ping, config change, signed model): the packets for
    FOP-1 (default) or, with --expedited, authenticated Type-BD CLTUs."""
    from ground_tools.uplink_plan import (
        build_default_packet_plan,
        build_default_plan,
        write_packet_plan,
    )
    from ground_tools.uplink_plan import write_plan as write_uplink

    cfg = _load_cfg(args.config)
    if cfg is None:
        return EXIT_BAD_INPUT
    if args.seq < 1:
        _err(f"error: --seq must be >= 1, got {args.seq}")
        return EXIT_BAD_INPUT
    out = Path(args.out)
    if _bad_output(out):
        return EXIT_BAD_INPUT
    seed = cfg.mission.seed if args.seed is None else args.seed
    if not args.expedited:
        try:
            plan, _, notes = build_default_packet_plan(cfg, seed, args.seq, args.key_id)
        except KeyError as exc:
            _err(f"error: --key-id: {exc.args[0]}")
            return EXIT_BAD_INPUT
        out.parent.mkdir(parents=True, exist_ok=True)
        write_packet_plan(out, plan)
        for line in notes:
            print(line)
        print(f"uplink plan (FOP-1 packets): {out}")
        return 0
    if args.key_id is not None:
        _err("error: --key-id applies to the FOP-1 packet plan; --expedited signs with the active command key")
        return EXIT_BAD_INPUT
    entries, pkg, notes = build_default_plan(cfg, seed, args.seq)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_uplink(out, entries)
    for line in notes:
        print(line)
    print(f"uplink plan (expedited CLTUs): {out} (keep the next sequence number: {args.seq + len(entries)})")
    return 0


def cmd_model_package(args) -> int:
    """Quantise, optionally prune, sign and chunk a head from an .npz (key `head`)."""
    import json

    import numpy as np

    from ground_tools.uplink import package_model

    cfg = _load_cfg(args.config)
    if cfg is None:
        return EXIT_BAD_INPUT
    try:
        with np.load(args.model) as z:
            head = np.asarray(z["head"], dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        _err(f"error: {args.model}: expected an .npz with a 'head' array ({exc})")
        return EXIT_BAD_INPUT
    want = (cfg.model.feature_dim + 1, len(cfg.payload.classes))
    if head.shape != want:
        _err(f"error: {args.model}: head has shape {head.shape}, expected {want} for this mission")
        return EXIT_BAD_INPUT
    heldout = None
    if args.heldout:
        with np.load(args.heldout) as z:
            heldout = (z["features"], z["labels"])
    out = Path(args.out)
    if _bad_output(out, folder=True):
        return EXIT_BAD_INPUT
    pkg = package_model(cfg, head, args.version, args.parent, args.counter, sparsity=args.sparsity, heldout=heldout)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_bytes(pkg.manifest_bytes)
    (out / "manifest.sig").write_bytes(pkg.signature)
    (out / "payload.bin").write_bytes(pkg.payload)
    print(json.dumps(pkg.report, indent=1))
    print(f"package: {out} ({len(pkg.chunks)} parts of <= {pkg.manifest['chunk_size']} B)")
    return 0


def cmd_xtce(args) -> int:
    """Write the telemetry and command dictionary as XTCE 1.2 (for Yamcs and other ground systems)."""
    out = Path(args.out)
    if _bad_output(out):
        return EXIT_BAD_INPUT
    apid = None
    if args.config:
        cfg = _load_cfg(args.config)
        if cfg is None:
            return EXIT_BAD_INPUT
        apid = cfg.telemetry.apid
    try:
        from ground_tools.xtce import export_xtce
    except ImportError as exc:
        _err(f"error: the XTCE export needs yamcs-pymdb (pip install '.[xtce]'): {exc}")
        return EXIT_BAD_INPUT
    export_xtce(out, apid=apid)
    print(f"XTCE: {out} ({out.stat().st_size:,} bytes)")
    return 0


def cmd_config(args) -> int:
    """validate | diff | package a flight parameter change against the active config."""
    from ground_tools.uplink import Uplinker, config_diff, config_package, config_validate
    from ground_tools.uplink_plan import write_plan as write_uplink

    text = Path(args.proposed).read_text(encoding="utf-8") if Path(args.proposed).is_file() else None
    if text is None:
        _err(f"error: {args.proposed}: file not found")
        return EXIT_BAD_INPUT
    errors = config_validate(text, args.proposed)
    if args.action == "validate" or errors:
        for e in errors:
            print(e)
        print("OK" if not errors else f"{len(errors)} error(s)")
        return 0 if not errors else EXIT_BAD_INPUT
    if not args.active:
        _err(f"error: config {args.action} needs --active CONFIG (the config flying now)")
        return EXIT_BAD_INPUT
    if args.action == "package" and (not args.out or _bad_output(Path(args.out))):
        if not args.out:
            _err("error: config package needs --out FILE")
        return EXIT_BAD_INPUT
    active = _load_cfg(args.active)
    proposed = _load_cfg(args.proposed)
    if active is None or proposed is None:
        return EXIT_BAD_INPUT
    changes, lines = config_diff(active, proposed)
    for line in lines:
        print(line)
    if args.action == "package":
        frames = config_package(Uplinker(active, args.seq), changes)
        write_uplink(Path(args.out), [(0, f) for f in frames])
        print(f"{len(frames)} frame(s) written to {args.out}")
    return 0


def cmd_station(args) -> int:
    """The live station: radio thread in the background, the page's server in this thread
    (Ctrl-C stops both)."""

    from ground_tools.limits import load_limits
    from ground_tools.runfolder import RunFolder
    from ground_tools.station import RadioThread, Station
    from ground_tools.station_web import WebServer

    if not 0 <= args.port <= 65535:
        raise OptionError(f"--port {args.port}: expected a TCP port 0..65535 (0: any free port)")
    cfg = _load_cfg(args.config)
    if cfg is None:
        return EXIT_BAD_INPUT
    mission = RunFolder(Path(args.config), cfg, Path(args.config).read_text(encoding="utf-8"))
    limit_set = load_limits(args.limits, cfg)
    try:
        station = Station(mission, args.db, limit_set, args.radio, key_id=args.key_id)
    except (ValueError, KeyError) as exc:
        if isinstance(exc, ArchiveError):
            raise
        raise OptionError(str(exc).strip("'\"")) from None
    try:
        web = WebServer(station, args.host, args.port)
    except OSError as exc:
        raise OptionError(f"--port {args.port}: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") \
            from None
    radio = RadioThread(station).start()
    print(f"station: radio {args.radio}, archive {args.db}, page {web.url}  (Ctrl-C to stop)", flush=True)
    try:
        web.serve()
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then re-raises it
        pass
    finally:
        radio.close()
    print("station: stopped", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groundtools", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def db_opt(p):
        p.add_argument("--db", help="archive path (default: RUN/archive.sqlite)")

    p = sub.add_parser("ingest", help="decode RUN/telemetry.bin into the SQLite archive (idempotent)")
    p.add_argument("run")
    db_opt(p)
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("limits", help="list limit violations of the run's housekeeping")
    p.add_argument("run")
    p.add_argument("--limits", help="limits YAML (default: ground_tools/limits_default.yaml)")
    db_opt(p)
    p.set_defaults(func=cmd_limits)
    p = sub.add_parser("report", help="write the review report (one HTML file with plots) of a run folder")
    p.add_argument("run")
    p.add_argument("--out", help="output HTML path (default: RUN/report.html)")
    p.add_argument("--orbit", type=int, help="orbit of the task execution timeline (default: the most skipped runs)")
    p.add_argument("--limits", help="limits YAML (default: ground_tools/limits_default.yaml)")
    db_opt(p)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("suite-report",
                       help="write the learning-suite review page (HTML + PNGs) from a suite JSON")
    p.add_argument("suite", metavar="SUITE_JSON", help="suite document written by `flightsim bench learning`")
    p.add_argument("--out", metavar="DIR",
                   help="output folder for learning_suite.html and its PNGs (default: the JSON's folder)")
    p.set_defaults(func=cmd_suite_report)
    p = sub.add_parser("decode", help="decode a run's telemetry (no archive) and print packet counts")
    p.add_argument("run")
    p.set_defaults(func=cmd_decode)
    p = sub.add_parser("models", help="list every model version that was active onboard")
    p.add_argument("run")
    db_opt(p)
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("replay", help="score a candidate model on the run's downlinked samples")
    p.add_argument("model", help="model file (.npz with the ModelImage fields)")
    p.add_argument("run")
    p.add_argument("--baseline", help="another model file to compare with (e.g. the pre-launch model)")
    db_opt(p)
    p.set_defaults(func=cmd_replay)
    p = sub.add_parser("campaign", help="run simulations in parallel with Dask; one CSV table and one plot")
    p.add_argument("config", nargs="+", help="mission config YAML(s)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per config: mission.seed + 0..N-1 (default 1)")
    p.add_argument("--days", type=float, help="simulated days per run (default: each config's duration_days)")
    p.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--connect-timeout", type=float, default=15.0,
                   help="seconds to wait for --scheduler (default 15)")
    p.add_argument("--out", default="campaign", help="output folder (default: ./campaign)")
    p.set_defaults(func=cmd_campaign)
    p = sub.add_parser("plan", help="planning products from a mission config")
    plan_sub = p.add_subparsers(dest="plan_command", required=True)
    p = plan_sub.add_parser(
        "eclipses",
        help="per-orbit eclipse table and energy budget (CSV) and a year plot of eclipse seasons (PNG)",
    )
    p.add_argument("config", help="mission config YAML")
    p.add_argument("--days", type=float, default=3.0, help="planning window from the mission start [days] (default 3)")
    p.add_argument("--out", help="output folder (default: plan/<config name>)")
    p.add_argument(
        "--year-plot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also plot umbra fraction and beta angle over a year (default: on)",
    )
    p.set_defaults(func=cmd_plan_eclipses)

    p = sub.add_parser("uplink", help="telecommand uplink products")
    up_sub = p.add_subparsers(dest="uplink_command", required=True)
    p = up_sub.add_parser("plan", help="the commands of the next passes: ping, a config change, a signed model "
                          "upload (PUS packets for FOP-1, or --expedited CLTUs)")
    p.add_argument("config", help="mission config YAML (its tmtc keys sign the frames)")
    p.add_argument("--out", required=True, help="plan file for `flightsim run --uplink`")
    p.add_argument("--seq", type=int, default=1, help="first anti-replay sequence number (ARSN; default 1)")
    p.add_argument("--key-id", type=int, help="command key slot (SPI) of the association (default: the active one)")
    p.add_argument("--expedited", action="store_true",
                   help="write the old plan: SDLS-protected expedited (Type-BD) CLTUs, radiated without feedback")
    p.add_argument("--seed", type=int, help="seed of the ground retraining (default: the mission seed)")
    p.set_defaults(func=cmd_uplink_plan)

    p = sub.add_parser("model", help="model products")
    m_sub = p.add_subparsers(dest="model_command", required=True)
    p = m_sub.add_parser("package", help="quantise (int8 per channel), prune, sign and chunk a head for uplink")
    p.add_argument("model", help=".npz with a 'head' array (feature_dim + 1, classes)")
    p.add_argument("--config", required=True, help="mission config YAML")
    p.add_argument("--out", required=True, help="output folder (manifest.json, manifest.sig, payload.bin)")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--parent", type=int, required=True, help="parent model version")
    p.add_argument("--counter", type=int, required=True, help="security counter (must exceed the onboard one)")
    p.add_argument("--sparsity", type=float, default=0.0, help="magnitude pruning target in [0, 1)")
    p.add_argument("--heldout", help=".npz with 'features' and 'labels' to report the accuracy cost")
    p.set_defaults(func=cmd_model_package)

    p = sub.add_parser("station", help="live ground station on a world server's radio port: archive, alarms, "
                                       "commands, web page")
    p.add_argument("--radio", required=True, help="the world server's ground radio port, tcp://HOST:PORT")
    p.add_argument("--config", required=True, help="mission config YAML (dictionary, limits' bounds, command keys)")
    p.add_argument("--db", required=True, help="SQLite archive to write (created, or continued if it is this mission's)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port of the page (default 8080; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address the page listens on (default localhost only)")
    p.add_argument("--limits", help="limits YAML (default: ground_tools/limits_default.yaml)")
    p.add_argument("--key-id", type=int, help="command key slot (SPI) of the mission config to sign with "
                                              "(default: its active command key)")
    p.set_defaults(func=cmd_station)
    p = sub.add_parser("xtce", help="write the telemetry and command dictionary as XTCE 1.2 (Yamcs import)")
    p.add_argument("--out", required=True, help="XML file to write")
    p.add_argument("--config", help="mission config: restrict telemetry to its APID")
    p.set_defaults(func=cmd_xtce)
    p = sub.add_parser("config", help="flight parameter changes: validate | diff | package")
    p.add_argument("action", choices=("validate", "diff", "package"))
    p.add_argument("proposed", help="proposed mission config YAML")
    p.add_argument("--active", help="the config flying now (for diff and package)")
    p.add_argument("--out", help="package: frame file for `flightsim run --uplink`")
    p.add_argument("--seq", type=int, default=1, help="package: first anti-replay sequence number")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BAD_INPUT as exc:
        _err(f"error: {exc}")
        return EXIT_BAD_INPUT
    except sqlite3.DatabaseError as exc:
        _err(f"error: archive: {exc}")
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # `| head`: the reader left before the output was all written
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        _err("error: output closed before it was all written (broken pipe)")
        return EXIT_BAD_INPUT
    except OSError as exc:  # a path the user gave that the file system refuses
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        _err(f"error:{where}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
