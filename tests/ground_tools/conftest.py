"""Shared fixtures: one short simulated run (0.25 day) for every ground-tools test."""

import shutil
from pathlib import Path

import pytest

from flight_sw.config import load_mission_config
from sim.runner import run_mission

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"
RUN_FILES = ("config.yaml", "run.json", "telemetry.bin", "truth.npz", "summary.json", "run.log")


@pytest.fixture(scope="session")
def short_run(tmp_path_factory) -> Path:
    """A 0.25-day default mission run folder. Do not modify it: use `run_copy`."""
    cfg = load_mission_config(DEFAULT)
    out = tmp_path_factory.mktemp("ground") / "run"
    run_mission(cfg, DEFAULT.read_text(), out, days=0.25, show_progress=False)
    return out


@pytest.fixture
def run_copy(short_run, tmp_path) -> Path:
    """A private copy of the short run's folder (no archive), safe to modify."""
    dst = tmp_path / "run"
    dst.mkdir()
    for name in RUN_FILES:
        shutil.copy2(short_run / name, dst / name)
    return dst


@pytest.fixture(scope="session")
def no_sample_run(tmp_path_factory) -> Path:
    """A short run of a mission without calibration sites: no labelled samples come down."""
    import yaml

    data = yaml.safe_load(DEFAULT.read_text())
    data["calibration_sites"] = []
    text = yaml.safe_dump(data, sort_keys=False)
    from flight_sw.config import parse_mission_config

    cfg = parse_mission_config(text)
    out = tmp_path_factory.mktemp("nosamples") / "run"
    run_mission(cfg, text, out, days=0.1, show_progress=False)
    return out
