"""Model upload: staging, signature, compatibility, downgrade, trial/confirm/revert, power cuts."""

from __future__ import annotations

import numpy as np
import pytest

from flight_sw.app import ACQ_SITE
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.nv_store import RedundantStore
from ground_tools.uplink import package_model
from tests.flight_sw.test_tmtc_helpers import Bench, uplinker

CHUNK = 64  # 198-byte head -> 4 parts


def _pkg(cfg, image, version=5, sc=5, **kw):
    rng = np.random.default_rng(version)
    head = image.head * (1.0 + 0.01 * rng.standard_normal(image.head.shape))
    return package_model(cfg, head, version=version, parent_version=image.version, security_counter=sc,
                         chunk_size=CHUNK, provenance={"run": "test"}, **kw)


def _bootable(fsw, allowed):
    lrn = fsw.learner
    assert lrn.head_is_valid() and lrn.version in allowed
    assert lrn.slot_versions[lrn.active] == lrn.version
    pixels = np.asarray(np.random.default_rng(0).random(fsw._pixels.shape), dtype=fsw._pixels.dtype)
    out = np.zeros_like(fsw.outputs.predictions)
    lrn.predict(pixels, out)
    assert np.all((out >= 0) & (out < lrn.n_classes))


def _steps(up, pkg):
    """The upload sequence, one builder per step (frames are built when sent: fresh sequence numbers)."""
    steps = [lambda: up.upload_open(pkg)]
    steps += [lambda i=i: up.upload_part(pkg, i) for i in range(len(pkg.chunks))]
    steps += [up.upload_verify, up.activate, up.confirm]
    return steps


