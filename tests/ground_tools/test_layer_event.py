"""The ground's reading of the last-layer update's event (flight_sw/ml/layer_update.py)."""

from __future__ import annotations

from pathlib import Path

from flight_sw.config import load_mission_config
from flight_sw.tmtc import dictionary as d
from ground_tools.archive import _Decoder

DEFAULT = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


def test_the_ground_reads_a_layer_update_event():
    """LAYER_UPDATE (dictionary v12) decodes into the archive's text: outcome, units from the bit
    mask, both accuracies, the gate's z, the path and the refusal named."""
    payload = d.LAYER_UPDATE_STRUCT.pack(1, 3, 4, (1 << 2) | (1 << 17), 0.81, 0.83, -0.7, 1, 2.3e-5, 4e-7)
    text = _Decoder(load_mission_config(DEFAULT), "test")._detail(1, 10.0, d.EVENT_LAYER_UPDATE, payload)
    assert text.startswith("last layer v3 refused: units [2, 17]")
    assert "candidate 0.810 vs active 0.830 (gate z -0.70)" in text and "analog solve" in text
    assert text.endswith("refused: worse")


def test_a_committed_layer_update_names_no_refusal():
    payload = d.LAYER_UPDATE_STRUCT.pack(0, 4, 0, 1 << 31, 0.85, 0.81, 2.5, 0, 4.6e-5, 1e-15)
    text = _Decoder(load_mission_config(DEFAULT), "test")._detail(1, 10.0, d.EVENT_LAYER_UPDATE, payload)
    assert text.startswith("last layer v4 committed: units [31]") and "digital solve" in text
    assert "refused" not in text


def test_the_layer_switches_of_an_upload_trial_read_plainly():
    nan = float("nan")
    decoder = _Decoder(load_mission_config(DEFAULT), "test")
    texts = [decoder._detail(1, 10.0, d.EVENT_LAYER_UPDATE, d.LAYER_UPDATE_STRUCT.pack(o, v, 0, 0, nan, nan, nan, 0,
                                                                                      0.0, nan))
             for o, v in ((3, 0), (4, 2))]
    assert texts == ["last layer v0 active: ground version for upload trial",
                     "last layer v2 active: onboard version restored"]
