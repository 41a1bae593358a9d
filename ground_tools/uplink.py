"""Ground uplink: CLTUs carrying SDLS-protected TC Transfer Frames, model packaging (int8,
pruning, signed manifest), chunking, and config validate / diff / package for the onboard
parameter table.

Each command is a PUS-C packet in a TC Transfer Frame (CCSDS 232.0-B) whose data field
carries the SDLS security header and trailer (355.0-B; `flight_sw.tmtc.sdls`), coded as a
CLTU (231.0-B); the commands are the ids in `flight_sw.tmtc.dictionary`, so flight and
ground cannot disagree. `Uplinker` sends expedited (Type-BD) frames; sequence-controlled
(Type-AD) frames go through FOP-1 (`ground_tools.fop1`, `tc_frame`).
Keys come from the mission config (simulation missions only; a real ground segment
keeps them in its key store). The sequence number is the caller's to persist between
sessions (`Uplinker.seq`): reusing one gets every frame refused as a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass, field

import numpy as np
from spacepackets.ecss import PusTc

from flight_sw.config.schema import MODES, MissionConfig
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc import sdls
from flight_sw.tmtc.cltu import encode_cltu
from flight_sw.tmtc.tc_frames import FECF_LEN, PRIMARY_HEADER_LEN, TcFrame
from flight_sw.tmtc.tc_link import TC_VIRTUAL_CHANNEL
from flight_sw.tmtc.upload import (
    FSW_VERSION,
    MANIFEST_FORMAT,
    MAX_MANIFEST_BYTES,
    input_schema_hash,
    pack_package,
)

INT8_MAX = 127
#: PUS packet overhead (primary 6 + PUS-C TC secondary 5 + CRC 2).
PUS_TC_OVERHEAD = 13


def max_packet_bytes(cfg: MissionConfig) -> int:
    """Longest PUS packet a TC frame carries under either SDLS service (the larger overhead)."""
    return cfg.tmtc.max_frame_bytes - PRIMARY_HEADER_LEN - FECF_LEN - sdls.overhead(sdls.AUTH_ENC)


def tc_frame(cfg: MissionConfig, key: bytes, service: str, spi: int, arsn: int, packet: bytes, *,
             bypass: bool, n_s: int = 0, iv: bytes | None = None, control: bool = False) -> bytes:
    """One SDLS-protected TC Transfer Frame (AD when not `bypass`, with sequence number `n_s`;
    BC when `control`: `packet` is then the control command).

    The MAC covers the primary header, so the header is built first with the final length."""
    if len(packet) > max_packet_bytes(cfg):
        raise ValueError(f"packet of {len(packet)} bytes exceeds a TC frame's {max_packet_bytes(cfg)}")
    size = sdls.overhead(service) + len(packet)
    shape = dict(spacecraft_id=cfg.telemetry.spacecraft_id, virtual_channel_id=TC_VIRTUAL_CHANNEL,
                 frame_sequence_number=n_s if not bypass else 0, bypass=bypass, control_command=control)
    header = TcFrame(data=bytes(size), **shape).pack()[:PRIMARY_HEADER_LEN]
    return TcFrame(data=sdls.protect(service, key, spi, arsn, header, packet, iv), **shape).pack()


def mission_key(cfg: MissionConfig, purpose: str, key_id: int | None = None) -> tuple[int, bytes]:
    """(key id, material) of the first key of `purpose` the config marks active, or of the given
    slot (a spare slot included: the ground starts its association before using it)."""
    k = mission_key_slot(cfg, purpose, key_id)
    return k.key_id, bytes.fromhex(k.key_hex)


def mission_key_slot(cfg: MissionConfig, purpose: str, key_id: int | None = None):
    """The config's key slot, as `mission_key` chooses it."""
    for k in cfg.tmtc.keys:
        if k.purpose == purpose and (k.key_id == key_id if key_id is not None else k.active):
            return k
    raise KeyError(f"no active {purpose} key{'' if key_id is None else f' with id {key_id}'} in the mission config")


