"""The split deployment's figures (issue 15), reported by the `exec` group.

- ``exec.split_lockstep_identical``: 1 when the telemetry of `flightsim serve` + `flightsw run`
  in lock-step equals the in-process run's byte for byte (same config, seed and days), else 0.
- ``exec.split_speed_ratio``: simulated seconds per wall second of the split lock-step loop
  over the in-process loop, median of 3 each (quick: 1), 1 day of the default mission
  (quick: 0.25). Like for like: the in-process loop scores the same arms the world can score
  without the flight software's insides (`Simulation(world_arms_only=True)`), the mission's own
  optimizer backend in both, and the flight process measures no execution times (SID 7), as
  the identity check needs (the analog emulator in-process; over its TCP port when split).
  Set-up (truth, pre-launch training, process start) is outside both times.
- ``exec.split_speed_x_realtime``: the split loop's own speed (median).
- ``exec.restart_recoveries``: SIGKILLs of the flight process survived in a 1-day lock-step run
  (quick: 0.25 day), 4 kills (quick 2), with a live ground station (`groundtools station`'s
  `Station`) on the radio port whose connection is also cut twice: the process started again,
  booted from its checkpoint with the boot count up by one, the run reached its end, and the
  station's archive holds every packet of the run's CADU stream exactly once (else 0).
  ``exec.restart_archive_lost`` / ``exec.restart_archive_duplicated``: the packets of the
  stream missing from the station's archive, and archive rows beyond the stream's distinct
  packets (content keys: apid, time, packet without sequence count and CRC).
- ``exec.flight_process_rss_growth_mib_30d``: resident memory of the flight process at the end
  of a 30-day lock-step run (quick: 3 days) minus at the end of its first simulated day, MiB
  (Linux /proc; it includes the memory of its hourly checkpoints' writes).
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise OSError(f"no VmRSS for process {pid}")


def _in_process_loop(cfg, days: float, image) -> tuple[float, bytes]:
    from sim.simulation import Simulation

    out = bytearray()
    sim = Simulation(cfg, cfg.mission.seed, days * 86400.0, out.extend, image=image, world_arms_only=True)
    t0 = time.perf_counter()
    sim.advance(sim.n_ticks)
    return time.perf_counter() - t0, bytes(out)


def _serve(cfg, text: str, days: float, folder: Path, **kw) -> dict:
    from sim.serve import ServeOptions, serve_mission

    return serve_mission(cfg, text, folder, ServeOptions(days=days, seed=cfg.mission.seed, **kw))


def fault_run(cfg, text: str, days: float, folder: Path, kills: int, station_drops: int) -> dict:
    """A lock-step split run with a live station on the radio port; the flight process is killed
    `kills` times and the station's connection cut `station_drops` times, evenly spread. Returns
    the serve summary with `kills_done`, `drops_done`, `archive_lost`, `archive_duplicated`."""
    import socket
    import sqlite3

    from ground_tools.archive import LiveArchive
    from ground_tools.decode import packet_stream, split_packets
    from ground_tools.limits import load_limits
    from ground_tools.runfolder import RunFolder
    from ground_tools.station import RadioThread, Station

    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:  # a free port for the radio (the station connects first)
        probe.bind(("127.0.0.1", 0))
        radio_port = probe.getsockname()[1]
    mission = RunFolder(DEFAULT_CONFIG, cfg, text)
    station = Station(mission, folder / "station.sqlite", load_limits(None, cfg), f"tcp://127.0.0.1:{radio_port}")
    radio = RadioThread(station).start()
    n_ticks = int(round(days * 86400.0 / cfg.executive.minor_frame_s))
    faults = kills + station_drops
    every = n_ticks // (faults + 1)
    plan = []  # alternate kills and cuts while both remain, then the rest
    while len(plan) < faults:
        if plan.count("kill") < kills:
            plan.append("kill")
        if plan.count("drop") < station_drops:
            plan.append("drop")
    done = {"kill": 0, "drop": 0}

    def inject(sim, child):
        i = done["kill"] + done["drop"]
        if i < faults and not sim.done and sim.tick >= every * (i + 1):
            if plan[i] == "kill":
                os.kill(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
            else:
                sim.terminal.drop_station()
            done[plan[i]] += 1

    try:
        s = _serve(cfg, text, days, folder / "serve", radio_port=radio_port, chunk_ticks=max(every // 4, 1),
                   on_tick=inject, checkpoint_every_s=1800.0)
        deadline = time.monotonic() + 60.0
        while station.snapshot()["link"]["frames"] < s["radio_cadus_sent"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        radio.close()
    packets = split_packets(packet_stream((folder / "serve" / "telemetry.bin").read_bytes(), cfg))[0]
    offline = LiveArchive(folder / "offline.sqlite", mission)
    offline.add(packets)
    offline.close()
    query = "SELECT apid, t_s, sha1 FROM packets"
    with sqlite3.connect(folder / "station.sqlite") as a, sqlite3.connect(folder / "offline.sqlite") as b:
        live_rows = a.execute(query).fetchall()
        expected = set(b.execute(query).fetchall())
    s.update(kills_done=done["kill"], drops_done=done["drop"], archive_lost=len(expected - set(live_rows)),
             archive_duplicated=len(live_rows) - len(set(live_rows)) + len(set(live_rows) - expected),
             archive_packets=len(live_rows))
    return s


def run(quick: bool, log) -> dict[str, float]:
    from flight_sw.config import load_mission_config
    from sim.prelaunch import train_prelaunch_model
    from sim.simulation import spawn_rngs

    cfg = load_mission_config(DEFAULT_CONFIG)
    text = DEFAULT_CONFIG.read_text()
    image = train_prelaunch_model(cfg, spawn_rngs(cfg.mission.seed)["prelaunch"])
    days = 0.25 if quick else 1.0
    reps = 1 if quick else 3
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        in_walls, split_walls = [], []
        identical = True
        for i in range(reps):  # alternate, so that drifts of a shared machine hit both alike
            wall, in_bytes = _in_process_loop(cfg, days, image)
            in_walls.append(wall)
            s = _serve(cfg, text, days, tmp / f"split{i}", flight_args=["--no-exec-timing"])
            split_walls.append(s["loop_wall_time_s"])
            identical &= (tmp / f"split{i}" / "telemetry.bin").read_bytes() == in_bytes
            log(f"{days:g} d: in-process loop {wall:.2f} s, split lock-step loop {s['loop_wall_time_s']:.2f} s, "
                f"identical {identical}")
        seconds = days * 86400.0
        figures["exec.split_lockstep_identical"] = 1 if identical else 0
        figures["exec.split_speed_ratio"] = statistics.median(in_walls) / statistics.median(split_walls)
        figures["exec.split_speed_x_realtime"] = seconds / statistics.median(split_walls)

        s = fault_run(cfg, text, days, tmp / "faults", kills=2 if quick else 4, station_drops=2)
        recovered = min(s["kills_done"], s["flight_starts"] - 1, s["last_boot_count"] - 1)
        if s["flight_exit_code"] != 0 or s["archive_lost"] or s["archive_duplicated"]:
            recovered = 0  # the run did not end cleanly, or the ground lost or doubled something
        log(f"{s['kills_done']} kills, {s['drops_done']} station cuts, {s['flight_starts']} flight starts, last "
            f"boot {s['last_boot_count']}, exit {s['flight_exit_code']}; station archive {s['archive_packets']} "
            f"packets, {s['archive_lost']} lost, {s['archive_duplicated']} duplicated")
        figures["exec.restart_recoveries"] = recovered
        figures["exec.restart_archive_lost"] = s["archive_lost"]
        figures["exec.restart_archive_duplicated"] = s["archive_duplicated"]

        rss_days = 3.0 if quick else 30.0
        samples: dict[str, float] = {}

        def sample(sim, child):
            day = sim.tick * sim.frame_s / 86400.0
            if "first_day" not in samples and day >= 1.0:
                samples["first_day"] = _rss_mib(child.proc.pid)
            if sim.done:
                samples["end"] = _rss_mib(child.proc.pid)

        s = _serve(cfg, text, rss_days, tmp / "rss", chunk_ticks=21600, on_tick=sample)
        growth = samples["end"] - samples["first_day"]
        log(f"flight process RSS {samples['first_day']:.1f} MiB after day 1, {samples['end']:.1f} MiB after "
            f"day {rss_days:g} ({s['speed_x_realtime']:g}x real time)")
        figures["exec.flight_process_rss_growth_mib_30d"] = growth
    return figures
