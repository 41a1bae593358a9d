"""`flightsw`: the flight software as its own process (a bench board, or a workstation process
against `flightsim serve`).

    flightsw run CONFIG --link tcp://HOST:PORT --nv-dir DIR [--load LAUNCH_LOAD] [--device URL]

The process reaches the world only through the world link (`flight_sw.platform.world_link`),
the analog device's link and its non-volatile folder:

    DIR/launch_load.npz  the model image and labelling reference installed before launch
                         (copied from --load at the first boot)
    DIR/tc_store.nv      the telecommand NV store (security associations, uploads, boot record)
    DIR/state.snap       the flight software's state, written at each checkpoint (atomically)

At start it boots from DIR: from the last checkpoint when there is one (a reboot: the boot
counts, unconfirmed trials revert), otherwise cold from the launch load. It then connects to
the world and runs what the world sends until told to stop; when the link drops it connects
again and goes on. Errors in its input end with a message and exit status 2.

This is the one module of `flight_sw` that opens files and sockets: it is the platform's
start-up code, which hands them to the flight software as interfaces.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from flight_sw.config import ConfigError, load_mission_config

EXIT_BAD_INPUT = 2
LAUNCH_LOAD = "launch_load.npz"
NV_FILE = "tc_store.nv"
CHECKPOINT = "state.snap"


def _fail(msg: str) -> int:
    print(f"flightsw: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def parse_link_url(url: str) -> tuple[str, int]:
    """(host, port) of tcp://HOST:PORT; ValueError naming what was expected."""
    p = urlparse(url)
    if p.scheme != "tcp" or not p.hostname or not p.port:
        raise ValueError(f"--link {url!r}: expected tcp://HOST:PORT")
    return p.hostname, p.port


