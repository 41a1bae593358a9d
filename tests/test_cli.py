"""The command lines: bad input ends with a message and exit status 2, never a traceback."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"


def _cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT)


def test_validate_prints_summary():
    r = _cli("sim.cli", "validate", str(DEFAULT))
    assert r.returncode == 0, r.stderr
    assert "LEARN-1" in r.stdout and "Memory" in r.stdout and "OK:" in r.stdout
    assert len(r.stdout.splitlines()) < 40  # one screen


def test_run_missing_file_exits_nonzero_without_traceback(tmp_path):
    r = _cli("sim.cli", "run", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2
    assert "file not found" in r.stderr and "Traceback" not in r.stderr


def test_run_invalid_config_lists_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.read_text().replace("capacity_wh: 40.0", "capacity_wh: -3"))
    r = _cli("sim.cli", "run", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "power.battery.capacity_wh: got -3.0 Wh, expected > 0" in r.stderr


def test_validate_non_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe\x00binary")
    r = _cli("sim.cli", "validate", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_report_on_missing_run_folder(tmp_path):
    r = _cli("ground_tools.cli", "report", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "not a run folder" in r.stderr and "Traceback" not in r.stderr


def test_report_on_incomplete_run_folder(tmp_path):
    (tmp_path / "config.yaml").write_text(DEFAULT.read_text())
    r = _cli("ground_tools.cli", "report", str(tmp_path))
    assert r.returncode == 2 and "missing run.json, telemetry.bin" in r.stderr


def test_run_rejects_bad_days(tmp_path):
    r = _cli("sim.cli", "run", str(DEFAULT), "--days", "-1", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "--days" in r.stderr


def test_run_rejects_a_speedup_that_is_not_a_finite_positive_number(tmp_path):
    for bad in ("nan", "inf", "-inf", "0"):
        r = _cli("sim.cli", "run", str(DEFAULT), "--days", "0.01", "--realtime", f"--speedup={bad}",
                 "--out", str(tmp_path / "r"))
        assert r.returncode == 2 and "--speedup must be a finite number > 0" in r.stderr, (bad, r.stderr)
        assert "Traceback" not in r.stderr


def test_power_system_that_cannot_carry_essential_loads_is_refused(tmp_path):
    bad = tmp_path / "weak.yaml"
    bad.write_text(DEFAULT.read_text().replace("bus_base_load_w: 9.0", "bus_base_load_w: 25.0"))
    r = _cli("sim.cli", "validate", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "power.bus_base_load_w = 25 W" in r.stderr and "power.solar_array.area_m2" in r.stderr
    assert "on orbit" in r.stderr


def test_run_far_from_tle_epoch_warns_with_the_field(tmp_path):
    cfg = tmp_path / "late.yaml"
    cfg.write_text(DEFAULT.read_text().replace('start_utc: "2026-03-01T00:00:00Z"', 'start_utc: "2026-04-15T00:00:00Z"'))
    r = _cli("sim.cli", "run", str(cfg), "--days", "0.05", "--out", str(tmp_path / "r"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "warning: orbit.tle_max_age_days" in r.stderr and "45.0 days from the TLE epoch" in r.stderr


def test_run_with_a_damaged_uplink_file_is_refused(tmp_path):
    bad = tmp_path / "uplink.bin"
    bad.write_bytes(b"\x00\x00\x00\xff" + b"x" * 10)
    r = _cli("sim.cli", "run", str(DEFAULT), "--days", "0.01", "--uplink", str(bad), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "claims 255 bytes" in r.stderr and "Traceback" not in r.stderr


def test_groundtools_uplink_plan_and_config_commands(tmp_path):
    r = _cli("ground_tools.cli", "uplink", "plan", str(DEFAULT), "--out", str(tmp_path / "up.bin"))
    assert r.returncode == 0, r.stderr
    assert "model v1000" in r.stdout and (tmp_path / "up.bin").stat().st_size > 300
    assert (tmp_path / "up.bin").read_bytes().startswith(b"FOP1PLAN")  # packets for FOP-1 by default
    r = _cli("ground_tools.cli", "uplink", "plan", str(DEFAULT), "--out", str(tmp_path / "bd.bin"), "--expedited")
    assert r.returncode == 0, r.stderr
    frames = int(re.match(r"(\d+) frames:", r.stdout).group(1))  # one ARSN each, from 1
    assert frames >= 7 and f"keep the next sequence number: {1 + frames}" in r.stdout
    assert not (tmp_path / "bd.bin").read_bytes().startswith(b"FOP1PLAN")
    r = _cli("ground_tools.cli", "uplink", "plan", str(DEFAULT), "--out", str(tmp_path / "k.bin"), "--key-id", "9")
    assert r.returncode == 2 and "no active command key with id 9" in r.stderr and "Traceback" not in r.stderr
    proposed = tmp_path / "p.yaml"
    proposed.write_text(DEFAULT.read_text().replace("margin_j: 1500", "margin_j: 2500"))
    r = _cli("ground_tools.cli", "config", "diff", str(proposed), "--active", str(DEFAULT))
    assert r.returncode == 0 and "margin_j" in r.stdout
    r = _cli("ground_tools.cli", "config", "package", str(proposed), "--active", str(DEFAULT), "--out",
             str(tmp_path / "cfg.bin"))
    assert r.returncode == 0 and (tmp_path / "cfg.bin").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.read_text().replace("margin_j: 1500", "margin_j: -5"))
    r = _cli("ground_tools.cli", "config", "validate", str(bad))
    assert r.returncode == 2 and "margin_j" in r.stdout
