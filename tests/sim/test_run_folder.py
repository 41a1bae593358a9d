"""Run folders as transactions (issue 16, item 2): a run appears whole or not at all, a reused
folder is replaced whole only on --force, one writer per run folder and per archive."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flight_sw.config import load_mission_config
from sim.runner import RunFolderError, _folder_lock, run_mission

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"


def _cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT)


def test_a_killed_run_leaves_no_run_folder_and_the_next_run_clears_its_leftovers(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", "run", str(DEFAULT), "--days", "3", "--out", str(out),
                             "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / ".run.partial"
    deadline = time.monotonic() + 60
    while not (partial / "telemetry.bin").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (partial / "telemetry.bin").exists()  # it was killed mid-run ...
    assert not out.exists()  # ... and the target never held a half-written run
    r = _cli("sim.cli", "run", str(DEFAULT), "--days", "0.02", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert (out / "summary.json").is_file() and not partial.exists()


def test_ground_commands_refuse_a_folder_a_run_did_not_finish(tmp_path):
    """What an older version's killed run left: config and telemetry, no run.json or summary."""
    run = run_mission(load_mission_config(DEFAULT), DEFAULT.read_text(), tmp_path / "done", days=0.02,
                      show_progress=False).run_dir
    half = tmp_path / "half"
    half.mkdir()
    for name in ("config.yaml", "telemetry.bin"):
        (half / name).write_bytes((run / name).read_bytes())
    for cmd in ("ingest", "decode", "limits", "models", "report"):
        r = _cli("ground_tools.cli", cmd, str(half))
        assert r.returncode == 2, (cmd, r.stderr)
        assert "incomplete run folder" in r.stderr and "run.json" in r.stderr and "Traceback" not in r.stderr


def test_a_used_folder_needs_force_and_is_then_replaced_whole(tmp_path):
    out = tmp_path / "run"
    assert _cli("sim.cli", "run", str(DEFAULT), "--days", "0.05", "--out", str(out), "--quiet").returncode == 0
    assert _cli("ground_tools.cli", "ingest", str(out)).returncode == 0
    assert (out / "archive.sqlite").is_file()
    first = (out / "telemetry.bin").read_bytes()
    r = _cli("sim.cli", "run", str(DEFAULT), "--days", "0.02", "--out", str(out), "--quiet")
    assert r.returncode == 2 and "add --force" in r.stderr
    assert (out / "telemetry.bin").read_bytes() == first  # untouched
    r = _cli("sim.cli", "run", str(DEFAULT), "--days", "0.02", "--out", str(out), "--quiet", "--force")
    assert r.returncode == 0, r.stderr
    assert not (out / "archive.sqlite").exists()  # the old run's archive went with it
    assert len((out / "telemetry.bin").read_bytes()) < len(first)
    assert not any(p.name.startswith(".run.") and p.name != ".run.lock" for p in tmp_path.iterdir())


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path):
    out = tmp_path / "run"
    with _folder_lock(out):  # another run holds the folder
        with pytest.raises(RunFolderError, match="another run is writing"):
            run_mission(load_mission_config(DEFAULT), DEFAULT.read_text(), out, days=0.01, show_progress=False)
    assert not out.exists()


def test_two_ingests_at_once_archive_every_sample_once(tmp_path):
    from ground_tools.archive import ingest

    run = run_mission(load_mission_config(DEFAULT), DEFAULT.read_text(), tmp_path / "run", days=0.25,
                      show_progress=False).run_dir
    alone = ingest(run, tmp_path / "alone.sqlite")
    db = tmp_path / "both.sqlite"
    errors = []

    def go():
        try:
            ingest(run, db)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    count = {}
    for name, path in (("alone", alone.db), ("both", db)):
        with sqlite3.connect(path) as conn:
            count[name] = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert count["alone"] > 0 and count["both"] == count["alone"]
