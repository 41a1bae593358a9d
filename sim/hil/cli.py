"""`flightsim hil serve|proxy`: the HIL bench from the command line.

    flightsim hil serve [--port P] [--serial] [--config CONFIG] [--seed S]
                        [--faults dead=0.01,corrupt=0.02] [--pace realtime --speed 60]
                        [--proxy-port P --drop 0.01 --delay 0.01 --corrupt 0.01] [--duration S]
    flightsim hil proxy --target tcp://127.0.0.1:P [--port P] [--drop ...] [--duration S]

`serve` prints one line per endpoint (``device: tcp://127.0.0.1:PORT``,
``device: serial:///dev/pts/N``, ``proxy: tcp://...``) and runs until Ctrl-C or
`--duration` seconds. Bind addresses default to loopback.
"""

from __future__ import annotations

import sys
import time
from urllib.parse import urlparse

EXIT_BAD_INPUT = 2


def add_parser(sub) -> None:
    p = sub.add_parser("hil", help="hardware-in-the-loop bench: analog device emulator server, fault proxy")
    hs = p.add_subparsers(dest="hil_command", required=True)
    s = hs.add_parser("serve", help="serve the analog device emulator over TCP (and/or a pty serial line)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    s.add_argument("--port", type=int, default=0, help="TCP port (0 = ephemeral, printed)")
    s.add_argument("--serial", action="store_true", help="also serve on a pty pair (prints serial:///dev/pts/N)")
    s.add_argument("--no-tcp", action="store_true", help="serial only")
    s.add_argument("--config", help="mission config whose device section sets the physics and fault rates")
    s.add_argument("--seed", type=int, default=0, help="emulator seed")
    s.add_argument("--faults", default="", help="random fault rates per command, e.g. dead=0.01,corrupt=0.02")
    s.add_argument("--stuck-cells", type=int, default=0, help="cells stuck from start-up")
    s.add_argument("--pace", choices=("accelerated", "realtime"), default="accelerated")
    s.add_argument("--speed", type=float, default=1.0, help="realtime pacing: device seconds per wall second")
    _proxy_args(s, prefix="proxy-")
    s.add_argument("--duration", type=float, help="stop after this many seconds")
    s.set_defaults(hil_func=cmd_serve)
    x = hs.add_parser("proxy", help="a fault proxy (drop/delay/corrupt bytes) in front of a device server")
    x.add_argument("--target", required=True, help="device URL, tcp://HOST:PORT")
    x.add_argument("--host", default="127.0.0.1")
    x.add_argument("--port", type=int, default=0)
    _proxy_args(x, prefix="")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--duration", type=float)
    x.set_defaults(hil_func=cmd_proxy)


def _proxy_args(p, prefix: str) -> None:
    if prefix:
        p.add_argument("--proxy-port", type=int, help="also start a fault proxy on this port (0 = ephemeral)")
    p.add_argument("--drop", type=float, default=0.0, help="probability a chunk is dropped")
    p.add_argument("--delay", type=float, default=0.0, help="probability a chunk is delayed")
    p.add_argument("--delay-s", type=float, default=0.05, help="delay applied to a delayed chunk [s]")
    p.add_argument("--corrupt", type=float, default=0.0, help="probability a chunk has bits flipped")


def _parse_faults(text: str) -> dict[str, float]:
    from sim.analog.faults import FAULT_KINDS

    rates: dict[str, float] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        kind, _, value = item.partition("=")
        if kind not in FAULT_KINDS or kind == "stuck":
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(k for k in FAULT_KINDS if k != 'stuck')}")
        try:
            rate = float(value)
        except ValueError:
            raise ValueError(f"fault {kind}: rate {value!r} is not a number") from None
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault {kind}: rate {rate} not in [0, 1]")
        rates[kind] = rate
    return rates


def _wait(duration: float | None) -> None:
    try:
        if duration is None:
            while True:
                time.sleep(3600)
        else:
            time.sleep(max(duration, 0.0))
    except KeyboardInterrupt:
        pass


def cmd_serve(args) -> int:
    from sim.analog import DeviceEndpoint, DeviceParams
    from sim.hil.proxy import FaultProxy
    from sim.hil.server import PtyDeviceServer, TcpDeviceServer

    try:
        rates = _parse_faults(args.faults)
        if not 0 <= args.port < 65536:
            raise ValueError(f"--port must be in 0..65535, got {args.port}")
        if args.no_tcp and not args.serial:
            raise ValueError("--no-tcp needs --serial")
        if args.speed <= 0:
            raise ValueError("--speed must be > 0")
        for name in ("drop", "delay", "corrupt"):
            if not 0.0 <= getattr(args, name) <= 1.0:
                raise ValueError(f"--{name} must be in [0, 1]")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.config:
        from flight_sw.config import ConfigError, load_mission_config

        try:
            cfg = load_mission_config(args.config)
        except ConfigError as exc:
            print(f"error: invalid mission config {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        endpoint = DeviceEndpoint.from_config(cfg.device, args.seed)
    else:
        endpoint = DeviceEndpoint(DeviceParams(), args.seed)
    if rates:
        endpoint.faults.set_rates(rates)
    if args.stuck_cells:
        endpoint.stuck_cells(args.stuck_cells, n=min(endpoint.params.n_max, 33))
    servers = []
    try:
        if not args.no_tcp:
            tcp = TcpDeviceServer(endpoint, args.host, args.port, args.pace, args.speed).start()
            servers.append(tcp)
            print(f"device: {tcp.url}", flush=True)
            if args.proxy_port is not None:
                proxy = FaultProxy(
                    tcp.host, tcp.port, args.host, args.proxy_port, args.drop, args.delay, args.delay_s,
                    args.corrupt, args.seed,
                ).start()
                servers.append(proxy)
                print(f"proxy: {proxy.url}", flush=True)
        if args.serial:
            pty = PtyDeviceServer(endpoint, args.pace, args.speed).start()
            servers.append(pty)
            print(f"device: {pty.url}", flush=True)
    except OSError as exc:
        print(f"error: cannot start the HIL server: {exc}", file=sys.stderr)
        for s in servers:
            s.stop()
        return EXIT_BAD_INPUT
    _wait(args.duration)
    for s in reversed(servers):
        s.stop()
    print(
        f"served {endpoint.commands} commands, dropped {endpoint.frames_dropped} bad frames, "
        f"faults {dict((k, v) for k, v in endpoint.faults.triggered.items() if v)}",
        flush=True,
    )
    return 0


def cmd_proxy(args) -> int:
    from sim.hil.proxy import FaultProxy

    target = urlparse(args.target)
    if target.scheme != "tcp" or not target.hostname or target.port is None:
        print(f"error: --target must be tcp://HOST:PORT, got {args.target!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        proxy = FaultProxy(
            target.hostname, target.port, args.host, args.port, args.drop, args.delay, args.delay_s,
            args.corrupt, args.seed,
        ).start()
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"proxy: {proxy.url} -> {args.target}", flush=True)
    _wait(args.duration)
    proxy.stop()
    print(f"chunks {proxy.chunks}, dropped {proxy.dropped}, delayed {proxy.delayed}, corrupted {proxy.corrupted}")
    return 0
