"""Scene spectra library: pools, launch split, S2 band model, physics sanity, phenology."""

import numpy as np
import pytest

from sim import spectra as S

ALL = S.SCENE_CLASSES + S.EXTRA_POOLS


@pytest.fixture(scope="module")
def pools():
    return {split: S.load_pools(ALL, split) for split in S.SPLITS}


def _bands10(pool):
    names = [b[0] for b in S.band_set(10)]
    b = S.to_bands(pool.reflectance, S.band_response(10))
    return dict(zip(names, np.median(b, axis=0), strict=True))


def test_every_pool_is_non_empty_valid_and_the_splits_are_disjoint(pools):
    n_w = S.WAVELENGTHS_NM.size
    for c in ALL:
        pre, fli = pools["prelaunch"][c], pools["flight"][c]
        for p in (pre, fli):
            n = len(p.sources)
            assert n > 0 and p.name == c
            assert p.reflectance.shape == (n, n_w) and p.reflectance.dtype == np.float64
            assert np.isfinite(p.reflectance).all()
            assert p.reflectance.min() >= 0.0 and p.reflectance.max() <= 1.0
            assert p.traits.shape == (n, len(p.trait_names))
            assert not p.reflectance.flags.writeable
        assert not set(pre.sources) & set(fli.sources), c


def test_soil_sites_never_straddle_the_launch_split():
    lib = S._library()
    idx = np.flatnonzero(lib.level2 == "bare")
    site = dict(zip(idx.tolist(), S._soil_site_keys(idx), strict=True))
    sides = [
        {site[i] for i in S._earthlib_split("bare", sp, by_site=True)[0].tolist()}
        for sp in S.SPLITS
    ]
    assert sides[0] and sides[1] and not sides[0] & sides[1]


def test_built_types_with_two_names_are_in_both_splits():
    lib = S._library()
    types = [{lib.level3[i] for i in S._earthlib_split("built", sp)[0].tolist()} for sp in S.SPLITS]
    assert types[0] == types[1] and len(types[0]) == 17


def test_vegetation_traits_parsed_from_prosail_names(pools):
    lib = S._library()
    for split in S.SPLITS:
        veg = pools[split]["vegetation"]
        assert veg.trait_names[:2] == ("lai", "chl_ug_cm2")
        for src, row in zip(veg.sources, veg.traits, strict=True):
            name = src.rsplit(":", 1)[1]
            expect = dict(zip(("lai", "lma_g_cm2", "chl_ug_cm2", "leaf_n"),
                              map(float, name.split("-")[2::2]), strict=True))  # fmt: skip
            assert dict(zip(veg.trait_names, row.tolist(), strict=True)) == expect
    assert "v-LAI-1.1e+01-LMA-0.011-CHL-37.7-N-1.9" in lib.name  # exponent form parsed too


def test_band_sets():
    assert [b[0] for b in S.band_set(10)] == [
        "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12",
    ]  # fmt: skip
    assert S.band_set(13) == S.S2_BANDS
    for n in range(8, 14):
        centres = [b[1] for b in S.band_set(n)]
        assert len(centres) == n and centres == sorted(centres)
    for bad in (7, 14):
        with pytest.raises(ValueError):
            S.band_set(bad)


def test_band_response_normalised_and_centred():
    wl = S.WAVELENGTHS_NM
    r = S.band_response(13)
    assert r.shape == (wl.size, 13)
    np.testing.assert_allclose(r.sum(axis=0), 1.0, atol=1e-12)
    for (name, centre, _), col in zip(S.S2_BANDS, r.T, strict=True):
        assert abs((col * wl).sum() - centre) < 1.0, name
        if name != "B10":  # B10 lies in the 1360-1450 nm library gap
            assert abs(wl[col.argmax()] - centre) <= 10.0, name


def test_centre_shift_moves_the_band():
    wl = S.WAVELENGTHS_NM
    shift = np.linspace(-20.0, 20.0, 10)  # edge bands (B2, B12) lose a little tail
    r0, r1 = S.band_response(10), S.band_response(10, shift)
    np.testing.assert_allclose(r1.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose((r1 - r0).T @ wl, shift, atol=1.0)
    peak_move = wl[r1.argmax(axis=0)] - wl[r0.argmax(axis=0)]
    assert np.all(np.abs(peak_move - shift) <= 10.0)
    with pytest.raises(ValueError):
        S.band_response(10, np.zeros(3))


def test_to_bands_of_flat_and_ramp_spectra():
    wl = S.WAVELENGTHS_NM
    r = S.band_response(13)
    flat = np.full((3, wl.size), 0.37)
    np.testing.assert_allclose(S.to_bands(flat, r), 0.37, atol=1e-12)
    # A linear spectrum is read at each band centre, B10 across the gap included.
    ramp = S.to_bands(wl / 3000.0, r)
    np.testing.assert_allclose(ramp * 3000.0, [b[1] for b in S.S2_BANDS], atol=1.0)


@pytest.mark.parametrize("split", S.SPLITS)
def test_known_physics(pools, split):
    p = pools[split]
    veg = _bands10(p["vegetation"])
    assert veg["B8"] > 3.0 * veg["B4"]  # red edge
    snow = _bands10(p["snow_ice"])
    assert min(snow["B2"], snow["B3"], snow["B4"]) > 0.7 and snow["B11"] < 0.2
    water = S.to_bands(p["water"].reflectance, S.band_response(10))
    assert np.all(water[:, 6] < 0.1)  # B8 for every water spectrum
    cloud = _bands10(p["cloud"])
    assert min(cloud[b] for b in ("B2", "B3", "B4", "B8")) > 0.5
    assert cloud["B11"] < cloud["B8"]
    flood = _bands10(p["flood_water"])
    assert max(flood["B3"], flood["B4"]) > max(flood["B2"], flood["B8"])  # sediment peak
    burned = _bands10(p["burned"])
    assert burned["B12"] > burned["B8"]  # negative NBR of a fresh scar


def test_season_weights_follow_phenology(pools):
    veg = pools["prelaunch"]["vegetation"]
    lai = veg.traits[:, veg.trait_names.index("lai")]
    chl = veg.traits[:, veg.trait_names.index("chl_ug_cm2")]
    w0, w1 = S.season_weights(veg, 0.0), S.season_weights(veg, 1.0)
    for w in (w0, w1, S.season_weights(veg, 0.5)):
        assert w.shape == lai.shape and np.all(w >= 0) and abs(w.sum() - 1.0) < 1e-12
    assert w1 @ lai > lai.mean() > w0 @ lai
    assert w1 @ lai - w0 @ lai > 2.0
    assert w1 @ chl > chl.mean() > w0 @ chl
    soil = pools["prelaunch"]["bare_soil"]
    np.testing.assert_allclose(S.season_weights(soil, 0.3), 1.0 / len(soil.sources))


def test_unknown_class_or_split_raises():
    with pytest.raises(ValueError, match="martian_dust.*water"):
        S.load_pools(("water", "martian_dust"), "prelaunch")
    with pytest.raises(ValueError, match="split"):
        S.load_pools(("water",), "commissioning")


def test_load_pools_is_deterministic(pools):
    S._load_pools_cached.cache_clear()
    S._pool.cache_clear()
    S._library.cache_clear()
    again = S.load_pools(ALL, "flight")
    for c in ALL:
        a, b = pools["flight"][c], again[c]
        assert a is not b
        np.testing.assert_array_equal(a.reflectance, b.reflectance)
        np.testing.assert_array_equal(a.traits, b.traits)
        assert a.sources == b.sources and a.trait_names == b.trait_names
