"""SDLS-like telecommand authentication and the non-volatile TC state behind it.

Frame layout (big-endian; shared with the ground, which seals frames with `seal`)::

    0   u8   frame version (1)
    1   u16  key id
    3   u64  sequence number (anti-replay)
    11  u16  length L of the PUS packet
    13  L    PUS-C telecommand (CCSDS space packet with CRC, packed by spacepackets)
    13+L 32  HMAC-SHA256(key, bytes 0 .. 13+L)

Rules (CCSDS 355.0-B practice, see docs/tmtc.md): the MAC is verified before the
anti-replay state is even read; a frame is accepted only when its sequence number lies
in (last, last + window] for its key; the new counter is persisted through the
injected store *before* the command runs, so a replay after a reboot fails, the first
frame after a cold start included. Unknown, deactivated and wrong-purpose key slots
reject. Key material never leaves this module: rejections report the key id only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from typing import Protocol

from flight_sw.config.schema import TmtcConfig

FRAME_VERSION = 1
HEADER = struct.Struct(">BHQH")
MAC_LEN = 32
OVERHEAD = HEADER.size + MAC_LEN
SEQ_MAX = (1 << 64) - 1
NV_MAGIC = b"TCNV1"
MIN_KEY_BYTES = 32


class TcStore(Protocol):
    """Non-volatile storage handed in at start-up. `save` must be atomic (all or nothing)."""

    def load(self) -> bytes: ...

    def save(self, blob: bytes) -> None: ...


class MemoryStore:
    """An in-memory store (simulator, tests). Survives a 'reboot' when handed to the next instance."""

    def __init__(self, blob: bytes = b""):
        self.blob = bytes(blob)
        self.saves = 0

    def load(self) -> bytes:
        return self.blob

    def save(self, blob: bytes) -> None:
        self.blob = bytes(blob)
        self.saves += 1


def seal(key: bytes, key_id: int, seq: int, packet: bytes) -> bytes:
    """Build an authenticated frame (the ground side of `Authenticator.verify`)."""
    body = HEADER.pack(FRAME_VERSION, key_id, seq, len(packet)) + packet
    return body + hmac.new(key, body, hashlib.sha256).digest()


def empty_nv() -> dict:
    return {"seq": {}, "deact": [], "sc": 0, "confirmed": None, "trial": None, "staging": None, "untrusted": [],
            "params": {"active": {}, "staged": None, "version": 0}}


class NvState:
    """The TC state that must survive power cuts: one JSON record + CRC-32, saved atomically.

    A record that fails its CRC is not silently reset (that would reopen every replay):
    the state is marked corrupt and every frame is refused until the ground intervenes.
    """

    def __init__(self, store: TcStore):
        self.store = store
        self.corrupt = False
        self.data = empty_nv()
        self.reload()

    def reload(self) -> None:
        blob = self.store.load()
        self.corrupt = False
        if not blob:
            self.data = empty_nv()
            return
        body, crc = blob[:-4], blob[-4:]
        if not body.startswith(NV_MAGIC) or struct.pack(">I", zlib.crc32(body)) != crc:
            self.corrupt = True
            self.data = empty_nv()
            return
        self.data = empty_nv() | json.loads(body[len(NV_MAGIC):])

    def commit(self) -> None:
        body = NV_MAGIC + json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()
        self.store.save(body + struct.pack(">I", zlib.crc32(body)))


class Key:
    __slots__ = ("key_id", "purpose", "material", "active")

    def __init__(self, key_id: int, purpose: str, material: bytes, active: bool):
        self.key_id, self.purpose, self.material, self.active = key_id, purpose, material, active

    def __repr__(self) -> str:
        return f"Key({self.key_id}, {self.purpose!r}, active={self.active}, material=<redacted>)"


def keys_from_config(cfg: TmtcConfig) -> dict[int, Key]:
    """Key slots by id; refuses short, non-hex or duplicate keys (naming the id, never the material)."""
    out: dict[int, Key] = {}
    for i, k in enumerate(cfg.keys):
        where = f"tmtc.keys[{i}] (key id {k.key_id})"
        try:
            material = bytes.fromhex(k.key_hex)
        except ValueError:
            raise ValueError(f"{where}: key_hex is not hexadecimal") from None
        if len(material) < MIN_KEY_BYTES:
            raise ValueError(f"{where}: key must be at least {MIN_KEY_BYTES} bytes, got {len(material)}")
        if k.key_id in out:
            raise ValueError(f"{where}: duplicate key id")
        out[k.key_id] = Key(k.key_id, k.purpose, material, k.active)
    return out


class Authenticator:
    """Verifies frames; owns the per-key anti-replay counters (in `nv`)."""

    def __init__(self, cfg: TmtcConfig, nv: NvState):
        self.keys = keys_from_config(cfg)
        self.window = cfg.anti_replay_window
        self.max_frame = cfg.max_frame_bytes
        self.nv = nv

    def key_usable(self, key_id: int, purpose: str) -> str | None:
        """None when the slot exists, is active and serves `purpose`; else the reject reason."""
        key = self.keys.get(key_id)
        if key is None:
            return "unknown_key"
        if not key.active or key_id in self.nv.data["deact"]:
            return "key_deactivated"
        if key.purpose != purpose:
            return "wrong_key_purpose"
        return None

    def verify_mac(self, key_id: int, purpose: str, data: bytes, mac: bytes) -> str | None:
        """Check an HMAC with a usable key of `purpose` (also used for upload manifests)."""
        reason = self.key_usable(key_id, purpose)
        if reason:
            return reason
        good = hmac.new(self.keys[key_id].material, data, hashlib.sha256).digest()
        return None if hmac.compare_digest(good, mac) else "bad_mac"

    def verify(self, frame: bytes) -> tuple[str | None, int, int, bytes]:
        """(reject reason or None, key id, sequence, PUS packet). Accepting persists the counter."""
        n = len(frame)
        if n > self.max_frame:
            return "too_long", 0, 0, b""
        if n < OVERHEAD:
            return "too_short", 0, 0, b""
        version, key_id, seq, length = HEADER.unpack_from(frame)
        if version != FRAME_VERSION:
            return "bad_version", key_id, seq, b""
        if HEADER.size + length + MAC_LEN != n:
            return "bad_length", key_id, seq, b""
        if self.nv.corrupt:
            return "state_corrupt", key_id, seq, b""
        body = frame[: n - MAC_LEN]
        reason = self.verify_mac(key_id, "command", body, frame[n - MAC_LEN:])
        if reason:
            return reason, key_id, seq, b""
        # Only now, with the frame authenticated, is the anti-replay state consulted.
        counters = self.nv.data["seq"]
        last = counters.get(str(key_id), 0)
        if seq <= last:
            return "replay", key_id, seq, b""
        if seq - last > self.window:
            return "outside_window", key_id, seq, b""
        counters[str(key_id)] = seq
        self.nv.commit()  # persisted before the command can act
        return None, key_id, seq, frame[HEADER.size : n - MAC_LEN]

    def last_seq(self, key_id: int) -> int:
        return self.nv.data["seq"].get(str(key_id), 0)