class Uplinker:
    """Builds CLTUs of SDLS-protected expedited TC frames, one PUS-C command each, with
    increasing ARSNs on one security association (`key_id` is its SPI).

    `iv_salt` (4 bytes) starts every AES-GCM IV, the ARSN ends it, so an IV never repeats
    under a key while the ARSN grows (default: random per instance)."""

    def __init__(self, cfg: MissionConfig, first_seq: int = 1, key_id: int | None = None,
                 iv_salt: bytes | None = None, packets_only: bool = False):
        """`packets_only`: every command method returns the bare PUS packet instead of a CLTU
        (for a command link that frames and protects them itself, e.g. FOP-1's)."""
        import os

        self.cfg = cfg
        self.apid = cfg.telemetry.apid
        slot = mission_key_slot(cfg, "command", key_id)
        self.key_id = slot.key_id
        self.use_key(bytes.fromhex(slot.key_hex), slot.service)
        self.seq = first_seq
        self.pus_seq = 0
        self.iv_salt = iv_salt if iv_salt is not None else os.urandom(4)
        self.packets_only = packets_only

    def use_key(self, material: bytes, service: str) -> None:
        """Sign with another key (after the association was rekeyed to it)."""
        self._key, self.service = material, service

    def packet(self, service: int, subtype: int, app_data: bytes = b"", ack_flags: int = 0b1111) -> bytes:
        """A PUS-C TC packet; `ack_flags` (d.ACK_*) are the success reports asked for."""
        packet = PusTc(service=service, message_subtype=subtype, apid=self.apid, seq_count=self.pus_seq,
                       app_data=app_data, ack_flags=ack_flags).pack()
        self.pus_seq = (self.pus_seq + 1) % (1 << 14)
        return packet

    def protect(self, packet: bytes, *, bypass: bool = True, n_s: int = 0) -> bytes:
        """The TC frame for `packet` with the next ARSN (for FOP-1: `bypass=False`, `n_s`)."""
        iv = self.iv_salt + self.seq.to_bytes(8, "big") if self.service == sdls.AUTH_ENC else None
        out = tc_frame(self.cfg, self._key, self.service, self.key_id, self.seq, packet, bypass=bypass,
                       n_s=n_s, iv=iv)
        self.seq += 1
        return out

    def frame(self, service: int, subtype: int, app_data: bytes = b"") -> bytes:
        """A CLTU carrying one expedited frame with one command (the packet if `packets_only`)."""
        packet = self.packet(service, subtype, app_data)
        return packet if self.packets_only else self.protect_cltu(packet)

    def protect_cltu(self, packet: bytes) -> bytes:
        """A CLTU carrying one expedited frame with `packet`."""
        return encode_cltu(self.protect(packet))

    def function(self, fn: int, args: bytes = b"") -> bytes:
        return self.frame(d.PUS_SERVICE_FUNCTION, 1, d.FN_STRUCT.pack(fn) + args)

    def ping(self) -> bytes:
        return self.frame(d.PUS_SERVICE_TEST, 1)

    def mode(self, mode: str) -> bytes:
        return self.function(d.FN_MODE, bytes([MODES.index(mode)]))

    def load_tle(self, line1: str, line2: str) -> bytes:
        return self.function(d.FN_LOAD_TLE, line1.encode("ascii") + line2.encode("ascii"))

    def task(self, index: int, enable: bool) -> bytes:
        return self.function(d.FN_TASK_ENABLE if enable else d.FN_TASK_DISABLE, bytes([index]))

    def rollback(self) -> bytes:
        return self.function(d.FN_MODEL_ROLLBACK)

    def calibration_rollback(self) -> bytes:
        return self.function(d.FN_CAL_ROLLBACK)

    def calibration_request(self) -> bytes:
        return self.function(d.FN_CAL_REQUEST)

    def activate(self) -> bytes:
        return self.function(d.FN_MODEL_ACTIVATE)

    def confirm(self) -> bytes:
        return self.function(d.FN_MODEL_CONFIRM)

    # -- onboard tables: services 11, 12, 19 (flight_sw.tmtc.onboard_tables) -------------------
    def schedule(self, entries: list[tuple[int, bytes]]) -> bytes:
        """11,4: time-tagged commands, (release time [s since mission start], PUS TC packet)."""
        body = b"".join(struct.pack(">IH", t, len(p)) + p for t, p in entries)
        return self.frame(d.PUS_SERVICE_SCHEDULE, 4, body)

    def monitor_add(self, monitor_id: int, hk_core_field: str, low: float, high: float, event_id: int,
                    repetitions: int = 1) -> bytes:
        """12,5: watch one core housekeeping parameter (by name) against [low, high]."""
        index = next(i for i, p in enumerate(d.HK_CORE) if p.name == hk_core_field)
        return self.frame(d.PUS_SERVICE_MONITORING, 5,
                          struct.pack(">HHBddH", monitor_id, index, repetitions, low, high, event_id))

    def event_action_add(self, event_id: int, packet: bytes) -> bytes:
        """19,1: run `packet` whenever event `event_id` is raised."""
        return self.frame(d.PUS_SERVICE_EVENT_ACTION, 1, struct.pack(">H", event_id) + packet)

    def table_ids(self, service: int, subtype: int, ids: list[int]) -> bytes:
        """Enable / disable / delete definitions by id (12,1 12,2 12,6 19,2 19,4 19,5)."""
        return self.frame(service, subtype, bytes([len(ids)]) + b"".join(struct.pack(">H", i) for i in ids))

    # -- service 15: the onboard TM store (flight_sw.tmtc.packet_store) ----------------------
    def store_request(self, subtype: int, *, time_s: int | None = None, store_ids: tuple[int, ...] = ()) -> bytes:
        """15,1 15,2 15,11 15,12 15,14 15,15 15,16 15,17 15,18: [u32 time,] N (u8), N x store id
        (u16; none: every store)."""
        head = b"" if time_s is None else struct.pack(">I", time_s)
        ids = bytes([len(store_ids)]) + b"".join(struct.pack(">H", i) for i in store_ids)
        return self.frame(d.PUS_SERVICE_STORAGE, subtype, head + ids)

    def store_retrieve_range(self, from_s: int, to_s: int, store_id: int = 1) -> bytes:
        """15,9: play back the packets stored in [from_s, to_s] (s since mission start) once more."""
        return self.frame(d.PUS_SERVICE_STORAGE, 9, struct.pack(">BHII", 1, store_id, from_s, to_s))

    # -- security-association procedures (SDLS 355.1-B subset; flight_sw.tmtc.security) ------
    def sa_stop(self, spi: int) -> bytes:
        return self.function(d.FN_SA_STOP, struct.pack(">H", spi))

    def sa_start(self, spi: int) -> bytes:
        return self.function(d.FN_SA_START, struct.pack(">H", spi))

    def sa_rekey(self, spi: int, key_slot: int) -> bytes:
        return self.function(d.FN_SA_REKEY, struct.pack(">HH", spi, key_slot))

    def sa_set_arsn(self, spi: int, arsn: int) -> bytes:
        return self.function(d.FN_SA_SET_ARSN, struct.pack(">HQ", spi, arsn))

    def sa_status(self, spi: int) -> bytes:
        return self.function(d.FN_SA_STATUS, struct.pack(">H", spi))

    def recover(self, nonce: int, arsn_floor: int, security_counter: int) -> bytes:
        """The one command a satellite with a lost TC record runs: echo its boot nonce (event
        TC_STATE_LOST) and set every association's ARSN above any the ground has used. The frame
        itself goes out with `arsn_floor` as its ARSN, so the ground's counter moves on past it."""
        frame = self.function(d.FN_TC_RECOVER, d.TC_RECOVER_STRUCT.pack(nonce, arsn_floor, security_counter))
        self.seq = max(self.seq, arsn_floor + 1)
        return frame

    def param_load(self, values: dict[int, float]) -> bytes:
        return self.frame(d.PUS_SERVICE_PARAMS, 3, self.param_table_file(values)[len(d.PARAM_TABLE_MAGIC):])

    @staticmethod
    def param_table_file(values: dict[int, float]) -> bytes:
        """A parameter table as a file for CFDP (magic, then the 20,3 body): staged onboard on
        delivery (event PARAMS_STAGED), activated by `param_activate`."""
        body = bytes([len(values)]) + b"".join(d.PARAM_ENTRY_STRUCT.pack(k, v) for k, v in sorted(values.items()))
        return d.PARAM_TABLE_MAGIC + body

    @staticmethod
    def calibration_table_file(gain_q: np.ndarray, offset_q: np.ndarray) -> bytes:
        """A radiometric calibration table (columns x bands, int16 in the onboard quantisation)
        as a file for CFDP: the candidate of the onboard gate on delivery."""
        gain_q, offset_q = np.asarray(gain_q), np.asarray(offset_q)
        if gain_q.shape != offset_q.shape or gain_q.ndim != 2:
            raise ValueError(f"gain {gain_q.shape} and offset {offset_q.shape}: expected two (columns, bands) arrays")
        cols, bands = gain_q.shape
        return (d.CAL_TABLE_HEAD.pack(d.CAL_TABLE_MAGIC, cols, bands) + gain_q.astype(">i2").tobytes()
                + offset_q.astype(">i2").tobytes())

    def param_activate(self) -> bytes:
        return self.function(d.FN_PARAM_ACTIVATE)

    # -- model upload: service 13 large packet uplink (ECSS-E-ST-70-41C 6.13) --------------
    def upload_part(self, pkg: ModelPackage, seq_number: int) -> bytes:
        """Part `seq_number` (1 .. len(pkg.chunks)) of the package's service 13 transaction
        `pkg.transaction_id`: 13,9 for the first, 13,11 for the last, 13,10 in between."""
        n = len(pkg.chunks)
        if not 1 <= seq_number <= n:
            raise ValueError(f"part sequence number {seq_number} outside 1..{n}")
        subtype = (d.LPT_UPLINK_FIRST if seq_number == 1 else d.LPT_UPLINK_LAST if seq_number == n
                   else d.LPT_UPLINK_INTERMEDIATE)
        return self.frame(d.PUS_SERVICE_LARGE_PACKET, subtype,
                          d.LPT_PART_STRUCT.pack(pkg.transaction_id, seq_number) + pkg.chunks[seq_number - 1])

    def upload_resume(self, pkg: ModelPackage, next_part: int) -> list[bytes]:
        """The parts from `next_part` (what a failed completion report names as expected) to the last."""
        return [self.upload_part(pkg, i) for i in range(next_part, len(pkg.chunks) + 1)]

    def upload_frames(self, pkg: ModelPackage, activate: bool = True) -> list[bytes]:
        """The whole upload for a contact: every part in order (13,9, 13,10..., 13,11; the last
        one completes staging onboard), then (optionally) FN_MODEL_ACTIVATE."""
        out = self.upload_resume(pkg, 1)
        if activate:
            out.append(self.activate())
        return out


