"""The split deployment (issue 15): `flightsw run` as its own process against `flightsim serve`.

- lock-step: the telemetry bytes equal the in-process run's for the same config and seed;
- a killed flight process boots again from its NV folder (the boot counter counts, the run goes on);
- a cut world link is taken up again by the flight software, and nothing of the run is lost.
"""

import os
import signal
import struct
from pathlib import Path

import pytest
from spacepackets.ecss import PusTm

from flight_sw.config import load_mission_config
from flight_sw.tmtc import dictionary as d
from ground_tools.decode import packet_stream, split_packets
from sim.runner import run_mission
from sim.serve import ServeOptions, serve_mission

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"
DAYS = 0.3  # long enough for frames drawn ahead to be undone (an optional task refused power)
#: Measured execution times (HK SID 7) are the one thing a process's telemetry cannot share with
#: the in-process run; the byte-for-byte comparisons run without them.
SAME_BYTES = ["--no-exec-timing"]


def core_rows(raw: bytes, cfg) -> list[dict]:
    rows = []
    for pkt in split_packets(packet_stream(raw, cfg))[0]:
        p = PusTm.unpack(pkt, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == 3 and struct.unpack(">H", data[:2])[0] == d.HK_CORE_SID:
            rows.append(dict(zip((q.name for q in d.HK_CORE), d.HK_CORE_STRUCT.unpack(data[2:]), strict=True)))
    return rows


def exec_records(raw: bytes, cfg) -> list[list[tuple]]:
    """The HK SID 7 reports: per report, (task_index, measured_runs, exec_max_us, exec_mean_us)."""
    out = []
    size = d.HK_EXEC_STRUCT.size
    for pkt in split_packets(packet_stream(raw, cfg))[0]:
        p = PusTm.unpack(pkt, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == 3 and struct.unpack(">H", data[:2])[0] == d.HK_EXEC_SID:
            body = data[2:]
            out.append([d.HK_EXEC_STRUCT.unpack_from(body, i * size) for i in range(len(body) // size)])
    return out


@pytest.fixture(scope="module")
def cfg():
    return load_mission_config(DEFAULT)


@pytest.fixture(scope="module")
def in_process_run(cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("inproc") / "run"
    run_mission(cfg, DEFAULT.read_text(), out, days=DAYS, show_progress=False)
    return out


@pytest.fixture(scope="module")
def in_process(in_process_run):
    return (in_process_run / "telemetry.bin").read_bytes()


def test_lockstep_split_run_downlinks_the_in_process_bytes(cfg, in_process, in_process_run, tmp_path):
    """The default mission (analog device over its TCP port) in two processes, byte for byte; and
    the world scores the frames the flight software really took (some are drawn ahead of its
    requests and undone when it does not ask for them: world_link's prefetch)."""
    import numpy as np

    s = serve_mission(cfg, DEFAULT.read_text(), tmp_path / "split", ServeOptions(days=DAYS, seed=cfg.mission.seed,
                                                                                flight_args=SAME_BYTES))
    split = (tmp_path / "split" / "telemetry.bin").read_bytes()
    assert len(in_process) > 50_000
    assert exec_records(in_process, cfg) == []  # the simulation has no CPU clock: nothing measured
    assert split == in_process
    assert s["flight_exit_code"] == 0 and s["flight_starts"] == 1 and s["link_losses"] == 0
    assert (tmp_path / "split" / "flight_nv" / "state.snap").exists()  # written at the stop
    assert s["frames_sent_ahead"] > 1000 and s["frames_ahead_undone"] > 0  # both paths of the prefetch ran
    truth = np.load(in_process_run / "truth.npz")
    assert s["onboard_accuracy_mean"] == round(float(truth["acc_onboard"].mean()), 4)
    assert s["frozen_accuracy_mean"] == round(float(truth["acc_frozen"].mean()), 4)


def test_cut_world_link_is_taken_up_again_and_nothing_changes(cfg, in_process, tmp_path):
    """A link cut between ticks: the flight process (alive) connects again and the telemetry is
    still the in-process run's, so nothing was lost or run twice."""
    cuts = []

    def cut(sim, child):
        if len(cuts) < 2 and not sim.done:
            cuts.append(sim.tick)
            sim.fsw.drop_link()

    s = serve_mission(cfg, DEFAULT.read_text(), tmp_path / "split",
                      ServeOptions(days=DAYS, seed=cfg.mission.seed, chunk_ticks=2500, on_tick=cut,
                                   flight_args=SAME_BYTES))
    assert len(cuts) == 2
    assert s["link_losses"] == 2 and s["flight_connects"] == 3 and s["flight_starts"] == 1
    assert (tmp_path / "split" / "telemetry.bin").read_bytes() == in_process


def test_killed_flight_process_boots_from_its_nv_folder_and_the_run_goes_on(cfg, tmp_path):
    kills = []

    def kill(sim, child):
        if len(kills) < 2 and not sim.done and sim.tick >= 3000 * (len(kills) + 1):
            kills.append(sim.tick * sim.frame_s)
            os.kill(child.proc.pid, signal.SIGKILL)
            child.proc.wait()

    s = serve_mission(cfg, DEFAULT.read_text(), tmp_path / "split",
                      ServeOptions(days=DAYS, seed=cfg.mission.seed, chunk_ticks=1000, on_tick=kill,
                                   checkpoint_every_s=1200.0))
    assert len(kills) == 2
    assert s["flight_starts"] == 3 and s["link_losses"] == 2 and s["flight_exit_code"] == 0
    rows = core_rows((tmp_path / "split" / "telemetry.bin").read_bytes(), cfg)
    boots = [r["boot_count"] for r in rows]
    assert boots[0] == 1 and boots[-1] == 3 and boots == sorted(boots)
    # housekeeping goes on after each reboot (what is generated out of contact comes down at the
    # next contact, so the last rows come from the last pass, not from the last second)
    after = [r for r in rows if r["tick"] * cfg.executive.minor_frame_s > kills[1]]
    assert len(after) > 10 and {r["boot_count"] for r in after} == {3}
    log = (tmp_path / "split" / "flight.log").read_text()
    assert log.count("from the checkpoint") == 2, log
    # the flight process measured its tasks (SID 7), and each boot counts again from zero
    measured = exec_records((tmp_path / "split" / "telemetry.bin").read_bytes(), cfg)
    assert measured and all(len(m) == len(cfg.tasks) for m in measured)
    assert all([r[0] for r in m] == list(range(len(cfg.tasks))) for m in measured)
    runs = [sum(r[1] for r in m) for m in measured]
    assert max(runs) > 0 and any(b < a for a, b in zip(runs, runs[1:], strict=False))  # reboots restart them
    assert any(r[2] > 0 and r[3] > 0 for m in measured for r in m)


def test_kills_and_station_cuts_lose_and_double_nothing_in_the_live_archive(cfg, tmp_path):
    """Item 6 end to end: the flight process killed twice, the live station's radio connection cut
    twice; the station's archive holds every packet of the run's CADU stream exactly once."""
    from sim.bench.split import fault_run

    s = fault_run(cfg, DEFAULT.read_text(), DAYS, tmp_path, kills=2, station_drops=2)
    assert s["kills_done"] == 2 and s["drops_done"] == 2
    assert s["flight_starts"] == 3 and s["last_boot_count"] == 3 and s["flight_exit_code"] == 0
    assert s["radio_station_connections"] >= 3  # connected, cut twice, connected again each time
    assert s["archive_packets"] > 500
    assert s["archive_lost"] == 0 and s["archive_duplicated"] == 0


def test_live_station_commands_the_flight_process_through_the_paced_world(cfg, tmp_path):
    """The whole chain of the split deployment: a ping and a mode command queued at the live
    station go up at the first contact of a world paced to the wall clock (200x), through the
    radio port, to the flight process, and come back completed (PUS 1) and confirmed (CLCW)."""
    import socket

    from ground_tools.limits import load_limits
    from ground_tools.runfolder import RunFolder
    from ground_tools.station import RadioThread, Station

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    station = Station(RunFolder(DEFAULT, cfg, DEFAULT.read_text()), tmp_path / "station.sqlite",
                      load_limits(None, cfg), f"tcp://127.0.0.1:{port}")
    with RadioThread(station):
        station.submit("ping")
        station.submit("mode", "SAFE")
        s = serve_mission(cfg, DEFAULT.read_text(), tmp_path / "serve",
                          ServeOptions(days=1700 / 86400, seed=cfg.mission.seed, radio_port=port, speedup=200.0))
    assert s["mode"] == "paced" and s["radio_cltus_radiated"] >= 2
    snap = station.snapshot()
    assert [(c["status"], c["link"]) for c in snap["commands"]] == [("completed", "confirmed")] * 2
    assert snap["passes"] and snap["passes"][0]["aos_t_s"] > 1000  # the first contact of the day
    rows = core_rows((tmp_path / "serve" / "telemetry.bin").read_bytes(), cfg)
    assert rows[-1]["mode"] == 0  # SAFE (MODES[0]) after the command, from the flight's own telemetry


def test_a_flight_process_that_cannot_start_is_reported_at_once_with_its_log(cfg, tmp_path):
    """No two-minute wait for a connection that cannot come: the exit and its message surface."""
    import time

    from sim.remote_flight import FlightLinkError

    t0 = time.monotonic()
    with pytest.raises(FlightLinkError, match=r"exited with status 2: .*checkpoint-every-s must be >= 0"):
        serve_mission(cfg, DEFAULT.read_text(), tmp_path / "serve",
                      ServeOptions(days=DAYS, seed=cfg.mission.seed, flight_args=["--checkpoint-every-s", "-1"]))
    assert time.monotonic() - t0 < 60
