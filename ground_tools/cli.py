"""`groundtools`: what the ground team runs on a run folder (report, decode)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (RunFolderError, DecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
