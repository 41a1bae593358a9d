"""Orbit truth: offline loading, agreement with skyfield, shadow edges, beta, search logic."""

from __future__ import annotations

import datetime as dt
import socket
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import ephemeris, shadow_truth
from sim.orbit_truth import OrbitTruth, find_intervals, validate_tle

START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)  # the TLE epoch
SSO = (
    "1 60001U 26001A   26060.00000000  .00000000  00000-0  21000-4 0  9997",
    "2 60001  97.5930 319.3000 0001000  90.0000 270.0000 15.05490646    18",
)
ISS = (
    "1 60002U 26002A   26060.00000000  .00000000  00000-0  31000-4 0  9990",
    "2 60002  51.6400 120.0000 0004000  60.0000 300.0000 15.48880433    17",
)
DAY = 86400.0


@pytest.fixture(scope="module")
def sso() -> OrbitTruth:
    return OrbitTruth(*SSO, START)


@pytest.fixture(scope="module")
def iss() -> OrbitTruth:
    return OrbitTruth(*ISS, START)


@pytest.fixture(scope="module")
def sso_events(sso):
    return sso.eclipse_events(0.0, 3 * DAY)


@pytest.fixture(scope="module")
def skyfield_sat():
    from skyfield.api import EarthSatellite

    return EarthSatellite(*SSO, ts=ephemeris.load_timescale())


# ------------------------------------------------------------------ loading


