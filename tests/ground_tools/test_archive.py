"""`groundtools ingest`: the SQLite archive, idempotence, damaged files, foreign input, cross-checks."""

import hashlib
import json
import os
import sqlite3
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from spacepackets.ccsds.tm_frame import TmFramePrimaryHeader
from spacepackets.ecss import PusTm

from flight_sw.config import load_mission_config
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.tm_frames import ASM
from ground_tools.archive import Archive, ArchiveError, default_db, ingest
from ground_tools.decode import DATA_OFFSET, DecodeError, decode_file, packet_stream, split_packets

from .helpers import cli, cli_subprocess, rewrite

TABLES = ("packets", "rejects", "hk_core", "hk_tasks", "orbits", "orbit_task_energy", "events",
          "training_updates", "mode_changes", "ingests", "meta", "tasks")


def _content(db) -> dict:
    """Row count and a digest of every table's rows (ingested_utc excluded: it is when, not what)."""
    conn = sqlite3.connect(db)
    out = {}
    for t in TABLES:
        rows = conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
        if t == "ingests":
            rows = [r[:-1] for r in rows]
        out[t] = (len(rows), hashlib.sha1(repr(rows).encode()).hexdigest())
    conn.close()
    return out


def test_ingest_decodes_everything_like_the_plain_decoder(run_copy):
    rep = ingest(run_copy)
    assert rep.bad == 0 and rep.duplicates == 0 and rep.new_packets == rep.frames > 100
    cfg = load_mission_config(run_copy / "config.yaml")
    tm = decode_file(run_copy / "telemetry.bin", cfg.mission.start_utc, len(cfg.tasks))
    with Archive(default_db(run_copy)) as ar:
        hk = ar.hk_core()
        assert list(hk)[:2] == ["packet_id", "t_s"] and [p.name for p in d.HK_CORE] == list(hk)[2:]
        np.testing.assert_array_equal(hk["t_s"], tm.hk_core["t_s"])
        np.testing.assert_array_equal(hk["soc"], tm.hk_core["soc"])
        np.testing.assert_array_equal(hk["model_version"], tm.hk_core["model_version"])
        ht = ar.hk_tasks()
        assert ht["runs"].shape == tm.hk_tasks["runs"].shape
        np.testing.assert_array_equal(ht["runs"], tm.hk_tasks["runs"])
        o, energy = ar.orbits()
        np.testing.assert_array_equal(o["budget_j"], tm.orbits["budget_j"])
        np.testing.assert_array_equal(energy, tm.orbit_task_energy_j)
        assert len(ar.events()) == len(tm.events)
        assert ar.decode_stats() == (tm.packets, 0, {})
        # indexed by time and packet type
        idx = {r[0] for r in ar.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"packets_time", "packets_type", "hk_core_time", "events_type"} <= idx


def test_ingesting_twice_changes_nothing(run_copy, capsys):
    db = default_db(run_copy)
    first = ingest(run_copy)
    before = _content(db)
    second = ingest(run_copy)
    assert second.new_packets == 0 and second.duplicates == first.new_packets and second.already_ingested
    assert _content(db) == before
    rc, out, _ = cli(capsys, "ingest", run_copy)
    assert rc == 0 and "0 new" in out and "already ingested: nothing changed" in out
    assert _content(db) == before


