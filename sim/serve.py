"""`flightsim serve`: the world as a server for a flight software running in its own process.

The world (orbit, power, payload scene, the analog device, the RF channel) runs here and drives
time; the flight software (`flightsw run`, or a bench board) connects to the world link
(`flight_sw.platform.world_link`) and the analog device's port; a ground station may connect
to the ground radio port (`sim.radio_port`). Time advances in lock-step (as fast as the two
processes exchange messages: the telemetry bytes equal those of `flightsim run` for the same
config and seed) or paced to the wall clock (`speedup` x real time) for a bench and a live
station.

The output folder holds:

    config.yaml      the config that was run (key material redacted)
    flight/          what the flight process is installed from: mission.yaml, launch_load.npz
    flight_nv/       the spawned flight process's non-volatile folder (with --spawn-flight)
    flight.log       its standard error
    telemetry.bin    every CADU the flight software downlinked (the CADU stream)
    summary.json     headline figures: ticks, wall time, link counters, restarts, accuracy

With `spawn_flight`, the server starts the flight process itself and, when the world link
drops because the process died, starts it again (it boots from its NV folder).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.ml.launch_load import save_launch_load
from sim.progress import Progress
from sim.remote_flight import RemoteFlight
from sim.runner import redact_keys
from sim.simulation import BLOCK_TICKS, Simulation


@dataclass
class ServeOptions:
    days: float
    seed: int
    flight_port: int = 0
    radio_port: int | None = None  # None: no ground radio port
    spawn_flight: bool = True
    speedup: float | None = None  # None: lock-step as fast as possible
    connect_timeout_s: float = 120.0
    checkpoint_every_s: float = 5400.0
    show_progress: bool = False
    flight_args: list[str] = field(default_factory=list)  # extra `flightsw run` arguments
    chunk_ticks: int | None = None  # ticks per advance in lock-step (default: a truth block)
    on_tick: object = None  # callable(sim, child) after each advance (tests inject faults here)


class FlightProcess:
    """A `flightsw run` child process, restarted when it dies (at most `max_starts` times in all)."""

    max_starts = 100

    def __init__(self, argv: list[str], log_path: Path):
        self.argv = argv
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        if self.starts >= self.max_starts:
            from sim.remote_flight import FlightLinkError

            raise FlightLinkError(f"the flight process was started {self.starts} times; not again")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=self.log)
        self.starts += 1

    def ensure_running(self) -> None:
        """Start the process again if it has exited (the link dropped because it died). A
        killed process closes its sockets a moment before it can be reaped: wait that moment."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                return  # alive: the link was cut, the flight software connects again itself
        self.start()

    def problem(self) -> str | None:
        """Why the process will not connect: it exited (with the end of its log), else None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        self.log.flush()
        tail = Path(self.log.name).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        return f"the flight process exited with status {self.proc.returncode}: " + " / ".join(tail)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        self.log.close()
        return code


def write_flight_install(cfg_text: str, sim: Simulation, folder: Path) -> tuple[Path, Path]:
    """The files a flight process is installed from: its mission config and its launch load."""
    folder.mkdir(parents=True, exist_ok=True)
    mission = folder / "mission.yaml"
    mission.write_text(cfg_text, encoding="utf-8")
    load = folder / "launch_load.npz"
    save_launch_load(load, sim.image, sim.reference)
    return mission, load


def serve_mission(cfg: MissionConfig, config_text: str, out_dir: Path, opts: ServeOptions) -> dict:
    """Run the world for `opts.days` against a flight process; return the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(redact_keys(config_text), encoding="utf-8")
    frame_s = cfg.executive.minor_frame_s
    n_ticks = int(round(opts.days * 86400.0 / frame_s))
    duration_s = n_ticks * frame_s
    listener = socket.create_server(("127.0.0.1", opts.flight_port))
    link_url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    child: FlightProcess | None = None
    remote = RemoteFlight(cfg, listener, opts.connect_timeout_s,
                          on_disconnect=lambda: child.ensure_running() if child is not None else None)
    tm_file = open(out_dir / "telemetry.bin", "wb")  # noqa: SIM115 - closed below
    radio = device_server = None
    wall0 = time.perf_counter()
    try:
        sim = Simulation(cfg, opts.seed, duration_s, tm_file.write, remote=remote)
        if opts.radio_port is not None:
            from sim.radio_port import RadioPort

            radio = RadioPort(sim.world.contacts, port=opts.radio_port)
            _attach_terminal(sim, radio, tm_file.write)
        mission, load = write_flight_install(config_text, sim, out_dir / "flight")
        argv = [sys.executable, "-m", "flight_sw.cli", "run", str(mission), "--link", link_url,
                "--nv-dir", str(out_dir / "flight_nv"), "--load", str(load),
                "--check-days", repr(Simulation.check_energy_days(cfg, duration_s)),
                "--checkpoint-every-s", repr(opts.checkpoint_every_s), *opts.flight_args]
        if cfg.device.backend == "analog":
            from sim.hil.server import TcpDeviceServer

            device_server = TcpDeviceServer(Simulation.device_endpoint(cfg, opts.seed)).start()
            argv += ["--device", device_server.url]
        summary: dict = {"flight_link": link_url, "flight_argv": argv[1:],
                         "radio_port": radio.url if radio is not None else None,
                         "device_port": device_server.url if device_server is not None else None}
        if opts.spawn_flight:
            child = FlightProcess(argv, out_dir / "flight.log")
            child.start()
            remote.flight_problem = child.problem
        else:
            print(f"flightsim serve: waiting for the flight software on {link_url}:\n  flightsw "
                  + " ".join(argv[3:]), file=sys.stderr, flush=True)
        remote.connect()
        t_start = time.perf_counter()
        _advance(sim, radio, opts, frame_s, child)
        wall_s = time.perf_counter() - t_start
        remote.close(stop=True)
        if child is not None:
            summary["flight_exit_code"] = child.stop()
    finally:
        tm_file.close()
        listener.close()
        if radio is not None:
            radio.close()
        if device_server is not None:
            device_server.stop()
        if child is not None and child.proc is not None and child.proc.poll() is None:
            child.proc.kill()
    acc = np.array(sim.log.acc_onboard)
    summary.update({
        "days": opts.days, "seed": opts.seed, "ticks": n_ticks, "mode": "paced" if opts.speedup else "lock-step",
        "speedup": opts.speedup, "wall_time_s": round(time.perf_counter() - wall0, 3),
        "loop_wall_time_s": round(wall_s, 3), "speed_x_realtime": round(duration_s / wall_s, 1) if wall_s else None,
        "flight_connects": remote.connects, "link_losses": remote.link_losses, "done_lost": remote.done_lost,
        "frames_sent_ahead": remote.prefetched, "frames_ahead_undone": remote.prefetch_undone,
        "flight_starts": child.starts if child is not None else None,
        "last_boot_count": remote.last_hello[1] if remote.last_hello else None,
        "onboard_accuracy_mean": round(float(acc.mean()), 4) if len(acc) else None,
        "frozen_accuracy_mean": round(float(np.mean(sim.log.acc_frozen)), 4) if len(acc) else None,
    })
    if radio is not None:
        summary.update(radio.summary())
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _attach_terminal(sim: Simulation, terminal, sink) -> None:
    """Give a simulation built without a terminal the radio port as its ground terminal (the
    port needs the world's contact list, which exists only once the simulation is built)."""
    remote = sim.fsw

    def downlink(cadu: bytes) -> None:
        sink(cadu)
        terminal.on_cadu(cadu, sim._now_s)

    remote.sink = downlink
    sim.terminal = terminal


def _advance(sim: Simulation, radio, opts: ServeOptions, frame_s: float, child) -> None:
    progress = Progress(opts.days, "serving", "days", enabled=opts.show_progress)
    if opts.speedup:
        chunk = max(1, int(round(opts.speedup * 0.02 / frame_s)))  # about 20 ms of wall time each
        t0 = time.perf_counter()
    else:
        chunk = opts.chunk_ticks or BLOCK_TICKS
    while not sim.done:
        sim.advance(chunk)
        t = sim.tick * frame_s
        if radio is not None:
            radio.advance_to(t)
        if opts.on_tick is not None:
            opts.on_tick(sim, child)
        if opts.speedup:
            ahead = t0 + t / opts.speedup - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        progress.update(t / 86400.0)
    progress.close()