def test_upload_activate_confirm_happy_path(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    assert len(pkg.chunks) == 4
    b.send(*up.upload_frames(pkg))
    lrn = b.fsw.learner
    assert lrn.version == 5 and b.fsw.tc.upload.trial is not None
    np.testing.assert_allclose(lrn.slots[lrn.active], pkg.manifest["scales"] * np.frombuffer(
        pkg.payload, np.int8).reshape(image.head.shape))
    b.send(up.confirm())
    assert b.fsw.tc.nv.data["sc"] == 5 and b.fsw.tc.upload.trial is None
    assert all(v[1] is None for v in b.verification())
    b.boot()  # cold start: the confirmed upload is installed, the launch head kept as fallback
    assert b.fsw.learner.version == 5 and b.fsw.learner.slot_versions == [5, image.version]


def test_power_cut_at_every_step_leaves_a_bootable_model(default_cfg, image):
    pkg = _pkg(default_cfg, image)
    n_steps = len(_steps(uplinker(default_cfg), pkg))
    for cut in range(n_steps + 1):
        for how in ("cold", "restore"):
            store = RedundantStore.in_memory(default_cfg.tmtc.max_upload_bytes)
            b = Bench(default_cfg, image, store)
            up = uplinker(default_cfg)
            steps = _steps(up, pkg)
            snap = b.fsw.snapshot()
            for step in steps[:cut]:
                b.send(step())
                snap = b.fsw.snapshot()  # the host keeps the latest snapshot in NV
            confirmed = cut == n_steps
            b.boot(snapshot=snap if how == "restore" else None)  # power cut and reboot
            allowed = {5} if confirmed else {image.version}
            _bootable(b.fsw, allowed)
            assert b.fsw.tc.upload.trial is None  # an unconfirmed trial never survives a reboot
            # The upload resumes: staged parts persisted; resend only what is missing, then finish.
            if not confirmed:
                up.seq = b.fsw.tc.auth.last_seq(up.key_id) + 1
                if b.fsw.tc.nv.data["staging"] is None:
                    b.send(up.upload_open(pkg))
                missing = b.fsw.tc.upload.missing()
                b.send(*[up.upload_part(pkg, i) for i in missing], up.upload_verify(), up.activate(), up.confirm())
                assert cut < 2 or len(missing) <= max(0, len(pkg.chunks) - (cut - 1)), (cut, missing)
            _bootable(b.fsw, {5})
            assert b.fsw.tc.nv.data["sc"] == 5, (cut, how, b.verification())


def test_lost_parts_complete_by_retransmission(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    frames = up.upload_frames(pkg, activate=False)
    b.send(*[f for i, f in enumerate(frames) if i not in (2, 4)])  # parts 1 and 3 lost
    assert b.verification()[-1] == (8, "upload_missing_chunks", "missing 2 of 4: 1,3")
    b.send(up.upload_part(pkg, 1), up.upload_part(pkg, 3), up.upload_verify(), up.activate())
    assert b.fsw.learner.version == 5


def _refused(b, code):
    fails = [v for v in b.verification() if v[0] in (2, 8)]
    assert fails and fails[-1][1] == code, fails


def test_corrupt_unsigned_older_and_incompatible_models_are_refused(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    good = _pkg(default_cfg, image, version=7, sc=7)
    b.send(*up.upload_frames(good), up.confirm())
    active = b.fsw.learner.version
    assert active == 7
    # corrupt part: same length, one byte changed
    bad = _pkg(default_cfg, image, version=8, sc=8)
    bad.chunks[1] = bytes([bad.chunks[1][0] ^ 0x55]) + bad.chunks[1][1:]
    b.send(*up.upload_frames(bad, activate=False))
    _refused(b, "upload_hash_mismatch")
    b.send(up.activate())
    _refused(b, "upload_not_verified")
    # unsigned / wrongly signed manifest
    uns = _pkg(default_cfg, image, version=9, sc=9)
    uns.signature = bytes(32)
    b.send(up.upload_open(uns))
    _refused(b, "upload_bad_signature")
    # signed with the command key instead of the upload key
    uns.key_id = up.key_id
    b.send(up.upload_open(uns))
    _refused(b, "upload_bad_signature")
    # older security counter: downgrade
    b.send(up.upload_open(_pkg(default_cfg, image, version=10, sc=3)))
    _refused(b, "upload_downgrade")
    # incompatible flight software / input schema
    b.send(up.upload_open(_pkg(default_cfg, image, version=11, sc=11, min_fsw_version="9.0")))
    _refused(b, "upload_incompatible")
    for name in ("../head.bin", "/etc/head.bin", "a/b.bin", "..", ".hidden/../x"):
        b.send(up.upload_open(_pkg(default_cfg, image, version=12, sc=12, name=name)))
        _refused(b, "upload_bad_name")
    _bootable(b.fsw, {active})
    assert b.fsw.tc.nv.data["sc"] == 7


def test_trial_reverts_by_itself_unless_confirmed(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    b.send(*up.upload_frames(_pkg(default_cfg, image)))
    assert b.fsw.learner.version == 5
    for _ in range(default_cfg.tmtc.trial_confirm_runs):
        b.fsw.tc.run(0.0)
    assert b.fsw.learner.version == image.version and b.fsw.tc.upload.trial is None
    b.send(up.confirm())
    _refused(b, "trial_none")
    assert b.fsw.tc.nv.data["sc"] == 0


def test_trial_that_fails_validation_is_reverted_and_rollback_command_reverts(default_cfg, image):
    b = Bench(default_cfg, image)
    fsw = b.fsw
    fsw.test_payload = fsw.payload
    fsw.payload.mode = ACQ_SITE
    for k in range(40):
        fsw.learning.task_label_collect(float(k))
    assert fsw.learner.replay_count > 0
    up = uplinker(default_cfg)
    worse = package_model(default_cfg, -image.head, version=6, parent_version=1, security_counter=6, chunk_size=CHUNK)
    b.send(*up.upload_frames(worse), up.confirm())
    _refused(b, "trial_validation_failed")
    assert fsw.learner.version == image.version and fsw.tc.nv.data["sc"] == 0
    # an acceptable one, then reverted by the rollback command while in trial
    b.send(*up.upload_frames(_pkg(default_cfg, image, version=8, sc=8)))
    assert fsw.learner.version == 8
    b.send(up.rollback())
    assert fsw.learner.version == image.version and fsw.tc.upload.trial is None


def test_training_pauses_during_a_trial(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    b.send(*up.upload_frames(_pkg(default_cfg, image)))
    assert b.fsw.learning.task_training(0.0) == -1.0


@pytest.mark.parametrize("field", ["shape", "scales"])
def test_manifest_shape_and_scale_checks(default_cfg, image, field):
    import hashlib
    import hmac
    import json

    from ground_tools.uplink import mission_key

    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    m = dict(pkg.manifest)
    m[field] = [3, 3] if field == "shape" else [float("nan")] * 6
    mb = json.dumps(m).encode()
    kid, key = mission_key(default_cfg, "upload")
    pkg.manifest_bytes, pkg.signature = mb, hmac.new(key, mb, hashlib.sha256).digest()
    b.send(up.upload_open(pkg))
    _refused(b, "upload_incompatible")
    assert d.TC_FAILURES  # dictionary shared with the ground
