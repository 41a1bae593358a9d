"""Measured and published reflectance spectra the payload scene draws its pixels from.

Simulator only (``flight_sw`` never imports it). It replaces six hand-set class
signatures: a class is now a pool of real or physically generated surface-reflectance
spectra on one wavelength grid, so the scene has honest within-class variability and a
sensor model (``band_response`` / ``to_bands``) can turn any spectrum into any band set.

Pools (scene classes, plus ``burned`` and ``flood_water`` for the new-surface drift):

* ``vegetation``: earthlib LEVEL_2 ``vegetation``, 2,000 PROSAIL canopies; traits LAI,
  leaf chlorophyll [ug/cm2], LMA [g/cm2] and leaf structure N parsed from the names.
* ``bare_soil``: LEVEL_2 ``bare`` (ICRAF-ISRIC soil spectral library, Santa Barbara
  sand, dirt, gravel and soil). No NPV mixed in: the class is soil, and litter already
  reaches the scene through the burned pool.
* ``urban``: LEVEL_2 ``built`` (Santa Barbara urban library, 17 material types).
* ``burned``: LEVEL_2 ``burned`` (Joint Fire Science Program char and ash) plus linear
  areal mixtures of that char with the same split's soil and NPV (litter, bark, wood):
  a 10-20 m burn-scar pixel is char over partly exposed soil and scorched litter, and
  21 spectra alone are too few to draw thousands of pixels from.
* ``water``, ``flood_water``, ``snow_ice``, ``cloud``: earthlib has none. Each is a
  family generated from a cited physical model with tabulated published optical
  constants (see the ``_gen_*`` functions), its physical parameters drawn with a fixed
  seeded generator.

Split rule (launch itself is a domain gap, as in reality: the ground trains on spectra
the satellite will not see again): keys are ranked by SHA-256 and the lower half
(ceil(n/2)) of each group goes to ``prelaunch``, the rest to ``flight``:

* soils: key = site (LAT/LON), so every spectrum of a site lands in one set; ICRAF
  spectra without usable coordinates (blank or 0,0) are grouped into runs of consecutive
  sample numbers (the library numbers the horizons of one profile consecutively; 86 % of
  adjacent-number pairs with known coordinates share a site). One group over all sites.
* built, burned char, NPV: key = spectrum NAME, grouped by LEVEL_3 type, so every type
  with two or more distinct names is in both sets (repeated names stay together).
* vegetation: key = NAME, one group (1,000 / 1,000).
* published families: overlapping but distinct parameter ranges, ``prelaunch`` draws the
  lower 60 % and ``flight`` the upper 60 % of the log range of the family's main
  parameter (water: SPM; snow: grain size; cloud: optical thickness), independently.

Grid: the earthlib grid, 0.40-2.45 um at 10 nm minus the water-vapour bands
(1.36-1.45, 1.80-1.95 um): 180 wavelengths. Reflectance is clipped to [0, 1].
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "S2_BANDS",
    "SCENE_CLASSES",
    "EXTRA_POOLS",
    "SPLITS",
    "WAVELENGTHS_NM",
    "ClassPool",
    "band_set",
    "load_pools",
    "band_response",
    "to_bands",
    "season_weights",
]

#: Sentinel-2A MSI bands: (name, central wavelength [nm], bandwidth [nm]). ESA,
#: Sentinel-2 Spectral Response Functions (COPE-GSEG-EOPG-TN-15-0007, S2A values as in
#: the S2 MSI User Guide). The bandwidth is used as the FWHM of a Gaussian response.
S2_BANDS: tuple[tuple[str, float, float], ...] = (
    ("B1", 442.7, 21.0),
    ("B2", 492.4, 66.0),
    ("B3", 559.8, 36.0),
    ("B4", 664.6, 31.0),
    ("B5", 704.1, 15.0),
    ("B6", 740.5, 15.0),
    ("B7", 782.8, 20.0),
    ("B8", 832.8, 106.0),
    ("B8A", 864.7, 21.0),
    ("B9", 945.1, 20.0),
    ("B10", 1373.5, 31.0),
    ("B11", 1613.7, 91.0),
    ("B12", 2202.4, 175.0),
)
_BAND_SETS: dict[int, tuple[str, ...]] = {
    # 10 m + 20 m land bands: the standard set the scene and model use.
    10: ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"),
    # Fewer bands drop the most redundant red-edge/NIR bands first (B8A ~ B8, B7 ~ B6-B8).
    9: ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12"),
    8: ("B2", "B3", "B4", "B5", "B6", "B8", "B11", "B12"),
    # More bands add the 60 m bands: coastal aerosol, then water vapour (12 = the L2A set).
    11: ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"),
    12: ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"),
    13: tuple(b[0] for b in S2_BANDS),
}

SCENE_CLASSES = ("water", "vegetation", "bare_soil", "cloud", "snow_ice", "urban")
EXTRA_POOLS = ("burned", "flood_water")
SPLITS = ("prelaunch", "flight")


def _earthlib_data_dir() -> Path:
    """earthlib's data folder, found without importing earthlib (its import pulls pandas)."""
    spec = importlib.util.find_spec("earthlib")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("sim.spectra needs the earthlib package (scene data)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


_DATA = _earthlib_data_dir()
_N_PUBLISHED = 200  # spectra per published family and split
_SEED = 20240611  # fixed: the published families are part of the simulator's truth
_SPLIT_FRACTION = 0.6  # each split covers this share of a published family's log range
_N_BURN_MIXTURES = 120  # char/soil/NPV mixtures per split


def band_set(bands: int) -> tuple[tuple[str, float, float], ...]:
    """The ``bands``-band subset of ``S2_BANDS`` (8..13), in wavelength order."""
    if bands not in _BAND_SETS:
        raise ValueError(f"bands must be one of {sorted(_BAND_SETS)}, got {bands}")
    by_name = {b[0]: b for b in S2_BANDS}
    return tuple(by_name[n] for n in _BAND_SETS[bands])


def _read_header() -> dict[str, str]:
    text = (_DATA / "spectra.sli.hdr").read_text()
    fields = dict(re.findall(r"^\s*([a-z ]+?)\s*=\s*(\{.*?\}|[^\n{]*)", text, re.M | re.S))
    return {k: v.strip() for k, v in fields.items()}


def _wavelengths_nm() -> np.ndarray:
    hdr = _read_header()
    vals = hdr["wavelength"].strip("{} \n").split(",")
    wl = np.array([float(v) for v in vals], dtype=np.float64)
    if hdr.get("wavelength units", "").lower().startswith("micro"):
        wl = wl * 1000.0
    return np.round(wl, 6)


#: The library's wavelength grid [nm] (180 values, 400-2450, gaps at the H2O bands).
WAVELENGTHS_NM: np.ndarray = _wavelengths_nm()
WAVELENGTHS_NM.setflags(write=False)


@dataclass(frozen=True)
class ClassPool:
    """Spectra of one class in one split; arrays are read-only (copy before editing)."""

    name: str
    reflectance: np.ndarray  # (n, n_w) surface reflectance on WAVELENGTHS_NM, 0..1
    traits: np.ndarray  # (n, k) per-spectrum parameters named by trait_names
    trait_names: tuple[str, ...]
    sources: tuple[str, ...]  # per spectrum: "earthlib:<source>:<name>", "mix:...", "published:..."


# ---------------------------------------------------------------- earthlib library


@dataclass(frozen=True)
class _Library:
    reflectance: np.ndarray  # (7261, 180) float64
    name: tuple[str, ...]
    level2: np.ndarray  # str arrays, for masks
    level3: tuple[str, ...]
    source: tuple[str, ...]
    lat: tuple[str, ...]
    lon: tuple[str, ...]


@functools.lru_cache(maxsize=1)
def _library() -> _Library:
    """The earthlib ENVI spectral library (float32 BSQ) and its CSV metadata, read once."""
    hdr = _read_header()
    lines, samples = int(hdr["lines"]), int(hdr["samples"])
    if hdr["data type"] != "4" or hdr["interleave"].lower() != "bsq":
        raise ValueError("earthlib spectra.sli: expected float32 BSQ")
    dtype = "<f4" if hdr.get("byte order", "0") == "0" else ">f4"
    raw = (_DATA / "spectra.sli").read_bytes()
    offset = int(hdr.get("header offset", "0"))
    refl = np.frombuffer(raw, dtype=dtype, count=lines * samples, offset=offset)
    refl = refl.reshape(lines, samples).astype(np.float64)
    if samples != WAVELENGTHS_NM.size:
        raise ValueError("earthlib spectra.sli: sample count differs from the wavelength list")
    with (_DATA / "spectra.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != lines:
        raise ValueError(f"earthlib spectra.csv has {len(rows)} rows for {lines} spectra")
    col = {
        k: tuple(r[k] for r in rows) for k in ("NAME", "LEVEL_2", "LEVEL_3", "SOURCE", "LAT", "LON")
    }
    return _Library(
        reflectance=refl,
        name=col["NAME"],
        level2=np.array(col["LEVEL_2"]),
        level3=col["LEVEL_3"],
        source=col["SOURCE"],
        lat=col["LAT"],
        lon=col["LON"],
    )


def _hash_rank(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def _prelaunch_mask(keys: list[str], groups: list[str]) -> np.ndarray:
    """True where a spectrum's key is in the lower-hash half of its group's distinct keys."""
    members: dict[str, set[str]] = {}
    for k, g in zip(keys, groups, strict=True):
        members.setdefault(g, set()).add(k)
    pre: set[tuple[str, str]] = set()
    for g, ks in members.items():
        ranked = sorted(ks, key=lambda k: (_hash_rank(k), k))
        pre.update((g, k) for k in ranked[: math.ceil(len(ranked) / 2)])
    return np.array([(g, k) in pre for k, g in zip(keys, groups, strict=True)], dtype=bool)


def _soil_site_keys(idx: np.ndarray) -> list[str]:
    """Site of each soil spectrum; unknown locations -> run of consecutive ICRAF numbers."""
    lib = _library()
    keys: list[str | None] = []
    unknown: list[tuple[str, int, int]] = []  # (prefix, number, position)
    for pos, i in enumerate(idx.tolist()):
        lat, lon = lib.lat[i], lib.lon[i]
        if lat and lon and (float(lat), float(lon)) != (0.0, 0.0):
            keys.append(f"site:{float(lat):.4f},{float(lon):.4f}")
            continue
        keys.append(None)
        m = re.fullmatch(r"(\w+?)_FS(\d+)", lib.name[i])
        if m:
            unknown.append((m.group(1), int(m.group(2)), pos))
        else:
            keys[pos] = f"name:{lib.name[i]}"
    run_key = ""
    prev: tuple[str, int] | None = None
    for prefix, num, pos in sorted(unknown):
        if prev is None or prev[0] != prefix or num != prev[1] + 1:
            run_key = f"run:{prefix}:{num}"
        keys[pos] = run_key
        prev = (prefix, num)
    assert all(k is not None for k in keys)
    return keys  # type: ignore[return-value]


def _earthlib_split(level2: str, split: str, by_site: bool = False, grouped: bool = True):
    """Library indices and sources of one LEVEL_2 class in one split (NaN spectra dropped)."""
    lib = _library()
    idx = np.flatnonzero(lib.level2 == level2)
    idx = idx[np.isfinite(lib.reflectance[idx]).all(axis=1)]
    names = [lib.name[i] for i in idx.tolist()]
    if by_site:
        keys, groups = _soil_site_keys(idx), [level2] * idx.size
    else:
        keys = names
        groups = [lib.level3[i] for i in idx.tolist()] if grouped else [level2] * idx.size
    pre = _prelaunch_mask(keys, groups)
    sel = idx[pre if split == "prelaunch" else ~pre]
    sources = tuple(f"earthlib:{lib.source[i]}:{lib.name[i]}" for i in sel.tolist())
    return sel, sources


def _clip(r: np.ndarray) -> np.ndarray:
    return np.clip(r, 0.0, 1.0)


_NUM = r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)"
_VEG_NAME = re.compile(rf"v-LAI-{_NUM}-LMA-{_NUM}-CHL-{_NUM}-N-{_NUM}")


def _vegetation(split: str) -> ClassPool:
    sel, sources = _earthlib_split("vegetation", split, grouped=False)
    lib = _library()
    traits = []
    for i in sel.tolist():
        m = _VEG_NAME.fullmatch(lib.name[i])
        if m is None:
            raise ValueError(f"cannot parse PROSAIL parameters from {lib.name[i]!r}")
        lai, lma, chl, leaf_n = (float(g) for g in m.groups())
        traits.append([lai, chl, lma, leaf_n])
    return ClassPool(
        "vegetation",
        _clip(lib.reflectance[sel]),
        np.array(traits, dtype=np.float64).reshape(-1, 4),
        ("lai", "chl_ug_cm2", "lma_g_cm2", "leaf_n"),
        sources,
    )


def _plain(name: str, level2: str, split: str, by_site: bool = False) -> ClassPool:
    sel, sources = _earthlib_split(level2, split, by_site=by_site)
    refl = _clip(_library().reflectance[sel])
    return ClassPool(name, refl, np.zeros((sel.size, 0)), (), sources)


def _burned(split: str) -> ClassPool:
    """Char/ash spectra plus linear mixtures with the split's soil and NPV (Roberts et al. 1998)."""
    char = _plain("burned", "burned", split)
    soil = _pool("bare_soil", split)
    npv = _plain("npv", "npv", split)
    rng = np.random.default_rng([_SEED, 7, SPLITS.index(split)])
    n = _N_BURN_MIXTURES
    f_char = rng.uniform(0.5, 1.0, n)  # fresh scar: char/ash dominates the pixel
    f_soil = (1.0 - f_char) * rng.uniform(0.0, 1.0, n)
    f_npv = 1.0 - f_char - f_soil
    ic = rng.integers(0, len(char.sources), n)
    i_s = rng.integers(0, len(soil.sources), n)
    i_n = rng.integers(0, len(npv.sources), n)
    mix = (
        f_char[:, None] * char.reflectance[ic]
        + f_soil[:, None] * soil.reflectance[i_s]
        + f_npv[:, None] * npv.reflectance[i_n]
    )
    mix_src = tuple(
        f"mix:{a:.3f}*{char.sources[c]}+{b:.3f}*{soil.sources[s]}+{d:.3f}*{npv.sources[v]}"
        for a, b, d, c, s, v in zip(f_char, f_soil, f_npv, ic, i_s, i_n, strict=True)
    )
    refl = np.vstack([char.reflectance, _clip(mix)])
    traits = np.concatenate([np.ones(len(char.sources)), f_char])[:, None]
    return ClassPool("burned", refl, traits, ("char_fraction",), char.sources + mix_src)


# ---------------------------------------------------------------- published optical constants

# Imaginary refractive index of ice, Warren & Brandt (2008), JGR 113, D14220,
# doi:10.1029/2007JD009744 (IOP_2008_ASCIItable.dat), knots chosen to keep the bands.
_ICE_K = np.array([
    (400, 2.365e-11), (450, 9.239e-11), (500, 5.889e-10), (550, 2.289e-09),
    (600, 5.730e-09), (650, 1.430e-08), (700, 2.900e-08), (750, 5.870e-08),
    (800, 1.340e-07), (850, 1.830e-07), (900, 4.200e-07), (950, 6.020e-07),
    (1000, 1.620e-06), (1030, 2.330e-06), (1100, 1.700e-06), (1150, 2.290e-06),
    (1200, 6.710e-06), (1250, 1.290e-05), (1300, 1.320e-05), (1350, 1.390e-05),
    (1400, 1.980e-05), (1449, 2.030e-04), (1493, 5.532e-04), (1538, 4.594e-04),
    (1587, 3.105e-04), (1613, 2.659e-04), (1650, 2.361e-04), (1700, 1.875e-04),
    (1760, 1.522e-04), (1800, 1.411e-04), (1830, 1.302e-04), (1870, 1.632e-04),
    (1905, 4.081e-04), (1942, 1.108e-03), (1980, 1.614e-03), (2000, 1.640e-03),
    (2041, 1.458e-03), (2083, 1.023e-03), (2130, 5.255e-04), (2170, 3.235e-04),
    (2220, 2.228e-04), (2245, 2.026e-04), (2290, 2.538e-04), (2350, 4.591e-04),
    (2410, 5.956e-04), (2460, 6.820e-04),
])  # fmt: skip

# Absorption coefficient of pure liquid water [1/m]: Pope & Fry (1997), Appl. Opt. 36,
# 8710 (400-700 nm); beyond, 4*pi*k/lambda from Hale & Querry (1973), Appl. Opt. 12, 555.
_WATER_A = np.array([
    (400, 0.00663), (420, 0.00454), (440, 0.00635), (460, 0.00979), (480, 0.0127),
    (500, 0.0204), (520, 0.0409), (540, 0.0474), (560, 0.0619), (580, 0.0896),
    (600, 0.2224), (620, 0.2755), (640, 0.3108), (660, 0.410), (680, 0.465),
    (700, 0.624), (725, 2.84), (750, 2.61), (775, 2.40), (800, 1.96), (825, 2.77),
    (850, 4.33), (875, 5.62), (900, 6.79), (925, 14.4), (950, 38.8), (975, 44.9),
    (1000, 36.3), (1200, 103.6), (1400, 1239.0), (1600, 671.0), (1800, 803.0),
    (2000, 6912.0), (2200, 1651.0), (2400, 5006.0), (2460, 7000.0),
])  # fmt: skip

# Chlorophyll-specific phytoplankton absorption at Chl = 1 mg/m3 [m2/mg], shape after
# Bricaud et al. (1995), JGR 100, 13321; scaled as Chl**0.668 (their a_ph(440) fit).
_APH_STAR = np.array([
    (400, 0.0292), (420, 0.0365), (440, 0.0394), (460, 0.0349), (480, 0.0294),
    (500, 0.0226), (520, 0.0150), (540, 0.0105), (560, 0.0076), (580, 0.0069),
    (600, 0.0068), (620, 0.0077), (640, 0.0090), (660, 0.0135), (675, 0.0192),
    (690, 0.0100), (700, 0.0045), (720, 0.0010), (750, 0.0), (2460, 0.0),
])  # fmt: skip


def _loginterp(table: np.ndarray, wl_nm: np.ndarray) -> np.ndarray:
    return np.exp(np.interp(wl_nm, table[:, 0], np.log(table[:, 1])))


def _draw_split_param(rng: np.random.Generator, lo: float, hi: float, split: str, n: int):
    """Log-uniform draw over the split's share of [lo, hi] (lower or upper 60 %)."""
    a, b = math.log(lo), math.log(hi)
    span = (b - a) * _SPLIT_FRACTION
    a, b = (a, a + span) if split == "prelaunch" else (b - span, b)
    return np.exp(rng.uniform(a, b, n))


def _loguniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def _published(name, refl, traits, trait_names, ref, split) -> ClassPool:
    sources = tuple(f"published:{ref};{split}#{i:03d}" for i in range(refl.shape[0]))
    return ClassPool(name, _clip(refl), traits, trait_names, sources)


def _water_reflectance(spm, chl, cdom, glint) -> np.ndarray:
    """Semi-analytic water reflectance pi*Rrs + sky glint for (n,) parameter vectors.

    IOPs: pure water a_w (table) and b_bw = 0.5 * 0.00288 (500/l)^4.32 (Morel 1974);
    phytoplankton a_ph (Bricaud 1995) and b_bp = 0.0016 Chl^0.62 (550/l); CDOM
    a_g(440) exp(-0.015 (l-440)) (Bricaud et al. 1981); mineral particles
    a_nap = 0.035 SPM exp(-0.0123 (l-443)) and b_bp = 0.01 SPM (555/l)^0.5 [m2/g]
    (Babin et al. 2003, L&O 48, 843). rrs = 0.0949 u + 0.0794 u^2, u = bb/(a+bb)
    (Gordon et al. 1988); Rrs = 0.52 rrs / (1 - 1.7 rrs) (Lee et al. 2002).
    """
    wl = WAVELENGTHS_NM[None, :]
    a = (
        _loginterp(_WATER_A, WAVELENGTHS_NM)[None, :]
        + np.interp(WAVELENGTHS_NM, _APH_STAR[:, 0], _APH_STAR[:, 1])[None, :]
        * chl[:, None] ** 0.668
        + cdom[:, None] * np.exp(-0.015 * (wl - 440.0))
        + 0.035 * spm[:, None] * np.exp(-0.0123 * (wl - 443.0))
    )
    bb = (
        0.5 * 0.00288 * (500.0 / wl) ** 4.32
        + 0.0016 * chl[:, None] ** 0.62 * (550.0 / wl)
        + 0.01 * spm[:, None] * (555.0 / wl) ** 0.5
    )
    u = bb / (a + bb)
    rrs = 0.0949 * u + 0.0794 * u**2
    rrs_above = 0.52 * rrs / (1.0 - 1.7 * rrs)
    return math.pi * rrs_above + glint[:, None]


_WATER_REF = "Gordon1988+Lee2002 semi-analytic; aw PopeFry1997/HaleQuerry1973; Babin2003"


def _gen_water(split: str) -> ClassPool:
    """Lakes, rivers and sea: SPM 0.05-60 g/m3 (clear ocean to turbid coast)."""
    rng = np.random.default_rng([_SEED, 1, SPLITS.index(split)])
    n = _N_PUBLISHED
    spm = _draw_split_param(rng, 0.05, 60.0, split, n)
    chl = _loguniform(rng, 0.03, 30.0, n)
    cdom = _loguniform(rng, 0.005, 1.0, n)
    glint = rng.uniform(0.0, 0.01, n)  # residual sky reflection after atmospheric correction
    traits = np.stack([spm, chl, cdom, glint], axis=1)
    names = ("spm_g_m3", "chl_mg_m3", "cdom_a440_per_m", "sky_glint")
    return _published(
        "water", _water_reflectance(spm, chl, cdom, glint), traits, names, _WATER_REF, split
    )


def _gen_flood_water(split: str) -> ClassPool:
    """Flood water: sediment-laden (SPM 30-600 g/m3) with terrestrial CDOM; peaks 560-700 nm."""
    rng = np.random.default_rng([_SEED, 2, SPLITS.index(split)])
    n = _N_PUBLISHED
    spm = _draw_split_param(rng, 30.0, 600.0, split, n)
    chl = _loguniform(rng, 1.0, 30.0, n)
    cdom = _loguniform(rng, 0.5, 5.0, n)
    glint = rng.uniform(0.0, 0.01, n)
    traits = np.stack([spm, chl, cdom, glint], axis=1)
    names = ("spm_g_m3", "chl_mg_m3", "cdom_a440_per_m", "sky_glint")
    return _published(
        "flood_water", _water_reflectance(spm, chl, cdom, glint), traits, names, _WATER_REF, split
    )


_ICE_DENSITY_G_M3 = 917e3
_BC_MAC_550_M2_G = 7.5  # Bond & Bergstrom (2006), absorption Angstrom exponent 1


def _gen_snow(split: str) -> ClassPool:
    """Snow spherical albedo from asymptotic radiative transfer (Kokhanovsky & Zege 2004).

    r = exp(-3.6 sqrt((a_ice + a_bc) d)), a_ice = 4 pi k/l with k from Warren & Brandt
    (2008), d the optical grain diameter (0.1 mm fresh snow to 2 mm old coarse snow; the
    grain-size darkening in the NIR/SWIR of Wiscombe & Warren 1980), a_bc the black
    carbon absorption per volume of ice (1-300 ppbw; darkens the visible, Warren &
    Wiscombe 1980). Albedo stands in for the nadir reflectance (no BRDF).
    """
    rng = np.random.default_rng([_SEED, 3, SPLITS.index(split)])
    n = _N_PUBLISHED
    d_um = _draw_split_param(rng, 100.0, 2000.0, split, n)
    bc_ppbw = _loguniform(rng, 1.0, 300.0, n)
    wl_m = WAVELENGTHS_NM * 1e-9
    a_ice = 4.0 * math.pi * _loginterp(_ICE_K, WAVELENGTHS_NM) / wl_m
    a_bc = _BC_MAC_550_M2_G * (550.0 / WAVELENGTHS_NM) * _ICE_DENSITY_G_M3 * bc_ppbw[:, None] * 1e-9
    refl = np.exp(-3.6 * np.sqrt((a_ice[None, :] + a_bc) * d_um[:, None] * 1e-6))
    ref = "ART snow KokhanovskyZege2004; ice k WarrenBrandt2008; BC BondBergstrom2006"
    return _published(
        "snow_ice",
        refl,
        np.stack([d_um, bc_ppbw], axis=1),
        ("grain_diameter_um", "bc_ppbw"),
        ref,
        split,
    )


def _gen_cloud(split: str) -> ClassPool:
    """Cloud-top reflectance of an optically thick layer over a dark surface.

    R = R_inf(l) (1 - t), t = 1 / (1.07 + 0.75 (1-g) tau) (conservative diffuse
    transmittance), R_inf = exp(-4 sqrt(beta / (3 (1-g)))) (Kokhanovsky 2004, Earth-Sci.
    Rev. 64, 189), beta = 0.5 (1 - exp(-1.68 a r_e)) ~ 0.84 a r_e the absorption per
    extinction of large spheres. 70 % liquid (g 0.85, r_e 5-20 um, k of water, Hale &
    Querry 1973), 30 % ice (g 0.75, r_e 20-60 um, k of ice, Warren & Brandt 2008): ice
    absorbs about 3x more at 1.6 um, so ice tops are darker in B11/B12.
    """
    rng = np.random.default_rng([_SEED, 4, SPLITS.index(split)])
    n = _N_PUBLISHED
    tau = _draw_split_param(rng, 5.0, 120.0, split, n)
    ice = rng.random(n) < 0.3
    r_e_um = np.where(ice, rng.uniform(20.0, 60.0, n), rng.uniform(5.0, 20.0, n))
    g = np.where(ice, 0.75, 0.85)[:, None]
    wl_m = WAVELENGTHS_NM * 1e-9
    a_ice = 4.0 * math.pi * _loginterp(_ICE_K, WAVELENGTHS_NM) / wl_m
    a_liq = _loginterp(_WATER_A, WAVELENGTHS_NM)
    a = np.where(ice[:, None], a_ice[None, :], a_liq[None, :])
    beta = 0.5 * (1.0 - np.exp(-1.68 * a * r_e_um[:, None] * 1e-6))
    r_inf = np.exp(-4.0 * np.sqrt(beta / (3.0 * (1.0 - g))))
    t = 1.0 / (1.07 + 0.75 * (1.0 - g) * tau[:, None])
    traits = np.stack([tau, r_e_um, ice.astype(np.float64)], axis=1)
    ref = "ART cloud Kokhanovsky2004; k HaleQuerry1973/WarrenBrandt2008"
    return _published("cloud", r_inf * (1.0 - t), traits, ("tau", "r_eff_um", "ice"), ref, split)


# ---------------------------------------------------------------- pools

_BUILDERS = {
    "water": _gen_water,
    "vegetation": _vegetation,
    "bare_soil": lambda s: _plain("bare_soil", "bare", s, by_site=True),
    "cloud": _gen_cloud,
    "snow_ice": _gen_snow,
    "urban": lambda s: _plain("urban", "built", s),
    "burned": _burned,
    "flood_water": _gen_flood_water,
}


def _read_only(pool: ClassPool) -> ClassPool:
    for arr in (pool.reflectance, pool.traits):
        arr.setflags(write=False)
    return pool


@functools.cache
def _pool(name: str, split: str) -> ClassPool:
    pool = _BUILDERS[name](split)
    if pool.reflectance.shape[0] == 0:
        raise RuntimeError(f"empty {split} pool for {name}")
    return _read_only(pool)


@functools.lru_cache(maxsize=64)
def _load_pools_cached(classes: tuple[str, ...], split: str) -> tuple[tuple[str, ClassPool], ...]:
    return tuple((c, _pool(c, split)) for c in classes)


def load_pools(classes: tuple[str, ...], split: str) -> dict[str, ClassPool]:
    """Spectra pools for the named classes in one split (cached, deterministic, read-only)."""
    classes = tuple(classes)
    for c in classes:
        if c not in _BUILDERS:
            raise ValueError(f"unknown class {c!r}; known: {', '.join(_BUILDERS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return dict(_load_pools_cached(classes, split))


# ---------------------------------------------------------------- band model

_FINE_NM = np.arange(WAVELENGTHS_NM[0], WAVELENGTHS_NM[-1] + 0.5, 1.0)


@functools.lru_cache(maxsize=1)
def _interp_operator() -> np.ndarray:
    """(n_fine, n_w) linear interpolation from the library grid onto a 1 nm grid."""
    w = WAVELENGTHS_NM
    j = np.clip(np.searchsorted(w, _FINE_NM, side="right") - 1, 0, w.size - 2)
    t = (_FINE_NM - w[j]) / (w[j + 1] - w[j])
    op = np.zeros((_FINE_NM.size, w.size))
    rows = np.arange(_FINE_NM.size)
    op[rows, j] = 1.0 - t
    op[rows, j + 1] += t
    op.setflags(write=False)
    return op


def band_response(bands: int, centre_shift_nm: np.ndarray | None = None) -> np.ndarray:
    """(n_w, bands) Gaussian band responses as weights on WAVELENGTHS_NM, columns sum to 1.

    Each Gaussian (FWHM = S2 bandwidth, centre + optional shift, e.g. a filter shift) is
    sampled on a 1 nm grid and integrated against the spectrum linearly interpolated
    from the library grid: the weights are that interpolation operator's transpose times
    the Gaussian. A band inside a library gap (B10, 1373 nm) therefore sees the straight
    line across the gap between 1350 and 1460 nm, the surface reflectance there; the
    strong water-vapour absorption that makes B10 dark from orbit is the atmosphere's
    job, not the surface's. Responses are truncated at 400 and 2450 nm and renormalised.
    """
    spec = band_set(bands)
    centre = np.array([b[1] for b in spec])
    fwhm = np.array([b[2] for b in spec])
    if centre_shift_nm is not None:
        shift = np.asarray(centre_shift_nm, dtype=np.float64)
        if shift.shape != (bands,):
            raise ValueError(f"centre_shift_nm must have shape ({bands},), got {shift.shape}")
        if not np.isfinite(shift).all():
            raise ValueError("centre_shift_nm must be finite")
        centre = centre + shift
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    g = np.exp(-0.5 * ((_FINE_NM[:, None] - centre[None, :]) / sigma[None, :]) ** 2)
    resp = _interp_operator().T @ g
    total = resp.sum(axis=0)
    if np.any(total < 1e-9):
        raise ValueError("a band response lies outside the library's 400-2450 nm range")
    return resp / total


def to_bands(reflectance: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Band-averaged reflectance: (n, n_w) @ (n_w, bands) -> (n, bands); (n_w,) -> (bands,)."""
    r = np.asarray(reflectance, dtype=np.float64)
    if r.shape[-1] != response.shape[0]:
        raise ValueError(f"reflectance has {r.shape[-1]} wavelengths, response {response.shape[0]}")
    return r @ response


# ---------------------------------------------------------------- phenology

_SEASON_WIDTH = 0.25  # Gaussian kernel width in trait-quantile units


def season_weights(pool: ClassPool, green_fraction: float) -> np.ndarray:
    """Sampling weights (sum 1) over a pool's spectra for a phenology state in [0, 1].

    A dormant or senescent canopy (0) has few leaves and little chlorophyll; a peak-green
    one (1) many of both. Each canopy's LAI and CHL are turned into within-pool
    quantiles q, and w ~ exp(-((q_LAI - g)^2 + (q_CHL - g)^2) / (2 * 0.25^2)). Quantiles
    keep the weighting independent of the PROSAIL parameter ranges. Pools without LAI
    and CHL traits get uniform weights.
    """
    gf = float(green_fraction)
    if not math.isfinite(gf):
        raise ValueError(f"green_fraction must be finite, got {green_fraction}")
    gf = min(max(gf, 0.0), 1.0)
    n = pool.reflectance.shape[0]
    if not {"lai", "chl_ug_cm2"} <= set(pool.trait_names) or n < 2:
        return np.full(n, 1.0 / n)
    d2 = np.zeros(n)
    for trait in ("lai", "chl_ug_cm2"):
        x = pool.traits[:, pool.trait_names.index(trait)]
        q = np.argsort(np.argsort(x, kind="stable"), kind="stable") / (n - 1.0)
        d2 += (q - gf) ** 2
    w = np.exp(-0.5 * d2 / _SEASON_WIDTH**2)
    return w / w.sum()
