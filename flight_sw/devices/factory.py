"""Build the optimizer backend from the config: nothing above `solve(Q, B)` knows which.

    solver = make_optimizer(cfg.device, n, m)                       # digital, or analog via cfg.device.url
    solver = make_optimizer(cfg.device, n, m, transport=t)          # analog over a transport the host built
    solver = make_optimizer(cfg.device, n, m, clock=lambda: fsw.t_s)

Both backends expose `solve(Q, B) -> (X, SolveReport)`, `.report` and `.solves`;
the analog driver adds `.stats` (telemetry counters) and `.health`.
"""

from __future__ import annotations

from collections.abc import Callable

from flight_sw.config.schema import DeviceConfig
from flight_sw.devices.driver import AnalogDriver, DriverConfig
from flight_sw.devices.optimizer import DigitalSolver
from flight_sw.devices.transport import Transport, transport_from_url


def driver_config(dev: DeviceConfig) -> DriverConfig:
    """The driver's parameters from the mission config's `device` section."""
    return DriverConfig(
        residual_tolerance=dev.driver_residual_tolerance,
        max_rounds=dev.driver_max_rounds,
        max_retries=dev.driver_max_retries,
        backoff_base_s=dev.driver_backoff_base_s,
        backoff_factor=dev.driver_backoff_factor,
        reply_timeout_s=dev.driver_reply_timeout_s,
        settle_timeout_s=dev.driver_settle_timeout_s,
        initial_out_range=dev.driver_initial_out_range,
        stall_ratio=dev.driver_stall_ratio,
        degrade_after=dev.driver_degrade_after,
        fail_after=dev.driver_fail_after,
        recover_after=dev.driver_recover_after,
        selftest_period_solves=dev.driver_selftest_period_solves,
        canary_raw_tolerance=dev.driver_canary_raw_tolerance,
        calibration_period_s=dev.driver_calibration_period_s,
        calibration_gain_threshold=dev.driver_calibration_gain_threshold,
        drift_t0_s=dev.analog_drift_t0_s,
        skip_after_nonconverged=dev.driver_skip_after_nonconverged,
        skip_solves=dev.driver_skip_solves,
        solve_time_budget_s=dev.driver_solve_time_budget_s,
        energy_per_flop_j=dev.digital_energy_per_flop_j,
        energy_aware=dev.driver_energy_aware,
        energy_probe_solves=dev.driver_energy_probe_solves,
    )


def make_optimizer(
    device_cfg: DeviceConfig,
    n: int,
    m: int,
    transport: Transport | None = None,
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> DigitalSolver | AnalogDriver:
    """The backend `device_cfg.backend` names, sized for problems up to (n, m).

    For the analog backend the transport is `transport` if given, else built from
    `device_cfg.url` (tcp:// or serial://; inproc:// needs the host to pass the
    transport, since the emulator lives outside flight_sw). `ValueError` otherwise.
    """
    if n < 1 or m < 1:
        raise ValueError(f"problem size must be positive, got n={n}, m={m}")
    if device_cfg.backend == "digital":
        return DigitalSolver(n, m, device_cfg.digital_energy_per_flop_j)
    if device_cfg.backend != "analog":
        raise ValueError(f"unknown device backend {device_cfg.backend!r}")
    if transport is None:
        transport = transport_from_url(device_cfg.url)
    cfg = driver_config(device_cfg)
    fallback = DigitalSolver(n, m, device_cfg.digital_energy_per_flop_j, cfg.residual_tolerance)
    return AnalogDriver(n, m, transport, cfg, fallback=fallback, clock=clock, sleep=sleep)
