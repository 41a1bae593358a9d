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
DAYS = 0.1


def core_rows(raw: bytes, cfg) -> list[dict]:
    rows = []
    for pkt in split_packets(packet_stream(raw, cfg))[0]:
        p = PusTm.unpack(pkt, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == 3 and struct.unpack(">H", data[:2])[0] == d.HK_CORE_SID:
            rows.append(dict(zip((q.name for q in d.HK_CORE), d.HK_CORE_STRUCT.unpack(data[2:]), strict=True)))
    return rows


@pytest.fixture(scope="module")
def cfg():
    return load_mission_config(DEFAULT)


@pytest.fixture(scope="module")
def in_process(cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("inproc") / "run"
    run_mission(cfg, DEFAULT.read_text(), out, days=DAYS, show_progress=False)
    return (out / "telemetry.bin").read_bytes()


def test_lockstep_split_run_downlinks_the_in_process_bytes(cfg, in_process, tmp_path):
    """The default mission (analog device over its TCP port) in two processes, byte for byte."""
    s = serve_mission(cfg, DEFAULT.read_text(), tmp_path / "split", ServeOptions(days=DAYS, seed=cfg.mission.seed))
    split = (tmp_path / "split" / "telemetry.bin").read_bytes()
    assert len(in_process) > 50_000
    assert split == in_process
    assert s["flight_exit_code"] == 0 and s["flight_starts"] == 1 and s["link_losses"] == 0
    assert (tmp_path / "split" / "flight_nv" / "state.snap").exists()  # written at the stop


def test_cut_world_link_is_taken_up_again_and_nothing_changes(cfg, in_process, tmp_path):
    """A link cut between ticks: the flight process (alive) connects again and the telemetry is
    still the in-process run's, so nothing was lost or run twice."""
    cuts = []

    def cut(sim, child):
        if len(cuts) < 2 and not sim.done:
            cuts.append(sim.tick)
            sim.fsw.drop_link()

    s = serve_mission(cfg, DEFAULT.read_text(), tmp_path / "split",
                      ServeOptions(days=DAYS, seed=cfg.mission.seed, chunk_ticks=2500, on_tick=cut))
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