def test_loads_offline_with_network_blocked(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    ephemeris.clear_caches()  # force a fresh load from disk under the block
    eph = ephemeris.load_ephemeris()
    assert "sun" in eph and "earth" in eph
    truth = OrbitTruth(*SSO, START)
    assert truth.illumination(np.array([0.0, 1000.0])).shape == (2,)
    assert ephemeris.load_ephemeris() is eph  # cached, not reopened


def test_rejects_bad_tle_and_naive_start():
    bad = SSO[0][:-1] + str((int(SSO[0][-1]) + 1) % 10)
    with pytest.raises(ValueError, match="checksum"):
        validate_tle(bad, SSO[1])
    with pytest.raises(ValueError, match="catalogue"):
        validate_tle(SSO[0], ISS[1])
    with pytest.raises(ValueError, match="timezone-aware"):
        OrbitTruth(*SSO, dt.datetime(2026, 3, 1))


# ------------------------------------------------------- agreement with skyfield


def test_positions_match_skyfield(sso, skyfield_sat):
    """The fast path (C SGP4 + hourly frame tables) reproduces skyfield's full path."""
    eph = ephemeris.load_ephemeris()
    t = np.sort(np.random.default_rng(1).uniform(0, 5 * DAY, 200))
    sat_m, sun_m = sso.positions_m(t)
    sky_t = sso.clock.time(t)
    assert np.abs(skyfield_sat.at(sky_t).position.m.T - sat_m).max() < 0.01
    ref = eph["earth"].at(sky_t).observe(eph["sun"]).apparent().position.m.T
    cos = np.sum(ref * sun_m, axis=1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(sun_m, axis=1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() * 3600 < 0.05  # arcsec
    assert np.allclose(np.linalg.norm(sun_m, axis=1), np.linalg.norm(ref, axis=1), rtol=1e-6)
    one_sat, one_sun = sso.positions_m(123.0)
    assert one_sat.shape == (3,) and one_sun.shape == (3,)


def test_subsatellite_point_matches_skyfield(sso, skyfield_sat):
    from skyfield.api import wgs84

    t = np.linspace(0, 2 * DAY, 97)
    lat, lon, alt = sso.subsatellite_point(t)
    geo = skyfield_sat.at(sso.clock.time(t))
    sub = wgs84.subpoint_of(geo)
    assert np.abs(lat - sub.latitude.degrees).max() < 1e-6
    assert np.abs((lon - sub.longitude.degrees + 180) % 360 - 180).max() < 1e-6
    assert np.abs(alt - wgs84.height_of(geo).m).max() < 0.1
    assert 500e3 < alt.min() and alt.max() < 600e3


def test_point_sun_edge_matches_skyfield_is_sunlit_on_a_sphere(
    sso, sso_events, skyfield_sat, monkeypatch
):
    """Independent check of the edge geometry: forced to skyfield's sphere (ERAD), the
    middle of each penumbra (the point-sun edge) sits on skyfield's is_sunlit switch."""
    from skyfield.constants import ERAD

    eph = ephemeris.load_ephemeris()
    monkeypatch.setattr(shadow_truth, "WGS84_A_M", ERAD)
    monkeypatch.setattr(shadow_truth, "WGS84_B_M", ERAD)
    sphere = OrbitTruth(*SSO, START).eclipse_events(0.0, 0.5 * DAY)
    for ev in (sphere, sso_events):
        assert len(ev) >= 4
    for i in range(3):
        for pen, umb in (
            (sphere.penumbra_entry_s[i], sphere.umbra_entry_s[i]),
            (sphere.penumbra_exit_s[i], sphere.umbra_exit_s[i]),
        ):
            mid = 0.5 * (pen + umb)
            t = np.arange(mid - 10.0, mid + 10.0, 0.1)
            lit = skyfield_sat.at(sso.clock.time(t)).is_sunlit(eph)
            switch = t[np.nonzero(lit[1:] != lit[:-1])[0] + 1]
            assert switch.size == 1
            # skyfield uses the geometric sun; ours is apparent (20" aberration, ~0.3 s).
            assert abs(switch[0] - mid) < 1.0
    # The oblate Earth shortens this high-latitude shadow by several seconds per edge.
    assert sso_events.penumbra_entry_s[0] > sphere.penumbra_entry_s[0] + 2.0
    assert sso_events.penumbra_exit_s[0] < sphere.penumbra_exit_s[0] - 2.0


# ------------------------------------------------------------------ eclipses


def test_sso_eclipse_durations_and_period(sso, sso_events):
    ev = sso_events
    assert 44 <= len(ev) <= 46  # ~15.05 orbits per day
    umbra_min = ev.umbra_duration_s / 60.0
    assert np.all((umbra_min > 30.0) & (umbra_min < 36.0))
    entry_pen = ev.umbra_entry_s - ev.penumbra_entry_s
    exit_pen = ev.penumbra_exit_s - ev.umbra_exit_s
    assert np.all((entry_pen > 8.0) & (entry_pen < 12.0))
    assert np.all((exit_pen > 8.0) & (exit_pen < 12.0))
    spacing_min = np.diff(ev.penumbra_entry_s) / 60.0
    assert np.all(np.abs(spacing_min - 95.65) < 0.3)


def test_orbit_summaries_sso(sso, sso_events):
    s = sso.orbit_summaries(0.0, 3 * DAY)
    assert len(s) >= 44
    assert np.all(np.abs(s.duration_s / 60.0 - 95.65) < 0.3)
    assert np.all((s.sunlit_fraction > 0.6) & (s.sunlit_fraction < 0.7))
    # Every orbit holds exactly one eclipse here; the per-orbit split must conserve time.
    inside = (sso_events.penumbra_entry_s >= s.start_s[0]) & (
        sso_events.penumbra_exit_s <= s.end_s[-1]
    )
    assert s.umbra_s.sum() == pytest.approx(np.nansum(sso_events.umbra_duration_s[inside]), abs=1.0)
    # Half-lit on average through the penumbra: the integral sits between the bounds.
    dark_s = (1.0 - s.sunlit_fraction) * s.duration_s
    assert np.all(
        (dark_s > s.umbra_s + 0.3 * s.penumbra_s) & (dark_s < s.umbra_s + 0.7 * s.penumbra_s)
    )
    assert np.allclose(s.beta_deg, sso.beta_angle_deg(s.start_s))


def test_refined_edges_match_dense_illumination(sso, sso_events):
    """Each edge agrees with where a 0.05 s sampling of illumination() changes state."""
    ev = sso_events
    rows = range(0, len(ev), 9)
    half, step = 3.0, 0.05
    grid = np.arange(-half, half + step / 2, step)
    edges = {
        "penumbra_entry_s": lambda nu: nu < 1.0,
        "umbra_entry_s": lambda nu: nu == 0.0,
        "umbra_exit_s": lambda nu: nu > 0.0,
        "penumbra_exit_s": lambda nu: nu == 1.0,
    }
    for field, reached in edges.items():
        centres = getattr(ev, field)[list(rows)]
        t = centres[:, None] + grid[None, :]
        state = reached(sso.illumination(t))
        assert not state[:, 0].any() and state[:, -1].all()
        first = t[np.arange(t.shape[0]), np.argmax(state, axis=1)]
        assert np.abs(first - centres).max() <= 0.5
        assert np.abs(first - centres).max() <= step + 1e-6  # in practice: within one sample


def test_illumination_properties(sso, sso_events):
    ev = sso_events
    t = np.arange(0.0, DAY, 1.0)
    nu = sso.illumination(t)
    assert nu.min() >= 0.0 and nu.max() <= 1.0
    mid_umbra = 0.5 * (ev.umbra_entry_s + ev.umbra_exit_s)
    assert np.all(sso.illumination(mid_umbra) == 0.0)
    mid_sun = 0.5 * (ev.penumbra_exit_s[:-1] + ev.penumbra_entry_s[1:])
    assert np.all(sso.illumination(mid_sun) == 1.0)
    for i in range(3):
        entry = sso.illumination(np.linspace(ev.penumbra_entry_s[i], ev.umbra_entry_s[i], 400))
        leave = sso.illumination(np.linspace(ev.umbra_exit_s[i], ev.penumbra_exit_s[i], 400))
        assert np.all(np.diff(entry) <= 1e-12) and np.all(np.diff(leave) >= -1e-12)
        assert entry[1] < 1.0 and 0.0 < entry[-2]  # truly partial in between


@settings(max_examples=200, deadline=None)
@given(
    a=st.floats(1e-4, 0.05),
    b=st.floats(1e-3, 1.5),
    c1=st.floats(0.0, 1.6),
    c2=st.floats(0.0, 1.6),
)
def test_visible_fraction_is_bounded_and_monotone(a, b, c1, c2):
    lo, hi = sorted((c1, c2))
    nu = shadow_truth.visible_fraction(np.array([a, a]), np.array([b, b]), np.array([lo, hi]))
    assert 0.0 <= nu[0] <= nu[1] + 1e-12 <= 1.0 + 1e-12


def test_visible_fraction_special_cases():
    a, b = 0.004, 1.2
    nu = shadow_truth.visible_fraction(
        np.full(4, a), np.full(4, b), np.array([b - a, b, b + a, 2.0])
    )
    assert nu[0] == 0.0 and nu[2] == 1.0 and nu[3] == 1.0
    assert nu[1] == pytest.approx(0.5, abs=0.01)  # half the sun behind a near-straight limb
    annular = shadow_truth.visible_fraction(np.array([0.01]), np.array([0.005]), np.array([0.001]))
    assert annular[0] == pytest.approx(1.0 - 0.25)


def test_iss_eclipse_at_low_beta_matches_references(iss):
    """REFERENCES.md: ISS-like orbit at beta = 0 has ~36 min umbra, sunlit fraction ~0.61."""
    s = iss.orbit_summaries(0.0, 30 * DAY)
    low = np.abs(s.beta_deg) < 5.0
    assert low.sum() > 5
    assert np.all(np.abs(s.umbra_s[low] / 60.0 - 36.0) < 1.0)
    assert np.all(np.abs(s.sunlit_fraction[low] - 0.61) < 0.02)
    high = np.abs(s.beta_deg) > 50.0
    if high.any():
        assert np.all(s.umbra_s[high] < s.umbra_s[low].min())


def test_dawn_dusk_season_start_has_penumbra_only_grazes():
    """A dawn-dusk orbit (LTAN 18:00) enters its eclipse season through passages that only
    graze the penumbra; they are reported with NaN umbra and match a 1 s coarse search."""
    dawn_dusk = (
        "1 60003U 26003A   26060.00000000  .00000000  00000-0  21000-4 0  9991",
        "2 60003  97.5930  71.0000 0001000  90.0000 270.0000 15.05490646    12",
    )
    truth = OrbitTruth(*dawn_dusk, START)
    t0, t1 = 61.0 * DAY, 65.0 * DAY
    ev = truth.eclipse_events(t0, t1)
    graze = np.isnan(ev.umbra_entry_s)
    assert graze.sum() >= 10 and (~graze).sum() >= 10
    assert np.all(np.isnan(ev.umbra_exit_s[graze]))
    assert ev.penumbra_entry_s[0] > 62.0 * DAY  # no eclipse before the season opens
    fine = truth.eclipse_events(t0, t1, coarse_step_s=1.0)
    assert len(fine) == len(ev)
    assert np.abs(fine.penumbra_entry_s - ev.penumbra_entry_s).max() < 0.01
    mid = 0.5 * (ev.penumbra_entry_s[graze] + ev.penumbra_exit_s[graze])
    nu = truth.illumination(mid)
    assert np.all((nu > 0.0) & (nu < 1.0))


def test_rejects_a_step_that_cannot_resolve_the_orbit(sso):
    with pytest.raises(ValueError, match="coarse_step_s"):
        sso.eclipse_events(0.0, DAY, coarse_step_s=1200.0)
    with pytest.raises(ValueError, match="t1_s > t0_s"):
        sso.eclipse_events(DAY, 0.0)


# ------------------------------------------------------------------ beta


def test_beta_angle(sso, iss, skyfield_sat):
    t = np.linspace(0, 30 * DAY, 721)
    beta_sso, beta_iss = sso.beta_angle_deg(t), iss.beta_angle_deg(t)
    assert np.all(np.abs(beta_sso) < 90) and np.all(np.abs(beta_iss) < 90)
    five_days = t <= 5 * DAY
    assert np.ptp(beta_sso[five_days]) < 3.0  # sun-synchronous: the plane follows the sun
    assert np.ptp(beta_iss) > 30.0  # precessing plane: tens of degrees in a month
    # Independent route: skyfield GCRS state and the apparent sun.
    eph = ephemeris.load_ephemeris()
    ts = sso.clock.time(t[:50])
    geo = skyfield_sat.at(ts)
    h = np.cross(geo.position.m.T, geo.velocity.m_per_s.T)
    sun = eph["earth"].at(ts).observe(eph["sun"]).apparent().position.m.T
    ref = np.degrees(
        np.arcsin(np.sum(h * sun, 1) / np.linalg.norm(h, axis=1) / np.linalg.norm(sun, axis=1))
    )
    assert np.abs(ref - beta_sso[:50]).max() < 0.01


# ------------------------------------------------------------------ search logic


def test_find_intervals_catches_dips_shorter_than_the_step():
    """A 1 s dip between two 30 s samples is found and refined; cut intervals flagged."""

    def func(t):
        return np.stack([(t - 50.0) ** 2 - 0.25, np.cos(2 * np.pi * t / 200.0)], axis=-1)

    dip, wave = find_intervals(func, 0.0, 360.0, 30.0, 0.01, [2 * 310.0, 0.1])
    assert dip.start_s == pytest.approx([49.5], abs=1e-3)
    assert dip.end_s == pytest.approx([50.5], abs=1e-3)
    assert wave.start_s == pytest.approx([50.0, 250.0], abs=1e-3)
    assert wave.end_s == pytest.approx([150.0, 350.0], abs=1e-3)
    assert not wave.start_cut.any() and not wave.end_cut.any()
    (cut,) = find_intervals(
        lambda t: np.cos(2 * np.pi * t / 200.0)[:, None], 100.0, 300.0, 30.0, 0.01, [None]
    )
    assert cut.start_s == pytest.approx([100.0, 250.0]) and cut.end_s == pytest.approx(
        [150.0, 300.0]
    )
    assert list(cut.start_cut) == [True, False] and list(cut.end_cut) == [False, True]


def test_eclipse_events_drop_cut_eclipses(sso, sso_events):
    t0 = 0.5 * (sso_events.umbra_entry_s[1] + sso_events.umbra_exit_s[1])  # mid-eclipse
    t1 = 0.5 * (sso_events.umbra_entry_s[4] + sso_events.umbra_exit_s[4])
    ev = sso.eclipse_events(t0, t1)
    assert len(ev) == 2
    assert ev.penumbra_entry_s == pytest.approx(sso_events.penumbra_entry_s[2:4], abs=0.05)


def test_eclipse_events_30_days_timing(sso):
    truth = OrbitTruth(*SSO, START)  # fresh: the timing includes building the sun tables
    t_start = time.perf_counter()
    ev = truth.eclipse_events(0.0, 30 * DAY)
    elapsed = time.perf_counter() - t_start
    print(f"\neclipse_events over 30 days: {len(ev)} eclipses in {elapsed:.3f} s")
    assert abs(len(ev) - 30 * DAY / sso.period_s) <= 2
    assert not np.isnan(ev.umbra_entry_s).any()
