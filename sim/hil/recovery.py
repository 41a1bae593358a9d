"""A device server killed and restarted under the running flight software (issue 16).

The real flight software and analog driver talk to the device emulator over TCP (the
`flightsim hil serve` server, in-process); the server dies mid-run, stays dead through a
few of the flight software's health checks, and comes back on the same port. Used by
`tests/sim/test_device_recovery.py` and `flightsim bench reliability`
(``reliability.device_recovery_s``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from flight_sw.app import ACQ_SITE
from flight_sw.devices.driver import HEALTH_FAILED, HEALTH_NAMES
from flight_sw.devices.transport import TcpTransport
from sim.analog.endpoint import DeviceEndpoint
from sim.hil.server import TcpDeviceServer


class SitePayload:
    """Every acquisition a calibration-site scene whose map says the truth (the site map of
    `reference`: row r holds class r % classes): labels every 10 s keep training solves coming."""

    def __init__(self, cfg, seed: int = 0):
        from flight_sw.memory import SITE_MAP_CELLS
        from sim.prelaunch import reference_data
        from sim.scene import SceneTruth

        self.scene = SceneTruth(cfg.payload, np.random.default_rng(seed))
        self.t_s = 0.0
        self.truth = np.zeros(cfg.payload.samples_per_acquisition, dtype=np.int64)
        rows = np.arange(SITE_MAP_CELLS) % len(cfg.payload.classes)
        maps = np.broadcast_to(rows[None, :, None], (max(len(cfg.calibration_sites), 1), SITE_MAP_CELLS,
                                                     SITE_MAP_CELLS))
        self.reference = reference_data(cfg, maps, None)

    def acquire(self, pixels, ancillary):
        self.scene.sample(self.t_s, pixels.shape[0], self.scene.base_mix, 45.0, pixels, self.truth)
        ancillary[:, :] = -1
        ancillary[:, 0] = 0
        ancillary[:, 1] = self.truth
        ancillary[:, 2] = 0
        return ACQ_SITE


@dataclass
class RestartResult:
    fsw: object
    cadus: list = field(default_factory=list)  # what the downlink sent: ASM + TM frames
    failed_at_s: float = float("nan")  # mission time FDIR left TRAINING
    restarted_at_s: float = float("nan")  # mission time the server came back
    recovery_s: float = float("nan")  # from the restart to the first analog-served solve
    checks_while_dead: int = 0


def restart_config(cfg, url: str):
    """`cfg` flying the analog device at `url`, failing fast (2 failed solves), training at every
    batch of labels, health checks after 60 s backing off to 240 s. The energy rule is off: this
    measures how a device that gets every solve returns to service (with the rule on, the head's
    solves go digital and a dead device is found at its next layer solve or probe instead)."""
    dev = dataclasses.replace(cfg.device, backend="analog", url=url, driver_degrade_after=1, driver_fail_after=2,
                              driver_reply_timeout_s=0.2, driver_energy_aware=False)
    model = dataclasses.replace(cfg.model, min_new_labels=16)
    fdir = dataclasses.replace(cfg.fdir, device_check_initial_s=60.0, device_check_max_s=240.0)
    return dataclasses.replace(cfg, device=dev, model=model, fdir=fdir)


def run_device_restart(cfg, image, dead_checks: int = 3, limit_ticks: int = 2000) -> RestartResult:
    """Fly until an analog solve, kill the server, wait for FAILED and `dead_checks` failed
    health checks, restart it on the same port, fly until the next analog-served solve."""
    from flight_sw.app import FlightSoftware

    srv = TcpDeviceServer(DeviceEndpoint.from_config(cfg.device, np.random.SeedSequence(1))).start()
    cfg = restart_config(cfg, srv.url)
    payload = SitePayload(cfg)
    out = RestartResult(fsw=None)
    transport = TcpTransport("127.0.0.1", srv.port, connect_timeout_s=0.5)
    fsw = out.fsw = FlightSoftware(cfg, image, payload, out.cadus.append, device_transport=transport,
                                   reference=payload.reference)
    st = fsw.solver.stats
    tick = [0]

    def until(done) -> None:
        for _ in range(limit_ticks):
            if done():
                return
            fsw.inputs.soc = 0.9
            fsw.inputs.in_contact = True
            payload.t_s = tick[0] * fsw.frame_s
            fsw.step(tick[0])
            tick[0] += 1
        raise RuntimeError(f"not reached within {limit_ticks} ticks (mode {fsw.mode}, health "
                           f"{HEALTH_NAMES[fsw.solver.health]}, checks {fsw.device_checks})")

    restarted = None
    try:
        until(lambda: st.analog_accepted > 0)
        srv.stop()
        until(lambda: fsw.mode == "NOMINAL" and fsw.solver.health == HEALTH_FAILED)
        out.failed_at_s = fsw.t_s
        served = st.analog_accepted
        until(lambda: fsw.device_checks >= dead_checks)
        out.checks_while_dead = fsw.device_checks
        restarted = TcpDeviceServer(DeviceEndpoint.from_config(cfg.device, np.random.SeedSequence(2)),
                                    port=srv.port).start()
        out.restarted_at_s = fsw.t_s
        until(lambda: st.analog_accepted > served)
        out.recovery_s = fsw.t_s - out.restarted_at_s
    finally:
        srv.stop()
        if restarted is not None:
            restarted.stop()
        transport.close()
    return out