# -- model packaging ------------------------------------------------------------------------
def quantise_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8, one scale per output channel (column), as the onboard extractor."""
    scale = np.max(np.abs(w), axis=0) / INT8_MAX
    scale[scale == 0] = 1.0
    return np.clip(np.rint(w / scale), -INT8_MAX, INT8_MAX).astype(np.int8), scale.astype(np.float64)


def prune_magnitude(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero the smallest-|w| fraction `sparsity` of the weights (the bias row is kept)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    out = np.array(w, dtype=np.float64, copy=True)
    body = out[:-1]
    k = int(round(sparsity * body.size))
    if k:
        idx = np.argsort(np.abs(body), axis=None, kind="stable")[:k]
        body.flat[idx] = 0.0
    return out


def head_accuracy(head: np.ndarray, features: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of a head on held-out (features + bias column, labels)."""
    return float(np.mean(np.argmax(features @ head, axis=1) == labels))


@dataclass
class ModelPackage:
    """A signed model package. `chunks` are the parts of its OLPK form (`package`, the large
    message of service 13; CFDP sends `package` as one file), at least two (first and last).
    `transaction_id` (u16) names its service 13 transaction: by default the low 16 bits of the
    version (a new version is a new transaction); the caller may set another before sending."""

    manifest: dict
    manifest_bytes: bytes
    signature: bytes
    key_id: int
    payload: bytes
    chunks: list[bytes]
    report: dict = field(default_factory=dict)
    transaction_id: int = 0

    @property
    def package(self) -> bytes:
        """The OLPK package (flight_sw.tmtc.upload.pack_package) the parts are cut from."""
        return pack_package(self.key_id, self.signature, self.manifest_bytes, self.payload)

    def repack(self) -> ModelPackage:
        """Cut the parts again from the current fields (after changing the signature, the
        manifest or the payload, e.g. to test a refusal), with the manifest's part size."""
        self.chunks = split_parts(self.package, self.manifest["chunk_size"])
        return self


