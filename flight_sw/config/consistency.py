"""Cross-field rules of a mission config, reported like field errors (key path + reason)."""

from __future__ import annotations

import math

from flight_sw.config.schema import MissionConfig


def check_consistency(cfg: MissionConfig) -> list[str]:
    """Return one message per violated cross-field rule; empty when the config is coherent."""
    from flight_sw.memory import buffer_sizes_bytes
    from flight_sw.power.tle import TleError, parse_tle

    errs: list[str] = []
    bat = cfg.power.battery
    if not bat.floor_soc < bat.reserve_soc:
        errs.append(
            f"power.battery.floor_soc: got {bat.floor_soc}, expected below reserve_soc ({bat.reserve_soc})"
        )
    if not bat.safe_mode_soc <= bat.floor_soc:
        errs.append(
            f"power.battery.safe_mode_soc: got {bat.safe_mode_soc}, expected at or below floor_soc ({bat.floor_soc})"
        )
    try:
        parse_tle(cfg.orbit.tle_line1, cfg.orbit.tle_line2)
    except TleError as exc:
        errs.append(f"orbit.tle: {exc}")

    frame = cfg.executive.minor_frame_s
    seen: set[str] = set()
    for i, task in enumerate(cfg.tasks):
        path = f"tasks[{i}] ({task.name})"
        if task.name in seen:
            errs.append(f"{path}.name: duplicate task name {task.name!r}; names must be unique")
        seen.add(task.name)
        for key in ("period_s", "offset_s"):
            value = getattr(task, key)
            frames = value / frame
            if not math.isclose(frames, round(frames), abs_tol=1e-9):
                errs.append(
                    f"{path}.{key}: got {value} s, expected a multiple of the minor frame ({frame} s)"
                )
        if task.offset_s >= task.period_s:
            errs.append(f"{path}.offset_s: got {task.offset_s} s, expected below period_s ({task.period_s} s)")
        if task.compute_budget_s > frame:
            errs.append(
                f"{path}.compute_budget_s: got {task.compute_budget_s} s, expected at most one minor frame "
                f"({frame} s); cut long jobs into steps"
            )

    classes = set(cfg.payload.classes)
    if len(classes) != len(cfg.payload.classes):
        errs.append(f"payload.classes: duplicate class names in {list(cfg.payload.classes)}")
    for i, site in enumerate(cfg.calibration_sites):
        unknown = sorted(set(site.class_mix) - classes)
        if unknown:
            errs.append(
                f"calibration_sites[{i}] ({site.name}).class_mix: unknown class(es) {unknown}; "
                f"expected names from payload.classes {sorted(classes)}"
            )
        total = sum(site.class_mix.values())
        if any(v < 0 for v in site.class_mix.values()) or not math.isclose(total, 1.0, abs_tol=1e-6):
            errs.append(
                f"calibration_sites[{i}] ({site.name}).class_mix: fractions sum to {total:g}, "
                "expected non-negative fractions summing to 1"
            )
    drift = cfg.payload.drift
    for key in ("abrupt_bands", "filter_shift_bands"):
        bad = [b for b in getattr(drift, key) if not 0 <= b < cfg.payload.bands]
        if bad:
            errs.append(f"payload.drift.{key}: band indices {bad} out of range; expected 0..{cfg.payload.bands - 1}")
    if len(set(cfg.payload.label_sources)) != len(cfg.payload.label_sources):
        errs.append(f"payload.label_sources: duplicate sources in {list(cfg.payload.label_sources)}")
    for i, site in enumerate(cfg.calibration_sites):
        if site.class_mix and site.class_mix.get("cloud", 0.0) >= 1.0:
            errs.append(f"calibration_sites[{i}] ({site.name}).class_mix: all cloud; expected a surface share "
                        "(cloud is the mean cloud cover of a pass, the rest is the site's land-cover map)")
    names = [s.name for s in cfg.ground_stations]
    if len(set(names)) != len(names):
        errs.append(f"ground_stations: duplicate station names in {names}")

    if not errs:
        sizes = buffer_sizes_bytes(cfg)
        total = sum(sizes.values())
        if total > cfg.onboard.ram_budget_bytes:
            biggest = ", ".join(f"{k} {v:,} B" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
            errs.append(
                f"onboard.ram_budget_bytes: buffers need {total:,} bytes, expected at most the budget of "
                f"{cfg.onboard.ram_budget_bytes:,} bytes (largest: {biggest})"
            )

    # -- device (issue 6: analog optimizer, driver, emulator faults) ---------------------------
    errs.extend(_device_consistency(cfg))
    # -- end device ------------------------------------------------------------------------
    return errs


def _device_consistency(cfg: MissionConfig) -> list[str]:
    """Cross-field rules of the `device` section (analog optimizer and its driver)."""
    from flight_sw.devices.transport import check_device_url

    dev = cfg.device
    errs: list[str] = []
    problem = check_device_url(dev.url)
    if problem:
        errs.append(f"device.url: got {dev.url!r}, {problem}")
    if dev.driver_degrade_after > dev.driver_fail_after:
        errs.append(
            f"device.driver_degrade_after: got {dev.driver_degrade_after}, expected at most "
            f"driver_fail_after ({dev.driver_fail_after}): DEGRADED comes before FAILED"
        )
    if dev.driver_settle_timeout_s >= dev.driver_reply_timeout_s:
        errs.append(
            f"device.driver_settle_timeout_s: got {dev.driver_settle_timeout_s} s, expected below "
            f"driver_reply_timeout_s ({dev.driver_reply_timeout_s} s), or every slow settle looks like a lost reply"
        )
    if dev.driver_solve_time_budget_s < dev.driver_settle_timeout_s:
        errs.append(
            f"device.driver_solve_time_budget_s: got {dev.driver_solve_time_budget_s} s, expected at least "
            f"driver_settle_timeout_s ({dev.driver_settle_timeout_s} s)"
        )
    n = cfg.model.feature_dim + 1
    if dev.backend == "analog" and dev.analog_n_max < n:
        errs.append(
            f"device.analog_n_max: got {dev.analog_n_max}, expected at least model.feature_dim + 1 ({n}): "
            "the head's system must fit the array"
        )
    m = cfg.model
    n_layer = m.layer_units * m.layer_basis
    if dev.backend == "analog" and dev.analog_n_max < n_layer:
        errs.append(
            f"device.analog_n_max: got {dev.analog_n_max}, expected at least model.layer_units x layer_basis "
            f"({n_layer}): the last layer's system must fit the array"
        )
    if m.layer_units > m.feature_dim:
        errs.append(f"model.layer_units: got {m.layer_units}, expected at most model.feature_dim ({m.feature_dim})")
    if m.layer_basis > m.hidden_units + 1:
        errs.append(f"model.layer_basis: got {m.layer_basis}, expected at most model.hidden_units + 1 "
                    f"({m.hidden_units + 1}): the hidden activations and the bias span no more")
    rates = {k: getattr(dev, k) for k in dir(dev) if k.startswith("fault_") and k.endswith("_rate")}
    if sum(rates.values()) > 1.0:
        errs.append(f"device.fault_*_rate: rates sum to {sum(rates.values()):g}, expected at most 1 per command")
    if dev.fault_stuck_cells > dev.analog_n_max**2:
        errs.append(
            f"device.fault_stuck_cells: got {dev.fault_stuck_cells}, expected at most analog_n_max^2 "
            f"({dev.analog_n_max**2})"
        )
    return errs