def write_checkpoint(path: Path, blob: bytes) -> None:
    """Replace `path` with `blob` so that a kill at any moment leaves the old or the new file."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


#: Pause between attempts to reach the world [s].
RETRY_INTERVAL_S = 0.05


def connect(host: str, port: int, timeout_s: float, sleep=time.sleep) -> socket.socket:
    """Connect to the world, retrying for about `timeout_s` (the world may start later). The
    retries are counted, not timed: no clock is read, only `sleep` (the platform's) waits."""
    attempts = max(1, int(timeout_s / RETRY_INTERVAL_S))
    for attempt in range(attempts):
        try:
            sock = socket.create_connection((host, port), timeout=5.0)
        except OSError as exc:
            if attempt == attempts - 1:
                raise ConnectionError(f"tcp://{host}:{port}: no world to connect to ({exc})") from exc
            sleep(RETRY_INTERVAL_S)
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def run(args: argparse.Namespace) -> int:
    from flight_sw.app import FlightSoftware, SnapshotError
    from flight_sw.devices.transport import transport_from_url
    from flight_sw.ml.launch_load import LaunchLoadError, load_launch_load
    from flight_sw.platform.world_link import FlightLoop, LinkPayload, StreamLink
    from flight_sw.tmtc.nv_store import FileDevice, NvLayout, RedundantStore

    try:
        cfg = load_mission_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        host, port = parse_link_url(args.link)
    except ValueError as exc:
        return _fail(str(exc))
    nv_dir = Path(args.nv_dir)
    if nv_dir.exists() and not nv_dir.is_dir():
        return _fail(f"--nv-dir {nv_dir}: is a file, expected a folder (created if missing)")
    load = nv_dir / LAUNCH_LOAD
    if not load.exists():
        if args.load is None:
            return _fail(f"{load}: no launch load in the NV folder; give --load FILE at the first boot")
        if not Path(args.load).is_file():
            return _fail(f"--load {args.load}: no such file (a launch load written by `flightsim serve`)")
        try:  # check it before it is installed in the NV folder
            load_launch_load(args.load)
        except LaunchLoadError as exc:
            return _fail(str(exc))
        nv_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.load, load)
    try:
        image, reference = load_launch_load(load)
    except LaunchLoadError as exc:
        return _fail(str(exc))
    transport = None
    if cfg.device.backend == "analog":
        url = args.device or cfg.device.url
        if url.startswith("inproc://"):
            return _fail(f"{args.config}: device.url is {url!r}, which needs the simulator in this process; "
                         "give --device tcp://HOST:PORT (the world server's device port) or a serial port")
        transport = transport_from_url(url)

    layout = NvLayout(cfg.tmtc.max_upload_bytes)
    nv_file = open(nv_dir / NV_FILE, "r+b" if (nv_dir / NV_FILE).exists() else "w+b")  # noqa: SIM115 - lives as long as the process
    store = RedundantStore(FileDevice(nv_file, layout.size), layout)
    entropy = os.urandom if args.entropy == "os" else None
    payload = LinkPayload()
    holder: dict = {}

    def build(boot: bool) -> FlightSoftware:
        fsw = FlightSoftware(cfg, image, payload, lambda cadu: holder["loop"].downlink(cadu),
                             check_energy_days=args.check_days, device_transport=transport, tc_store=store,
                             reference=reference, entropy=entropy, boot=boot,
                             cpu_clock=time.perf_counter if args.exec_timing else None)
        payload.bind(fsw.buffers)
        return fsw

    checkpoint_path = nv_dir / CHECKPOINT
    last_tick = -1
    if checkpoint_path.exists():
        fsw = build(boot=False)
        try:
            fsw.restore(checkpoint_path.read_bytes(), reboot=True)  # boots from NV, the boot counts
            last_tick = int(round(fsw.t_s / fsw.frame_s))
        except SnapshotError as exc:
            print(f"flightsw: {checkpoint_path}: {exc}; booting cold from the NV store", file=sys.stderr)
            fsw = build(boot=True)
    else:
        fsw = build(boot=True)
    boots = fsw.tc.boot_record()[0]
    loop = FlightLoop(fsw, payload, checkpoint=lambda f: write_checkpoint(checkpoint_path, f.snapshot()),
                      checkpoint_every_s=args.checkpoint_every_s, boots=boots, last_tick=last_tick)
    holder["loop"] = loop
    print(f"flightsw: boot {boots} ({'from the checkpoint at t=' + format(fsw.t_s, '.0f') + ' s' if last_tick >= 0 else 'cold'}), "
          f"world tcp://{host}:{port}", file=sys.stderr, flush=True)
    while True:
        try:
            sock = connect(host, port, args.connect_timeout_s)
        except ConnectionError as exc:
            print(f"flightsw: {exc}", file=sys.stderr)
            return 1
        loop.attach(StreamLink(sock), fsw._config_fingerprint())
        if loop.serve():
            print(f"flightsw: stopped by the world after {loop.steps} steps", file=sys.stderr, flush=True)
            sock.close()
            return 0
        print("flightsw: world link lost; connecting again", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flightsw", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the flight software against a world link")
    p.add_argument("config", help="mission config YAML (the full file; `flightsim serve` writes one)")
    p.add_argument("--link", required=True, help="the world link: tcp://HOST:PORT")
    p.add_argument("--nv-dir", required=True, help="folder of the non-volatile state (created if missing)")
    p.add_argument("--load", help="launch load file (model image and reference data), needed at the first boot")
    p.add_argument("--device", help="the analog device's link (tcp://HOST:PORT, or a serial port); "
                                    "default: the config's device.url")
    p.add_argument("--checkpoint-every-s", type=float, default=5400.0,
                   help="mission seconds between state checkpoints to the NV folder (default 5400; 0: only at stop)")
    p.add_argument("--check-days", type=float, default=None,
                   help="days ahead the essential load is checked at start-up (default: the mission's duration)")
    p.add_argument("--entropy", choices=("mission-seed", "os"), default="mission-seed",
                   help="random source for the recovery nonce: the mission seed (repeats across boots; "
                        "what the in-process simulation uses, for identical telemetry) or the OS generator")
    p.add_argument("--no-exec-timing", dest="exec_timing", action="store_false",
                   help="do not measure task execution times (they are the one thing a process's telemetry "
                        "cannot share with the in-process run; the lock-step identity check turns them off)")
    p.add_argument("--connect-timeout-s", type=float, default=60.0,
                   help="how long to keep trying to reach the world (default 60)")
    args = parser.parse_args(argv)
    if args.checkpoint_every_s < 0:
        return _fail(f"--checkpoint-every-s must be >= 0, got {args.checkpoint_every_s}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
