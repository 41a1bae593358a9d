"""Telecommand security associations (CCSDS 355.0-B SDLS, 355.1-B extended procedures) and
the non-volatile TC state behind them.

Each TC Transfer Frame carries an SDLS security header and trailer (sdls.py): the SPI names
a security association, which names its key slot (and so its service: authentication or
authenticated encryption), its state and its anti-replay sequence number (ARSN).

Rules (355.0-B 3.3.3, see docs/tmtc.md): the MAC is verified before the anti-replay state
is even read; a frame is accepted only when its ARSN lies in (last, last + window] for its
association; the new ARSN is persisted through the injected store *before* the command
runs, so a replay after a reboot fails, the first frame after a cold start included (for a
sequence-controlled frame, only once FARM-1 has accepted it: a frame the FARM discards is
retransmitted by the ground's FOP-1 with the same ARSN and must still pass). Unknown,
stopped and wrong-purpose associations reject. Key material never leaves this module:
rejections report the SPI only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Protocol

from flight_sw.config.schema import TmtcConfig
from flight_sw.tmtc import sdls
from flight_sw.tmtc.nv_store import RecordState

#: Length of an upload manifest's signature (full HMAC-SHA-256).
MAC_LEN = 32
SEQ_MAX = (1 << 64) - 1
#: Highest ARSN a procedure may set (Set ARSN, recovery floor): a quarter of the 64-bit space,
#: so that no command can bring an association within reach of the end of its sequence numbers
#: (and every ARSN stays inside the ground archive's signed 64-bit columns).
ARSN_SET_MAX = (1 << 62) - 1
NV_MAGIC = b"TCNV2"
MIN_KEY_BYTES = 32


class TcStore(Protocol):
    """Non-volatile storage handed in at start-up (nv_store.RedundantStore): `save` is torn-safe."""

    def load(self) -> bytes: ...

    def save(self, blob: bytes) -> None: ...

    def format(self, blob: bytes) -> None: ...


#: Security association states (CCSDS 355.1-B SDLS extended procedures, 2.3.3): a KEYED
#: association has its key and is stopped; only an OPERATIONAL one authenticates frames.
SA_KEYED, SA_OPERATIONAL = "keyed", "operational"
SA_STATES = (SA_KEYED, SA_OPERATIONAL)


def empty_nv(cfg: TmtcConfig | None = None) -> dict:
    """A first boot's record: one security association per configured key slot (SPI = key id),
    operational when the config says the key is active, and nothing else."""
    sas = {}
    for k in cfg.keys if cfg is not None else ():
        sas[str(k.key_id)] = {"key": k.key_id, "state": SA_OPERATIONAL if k.active else SA_KEYED, "arsn": 0}
    return {"sa": sas, "sc": 0, "confirmed": None, "trial": None, "staging": None, "untrusted": [],
            "params": {"active": {}, "staged": None, "version": 0}, "upload_sessions": 0,
            "boot": {"count": 0, "unstable": 0, "safe_latch": False},
            "tables": {"schedule": [], "schedule_on": True, "monitors": {}, "monitoring_on": True,
                       "actions": {}, "actions_on": True}}


class NvState:
    """The TC state that must survive power cuts: one JSON record in the redundant A/B store.

    A torn write cannot lose it (nv_store.py). When both copies are damaged (`lost`), it is
    not silently reset, which would reopen every replay: the associations come up from the
    config with unknown anti-replay counters and the handler accepts nothing but the
    recovery command bound to this boot's nonce (commands.py, FN_TC_RECOVER).
    """

    def __init__(self, store: TcStore, cfg: TmtcConfig | None = None):
        self.store = store
        self.cfg = cfg
        self.lost = False
        self.data = empty_nv(cfg)
        self.reload()

    def reload(self) -> None:
        blob = self.store.load()
        self.lost = getattr(self.store, "state", None) is RecordState.LOST
        self.data = empty_nv(self.cfg)
        if not blob:
            if not self.lost:  # first boot: both copies written before anything is accepted
                self.store.format(self._blob())
            return
        try:
            record = json.loads(blob[len(NV_MAGIC):]) if blob.startswith(NV_MAGIC) else None
        except ValueError:
            record = None
        if not isinstance(record, dict):
            self.lost = True  # a valid CRC around a record this software cannot read
            return
        self.data |= record
        for spi, sa in empty_nv(self.cfg)["sa"].items():  # a key slot added to the config
            self.data["sa"].setdefault(spi, sa)

    def _blob(self) -> bytes:
        return NV_MAGIC + json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()

    def commit(self) -> None:
        self.store.save(self._blob())


class Key:
    __slots__ = ("key_id", "purpose", "material", "active", "service")

    def __init__(self, key_id: int, purpose: str, material: bytes, active: bool, service: str = sdls.AUTH):
        self.key_id, self.purpose, self.material, self.active = key_id, purpose, material, active
        self.service = service

    def __repr__(self) -> str:
        return (f"Key({self.key_id}, {self.purpose!r}, active={self.active}, service={self.service!r}, "
                "material=<redacted>)")


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
        if k.service == sdls.AUTH_ENC and len(material) != sdls.AES_KEY_BYTES:
            raise ValueError(f"{where}: authenticated encryption (AES-256-GCM) needs a key of exactly "
                             f"{sdls.AES_KEY_BYTES} bytes, got {len(material)}")
        out[k.key_id] = Key(k.key_id, k.purpose, material, k.active, k.service)
    return out


class SaError(Exception):
    """A refused security-association procedure: `code` is a name in dictionary.TC_FAILURES."""

    def __init__(self, code: str, text: str):
        super().__init__(f"{code}: {text}")
        self.code, self.text = code, text


class Authenticator:
    """Verifies frames against the security associations (in `nv`) and runs their procedures.

    The frame's key id field is the SPI (security parameter index) of an association; the
    association names the key slot it uses, its state and its anti-replay sequence number
    (ARSN). Procedures (355.1-B 3.4, the subset a small mission needs): start, stop, rekey,
    set ARSN, status. None of them may leave the satellite without an operational command
    association: the last one cannot be stopped, and an ARSN is never set above a quarter of its range
    (ARSN_SET_MAX), so an association cannot be brought near its last number.
    """

    def __init__(self, cfg: TmtcConfig, nv: NvState):
        self.keys = keys_from_config(cfg)
        self.window = cfg.anti_replay_window
        self.max_frame = cfg.max_frame_bytes
        self.nv = nv

    @property
    def sas(self) -> dict[str, dict]:
        return self.nv.data["sa"]

    def sa(self, spi: int) -> dict | None:
        return self.sas.get(str(spi))

    def key_usable(self, spi: int, purpose: str) -> str | None:
        """None when association `spi` exists, is operational and serves `purpose`; else the reason."""
        sa = self.sa(spi)
        if sa is None or sa["key"] not in self.keys:
            return "unknown_key"
        if sa["state"] != SA_OPERATIONAL:
            return "key_deactivated"
        if self.keys[sa["key"]].purpose != purpose:
            return "wrong_key_purpose"
        return None

    def verify_mac(self, spi: int, purpose: str, data: bytes, mac: bytes) -> str | None:
        """Check an HMAC with association `spi` of `purpose` (also used for upload manifests)."""
        reason = self.key_usable(spi, purpose)
        if reason:
            return reason
        good = hmac.new(self.keys[self.sa(spi)["key"]].material, data, hashlib.sha256).digest()
        return None if hmac.compare_digest(good, mac) else "bad_mac"

    def verify_frame(self, primary_header: bytes, field: bytes) -> tuple[str | None, int, int, bytes]:
        """Security processing of one TC frame's data field (355.0-B 3.3.3):
        (reject reason or None, SPI, ARSN, plain data). Nothing is committed: the caller calls
        `commit_arsn` once the frame is accepted (at once for expedited frames, after FARM-1
        for sequence-controlled ones).

        With the NV state lost, an authentic frame comes back with the reason "state_corrupt"
        and its data: its ARSN cannot be judged, so only the nonce-bound recovery command may
        act on it."""
        spi = sdls.peek_spi(field)
        if spi is None:
            return "too_short", 0, 0, b""
        reason = self.key_usable(spi, "command")
        if reason:
            return reason, spi, 0, b""
        key = self.keys[self.sa(spi)["key"]]
        reason, arsn, data = sdls.unprotect(key.service, key.material, primary_header, field)
        if reason:
            return reason, spi, arsn, b""
        if self.nv.lost:
            return "state_corrupt", spi, arsn, data
        # Only now, with the frame authenticated, is the anti-replay state consulted.
        last = self.sa(spi)["arsn"]
        if arsn <= last:
            return "replay", spi, arsn, b""
        if arsn - last > self.window:
            return "outside_window", spi, arsn, b""
        return None, spi, arsn, data

    def commit_arsn(self, spi: int, arsn: int) -> None:
        """Persist an accepted frame's ARSN before its command can act."""
        self.sa(spi)["arsn"] = arsn
        self.nv.commit()

    def last_seq(self, spi: int) -> int:
        sa = self.sa(spi)
        return 0 if sa is None else sa["arsn"]

    # -- procedures (355.1-B 3.4) -------------------------------------------------------------
    def _known(self, spi: int) -> dict:
        sa = self.sa(spi)
        if sa is None:
            raise SaError("unknown_key", f"no security association {spi}")
        return sa

    def operational_command_sas(self) -> list[int]:
        return sorted(int(s) for s, sa in self.sas.items() if sa["state"] == SA_OPERATIONAL
                      and sa["key"] in self.keys and self.keys[sa["key"]].purpose == "command")

    def start(self, spi: int) -> None:
        """Keyed -> operational (355.1-B 3.4.5 Start SA)."""
        sa = self._known(spi)
        if sa["key"] not in self.keys:
            raise SaError("unknown_key", f"association {spi} has no key (rekey it first)")
        sa["state"] = SA_OPERATIONAL
        self.nv.commit()

    def stop(self, spi: int) -> None:
        """Operational -> keyed (3.4.6 Stop SA); never the last operational command association."""
        sa = self._known(spi)
        if sa["state"] != SA_OPERATIONAL:
            return
        if self.operational_command_sas() == [spi]:
            raise SaError("last_command_sa", f"association {spi} is the last operational command "
                          "association: start another one first")
        sa["state"] = SA_KEYED
        self.nv.commit()

    def rekey(self, spi: int, key_id: int) -> None:
        """Give a stopped association another key slot of the same purpose (3.4.4 Rekey SA). Its
        ARSN is kept, not restarted: key slots are fixed, so a slot can come back to an
        association (or be given to it again), and a restarted count would let every frame ever
        recorded under that key through again."""
        sa = self._known(spi)
        if sa["state"] == SA_OPERATIONAL:
            raise SaError("sa_operational", f"association {spi} is operational: stop it before rekeying")
        new = self.keys.get(key_id)
        if new is None:
            raise SaError("unknown_key", f"no key slot {key_id}")
        old = self.keys.get(sa["key"])
        if old is not None and old.purpose != new.purpose:
            raise SaError("wrong_key_purpose", f"key {key_id} serves {new.purpose}, association "
                          f"{spi} serves {old.purpose}")
        sa["key"] = key_id
        self.nv.commit()

    def set_arsn(self, spi: int, arsn: int) -> None:
        """Raise the anti-replay sequence number (3.4.10 Set ARSN), leaving room for a full window.
        Never lowered: a lower number would let recorded frames through again."""
        sa = self._known(spi)
        if not 0 <= arsn <= ARSN_SET_MAX:
            raise SaError("bad_arguments", f"ARSN {arsn} outside 0..{ARSN_SET_MAX} (a quarter of the "
                          "space: an association must never come within reach of its last number)")
        if arsn < sa["arsn"]:
            raise SaError("bad_arguments", f"ARSN {arsn} is below association {spi}'s {sa['arsn']}: "
                          "lowering it would let recorded frames through again")
        sa["arsn"] = arsn
        self.nv.commit()

    def recover(self, arsn_floor: int) -> None:
        """Leave the lost state: every association's ARSN set to `arsn_floor` (above any the
        ground has used), states and keys from the config, and a fresh record written."""
        if not 0 <= arsn_floor <= ARSN_SET_MAX:
            raise SaError("bad_arguments", f"ARSN floor {arsn_floor} outside 0..{ARSN_SET_MAX}")
        for sa in self.sas.values():
            sa["arsn"] = arsn_floor
        self.nv.lost = False
        self.nv.commit()
