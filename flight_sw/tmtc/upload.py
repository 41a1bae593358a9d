"""Model upload: a signed package uplinked in parts (PUS service 13) or as a file (CFDP),
staging, trial activation, confirm/revert.

The uploadable unit is the trainable head (what also trains onboard) plus version
metadata; the frozen int8 feature extractor is fixed at launch. Both uplink paths carry the
same thing, a model package in the OLPK format (`pack_package`: signed manifest + payload),
and both end in `stage_package`, the signed-manifest checks. State machine::

    (none) --13,9 first part--> TRANSFER --13,10 next part--> TRANSFER
    TRANSFER --13,11 last part, package passes stage_package--> VERIFIED
    TRANSFER --13,11 package refused | size over max_upload_bytes | new 13,9--> (none), TM[13,16]
    (none) --CFDP file delivered, package passes stage_package--> VERIFIED
    VERIFIED --8/ACTIVATE--> TRIAL (head in the inactive slot, switched to; training paused)
    TRIAL --8/CONFIRM and validates--> CONFIRMED (security counter raised, head kept for cold starts)
    TRIAL --no confirm in trial_confirm_runs, failed validation, rollback command or any reboot--> reverted

Service 13 (ECSS-E-ST-70-41C 6.13 large packet uplink): parts carry a u16 transaction id and a
u16 part sequence number, the first part numbered 1, then consecutive. A part received again
(same transaction, number below the next expected, identical octets) is a no-op; a part
beyond the next expected fails its completion report naming the expected number and the
transaction is kept, so the ground resends from there (passes are hours apart: an abort
would throw away what a whole pass delivered). No transfer starts while a trial runs.

Power-cut safety: the transaction id and the staged session, trial and boot records live in
the NV record (A/B slots, nv_store.py); the parts are appended to the NV staging log, one
entry each, so a part costs its own bytes and a torn part is simply missing (the next
expected part number and the bytes so far are what the log scan finds). The last part is
never stored as a part: it completes the package in memory and goes straight to
`stage_package`, so a cut before staging leaves the transaction waiting for its last part
again. The trial record is saved *before* the slot switch, so a reboot at any point finds
either the old model or an unconfirmed trial it reverts. Activation re-checks the staged
bytes against the manifest's hash. The security counter and the confirmed record are
written only after every check passed (a TUF client once stored a timestamp before its
rollback check).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct

import numpy as np

from flight_sw.config.schema import MissionConfig
from flight_sw.tmtc.nv_store import StagingLog
from flight_sw.tmtc.security import MAC_LEN, Authenticator, NvState

#: Version of this flight software, compared with a manifest's min_fsw_version.
FSW_VERSION = (0, 1, 0)
MANIFEST_FORMAT = 1
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MAX_TRIAL_ACC_LOSS = 0.05  # a trial head may not score more than 5 points below the previous one
#: Longest manifest accepted: it is kept in the NV record (staged and confirmed), whose
#: capacity leaves 16 KiB beside the payload (nv_store.record_capacity).
MAX_MANIFEST_BYTES = 4096
#: Service 13 part kinds (TC[13,9], TC[13,10], TC[13,11]).
PART_FIRST, PART_INTERMEDIATE, PART_LAST = "first", "intermediate", "last"


class UploadError(Exception):
    """A refused upload step: `code` is a name in dictionary.TC_FAILURES, `text` the detail."""

    def __init__(self, code: str, text: str = ""):
        super().__init__(f"{code}: {text}")
        self.code, self.text = code, text


def input_schema_hash(cfg: MissionConfig) -> str:
    """What a head must fit: band count, feature dimension and class list (ground computes the same)."""
    schema = {"bands": cfg.payload.bands, "feature_dim": cfg.model.feature_dim,
              "classes": list(cfg.payload.classes)}
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()


def safe_name(name: object) -> bool:
    """A staging file name: no path separators, no '..', not absolute, bounded length."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None and ".." not in name


def parse_version(v: object) -> tuple[int, ...]:
    if not isinstance(v, str) or not re.fullmatch(r"\d{1,4}(\.\d{1,4}){0,3}", v):
        raise UploadError("upload_incompatible", f"min_fsw_version {v!r} is not dotted integers")
    return tuple(int(x) for x in v.split("."))


