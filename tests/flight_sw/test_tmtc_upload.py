"""Model upload: staging, signature, compatibility, downgrade, trial/confirm/revert, power cuts."""

from __future__ import annotations

import numpy as np
import pytest

from flight_sw.app import ACQ_SITE
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.nv_store import RedundantStore
from ground_tools.uplink import package_model
from tests.flight_sw.test_tmtc_helpers import Bench, uplinker

CHUNK = 64  # the 198-byte head's package (header, manifest, payload) -> about 15 parts


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
    steps = [lambda i=i: up.upload_part(pkg, i) for i in range(1, len(pkg.chunks) + 1)]
    steps += [up.activate, up.confirm]
    return steps


def test_upload_activate_confirm_happy_path(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    assert len(pkg.chunks) > 4 and b"".join(pkg.chunks) == pkg.package
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
            # The upload resumes: staged parts persisted; resend from the next expected part, then finish.
            if not confirmed:
                up.seq = b.fsw.tc.auth.last_seq(up.key_id) + 1
                upl = b.fsw.tc.upload
                st = b.fsw.tc.nv.data["staging"]
                n = len(pkg.chunks)
                if upl.transaction() == pkg.transaction_id:
                    nxt = upl.next_part()
                    assert nxt == min(cut, n - 1) + 1, (cut, nxt)  # every part sent before the cut was kept
                    resend = up.upload_resume(pkg, nxt)
                elif st is not None and st["verified"]:
                    assert cut >= n  # staged by the last part
                    resend = []
                else:
                    assert cut == 0, (cut, st)
                    resend = up.upload_frames(pkg, activate=False)
                b.send(*resend, up.activate(), up.confirm())
            _bootable(b.fsw, {5})
            assert b.fsw.tc.nv.data["sc"] == 5, (cut, how, b.verification())


def test_lost_parts_complete_by_retransmission(default_cfg, image):
    """A lost part: every later part fails its completion naming the expected part, the
    transaction is kept, and the ground resends from there (no abort, nothing else lost)."""
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    frames = up.upload_frames(pkg, activate=False)
    n = len(frames)
    b.send(*[f for i, f in enumerate(frames) if i != 2])  # part 3 lost
    fails = [v for v in b.verification() if v[0] == 8]
    assert fails == [(8, "lpt_unexpected_part", f"part {k}: expected part 3") for k in range(4, n + 1)]
    assert b.fsw.tc.upload.transaction() == pkg.transaction_id and b.fsw.tc.upload.next_part() == 3
    assert not _aborts(b)
    b.send(*up.upload_resume(pkg, 3), up.activate())
    assert b.fsw.learner.version == 5


def _aborts(b):
    """[(transaction id, failure code name)] of every TM[13,16] large packet uplink abortion report."""
    return [(tid, d.TC_FAILURES[code]) for p in b.packets()
            if (p.service, p.message_subtype) == (d.PUS_SERVICE_LARGE_PACKET, d.LPT_UPLINK_ABORT)
            for tid, code in [d.LPT_ABORT_STRUCT.unpack(bytes(p.source_data))]]


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
    # corrupt part: same length, one payload byte changed (in the last part: the manifest is intact)
    bad = _pkg(default_cfg, image, version=8, sc=8)
    bad.chunks[-1] = bytes([bad.chunks[-1][0] ^ 0x55]) + bad.chunks[-1][1:]
    b.send(*up.upload_frames(bad, activate=False))
    _refused(b, "upload_hash_mismatch")
    assert _aborts(b)[-1] == (bad.transaction_id, "upload_hash_mismatch")
    b.send(up.activate())
    _refused(b, "upload_not_verified")
    # unsigned / wrongly signed manifest
    uns = _pkg(default_cfg, image, version=9, sc=9)
    uns.signature = bytes(32)
    b.send(*up.upload_frames(uns.repack(), activate=False))
    _refused(b, "upload_bad_signature")
    # signed with the command key instead of the upload key
    uns.key_id = up.key_id
    b.send(*up.upload_frames(uns.repack(), activate=False))
    _refused(b, "upload_bad_signature")
    # older security counter: downgrade
    b.send(*up.upload_frames(_pkg(default_cfg, image, version=10, sc=3), activate=False))
    _refused(b, "upload_downgrade")
    # incompatible flight software / input schema
    b.send(*up.upload_frames(_pkg(default_cfg, image, version=11, sc=11, min_fsw_version="9.0"), activate=False))
    _refused(b, "upload_incompatible")
    for name in ("../head.bin", "/etc/head.bin", "a/b.bin", "..", ".hidden/../x"):
        b.send(*up.upload_frames(_pkg(default_cfg, image, version=12, sc=12, name=name), activate=False))
        _refused(b, "upload_bad_name")
    # every refusal was a package refusal: the model-upload event and TM[13,16] with its reason
    codes = [c for _, c in _aborts(b)]
    assert codes == ["upload_hash_mismatch", "upload_bad_signature", "upload_bad_signature", "upload_downgrade",
                     "upload_incompatible"] + ["upload_bad_name"] * 5
    stages = [d.MODEL_UPLOAD_STAGES[s] for s, *_ in b.events(d.EVENT_MODEL_UPLOAD, d.MODEL_UPLOAD_STRUCT)]
    assert stages.count("refused") >= 8  # (events of one id are rate-limited: 20 per 600 s)
    b.send(up.activate())
    _refused(b, "upload_not_verified")
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


def _bench_with_site_labels(cfg, image) -> Bench:
    """A bench whose learner holds held-back site labels (a trial's confirm can judge)."""
    b = Bench(cfg, image)
    b.fsw.test_payload = b.fsw.payload
    b.fsw.payload.mode = ACQ_SITE
    for k in range(40):
        b.fsw.learning.task_label_collect(float(k))
    assert b.fsw.learner.replay_count > 0
    return b


def test_trial_that_fails_validation_is_reverted_and_rollback_command_reverts(default_cfg, image):
    b = _bench_with_site_labels(default_cfg, image)
    fsw = b.fsw
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
    b.send(*up.upload_frames(pkg.repack(), activate=False))
    _refused(b, "upload_incompatible")
    assert d.TC_FAILURES  # dictionary shared with the ground


def _onboard_feature_commits(fsw) -> tuple[bytes, int, int]:
    """An onboard input-adaptation commit and a last-layer commit (each a changed candidate,
    committed as their jobs do); returns the live features' bytes and both versions."""
    adapt, layer = fsw.learning.adaptation, fsw.learning.layer
    cand = 1 - adapt.active
    adapt.slots[cand] = adapt.slots[adapt.active]
    adapt.slots[cand, 1, 2] *= 1.03  # one band's scale
    adapt._commit()
    cand = 1 - layer.active
    layer.slots_w2[cand], layer.slots_c2[cand], layer.slots_b2[cand] = layer.live_w2, layer.live_c2, layer.live_b2
    layer.slots_w2[cand, 3] = np.clip(layer.slots_w2[cand, 3].astype(np.int16) + 5, -127, 127).astype(np.int8)
    layer._commit()
    fsw.learner.features_changed()
    assert adapt.version >= 1 and layer.version >= 1
    return _live_features(fsw), adapt.version, layer.version


def _live_features(fsw) -> bytes:
    """The extractor's normalisation and last layer, as its kernels read them."""
    e = fsw.learner._ext_args
    return b"".join(np.ascontiguousarray(e[i]).tobytes() for i in (0, 1, 6, 7, 8))


def _ground_features(image) -> bytes:
    from flight_sw.ml.model import FeatureExtractor

    e = FeatureExtractor(image).args()  # the boot image's extractor, built afresh
    return b"".join(np.ascontiguousarray(e[i]).tobytes() for i in (0, 1, 6, 7, 8))


def _switches(b, event_id, layout, names):
    return [(names[e[0]], e[1]) for e in b.events(event_id, layout) if e[0] >= 3]


def test_an_uploaded_head_is_tried_with_the_images_features_and_a_revert_restores_the_onboard_ones(default_cfg,
                                                                                                   image):
    """The ground builds a head for the boot image's input normalisation and last layer: its
    trial runs with them, and the rollback command gives the onboard ones back bit-identically,
    with the previous head; both owners report both switches."""
    b = Bench(default_cfg, image)
    fsw = b.fsw
    assert _live_features(fsw) == _ground_features(image)  # at launch the extractor is the image's
    onboard, v_input, v_layer = _onboard_feature_commits(fsw)
    assert onboard != _ground_features(image)
    up = uplinker(default_cfg)
    b.send(*up.upload_frames(_pkg(default_cfg, image)))
    trial = fsw.tc.upload.trial
    assert fsw.learner.version == 5 and (trial["prev_input_version"], trial["prev_layer_version"]) == (v_input, v_layer)
    assert fsw.learning.adaptation.version == fsw.learning.layer.version == 0
    assert _live_features(fsw) == _ground_features(image)
    fsw.learning.task_training(fsw.t_s)  # the training task reports the switch (training itself is paused)
    b.send(up.rollback())
    assert fsw.tc.upload.trial is None and fsw.learner.version == image.version
    assert (fsw.learning.adaptation.version, fsw.learning.layer.version) == (v_input, v_layer)
    assert _live_features(fsw) == onboard
    fsw.learning.task_training(fsw.t_s)
    expected = [("ground_version_for_upload_trial", 0), ("onboard_version_restored", None)]
    assert _switches(b, d.EVENT_LAYER_UPDATE, d.LAYER_UPDATE_STRUCT, d.LAYER_OUTCOMES) == [
        expected[0], (expected[1][0], v_layer)]
    assert _switches(b, d.EVENT_ADAPTATION_UPDATE, d.ADAPTATION_UPDATE_STRUCT, d.ADAPTATION_OUTCOMES) == [
        expected[0], (expected[1][0], v_input)]


def test_a_confirmed_upload_keeps_the_images_features_and_is_judged_against_the_onboard_pair(default_cfg, image,
                                                                                            monkeypatch):
    b = _bench_with_site_labels(default_cfg, image)
    fsw = b.fsw
    onboard, _, _ = _onboard_feature_commits(fsw)
    judged = []
    real = fsw.learner.replay_accuracy

    def spy(head, ext_args=None):
        judged.append(None if ext_args is None else b"".join(
            np.ascontiguousarray(ext_args[i]).tobytes() for i in (0, 1, 6, 7, 8)))
        return real(head, ext_args)

    monkeypatch.setattr(fsw.learner, "replay_accuracy", spy)
    up = uplinker(default_cfg)
    b.send(*up.upload_frames(_pkg(default_cfg, image)), up.confirm())
    assert fsw.tc.upload.trial is None and fsw.tc.nv.data["sc"] == 5 and fsw.learner.version == 5
    # the uploaded head with the image's features, the previous head with the onboard ones it ran with
    assert judged == [None, onboard]
    assert fsw.learning.adaptation.version == fsw.learning.layer.version == 0
    assert _live_features(fsw) == _ground_features(image)


def test_a_reboot_during_the_trial_restores_the_onboard_features(default_cfg, image):
    b = Bench(default_cfg, image)
    onboard, v_input, v_layer = _onboard_feature_commits(b.fsw)
    up = uplinker(default_cfg)
    b.send(*up.upload_frames(_pkg(default_cfg, image)))
    assert b.fsw.learning.layer.version == 0
    snap = b.fsw.snapshot()
    b.boot(snapshot=snap)  # power cut in the trial: the flight computer restarts from its snapshot
    assert b.fsw.tc.upload.trial is None and b.fsw.learner.version == image.version
    assert (b.fsw.learning.adaptation.version, b.fsw.learning.layer.version) == (v_input, v_layer)
    assert _live_features(b.fsw) == onboard


def test_an_upload_over_the_images_features_leaves_them_alone(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    b.send(*up.upload_frames(_pkg(default_cfg, image)))
    trial = b.fsw.tc.upload.trial
    assert trial["prev_layer_version"] == trial["prev_input_version"] == 0
    b.send(up.rollback())
    assert b.fsw.learning.layer.rollbacks == b.fsw.learning.adaptation.rollbacks == 0
    assert _live_features(b.fsw) == _ground_features(image)
    b.fsw.learning.task_training(b.fsw.t_s)
    assert not _switches(b, d.EVENT_LAYER_UPDATE, d.LAYER_UPDATE_STRUCT, d.LAYER_OUTCOMES)
