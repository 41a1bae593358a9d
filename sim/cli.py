"""`flightsim`: validate mission configs, run simulations, run benchmarks.

Errors in user input (a missing or invalid config) end with a message and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from flight_sw.config import ConfigError, describe, load_mission_config, parse_mission_config
from flight_sw.config.schema import MissionConfig
from sim.paths import output_file_problem, output_folder_problem

EXIT_BAD_INPUT = 2


def config_text(path: str) -> str:
    """The mission YAML of `path`: the file itself, or a scenario overlay merged into the default."""
    from sim.learning_suite import is_overlay, overlay_text

    if is_overlay(Path(path)):
        return overlay_text(Path(path))[1]
    return load_text(path)


def load_text(path: str) -> str:
    load_mission_config(path)  # the loader's own file errors (missing, directory, not UTF-8)
    return Path(path).read_text(encoding="utf-8")


def _load(path: str, days: float | None = None):
    """Load, validate and check the essential loads against the worst orbit; exit 2 on failure."""
    from flight_sw.power.feasibility import PowerInfeasibleError, check_essential_feasibility

    try:
        cfg = parse_mission_config(config_text(path), path)
    except ConfigError as exc:
        print(f"error: invalid mission config {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    try:
        report = check_essential_feasibility(cfg, cfg.mission.duration_days if days is None else days)
    except PowerInfeasibleError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    from sim.setup_check import SetupError, check_run_setup

    try:  # what `run` builds before its first tick (sim/setup_check.py): validate and run agree
        check_run_setup(cfg, cfg.mission.duration_days if days is None else days)
    except SetupError as exc:
        print(f"error: {path}: the run cannot be set up: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    return cfg, report


def mission_summary(cfg: MissionConfig) -> str:
    """A one-screen description of a validated mission."""
    from flight_sw.memory import memory_report
    from flight_sw.power.budget import PowerBudget
    from flight_sw.power.tle import parse_tle

    tle = parse_tle(cfg.orbit.tle_line1, cfg.orbit.tle_line2)
    mu = 398600.4418
    n_rad_s = tle.mean_motion_rev_per_day * 2 * math.pi / 86400.0
    a_km = (mu / n_rad_s**2) ** (1 / 3)
    pw = cfg.power
    peak = PowerBudget(cfg, 0.0).array_power_w(0.0)
    mem = memory_report(cfg)
    lines = [
        f"Mission   {cfg.mission.name}",
        f"Start     {cfg.mission.start_utc.isoformat()}  seed {cfg.mission.seed}  default length {cfg.mission.duration_days:g} d",
        f"Orbit     a-R = {a_km - 6378.137:.0f} km, i = {tle.inclination_deg:.2f} deg, e = {tle.eccentricity:.4f}, "
        f"period {1440.0 / tle.mean_motion_rev_per_day:.1f} min; TLE epoch {tle.epoch_utc.isoformat()}",
        f"Power     array {pw.solar_array.area_m2:g} m^2 x {pw.solar_array.cell_efficiency:g} ({pw.solar_array.attitude_mode}), "
        f"~{peak:.1f} W in full sun (onboard model); battery {pw.battery.capacity_wh:g} Wh; base load {pw.bus_base_load_w:g} W",
        f"          SoC floor {pw.battery.floor_soc:g}, reserve {pw.battery.reserve_soc:g}, SAFE below {pw.battery.safe_mode_soc:g}; "
        f"eclipse policy {pw.budget.eclipse_policy}, margin {pw.budget.margin_j:g} J",
        f"Executive {cfg.executive.frames_per_major} x {cfg.executive.minor_frame_s:g} s frames, start in {cfg.executive.initial_mode}",
        "Tasks     name              kind           period  offset  budget   energy  crit       modes",
    ]
    for t in cfg.tasks:
        lines.append(
            f"          {t.name:<17} {t.kind:<14} {t.period_s:>5g} s {t.offset_s:>5g} s {t.compute_budget_s:>6g} s "
            f"{t.energy_j:>6g} J  {t.criticality:<10} {','.join(t.modes)}"
        )
    lines += [
        f"Payload   {cfg.payload.bands} bands, classes {', '.join(cfg.payload.classes)}; "
        f"{cfg.payload.samples_per_acquisition} px per acquisition",
        f"Model     {cfg.model.feature_dim} features, replay {cfg.model.replay_buffer_size}, "
        f"forgetting {cfg.model.forgetting_factor:g}; optimizer {cfg.device.backend}",
        f"Ground    {len(cfg.ground_stations)} station(s): {', '.join(s.name for s in cfg.ground_stations)}; "
        f"downlink {cfg.downlink.rate_bps / 1e3:g} kbit/s; {len(cfg.calibration_sites)} calibration site(s)",
        f"Memory    {mem['total']:,} of {cfg.onboard.ram_budget_bytes:,} bytes ("
        + ", ".join(f"{k} {v:,}" for k, v in mem.items() if k != "total")
        + ")",
    ]
    return "\n".join(lines)


def cmd_validate(args) -> int:
    cfg, feas = _load(args.config)
    print(mission_summary(cfg))
    print(
        f"Energy    essential {feas.essential_power_w:.2f} W feasible on all {feas.orbits} orbits of "
        f"{cfg.mission.duration_days:g} d; worst orbit {feas.worst_orbit}: margin {feas.worst_margin_j / 1000:.1f} kJ "
        f"({feas.worst_generation_j / 1000:.1f} kJ generated vs {feas.worst_required_j / 1000:.1f} kJ needed)"
    )
    warning = device_reachability_warning(cfg)
    if warning:
        print(warning, file=sys.stderr)
    print(f"\nOK: {args.config} is a valid mission config.")
    return 0


def device_reachability_warning(cfg: MissionConfig) -> str | None:
    """A warning when the config's analog device (device.url, not in-process) cannot be reached
    now: not a refusal (a bench may start the device later; the run retries it)."""
    if cfg.device.backend != "analog" or cfg.device.url.startswith("inproc://"):
        return None
    from flight_sw.devices.transport import transport_from_url

    try:
        transport = transport_from_url(cfg.device.url)
        transport.reopen()
        transport.close()
    except (OSError, ValueError) as exc:
        return f"warning: device.url {cfg.device.url}: unreachable now ({exc})"
    return None


def cmd_run(args) -> int:
    from sim.runner import run_mission

    if args.days is not None and not (0 < args.days <= 366):
        print(f"error: --days must be in (0, 366], got {args.days}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.seed is not None and args.seed < 0:
        print(f"error: --seed must be >= 0, got {args.seed}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cfg, _ = _load(args.config, args.days)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    problem = output_folder_problem(out)
    if problem:
        print(f"error: --out {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    text = config_text(args.config)
    if args.speedup is not None and not args.realtime:
        print("error: --speedup needs --realtime", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.realtime and args.speedup is not None and not (math.isfinite(args.speedup) and args.speedup > 0):
        print(f"error: --speedup must be a finite number > 0, got {args.speedup}", file=sys.stderr)
        return EXIT_BAD_INPUT
    speedup = (args.speedup or 1.0) if args.realtime else None
    if args.device is not None and cfg.device.backend != "analog":
        print("error: --device needs a config with device.backend: analog", file=sys.stderr)
        return EXIT_BAD_INPUT
    uplink = terminal = None
    if args.uplink_loss is not None and not (0.0 <= args.uplink_loss < 1.0):
        print(f"error: --uplink-loss must be in [0, 1), got {args.uplink_loss}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.uplink:
        from sim.uplink_file import is_packet_plan, read_uplink_file

        try:
            if is_packet_plan(Path(args.uplink)):
                terminal = _fop_terminal(cfg, args)
            else:
                if args.uplink_loss:
                    print("error: --uplink-loss needs a FOP-1 packet plan (a CLTU plan has no "
                          "retransmission)", file=sys.stderr)
                    return EXIT_BAD_INPUT
                uplink = read_uplink_file(Path(args.uplink))
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: --uplink {args.uplink}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    elif args.uplink_loss is not None:
        print("error: --uplink-loss needs --uplink PLAN", file=sys.stderr)
        return EXIT_BAD_INPUT
    from sim.runner import RunFolderError

    try:
        result = run_mission(
            cfg, text, out, days=args.days, seed=args.seed, show_progress=not args.quiet,
            realtime_speedup=speedup, device_url=args.device, uplink=uplink, replace=args.force,
            ground_terminal=terminal,
        )
    except RunFolderError as exc:
        print(f"error: --out {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, OSError) as exc:
        if args.device is None:
            raise
        print(f"error: device {args.device}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"run folder: {result.run_dir}")
    if args.report:
        from ground_tools.report import write_report

        path = write_report(result.run_dir)
        print(f"report: {path.resolve()}")
    s = result.summary
    print(
        f"{s['days']:g} days, {s['orbits']} orbits, {s['eclipses']} eclipses, {s['contacts']} contacts, "
        f"{s['training_updates_committed']} training updates, min SoC {s['min_soc']:.2f}, "
        f"wall {s['wall_time_s']:.1f} s"
    )
    if terminal is not None:
        print(
            f"uplink (FOP-1): {s['uplink_commands_confirmed']} of {s['uplink_commands_planned']} commands "
            f"confirmed by CLCW, {s['uplink_commands_verified_completed']} completed (PUS 1 reports); "
            f"{s['uplink_ad_frames']} AD frames, {s['uplink_retransmissions']} retransmissions, "
            f"{s['uplink_bc_frames']} BC frames, {s['uplink_fop_alerts']} FOP-1 alerts; "
            f"{s['telecommands_accepted']} frames accepted onboard, {s['telecommands_rejected']} rejected "
            f"(log: uplink_log.json)"
        )
    elif uplink is not None:
        print(f"uplink (expedited CLTUs): {s['telecommands_uplinked']} radiated, {s['telecommands_accepted']} "
              f"accepted onboard, {s['telecommands_rejected']} rejected")
    return 0


def _fop_terminal(cfg: MissionConfig, args):
    """The FOP-1 ground terminal for a packet plan (the CLI may use ground_tools; sim's library may not)."""
    from ground_tools.pass_terminal import PassTerminal
    from ground_tools.uplink_plan import read_packet_plan

    plan = read_packet_plan(Path(args.uplink))
    return PassTerminal(cfg, plan, uplink_loss=args.uplink_loss or 0.0,
                        seed=cfg.mission.seed if args.seed is None else args.seed)


def cmd_bench(args) -> int:
    from sim.bench import GROUPS, run_group

    groups = GROUPS if args.group == "all" else (args.group,)
    if args.group != "all" and args.group not in GROUPS:
        print(f"error: unknown benchmark group {args.group!r}; known: {', '.join(GROUPS)}, all", file=sys.stderr)
        return EXIT_BAD_INPUT
    options = {}
    if args.seeds is not None:
        if args.group != "learning" or args.seeds < 2:
            print(f"error: --seeds needs the learning group and at least 2 seeds (a 95 % interval), got group "
                  f"{args.group!r} and {args.seeds}", file=sys.stderr)
            return EXIT_BAD_INPUT
        options["seeds"] = args.seeds
    results: dict[str, float] = {}
    out = Path(args.out)
    problem = output_file_problem(out)
    if problem:  # before the benchmarks: a 40-minute run must not fail when it writes its figures
        print(f"error: --out {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if out.exists() and args.group != "all":
        try:
            results = json.loads(out.read_text())
        except (json.JSONDecodeError, OSError):
            results = {}
    for g in groups:
        print(f"== bench {g}{' (quick)' if args.quick else ''}", flush=True)
        figures = run_group(g, quick=args.quick, log=lambda m: print(f"   {m}", flush=True), **options)
        for k, v in figures.items():
            print(f"   {k:<45} {v:.6g}")
        results.update(figures)
    out.write_text(json.dumps(dict(sorted(results.items())), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def cmd_serve(args) -> int:
    """`flightsim serve`: the world as a server for a flight process (issue 15)."""
    from sim.serve import ServeOptions, serve_mission

    cfg, _ = _load(args.config, args.days)
    days = cfg.mission.duration_days if args.days is None else args.days
    if args.speedup is not None and not args.speedup > 0:
        print(f"error: --speedup must be > 0, got {args.speedup}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.out or f"runs/{Path(args.config).stem}-serve")
    problem = output_folder_problem(out)
    if problem:
        print(f"error: --out {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if out.exists() and any(out.iterdir()):
        print(f"error: --out {out}: exists and is not empty (its flight_nv/ would be booted from); "
              "give an empty or new folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    opts = ServeOptions(days=days, seed=cfg.mission.seed if args.seed is None else args.seed,
                        flight_port=args.flight_port, radio_port=args.radio_port,
                        spawn_flight=not args.no_spawn, speedup=args.speedup, show_progress=not args.quiet,
                        checkpoint_every_s=args.checkpoint_every_s)
    from sim.remote_flight import FlightLinkError

    try:
        s = serve_mission(cfg, config_text(args.config), out, opts)
    except FlightLinkError as exc:
        print(f"error: {exc} (log: {out / 'flight.log'})", file=sys.stderr)
        return 1
    print(f"served {s['days']:g} days ({s['mode']}) in {s['loop_wall_time_s']:.1f} s, "
          f"{s['speed_x_realtime']:g}x real time; flight connects {s['flight_connects']}, "
          f"link losses {s['link_losses']}, flight starts {s['flight_starts']}; folder {out}")
    return 0


def cmd_config_doc(args) -> int:
    print("\n".join(describe()))
    return 0


def cmd_hil(args) -> int:
    """`flightsim hil serve|proxy`: the analog device emulator as a server, the fault proxy."""
    return args.hil_func(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flightsim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate a mission config and print its summary")
    p.add_argument("config")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("run", help="simulate a mission and write a run folder")
    p.add_argument("config")
    p.add_argument("--days", type=float, help="simulated days (default: mission.duration_days)")
    p.add_argument("--seed", type=int, help="override mission.seed")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--report", action="store_true", help="also write the review report")
    p.add_argument("--force", action="store_true", help="replace an existing run folder whole (archive included)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--realtime", action="store_true", help="pace ticks to wall time (HIL), with the task watchdog")
    p.add_argument("--speedup", type=float, help="with --realtime: run N times faster than real time")
    p.add_argument("--uplink", help="telecommand plan from `groundtools uplink plan`: a packet plan goes up "
                   "through FOP-1 (the CLCW read back from the telemetry), a CLTU plan (--expedited) is "
                   "radiated as it is at the contacts")
    p.add_argument("--uplink-loss", type=float, help="with a packet plan: fraction of CLTUs lost on the way up "
                   "(seeded by the run's seed; FOP-1 retransmits)")
    p.add_argument("--device", help="analog device URL for HIL: tcp://HOST:PORT or serial:///dev/pts/N "
                   "(default: device.url from the config; inproc:// is the emulator in this process)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("bench", help="run a benchmark group (or all) and write bench-results.json")
    p.add_argument("group", nargs="?", default="all")
    p.add_argument("--quick", action="store_true", help="smaller sizes, well under a minute per group")
    p.add_argument("--out", default="bench-results.json")
    p.add_argument("--seeds", type=int, help="learning group only: seeds of the suite (default 10, quick 2); "
                   "more seeds narrow the intervals that decide 'strictly better'")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("serve", help="serve the world to a flight process (`flightsw run`) over sockets, "
                       "in lock-step or paced to the wall clock")
    p.add_argument("config")
    p.add_argument("--days", type=float, help="simulated days (default: mission.duration_days)")
    p.add_argument("--seed", type=int, help="override mission.seed")
    p.add_argument("--out", help="output folder, empty or new (default: runs/<config name>-serve)")
    p.add_argument("--flight-port", type=int, default=0, help="world link port on 127.0.0.1 (default: any free)")
    p.add_argument("--radio-port", type=int, help="open the ground radio port for `groundtools station` "
                   "on this port of 127.0.0.1 (0: any free; default: no radio port)")
    p.add_argument("--speedup", type=float, help="pace to the wall clock, N times real time "
                   "(default: lock-step, as fast as the processes go)")
    p.add_argument("--no-spawn", action="store_true", help="do not start the flight process: print its "
                   "command line and wait for it (a bench board, another terminal)")
    p.add_argument("--checkpoint-every-s", type=float, default=5400.0,
                   help="mission seconds between the flight process's state checkpoints (default 5400)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("config-doc", help="print every config key with its unit, limits and meaning")
    p.set_defaults(func=cmd_config_doc)
    from sim.hil.cli import add_parser as add_hil_parser

    add_hil_parser(sub)  # `flightsim hil serve|proxy` (issue 6)
    sub.choices["hil"].set_defaults(func=cmd_hil)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `| head`: the reader left before the output was all written
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        print("error: output closed before it was all written (broken pipe)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a path the user gave that the file system refuses
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
