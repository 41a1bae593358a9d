"""The `tmtc` bench group on a small sample: figures present, no crash, no forgery, uplink completes."""

import numpy as np

from flight_sw.config import load_mission_config
from sim.bench import GROUPS
from sim.bench import tmtc as bench


def test_tmtc_fuzz_and_uplink_small():
    assert "tmtc" in GROUPS
    cfg = load_mission_config(bench.DEFAULT_CONFIG)
    from sim.prelaunch import train_prelaunch_model

    image = train_prelaunch_model(cfg, np.random.default_rng(0))
    out = bench._fuzz(cfg, image, 3000, lambda s: None)
    assert out["tmtc.frame_fuzz_frames"] == 3000 and out["tmtc.frame_fuzz_crashes"] == 0
    assert out["tmtc.frame_fuzz_forgeries_accepted"] == 0 and out["tmtc.frame_fuzz_genuine_accepted"] > 0

    class Contact:
        duration_s = 60.0

    from ground_tools.uplink import package_model

    fsw = bench._fsw(cfg, image)
    pkg = package_model(cfg, image.head, version=2, parent_version=1, security_counter=2)
    # 60 s contacts, 50% loss: it takes several, and ends confirmed.
    used = bench._uplink_contacts(fsw, cfg, lambda: pkg, [Contact()] * 20, 0.5, np.random.default_rng(3))
    assert 1 <= used <= 20 and fsw.tc.nv.data["sc"] == 2 and fsw.learner.version == 2
