"""The mission configuration schema: typed, frozen, SI units, every key documented.

One `MissionConfig` describes a mission end to end (orbit, power, executive,
payload, model, optimizer device, ground segment, onboard RAM budget, seed). It is
built only through `flight_sw.config.loader`, which rejects unknown keys, wrong
types and out-of-range values with the file, the key path and what was expected.
Cross-field rules (e.g. reserve above floor) live in `check_consistency` so they
are reported the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from flight_sw.config.fields import param

Mode = Literal["SAFE", "NOMINAL", "TRAINING"]
MODES: tuple[str, ...] = ("SAFE", "NOMINAL", "TRAINING")


@dataclass(frozen=True, kw_only=True)
class MissionInfo:
    name: str = param(doc="Mission name shown in reports.")
    start_utc: datetime = param(doc="Simulation start, ISO 8601 UTC (e.g. 2026-03-01T00:00:00Z).")
    seed: int = param(doc="Mission seed; every component's generator is spawned from it.", ge=0)
    duration_days: float = param(
        3.0, doc="Default simulated length of `flightsim run`.", unit="day", gt=0, le=366
    )


@dataclass(frozen=True, kw_only=True)
class OrbitConfig:
    tle_line1: str = param(doc="TLE line 1 (69 characters, checksum checked).")
    tle_line2: str = param(doc="TLE line 2 (69 characters, checksum checked).")
    tle_max_age_days: float = param(
        14.0,
        doc="Warn when the simulation runs further than this from the TLE epoch "
        "(SGP4 error grows ~1-3 km/day in LEO).",
        unit="day",
        gt=0,
    )


@dataclass(frozen=True, kw_only=True)
class SolarArrayConfig:
    area_m2: float = param(doc="Total cell area.", unit="m^2", gt=0, le=100)
    cell_efficiency: float = param(
        doc="Beginning-of-life cell efficiency at the reference temperature "
        "(triple-junction GaAs ~0.28-0.30).",
        gt=0,
        le=0.5,
    )
    attitude_mode: Literal["sun_pointing", "nadir_body_mounted"] = param(
        "sun_pointing",
        doc="sun_pointing: array normal tracks the sun (incidence 0). "
        "nadir_body_mounted: array on the zenith face of a nadir-pointing bus.",
    )
    temperature_coefficient_per_k: float = param(
        -0.0022, doc="Relative efficiency change per kelvin above reference.", unit="1/K", ge=-0.01, le=0
    )
    cell_temperature_k: float = param(
        323.15, doc="Operating cell temperature in sunlight.", unit="K", gt=150, lt=450
    )
    reference_temperature_k: float = param(
        301.15, doc="Temperature at which cell_efficiency is rated.", unit="K", gt=150, lt=450
    )
    degradation_per_year: float = param(
        0.0275, doc="Relative power loss per year (radiation, UV).", unit="1/yr", ge=0, lt=0.5
    )
    solar_constant_w_m2: float = param(
        1361.0, doc="Total solar irradiance at 1 AU (Kopp & Lean 2011).", unit="W/m^2", gt=1000, lt=1500
    )


@dataclass(frozen=True, kw_only=True)
class BatteryConfig:
    capacity_wh: float = param(doc="Usable capacity at beginning of life.", unit="Wh", gt=0, le=100000)
    charge_efficiency: float = param(0.95, doc="Fraction of charge power stored.", gt=0, le=1)
    discharge_efficiency: float = param(0.95, doc="Fraction of stored energy delivered.", gt=0, le=1)
    initial_soc: float = param(0.9, doc="State of charge at simulation start.", ge=0, le=1)
    floor_soc: float = param(
        0.3,
        doc="Optional work is shed before the state of charge reaches this floor "
        "(end-of-life depth-of-discharge limits are ~35% or less).",
        ge=0,
        lt=1,
    )
    reserve_soc: float = param(
        0.6, doc="Each orbit's budget keeps enough to end the orbit at or above this.", gt=0, le=1
    )
    safe_mode_soc: float = param(
        0.25, doc="Below this the flight software enters SAFE mode.", ge=0, lt=1
    )
    capacity_fade_per_year: float = param(
        0.0, doc="Relative capacity loss per year (optional).", unit="1/yr", ge=0, lt=0.5
    )


@dataclass(frozen=True, kw_only=True)
class BudgetConfig:
    margin_j: float = param(
        2000.0, doc="Energy held back from each orbit's optional budget.", unit="J", ge=0
    )
    horizon_orbits: int = param(3, doc="Orbits predicted ahead by the onboard predictor.", ge=1, le=32)
    eclipse_policy: Literal["never", "soc_margin", "always"] = param(
        "soc_margin",
        doc="Optional work in eclipse: never; only with state of charge above "
        "reserve_soc + eclipse_soc_margin; or always (budget permitting).",
    )
    eclipse_soc_margin: float = param(0.1, doc="See eclipse_policy.", ge=0, le=1)


@dataclass(frozen=True, kw_only=True)
class PowerConfig:
    solar_array: SolarArrayConfig = param(doc="Solar array.")
    battery: BatteryConfig = param(doc="Battery.")
    budget: BudgetConfig = param(BudgetConfig(), doc="Per-orbit optional-energy budget.")
    bus_base_load_w: float = param(
        doc="Always-on essential load (OBC, ADCS, thermal, receiver).", unit="W", ge=0
    )


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    name: str = param(doc="Unique task name.")
    kind: Literal[
        "housekeeping", "power_monitor", "budget_update", "inference", "label_collect", "teacher_label", "training",
        "tc_handler", "calibration", "adaptation", "device_health",
    ] = param(doc="What the task does (binds it to its implementation).")
    period_s: float = param(doc="Run period; a multiple of the minor frame.", unit="s", gt=0)
    offset_s: float = param(0.0, doc="Offset within the period; < period_s.", unit="s", ge=0)
    compute_budget_s: float = param(
        doc="Modelled compute time allowed per run; overruns are counted.", unit="s", gt=0
    )
    energy_j: float = param(doc="Energy drawn per run, on top of the bus base load.", unit="J", ge=0)
    criticality: Literal["essential", "optional"] = param(
        doc="essential tasks never starve; optional ones run only inside the energy budget."
    )
    modes: tuple[Mode, ...] = param(doc="Modes the task may run in.", min_len=1)
    priority: int = param(10, doc="Lower runs first within a minor frame.", ge=0, le=255)


@dataclass(frozen=True, kw_only=True)
class ExecutiveConfig:
    minor_frame_s: float = param(1.0, doc="Minor frame length.", unit="s", gt=0, le=60)
    frames_per_major: int = param(60, doc="Minor frames per major frame.", ge=1, le=100000)
    initial_mode: Mode = param("TRAINING", doc="Mode at start-up.")
    cpu_flops_per_s: float = param(
        1e8,
        doc="Modelled flight-CPU throughput used to cost compute (ARM Cortex-A9 class; "
        "OPS-SAT ran ~5 s per learning iteration on one).",
        unit="FLOP/s",
        gt=0,
    )


@dataclass(frozen=True, kw_only=True)
class FdirConfig:
    overrun_limit: int = param(
        5,
        doc="Overruns of one task within overrun_window_s that step the mode down "
        "(F Prime health: warn after 3, fail after 5 missed pings).",
        ge=1,
        le=1000,
    )
    overrun_window_s: float = param(600.0, doc="Window for counting overruns.", unit="s", gt=0)
    watchdog_grace_s: float = param(
        0.5, doc="Real-time mode: a task still running this long after its frame ends is declared hung.",
        unit="s", gt=0, le=60,
    )
    device_check_initial_s: float = param(
        60.0, doc="A FAILED optimizer device gets its first health check (the driver's self-test: a "
        "canary problem with a known answer) this long after the failure is seen, by the "
        "`device_health` task, in every mode.", unit="s", gt=0, le=86400,
    )
    device_check_max_s: float = param(
        3600.0, doc="Each failed check doubles the wait before the next, up to this (a dead device "
        "costs a self-test an hour; one that comes back is in service within this).", unit="s", gt=0,
        le=864000,
    )
    boot_escalation_count: int = param(
        3, doc="Consecutive boots that each end before boot_stable_s of uptime which set the persistent "
        "safe latch: the satellite then boots into SAFE until a ground mode command (a reset loop must "
        "not keep re-running whatever crashed it).", ge=2, le=255,
    )
    monitor_slots: int = param(32, doc="On-board monitoring definitions (PUS service 12) the table holds.",
                               ge=1, le=1024)
    event_action_slots: int = param(32, doc="Event-action definitions (PUS service 19) the table holds.",
                                    ge=1, le=1024)
    boot_stable_s: float = param(
        600.0, doc="Uptime after which a boot counts as stable and the escalation count restarts.",
        unit="s", gt=0, le=864000,
    )


@dataclass(frozen=True, kw_only=True)
class DriftConfig:
    """What changes in orbit (simulator truth; the flight software never reads it).

    Each scenario of the learning suite (mission_configs/scenarios/, docs/learning.md)
    sets a few of these keys; the defaults are a healthy sensor over a static scene
    except for slow ageing and the season.
    """

    gain_decay_per_day: float = param(
        0.002, doc="Relative per-band detector gain loss per day (ageing), weighted 1.5 (blue) to 0.5 "
        "(SWIR). Published MSI/OLI trending is ~1 %/year or less (2.7e-5/day).", unit="1/day", ge=0, lt=0.1
    )
    dark_offset_growth_per_day: float = param(
        0.0005, doc="Dark-offset growth per day, in reflectance units.", unit="1/day", ge=0, lt=0.1
    )
    abrupt_shift_day: float | None = param(
        None, doc="Day of an abrupt detector shift (e.g. a radiation event); null for none.", unit="day", ge=0
    )
    abrupt_gain_factor: float = param(
        0.8, doc="Gain multiplier applied to the affected bands at the abrupt shift.", gt=0, le=2
    )
    abrupt_bands: tuple[int, ...] = param(
        (3, 4, 5, 6, 7), doc="Band indices (0-based) whose gain steps at the abrupt shift (default: the "
        "red-edge/NIR module B5-B8A)."
    )
    abrupt_detector_fraction: float = param(
        1.0, doc="Share of detector columns whose gain steps at the abrupt shift (1: the whole module).",
        gt=0, le=1,
    )
    hot_pixel_fraction: float = param(
        0.0, doc="Share of detector columns that turn hot at the abrupt shift (radiation damage).", ge=0, le=1
    )
    hot_pixel_offset: float = param(
        0.1, doc="Dark-signal increase of a hot column, reflectance units (all bands).", ge=0, lt=1
    )
    dsnu_sigma: float = param(
        0.0, doc="Dark-signal non-uniformity added per column and band at the abrupt shift, "
        "reflectance units (1 sigma).", ge=0, lt=1
    )
    filter_shift_nm: float = param(
        0.0, doc="Centre-wavelength shift of the bands in `filter_shift_bands` once complete "
        "(interference-filter ageing; not correctable by a per-band gain).", unit="nm", ge=-100, le=100
    )
    filter_shift_bands: tuple[int, ...] = param(
        (3, 4), doc="Band indices (0-based) whose filters shift (default: red edge B5, B6)."
    )
    filter_shift_day: float | None = param(
        None, doc="Day the filter shift starts; null for none.", unit="day", ge=0
    )
    filter_shift_ramp_days: float = param(
        2.0, doc="Days over which the filter shift grows linearly to its full value.", unit="day", gt=0
    )
    seasonal_amplitude: float = param(
        0.1, doc="Amplitude of the yearly change of the class mix (snow against vegetation).", ge=0, le=1
    )
    phenology: bool = param(
        False, doc="Vegetation follows the season (green in July, dormant in January, northern "
        "hemisphere): canopy spectra are drawn by leaf area and chlorophyll for the date."
    )
    new_surface_day: float | None = param(
        None, doc="Day a new surface appears in the scene after an event; null for none.", unit="day", ge=0
    )
    new_surface_kind: Literal["burned", "flood"] = param(
        "burned", doc="burned: fresh burn scars (char; true class bare_soil). flood: turbid flood "
        "water (true class water)."
    )
    new_surface_fraction: float = param(
        0.15, doc="Share of ordinary scene pixels that show the new surface after the event.", ge=0, le=1
    )
    diffuser_characterisation_sigma: float = param(
        0.005, doc="Error of the sun diffuser's pre-flight reflectance characterisation, per band "
        "(1 sigma, relative; MSI and OLI quote about 1 % for their diffuser BRDF).", ge=0, lt=0.2
    )
    diffuser_degradation_per_view: float = param(
        7.5e-5, doc="Relative loss of diffuser reflectance per full view at the blue end (0.1 of it "
        "at the SWIR end): UV darkening. Order of magnitude of Landsat 8 OLI's working diffuser, "
        "about 1.5 % at 443 nm after some 200 weekly views.", ge=0, lt=0.01
    )


@dataclass(frozen=True, kw_only=True)
class PayloadConfig:
    bands: int = param(10, doc="Spectral bands (Sentinel-2 MSI bands, sim.spectra.band_set; 8-13).", ge=8, le=13)
    classes: tuple[str, ...] = param(
        ("water", "vegetation", "bare_soil", "cloud", "snow_ice", "urban"),
        doc="Surface classes the model labels.",
        min_len=2,
    )
    samples_per_acquisition: int = param(
        16, doc="Pixels classified per inference run.", ge=1, le=4096
    )
    noise_sigma: float = param(0.01, doc="Sensor noise, reflectance units.", ge=0, lt=1)
    site_map_accuracy: float = param(
        0.9,
        doc="Overall accuracy of the reference land-cover maps of the calibration sites, uplinked "
        "before launch (the site labels are the map's class at the pixel's onboard geolocation). "
        "Curated site maps; global products reach 74-77 % (ESA WorldCover 2020/2021).",
        gt=0,
        le=1,
    )
    geolocation_sigma_px: float = param(
        0.7, doc="Onboard geolocation error, 1 sigma per axis, in site-map cells (wrong labels at "
        "class boundaries).", ge=0, le=10
    )
    label_sources: tuple[Literal["site", "teacher", "self"], ...] = param(
        ("site", "teacher"),
        doc="Label sources the onboard learner trains on: site (reference map at calibration "
        "sites), teacher (the larger onboard model, `teacher_label` tasks), self (its own "
        "confident predictions on inference frames).",
    )
    self_training_margin: float = param(
        0.5, doc="Self-training: a prediction becomes a label when its score margin over the "
        "runner-up exceeds this value.", gt=0
    )
    detector_columns: int = param(
        1024, doc="Detector columns of the push-broom array; each pixel comes from one (its ancillary "
        "data name it) and the radiometric calibration keeps a gain and an offset per column and band.",
        ge=16, le=8192,
    )
    drift: DriftConfig = param(DriftConfig(), doc="What changes in orbit (simulator truth).")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    hidden_units: int = param(32, doc="Hidden layer of the ground-trained MLP feature extractor.", ge=2, le=1024)
    feature_dim: int = param(32, doc="Feature extractor output size (head input).", ge=2, le=1024)
    ridge_lambda: float = param(1e-2, doc="Ridge regularisation of the head solve.", gt=0)
    forgetting_factor: float = param(
        0.995, doc="Exponential forgetting of the head statistics per labelled batch.", gt=0, le=1
    )
    replay_buffer_size: int = param(
        256, doc="Labelled samples held back for validation.", ge=8, le=1_000_000
    )
    validation_margin: float = param(
        0.0, doc="A candidate must beat the active head by this accuracy margin.", ge=0, le=1
    )
    validation_z: float = param(
        2.0, doc="A candidate must also win the paired comparison on the held-back samples where the "
        "two heads disagree, weighted by each label source's reliability (2 r - 1 for a source right "
        "with probability r), by this many standard deviations (McNemar-style; 2 ~ 98 % one-sided). "
        "Noisy labels cannot tell a 1-point difference on 96 samples: below this, keep the active head. "
        "About 150 candidates a day meet the same ring, so some pass by chance; 3 was measured and lost "
        "0.1-0.3 points in every scenario (docs/learning.md, 'Gate thresholds').",
        ge=0, le=10,
    )
    gate_on_teacher_labels: bool = param(
        True, doc="Let held-back teacher labels judge candidates too (weighted by the teacher's "
        "pre-launch validation precision). A candidate trained on teacher labels learns the "
        "teacher's (spectral, systematic) errors, so the teacher's held-back labels lean towards "
        "it; the held-back site labels (map errors are tied to places, not spectra) keep a veto: "
        "a candidate they do not favour is refused. Off: site labels alone judge.",
    )
    min_new_labels: int = param(
        32, doc="Labelled samples needed since the last update before training.", ge=1
    )
    prior_anchor: float = param(
        0.1,
        doc="Share of the ground's pre-launch statistics kept in every solve and never forgotten "
        "(continual-learning anchor against forgetting; 0 disables).",
        ge=0,
        le=1,
    )
    precondition_kappa_max: float = param(
        4.0,
        doc="The head statistics are kept in a whitened basis (flight_sw/ml/precondition.py); "
        "when the Lanczos estimate of the condition number of the head system exceeds this "
        "value before a solve, the basis is refreshed (one digital Cholesky). An analog "
        "optimizer needs kappa x (its relative error) << 1: at ~0.5 % error, kappa <= 5 "
        "reaches the 1e-6 residual in 3 refinement rounds (docs/analog_device.md).",
        ge=1.5,
        le=1e12,
    )
    layer_units: int = param(
        4, doc="Training beyond the head (flight_sw/ml/layer_update.py): units of the extractor's last "
        "layer each update may change, chosen by the data (largest Gauss-Newton gradient). 0: head only. "
        "The layer system has layer_units x layer_basis unknowns and one right-hand side.", ge=0, le=64,
    )
    layer_basis: int = param(
        12, doc="Principal directions of the hidden activations a unit's weight change may use (10 bands "
        "through 32 ReLU units span about 10; the rest is noise and conditioning).", ge=1, le=256,
    )
    layer_ring_size: int = param(
        96, doc="Recent training samples (not the held-back ones) a layer update is fitted on.", ge=8, le=65_536,
    )
    layer_interval_labels: int = param(
        2048, doc="New training samples between two layer updates (about 20 a day on the default orbit): "
        "each candidate is another chance for the gate to pass a change by luck, and each costs a "
        "training task run.", ge=1,
    )
    layer_ridge: float = param(
        0.05, doc="Ridge of the layer system in the whitened basis: a penalty on how far a changed unit's "
        "output moves, per unit of its variance (the anchor against forgetting).", gt=0,
    )
    layer_gate_z: float = param(
        2.0, doc="A candidate layer must win the reliability-weighted paired comparison on the held-back "
        "labels by this many standard deviations (as model.validation_z for a head).", ge=0, le=10,
    )
    teacher_hidden: tuple[int, ...] = param(
        (64, 64), doc="Hidden layers of the onboard teacher model (a larger float32 MLP trained on the "
        "ground with augmentation; flight_sw/ml/teacher.py); sizes its weights in the memory plan."
    )
    drift_threshold: float = param(
        3.0,
        doc="Label-free drift monitor: Page-Hinkley alarm threshold on the cumulative rise of the "
        "per-batch median spectral angle to the class reference spectra, above what a healthy "
        "sensor shows at the frame's sun elevation.",
        unit="deg",
        gt=0,
    )
    drift_delta: float = param(
        1.0,
        doc="Label-free drift monitor: rises smaller than this per batch are ignored "
        "(a healthy sensor's batch medians scatter by ~0.3-0.5 deg about the per-class fit above 25 deg sun).",
        unit="deg",
        ge=0,
    )
    drift_forget: float = param(
        0.5,
        doc="On a drift alarm the head statistics are scaled by this factor so new labels "
        "dominate, and the next labels start an update at once.",
        gt=0,
        le=1,
    )


@dataclass(frozen=True, kw_only=True)
class RadiometryConfig:
    """Onboard radiometric self-calibration (flight_sw/ml/radiometry.py, the `calibration` task).

    Dark signal per detector column and band from dark readings on the night side; gain per
    column and band from sun-diffuser readings when the geometry allows; a versioned table
    in A/B slots, gated and rolled back like the model. Without a `calibration` task in the
    schedule the table stays the identity.
    """

    chunk_columns: int = param(
        128, doc="Detector columns read per calibration task run (bounds the step and its buffer).",
        ge=1, le=8192,
    )
    diffuser_period_days: float = param(
        30.0, doc="Routine sun-diffuser calibration interval (Sentinel-2 MSI: about monthly; each view "
        "darkens the diffuser a little). A drift alarm asks for one at the next window.", unit="day", gt=0,
    )
    dark_sweep_interval_s: float = param(
        900.0, doc="Least time from the end of one dark sweep to the start of the next: two or three "
        "sweeps a night keep the dark estimate (every reading costs the task's energy).", unit="s", ge=0,
    )
    dark_ema: float = param(
        0.1, doc="Weight of a new dark reading in the running dark estimate of its column (read "
        "noise shrinks to a quarter; a dark-signal change settles over a few nights, a jump at once).",
        gt=0, le=1
    )
    dark_jump: float = param(
        0.008, doc="A dark reading this far from its column's estimate replaces it at once (a "
        "radiation event: hot columns), reflectance units (~6x the co-added read noise of 0.00125, "
        "so noise alone almost never does it).", gt=0, lt=1,
    )
    hot_threshold: float = param(
        0.02, doc="Dark signal above which a column and band count as hot (reported; still corrected).",
        gt=0, lt=1,
    )
    min_change: float = param(
        0.005, doc="A candidate table is only worth activating if some band's mean gain moves by "
        "this much, or 0.5 % of the column-bands move their gain by 4x this or their offset by "
        "`dark_jump` (below that it is noise and diffuser bias, not drift).", gt=0, lt=1,
    )
    max_heldback_drop: float = param(
        0.05, doc="Refuse a candidate table under which the active model loses more than this accuracy "
        "on the held-back site labels collected since the calibration was asked for (site labels only: "
        "the teacher labels drifted pixels through the old table, so its labels side with it); after a "
        "commit, roll back if the next site labels favour the previous table by more than this.",
        ge=0, le=1,
    )


@dataclass(frozen=True, kw_only=True)
class AdaptationConfig:
    """Label-free adaptation of the input normalisation (flight_sw/ml/adaptation.py, the
    `adaptation` task): per-band statistics of recent daylight pixels matched to a flight
    reference window, judged on held-back labels like a head. Without an `adaptation` task
    in the schedule the image's normalisation stays."""

    window_pixels: int = param(
        20000, doc="Pixels per statistics window (the first is the reference; each later one gives a "
        "candidate). The default mission's inference and extra imaging give 20,000 daylight pixels in "
        "about 6 hours (four orbits): the scene mix averages out to a few percent per band.",
        ge=1000, le=100_000_000,
    )
    min_sun_elevation_deg: float = param(
        25.0, doc="Frames under this sun elevation stay out of the window (as in the drift monitor: noise "
        "and shadows dominate there).", unit="deg", ge=0, lt=90,
    )
    min_change: float = param(
        0.04, doc="A candidate is only judged if some band's scale moves by this ratio or its mean by this "
        "many image band standard deviations against the active normalisation (the window-to-window "
        "scatter of the scene mix is 0.01-0.03 in the default mission).", gt=0, lt=1,
    )
    min_gate_z: float = param(
        2.0, doc="Least reliability-weighted paired statistic of the candidate against the active "
        "normalisation on the held-back labels. About 4 candidates a day: at 2 (one-sided 2.3 %) a "
        "normalisation that is no better passes about 0.1 times a day, at 1 (16 %) about 0.6 times; one "
        "such commit, following a new surface, cost 2 points for the rest of a 10-day run (at 0, ties "
        "commit and every commit makes the head forget).", ge=-10, le=10,
    )
    watch_drop: float = param(
        0.05, doc="After a commit, roll back when the next site labels favour the previous normalisation "
        "by more than this accuracy.", ge=0, le=1,
    )


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    """The optimizer behind `solve(Q, B)`: digital Cholesky, or the analog device + driver.

    Keys come in three groups. `driver_*`: the flight driver (flight_sw.devices.driver).
    `analog_*`: the physical device; the simulator's emulator (sim.analog) is built from
    them, and the driver uses `analog_drift_t0_s`. `fault_*`: faults the emulator injects
    at random (all off by default). Literature values behind the defaults: IBM aihwkit's
    published presets (7-bit input DAC, 9-bit output ADC, output noise 0.04-0.1 of full
    scale, PCM programming noise 1-4% of g_max = 25 uS, read noise 1-2%, drift
    g(t) = g0 (t/t0)^-nu with t0 = 20 s, nu ~0.05-0.1), Sun & Ielmini (PNAS 2019, IEEE TED
    2020: one-step feedback solver, settling ~ 1/lambda_min), Le Gallo et al. (Nat.
    Electron. 2018: mixed-precision refinement), Song et al. (Science 2024: multi-array
    error-compensated programming), Zuo et al. (Nat. Electron. 2025: RRAM write-verify,
    FP32-level results in ~3 refinement rounds). docs/analog_device.md has the model.
    """

    backend: Literal["digital", "analog"] = param(
        "digital",
        doc="Optimizer backend: digital (Cholesky on the flight CPU) or analog (the analog "
        "device behind the fault-tolerant driver, with the digital solver as its fallback).",
    )
    digital_energy_per_flop_j: float = param(
        1e-9,
        doc="Reference flight-CPU energy per floating-point operation (ARM Cortex-A9 class, "
        "~0.5 W at ~0.5 GFLOP/s); costs the fallback and the driver's digital work.",
        unit="J",
        gt=0,
    )
    url: str = param(
        "inproc://",
        doc="Where the analog device is: inproc:// (emulator in the host process), "
        "tcp://HOST:PORT (HIL bench, `flightsim hil serve`) or serial:///dev/NAME[?baud=N].",
    )
    # -- driver ---------------------------------------------------------------------
    driver_residual_tolerance: float = param(
        1e-6,
        doc="Acceptance gate: a solution is used only if ||QX-B||_F/||B||_F is at or below this "
        "(analog and fallback alike).",
        gt=0,
        lt=1,
    )
    driver_max_rounds: int = param(
        6, doc="Analog refinement rounds per solve before giving up (Zuo et al. 2025: ~3 suffice).", ge=1, le=64
    )
    driver_max_retries: int = param(
        3, doc="Failed device rounds retried per solve (with backoff) before the fallback.", ge=0, le=20
    )
    driver_backoff_base_s: float = param(
        0.01, doc="First retry backoff; booked in modelled time, never slept by flight code.", unit="s", ge=0, le=10
    )
    driver_backoff_factor: float = param(2.0, doc="Backoff growth per retry.", ge=1, le=10)
    driver_reply_timeout_s: float = param(
        0.5, doc="Silence on the link after which a reply counts as missing.", unit="s", gt=0, le=60
    )
    driver_settle_timeout_s: float = param(
        0.01, doc="Settling time the device may use per solve command before reporting a timeout.", unit="s", gt=0, le=10
    )
    driver_initial_out_range: float = param(
        8.0,
        doc="Initial output (ADC) full scale in normalised units; auto-ranged after each round, "
        "x8 on saturation.",
        gt=0,
        le=1e5,
    )
    driver_stall_ratio: float = param(
        0.7,
        doc="A round that leaves more than this fraction of the residual counts as failed "
        "(retried, matrix reprogrammed).",
        gt=0,
        lt=1,
    )
    driver_degrade_after: int = param(
        3, doc="Consecutive failed analog solves before health DEGRADED (FSFW-style counting).", ge=1, le=1000
    )
    driver_fail_after: int = param(
        6, doc="Consecutive failed analog solves before health FAILED (fallback only).", ge=1, le=1000
    )
    driver_recover_after: int = param(
        3, doc="Clean analog solves that lift DEGRADED back to OK.", ge=1, le=1000
    )
    driver_selftest_period_solves: int = param(
        20, doc="While DEGRADED/FAILED, run the canary self-test every this many solves.", ge=1, le=100000
    )
    driver_canary_raw_tolerance: float = param(
        0.1, doc="Largest relative residual of the canary's first (unrefined) device answer.", gt=0, le=1
    )
    driver_calibration_period_s: float = param(
        5700.0,
        doc="Reference read + digital gain correction period (once per ~95 min orbit: drift "
        "costs ~24% of the conductance per orbit at nu = 0.05).",
        unit="s",
        gt=0,
    )
    driver_calibration_gain_threshold: float = param(
        0.1,
        doc="Reprogram the reference (and a cached matrix) when its gain moved more than this.",
        gt=0,
        lt=1,
    )
    driver_skip_after_nonconverged: int = param(
        2,
        doc="Consecutive non-converged solves with a passing self-test (the problem, not the "
        "device, is at fault) before the analog path is skipped for a while.",
        ge=1,
        le=1000,
    )
    driver_skip_solves: int = param(
        20, doc="Solves sent straight to the fallback after such a skip decision.", ge=0, le=100000
    )
    driver_solve_time_budget_s: float = param(
        1.0,
        doc="Modelled time (device, timeouts, backoff) an analog attempt may take before the fallback.",
        unit="s",
        gt=0,
    )
    driver_energy_aware: bool = param(
        True, doc="Energy rule: a problem shape (n, m) goes to the digital solver while the analog path's "
        "measured energy on it exceeds a Cholesky's (the head's n = 33, m = 6 systems today; the last "
        "layer's one-column systems stay on the device). On by default: with it the mission's solves cost "
        "less than all-digital (docs/analog_device.md §5). Off: every problem tries the device first "
        "(HIL benches that exercise the device on every solve).",
    )
    driver_energy_probe_solves: int = param(
        50, doc="With the energy rule: one solve in this many of a shape sent digital goes to the device "
        "anyway, so its measured energy stays current (a warmer device, a smaller problem).", ge=1, le=100000,
    )
    # -- the physical device (emulated in sim/analog) ----------------------------------------
    analog_n_max: int = param(64, doc="Array size: largest n the device can program.", ge=1, le=4096)
    analog_dac_bits: int = param(
        8, doc="DAC resolution of the programmed conductances (codes per slice).", ge=2, le=16
    )
    analog_input_bits: int = param(
        12,
        doc="Resolution of the right-hand-side input DACs. aihwkit's inference tiles use 7 bits; a "
        "solver input is static during the settle, so a slow precise DAC is used.",
        ge=2,
        le=16,
    )
    analog_adc_bits: int = param(
        12,
        doc="Output ADC resolution. aihwkit's inference tiles use 9 bits; a settled solver output is "
        "DC, so an oversampling converter is used (see analog_adc_averages).",
        ge=2,
        le=16,
    )
    analog_program_slices: int = param(
        2,
        doc="Arrays per matrix: slice k+1 is programmed with the measured error of slices 1..k, "
        "scaled to full range (Song et al., Science 2024).",
        ge=1,
        le=4,
    )
    analog_program_noise: float = param(
        0.01,
        doc="Conductance error after write-verify, 1 sigma, fraction of g_max (aihwkit PCM: 1-4%; "
        "RRAM write-verify ~1%).",
        ge=0,
        le=0.2,
    )
    analog_verify_reads: int = param(
        1024,
        doc="Reads averaged when measuring a slice for the next slice's compensation (sets the static "
        "error floor: read_noise / sqrt(reads)).",
        ge=1,
        le=65536,
    )
    analog_read_noise: float = param(
        0.01, doc="Short-term conductance read noise per 1 us read, relative (aihwkit: 1-2%).", ge=0, le=0.2
    )
    analog_output_noise: float = param(
        0.04, doc="Output noise per ADC conversion, fraction of full scale (aihwkit: 0.04-0.1).", ge=0, le=0.5
    )
    analog_adc_averages: int = param(
        1024,
        doc="ADC conversions averaged per settled output: output noise / sqrt(N), and the read noise "
        "of the conductances is integrated over the same window.",
        ge=1,
        le=65536,
    )
    analog_g_max_s: float = param(25e-6, doc="Maximum device conductance (aihwkit PCM: 25 uS).", unit="S", gt=0)
    analog_drift_nu: float = param(
        0.05, doc="Mean drift exponent: g(t) = g0 (t/t0)^-nu (aihwkit PCM ~0.05-0.1).", ge=0, le=0.5
    )
    analog_drift_nu_std: float = param(
        0.005, doc="Device-to-device spread of the drift exponent (what a global correction leaves).", ge=0, le=0.2
    )
    analog_drift_t0_s: float = param(20.0, doc="Drift reference time after programming (aihwkit: 20 s).", unit="s", gt=0)
    analog_tau_s: float = param(
        1e-6,
        doc="Circuit time constant of the gradient flow dx/dt = -(Qx-b)/tau; settling takes "
        "~tau/lambda_min ln(1/tol) (Sun & Ielmini, IEEE TED 2020).",
        unit="s",
        gt=0,
        le=1,
    )
    analog_reference_cells: int = param(
        32, doc="Reference cells read by the calibration (global drift compensation).", ge=1, le=65536
    )
    analog_program_energy_per_cell_j: float = param(
        1e-10,
        doc="Write-verify energy per cell and slice (~10 pulses of ~10 pJ; RRAM order of magnitude, unverified).",
        unit="J",
        ge=0,
    )
    analog_program_time_per_row_s: float = param(
        1e-5, doc="Row-parallel write-verify time per row and slice.", unit="s", ge=0
    )
    analog_conversion_energy_j: float = param(
        5e-12,
        doc="Energy per DAC/ADC conversion (Walden figure of merit ~10 fJ/step at 9 bits, Murmann ADC survey).",
        unit="J",
        ge=0,
    )
    analog_conversion_time_s: float = param(1e-7, doc="Time per ADC conversion.", unit="s", ge=0)
    analog_column_power_w: float = param(
        1e-4, doc="Power of one column amplifier while settling/reading.", unit="W", ge=0
    )
    analog_read_voltage_v: float = param(0.2, doc="Read voltage across the array.", unit="V", gt=0, le=5)
    # -- faults the emulator injects at random (probability per device command) ----------------
    fault_stuck_cells: int = param(0, doc="Cells stuck at a rail from start-up (permanent).", ge=0, le=100000)
    fault_dead_rate: float = param(0.0, doc="Per command: the device stops replying (for a few commands).", ge=0, le=1)
    fault_slow_settle_rate: float = param(0.0, doc="Per command: settling 10^4 x slower (timeout).", ge=0, le=1)
    fault_no_settle_rate: float = param(0.0, doc="Per command: the circuit never settles.", ge=0, le=1)
    fault_saturate_rate: float = param(0.0, doc="Per command: outputs stuck at the rails.", ge=0, le=1)
    fault_corrupt_rate: float = param(0.0, doc="Per command: reply bytes corrupted.", ge=0, le=1)
    fault_seu_rate: float = param(0.0, doc="Per command: a bit flip in a programmed code (SEU).", ge=0, le=1)
    fault_brownout_rate: float = param(0.0, doc="Per command: brown-out mid-command (no reply, state lost).", ge=0, le=1)
    fault_wrong_output_rate: float = param(
        0.0, doc="Per command: silently wrong outputs in a well-formed reply (only the residual gate sees it).", ge=0, le=1
    )


