"""TLE parsing: every rejection names line, field, columns, bad text and expectation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight_sw.power import tle as tle_mod
from flight_sw.power.tle import TleElements, TleError, parse_tle, tle_age_days

SSO = (
    "1 60001U 26001A   26060.00000000  .00000000  00000-0  21000-4 0  9997",
    "2 60001  97.5930 319.3000 0001000  90.0000 270.0000 15.05490646    18",
)
ISS_LIKE = (
    "1 60002U 26002A   26060.00000000  .00000000  00000-0  31000-4 0  9990",
    "2 60002  51.6400 120.0000 0004000  60.0000 300.0000 15.48880433    17",
)
# The worked example of the format (CelesTrak / Wikipedia), with negative fields.
ISS_2008 = (
    "1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  2927",
    "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.72125391563537",
)


def _checksum(body: str) -> str:
    return str(sum(int(c) if c.isdigit() else (c == "-") for c in body[:68]) % 10)


def _put(line: str, col: int, text: str, fix_checksum: bool = True) -> str:
    """Overwrite 1-based `col`.. with `text`, then (by default) repair the checksum."""
    s = line[: col - 1] + text + line[col - 1 + len(text) :]
    return s[:68] + _checksum(s) if fix_checksum else s


def _bad(which: int, col: int, text: str, fix: bool = True) -> tuple[str, str]:
    l1, l2 = SSO
    return (_put(l1, col, text, fix), l2) if which == 1 else (l1, _put(l2, col, text, fix))


# (id, (line1, line2), fragments the message must contain)
# fmt: off
BAD = [
    ("short-1", (SSO[0][:-1], SSO[1]),
     ["TLE line 1", "whole line (columns 1-69)", "got 68 characters", "expected exactly 69"]),
    ("newline-2", (SSO[0], SSO[1] + "\n"), ["TLE line 2", "got 70 characters", "no trailing"]),
    ("non-ascii", (SSO[0], _put(SSO[1], 10, "°", fix_checksum=False)),
     ["TLE line 2", "printable ASCII"]),
    ("line-number-1", _bad(1, 1, "2"), ["TLE line 1", "line number (column 1)", "got '2'", "expected '1'"]),
    ("line-number-2", _bad(2, 1, "1"), ["TLE line 2", "line number (column 1)", "got '1'", "expected '2'"]),
    ("checksum-1", (SSO[0][:68] + "8", SSO[1]),
     ["TLE line 1", "checksum (column 69)", "got '8'", "expected 7", "modulo-10"]),
    ("checksum-2", (SSO[0], SSO[1][:68] + "0"),
     ["TLE line 2", "checksum (column 69)", "got '0'", "expected 8"]),
    ("checksum-not-digit", (SSO[0][:68] + "x", SSO[1]), ["checksum (column 69)", "got 'x'", "a digit"]),
    ("satnum-mismatch", _bad(2, 3, "60009"),
     ["TLE line 2", "satellite number (columns 3-7)", "got '60009'", "same number as line 1", "'60001'"]),
    ("satnum-text", _bad(1, 3, "6x001"), ["TLE line 1", "satellite number (columns 3-7)", "got '6x001'"]),
    ("classification", _bad(1, 8, "X"), ["TLE line 1", "classification (column 8)", "got 'X'", "'U', 'C' or 'S'"]),
    ("separator-1", _bad(1, 9, "7"), ["TLE line 1", "separator (column 9)", "got '7'", "blank"]),
    ("separator-2", _bad(2, 17, "1"), ["TLE line 2", "separator (column 17)", "got '1'", "blank"]),
    ("epoch-year", _bad(1, 19, "2x"), ["TLE line 1", "epoch year (columns 19-20)", "got '2x'", "two digits"]),
    ("epoch-day-text", _bad(1, 21, "06a"),
     ["TLE line 1", "epoch day of year (columns 21-32)", "got '06a.00000000'", "day of year"]),
    ("epoch-day-zero", _bad(1, 21, "000.50000000"),
     ["epoch day of year (columns 21-32)", "got '000.50000000'", "a day in [1, 366) for 2026"]),
    ("epoch-day-367", _bad(1, 21, "367"), ["epoch day of year", "got '367.00000000'", "[1, 366)"]),
    ("ndot", _bad(1, 34, " .000x0000"),
     ["TLE line 1", "first derivative of mean motion (columns 34-43)", "got ' .000x0000'"]),
    ("nddot", _bad(1, 45, " 0000000"),
     ["TLE line 1", "second derivative of mean motion (columns 45-52)", "got ' 0000000'", "±NNNNN±E"]),
    ("bstar", _bad(1, 54, " 21000 4"),
     ["TLE line 1", "B* drag term (columns 54-61)", "got ' 21000 4'", "exponent sign"]),
    ("ephemeris-type", _bad(1, 63, "2"), ["TLE line 1", "ephemeris type (column 63)", "got '2'", "'0' or blank"]),
    ("element-set", _bad(1, 65, " 9x9"), ["TLE line 1", "element set number (columns 65-68)", "got ' 9x9'"]),
    ("inclination-range", _bad(2, 9, "197.5930"),
     ["TLE line 2", "inclination (columns 9-16)", "got '197.5930'", "degrees in [0, 180]"]),
    ("inclination-text", _bad(2, 9, " 97.59e0"), ["inclination (columns 9-16)", "got ' 97.59e0'", "degrees like"]),
    ("inclination-nan", _bad(2, 9, "     nan"), ["inclination (columns 9-16)", "got '     nan'"]),
    ("raan", _bad(2, 18, "360.0000"),
     ["TLE line 2", "right ascension of ascending node (columns 18-25)", "got '360.0000'", "[0, 360)"]),
    ("eccentricity", _bad(2, 27, ".001000"),
     ["TLE line 2", "eccentricity (columns 27-33)", "got '.001000'", "implied leading decimal point"]),
    ("arg-perigee", _bad(2, 35, " -1.0000"),
     ["TLE line 2", "argument of perigee (columns 35-42)", "got ' -1.0000'", "[0, 360)"]),
    ("mean-anomaly", _bad(2, 44, "27O.0000"), ["TLE line 2", "mean anomaly (columns 44-51)", "got '27O.0000'"]),
    ("mean-motion-zero", _bad(2, 53, " 0.00000000"),
     ["TLE line 2", "mean motion (columns 53-63)", "got ' 0.00000000'", "rev/day in (0, 17)"]),
    ("mean-motion-high", _bad(2, 53, "17.50000000"), ["mean motion (columns 53-63)", "got '17.50000000'"]),
    ("mean-motion-text", _bad(2, 53, "15.0549O646"), ["mean motion (columns 53-63)", "got '15.0549O646'"]),
    ("perigee-low", (SSO[0], _put(_put(SSO[1], 27, "0400000"), 53, "16.00000000")),
     ["TLE line 2", "mean motion and eccentricity (columns 53-63 and 27-33)", "'16.00000000'",
      "'0400000'", "perigee altitude of", "more than 100 km above"]),
    ("rev-number", _bad(2, 64, "  1x8"), ["TLE line 2", "revolution number (columns 64-68)", "got '  1x8'"]),
]
# fmt: on


@pytest.mark.parametrize("lines, fragments", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_tle_is_rejected_with_a_precise_message(lines, fragments):
    with pytest.raises(TleError) as info:
        parse_tle(*lines)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_tle_error_is_a_value_error():
    assert issubclass(TleError, ValueError)


def test_sgp4_refusal_is_reported(monkeypatch):
    class FakeSat:
        error = 4

    class FakeSatrec:
        @staticmethod
        def twoline2rv(l1, l2, model):
            return FakeSat()

    monkeypatch.setattr(tle_mod, "Satrec", FakeSatrec)
    with pytest.raises(
        TleError, match=r"SGP4 initialisation failed with error 4 \(negative semi-latus"
    ):
        parse_tle(*SSO)


def test_mission_tles_parse():
    t = parse_tle(*SSO)
    assert isinstance(t, TleElements)
    assert t.satnum == 60001
    assert t.epoch_utc == datetime(2026, 3, 1, tzinfo=UTC)
    assert (t.inclination_deg, t.raan_deg, t.eccentricity) == (97.593, 319.3, 0.0001)
    assert (t.arg_perigee_deg, t.mean_anomaly_deg) == (90.0, 270.0)
    assert t.mean_motion_rev_per_day == 15.05490646
    assert t.bstar_per_earth_radius == pytest.approx(2.1e-5, rel=1e-12)
    assert (t.line1, t.line2) == SSO
    i = parse_tle(*ISS_LIKE)
    assert i.satnum == 60002 and i.eccentricity == 0.0004


def test_negative_fields_and_fractional_epoch():
    t = parse_tle(*ISS_2008)
    assert t.bstar_per_earth_radius == pytest.approx(-1.1606e-5, rel=1e-12)
    expected = datetime(2008, 1, 1, tzinfo=UTC) + timedelta(days=263.51782528)
    assert abs((t.epoch_utc - expected).total_seconds()) < 1e-5
    assert t.epoch_utc.tzinfo is not None


def test_alpha5_catalogue_number():
    l1 = _put(SSO[0], 3, "A0001")
    l2 = _put(SSO[1], 3, "A0001")
    assert parse_tle(l1, l2).satnum == 100001
    l1 = _put(SSO[0], 3, "Z9999")
    l2 = _put(SSO[1], 3, "Z9999")
    assert parse_tle(l1, l2).satnum == 339999


def test_tle_age_days():
    t = parse_tle(*SSO)
    assert tle_age_days(t, datetime(2026, 3, 3, 12, tzinfo=UTC)) == 2.5
    assert tle_age_days(t, datetime(2026, 2, 28, tzinfo=UTC)) == -1.0
    with pytest.raises(ValueError, match="timezone-aware"):
        tle_age_days(t, datetime(2026, 3, 3))


_PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)


@settings(max_examples=300, deadline=None)
@given(which=st.integers(1, 2), col=st.integers(1, 69), ch=_PRINTABLE)
def test_any_single_character_corruption_is_caught_or_harmless(which, col, ch):
    """One wrong character either raises TleError or still parses to a valid set."""
    lines = list(SSO)
    lines[which - 1] = _put(lines[which - 1], col, ch, fix_checksum=False)
    try:
        t = parse_tle(*lines)
    except TleError as exc:
        assert "TLE line" in str(exc)
    else:  # e.g. '0' -> ' ' in a numeric field keeps both the value and the checksum
        assert 0.0 <= t.eccentricity < 1.0 and 0.0 <= t.inclination_deg <= 180.0


@settings(max_examples=100, deadline=None)
@given(
    inc=st.floats(0.0, 180.0),
    raan=st.floats(0.0, 359.9999),
    ecc=st.integers(0, 200000),
    mm=st.floats(11.0, 16.2),
)
def test_formatted_elements_round_trip(inc, raan, ecc, mm):
    l1 = SSO[0]
    l2 = f"2 60001 {inc:8.4f} {raan:8.4f} {ecc:07d}  90.0000 270.0000 {mm:11.8f}    1"
    l2 = l2 + _checksum(l2)
    n = mm * 2 * 3.141592653589793 / 86400
    perigee_alt = (398600.8 / n**2) ** (1 / 3) * (1 - ecc / 1e7) - 6378.135
    if perigee_alt <= 100.0:
        with pytest.raises(TleError, match="perigee"):
            parse_tle(l1, l2)
        return
    t = parse_tle(l1, l2)
    assert t.inclination_deg == float(f"{inc:8.4f}")
    assert t.raan_deg == float(f"{raan:8.4f}")
    assert t.eccentricity == float(f"0.{ecc:07d}")
    assert t.mean_motion_rev_per_day == float(f"{mm:11.8f}")
