"""Limits: the YAML format, validation messages, per-mode bounds, disabled ranges, `groundtools limits`."""

import numpy as np
import pytest

from flight_sw.config import load_mission_config
from flight_sw.config.schema import MODES
from ground_tools.limits import DEFAULT_LIMITS, LimitsError, check, load_limits

from .conftest import DEFAULT
from .helpers import cli

SAFE, NOMINAL = MODES.index("SAFE"), MODES.index("NOMINAL")


@pytest.fixture(scope="module")
def cfg():
    return load_mission_config(DEFAULT)


def _write(tmp_path, text):
    p = tmp_path / "limits.yaml"
    p.write_text(text)
    return p


def test_default_limits_take_thresholds_from_the_mission_config(cfg):
    ls = load_limits(DEFAULT_LIMITS, cfg)
    soc = next(lim for lim in ls.limits if lim.parameter == "soc")
    assert soc.levels["warning"].low == cfg.power.battery.floor_soc
    assert soc.levels["alarm"].low == cfg.power.battery.safe_mode_soc
    assert soc.bounds("warning", "SAFE") is None and soc.bounds("alarm", "SAFE").low == cfg.power.battery.safe_mode_soc
    backlog = next(lim for lim in ls.limits if lim.parameter == "downlink_backlog")
    assert backlog.levels["warning"].high == pytest.approx(0.5 * cfg.downlink.queue_packets)


def _hk(soc, mode=None, step=60.0):
    soc = np.asarray(soc, dtype=float)
    return {"t_s": np.arange(len(soc)) * step, "soc": soc,
            "mode": np.full(len(soc), NOMINAL) if mode is None else np.asarray(mode)}


def test_excursions_are_grouped_with_level_worst_value_and_mode(cfg, tmp_path):
    ls = load_limits(_write(tmp_path, """
version: 1
limits:
  soc:
    warning: {low: 0.5}
    alarm: {low: 0.3}
    per_mode:
      SAFE: {warning: null}
"""), cfg)
    soc = [0.8, 0.45, 0.4, 0.25, 0.2, 0.45, 0.8, 0.4, 0.4, float("nan"), 0.9]
    mode = [NOMINAL] * 7 + [SAFE, SAFE, NOMINAL, NOMINAL]
    v = check(ls, _hk(soc, mode))
    assert [(x.level, x.start_s, x.end_s, x.samples) for x in v] == [
        ("warning", 60.0, 120.0, 2), ("alarm", 180.0, 240.0, 2), ("warning", 300.0, 300.0, 1)]
    assert v[0].worst == pytest.approx(0.4) and v[1].worst == pytest.approx(0.2) and v[1].side == "low"
    assert v[1].bound == 0.3 and v[1].mode == "NOMINAL"  # SAFE samples at 0.4: no warning there


def test_a_disabled_range_suppresses_violations(cfg, tmp_path):
    ls = load_limits(_write(tmp_path, """
version: 1
limits:
  soc: {warning: {low: 0.5}}
disabled:
  - {parameter: soc, from_s: 0, to_s: 150, reason: commissioning}
  - {parameter: "*", from_utc: "2026-03-01T00:05:00Z", to_utc: "2026-03-01T00:06:00Z"}
"""), cfg)
    v = check(ls, _hk([0.4] * 8))
    assert [(x.start_s, x.end_s) for x in v] == [(180.0, 240.0), (420.0, 420.0)]
    assert ls.disabled[1].from_s == 300.0


@pytest.mark.parametrize("text, expected", [
    ("version: 1\nlimits:\n  soc: {warning: {low: abc}}\n",
     "limits.soc.warning.low: got 'abc', expected a number, a config key path"),
    ("version: 1\nlimits:\n  soc: {warning: {low: power.battery.nope}}\n", "there is no config key 'power.battery.nope'"),
    ("version: 1\nlimits:\n  sco: {warning: {low: 0.5}}\n", "limits.sco: got 'sco', expected a housekeeping parameter"),
    ("version: 1\nlimits:\n  soc: {warning: {lo: 0.5}}\n", "limits.soc.warning.lo: got 'lo', expected one of the keys low, high"),
    ("version: 1\nlimits:\n  soc: {warning: {low: 0.9, high: 0.1}}\n", "limits.soc.warning: got"),
    ("version: 1\nlimits:\n  soc: {warning: {low: 0.3}, alarm: {low: 0.5}}\n", "limits.soc.alarm.low: got 0.5, expected <= warning.low"),
    ("version: 1\nlimits:\n  soc: {warning: {low: 0.3}, per_mode: {SAF: null}}\n", "expected a mode: SAFE, NOMINAL, TRAINING"),
    ("version: 2\nlimits:\n  soc: {warning: {low: 0.3}}\n", "version: got 2, expected 1"),
    ("version: 1\nlimits:\n  soc: {warning: {low: 0.3}}\ndisabled:\n  - {parameter: soc, from_s: 10}\n",
     "disabled[0]: got"),
    ("version: 1\nlimits: [\n", "not valid YAML"),
])
def test_validation_errors_name_file_key_and_expectation(cfg, tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(LimitsError) as exc:
        load_limits(path, cfg)
    assert str(path) in str(exc.value) and expected in str(exc.value)


def test_limits_command(short_run, tmp_path, capsys):
    rc, out, err = cli(capsys, "limits", short_run, "--db", tmp_path / "a.sqlite")
    assert rc == 0, err
    assert "housekeeping samples checked" in out
    strict = _write(tmp_path, "version: 1\nlimits:\n  soc: {warning: {low: 0.99}, alarm: {low: 0.7}}\n")
    rc, out, err = cli(capsys, "limits", short_run, "--db", tmp_path / "a.sqlite", "--limits", strict)
    assert rc == 0 and "violations" in out and "soc" in out and "< 0.99" in out and "TRAINING" in out
    bad = _write(tmp_path, "version: 1\nlimits:\n  soc: {warning: {low: x}}\n")
    rc, _, err = cli(capsys, "limits", short_run, "--db", tmp_path / "a.sqlite", "--limits", bad)
    assert rc == 2 and "limits.soc.warning.low: got 'x'" in err
    rc, _, err = cli(capsys, "limits", short_run, "--limits", tmp_path / "missing.yaml")
    assert rc == 2 and "missing.yaml: 1 error(s)" in err and "file not found" in err
