"""Uplink plan files: the FOP-1 packet plan round-trips and names what is wrong with a bad file;
the old CLTU plan is still written (--expedited) and still accepted by `flightsim run --uplink`."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from flight_sw.config import load_mission_config
from ground_tools.pass_terminal import PacketPlan, PassTerminal
from ground_tools.uplink import Uplinker
from ground_tools.uplink_plan import read_packet_plan, write_packet_plan, write_plan
from sim.uplink_file import FOP_PLAN_MAGIC, is_packet_plan, read_uplink_file

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_mission_config(DEFAULT)


@pytest.fixture
def plan(cfg):
    up = Uplinker(cfg, packets_only=True)
    return PacketPlan(key_id=1, first_arsn=42, iv_salt=b"\x01\x02\x03\x04",
                      entries=((0, bytes(up.ping())), (0, bytes(up.mode("SAFE"))), (3, bytes(up.confirm()))))


def test_a_packet_plan_round_trips_and_is_told_from_a_cltu_plan(tmp_path, plan, cfg):
    path = tmp_path / "plan.bin"
    write_packet_plan(path, plan)
    assert path.read_bytes().startswith(FOP_PLAN_MAGIC) and is_packet_plan(path)
    assert read_packet_plan(path) == plan
    old = tmp_path / "old.bin"
    cltus = [(0, Uplinker(cfg, iv_salt=bytes(4)).ping()), (1, b"\x01\x02")]
    write_plan(old, cltus)
    assert not is_packet_plan(old) and read_uplink_file(old) == cltus  # the old format still reads
    with pytest.raises(ValueError, match="a FOP-1 packet plan, not a CLTU plan"):
        read_uplink_file(path)
    with pytest.raises(ValueError, match=rf"{old}: byte 0: expected the magic"):
        read_packet_plan(old)


def _corrupt(tmp_path, plan, edit) -> Path:
    path = tmp_path / "plan.bin"
    write_packet_plan(path, plan)
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(edit(raw)))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda r: r[:10], r"byte 0: expected a 28-byte packet plan header, the file has 10 bytes"),
    (lambda r: r[:8] + b"\x00\x02" + r[10:], r"byte 8: expected packet plan version 1, found 2"),
    (lambda r: r[:12] + bytes(8) + r[20:], r"byte 12: expected a first ARSN >= 1, found 0"),
    (lambda r: r[:-3], r"byte \d+: entry 2 claims 15 bytes, the file ends first \(12 left\)"),
    (lambda r: r[:28 + 4 + 13], r"byte 45: expected the header of entry 1 of 3, the file ends"),
    (lambda r: r + b"\x00", r"byte \d+: expected the end of the file after 3 entries, found 1 more bytes"),
    (lambda r: r[:28] + b"\x00\x00\x00\x00" + r[28:], r"byte 30: entry 0: expected a packet length > 0"),
])
def test_a_damaged_packet_plan_names_the_file_the_offset_and_the_expectation(tmp_path, plan, edit, message):
    path = _corrupt(tmp_path, plan, edit)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: {message}"):
        read_packet_plan(path)


def test_flightsim_run_hands_a_packet_plan_to_a_fop1_terminal_and_a_cltu_plan_to_the_radio(
        tmp_path, plan, cfg, monkeypatch, capsys):
    """The CLI tells the formats apart (the mission itself is not run here: run_mission is stubbed)."""
    import sim.runner
    from sim import cli

    calls = []

    def fake_run_mission(cfg, text, out, **kw):
        calls.append(kw)
        raise sim.runner.RunFolderError("stub: not run")

    monkeypatch.setattr(sim.runner, "run_mission", fake_run_mission)
    packet_plan, cltu_plan = tmp_path / "p.bin", tmp_path / "c.bin"
    write_packet_plan(packet_plan, plan)
    cltus = [(0, Uplinker(cfg, iv_salt=bytes(4)).ping())]
    write_plan(cltu_plan, cltus)
    base = ["run", str(DEFAULT), "--days", "0.01", "--out", str(tmp_path / "r"), "--quiet"]
    assert cli.main([*base, "--uplink", str(packet_plan), "--uplink-loss", "0.25"]) == 2  # the stub's refusal
    terminal = calls[-1]["ground_terminal"]
    assert isinstance(terminal, PassTerminal) and calls[-1]["uplink"] is None
    assert terminal.plan.first_arsn == 42 and terminal.uplink_loss == 0.25
    assert cli.main([*base, "--uplink", str(cltu_plan)]) == 2
    assert calls[-1]["uplink"] == cltus and calls[-1]["ground_terminal"] is None
    assert cli.main([*base, "--uplink", str(cltu_plan), "--uplink-loss", "0.1"]) == 2
    assert "--uplink-loss needs a FOP-1 packet plan" in capsys.readouterr().err
    bad = tmp_path / "bad.bin"
    bad.write_bytes(packet_plan.read_bytes()[:-1])
    n = len(calls)
    assert cli.main([*base, "--uplink", str(bad)]) == 2 and len(calls) == n
    assert f"error: --uplink {bad}: {bad}: byte" in capsys.readouterr().err
    unknown_key = tmp_path / "k.bin"
    write_packet_plan(unknown_key, PacketPlan(7, 1, bytes(4), plan.entries))
    assert cli.main([*base, "--uplink", str(unknown_key)]) == 2 and len(calls) == n
    assert "no active command key with id 7" in capsys.readouterr().err


def test_the_header_layout_is_the_documented_one(tmp_path, plan):
    path = tmp_path / "plan.bin"
    write_packet_plan(path, plan)
    raw = path.read_bytes()
    magic, version, key_id, arsn, salt, count = struct.unpack_from(">8sHHQ4sI", raw)
    assert (magic, version, key_id, arsn, salt, count) == (b"FOP1PLAN", 1, 1, 42, b"\x01\x02\x03\x04", 3)
    assert struct.unpack_from(">HH", raw, 28) == (0, len(plan.entries[0][1]))
