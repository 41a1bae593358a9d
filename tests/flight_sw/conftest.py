from pathlib import Path

import numpy as np
import pytest

from flight_sw.app import ACQ_DARK, ACQ_SCENE, ACQ_SITE, FlightSoftware
from flight_sw.config import load_mission_config

DEFAULT = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


def fake_reference(cfg):
    """Reference data for unit tests: site 0's map has class r % classes on map row r (no teacher)."""
    from flight_sw.memory import SITE_MAP_CELLS
    from sim.prelaunch import reference_data

    sites = max(len(cfg.calibration_sites), 1)
    rows = np.arange(SITE_MAP_CELLS) % len(cfg.payload.classes)
    maps = np.broadcast_to(rows[None, :, None], (sites, SITE_MAP_CELLS, SITE_MAP_CELLS))
    return reference_data(cfg, maps, None)


class FakePayload:
    """Scene pixels from the simulator's scene model; in ACQ_SITE mode each pixel's ancillary
    points at a map row of its true class (`fake_reference`), so site labels are the truth
    unless the cloud test fires."""

    def __init__(self, cfg, seed=0):
        from sim.scene import SceneTruth

        self.scene = SceneTruth(cfg.payload, np.random.default_rng(seed))
        self.mode = ACQ_SCENE
        self.t_s = 0.0
        self.truth = np.zeros(cfg.payload.samples_per_acquisition, dtype=np.int64)
        self.reference = fake_reference(cfg)

    def acquire(self, pixels, ancillary):
        if self.mode == ACQ_DARK:
            return ACQ_DARK
        self.scene.sample(self.t_s, pixels.shape[0], self.scene.base_mix, 45.0, pixels, self.truth)
        ancillary[:, :] = -1
        if self.mode == ACQ_SITE:
            ancillary[:, 0] = 0
            ancillary[:, 1] = self.truth
            ancillary[:, 2] = 0
        return self.mode


def digital(cfg):
    """`cfg` with the digital optimizer backend.

    The default mission flies the analog device, which lives outside flight_sw (the
    simulator hands the flight software its transport). These tests build the flight
    software on its own, so they use the digital backend; the analog path has its own
    tests (test_devices_*, tests/sim).
    """
    return cfg.with_optimizer("digital")


@pytest.fixture(scope="session")
def default_cfg():
    return digital(load_mission_config(DEFAULT))


@pytest.fixture(scope="session")
def image(default_cfg):
    from sim.prelaunch import train_prelaunch_model

    return train_prelaunch_model(default_cfg, np.random.default_rng(1))


class GroundSink:
    """The tests' ground station: decodes the TM frames the downlink sends and appends their
    packets to `packets`, in the order the spacecraft sent them."""

    def __init__(self, cfg, packets: list[bytes]):
        from ground_tools.tm_frames import TmFrameDecoder

        self.decoder = TmFrameDecoder(cfg.downlink.tm_frame_bytes, cfg.telemetry.spacecraft_id)
        self.packets = packets
        self.cadus: list[bytes] = []

    def __call__(self, cadu: bytes) -> None:
        self.cadus.append(cadu)
        self.packets.extend(p for _, p in self.decoder.feed_in_order(cadu))


@pytest.fixture
def make_fsw(default_cfg, image):
    def make(cfg=None, payload=None):
        cfg = cfg or default_cfg
        packets = []
        payload = payload or FakePayload(cfg)
        fsw = FlightSoftware(cfg, image, payload, GroundSink(cfg, packets),
                             reference=getattr(payload, "reference", None) or fake_reference(cfg))
        fsw.test_packets = packets
        fsw.test_payload = payload
        return fsw

    return make
