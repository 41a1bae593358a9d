"""Onboard label sources: what the satellite itself can say about the class of a pixel.

Nothing here sees the simulator's truth: a label is computed from the pixels, the
frame's ancillary data (the onboard geolocation of each pixel on a calibration
site's map, the detector column) and data the ground uplinked before launch.

- Site labels: the reference land-cover map of a calibration site (uplinked before
  launch) gives the class at the pixel's onboard geolocation. The map has its
  published error rate, the geolocation its error (wrong labels at class
  boundaries), and it cannot know the clouds of the day: a pixel that the classic
  threshold cloud test flags (bright in the blue and green, not snow by the
  normalised difference snow index; the ACCA / Fmask first-pass rules) is labelled
  cloud instead; a cloud the test misses keeps the map's (wrong) class.
- Teacher labels: the larger ground-trained model run onboard on the same pixels
  (`flight_sw.ml.teacher`), abstaining below its confidence threshold.
- Self labels: the flight model's own predictions whose score margin is large
  (self-training, an option: it cannot correct its own systematic errors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

SOURCE_SITE, SOURCE_TEACHER, SOURCE_SELF = 0, 1, 2
SOURCE_NAMES = ("site", "teacher", "self")
#: Ancillary columns of a frame (int64, one row per pixel): calibration site (-1: none), map
#: row and column by the onboard geolocation, detector column, and the pixel's position in
#: its acquisition (a labeller may reorder or thin the rows; the position travels with them).
ANC_SITE, ANC_ROW, ANC_COL, ANC_DETECTOR, ANC_INDEX = 0, 1, 2, 3, 4
ANCILLARY_WIDTH = 5
#: Threshold cloud test on top-of-atmosphere reflectance (Irish 2000, ACCA pass one; Zhu &
#: Woodcock 2012, Fmask): bright in blue and green and NDSI below the snow threshold.
CLOUD_BLUE_MIN = 0.25
CLOUD_GREEN_MIN = 0.25
CLOUD_NDSI_MAX = 0.4
NO_CLASS = 255


@dataclass(frozen=True)
class ReferenceData:
    """What the ground uplinks before launch for onboard labelling."""

    site_maps: np.ndarray  # (sites, rows, cols) uint8 class index of each map cell; 255 = unknown
    site_map_accuracy: float  # published overall accuracy of the maps (reliability of site labels)
    cloud_class: int  # class index of cloud (-1: the model has no cloud class)
    cloud_bands: tuple[int, int, int]  # band indices of blue, green and SWIR-1 for the cloud test
    teacher: object | None = None  # flight_sw.ml.teacher.TeacherImage, or None (no teacher on board)
    #: Pre-flight characterised reflectance factor of the sun diffuser per band (None: no diffuser).
    diffuser_reflectance: np.ndarray | None = None
    #: Share of the teacher's (non-abstaining) labels that are right on the ground's pre-launch
    #: validation set: its reliability for the validation gate (0: unknown, not used to judge).
    teacher_reliability: float = 0.0


@numba.njit(cache=True)
def site_labels_into(pixels, ancillary, n, site_maps, cloud_class, blue, green, swir, labels):  # pragma: no cover
    """Map class at each pixel's onboard geolocation, cloud where the cloud test fires.

    Returns the number of labels written into labels[:count] (pixels compacted in place
    to pixels[:count], so the caller trains on exactly the labelled ones); pixels off the
    map or on unknown cells are dropped.
    """
    count = 0
    n_sites, rows, cols = site_maps.shape
    for i in range(n):
        s = ancillary[i, 0]
        r = ancillary[i, 1]
        c = ancillary[i, 2]
        if s < 0 or s >= n_sites or r < 0 or r >= rows or c < 0 or c >= cols:
            continue
        lab = site_maps[s, r, c]
        if cloud_class >= 0:
            g = pixels[i, green]
            w = pixels[i, swir]
            ndsi = (g - w) / (g + w) if g + w > 1e-6 else 0.0
            if pixels[i, blue] > CLOUD_BLUE_MIN and g > CLOUD_GREEN_MIN and ndsi < CLOUD_NDSI_MAX:
                lab = cloud_class
        if lab == NO_CLASS:
            continue
        labels[count] = lab
        if count != i:
            for k in range(pixels.shape[1]):
                pixels[count, k] = pixels[i, k]
            for k in range(ancillary.shape[1]):
                ancillary[count, k] = ancillary[i, k]
        count += 1
    return count


@numba.njit(cache=True)
def compact_labelled(pixels, labels, n, ancillary):  # pragma: no cover - compiled
    """Move the pixels (and their ancillary rows) whose label is >= 0 to the front; return how many."""
    count = 0
    for i in range(n):
        if labels[i] < 0:
            continue
        if count != i:
            labels[count] = labels[i]
            for k in range(pixels.shape[1]):
                pixels[count, k] = pixels[i, k]
            for k in range(ancillary.shape[1]):
                ancillary[count, k] = ancillary[i, k]
        count += 1
    return count


@numba.njit(cache=True)
def confident_into(pixels, pred, margins, n, min_margin, out_pixels, out_labels, ancillary,
                   out_ancillary):  # pragma: no cover - compiled
    """Self-training: copy the predictions whose margin exceeds min_margin (with their ancillary
    rows); return the count."""
    count = 0
    for i in range(n):
        if margins[i] > min_margin:
            out_labels[count] = pred[i]
            for k in range(pixels.shape[1]):
                out_pixels[count, k] = pixels[i, k]
            for k in range(ancillary.shape[1]):
                out_ancillary[count, k] = ancillary[i, k]
            count += 1
    return count
