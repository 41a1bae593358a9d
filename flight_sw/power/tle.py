"""Two-line element sets: strict parsing and validation before anything propagates them.

Why strict: the `sgp4` package accepts TLEs with bad checksums silently and turns
many typos into plausible-looking numbers (REFERENCES.md, "Gotchas"). An uplinked
TLE that is corrupted or mistyped would then steer the onboard eclipse and power
predictions without any alarm. So every field is checked here against the
fixed-column format (CelesTrak, "FAQs: Two-Line Element Set Format"; Vallado et al.
2006, "Revisiting Spacetrack Report #3", AIAA 2006-6753) and every error names the
line, the field, its 1-based columns, the bad text and what was expected.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sgp4.api import WGS72, Satrec

__all__ = ["TleElements", "TleError", "parse_tle", "tle_age_days"]

#: Length of a TLE line including the checksum digit (no trailing whitespace).
TLE_LINE_LENGTH = 69
#: WGS-72 constants, the gravity model TLEs are fitted with (Vallado 2006, sec. III).
MU_EARTH_KM3_S2 = 398600.8
EARTH_RADIUS_KM = 6378.135
#: Lowest perigee altitude accepted [km]. Below ~100 km an object re-enters within
#: hours; SGP4 itself flags perigees under the surface (error 1/6) only at epoch.
MIN_PERIGEE_ALT_KM = 100.0
#: Mean motion bound [rev/day]: 17 rev/day is already a sub-surface orbit (a < R_E).
MAX_MEAN_MOTION_REV_PER_DAY = 17.0

# SGP4 initialisation error codes (sgp4 package, `SGP4_ERRORS`).
_SGP4_ERRORS = {
    1: "mean eccentricity out of range or mean semi-major axis below 0.95 Earth radii",
    2: "negative mean motion",
    3: "perturbed eccentricity out of range",
    4: "negative semi-latus rectum",
    5: "epoch elements are sub-orbital",
    6: "satellite has decayed",
}


_DECIMAL = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*")


class TleError(ValueError):
    """A TLE that must not be used; the message says where and why."""


@dataclass(frozen=True)
class TleElements:
    """Validated mean elements of one TLE (angles in degrees, as in the TLE).

    `line1`/`line2` are kept verbatim because the propagator initialises from them,
    so what is propagated is exactly what was validated.
    """

    satnum: int
    epoch_utc: datetime
    inclination_deg: float
    raan_deg: float
    eccentricity: float
    arg_perigee_deg: float
    mean_anomaly_deg: float
    mean_motion_rev_per_day: float
    bstar_per_earth_radius: float
    line1: str
    line2: str


def _fail(line: int, field: str, cols: tuple[int, int], text: str, expected: str) -> TleError:
    where = f"column {cols[0]}" if cols[0] == cols[1] else f"columns {cols[0]}-{cols[1]}"
    return TleError(f"TLE line {line}, {field} ({where}): got {text!r}, expected {expected}")


def _cut(s: str, cols: tuple[int, int]) -> str:
    return s[cols[0] - 1 : cols[1]]


def _checksum(s: str) -> int:
    """Modulo-10 sum of the first 68 characters: digits count their value, '-' counts 1."""
    total = 0
    for ch in s[:68]:
        if ch.isdigit():
            total += ord(ch) - 48
        elif ch == "-":
            total += 1
    return total % 10


def _float(line: int, s: str, field: str, cols: tuple[int, int], expected: str) -> float:
    text = _cut(s, cols)
    # Plain decimals only: Python's float() would also take '1e2', '1_0' or 'nan'.
    if _DECIMAL.fullmatch(text) is None:
        raise _fail(line, field, cols, text, expected)
    return float(text)


def _implied_decimal(line: int, s: str, field: str, cols: tuple[int, int]) -> float:
    """Parse the '±NNNNN±E' form (value = ±0.NNNNN x 10^±E), e.g. ' 21000-4' = 2.1e-5."""
    text = _cut(s, cols)
    expected = "the form '±NNNNN±E' (sign or blank, 5 digits, exponent sign, 1 digit)"
    body = text.strip()
    sign = 1.0
    if body.startswith(("+", "-")):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if len(body) < 3 or body[-2] not in "+-" or not body[-1].isdigit() or not body[:-2].isdigit():
        raise _fail(line, field, cols, text, expected)
    mantissa = float("0." + body[:-2])
    exponent = int(body[-2:])
    return sign * mantissa * 10.0**exponent


def _satnum(line: int, s: str) -> int:
    """Catalogue number; accepts Alpha-5 (letter A-Z without I/O, then 4 digits)."""
    cols = (3, 7)
    text = _cut(s, cols)
    expected = "a catalogue number of 5 digits (leading blanks allowed) or Alpha-5"
    head, tail = text[0], text[1:]
    if text.strip().isdigit():
        return int(text)
    if head.isalpha() and head.isupper() and head not in "IO" and tail.isdigit():
        value = ord(head) - ord("A") + 10
        value -= (head > "I") + (head > "O")
        return value * 10000 + int(tail)
    raise _fail(line, "satellite number", cols, text, expected)


def _check_blank(line: int, s: str, col: int, field: str) -> None:
    if s[col - 1] != " ":
        raise _fail(line, field, (col, col), s[col - 1], "a blank separator")


def _check_frame(line: int, s: str) -> None:
    if not isinstance(s, str):
        raise TleError(f"TLE line {line}: expected a str, got {type(s).__name__}")
    if len(s) != TLE_LINE_LENGTH:
        raise TleError(
            f"TLE line {line}, whole line (columns 1-{TLE_LINE_LENGTH}): got {len(s)} characters "
            f"{s!r}, expected exactly {TLE_LINE_LENGTH} (no trailing blanks or newline)"
        )
    if not s.isascii() or not s.isprintable():
        raise TleError(f"TLE line {line}: got {s!r}, expected printable ASCII only")
    if s[0] != str(line):
        raise _fail(line, "line number", (1, 1), s[0], f"'{line}'")
    _check_blank(line, s, 2, "separator")
    digit = s[68]
    if not digit.isdigit():
        raise _fail(line, "checksum", (69, 69), digit, "a digit")
    want = _checksum(s)
    if int(digit) != want:
        raise _fail(
            line,
            "checksum",
            (69, 69),
            digit,
            f"{want} (modulo-10 sum of the digits, '-' counting 1, of columns 1-68)",
        )


def parse_tle(line1: str, line2: str) -> TleElements:
    """Parse and validate a TLE; raise `TleError` naming line, field, columns and text.

    Checks: exact 69-character lines, line numbers, matching catalogue numbers,
    modulo-10 checksums, every numeric field, physically possible elements
    (0 <= i <= 180 deg, 0 <= e < 1, 0 < n < 17 rev/day, perigee more than 100 km
    above the WGS-72 equatorial radius) and a clean SGP4 initialisation.
    """
    _check_frame(1, line1)
    _check_frame(2, line2)

    sat1 = _satnum(1, line1)
    sat2 = _satnum(2, line2)
    if sat1 != sat2:
        raise _fail(
            2,
            "satellite number",
            (3, 7),
            _cut(line2, (3, 7)),
            f"the same number as line 1 ({_cut(line1, (3, 7))!r})",
        )
    if line1[7] not in "UCS ":
        raise _fail(1, "classification", (8, 8), line1[7], "'U', 'C' or 'S'")
    for col in (9, 18, 33, 44, 53, 62, 64):
        _check_blank(1, line1, col, "separator")
    for col in (8, 17, 26, 34, 43, 52):
        _check_blank(2, line2, col, "separator")

    # --- epoch (line 1, columns 19-32): two-digit year, then day of year with fraction.
    year_text = _cut(line1, (19, 20))
    if not year_text.isdigit():
        raise _fail(
            1, "epoch year", (19, 20), year_text, "two digits (57-99 -> 19xx, 00-56 -> 20xx)"
        )
    yy = int(year_text)
    year = 1900 + yy if yy >= 57 else 2000 + yy
    day = _float(1, line1, "epoch day of year", (21, 32), "a day of year like '060.12345678'")
    days_in_year = 366 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 365
    if not 1.0 <= day < days_in_year + 1.0:
        raise _fail(
            1,
            "epoch day of year",
            (21, 32),
            _cut(line1, (21, 32)),
            f"a day in [1, {days_in_year + 1}) for {year}",
        )
    epoch = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=day - 1.0)

    _float(
        1, line1, "first derivative of mean motion", (34, 43), "a signed decimal like ' .00001234'"
    )
    _implied_decimal(1, line1, "second derivative of mean motion", (45, 52))
    bstar = _implied_decimal(1, line1, "B* drag term", (54, 61))
    eph = line1[62]
    if eph not in "0 ":
        raise _fail(1, "ephemeris type", (63, 63), eph, "'0' or blank (SGP4 elements)")
    elset = _cut(line1, (65, 68))
    if not elset.strip().isdigit():
        raise _fail(1, "element set number", (65, 68), elset, "up to 4 digits")

    # --- line 2 angles and shape.
    inc = _float(2, line2, "inclination", (9, 16), "degrees like ' 97.5930'")
    if not 0.0 <= inc <= 180.0:
        raise _fail(2, "inclination", (9, 16), _cut(line2, (9, 16)), "degrees in [0, 180]")
    raan = _float(
        2, line2, "right ascension of ascending node", (18, 25), "degrees like '319.3000'"
    )
    if not 0.0 <= raan < 360.0:
        raise _fail(
            2,
            "right ascension of ascending node",
            (18, 25),
            _cut(line2, (18, 25)),
            "degrees in [0, 360)",
        )
    ecc_text = _cut(line2, (27, 33))
    if not ecc_text.isdigit():
        raise _fail(
            2,
            "eccentricity",
            (27, 33),
            ecc_text,
            "7 digits with an implied leading decimal point (e.g. '0001000' = 0.0001)",
        )
    ecc = float("0." + ecc_text)  # 0 <= e < 1 by construction
    argp = _float(2, line2, "argument of perigee", (35, 42), "degrees like ' 90.0000'")
    if not 0.0 <= argp < 360.0:
        raise _fail(
            2, "argument of perigee", (35, 42), _cut(line2, (35, 42)), "degrees in [0, 360)"
        )
    ma = _float(2, line2, "mean anomaly", (44, 51), "degrees like '270.0000'")
    if not 0.0 <= ma < 360.0:
        raise _fail(2, "mean anomaly", (44, 51), _cut(line2, (44, 51)), "degrees in [0, 360)")
    mm = _float(2, line2, "mean motion", (53, 63), "rev/day like '15.05490646'")
    if not 0.0 < mm < MAX_MEAN_MOTION_REV_PER_DAY:
        raise _fail(
            2,
            "mean motion",
            (53, 63),
            _cut(line2, (53, 63)),
            f"rev/day in (0, {MAX_MEAN_MOTION_REV_PER_DAY:g})",
        )
    rev_text = _cut(line2, (64, 68))
    if not rev_text.strip().isdigit():
        raise _fail(2, "revolution number", (64, 68), rev_text, "up to 5 digits")

    # Perigee above the atmosphere: Kepler's third law from the mean motion.
    n_rad_s = mm * 2.0 * math.pi / 86400.0
    a_km = (MU_EARTH_KM3_S2 / n_rad_s**2) ** (1.0 / 3.0)
    perigee_alt_km = a_km * (1.0 - ecc) - EARTH_RADIUS_KM
    if perigee_alt_km <= MIN_PERIGEE_ALT_KM:
        raise TleError(
            f"TLE line 2, mean motion and eccentricity (columns 53-63 and 27-33): got "
            f"{_cut(line2, (53, 63))!r} and {ecc_text!r}, giving a perigee altitude of "
            f"{perigee_alt_km:.0f} km; expected a perigee more than {MIN_PERIGEE_ALT_KM:g} km "
            f"above the Earth's surface"
        )

    # --- finally SGP4 itself must accept the set and propagate its epoch.
    try:
        sat = Satrec.twoline2rv(line1, line2, WGS72)
        err = sat.error or sat.sgp4_tsince(0.0)[0]
    except Exception as exc:  # the pure-Python fallback raises on some malformed fields
        raise TleError(f"TLE lines 1-2: SGP4 refused the element set: {exc}") from None
    if err:
        raise TleError(
            f"TLE lines 1-2: SGP4 initialisation failed with error {err} "
            f"({_SGP4_ERRORS.get(err, 'unknown error')}); expected error 0"
        )

    return TleElements(
        satnum=sat1,
        epoch_utc=epoch,
        inclination_deg=inc,
        raan_deg=raan,
        eccentricity=ecc,
        arg_perigee_deg=argp,
        mean_anomaly_deg=ma,
        mean_motion_rev_per_day=mm,
        bstar_per_earth_radius=bstar,
        line1=line1,
        line2=line2,
    )


def tle_age_days(tle: TleElements, t_utc: datetime) -> float:
    """Days from the TLE epoch to `t_utc` (negative before the epoch).

    SGP4 error grows with age (roughly 1-3 km/day in LEO, Vallado 2006), so callers
    use this to decide when to request a fresh TLE. `t_utc` must be timezone-aware.
    """
    if t_utc.tzinfo is None or t_utc.utcoffset() is None:
        raise ValueError(f"t_utc must be timezone-aware (UTC), got naive {t_utc!r}")
    return (t_utc - tle.epoch_utc).total_seconds() / 86400.0