def max_chunk_bytes(cfg: MissionConfig) -> int:
    """Largest upload part that fits a frame: frame limit - security - PUS overhead - the 4
    octets of transaction id and part sequence number (dictionary.LPT_PART_STRUCT)."""
    return max_packet_bytes(cfg) - PUS_TC_OVERHEAD - d.LPT_PART_STRUCT.size


def split_parts(package: bytes, part_bytes: int) -> list[bytes]:
    """Cut a package into service 13 parts of `part_bytes`; a package that fits one part is cut
    in two (a large message has a first and a last part, ECSS-E-ST-70-41C 6.13)."""
    if len(package) <= part_bytes:
        half = len(package) // 2
        return [package[:half], package[half:]]
    return [package[i : i + part_bytes] for i in range(0, len(package), part_bytes)]


def package_model(
    cfg: MissionConfig,
    head: np.ndarray,
    version: int,
    parent_version: int,
    security_counter: int,
    sparsity: float = 0.0,
    heldout: tuple[np.ndarray, np.ndarray] | None = None,
    chunk_size: int | None = None,
    provenance: dict | None = None,
    name: str | None = None,
    min_fsw_version: str = ".".join(map(str, FSW_VERSION)),
    transaction_id: int | None = None,
) -> ModelPackage:
    """Prune (optional), quantise per channel, sign the manifest, cut the package into parts.

    `chunk_size` is both the service 13 part size and the manifest's `chunk_size` (how the
    payload is staged onboard); `transaction_id` defaults to `version & 0xFFFF`.

    `head` is (feature_dim + 1, classes) float; `heldout` = (features with bias column,
    labels) measures what pruning and quantisation cost (reported, and kept in provenance).
    """
    head = np.asarray(head, dtype=np.float64)
    pruned = prune_magnitude(head, sparsity)
    q, scales = quantise_per_channel(pruned)
    payload = q.tobytes()
    report = {"sparsity_target": sparsity, "sparsity": float(np.mean(q[:-1] == 0)), "bytes": len(payload)}
    if heldout is not None:
        feats, labels = heldout
        report["acc_float"] = head_accuracy(head, feats, labels)
        report["acc_pruned"] = head_accuracy(pruned, feats, labels)
        report["acc_int8"] = head_accuracy(q.astype(np.float64) * scales[None, :], feats, labels)
        report["acc_cost_pruning"] = report["acc_float"] - report["acc_pruned"]
        report["acc_cost_total"] = report["acc_float"] - report["acc_int8"]
    chunk = chunk_size or max_chunk_bytes(cfg)
    if not 1 <= chunk <= max_chunk_bytes(cfg):
        raise ValueError(f"chunk_size must be in 1..{max_chunk_bytes(cfg)}")
    n_chunks = -(-len(payload) // chunk)
    prov = {"source": "ground", **(provenance or {})}
    prov.update({k: round(v, 4) for k, v in report.items() if k.startswith("acc_")})
    manifest = {
        "format": MANIFEST_FORMAT, "kind": "head", "name": name or f"head_v{version}.bin",
        "version": version, "parent_version": parent_version, "security_counter": security_counter,
        "dtype": "int8", "shape": list(q.shape), "scales": [float(s) for s in scales],
        "size": len(payload), "chunk_size": chunk, "n_chunks": n_chunks,
        "sha256": hashlib.sha256(payload).hexdigest(), "input_schema_hash": input_schema_hash(cfg),
        "min_fsw_version": min_fsw_version, "sparsity": report["sparsity"], "provenance": prov,
    }
    mbytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    key_id, key = mission_key(cfg, "upload")
    sig = hmac.new(key, mbytes, hashlib.sha256).digest()
    if len(mbytes) > MAX_MANIFEST_BYTES:
        raise ValueError(f"manifest of {len(mbytes)} bytes exceeds the onboard {MAX_MANIFEST_BYTES}; shorten provenance")
    package = pack_package(key_id, sig, mbytes, payload)
    if len(package) > cfg.tmtc.max_upload_bytes:
        raise ValueError(f"package of {len(package)} bytes exceeds tmtc.max_upload_bytes {cfg.tmtc.max_upload_bytes}")
    tid = version & 0xFFFF if transaction_id is None else transaction_id
    if not 0 <= tid <= 0xFFFF:
        raise ValueError(f"transaction_id {tid} is not a u16")
    return ModelPackage(manifest, mbytes, sig, key_id, payload, split_parts(package, chunk), report, tid)


# -- config validate / diff / package ----------------------------------------------------
def _param_value(cfg: MissionConfig, name: str) -> float:
    obj = cfg
    for part in name.split("."):
        obj = getattr(obj, part)
    return float(d.ECLIPSE_POLICIES.index(obj)) if isinstance(obj, str) else float(obj)


def config_validate(text: str, source: str = "<config>") -> list[str]:
    """Every error of a mission config (empty: valid), as the flight software's loader reports them."""
    from flight_sw.config.loader import ConfigError, parse_mission_config

    try:
        parse_mission_config(text, source)
    except ConfigError as e:
        return list(e.errors)
    return []


def config_diff(active: MissionConfig, proposed: MissionConfig) -> tuple[dict[int, float], list[str]]:
    """(uploadable parameter changes by id, lines describing every difference).

    Only keys in the onboard parameter table (dictionary.PARAMS) can change in flight;
    the other differing sections are listed as not uploadable.
    """
    changes: dict[int, float] = {}
    lines: list[str] = []
    for pid, (name, lo, hi) in sorted(d.PARAMS.items()):
        old, new = _param_value(active, name), _param_value(proposed, name)
        if old != new:
            changes[pid] = new
            lines.append(f"{name}: {old:g} -> {new:g} (uploadable, bounds [{lo:g}, {hi:g}])")
    for f in type(active).__dataclass_fields__:
        a, b = getattr(active, f), getattr(proposed, f)
        if a != b and f not in ("power", "model"):
            lines.append(f"{f}: differs (not uploadable in flight)")
    return changes, lines


def config_package(uplinker: Uplinker, changes: dict[int, float]) -> list[bytes]:
    """Frames that load the changes into the staging table and activate them (20,3 then 8/activate)."""
    for pid, value in changes.items():
        name, lo, hi = d.PARAMS[pid]
        if not lo <= value <= hi:
            raise ValueError(f"{name}={value:g} outside [{lo:g}, {hi:g}]")
    return [uplinker.param_load(changes), uplinker.param_activate()]