def test_a_longer_file_of_the_same_run_adds_only_the_new_packets(run_copy, tmp_path):
    full = (run_copy / "telemetry.bin").read_bytes()
    packets = split_packets(full)[0]
    half = b"".join(packets[: len(packets) // 2])
    (run_copy / "telemetry.bin").write_bytes(half)
    ingest(run_copy)
    (run_copy / "telemetry.bin").write_bytes(full)
    rep = ingest(run_copy)
    assert rep.new_packets == len(packets) - len(packets) // 2 and rep.duplicates == len(packets) // 2
    with Archive(default_db(run_copy)) as ar:
        assert ar.conn.execute("SELECT count(*) FROM packets").fetchone()[0] == len(packets)


def _bare(run_copy) -> bytes:
    """The run's telemetry rewritten as a bare packet stream (the format of run folders from
    before the link layer, still accepted): the packet layer's own damage handling."""
    tm = run_copy / "telemetry.bin"
    raw = packet_stream(tm.read_bytes(), load_mission_config(run_copy / "config.yaml"))
    assert raw[:4] != ASM
    tm.write_bytes(raw)
    return raw


def test_truncated_file_keeps_every_whole_packet(run_copy):
    raw = _bare(run_copy)
    n = len(split_packets(raw)[0])
    (run_copy / "telemetry.bin").write_bytes(raw[:-30])  # cut into the last packet
    rep = ingest(run_copy)
    assert rep.new_packets == n - 1
    assert rep.bad == 1 and list(rep.reasons) == ["truncated"]
    with Archive(default_db(run_copy)) as ar:
        (reason,) = ar.conn.execute("SELECT reason FROM rejects").fetchone()
        assert "last packet declares" in reason


def test_flipped_bytes_are_counted_and_the_rest_is_kept(run_copy):
    raw = bytearray(_bare(run_copy))
    packets = split_packets(bytes(raw))[0]
    offsets = np.cumsum([0] + [len(p) for p in packets])
    raw[offsets[10] + DATA_OFFSET + 3] ^= 0xFF  # payload of packet 10: CRC fails, length fine
    raw[offsets[50] + 4] ^= 0x5A  # length field of packet 50: framing must resynchronise
    raw[offsets[90] + 1] ^= 0x01  # sequence count of packet 90: CRC fails
    (run_copy / "telemetry.bin").write_bytes(bytes(raw))
    rep = ingest(run_copy)
    assert rep.reasons.get("CRC mismatch") == 2
    assert rep.reasons.get("corrupted header") == 1
    # Only the damaged packets are lost; everything after the bad length is found again.
    with Archive(default_db(run_copy)) as ar:
        ok = ar.conn.execute("SELECT count(*) FROM packets WHERE status = 'ok'").fetchone()[0]
        assert ok == len(packets) - 3
        assert ar.conn.execute("SELECT count(*) FROM packets WHERE crc_ok = 0").fetchone()[0] == 2
        total, bad, reasons = ar.decode_stats()
        assert bad == 3 and reasons == {"CRC mismatch": 2, "corrupted header": 1}


@pytest.mark.parametrize("bare", [True, False], ids=["packets", "frames"])
def test_random_corruption_never_raises(run_copy, bare):
    rng = np.random.default_rng(3)
    raw = bytearray(_bare(run_copy) if bare else (run_copy / "telemetry.bin").read_bytes())
    n = len(split_packets(bytes(raw))[0])
    damaged = 0
    for pos in rng.integers(0, len(raw), 40):
        damaged += raw[pos] != (new := int(rng.integers(0, 256)))
        raw[pos] = new
    (run_copy / "telemetry.bin").write_bytes(bytes(raw[: len(raw) - 7]))
    rep = ingest(run_copy)
    assert rep.new_packets > 0.8 * n
    if bare:
        assert rep.bad > 0
    else:  # a damaged frame is dropped whole (FECF): its packets are missing, never wrong
        assert rep.bad == 0 and rep.link["bad_fecf"] >= 1 and damaged > 0
        assert rep.reasons["link: frame FECF failed"] == rep.link["bad_fecf"]
        assert rep.reasons["link: octets outside frames"] > 0  # the cut tail


def _cadus(raw: bytes, frame_bytes: int) -> list[bytes]:
    size = 4 + frame_bytes
    assert len(raw) % size == 0
    return [raw[i : i + size] for i in range(0, len(raw), size)]


@pytest.mark.parametrize("damage", ["lost", "corrupted"])
def test_a_frame_lost_or_corrupted_loses_only_its_packets_counted(run_copy, damage):
    """Drop (or flip a bit in) one frame that carries packets: exactly the packets with an octet
    in it are missing, the ingest counts them (by sequence count) and the frame gap, and every
    other packet is archived as sent."""
    cfg = load_mission_config(run_copy / "config.yaml")
    tm = run_copy / "telemetry.bin"
    full = tm.read_bytes()
    cadus = _cadus(full, cfg.downlink.tm_frame_bytes)
    carrying = [i for i, c in enumerate(cadus) if TmFramePrimaryHeader.unpack(c[4:]).vc_id != 7]
    k = carrying[len(carrying) // 2]
    hit = cadus[k]
    if damage == "lost":
        cadus = cadus[:k] + cadus[k + 1 :]
    else:
        cadus[k] = hit[:600] + bytes([hit[600] ^ 0x10]) + hit[601:]
    tm.write_bytes(b"".join(cadus))
    whole = split_packets(packet_stream(full, cfg))[0]
    n_before = len(split_packets(packet_stream(b"".join(_cadus(full, cfg.downlink.tm_frame_bytes)[:k]), cfg))[0])
    got = split_packets(packet_stream(b"".join(cadus), cfg))[0]
    received = set(got)
    missing = [p for p in whole if p not in received]
    assert missing and not set(missing) & set(whole[:n_before])  # nothing completed before frame k
    assert got == [p for p in whole if p in received]  # the rest arrives, in order, intact
    assert len(missing) <= 1 + len(hit) // 22  # what one frame can hold (PUS-C TM: 22 octets at least)
    rep = ingest(run_copy)
    assert rep.bad == 0 and rep.new_packets == len(whole) - len(missing)
    assert rep.reasons["link: packets missing (sequence count gaps)"] == len(missing)
    assert rep.reasons["link: frames lost (master channel count gaps)"] == 1 and rep.link["gaps"] == 1
    assert rep.link["bad_fecf"] == (damage == "corrupted")
    assert ("link: frame FECF failed" in rep.reasons) == (damage == "corrupted")
    with Archive(default_db(run_copy)) as ar:
        (reasons,) = ar.conn.execute("SELECT reasons FROM ingests").fetchone()
    assert json.loads(reasons) == rep.reasons


def _other_version(pkt: bytes):
    if pkt[7] == d.PUS_SERVICE_HK and struct.unpack_from(">H", pkt, DATA_OFFSET)[0] == d.HK_CORE_SID:
        body = bytearray(pkt)
        struct.pack_into(">H", body, DATA_OFFSET + 2, d.DICTIONARY_VERSION + 7)
        return bytes(body)
    return None


def test_telemetry_of_another_dictionary_version_is_refused_clearly(run_copy, capsys):
    tm = run_copy / "telemetry.bin"
    tm.write_bytes(rewrite(tm.read_bytes(), _other_version))
    with pytest.raises(DecodeError, match=f"dictionary version {d.DICTIONARY_VERSION + 7}"):
        ingest(run_copy)
    assert not default_db(run_copy).exists() or not sqlite3.connect(default_db(run_copy)).execute(
        "SELECT name FROM sqlite_master WHERE name = 'packets'").fetchone()
    r = cli_subprocess("ingest", run_copy)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"telemetry written with dictionary version {d.DICTIONARY_VERSION + 7}" in r.stderr


def test_run_json_of_another_dictionary_version_is_refused(run_copy, capsys):
    info = json.loads((run_copy / "run.json").read_text())
    info["dictionary_version"] = 99
    (run_copy / "run.json").write_text(json.dumps(info))
    rc, _, err = cli(capsys, "ingest", run_copy)
    assert rc == 2 and "run.json: telemetry written with dictionary version 99" in err


def test_missing_and_empty_files_give_clear_messages(run_copy, tmp_path, capsys):
    rc, _, err = cli(capsys, "ingest", tmp_path / "nowhere")
    assert rc == 2 and "not a run folder" in err
    (run_copy / "telemetry.bin").write_bytes(b"")
    rc, _, err = cli(capsys, "ingest", run_copy)
    assert rc == 2 and "empty telemetry file" in err
    (run_copy / "telemetry.bin").unlink()
    rc, _, err = cli(capsys, "ingest", run_copy)
    assert rc == 2 and "missing telemetry.bin" in err


def test_empty_foreign_and_corrupt_archives(run_copy, short_run, tmp_path, capsys):
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    with pytest.raises(ArchiveError, match="empty archive"):
        Archive(empty)
    with pytest.raises(ArchiveError, match="no archive here"):
        Archive(tmp_path / "absent.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    rc, _, err = cli(capsys, "ingest", run_copy, "--db", junk)
    assert rc == 2 and "not an SQLite archive" in err
    # an archive of this run, then telemetry of another run (different seed) into it
    db = tmp_path / "a.sqlite"
    ingest(run_copy, db)
    info = json.loads((run_copy / "run.json").read_text())
    info["seed"] = 12345
    (run_copy / "run.json").write_text(json.dumps(info))
    rc, _, err = cli(capsys, "ingest", run_copy, "--db", db)
    assert rc == 2 and "holds another run" in err and "--db" in err
    # an archive whose packets table is empty (interrupted or hand-made)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM packets")
    conn.commit()
    conn.close()
    rc, _, err = cli(capsys, "limits", short_run, "--db", db)
    assert rc == 2 and ("empty archive" in err or "another run" in err)


def test_a_run_folders_own_archive_is_rebuilt_when_a_new_run_replaces_the_old_one(run_copy):
    """`make sim` twice with an edited config writes a new run into the same folder: the
    folder's archive (derived data) must follow it, not block the report. An archive the
    user named (--db) is never replaced."""
    from ground_tools.archive import ensure_archive

    db = ensure_archive(run_copy)
    assert db == default_db(run_copy)
    info = json.loads((run_copy / "run.json").read_text())
    info["seed"] = 12345  # as if another run had been written here
    (run_copy / "run.json").write_text(json.dumps(info))
    logs = []
    assert ensure_archive(run_copy, log=logs.append) == db
    assert any("replaced the stale archive" in line for line in logs)
    with Archive(db) as ar:
        assert ar.meta["seed"] == "12345"
    named = run_copy / "named.sqlite"
    ingest(run_copy, named)
    info["seed"] = 54321
    (run_copy / "run.json").write_text(json.dumps(info))
    with pytest.raises(ArchiveError, match="holds another run"):
        ensure_archive(run_copy, named)


def test_packet_fields_agree_with_spacepackets(short_run, tmp_path):
    db = tmp_path / "x.sqlite"
    ingest(short_run, db)
    with Archive(db) as ar:
        rows = ar.conn.execute("SELECT apid, seq, service, subtype, raw FROM packets ORDER BY id").fetchall()
    for apid, seq, service, subtype, raw in rows:
        p = PusTm.unpack(raw, timestamp_len=d.CDS_SHORT_LEN)  # raises on a bad CRC
        assert (p.apid, p.seq_count, p.service, p.message_subtype) == (apid, seq, service, subtype)


CCSDSPY_SCRIPT = textwrap.dedent("""
    import json, sys
    import ccsdspy
    from ccsdspy import PacketField
    path, fields = sys.argv[1], json.loads(sys.argv[2])
    kinds = {"B": ("uint", 8), "H": ("uint", 16), "I": ("uint", 32), "f": ("float", 32), "d": ("float", 64)}
    defs = [PacketField(n, "uint", b) for n, b in (("sec_ver", 8), ("service", 8), ("subtype", 8),
            ("msg_counter", 16), ("dest_id", 16), ("p_field", 8), ("cds_days", 16), ("cds_ms", 32), ("sid", 16))]
    defs += [PacketField(name, *kinds[fmt]) for name, fmt in fields]
    defs.append(PacketField("crc", "uint", 16))
    out = ccsdspy.FixedLength(defs).load(path, include_primary_header=True)
    print(json.dumps({k: [float(x) for x in v] for k, v in out.items()}))
""")


def test_hk_decoding_cross_checked_with_ccsdspy(short_run, tmp_path):
    """ccsdspy (independent decoder, no CRC check) reads a file of the SID-1 packets from the archive."""
    db = tmp_path / "x.sqlite"
    ingest(short_run, db)
    with Archive(db) as ar:
        raws = [r[0] for r in ar.conn.execute(
            "SELECT raw FROM packets WHERE service = 3 AND struct_id = ? AND status = 'ok' ORDER BY id",
            (d.HK_CORE_SID,))]
        hk = ar.hk_core()
    sid1 = tmp_path / "sid1.bin"
    sid1.write_bytes(b"".join(raws))
    cfgdir = tmp_path / "ccsdspy-config"
    cfgdir.mkdir()
    env = {**os.environ, "HOME": str(tmp_path), "ccsdspy_CONFIGDIR": str(cfgdir), "XDG_CONFIG_HOME": str(cfgdir)}
    fields = [[p.name, p.fmt] for p in d.HK_CORE]
    r = subprocess.run([sys.executable, "-c", CCSDSPY_SCRIPT, str(sid1), json.dumps(fields)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    out = {k: np.array(v) for k, v in json.loads(r.stdout).items()}
    assert len(out["soc"]) == len(hk["soc"]) > 50
    assert set(out["CCSDS_APID"]) == {load_mission_config(short_run / "config.yaml").telemetry.apid}
    assert np.all(out["sid"] == d.HK_CORE_SID) and np.all(out["service"] == d.PUS_SERVICE_HK)
    for p in d.HK_CORE:
        np.testing.assert_array_equal(out[p.name], hk[p.name], err_msg=p.name)  # NaN == NaN here
    start = load_mission_config(short_run / "config.yaml").mission.start_utc
    from ground_tools.decode import epoch_offset_s

    t = out["cds_days"] * 86400.0 + out["cds_ms"] / 1000.0 - epoch_offset_s(start)
    np.testing.assert_allclose(t, hk["t_s"], atol=1e-6)


@pytest.mark.skipif(not hasattr(d, "PUS_SERVICE_VERIFICATION"), reason="dictionary has no telecommands")
def test_telecommand_verification_reports_are_archived(run_copy):
    """PUS service 1 reports (request id, failure code + text) land in `verifications`."""
    from flight_sw.tmtc.packets import cds_short
    from ground_tools.report import _command_history

    cfg = load_mission_config(run_copy / "config.yaml")
    start, apid = cfg.mission.start_utc, cfg.telemetry.apid

    def report(subtype, seq, t, failure=None):
        req = struct.pack(">HH", 0x1800 | apid, 0xC000 | seq)
        if failure is not None:
            req += struct.pack(">H", d.TC_FAILURES.index(failure[0])) + failure[1].encode()
        return PusTm(service=d.PUS_SERVICE_VERIFICATION, message_subtype=subtype, timestamp=cds_short(start, t),
                     source_data=req, apid=apid, seq_count=16000 + subtype + seq).pack()

    extra = [report(1, 5, 100.0), report(3, 5, 100.0), report(7, 5, 101.0), report(1, 6, 200.0),
             report(8, 6, 201.0, ("bad_tle", "tle_line1: checksum 3, expected 7"))]
    tm = run_copy / "telemetry.bin"
    tm.write_bytes(_bare(run_copy) + b"".join(extra))
    rep = ingest(run_copy)
    assert rep.bad == 0 and rep.new_rows["verifications"] == 5
    with Archive(default_db(run_copy)) as ar:
        ver = ar.verifications()
    assert [(v["stage"], v["success"], v["request_seq"]) for v in ver] == [
        ("acceptance", 1, 5), ("start", 1, 5), ("completion", 1, 5), ("acceptance", 1, 6), ("completion", 0, 6)]
    assert ver[-1]["failure"] == "bad_tle" and ver[-1]["detail"] == "tle_line1: checksum 3, expected 7"
    html = _command_history(ver, [], lambda t: f"{t:.0f}")
    assert "2 telecommands, 1 failed" in html and "FAILED: bad_tle (tle_line1: checksum 3, expected 7)" in html


def test_calibration_updates_are_archived_with_their_reasons(run_copy):
    """The default mission's commissioning calibration reaches the archive readable: version,
    outcome, why it was asked for; the core HK carries the active table's version."""
    ingest(run_copy)
    with Archive(default_db(run_copy)) as ar:
        events = [e for e in ar.events() if e["name"] == "calibration_update"]
        hk = ar.hk_core()
    summary = json.loads((run_copy / "summary.json").read_text())
    assert len([e for e in events if " committed " in e["detail"]]) == summary["calibration_committed"] >= 1
    assert events[0]["detail"].startswith("calibration table v1 committed (commissioning)")
    assert int(hk["cal_version"][-1]) == summary["calibration_version"]


def test_a_packet_played_back_again_with_a_new_sequence_count_is_a_duplicate(run_copy):
    """PUS 15,9 replays stored packets; the downlink stamps a new count (and CRC) on each, so the
    archive's content key leaves both out: the replay adds no row, a real new packet does."""
    import binascii

    raw = _bare(run_copy)
    packets = split_packets(raw)[0]
    hk = [p for p in packets if p[7] == d.PUS_SERVICE_HK][:5]

    def restamped(p: bytes, seq: int) -> bytes:
        b = bytearray(p)
        b[2], b[3] = (b[2] & 0xC0) | (seq >> 8), seq & 0xFF
        b[-2:] = binascii.crc_hqx(bytes(b[:-2]), 0xFFFF).to_bytes(2, "big")
        return bytes(b)

    replay = [restamped(p, 9000 + i) for i, p in enumerate(hk)]
    assert all(r != p for r, p in zip(replay, hk, strict=True))
    changed = bytearray(hk[0])
    changed[-3] ^= 1  # one parameter octet differs: another packet
    changed[-2:] = binascii.crc_hqx(bytes(changed[:-2]), 0xFFFF).to_bytes(2, "big")
    (run_copy / "telemetry.bin").write_bytes(raw + b"".join(replay) + bytes(changed))
    rep = ingest(run_copy)
    assert rep.duplicates == len(replay) and rep.bad == 0
    assert rep.new_packets == len(packets) + 1