@dataclass(frozen=True, kw_only=True)
class GroundStationConfig:
    name: str = param(doc="Station name.")
    lat_deg: float = param(doc="Geodetic latitude.", unit="deg", ge=-90, le=90)
    lon_deg: float = param(doc="Longitude, east positive.", unit="deg", ge=-180, le=360)
    alt_m: float = param(0.0, doc="Height above the WGS84 ellipsoid.", unit="m", ge=-500, le=9000)
    elevation_mask_deg: float = param(5.0, doc="Minimum elevation for contact.", unit="deg", ge=0, lt=90)


@dataclass(frozen=True, kw_only=True)
class CalibrationSiteConfig:
    name: str = param(doc="Site name.")
    lat_deg: float = param(doc="Geodetic latitude.", unit="deg", ge=-90, le=90)
    lon_deg: float = param(doc="Longitude, east positive.", unit="deg", ge=-180, le=360)
    radius_km: float = param(doc="Radius within which pixels carry the site's labels.", unit="km", gt=0, le=2000)
    class_mix: dict[str, float] = param(doc="Known class composition; fractions summing to 1.")


@dataclass(frozen=True, kw_only=True)
class GroundLoopConfig:
    """The comparison arm the simulator runs beside onboard training (not flight software)."""

    turnaround_h: float = param(
        24.0,
        doc="Ground time from receiving samples to a validated, uplink-ready model "
        "(retraining, review, scheduling).",
        unit="h",
        ge=0,
    )
    downlink_share: float = param(
        0.05, doc="Share of each contact's downlink volume given to labelled samples.", gt=0, le=1
    )
    window_samples: int = param(
        20000, doc="Most recent downlinked samples the ground retrains on.", ge=100
    )
    retrain_every_h: float = param(
        6.0,
        doc="The ground runs its retraining job at most this often, on everything received so far.",
        unit="h",
        gt=0,
    )
    onboard_store_samples: int = param(
        8192, doc="Labelled samples the satellite keeps for downlink (oldest dropped).", ge=16
    )


