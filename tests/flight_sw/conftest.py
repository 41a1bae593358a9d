from pathlib import Path

import numpy as np
import pytest

from flight_sw.app import ACQ_DARK, ACQ_LABELLED, ACQ_SCENE, FlightSoftware
from flight_sw.config import load_mission_config

DEFAULT = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


class FakePayload:
    """Scene pixels from the simulator's scene model; labels when `labelled` is set."""

    def __init__(self, cfg, seed=0):
        from sim.scene import SceneTruth

        self.scene = SceneTruth(cfg.payload, np.random.default_rng(seed))
        self.mode = ACQ_SCENE
        self.t_s = 0.0
        self.truth = np.zeros(cfg.payload.samples_per_acquisition, dtype=np.int64)

    def acquire(self, pixels, labels):
        if self.mode == ACQ_DARK:
            return ACQ_DARK
        self.scene.sample(self.t_s, pixels.shape[0], self.scene.base_mix, 45.0, pixels, self.truth)
        if self.mode == ACQ_LABELLED:
            labels[:] = self.truth
        return self.mode

    def acquire_teacher(self, pixels, labels):
        if self.mode == ACQ_DARK:
            return ACQ_DARK
        self.scene.sample(self.t_s, pixels.shape[0], self.scene.base_mix, 45.0, pixels, self.truth)
        labels[:] = self.truth
        return ACQ_LABELLED


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


@pytest.fixture
def make_fsw(default_cfg, image):
    def make(cfg=None, payload=None):
        cfg = cfg or default_cfg
        packets = []
        payload = payload or FakePayload(cfg)
        fsw = FlightSoftware(cfg, image, payload, packets.append)
        fsw.test_packets = packets
        fsw.test_payload = payload
        return fsw

    return make
