"""Model lifecycle from telemetry, the model file format, and `groundtools replay`."""

import math

import numpy as np
import pytest

from flight_sw.config import load_mission_config, parse_mission_config
from ground_tools.archive import Archive, add_samples, default_db, ensure_archive
from ground_tools.models import ModelFileError, lifecycle, load_model, predict, save_model

from .conftest import DEFAULT
from .helpers import cli


def _upd(t, outcome, version, labels=100):
    return {"t_s": t, "outcome": outcome, "version": version, "candidate_accuracy": 0.9, "active_accuracy": 0.8,
            "labels_used": labels, "solve_path": 0, "solve_energy_j": 1e-4, "rel_residual": 1e-15}


def test_lifecycle_rules():
    t = np.arange(0.0, 1000.0, 100.0)
    v = np.array([1, 1, 2, 2, 3, 2, 2, 2, 5, 5])  # 3 -> 2 rolled back; 2 -> 5 with no event
    hk = {"t_s": t, "model_version": v, "label_accuracy": np.linspace(0.5, 0.95, len(t))}
    updates = [_upd(150, "committed", 2), _upd(250, "refused", 3), _upd(350, "committed", 3),
               _upd(450, "rolled_back", 2)]
    truth = {"acc_t_s": np.arange(0.0, 1000.0, 10.0), "acc_onboard": np.full(100, 0.9)}
    vs = {m.version: m for m in lifecycle(hk, updates, truth, end_s=1000.0)}
    assert list(vs) == [1, 2, 3, 5]
    assert vs[1].origin == "pre-launch" and vs[1].parent is None and vs[1].intervals == [[0.0, 150.0]]
    assert vs[1].why_replaced.startswith("superseded by v2")
    assert vs[2].origin == "trained onboard" and vs[2].parent == 1 and vs[2].refused_candidates == 1
    assert vs[2].intervals == [[150.0, 350.0], [450.0, 800.0]]  # active again after the rollback
    assert vs[3].parent == 2 and vs[3].why_replaced.startswith("rolled back to v2")
    assert "no training-update event" in vs[2].why_replaced
    assert vs[5].origin.startswith("unknown") and vs[5].why_replaced == "active at the end of the run"
    assert vs[5].intervals == [[800.0, 1000.0]]
    assert vs[1].label_accuracy == pytest.approx(np.mean(hk["label_accuracy"][:2]))
    assert vs[2].truth_accuracy == pytest.approx(0.9) and vs[2].labels_used == 100


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 0.25-day run whose gate accepts any candidate not worse on held-back labels (the default
    gate asks for a significant gain on site labels, which six hours rarely give): versions to list."""
    import yaml

    from sim.runner import run_mission

    data = yaml.safe_load(DEFAULT.read_text())
    data.setdefault("model", {}).update({"validation_z": 0.0, "gate_on_teacher_labels": True})
    text = yaml.safe_dump(data, sort_keys=False)
    out = tmp_path_factory.mktemp("trained") / "run"
    run_mission(parse_mission_config(text, "trained_run.yaml"), text, out, days=0.25, show_progress=False)
    return out


def test_models_command_on_a_run(trained_run, tmp_path, capsys):
    db = tmp_path / "a.sqlite"
    rc, out, err = cli(capsys, "models", trained_run, "--db", db)
    assert rc == 0, err
    with Archive(db) as ar:
        updates = ar.training_updates()
        hk = ar.hk_core()
    committed = sum(u["outcome"] == "committed" for u in updates)
    assert f"{committed + 1} model versions" in out  # pre-launch + one per committed update
    first = int(hk["model_version"][0])
    assert f"v{first:<7} pre-launch" in out
    assert "trained onboard" in out and "active at the end of the run" in out
    lines = [ln for ln in out.splitlines() if ln[:2].startswith("v") and ln[1:2].isdigit()]
    assert len(lines) == committed + 1


@pytest.fixture(scope="module")
def model_and_samples():
    from sim.prelaunch import train_prelaunch_model
    from sim.scene import SceneTruth

    cfg = load_mission_config(DEFAULT)
    image = train_prelaunch_model(cfg, np.random.default_rng(5))
    scene = SceneTruth(cfg.payload, np.random.default_rng(6))
    n = 240
    x = np.zeros((n, cfg.payload.bands), np.float32)
    y = np.zeros(n, np.int64)
    for i in range(0, n, 16):
        scene.sample(3600.0 * i / 16, 16, scene.base_mix, 45.0, x[i : i + 16], y[i : i + 16])
    return cfg, image, x, y


def test_model_file_round_trip(model_and_samples, tmp_path):
    _, image, x, _ = model_and_samples
    path = save_model(tmp_path / "m.npz", image)
    back = load_model(path)
    assert back.version == image.version
    np.testing.assert_array_equal(back.head, image.head)
    np.testing.assert_array_equal(predict(back, x), predict(image, x))


def test_invalid_model_files_are_refused_with_the_field(model_and_samples, tmp_path):
    _, image, _, _ = model_and_samples
    path = save_model(tmp_path / "m.npz", image)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files if k != "head"}
    np.savez(tmp_path / "nohead.npz", **data)
    with pytest.raises(ModelFileError, match="head: missing"):
        load_model(tmp_path / "nohead.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a model file"):
        load_model(tmp_path / "junk.npz")


def test_replay_without_downlinked_samples_says_so(model_and_samples, no_sample_run, tmp_path, capsys):
    _, image, _, _ = model_and_samples
    path = save_model(tmp_path / "m.npz", image)
    rc, out, err = cli(capsys, "replay", path, no_sample_run, "--db", tmp_path / "a.sqlite")
    assert rc == 2 and "no downlinked samples" in err and "calibration-site passes" in err
    rc, out, err = cli(capsys, "replay", tmp_path / "absent.npz", no_sample_run, "--db", tmp_path / "a.sqlite")
    assert rc == 2 and "model file not found" in err


def test_replay_scores_a_candidate_against_the_model_that_flew(model_and_samples, no_sample_run, tmp_path, capsys):
    import shutil

    cfg, image, x, y = model_and_samples
    run_copy = tmp_path / "run"
    shutil.copytree(no_sample_run, run_copy, ignore=shutil.ignore_patterns("archive.sqlite"))
    db = ensure_archive(run_copy)
    assert db == default_db(run_copy)
    flown = predict(image, x)
    flown[: len(flown) // 4] = (y[: len(flown) // 4] + 1) % len(cfg.payload.classes)  # the flight model did worse
    add_samples(db, np.arange(len(y)) * 600.0, x, y, onboard_label=flown, model_version=np.ones(len(y)))
    cand = save_model(tmp_path / "cand.npz", image)
    rc, out, err = cli(capsys, "replay", cand, run_copy, "--baseline", cand)
    assert rc == 0, err
    acc = float((predict(image, x) == y).mean())
    assert acc > 0.8
    assert f"on {len(y)} downlinked labelled samples" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("accuracy"))
    cand_acc, flown_acc, base_acc = map(float, row.split()[1:])
    assert cand_acc == pytest.approx(acc, abs=1e-3) and base_acc == cand_acc
    assert flown_acc == pytest.approx(float((flown == y).mean()), abs=1e-3)
    assert "candidate vs the model that flew: +" in out
    assert "water" in out  # per-class rows
    # a model for another mission (wrong band count) is refused
    bad = save_model(tmp_path / "bad.npz", image.__class__(**{**image.__dict__, "input_mean": np.zeros(3)}))
    rc, _, err = cli(capsys, "replay", bad, run_copy)
    assert rc == 2 and "input_mean: shape (3,), expected (10,)" in err
    assert not math.isnan(acc)


def test_lifecycle_with_an_uplinked_model_trial():
    t = np.arange(0.0, 600.0, 100.0)
    hk = {"t_s": t, "model_version": np.array([1, 1, 9, 9, 1, 1]), "label_accuracy": np.full(6, 0.9)}
    uploads = [{"t_s": 150.0, "stage": "trial_started", "version": 9},
               {"t_s": 350.0, "stage": "trial_reverted", "version": 9}]
    vs = {m.version: m for m in lifecycle(hk, [], None, 600.0, uploads)}
    assert vs[9].origin == "uplinked (trial)" and vs[9].parent == 1 and vs[9].intervals == [[150.0, 350.0]]
    assert vs[9].why_replaced == "uplinked trial reverted to v1"
    assert vs[1].intervals == [[0.0, 150.0], [350.0, 600.0]] and "no training-update event" not in vs[1].why_replaced
