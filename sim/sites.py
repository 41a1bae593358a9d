"""Calibration sites: the land cover that is really there, and the map of it the satellite carries.

Each site of the mission config is a grid of SITE_MAP_CELLS x SITE_MAP_CELLS cells
whose true classes are patches drawn from the site's `class_mix` (its surface share;
the `cloud` share is the mean cloud cover of a pass). The ground's reference map of
the site (what flies, `flight_sw.ml.labels.ReferenceData.site_maps`) is that truth
with the map's published error rate: `1 - payload.site_map_accuracy` of the cells
carry another class of the site (land-cover confusions happen between the classes
present). The reflectance record of a site (what a RadCalNet-style site publishes)
is its clear-sky mean surface reflectance with a 3 % (1 sigma) per-band error
(RadCalNet's stated uncertainty is 2.5-5 %, Bouvet et al. 2019).

Truth (`true_maps`) is for drawing pixels and scoring only; the flight software gets
the reference maps, the calibration-only arm the records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.memory import SITE_MAP_CELLS

#: Patch size of the true land cover, in map cells (class boundaries every few cells).
PATCH_CELLS = 4


@dataclass
class SiteTruth:
    true_maps: np.ndarray  # (sites, cells, cells) int64 class index
    cloud_cover: np.ndarray  # (sites,) mean cloud share of a pass
    reference_maps: np.ndarray  # (sites, cells, cells) uint8: the uplinked map, with its errors


def build_sites(cfg: MissionConfig, rng: np.random.Generator) -> SiteTruth:
    names = list(cfg.payload.classes)
    n = max(len(cfg.calibration_sites), 1)
    cells = SITE_MAP_CELLS
    true_maps = np.zeros((n, cells, cells), np.int64)
    refs = np.zeros((n, cells, cells), np.uint8)
    cloud = np.zeros(n)
    coarse = -(-cells // PATCH_CELLS)
    for i, site in enumerate(cfg.calibration_sites):
        surface = {c: f for c, f in site.class_mix.items() if c != "cloud" and f > 0}
        cloud[i] = site.class_mix.get("cloud", 0.0)
        classes = np.array([names.index(c) for c in surface])
        weights = np.array(list(surface.values()))
        weights = weights / weights.sum()
        patches = classes[rng.choice(len(classes), size=(coarse, coarse), p=weights)]
        tm = np.kron(patches, np.ones((PATCH_CELLS, PATCH_CELLS), np.int64))[:cells, :cells]
        # Ragged boundaries: a cell on a patch edge takes a random neighbour's class now and then.
        for _ in range(2):
            dr, dc = rng.integers(-1, 2, size=(2, cells, cells))
            rr = np.clip(np.arange(cells)[:, None] + dr, 0, cells - 1)
            cc = np.clip(np.arange(cells)[None, :] + dc, 0, cells - 1)
            take = rng.random((cells, cells)) < 0.3
            tm = np.where(take, tm[rr, cc], tm)
        true_maps[i] = tm
        ref = tm.copy()
        wrong = rng.random((cells, cells)) >= cfg.payload.site_map_accuracy
        others = np.array(sorted(set(range(len(names))) - {names.index("cloud")} if "cloud" in names
                                 else set(range(len(names)))))
        present = classes if len(classes) > 1 else others
        for r, c in zip(*np.nonzero(wrong), strict=True):
            choices = present[present != tm[r, c]]
            if len(choices) == 0:
                choices = others[others != tm[r, c]]
            ref[r, c] = choices[rng.integers(len(choices))]
        refs[i] = ref
    return SiteTruth(true_maps, cloud, refs)
