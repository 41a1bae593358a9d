"""Ground contacts and calibration-site overpasses, checked against skyfield."""

from __future__ import annotations

import numpy as np
import pytest

from sim import contacts, ephemeris
from sim.orbit_truth import CalibrationSite, GroundStation, OrbitTruth, Pass, SiteOverpass
from tests.sim.test_orbit_truth import DAY, SSO, START

SVALBARD = GroundStation("Svalbard", 78.23, 15.39, 500.0, 5.0)


@pytest.fixture(scope="module")
def sso() -> OrbitTruth:
    return OrbitTruth(*SSO, START)


@pytest.fixture(scope="module")
def svalbard_passes(sso) -> list[Pass]:
    return sso.contact_windows([SVALBARD], 0.0, DAY)


def test_svalbard_passes(svalbard_passes):
    passes = svalbard_passes
    assert 8 <= len(passes) <= 16  # a 78 N station sees most SSO orbits
    assert [p.start_s for p in passes] == sorted(p.start_s for p in passes)
    for p in passes:
        assert p.name == "Svalbard"
        assert p.duration_s <= 12.0 * 60
        if p.max_elevation_deg > 10.0:  # passes that barely clear the mask are shorter
            assert 5.0 * 60 <= p.duration_s
        assert p.start_s < p.peak_s < p.end_s
        assert 5.0 < p.max_elevation_deg <= 90.0


def test_pass_edges_and_peak_against_skyfield(sso, svalbard_passes):
    """Skyfield's own topocentric altitude is at the mask at our refined edges."""
    from skyfield.api import EarthSatellite, wgs84

    sat = EarthSatellite(*SSO, ts=ephemeris.load_timescale())
    site = wgs84.latlon(SVALBARD.lat_deg, SVALBARD.lon_deg, elevation_m=SVALBARD.alt_m)
    edges = np.array([[p.start_s, p.end_s] for p in svalbard_passes]).ravel()
    alt, _, _ = (sat - site).at(sso.clock.time(edges)).altaz()
    # 0.5 s tolerance x <= 0.1 deg/s near the mask; the secant finish does far better.
    assert np.abs(alt.degrees - SVALBARD.elevation_mask_deg).max() < 0.01
    peaks = np.array([p.peak_s for p in svalbard_passes])
    peak_alt, _, _ = (sat - site).at(sso.clock.time(peaks)).altaz()
    assert np.abs(peak_alt.degrees - [p.max_elevation_deg for p in svalbard_passes]).max() < 0.01
    around, _, _ = (
        (sat - site)
        .at(sso.clock.time(np.repeat(peaks, 2) + np.tile([-1.0, 1.0], peaks.size)))
        .altaz()
    )
    assert np.all(around.degrees.reshape(-1, 2) <= peak_alt.degrees[:, None] + 1e-9)


def test_no_station_no_pass_and_window_clipping(sso, svalbard_passes):
    assert sso.contact_windows([], 0.0, DAY) == []
    p = svalbard_passes[1]
    mid = 0.5 * (p.start_s + p.end_s)
    clipped = sso.contact_windows([SVALBARD], mid, mid + 3600.0)
    assert clipped[0].start_s == mid and clipped[0].end_s == pytest.approx(p.end_s, abs=0.5)


@pytest.fixture(scope="module")
def sites_under_track(sso):
    """Sites placed near the ground track so overpasses are certain within 6 h."""
    lat, lon, _ = sso.subsatellite_point(np.array([5000.0, 12000.0]))
    wide = CalibrationSite("wide", float(lat[0]), float(lon[0]) + 0.3, 60.0)
    # A 6 km circle crossed along a ~7 km chord: under 1.5 s inside, between 10 s samples.
    small = CalibrationSite("small", float(lat[1]) + 0.03, float(lon[1]), 6.0)
    return wide, small, sso.site_overpasses([wide, small], 0.0, 6 * 3600.0)


def test_site_overpasses_inside_at_peak_and_at_radius_at_edges(sso, sites_under_track):
    wide, small, overs = sites_under_track
    assert all(isinstance(o, SiteOverpass) for o in overs)
    by_name = {o.name: o for o in overs}
    assert set(by_name) == {"wide", "small"}
    assert by_name["small"].duration_s < 3.0  # found despite the 10 s coarse step
    for o in overs:
        site = wide if o.name == "wide" else small
        lat, lon, _ = sso.subsatellite_point(np.array([o.start_s, o.peak_s, o.end_s]))
        d_km = contacts.surface_distance_m(lat, lon, site.lat_deg, site.lon_deg) / 1e3
        assert d_km[1] < site.radius_km and d_km[1] == pytest.approx(o.min_distance_km, abs=1e-3)
        assert d_km[[0, 2]] == pytest.approx([site.radius_km] * 2, abs=0.05)
        assert o.max_elevation_deg > 60.0  # nearly overhead
        assert -90.0 <= o.sun_elevation_deg <= 90.0


def test_sun_elevation_at_subpoint_matches_skyfield(sso):
    from skyfield.api import wgs84

    eph = ephemeris.load_ephemeris()
    t = np.linspace(0, DAY, 25)
    lat, lon, _ = sso.subsatellite_point(t)
    ours = sso.sun_elevation_at_subpoint_deg(t)
    for ti, la, lo, el in zip(t, lat, lon, ours, strict=True):
        ground = eph["earth"] + wgs84.latlon(la, lo)
        alt, _, _ = ground.at(sso.clock.time(ti)).observe(eph["sun"]).apparent().altaz()
        assert el == pytest.approx(alt.degrees, abs=0.01)


def test_geodesy_reference_values():
    # WGS84: 1 deg of longitude on the equator, 1 deg of latitude from the equator.
    assert contacts.surface_distance_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(111_319.49, abs=1.0)
    assert contacts.surface_distance_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(110_574.4, abs=15.0)
    assert contacts.surface_distance_m(10.0, 20.0, 10.0, 20.0) == 0.0
    r = contacts.geodetic_to_itrs_m(
        np.array([78.23, -33.0]), np.array([15.39, 200.0]), np.array([500.0, 1e6])
    )
    lat, lon, alt = contacts.itrs_to_geodetic(r)
    assert lat == pytest.approx([78.23, -33.0], abs=1e-10)
    assert lon == pytest.approx([15.39, -160.0], abs=1e-10)
    assert alt == pytest.approx([500.0, 1e6], abs=1e-6)
    with pytest.raises(ValueError, match="radius_km"):
        CalibrationSite("x", 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="lat_deg"):
        GroundStation("x", 91.0, 0.0, 0.0, 5.0)
