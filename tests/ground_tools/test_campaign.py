"""`groundtools campaign`: runs in parallel on a 2-worker local Dask cluster, one table and one plot."""

import csv

from .conftest import DEFAULT
from .helpers import cli, cli_subprocess


def test_campaign_on_two_local_workers(tmp_path):
    out = tmp_path / "camp"
    r = cli_subprocess("campaign", DEFAULT, "--seeds", "2", "--days", "0.05", "--workers", "2", "--out", out,
                       timeout=180)
    assert r.returncode == 0, r.stderr
    assert "local Dask cluster of 2 worker processes" in r.stdout and "2 workers" in r.stdout
    assert "[1/2]" in r.stdout and "[2/2]" in r.stdout  # progress while it runs
    with open(out / "campaign.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert {row["seed"] for row in rows} == {"20261121", "20261122"}
    assert all(0 < float(row["min_soc"]) <= 1 and float(row["days"]) == 0.05 for row in rows)
    assert (out / "campaign.png").stat().st_size > 10_000
    for row in rows:
        assert (out / "runs" / row["run"] / "summary.json").is_file()


def test_campaign_bad_input(tmp_path, capsys):
    rc, _, err = cli(capsys, "campaign", DEFAULT, "--seeds", "0")
    assert rc == 2 and "--seeds must be >= 1" in err
    rc, _, err = cli(capsys, "campaign", tmp_path / "missing.yaml", "--out", tmp_path / "c")
    assert rc == 2 and "missing.yaml" in err
    rc, _, err = cli(capsys, "campaign", DEFAULT, "--days", "0.01", "--scheduler", "tcp://127.0.0.1:9",
                     "--connect-timeout", "1", "--out", tmp_path / "c")
    assert rc == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
