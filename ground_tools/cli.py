"""`groundtools`: what the ground team runs (report, decode, plan)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flight_sw.config import ConfigError, load_mission_config
from ground_tools.decode import DecodeError
from ground_tools.report import RunFolderError

EXIT_BAD_INPUT = 2


def cmd_report(args) -> int:
    from ground_tools.report import write_report

    path = write_report(Path(args.run), Path(args.out) if args.out else None)
    print(f"report: {path.resolve()}")
    return 0


def cmd_decode(args) -> int:
    from ground_tools.report import load_run

    cfg, summary, run_info, truth, tm = load_run(Path(args.run))
    print(f"{tm.packets} packets, {tm.bad_packets} bad {tm.bad_reasons or ''}")
    print(f"housekeeping reports: {len(tm.hk_core.get('t_s', []))}, orbit budgets: {len(tm.orbits.get('orbit_index', []))}, "
          f"events: {len(tm.events)}")
    return 0


def cmd_plan_eclipses(args) -> int:
    import time

    from ground_tools.plan import YEAR_PNG_NAME, write_plan, year_plot

    try:
        cfg = load_mission_config(args.config)
    except ConfigError as exc:
        print(f"error: invalid mission config {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not 0 < args.days <= 366:
        print(f"error: --days must be in (0, 366], got {args.days:g}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.out) if args.out else Path("plan") / Path(args.config).stem
    t0 = time.perf_counter()
    try:
        write_plan(cfg, args.days, out)
        if args.year_plot:
            print()
            year_plot(cfg, out / YEAR_PNG_NAME, plan_days=args.days)
        print(f"done in {time.perf_counter() - t0:.1f} s")
    except BrokenPipeError:  # `| head`: the reader left; no traceback on exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="groundtools", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="write the review report (HTML with plots) of a run folder")
    p.add_argument("run")
    p.add_argument("--out", help="output HTML path (default: RUN/report.html)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("decode", help="decode a run's telemetry and print packet counts")
    p.add_argument("run")
    p.set_defaults(func=cmd_decode)
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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (RunFolderError, DecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
