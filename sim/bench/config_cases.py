"""Generated mission configs for the one-validation property (issue 16, item 1): whatever
`flightsim validate` accepts, `flightsim run` can set up.

`mutated_config(seed)` changes a handful of the keys where the pieces of a config meet
(task periods, offsets and budgets, the major frame, the start date, the APID, key
material, queue and buffer sizes) in the default mission. `judge(seed, products)` runs the
validation `flightsim validate` runs and, when it accepts, the run's set-up (the
simulation built and one major frame flown): a disagreement is a config validate accepts
whose set-up fails. Used by `tests/sim/test_setup_check.py` and `flightsim bench
reliability` (``reliability.validate_run_disagreements``).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"
PERIODS_S = (1, 2, 3, 5, 7, 10, 11, 15, 20, 25, 30, 45, 60, 90, 120)


@lru_cache(maxsize=1)
def _base() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))


def mutated_config(seed: int) -> dict:
    """The default mission with 1-4 random changes (a plain dict, as YAML would give)."""
    rng = np.random.default_rng([seed, 16])
    data = copy.deepcopy(_base())
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(0, 10))
        tasks = data["tasks"]
        t = tasks[int(rng.integers(0, len(tasks)))]
        if kind == 0:
            t["period_s"] = int(rng.choice(PERIODS_S))
        elif kind == 1:
            t["offset_s"] = int(rng.integers(0, 2 * t["period_s"]))
        elif kind == 2:
            t["compute_budget_s"] = float(rng.choice([0.001, 0.05, 0.3, 0.6, 0.95, 1.5]))
        elif kind == 3:
            data["executive"]["frames_per_major"] = int(rng.choice([20, 30, 59, 60, 120, 600]))
        elif kind == 4:
            data["mission"]["start_utc"] = f"{int(rng.integers(1880, 2070))}-0{int(rng.integers(1, 10))}-01T00:00:00Z"
        elif kind == 5:
            data["telemetry"]["apid"] = int(rng.choice([0, 1, 100, 2046, 2047, 2048, 4095]))
        elif kind == 6:
            keys = data["tmtc"]["keys"]
            k = keys[int(rng.integers(0, len(keys)))]
            choice = int(rng.integers(0, 4))
            if choice == 0:
                k["key_hex"] = k["key_hex"][: int(rng.integers(0, 64))]
            elif choice == 1:
                k["key_id"] = keys[0]["key_id"]
            elif choice == 2:
                k["active"] = False
            else:
                k["key_hex"] = "zz" + k["key_hex"][2:]
        elif kind == 7:
            data["downlink"]["queue_packets"] = int(rng.choice([1, 2, 3, 64, 5000]))
        elif kind == 8:
            data["model"]["replay_buffer_size"] = int(rng.choice([8, 9, 95, 96, 97, 5000]))
        else:
            tasks.append(dict(t, name=f"{t['name']}_copy{seed}"))
    return data


@lru_cache(maxsize=1)
def products():
    """The pre-launch model and teacher of seed 1 (the mutations keep their shapes)."""
    from sim.learning_suite import prelaunch_products

    return prelaunch_products(1)


def judge(seed: int, days: float = 0.02) -> tuple[str, str]:
    """("refused", why) when validation refuses the config, ("ok", "") when validation
    accepts it and the run sets up and flies a major frame, ("disagree", why) otherwise."""
    from flight_sw.config import ConfigError, parse_mission_config
    from flight_sw.power.feasibility import PowerInfeasibleError, check_essential_feasibility
    from sim.setup_check import SetupError, check_run_setup
    from sim.simulation import Simulation

    text = yaml.safe_dump(mutated_config(seed), sort_keys=False)
    try:
        cfg = parse_mission_config(text, f"generated-{seed}.yaml")
        check_essential_feasibility(cfg, days)
        check_run_setup(cfg, days)
    except (ConfigError, PowerInfeasibleError, SetupError) as exc:
        return "refused", str(exc).splitlines()[0][:200]
    image, teacher = products()
    try:
        sim = Simulation(cfg, cfg.mission.seed, days * 86400.0, lambda p: None, image=image, teacher=teacher)
        sim.advance(cfg.executive.frames_per_major)
    except Exception as exc:  # noqa: BLE001 - any set-up failure after an accepted validation is the finding
        return "disagree", f"{type(exc).__name__}: {exc}"[:300]
    return "ok", ""
