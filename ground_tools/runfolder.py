"""A run folder as the ground sees it: which files each command needs, loaded with clear errors.

A run folder (written by `sim.runner`) holds config.yaml, run.json, telemetry.bin,
truth.npz, summary.json and run.log. Each ground command needs a subset: `ingest`
needs the config (mission start, task table, APID) and the telemetry; the report
also needs the summary, truth and run.json. Anything missing or unreadable raises
`RunFolderError` whose message names the folder and the files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flight_sw.config import ConfigError
from flight_sw.config.loader import parse_mission_config
from flight_sw.config.schema import MissionConfig

REQUIRED_FILES = ("config.yaml", "run.json", "telemetry.bin", "truth.npz", "summary.json")
#: run.json and summary.json are written last: a folder without them is a run that did not
#: finish (a killed run of a version before run folders were written as a transaction).
INGEST_FILES = ("config.yaml", "telemetry.bin", "run.json", "summary.json")


class RunFolderError(ValueError):
    """The run folder is incomplete or unreadable; the message says what is missing."""


class OptionError(ValueError):
    """A command option does not fit the run (e.g. an orbit that is not in the telemetry)."""


@dataclass
class RunFolder:
    path: Path
    cfg: MissionConfig
    config_text: str
    run_info: dict = field(default_factory=dict)

    @property
    def telemetry_path(self) -> Path:
        return self.path / "telemetry.bin"

    @property
    def identity(self) -> dict:
        """What makes two telemetry files the same run: the exact config and the seed."""
        return {
            "mission": self.cfg.mission.name,
            "start_utc": self.cfg.mission.start_utc.isoformat(),
            "seed": str(self.run_info.get("seed", self.cfg.mission.seed)),
            "config_sha1": hashlib.sha1(self.config_text.encode("utf-8")).hexdigest(),
        }

    def summary(self) -> dict:
        return _json(self.path / "summary.json")

    def truth(self) -> dict[str, np.ndarray]:
        p = self.path / "truth.npz"
        try:
            with np.load(p) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{p}: unreadable simulator truth ({exc})") from None


def _json(p: Path) -> dict:
    try:
        value = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{p}: unreadable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{p}: expected a JSON object")
    return value


def open_run(run_dir: Path | str, need: tuple[str, ...] = REQUIRED_FILES) -> RunFolder:
    """Check the folder has the files in `need` and parse its config (and run.json if present)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: not a run folder (directory not found)")
    missing = [f for f in need if not (run_dir / f).is_file()]
    if missing:
        raise RunFolderError(f"{run_dir}: incomplete run folder (a run that did not finish?), missing "
                             f"{', '.join(missing)}")
    cfg_path = run_dir / "config.yaml"
    try:
        text = cfg_path.read_text(encoding="utf-8")
        cfg = parse_mission_config(text, str(cfg_path))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{cfg_path}: unreadable ({exc})") from None
    except ConfigError as exc:
        raise RunFolderError(f"invalid mission config in the run folder: {exc}") from None
    run_info = _json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    return RunFolder(run_dir, cfg, text, run_info)