@dataclass(frozen=True, kw_only=True)
class DownlinkConfig:
    rate_bps: float = param(doc="Downlink data rate during contacts.", unit="bit/s", gt=0)
    queue_packets: int = param(4096, doc="Fixed downlink queue depth (rows shared by the event, high and low priority rings).", ge=3, le=10_000_000)
    tm_frame_bytes: int = param(
        1115, doc="Length of every TM Transfer Frame (CCSDS 132.0-B; 1115 octets is the common length "
        "that a Reed-Solomon (255,223) interleave-5 codeblock carries, 131.0-B).", unit="byte", ge=64, le=2048,
    )
    store_bytes: int = param(
        262144, doc="Onboard TM store (PUS service 15 packet store): housekeeping generated out of contact is "
        "kept here, circular, and played back on VC2 at the next contact. 0: no store (it then waits in the "
        "queue's low-priority ring).", unit="byte", ge=0, le=1 << 30,
    )


@dataclass(frozen=True, kw_only=True)
class TelemetryConfig:
    apid: int = param(0x65, doc="CCSDS application process id of the flight software.", ge=0, le=2047)
    spacecraft_id: int = param(
        0x1AB, doc="CCSDS spacecraft id in every TC and TM transfer frame (assigned by SANA for a real "
        "mission).", ge=0, le=1023,
    )


