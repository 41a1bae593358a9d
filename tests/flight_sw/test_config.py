"""Mission config loading: every shipped config validates; each kind of bad input gets its message."""

from pathlib import Path

import pytest
import yaml

from flight_sw.config import ConfigError, load_mission_config, parse_mission_config
from flight_sw.config.loader import describe

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "mission_configs").glob("*.yaml"))
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_mission_config(path)
    assert cfg.tasks and cfg.ground_stations


def test_at_least_two_contrasting_missions_ship():
    from flight_sw.power.tle import parse_tle

    incs = set()
    for p in CONFIGS:
        orbit = load_mission_config(p).orbit
        incs.add(round(parse_tle(orbit.tle_line1, orbit.tle_line2).inclination_deg))
    assert {98, 52} <= incs


def _default() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def _with(mutate) -> str:
    data = _default()
    mutate(data)
    return yaml.safe_dump(data, sort_keys=False)


def _set(path, value):
    def mutate(d):
        *head, last = path
        for k in head:
            d = d[k]
        d[last] = value

    return mutate


def _delete(path):
    def mutate(d):
        *head, last = path
        for k in head:
            d = d[k]
        del d[last]

    return mutate


def _bad_checksum(d):
    line = d["orbit"]["tle_line1"]
    d["orbit"]["tle_line1"] = line[:-1] + str((int(line[-1]) + 1) % 10)


BAD = [
    ("wrong type", _with(_set(("power", "battery", "capacity_wh"), "forty")),
     ["power.battery.capacity_wh", "got 'forty'", "expected a number"]),
    ("negative battery capacity", _with(_set(("power", "battery", "capacity_wh"), -40.0)),
     ["power.battery.capacity_wh", "got -40.0", "expected > 0"]),
    ("missing key", _with(_delete(("power", "bus_base_load_w"))),
     ["power.bus_base_load_w", "missing required key"]),
    ("unknown key (typo)", _with(_set(("power", "battery", "capacity_whh"), 40.0)),
     ["power.battery.capacity_whh", "unknown key", "capacity_wh"]),
    ("malformed TLE line", _with(_set(("orbit", "tle_line2"), "2 60001  97.5930 319.3000")),
     ["orbit.tle", "line 2"]),
    ("TLE checksum", _with(_bad_checksum), ["orbit.tle", "checksum"]),
    ("buffers larger than RAM budget", _with(_set(("onboard", "ram_budget_bytes"), 4096)),
     ["onboard.ram_budget_bytes", "buffers need", "at most the budget of 4,096 bytes"]),
    ("not YAML", "mission: [unclosed\n  name: x\n", ["not valid YAML"]),
    ("not a mapping", "- just\n- a list\n", ["expected a YAML mapping"]),
    ("bad enum", _with(_set(("power", "solar_array", "attitude_mode"), "spinning")),
     ["power.solar_array.attitude_mode", "'spinning'", "one of 'sun_pointing', 'nadir_body_mounted'"]),
    ("floor above reserve", _with(_set(("power", "battery", "floor_soc"), 0.7)),
     ["power.battery.floor_soc", "below reserve_soc"]),
    ("offset beyond period", _with(lambda d: d["tasks"][1].update(offset_s=20)),
     ["tasks[1] (budget_update).offset_s", "below period_s"]),
    ("duplicate task names", _with(lambda d: d["tasks"][1].update(name="power_monitor")),
     ["duplicate task name 'power_monitor'"]),
    ("zero period", _with(lambda d: d["tasks"][0].update(period_s=0)),
     ["tasks[0].period_s", "got 0.0", "expected > 0"]),
    ("unknown mode", _with(lambda d: d["tasks"][0].update(modes=["SAFE", "SCIENCE"])),
     ["tasks[0].modes[1]", "'SCIENCE'"]),
    ("class mix not summing to 1", _with(lambda d: d["calibration_sites"][0]["class_mix"].update(water=0.5)),
     ["calibration_sites[0] (Railroad Valley).class_mix", "sum to"]),
    ("start time without zone", _with(_set(("mission", "start_utc"), "2026-03-01T00:00:00")),
     ["mission.start_utc", "expected a UTC time"]),
]


@pytest.mark.parametrize("name,text,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_config_messages(name, text, fragments):
    with pytest.raises(ConfigError) as info:
        parse_mission_config(text, "bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml:"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_error_names_the_line():
    text = DEFAULT.read_text().replace("capacity_wh: 40.0", "capacity_wh: -1")
    with pytest.raises(ConfigError) as info:
        parse_mission_config(text, "x.yaml")
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "capacity_wh: -1" in s)
    assert f"line {line}: power.battery.capacity_wh" in str(info.value)


def test_all_errors_reported_together():
    text = _with(lambda d: (d["power"]["battery"].update(capacity_wh=-1), d["mission"].update(seed="x")))
    with pytest.raises(ConfigError) as info:
        parse_mission_config(text, "x.yaml")
    assert len(info.value.errors) == 2


def test_missing_file_message(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_mission_config(tmp_path / "nope.yaml")


def test_config_is_frozen():
    cfg = load_mission_config(DEFAULT)
    with pytest.raises(AttributeError):
        cfg.power.battery.capacity_wh = 1.0  # type: ignore[misc]


def test_every_key_is_documented():
    lines = describe()
    assert len(lines) > 60
    assert all(" - " in line and not line.endswith(" - ") for line in lines), [x for x in lines if x.endswith(" - ")]


def test_yaml12_float_forms_accepted():
    text = DEFAULT.read_text().replace("rate_bps: 1.0e6", "rate_bps: 2e6")
    assert parse_mission_config(text).downlink.rate_bps == 2e6
