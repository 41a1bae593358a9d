"""An uplink plan: authenticated telecommand frames grouped by the contact that carries them.

The ground team prepares what goes up before a pass: a ping, a parameter change
(load, then activate) and a signed model upload (the service 13 parts of the signed
package, then activate as a trial) at the first contact, and the confirm command at the next one, once the
trial has had a pass to validate itself. The plan file is what the simulator's
ground station radiates (`flightsim run --uplink FILE`), so `make sim` exercises the
real packet path end to end.

File format (big-endian): a repetition of [u16 contact group][u16 length][frame bytes]
(read back by `sim.uplink_file.read_uplink_file`).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from flight_sw.config.schema import MissionConfig
from ground_tools.uplink import ModelPackage, Uplinker, config_package, package_model

_ENTRY = struct.Struct(">HH")


def write_plan(path: Path, entries: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as f:
        for group, frame in entries:
            f.write(_ENTRY.pack(group, len(frame)) + frame)


def ground_model(cfg: MissionConfig, seed: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """A head retrained on the ground (fresh undrifted data) and a held-out set to cost it.

    Uses the simulator's pre-launch pipeline, as the ground segment's retraining does.
    """
    from flight_sw.ml.model import FeatureExtractor
    from sim.prelaunch import prelaunch_dataset, train_prelaunch_model
    from sim.simulation import spawn_rngs

    image = train_prelaunch_model(cfg, spawn_rngs(seed)["prelaunch"])  # the model that flies
    rng = np.random.default_rng(seed + 1)
    x, y = prelaunch_dataset(cfg, rng, 6000)
    phi = np.zeros((len(x), image.head.shape[0]))
    FeatureExtractor(image).features_into(x, phi)
    train, test = slice(0, 4000), slice(4000, None)
    n_cls = image.head.shape[1]
    q = phi[train].T @ phi[train] + cfg.model.ridge_lambda * np.eye(phi.shape[1])
    head = np.linalg.solve(q, phi[train].T @ np.eye(n_cls)[y[train]])
    return head, (phi[test], y[test])


def build_default_plan(cfg: MissionConfig, seed: int, first_seq: int = 1) -> tuple[list[tuple[int, bytes]], ModelPackage, list[str]]:
    """The `make sim` plan: ping + config change + signed model upload, then confirm."""
    up = Uplinker(cfg, first_seq)
    entries: list[tuple[int, bytes]] = [(0, up.ping())]
    changes = {1: cfg.power.budget.margin_j + 500.0}  # parameter 1: power.budget.margin_j (dictionary PARAMS)
    entries += [(0, f) for f in config_package(up, changes)]
    head, heldout = ground_model(cfg, seed)
    pkg = package_model(cfg, head, version=1000, parent_version=1, security_counter=1, heldout=heldout,
                        provenance={"origin": "ground retraining (undrifted data)"})
    entries += [(0, f) for f in up.upload_frames(pkg, activate=True)]
    entries.append((1, up.confirm()))
    notes = [
        f"{len(entries)} frames: ping, margin_j -> {changes[1]:g} J, model v1000 ({len(pkg.payload)} B, "
        f"{len(pkg.chunks)} parts) activated as a trial at the first contact, confirmed at the next",
        "model package: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in pkg.report.items()),
        f"last sequence number used: {up.seq - 1}",
    ]
    return entries, pkg, notes
