"""An uplink plan: the telecommands of the next passes, grouped by the contact that carries them.

The ground team prepares what goes up before a pass: a ping, a parameter change
(load, then activate) and a signed model upload (the service 13 parts of the signed
package, then activate as a trial) at the first contact, and the confirm command at the next one, once the
trial has had a pass to validate itself. The plan file is what the simulator's
ground station sends (`flightsim run --uplink FILE`), so `make sim` exercises the
real packet path end to end.

Two file formats (big-endian):

- packet plan (default; `write_packet_plan` / `read_packet_plan`): the bare PUS packets, for a
  ground terminal that sends them through FOP-1 (`ground_tools.pass_terminal`)::

      magic "FOP1PLAN" (8) | version u16 = 1 | key id (SPI) u16 | first ARSN u64 |
      IV salt (4) | entry count u32 | entries: [u16 contact group][u16 length][PUS packet]

  The association (key slot, first ARSN) is named, never its key: the terminal takes the key
  from the mission config (simulation missions only). The ARSNs the terminal uses start at
  the first ARSN: one per AD frame (retransmissions reuse it) and one per BC frame.
- CLTU plan (`--expedited`; `write_plan`, read back by `sim.uplink_file.read_uplink_file`):
  a repetition of [u16 contact group][u16 length][CLTU], each an SDLS-protected expedited
  (Type-BD) frame, radiated once at its contact with no feedback.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from flight_sw.config.schema import MissionConfig
from ground_tools.pass_terminal import PacketPlan
from ground_tools.uplink import (
    ModelPackage,
    Uplinker,
    config_package,
    mission_key_slot,
    package_model,
)
from sim.uplink_file import FOP_PLAN_MAGIC

_ENTRY = struct.Struct(">HH")
PACKET_PLAN_VERSION = 1
_HEADER = struct.Struct(">8sHHQ4sI")  # magic, version, key id, first ARSN, IV salt, entry count


def write_packet_plan(path: Path, plan: PacketPlan) -> None:
    """Write a FOP-1 packet plan (format in the module text)."""
    for i, (group, packet) in enumerate(plan.entries):
        if not (0 <= group <= 0xFFFF and 0 < len(packet) <= 0xFFFF):
            raise ValueError(f"entry {i}: contact group {group} / length {len(packet)} do not fit 16 bits")
    out = [_HEADER.pack(FOP_PLAN_MAGIC, PACKET_PLAN_VERSION, plan.key_id, plan.first_arsn, plan.iv_salt,
                        len(plan.entries))]
    out += [_ENTRY.pack(group, len(packet)) + packet for group, packet in plan.entries]
    Path(path).write_bytes(b"".join(out))


def read_packet_plan(path: Path) -> PacketPlan:
    """Read a FOP-1 packet plan; a malformed file raises ValueError naming the file, the byte
    offset and what was expected there."""
    raw = Path(path).read_bytes()
    if len(raw) < _HEADER.size:
        raise ValueError(f"{path}: byte 0: expected a {_HEADER.size}-byte packet plan header, "
                         f"the file has {len(raw)} bytes")
    magic, version, key_id, first_arsn, salt, count = _HEADER.unpack_from(raw, 0)
    if magic != FOP_PLAN_MAGIC:
        raise ValueError(f"{path}: byte 0: expected the magic {FOP_PLAN_MAGIC!r}, found {magic!r} "
                         "(a CLTU plan? `flightsim run --uplink` reads both)")
    if version != PACKET_PLAN_VERSION:
        raise ValueError(f"{path}: byte 8: expected packet plan version {PACKET_PLAN_VERSION}, found {version}")
    if first_arsn < 1:
        raise ValueError(f"{path}: byte 12: expected a first ARSN >= 1, found {first_arsn}")
    entries, pos = [], _HEADER.size
    for i in range(count):
        if pos + _ENTRY.size > len(raw):
            raise ValueError(f"{path}: byte {pos}: expected the header of entry {i} of {count}, the file ends")
        group, n = _ENTRY.unpack_from(raw, pos)
        if n == 0:
            raise ValueError(f"{path}: byte {pos + 2}: entry {i}: expected a packet length > 0, found 0")
        if pos + _ENTRY.size + n > len(raw):
            raise ValueError(f"{path}: byte {pos}: entry {i} claims {n} bytes, the file ends first "
                             f"({len(raw) - pos - _ENTRY.size} left)")
        entries.append((group, raw[pos + _ENTRY.size : pos + _ENTRY.size + n]))
        pos += _ENTRY.size + n
    if pos != len(raw):
        raise ValueError(f"{path}: byte {pos}: expected the end of the file after {count} entries, "
                         f"found {len(raw) - pos} more bytes")
    return PacketPlan(key_id, first_arsn, salt, tuple(entries))


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


def default_iv_salt(cfg: MissionConfig, first_arsn: int) -> bytes:
    """A reproducible AES-GCM IV salt for a simulated mission's plan (the ARSN ends every IV, so
    an IV repeats under a key only if an ARSN does, which the spacecraft refuses anyway)."""
    return hashlib.sha256(f"{cfg.mission.name}/{first_arsn}".encode()).digest()[:4]


def build_default_packets(cfg: MissionConfig, seed: int) -> tuple[list[tuple[int, bytes]], ModelPackage, dict]:
    """The `make sim` commands as bare PUS packets: ping + config change + signed model upload
    activated as a trial at the first contact, then its confirm at the next."""
    up = Uplinker(cfg, packets_only=True)
    entries: list[tuple[int, bytes]] = [(0, up.ping())]
    changes = {1: cfg.power.budget.margin_j + 500.0}  # parameter 1: power.budget.margin_j (dictionary PARAMS)
    entries += [(0, p) for p in config_package(up, changes)]
    head, heldout = ground_model(cfg, seed)
    pkg = package_model(cfg, head, version=1000, parent_version=1, security_counter=1, heldout=heldout,
                        provenance={"origin": "ground retraining (undrifted data)"})
    entries += [(0, p) for p in up.upload_frames(pkg, activate=True)]
    entries.append((1, up.confirm()))
    return entries, pkg, changes


def _notes(entries, pkg, changes, what: str) -> list[str]:
    return [
        f"{len(entries)} {what}: ping, margin_j -> {changes[1]:g} J, model v1000 ({len(pkg.payload)} B, "
        f"{len(pkg.chunks)} parts) activated as a trial at the first contact, confirmed at the next",
        "model package: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in pkg.report.items()),
    ]


def build_default_packet_plan(cfg: MissionConfig, seed: int, first_arsn: int = 1,
                              key_id: int | None = None) -> tuple[PacketPlan, ModelPackage, list[str]]:
    """The `make sim` plan for FOP-1: the packets and the association they go up on."""
    if first_arsn < 1:
        raise ValueError(f"first ARSN must be >= 1, got {first_arsn}")
    slot = mission_key_slot(cfg, "command", key_id)
    entries, pkg, changes = build_default_packets(cfg, seed)
    plan = PacketPlan(slot.key_id, first_arsn, default_iv_salt(cfg, first_arsn), tuple(entries))
    notes = _notes(entries, pkg, changes, "packets for FOP-1 (Type-AD frames)") + [
        f"association: key slot {slot.key_id}, ARSNs from {first_arsn} (one per AD frame, retransmissions "
        f"reuse it, one per BC frame: at least {len(entries)} used; uplink_log.json in the run folder "
        "gives the next one)"]
    return plan, pkg, notes


def build_default_plan(cfg: MissionConfig, seed: int, first_seq: int = 1) -> tuple[list[tuple[int, bytes]], ModelPackage, list[str]]:
    """The `make sim` plan as expedited CLTUs (`--expedited`): the same packets, each in an
    SDLS-protected Type-BD frame with ARSNs from `first_seq`."""
    packets, pkg, changes = build_default_packets(cfg, seed)
    up = Uplinker(cfg, first_seq)
    entries = [(group, up.protect_cltu(packet)) for group, packet in packets]
    notes = _notes(entries, pkg, changes, "frames") + [f"last sequence number used: {up.seq - 1}"]
    return entries, pkg, notes
