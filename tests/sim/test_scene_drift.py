"""The scene's drift scenarios do what their configs say, and only from their start day."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flight_sw.config import load_mission_config
from sim.scene import SceneTruth, atmosphere, green_fraction

DEFAULT = "mission_configs/default_sso.yaml"


def _scene(**drift):
    cfg = load_mission_config(DEFAULT).payload
    base = dict(gain_decay_per_day=0.0, dark_offset_growth_per_day=0.0, abrupt_shift_day=None,
                seasonal_amplitude=0.0)
    base.update(drift)
    cfg = dataclasses.replace(cfg, drift=dataclasses.replace(cfg.drift, **base), noise_sigma=0.0)
    return SceneTruth(cfg, np.random.default_rng(4))


def _draw(scene, t_s, n=4000, columns=None):
    px = np.zeros((n, scene.cfg.bands), np.float32)
    lab = np.zeros(n, np.int64)
    scene.sample(t_s, n, scene.global_mix(t_s), 45.0, px, lab, columns=columns)
    return px, lab


def test_the_same_stream_gives_the_same_pixels_and_the_truth_follows_the_mix():
    a, b = _scene(), _scene()
    pa, la = _draw(a, 0.0)
    pb, lb = _draw(b, 0.0)
    np.testing.assert_array_equal(pa, pb)
    counts = np.bincount(la, minlength=a.n_classes) / len(la)
    np.testing.assert_allclose(counts, 1.0 / a.n_classes, atol=0.03)


def test_a_draw_larger_than_a_random_block_is_whole_and_finite():
    """More pixels at once than one block of the random stream holds (it used to write past it)."""
    from sim.scene import STREAM_BLOCK

    scene = _scene()
    px, lab = _draw(scene, 0.0, n=STREAM_BLOCK + 5000)
    assert np.all(np.isfinite(px)) and np.all(px != 0.0)
    assert set(np.unique(lab)) <= set(range(scene.n_classes))


def test_radiation_event_hits_only_the_chosen_columns_and_bands_after_its_day():
    s = _scene(abrupt_shift_day=1.0, abrupt_gain_factor=0.5, abrupt_bands=(3,), abrupt_detector_fraction=0.3,
               hot_pixel_fraction=0.0)
    before = s.state(0.5 * 86400.0)
    after = s.state(1.5 * 86400.0)
    assert before[2].shape[0] == 1 and np.all(before[2] == 1.0)
    det_gain = after[2]
    assert det_gain.shape == (s.columns, s.cfg.bands)
    hit = det_gain[:, 3] < 1.0
    assert 0.2 < hit.mean() < 0.4
    assert np.all(det_gain[hit, 3] == 0.5)
    assert np.all(np.delete(det_gain, 3, axis=1) == 1.0)


def test_filter_shift_changes_band_values_in_a_way_no_per_band_gain_undoes():
    s = _scene(filter_shift_day=1.0, filter_shift_nm=12.0, filter_shift_bands=(3,), filter_shift_ramp_days=1.0)
    e0 = s.state(0.5 * 86400.0)[4]
    e1 = s.state(3.0 * 86400.0)[4]
    np.testing.assert_array_equal(np.delete(e0, 3, axis=1), np.delete(e1, 3, axis=1))
    ratio = e1[:, 3] / np.maximum(e0[:, 3], 1e-6)
    veg = slice(s.group_start[1], s.group_start[2])  # the red edge rises steeply for canopies
    assert np.median(ratio[veg]) > 1.1
    assert np.std(ratio) > 0.05  # spectrum by spectrum: not one gain for the band


def test_filter_shift_band_values_are_computed_once_per_ramp_step_and_equal_a_fresh_computation():
    from sim import spectra

    s = _scene(filter_shift_day=1.0, filter_shift_nm=12.0, filter_shift_bands=(3,), filter_shift_ramp_days=1.0)
    during = s.state(1.5 * 86400.0)[4]  # half way: ramp 0.5
    assert s.state(1.5 * 86400.0 + 120.0)[4] is during  # the same 1 % ramp step: reused
    shift = np.zeros(s.cfg.bands)
    shift[3] = 6.0
    np.testing.assert_array_equal(during, spectra.to_bands(s.surface, spectra.band_response(s.cfg.bands, shift)))
    after = s.state(3.0 * 86400.0)[4]
    shift[3] = 12.0
    np.testing.assert_array_equal(after, spectra.to_bands(s.surface, spectra.band_response(s.cfg.bands, shift)))
    assert s.state(4.0 * 86400.0)[4] is after


def test_new_surface_appears_after_its_day_with_its_true_class():
    s = _scene(new_surface_day=1.0, new_surface_kind="burned", new_surface_fraction=0.3)
    names = list(s.cfg.classes)
    assert s.n_groups == s.n_classes + 1 and s.group_label[-1] == names.index("bare_soil")
    assert s.global_mix(0.5 * 86400.0)[-1] == 0.0
    assert s.global_mix(1.5 * 86400.0)[-1] == pytest.approx(0.3)
    _, lab_before = _draw(s, 0.5 * 86400.0)
    _, lab_after = _draw(s, 1.5 * 86400.0)
    soil = names.index("bare_soil")
    assert np.mean(lab_after == soil) > np.mean(lab_before == soil) + 0.2


def test_phenology_follows_the_date_and_the_atmosphere_darkens_low_suns():
    assert green_fraction(196) == pytest.approx(1.0)
    assert green_fraction(196 + 365.25 / 2) == pytest.approx(0.0)
    s = _scene(phenology=True)
    s.start_doy = 196.0
    summer = s.state(0.0)[5]
    s._state_key = None
    s.start_doy = 15.0
    winter = s.state(0.0)[5]
    assert not np.array_equal(summer, winter)
    path_hi, trans_hi = atmosphere(s.band_centres_nm, 70.0)
    path_lo, trans_lo = atmosphere(s.band_centres_nm, 15.0)
    assert np.all(trans_lo < trans_hi) and np.all(path_lo > path_hi)
    assert path_hi[0] > path_hi[-1]  # Rayleigh: blue scatters most


def test_detector_columns_are_reported_and_drive_the_column_effects():
    s = _scene(abrupt_shift_day=0.0, abrupt_gain_factor=0.5, abrupt_bands=tuple(range(10)),
               abrupt_detector_fraction=0.5)
    cols = np.zeros(4000, np.int64)
    px, _ = _draw(s, 10.0, columns=cols)
    hit = s._det_hit[cols]
    assert 0.4 < hit.mean() < 0.6
    assert px[hit].mean() < 0.7 * px[~hit].mean()
