"""One validation (issue 16, item 1): a config `flightsim validate` accepts can be set up by
`flightsim run` (sim/setup_check.py), over generated configs (sim/bench/config_cases.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.bench.config_cases import judge, mutated_config

ROOT = Path(__file__).resolve().parents[2]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=10**9))
def test_what_validation_accepts_the_run_can_set_up(seed):
    verdict, why = judge(seed)
    assert verdict != "disagree", f"generated config {seed}: validation accepted it, set-up failed: {why}"


def test_the_generator_reaches_both_sides():
    verdicts = {judge(seed)[0] for seed in range(40)}
    assert verdicts == {"ok", "refused"}


def test_validate_and_run_refuse_a_schedule_the_loader_alone_accepts(tmp_path):
    """A task period that does not divide the major frame: every key is valid on its own."""
    data = mutated_config(0)
    data["tasks"][0]["period_s"] = 7
    path = tmp_path / "odd_period.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    for cmd in (["validate", str(path)], ["run", str(path), "--days", "0.01", "--out", str(tmp_path / "run")]):
        r = subprocess.run([sys.executable, "-m", "sim.cli", *cmd], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 2 and "the run cannot be set up" in r.stderr and "does not divide" in r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_validate_warns_about_an_unreachable_device_without_refusing(tmp_path):
    import socket

    with socket.socket() as s:  # a free port, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = yaml.safe_load((ROOT / "mission_configs" / "default_sso.yaml").read_text())
    data["device"] = {"backend": "analog", "url": f"tcp://127.0.0.1:{port}"}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    r = subprocess.run([sys.executable, "-m", "sim.cli", "validate", str(path)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert f"warning: device.url tcp://127.0.0.1:{port}: unreachable now" in r.stderr