@dataclass(frozen=True, kw_only=True, repr=False)
class TcKeyConfig:
    """One SDLS-like key slot. The material is mission data: it never appears in repr/logs/TM."""

    key_id: int = param(doc="Key id carried in every frame's security header.", ge=1, le=65535)
    purpose: Literal["command", "upload"] = param(
        doc="command: authenticates telecommand frames; upload: signs model/config manifests."
    )
    key_hex: str = param(doc="HMAC-SHA256 key as hex, at least 32 bytes (64 hex digits). Simulation missions only.")
    active: bool = param(True, doc="A deactivated slot rejects every frame that names it.")
    service: Literal["authentication", "authenticated_encryption"] = param(
        "authentication", doc="SDLS service of the association using this key (CCSDS 355.0-B 2.3): "
        "authentication (HMAC-SHA-256, 128-bit MAC) or authenticated encryption (AES-256-GCM, 96-bit IV, "
        "128-bit tag; the key must then be exactly 32 bytes).",
    )

    def __repr__(self) -> str:  # keys never reach logs, run.json or error reports
        return f"TcKeyConfig(key_id={self.key_id}, purpose={self.purpose!r}, active={self.active}, key_hex=<redacted>)"


@dataclass(frozen=True, kw_only=True)
class TmtcConfig:
    """Telecommand security and uplink. There is deliberately no way to disable authentication:
    an unknown key such as `insecure` is refused by the loader, and a mission without keys
    rejects every telecommand."""

    keys: tuple[TcKeyConfig, ...] = param((), doc="Key slots (command and upload keys).")
    anti_replay_window: int = param(
        1024, doc="A frame's sequence number must lie in (last accepted, last accepted + window].", ge=1, le=1 << 20
    )
    tc_queue_frames: int = param(64, doc="Telecommand frames queued between tc_handler runs (more are refused, counted).", ge=1, le=4096)
    max_frame_bytes: int = param(1024, doc="Longest telecommand frame accepted (CCSDS TC frame limit).", unit="byte", ge=64, le=65535)
    uplink_rate_bps: float = param(64000.0, doc="Uplink data rate during contacts (model/config upload planning).", unit="bit/s", gt=0)
    trial_confirm_runs: int = param(
        60, doc="tc_handler runs an activated (trial) model may wait for its confirm command before it reverts itself.",
        ge=1, le=100000,
    )
    schedule_slots: int = param(64, doc="Time-tagged commands (PUS service 11) the schedule holds.", ge=1, le=4096)
    max_upload_bytes: int = param(65536, doc="Largest model/config payload the staging area accepts.", unit="byte", ge=256, le=1 << 24)


