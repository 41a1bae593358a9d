"""The real packet path end to end: a ground uplink plan, radiated at contacts, run onboard."""

import re
import struct
from pathlib import Path

import pytest
from spacepackets.ecss import PusTm

from flight_sw.config import load_mission_config
from flight_sw.tmtc import dictionary as d
from ground_tools.uplink_plan import build_default_plan, write_plan
from sim.runner import run_mission
from sim.uplink_file import read_uplink_file

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"


@pytest.fixture(scope="module")
def uplinked_run(tmp_path_factory):
    cfg = load_mission_config(DEFAULT)
    entries, pkg, _ = build_default_plan(cfg, cfg.mission.seed)
    tmp = tmp_path_factory.mktemp("up")
    write_plan(tmp / "uplink.bin", entries)
    assert read_uplink_file(tmp / "uplink.bin") == entries
    result = run_mission(cfg, DEFAULT.read_text(), tmp / "run", days=0.6, show_progress=False,
                         uplink=read_uplink_file(tmp / "uplink.bin"))
    return cfg, entries, result


def test_every_planned_frame_is_accepted_and_the_model_flies(uplinked_run):
    cfg, entries, result = uplinked_run
    s = result.summary
    assert s["telecommands_uplinked"] == len(entries) == s["telecommands_accepted"]
    assert s["telecommands_rejected"] == 0
    versions, failures = set(), 0
    raw = (result.run_dir / "telemetry.bin").read_bytes()
    from ground_tools.decode import split_packets

    for pkt in split_packets(raw)[0]:
        p = PusTm.unpack(pkt, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == 3 and struct.unpack(">H", data[:2])[0] == d.HK_CORE_SID:
            row = dict(zip((q.name for q in d.HK_CORE), d.HK_CORE_STRUCT.unpack(data[2:]), strict=True))
            versions.add(row["model_version"])
        if p.service == d.PUS_SERVICE_VERIFICATION and p.message_subtype in (
            d.TM_ACCEPT_FAIL, d.TM_START_FAIL, d.TM_COMPLETE_FAIL
        ):
            failures += 1
    assert 1000 in versions  # the uplinked model was active (trial, then confirmed)
    assert failures == 0


def test_run_folder_never_keeps_key_material(uplinked_run):
    cfg, _, result = uplinked_run
    text = (result.run_dir / "config.yaml").read_text()
    for key in cfg.tmtc.keys:
        assert key.key_hex.lower() not in text.lower()
    assert re.search(r"key material redacted", text)
    for name in ("run.json", "run.log", "summary.json"):
        body = (result.run_dir / name).read_text().lower()
        assert all(k.key_hex.lower()[:16] not in body for k in cfg.tmtc.keys), name


def test_site_samples_go_down_and_replay_scores_a_candidate(uplinked_run, tmp_path):
    """Labelled samples downlinked in HK SID 5 reach the archive; `groundtools replay` scores on them."""
    import subprocess
    import sys

    import numpy as np

    from ground_tools.archive import Archive, ingest
    from ground_tools.models import save_model
    from sim.prelaunch import train_prelaunch_model
    from sim.simulation import spawn_rngs

    cfg, _, result = uplinked_run
    ingest(result.run_dir)
    t, pixels, labels, onboard, versions = Archive(result.run_dir / "archive.sqlite").samples()
    assert len(t) >= 8 and pixels.shape[1] == cfg.payload.bands
    assert np.all((labels >= 0) & (labels < len(cfg.payload.classes)))
    image = train_prelaunch_model(cfg, spawn_rngs(cfg.mission.seed)["prelaunch"])
    model = save_model(tmp_path / "candidate.npz", image)
    r = subprocess.run([sys.executable, "-m", "ground_tools.cli", "replay", str(model), str(result.run_dir)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout.lower()
