"""Ground uplink: packaging (int8, pruning cost on held-out data, signed manifest), config tools."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from pathlib import Path

import numpy as np
import pytest

from flight_sw.config import load_mission_config
from flight_sw.ml.model import float_features
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.upload import input_schema_hash
from ground_tools.uplink import (
    Uplinker,
    config_diff,
    config_package,
    config_validate,
    max_chunk_bytes,
    mission_key,
    package_model,
    prune_magnitude,
)

DEFAULT = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_mission_config(DEFAULT)


@pytest.fixture(scope="module")
def image(cfg):
    from sim.prelaunch import train_prelaunch_model

    return train_prelaunch_model(cfg, np.random.default_rng(1))


@pytest.fixture(scope="module")
def heldout(cfg, image):
    from sim.scene import SceneTruth

    scene = SceneTruth(cfg.payload, np.random.default_rng(7))
    x = np.zeros((2000, cfg.payload.bands), np.float32)
    y = np.zeros(2000, np.int64)
    scene.sample(0.0, 2000, scene.base_mix, 45.0, x, y)
    return float_features(image, x), y


def test_manifest_is_signed_complete_and_fits_a_frame(cfg, image, heldout):
    pkg = package_model(cfg, image.head, version=3, parent_version=1, security_counter=3, heldout=heldout,
                        provenance={"source": "ground_loop"})
    m = pkg.manifest
    for key in ("version", "parent_version", "security_counter", "sha256", "shape", "scales",
                "input_schema_hash", "min_fsw_version", "provenance"):
        assert key in m
    assert m["input_schema_hash"] == input_schema_hash(cfg) and m["shape"] == list(image.head.shape)
    assert hashlib.sha256(pkg.payload).hexdigest() == m["sha256"] and b"".join(pkg.chunks) == pkg.package
    _, key = mission_key(cfg, "upload")
    assert hmac.compare_digest(hmac.new(key, pkg.manifest_bytes, hashlib.sha256).digest(), pkg.signature)
    assert json.loads(pkg.manifest_bytes) == m
    frames = Uplinker(cfg).upload_frames(pkg)
    assert max(len(f) for f in frames) <= cfg.tmtc.max_frame_bytes
    assert abs(pkg.report["acc_cost_total"]) < 0.02  # int8 per channel costs under 2 points


def test_pruning_reaches_the_target_and_reports_the_accuracy_cost(cfg, image, heldout):
    p = prune_magnitude(image.head, 0.5)
    body = p[:-1]
    assert np.mean(body == 0) == pytest.approx(0.5, abs=0.01)
    np.testing.assert_array_equal(p[-1], image.head[-1])  # bias row kept
    kept = np.abs(image.head[:-1])[body != 0]
    assert kept.min() >= np.abs(image.head[:-1])[body == 0].max()
    pkg = package_model(cfg, image.head, version=3, parent_version=1, security_counter=3, sparsity=0.9,
                        heldout=heldout)
    r = pkg.report
    assert r["sparsity"] >= 0.9 - 0.01
    assert r["acc_cost_pruning"] == pytest.approx(r["acc_float"] - r["acc_pruned"])
    assert pkg.manifest["provenance"]["acc_pruned"] == round(r["acc_pruned"], 4)
    with pytest.raises(ValueError):
        prune_magnitude(image.head, 1.0)


def test_config_validate_diff_package(cfg):
    text = DEFAULT.read_text()
    assert config_validate(text) == []
    errs = config_validate(text.replace("margin_j: 1500", "margin_j: -1"))
    assert errs and "margin_j" in errs[0]
    new = dataclasses.replace(cfg, power=dataclasses.replace(
        cfg.power, budget=dataclasses.replace(cfg.power.budget, margin_j=2500.0, eclipse_policy="never")))
    changes, lines = config_diff(cfg, new)
    assert changes == {1: 2500.0, 2: 0.0}
    assert any("power.budget.margin_j: 1500 -> 2500" in x for x in lines)
    frames = config_package(Uplinker(cfg), changes)
    assert len(frames) == 2
    with pytest.raises(ValueError, match="outside"):
        config_package(Uplinker(cfg), {3: 2.0})
    assert d.PARAMS[1][0] == "power.budget.margin_j"


def test_chunk_limit(cfg, image):
    with pytest.raises(ValueError):
        package_model(cfg, image.head, 2, 1, 2, chunk_size=max_chunk_bytes(cfg) + 1)


def test_packets_only_uplinker_returns_the_bare_pus_packets_and_spends_no_arsn(cfg):
    """A command link that frames and protects packets itself (FOP-1) takes them bare."""
    from spacepackets.ecss import PusTc

    up = Uplinker(cfg, first_seq=7, packets_only=True)
    ping, mode = up.ping(), up.mode("SAFE")
    assert (PusTc.unpack(ping).service, PusTc.unpack(ping).message_subtype) == (17, 1)
    assert PusTc.unpack(mode).app_data[:2] == bytes([0, 1])
    assert up.seq == 7  # nothing was protected, so no ARSN was used
    assert Uplinker(cfg, first_seq=7).ping() != ping  # the default is a CLTU


def test_upload_frames_are_the_service_13_parts_of_the_package_then_activate(cfg, image):
    """13,9 first (number 1), 13,10 intermediate, 13,11 last, each with the u16 transaction id and
    u16 part number (ECSS-E-ST-70-41C 6.13), then FN_MODEL_ACTIVATE; bare packets with packets_only."""
    from spacepackets.ecss import PusTc

    from flight_sw.tmtc.upload import PACKAGE_HEAD, PACKAGE_MAGIC

    pkg = package_model(cfg, image.head, version=0x12345, parent_version=1, security_counter=3, chunk_size=100)
    assert pkg.transaction_id == 0x2345  # default: the low 16 bits of the version
    assert pkg.package.startswith(PACKAGE_MAGIC) and len(pkg.package) == (
        PACKAGE_HEAD.size + len(pkg.manifest_bytes) + len(pkg.payload))
    n = len(pkg.chunks)
    assert n == -(-len(pkg.package) // 100) and all(len(c) == 100 for c in pkg.chunks[:-1])
    up = Uplinker(cfg, first_seq=4, packets_only=True)
    tcs = [PusTc.unpack(p) for p in up.upload_frames(pkg)]
    assert up.seq == 4  # bare packets: no ARSN spent
    assert [(t.service, t.message_subtype) for t in tcs] == [(13, 9)] + [(13, 10)] * (n - 2) + [(13, 11), (8, 1)]
    for k, t in enumerate(tcs[:-1], start=1):
        data = bytes(t.app_data)
        assert d.LPT_PART_STRUCT.unpack_from(data) == (0x2345, k) and data[4:] == pkg.chunks[k - 1]
    assert d.FN_STRUCT.unpack_from(bytes(tcs[-1].app_data))[0] == d.FN_MODEL_ACTIVATE
    assert len(Uplinker(cfg, packets_only=True).upload_frames(pkg, activate=False)) == n
    assert [PusTc.unpack(p).message_subtype for p in up.upload_resume(pkg, n - 1)] == [10, 11]
    with pytest.raises(ValueError):
        up.upload_part(pkg, 0)
    with pytest.raises(ValueError):
        package_model(cfg, image.head, 2, 1, 2, transaction_id=1 << 16)


def test_a_package_that_fits_one_part_is_cut_in_two_and_parts_fill_a_frame(cfg, image):
    pkg = package_model(cfg, image.head, version=3, parent_version=1, security_counter=3)
    assert len(pkg.package) <= max_chunk_bytes(cfg) and len(pkg.chunks) == 2 and all(pkg.chunks)
    assert b"".join(pkg.chunks) == pkg.package
    # a part of max_chunk_bytes fills the largest frame exactly: 4 octets of id and number counted
    big = package_model(cfg, image.head, version=3, parent_version=1, security_counter=3,
                        chunk_size=max_chunk_bytes(cfg), provenance={"note": "x" * 1500})
    assert len(big.chunks) > 2 and len(big.chunks[0]) == max_chunk_bytes(cfg)
    from ground_tools.uplink import max_packet_bytes

    assert len(Uplinker(cfg, packets_only=True).upload_part(big, 1)) == max_packet_bytes(cfg)
    Uplinker(cfg).upload_frames(big, activate=False)  # tc_frame refuses a packet over the frame limit