@dataclass(frozen=True, kw_only=True)
class OnboardConfig:
    ram_budget_bytes: int = param(
        doc="RAM the flight software may use for its buffers; refused if exceeded.", unit="byte", gt=0
    )


@dataclass(frozen=True, kw_only=True)
class MissionConfig:
    mission: MissionInfo = param(doc="Mission identity, start and seed.")
    orbit: OrbitConfig = param(doc="Orbit (uplinked TLE).")
    power: PowerConfig = param(doc="Power system.")
    executive: ExecutiveConfig = param(ExecutiveConfig(), doc="Executive frame structure.")
    fdir: FdirConfig = param(FdirConfig(), doc="Fault detection, isolation and recovery thresholds.")
    tasks: tuple[TaskConfig, ...] = param(doc="Task table of the executive.", min_len=1)
    payload: PayloadConfig = param(PayloadConfig(), doc="Multispectral payload.")
    model: ModelConfig = param(ModelConfig(), doc="Onboard model and training.")
    radiometry: RadiometryConfig = param(RadiometryConfig(), doc="Onboard radiometric self-calibration.")
    adaptation: AdaptationConfig = param(AdaptationConfig(), doc="Label-free adaptation of the input normalisation.")
    device: DeviceConfig = param(DeviceConfig(), doc="Optimizer device.")
    ground_stations: tuple[GroundStationConfig, ...] = param(doc="Ground stations.", min_len=1)
    calibration_sites: tuple[CalibrationSiteConfig, ...] = param(
        (), doc="Calibration sites (label sources)."
    )
    downlink: DownlinkConfig = param(doc="Downlink.")
    ground_loop: GroundLoopConfig = param(GroundLoopConfig(), doc="Ground retraining comparison arm (simulation).")
    telemetry: TelemetryConfig = param(TelemetryConfig(), doc="Telemetry.")
    tmtc: TmtcConfig = param(TmtcConfig(), doc="Telecommand security and uplink (issue 7).")
    onboard: OnboardConfig = param(doc="Onboard resources.")

    def with_optimizer(self, backend: str, url: str | None = None) -> MissionConfig:
        """This config with another optimizer backend (and device URL).

        For hosts that build the flight software without the analog device the config
        names (benchmarks of other subsystems, unit tests): `with_optimizer("digital")`.
        """
        from dataclasses import replace

        if backend not in ("digital", "analog"):
            raise ValueError(f"device.backend must be 'digital' or 'analog', got {backend!r}")
        device = replace(self.device, backend=backend, url=self.device.url if url is None else url)
        return replace(self, device=device)
