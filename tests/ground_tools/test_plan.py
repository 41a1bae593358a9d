"""`groundtools plan eclipses`: the eclipse table, per-orbit energy budget and year plot."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from flight_sw.config import load_mission_config
from ground_tools.plan import CSV_COLUMNS, eclipse_plan
from sim.power_truth import SolarArrayTruth

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"
ISS = ROOT / "mission_configs" / "iss_like.yaml"


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ground_tools.cli", "plan", "eclipses", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture(scope="module")
def default_plan(tmp_path_factory):
    """One CLI run with the year plot (the only one: it costs ~2 s)."""
    out = tmp_path_factory.mktemp("plan")
    r = _cli(DEFAULT, "--days", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    with open(out / "eclipse_plan.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return r, out, rows


def test_csv_has_every_column_and_a_row_per_orbit(default_plan):
    _, _, rows = default_plan
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    for unit_suffix in ("umbra_duration_min", "penumbra_s", "beta_deg", "optional_budget_j"):
        assert unit_suffix in CSV_COLUMNS
    assert 14 <= len(rows) <= 16  # ~95.6 min orbits, complete ones only
    assert [int(r["orbit"]) for r in rows] == list(range(len(rows)))


def test_default_sso_eclipses_and_budget_are_plausible(default_plan):
    _, _, rows = default_plan
    margin_j = load_mission_config(DEFAULT).power.budget.margin_j
    for r in rows:
        assert r["umbra_entry_utc"].endswith("Z") and r["umbra_exit_utc"] > r["umbra_entry_utc"]
        assert 33.0 <= float(r["umbra_duration_min"]) <= 36.0
        assert 33.0 <= float(r["umbra_in_orbit_min"]) <= 36.0
        assert 5.0 < float(r["penumbra_s"]) < 60.0
        assert 0.6 < float(r["sunlit_fraction"]) < 0.7
        assert float(r["optional_budget_j"]) >= 0.0
        # Sun-pointing: the onboard model and the truth agree on generation.
        assert float(r["onboard_generation_j"]) == pytest.approx(float(r["array_energy_j"]), rel=1e-3)
        assert float(r["essential_energy_j"]) > 0.0
        # Steady state at reserve SoC: budget = generation - essential - margin.
        expected = float(r["onboard_generation_j"]) - float(r["essential_energy_j"]) - margin_j
        assert float(r["optional_budget_j"]) == pytest.approx(max(0.0, expected), abs=0.2)


def test_printout_and_year_plot(default_plan):
    r, out, rows = default_plan
    assert "worst orbit (min optional budget)" in r.stdout
    assert "umbra duration over" in r.stdout
    assert "umbra in" in r.stdout and "[kJ]" in r.stdout
    png = out / "eclipse_year.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_printout_is_truncated_but_csv_is_complete(tmp_path):
    r = _cli(DEFAULT, "--days", "3", "--out", tmp_path, "--no-year-plot")
    assert r.returncode == 0, r.stderr
    assert "more orbits (all 45 in the CSV)" in r.stdout
    assert len(r.stdout.splitlines()) < 60
    assert not (tmp_path / "eclipse_year.png").exists()
    with open(tmp_path / "eclipse_plan.csv", newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 45


def test_bad_config_exits_2_without_traceback(tmp_path):
    r = _cli(tmp_path / "missing.yaml", "--out", tmp_path / "o")
    assert r.returncode == 2 and "file not found" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.read_text().replace("capacity_wh: 40.0", "capacity_wh: -3"))
    r = _cli(bad, "--out", tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "power.battery.capacity_wh" in r.stderr
    assert not (tmp_path / "o").exists()


def test_bad_days_exits_2(tmp_path):
    r = _cli(DEFAULT, "--days", "0", "--out", tmp_path / "o")
    assert r.returncode == 2 and "--days" in r.stderr and "Traceback" not in r.stderr


def test_nadir_panel_energy_integrates_incidence():
    """ISS-like with a body-mounted zenith panel: cos(incidence) < 1 over the sunlit arc,
    the onboard budget tracks the truth geometry, and the eclipse drifting across the node
    still gives every orbit its eclipse."""
    import dataclasses

    cfg = load_mission_config(ISS)
    arr = dataclasses.replace(cfg.power.solar_array, attitude_mode="nadir_body_mounted", area_m2=0.12)
    cfg = dataclasses.replace(cfg, power=dataclasses.replace(cfg.power, solar_array=arr))
    rows = eclipse_plan(cfg, 1.0)
    peak_w = SolarArrayTruth(cfg.power.solar_array).peak_w
    assert 14 <= len(rows) <= 17
    for r in rows:
        sunlit_s = r.sunlit_fraction * r.duration_min * 60.0
        assert 0.2 * peak_w * sunlit_s < r.array_energy_j < 0.8 * peak_w * sunlit_s
        assert r.umbra_entry_utc and abs(r.umbra_duration_min - r.umbra_in_orbit_min) < 1.0
        assert r.optional_budget_j >= 0.0
        # The onboard geometry integral agrees with the truth array energy to 0.5 %.
        assert abs(r.onboard_generation_j - r.array_energy_j) < 5e-3 * r.array_energy_j