#: A model package, the large message of service 13 and the file of CFDP: magic, u16 upload
#: key id, 32-byte manifest HMAC, u32 manifest length, manifest JSON, payload. Either transfer
#: only moves bytes: the manifest signature is what is trusted (`stage_package`).
PACKAGE_MAGIC = b"OLPK"
PACKAGE_HEAD = struct.Struct(">4sH32sI")


def pack_package(key_id: int, signature: bytes, manifest: bytes, payload: bytes) -> bytes:
    return PACKAGE_HEAD.pack(PACKAGE_MAGIC, key_id, signature, len(manifest)) + manifest + payload


def dequantise_head(payload: bytes, shape: tuple[int, int], scales: list[float]) -> np.ndarray:
    q = np.frombuffer(payload, dtype=np.int8).reshape(shape).astype(np.float64)
    return q * np.asarray(scales, dtype=np.float64)[None, :]


class ModelUploader:
    """Upload sessions and the boot record, for one FlightSoftware's learner."""

    def __init__(self, cfg: MissionConfig, nv: NvState, auth: Authenticator, learner, staging: StagingLog,
                 adaptation=None, layer=None):
        """`adaptation`, `layer`: the input adaptation and the last-layer update
        (flight_sw.ml.commit_watch.VersionedSlots), when there are: an uploaded head was built by
        the ground for the boot image's normalisation and last layer, so its trial runs with them
        and an unconfirmed trial gives the onboard versions back."""
        self.cfg = cfg
        self.nv = nv
        self.staging = staging
        self.auth = auth
        self.learner = learner
        self.adaptation = adaptation
        self.layer = layer
        self.features = tuple(f for f in (adaptation, layer) if f is not None)
        self.head_shape = tuple(learner.slots[0].shape)
        self.schema_hash = input_schema_hash(cfg)
        self.trial_runs_left = 0
        self.launch_version = learner.version
        self.launch_head = np.array(learner.slots[learner.active], copy=True)  # the golden image
        self.aborts: list[tuple[int, str]] = []  # service 13 transactions aborted, for TM[13,16]

    # -- session -------------------------------------------------------------------------
    def open_session(self, key_id: int, signature: bytes, manifest_bytes: bytes) -> dict:
        """Check the signed manifest completely; only then replace the staging area."""
        if self.trial is not None:
            raise UploadError("upload_trial_running", "a trial is running: confirm or roll it back first")
        if len(manifest_bytes) > MAX_MANIFEST_BYTES:
            raise UploadError("upload_incompatible", f"manifest of {len(manifest_bytes)} bytes > {MAX_MANIFEST_BYTES}")
        if len(signature) != MAC_LEN:
            raise UploadError("upload_bad_signature", "signature must be 32 bytes")
        reason = self.auth.verify_mac(key_id, "upload", manifest_bytes, signature)
        if reason:
            raise UploadError("upload_bad_signature", f"manifest signature refused ({reason}, key {key_id})")
        try:
            m = json.loads(manifest_bytes)
        except (ValueError, UnicodeDecodeError):
            raise UploadError("upload_incompatible", "manifest is not JSON") from None
        if not isinstance(m, dict):
            raise UploadError("upload_incompatible", "manifest is not an object")
        self._check_manifest(m)
        if (open_tid := self.transaction()) is not None:  # a CFDP package replaces a transfer
            self.aborts.append((open_tid, "lpt_superseded"))
        session = self.nv.data["upload_sessions"] = self.nv.data["upload_sessions"] + 1
        self.nv.data["staging"] = {"manifest": manifest_bytes.decode(), "session": session, "verified": False}
        self.nv.commit()  # first the record: a cut before the erase leaves parts of another session
        self.staging.begin(session)
        return m

    def _check_manifest(self, m: dict) -> None:
        def need(key, types):
            v = m.get(key)
            if not isinstance(v, types) or isinstance(v, bool):
                raise UploadError("upload_incompatible", f"manifest.{key} missing or of the wrong type")
            return v

        if need("format", int) != MANIFEST_FORMAT:
            raise UploadError("upload_incompatible", f"manifest.format must be {MANIFEST_FORMAT}")
        if not safe_name(m.get("name")):
            raise UploadError("upload_bad_name", "manifest.name must be a plain file name (no '/', '..', absolute)")
        if need("kind", str) != "head":
            raise UploadError("upload_incompatible", "manifest.kind: only 'head' is uploadable")
        if need("dtype", str) != "int8":
            raise UploadError("upload_incompatible", "manifest.dtype must be int8")
        shape = need("shape", list)
        if [*shape] != [*self.head_shape]:
            raise UploadError("upload_incompatible", f"manifest.shape {shape} != onboard head {list(self.head_shape)}")
        scales = need("scales", list)
        if len(scales) != self.head_shape[1] or not all(
            isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s) and 0 < s < 1e6
            for s in scales
        ):
            raise UploadError("upload_incompatible", "manifest.scales: one finite positive scale per class")
        if need("input_schema_hash", str) != self.schema_hash:
            raise UploadError("upload_incompatible", "manifest.input_schema_hash differs from the onboard schema")
        if parse_version(m.get("min_fsw_version")) > FSW_VERSION:
            raise UploadError("upload_incompatible", f"needs flight software >= {m['min_fsw_version']}")
        size, chunk, n = need("size", int), need("chunk_size", int), need("n_chunks", int)
        if size != self.head_shape[0] * self.head_shape[1]:
            raise UploadError("upload_incompatible", "manifest.size does not match the shape")
        if size > self.cfg.tmtc.max_upload_bytes:
            raise UploadError("upload_too_large", f"size {size} > max_upload_bytes {self.cfg.tmtc.max_upload_bytes}")
        if not 1 <= chunk <= 4096 or n != -(-size // chunk):
            raise UploadError("upload_incompatible", "manifest.chunk_size / n_chunks inconsistent")
        sha = need("sha256", str)
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise UploadError("upload_incompatible", "manifest.sha256 must be 64 lowercase hex digits")
        version, sc = need("version", int), need("security_counter", int)
        need("parent_version", int)
        if not 0 < version < 1 << 32 or not 0 <= sc < 1 << 32:
            raise UploadError("upload_incompatible", "manifest.version / security_counter out of range")
        if sc < self.nv.data["sc"]:
            raise UploadError("upload_downgrade", f"security_counter {sc} < onboard {self.nv.data['sc']}")

    def manifest(self) -> dict:
        st = self.nv.data["staging"]
        if st is None or st.get("manifest") is None:
            raise UploadError("upload_no_session", "no staged model package")
        return json.loads(st["manifest"])

    def _put_chunk(self, index: int, data: bytes) -> None:
        m = self.manifest()
        if not 0 <= index < m["n_chunks"]:
            raise UploadError("bad_arguments", f"part {index} outside 0..{m['n_chunks'] - 1}")
        want = min(m["chunk_size"], m["size"] - index * m["chunk_size"])
        if len(data) != want:
            raise UploadError("bad_arguments", f"part {index} has {len(data)} bytes, expected {want}")
        try:
            self.staging.append(index, data)  # a retransmitted part supersedes its earlier copy
        except OverflowError as e:
            raise UploadError("upload_too_large", str(e)) from None

    def missing(self) -> list[int]:
        m = self.manifest()
        return [i for i in range(m["n_chunks"]) if i not in self.staging.parts]

    def _payload(self) -> bytes:
        return b"".join(self.staging.read(i) for i in range(self.manifest()["n_chunks"]))

    def _verify(self) -> dict:
        m = self.manifest()
        missing = self.missing()
        if missing:
            shown = ",".join(str(i) for i in missing[:16])
            raise UploadError("upload_missing_chunks", f"missing {len(missing)} of {m['n_chunks']}: {shown}")
        if hashlib.sha256(self._payload()).hexdigest() != m["sha256"]:
            self.staging.begin(self.nv.data["staging"]["session"])  # discard the parts, keep the session
            raise UploadError("upload_hash_mismatch", "sha256 of the parts differs from the manifest; resend")
        self.nv.data["staging"]["verified"] = True
        self.nv.commit()
        return m

    def stage_package(self, blob: bytes) -> dict:
        """A whole package (a CFDP file, or the large message of a service 13 transaction):
        check its signed manifest, stage the payload in the staging log in the manifest's
        chunks, verify the hash. Ends VERIFIED (activation stays a command)."""
        if len(blob) < PACKAGE_HEAD.size or not blob.startswith(PACKAGE_MAGIC):
            raise UploadError("upload_incompatible", "file is not a model package (magic OLPK)")
        _, key_id, signature, n = PACKAGE_HEAD.unpack_from(blob)
        manifest = blob[PACKAGE_HEAD.size : PACKAGE_HEAD.size + n]
        payload = blob[PACKAGE_HEAD.size + n :]
        m = self.open_session(key_id, signature, manifest)
        chunk = m["chunk_size"]
        for i in range(m["n_chunks"]):
            self._put_chunk(i, payload[i * chunk : (i + 1) * chunk])
        return self._verify()

    # -- service 13: large packet uplink (ECSS-E-ST-70-41C 6.13) ---------------------------
    def transaction(self) -> int | None:
        """The open service 13 transaction's id (None: no transfer in progress)."""
        st = self.nv.data["staging"]
        return st.get("transaction") if st is not None else None

    def next_part(self) -> int:
        """The part sequence number the open transaction expects next (parts 1..n-1 are in the
        staging log, appended in order, so after a reboot the log scan gives it)."""
        return max(self.staging.parts, default=0) + 1

    def received_bytes(self) -> int:
        return sum(length for _, length in self.staging.parts.values())

    def take_aborts(self) -> list[tuple[int, str]]:
        """(transaction id, failure code) of the transactions aborted since the last call:
        each becomes a TM[13,16] large packet uplink abortion report."""
        out, self.aborts = self.aborts, []
        return out

    def _abort(self, tid: int, code: str) -> None:
        self.aborts.append((tid, code))
        self.nv.data["staging"] = None
        self.nv.commit()

    def receive_part(self, kind: str, tid: int, seq: int, data: bytes) -> dict | None:
        """One TC[13,9] / [13,10] / [13,11] part. Returns the manifest when the last part
        completed a package that `stage_package` accepted (VERIFIED), else None."""
        if not data:
            raise UploadError("bad_arguments", "empty part")
        open_tid = self.transaction()
        if kind == PART_FIRST:
            if seq != 1:
                raise UploadError("bad_arguments", f"a first part has sequence number 1, not {seq}")
            if open_tid == tid:
                if 1 not in self.staging.parts:  # its first part was torn by a power cut: continue
                    self._append(tid, 1, data)
                    return None
                if self.staging.read(1) == data:
                    return None  # received again: a no-op
            if self.trial is not None:
                raise UploadError("upload_trial_running", "a trial is running: confirm or roll it back first")
            if open_tid is not None:
                self.aborts.append((open_tid, "lpt_superseded"))  # the new record below replaces it
            session = self.nv.data["upload_sessions"] = self.nv.data["upload_sessions"] + 1
            self.nv.data["staging"] = {"transaction": tid, "session": session, "manifest": None, "verified": False}
            self.nv.commit()  # first the record: a cut before the erase leaves parts of another session
            self.staging.begin(session)
            self._append(tid, 1, data)
            return None
        if open_tid is None or open_tid != tid:
            raise UploadError("lpt_no_transaction", f"no open transaction {tid}"
                              + (f" (open: {open_tid}, expected part {self.next_part()})" if open_tid is not None else ""))
        if seq < 2:
            raise UploadError("bad_arguments", f"intermediate and last parts are numbered from 2, not {seq}")
        expected = self.next_part()
        if kind == PART_INTERMEDIATE and seq < expected:
            if self.staging.read(seq) == data:
                return None  # received again (an expedited frame resent): a no-op
            raise UploadError("lpt_part_differs", f"part {seq} differs from the one received; expected part {expected}")
        if seq != expected:
            raise UploadError("lpt_unexpected_part", f"part {seq}: expected part {expected}")
        if kind == PART_INTERMEDIATE:
            self._append(tid, seq, data)
            return None
        self._check_size(tid, len(data))
        blob = b"".join(self.staging.read(i) for i in range(1, seq)) + data
        self.nv.data["staging"] = None  # the transaction ends here (committed with what follows)
        try:
            return self.stage_package(blob)
        except Exception as e:
            if self.nv.data["staging"] is None:  # refused before staging replaced the record
                self.nv.commit()
            if isinstance(e, UploadError):
                e.package_refused = True
            self.aborts.append((tid, getattr(e, "code", "bad_arguments")))
            raise

    def _check_size(self, tid: int, more: int) -> None:
        have = self.received_bytes()
        if have + more > self.cfg.tmtc.max_upload_bytes:
            self._abort(tid, "upload_too_large")
            raise UploadError("upload_too_large", f"{have + more} bytes > max_upload_bytes "
                              f"{self.cfg.tmtc.max_upload_bytes}")

    def _append(self, tid: int, seq: int, data: bytes) -> None:
        self._check_size(tid, len(data))
        try:
            self.staging.append(seq, data)
        except OverflowError as e:
            self._abort(tid, "upload_too_large")
            raise UploadError("upload_too_large", str(e)) from None

    # -- activation ------------------------------------------------------------------------
    @property
    def trial(self) -> dict | None:
        return self.nv.data["trial"]

    def activate(self) -> dict:
        st = self.nv.data["staging"]
        if st is None or not st["verified"] or st.get("manifest") is None:
            raise UploadError("upload_not_verified", "no verified staged model")
        if self.trial is not None:
            raise UploadError("upload_not_verified", "a trial is already running")
        m = json.loads(st["manifest"])
        payload = self._payload()  # a part resent after verification must not slip in unchecked
        if self.missing() or hashlib.sha256(payload).hexdigest() != m["sha256"]:
            raise UploadError("upload_not_verified", "staged parts changed since verification: verify again")
        head = dequantise_head(payload, self.head_shape, m["scales"])
        if not np.all(np.isfinite(head)):
            raise UploadError("trial_validation_failed", "head not finite")
        lrn = self.learner
        slot = 1 - lrn.active
        # The trial record goes to NV before the switch: a reboot after it always reverts. The onboard
        # normalisation's and layer's versions are there for the record; each keeps what it set aside.
        self.nv.data["trial"] = {"version": m["version"], "sc": m["security_counter"], "slot": slot,
                                 "prev_slot": lrn.active, "prev_version": lrn.version,
                                 "prev_input_version": 0 if self.adaptation is None else self.adaptation.version,
                                 "prev_layer_version": 0 if self.layer is None else self.layer.version}
        # Untrusted until confirmed: a restored snapshot that still runs it is sanitised at boot.
        self.nv.data["untrusted"] = ([v for v in self.nv.data.get("untrusted", []) if v != m["version"]]
                                     + [m["version"]])[-16:]
        self.nv.commit()
        np.copyto(lrn.slots[slot], head)
        lrn.slot_versions[slot] = m["version"]
        lrn.active = slot
        lrn.version = m["version"]
        lrn.next_version = max(lrn.next_version, m["version"] + 1)
        lrn.watch_remaining = 0  # the learner's own post-commit watch does not judge uploads
        if sum(bool(f.install_ground()) for f in self.features):
            lrn.features_changed()  # the statistics describe the onboard features
        self.trial_runs_left = self.cfg.tmtc.trial_confirm_runs
        return m

    def confirm(self) -> dict:
        tr = self.trial
        if tr is None:
            raise UploadError("trial_none", "no trial to confirm")
        lrn = self.learner
        if lrn.active != tr["slot"] or lrn.version != tr["version"]:
            self.revert()
            raise UploadError("trial_validation_failed", "trial model is no longer active (reverted)")
        ok = lrn.head_is_valid()
        if ok and lrn.replay_count:
            new = lrn.replay_accuracy(lrn.slots[tr["slot"]])
            # the previous head with the features it ran with (the onboard ones, set aside for the trial)
            old = lrn.replay_accuracy(lrn.slots[tr["prev_slot"]], self._previous_features())
            ok = new >= old - MAX_TRIAL_ACC_LOSS
        if not ok:
            self.revert()
            raise UploadError("trial_validation_failed", "trial head invalid or worse than the previous one")
        st = self.nv.data["staging"]
        m = json.loads(st["manifest"])
        # Every check passed: only now is trusted state (security counter, boot image) written.
        self.nv.data["sc"] = max(self.nv.data["sc"], m["security_counter"])
        self.nv.data["untrusted"] = [v for v in self.nv.data.get("untrusted", []) if v != m["version"]]
        self.nv.data["confirmed"] = {"manifest": st["manifest"], "payload": self._payload().hex()}
        self.nv.data["trial"] = None
        self.nv.data["staging"] = None
        self.nv.commit()
        self._end_feature_trial(confirmed=True)
        self.trial_runs_left = 0
        return m

    def revert(self) -> bool:
        """Leave a trial: back to the previous slot if the trial is active. True if a trial existed."""
        tr = self.trial
        if tr is None:
            return False
        lrn = self.learner
        if lrn.active == tr["slot"] and lrn.slot_versions[tr["slot"]] == tr["version"]:
            lrn.active = tr["prev_slot"]
            lrn.version = lrn.slot_versions[lrn.active]
            lrn.rollbacks += 1
        self._end_feature_trial(confirmed=False)
        self.nv.data["trial"] = None
        self.nv.commit()
        self.trial_runs_left = 0
        self._sanitise()
        return True

    def _previous_features(self) -> tuple | None:
        """The extractor's kernel arguments with the onboard normalisation and last layer the trial
        set aside (None: it set nothing aside)."""
        e = list(self.learner._ext_args)
        if self.adaptation is not None and self.adaptation.trial_replaced:
            e[0], e[1] = self.adaptation.previous()
        if self.layer is not None and self.layer.trial_replaced:
            e[6], e[7], e[8] = self.layer.previous()
        return tuple(e) if any(f.trial_replaced for f in self.features) else None

    def _end_feature_trial(self, confirmed: bool) -> None:
        """After a trial (or at boot, when a restored snapshot was taken in one): the onboard
        normalisation and layer come back unless the upload was confirmed; the head's statistics
        follow the features."""
        if sum(bool(f.end_trial(confirmed)) for f in self.features):
            self.learner.features_changed()

    def _sanitise(self) -> bool:
        """No slot may hold an unconfirmed upload outside a trial (e.g. after restoring a snapshot
        taken during one): the active slot falls back to the other slot or the launch head, and an
        untrusted fallback slot is overwritten by the active head. True when anything changed."""
        bad = set(self.nv.data.get("untrusted", []))
        if self.trial is not None or not bad:
            return False
        lrn = self.learner
        changed = False
        if lrn.slot_versions[lrn.active] in bad:
            other = 1 - lrn.active
            if lrn.slot_versions[other] not in bad and bool(np.all(np.isfinite(lrn.slots[other]))):
                lrn.active = other
            else:
                np.copyto(lrn.slots[lrn.active], self.launch_head)
                lrn.slot_versions[lrn.active] = self.launch_version
            lrn.version = lrn.slot_versions[lrn.active]
            changed = True
        other = 1 - lrn.active
        if lrn.slot_versions[other] in bad:
            np.copyto(lrn.slots[other], lrn.slots[lrn.active])
            lrn.slot_versions[other] = lrn.slot_versions[lrn.active]
            changed = True
        return changed

    def boot(self, cold: bool) -> list[str]:
        """After a cold start or a restore: revert any unconfirmed trial; on a cold start
        install the last confirmed upload (the launch head stays in the other slot). The staged
        parts of an open session or transaction are found again in the staging log."""
        st = self.nv.data["staging"]
        self.staging.scan(st["session"] if st is not None else -1)
        out = []
        if self.revert() or self._sanitise():
            out.append("reverted_at_boot")
        self._end_feature_trial(confirmed=False)  # a snapshot taken in a trial holds the image's versions
        conf = self.nv.data["confirmed"]
        if cold and conf is not None:
            m = json.loads(conf["manifest"])
            head = dequantise_head(bytes.fromhex(conf["payload"]), self.head_shape, m["scales"])
            if np.all(np.isfinite(head)):
                lrn = self.learner
                np.copyto(lrn.slots[0], head)
                lrn.slot_versions[0] = m["version"]
                lrn.active = 0
                lrn.version = m["version"]
                lrn.next_version = max(lrn.next_version, m["version"] + 1)
                out.append("installed_at_boot")
        return out
