"""Every subcommand of both command lines with bad paths, bad values and a closed output
pipe ends with a message and exit status 2, never a traceback (sim/bench/cli_cases.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim.bench.cli_cases import CASES, judge, make_places, run_case

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    run = tmp / "run"
    r = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(DEFAULT), "--days", "0.02", "--out", str(run),
                        "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return make_places(tmp, run, DEFAULT)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_ends_with_a_message_and_exit_2(case, places):
    rc, stderr = run_case(case, places, ROOT)
    problem = judge(rc, stderr)
    assert problem is None, problem


def test_every_subcommand_is_covered():
    """A new subcommand needs its bad-input cases here."""
    from ground_tools.cli import build_parser

    covered = {(c.tool, c.args[0]) for c in CASES}
    ground = build_parser()._subparsers._group_actions[0].choices
    assert {("groundtools", name) for name in ground} <= covered
    flight = {"validate", "run", "bench", "config-doc", "hil", "serve"}
    assert {("flightsim", name) for name in flight} <= covered
    assert ("flightsw", "run") in covered


def test_the_output_checks_refuse_system_folders_and_the_home_folder(tmp_path):
    from sim.paths import output_file_problem, output_folder_problem

    for bad in ("/", "/proc/x", "/sys", "/dev/shm/x", "/usr", str(Path.home())):
        assert output_folder_problem(Path(bad)), bad
    assert output_folder_problem(tmp_path / "new" / "deeper") is None
    plain = tmp_path / "f.txt"
    plain.write_text("x")
    assert "not a folder" in output_folder_problem(plain)
    assert "not a folder" in output_folder_problem(plain / "sub")
    assert output_file_problem(tmp_path / "out.json") is None
    assert "is a folder" in output_file_problem(tmp_path)
