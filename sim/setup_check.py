"""One validation: what `flightsim run` builds before its first tick, built by `validate` too.

The config loader checks each key on its own; some configs only fail when the pieces
meet: a task period that does not divide the major frame, an overloaded minor frame,
key material the security store refuses, a start date outside the ephemeris, a value
that overflows a telemetry field. `check_run_setup` builds the flight software from the
config (schedule, memory plan, security store, every task's first run through one major
frame, housekeeping packed) and checks the ephemeris covers the run; `flightsim
validate` prints its result and `flightsim run` calls it before anything is written, so
a config validate accepts cannot fail in set-up (`tests/sim/test_setup_check.py`,
`reliability.validate_run_disagreements`).
"""

from __future__ import annotations

import datetime

import numpy as np

from flight_sw.config.schema import MissionConfig


class SetupError(ValueError):
    """The run could not be set up from this config; the message says what refused it."""


class _DarkPayload:
    """No pixels (every acquisition is the night side): the set-up check needs no scene."""

    def acquire(self, pixels, ancillary) -> int:
        return 0


def synthetic_image(cfg: MissionConfig):
    """A model image with the config's shapes and harmless values (no training: the check
    is about the set-up, not the model)."""
    from flight_sw.ml.model import ModelImage

    bands, hidden, feat = cfg.payload.bands, cfg.model.hidden_units, cfg.model.feature_dim
    n_cls = len(cfg.payload.classes)
    rng = np.random.default_rng(0)
    eye = np.broadcast_to(np.eye(feat + 1), (n_cls, feat + 1, feat + 1)).copy()
    spectra = np.full((n_cls, bands), 1.0 / np.sqrt(bands))
    return ModelImage(
        0, np.full(bands, 0.3), np.full(bands, 0.1), 4.0, rng.standard_normal((bands, hidden)).astype(np.float32),
        np.zeros(hidden), 4.0, rng.standard_normal((hidden, feat)).astype(np.float32), np.zeros(feat),
        np.zeros((feat + 1, n_cls)), eye, np.zeros((feat + 1, n_cls)), 1.0, spectra, np.ones((n_cls, 2)),
    )


def ephemeris_problem(cfg: MissionConfig, days: float) -> str | None:
    """None when the ephemeris covers the run, else what is out of range."""
    from sim.ephemeris import load_ephemeris, load_timescale

    ts = load_timescale()
    segments = [seg.spk_segment for seg in load_ephemeris().segments]
    first = ts.tdb_jd(max(seg.start_jd for seg in segments)).utc_datetime()
    last = ts.tdb_jd(min(seg.end_jd for seg in segments)).utc_datetime()
    start = cfg.mission.start_utc
    end = start + datetime.timedelta(days=days)
    if start < first or end > last:
        return (f"mission.start_utc: the run ({start:%Y-%m-%d} to {end:%Y-%m-%d}) leaves the ephemeris "
                f"({first:%Y-%m-%d} to {last:%Y-%m-%d}, DE421)")
    return None


def check_run_setup(cfg: MissionConfig, days: float) -> None:
    """Raise SetupError when `flightsim run` could not set this config up for `days` days."""
    problem = ephemeris_problem(cfg, days)
    if problem:
        raise SetupError(problem)
    from flight_sw.app import FlightSoftware

    try:
        fsw = FlightSoftware(cfg.with_optimizer("digital"), synthetic_image(cfg), _DarkPayload(), lambda p: None,
                             check_energy_days=days)
        fsw.inputs.in_contact = True  # everything queued is packed and drained: field overflows show
        for tick in range(cfg.executive.frames_per_major):
            fsw.step(tick)
    except Exception as exc:  # noqa: BLE001 - whatever the set-up raises refuses the config, with its message
        raise SetupError(f"{type(exc).__name__}: {exc}") from None
