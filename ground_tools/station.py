"""The live ground station (`groundtools station`): on the radio port of a running world, it
archives telemetry as it arrives, raises limit alarms as they happen and sends commands with
verification tracking. The web page (`station_web.py`) shows what this object publishes.

Everything it knows comes through the radio port (`radio_client.py`): CADUs with the mission
time they were received, AOS / LOS, the mission time between passes. Nothing of the
simulator's truth is read. One thread (`run`) owns the connection and everything that the
radio changes; the web side reads `snapshot()` and posts commands with `submit`, both under
one lock. Each change is also published on an `EventHub` for the page's event stream.

Per batch of messages (what one read of the socket completed):

1. CADUs go through the frame decoder (`tm_frames.TmFrameDecoder`, one per connection: a
   reconnect is a new stream); the CLCW of each frame's OCF goes to FOP-1.
2. The packets are committed to the archive in one transaction (`archive.LiveArchive`: the
   ingest's decoder, schema and content keys, so a frame replayed after a reconnect is stored
   once). Only then are they acted on: what the page shows is archived.
3. New core and device housekeeping go through the limits (`live_limits.LiveLimits`); new
   PUS service 1 reports update the command they verify (`verification.py`, as in the
   simulated pass terminal); model and training events join the model list.
4. In contact, and once this pass's first CLCW has come, the command link (FOP-1,
   `command_link.CommandLink`) is initiated from it and takes the waiting commands; its
   CLTUs go out as RADIO_CLTU messages. Out of contact nothing is radiated.
"""

from __future__ import annotations

import asyncio
import math
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from flight_sw.config.schema import MODES
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc import link_messages as lm
from ground_tools.archive import DecodeError, LiveArchive, LiveBatch
from ground_tools.command_link import CommandLink
from ground_tools.fop1 import FopState
from ground_tools.limits import LimitSet
from ground_tools.live_limits import LiveLimits
from ground_tools.radio_client import RadioConnection, parse_radio_url
from ground_tools.runfolder import RunFolder
from ground_tools.tm_frames import TmFrameDecoder
from ground_tools.uplink import Uplinker
from ground_tools.verification import (
    STAGES,
    initiate_ad,
    record_stage,
    request_id,
    verification_report,
)

#: Initiations of the AD service tried in one pass before the station waits for the next.
MAX_INITIATIONS_PER_PASS = 3
#: How long one socket read waits: the FOP-1 timer and the command queue are served this often.
POLL_S = 0.05
#: Reconnect back-off (seconds): doubles from the first to the last value.
RECONNECT_S = (0.1, 2.0)
#: Housekeeping parameters on the page (the whole record is in the archive).
HK_SHOWN = ("mode", "soc", "solar_power_w", "load_power_w", "model_version", "label_accuracy", "in_contact",
            "downlink_backlog", "tc_accepted", "tc_rejected", "tle_age_days", "store_fill", "boot_count",
            "overruns_total")
#: What the page keeps of the history.
KEEP_ALARMS, KEEP_MODELS, KEEP_PASSES = 200, 100, 50
MODEL_EVENTS = {d.EVENT_TRAINING_UPDATE: "training update", d.EVENT_MODEL_UPLOAD: "model upload"}
_SA_COLUMNS = [p.name for p in d.HK_SA_RECORD]


class EventHub:
    """Fans station events out to the page's event streams, across threads: the radio thread
    publishes, each subscriber is an asyncio queue in the web server's loop."""

    def __init__(self, max_queued: int = 10_000):
        self.max_queued = max_queued
        self._subs: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()
        #: Called in the publishing thread with every event (tests and the bench listen here).
        self.taps: list[Callable[[str, dict], None]] = []

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(self.max_queued)
        with self._lock:
            self._subs[q] = asyncio.get_running_loop()
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        with self._lock:
            self._subs.pop(q, None)

    def publish(self, kind: str, data: dict) -> None:
        for tap in self.taps:
            tap(kind, data)
        with self._lock:
            subs = list(self._subs.items())
        for q, loop in subs:
            try:
                loop.call_soon_threadsafe(_offer, q, (kind, data))
            except RuntimeError:  # that loop has closed: its client is gone
                self.unsubscribe(q)


def _offer(q: asyncio.Queue, item) -> None:
    """A client that stopped reading loses events rather than the station's memory."""
    if not q.full():
        q.put_nowait(item)


class Station:
    """See the module text. `run(stop)` is the radio thread; the rest is thread-safe."""

    def __init__(self, run: RunFolder, db: Path | str, limits: LimitSet, radio_url: str, *,
                 key_id: int | None = None, hub: EventHub | None = None):
        parse_radio_url(radio_url)  # refuse a bad address before anything starts
        self.cfg = run.cfg
        self.radio_url = radio_url
        self.hub = hub or EventHub()
        #: Called in the radio thread after each commit with (batch, monotonic time of the commit).
        self.commit_hooks: list[Callable[[LiveBatch, float], None]] = []
        self.archive = LiveArchive(db, run)
        self.limits = LiveLimits(limits)
        self.up = Uplinker(self.cfg, key_id=key_id, packets_only=True)
        self.up.seq = self._first_arsn()
        self.link = CommandLink(self.up)
        self._lock = threading.RLock()
        self._requests: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.commands: list[dict] = []
        self._waiting: deque[int] = deque()  # command ids not yet taken by FOP-1, in order
        self._by_fdu: dict[bytes, int] = {}
        self._by_request: dict[bytes, int] = {}
        self._notice_pos = 0
        self.hk: dict = {}
        self.alarms: deque[dict] = deque(maxlen=KEEP_ALARMS)
        self.models: deque[dict] = deque(maxlen=KEEP_MODELS)
        self.passes: deque[dict] = deque(maxlen=KEEP_PASSES)
        self.link_state = {"radio": radio_url, "connected": False, "connections": 0, "error": None,
                           "frames": 0, "packets_new": 0, "packets_duplicate": 0, "packets_bad": 0,
                           "t_s": None, "utc": None, "in_contact": False, "fop_state": self.link.fop.state.name,
                           "clcw": None, "next_arsn": self.up.seq, "log": []}
        self.in_contact = False
        self.aos_t = -math.inf
        self.clcw: bytes | None = None
        self.clcw_t = -math.inf
        self.initiations = 0
        self.now_s = 0.0
        self._alarm_seq = 0
        self._load_history()

    # -- the web side ----------------------------------------------------------------------
    def submit(self, kind: str, mode: str | None = None) -> dict:
        """Queue a command: `ping` (PUS 17,1) or `mode` (PUS 8,1 function 1 with `mode`).
        Returns its record; it goes up at the next contact, after the pass's first CLCW."""
        if kind == "ping":
            label, make = "ping (17,1)", self.up.ping
        elif kind == "mode":
            if mode not in MODES:
                raise ValueError(f"mode command: got mode {mode!r}, expected one of {', '.join(MODES)}")
            label, make = f"mode {mode} (8,1 fn 1)", lambda: self.up.mode(mode)
        else:
            raise ValueError(f"command kind {kind!r}: expected 'ping' or 'mode'")
        with self._lock:
            packet = bytes(make())
            rec = {"id": len(self.commands) + 1, "kind": kind, "label": label, "request_id": request_id(packet).hex(),
                   "status": "queued", "link": "queued", "queued_wall": time.time(), "sent_t_s": None,
                   "confirmed_t_s": None, "reports": dict.fromkeys(STAGES, 0),
                   **{s: None for s in STAGES}, **{f"{s}_t_s": None for s in STAGES}}
            self.commands.append(rec)
            self._by_fdu[packet] = rec["id"]
            self._by_request[request_id(packet)] = rec["id"]
            rec["_packet"] = packet
            self._requests.put(rec["id"])
            out = _public(rec)
        self.hub.publish("command", out)
        return out

    def snapshot(self) -> dict:
        """Everything the page shows (JSON values)."""
        with self._lock:
            return {"hk": dict(self.hk), "alarms": list(self.alarms), "commands": [_public(c) for c in self.commands],
                    "models": list(self.models), "passes": list(self.passes), "link": dict(self.link_state),
                    "active_alarms": [a for a in self.alarms if a.get("active")], "modes": list(MODES)}

    # -- the radio thread --------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Connect, serve the link until `stop`, reconnect with back-off whenever it drops."""
        delay = RECONNECT_S[0]
        while not stop.is_set():
            try:
                conn = RadioConnection(self.radio_url)
            except OSError as exc:
                self._set_link(connected=False, error=f"cannot connect to {self.radio_url}: {exc}")
                stop.wait(delay)
                delay = min(delay * 2, RECONNECT_S[1])
                continue
            delay = RECONNECT_S[0]
            self._log(f"connected to {self.radio_url}")
            with self._lock:
                self.link_state["connections"] += 1
            self._set_link(connected=True, error=None)
            decoder = TmFrameDecoder(self.cfg.downlink.tm_frame_bytes, self.cfg.telemetry.spacecraft_id)
            try:
                while not stop.is_set():
                    self.handle(conn.receive(POLL_S), decoder)
                    self._serve_commands(conn)
            except (OSError, lm.LinkMessageError) as exc:
                self._log(f"radio link lost: {exc}")
                self._set_link(connected=False, error=str(exc))
            finally:
                conn.close()
        self.archive.close()

    def handle(self, messages: list[tuple[int, bytes]], decoder: TmFrameDecoder) -> LiveBatch | None:
        """One batch of radio messages: decode, archive, then act on what was archived."""
        packets: list[bytes] = []
        clcws: list[tuple[bytes, float]] = []
        frames = 0
        for kind, body in messages:
            if kind == lm.RADIO_CADU:
                t, cadu = lm.split_timed(body)
                self.now_s = t
                decoder.last_clcw = None
                packets.extend(p for _, p in decoder.feed_in_order(cadu))
                frames += 1
                if decoder.last_clcw is not None:
                    clcws.append((bytes(decoder.last_clcw), t))
            elif kind == lm.RADIO_CONTACT:
                t, flag = lm.split_timed(body)
                self.now_s = t
                self._contact(t, bool(flag[:1] == b"\x01"))
            elif kind == lm.RADIO_TIME:
                self.now_s = lm.split_timed(body)[0]
            else:
                self._log(f"ignored a message of unknown kind {kind} from the radio port")
        batch = None
        if packets:
            try:
                batch = self.archive.add(packets, where=self.radio_url)
            except DecodeError as exc:  # another dictionary version: nothing of it can be trusted
                self._log(f"telemetry refused: {exc}")
            else:
                committed = time.monotonic()
                for hook in self.commit_hooks:
                    hook(batch, committed)
        with self._lock:
            if frames:
                self._count_frames(frames, batch)
            for clcw, t in clcws:
                self.clcw, self.clcw_t = clcw, t
                self.link.on_clcw(clcw, t)
            if batch is not None:
                self._act_on(batch)
            self.link_state.update(t_s=self.now_s, utc=self._utc(self.now_s),
                                   clcw=self.clcw.hex() if self.clcw else None)
        return batch

    # -- inside: telemetry ---------------------------------------------------------------------
    def _act_on(self, batch: LiveBatch) -> None:
        rows = batch.rows
        core_names = ["packet_id", "t_s", *(p.name for p in d.HK_CORE)]
        for row in rows["hk_core"]:
            sample = dict(zip(core_names, row, strict=True))
            del sample["packet_id"]
            self._hk(sample)
            for ev in self.limits.on_core(sample):
                self._alarm(ev.as_dict())
        if rows.get("hk_device"):
            dev_names = ["packet_id", "t_s", *self._device_names()]
            for row in rows["hk_device"]:
                sample = dict(zip(dev_names, row, strict=True))
                del sample["packet_id"]
                for ev in self.limits.on_device(sample):
                    self._alarm(ev.as_dict())
        for pid, t, eid, _name, _severity, detail, _params in rows["events"]:
            if eid in MODEL_EVENTS:
                self._model({"packet_id": pid, "t_s": t, "utc": self._utc(t), "kind": MODEL_EVENTS[eid],
                             "text": detail})
        for row in rows["hk_sa"]:
            sa = dict(zip(_SA_COLUMNS, (row[1], *row[3:]), strict=True))
            if sa["spi"] == self.up.key_id and sa["arsn"] >= self.up.seq and not self.link.fop.sent_queue:
                self.up.seq = sa["arsn"] + 1  # the satellite is ahead of us (another ground, a restart)
        for row in rows["packets"]:
            report = verification_report(row[11])
            i = self._by_request.get(report[0]) if report is not None else None
            if i is not None:
                rec = self.commands[i - 1]
                record_stage(rec, report[1], report[2], row[6])
                self._command_changed(rec)

    @staticmethod
    def _device_names() -> list[str]:
        return [p.name for p in getattr(d, "HK_DEVICE", ())]

    def _hk(self, sample: dict) -> None:
        shown = {k: _json_number(sample.get(k)) for k in HK_SHOWN}
        m = sample.get("mode")
        shown["mode"] = MODES[int(m)] if m is not None and 0 <= int(m) < len(MODES) else m
        self.hk = {"t_s": sample["t_s"], "utc": self._utc(sample["t_s"]), **shown}
        self.hub.publish("hk", dict(self.hk))

    def _alarm(self, ev: dict) -> None:
        self._alarm_seq += 1
        ev = {**ev, "id": self._alarm_seq, "utc": self._utc(ev["t_s"]), "active": ev["kind"] != "cleared",
              "value": _json_number(ev["value"])}
        for old in self.alarms:
            if old["parameter"] == ev["parameter"]:
                old["active"] = False  # superseded: only the latest event of a parameter is live
        self.alarms.appendleft(ev)
        self.hub.publish("alarm", ev)

    def _model(self, row: dict) -> None:
        self.models.appendleft(row)
        self.hub.publish("model", row)

    def _contact(self, t: float, aos: bool) -> None:
        with self._lock:
            if aos and not self.in_contact:
                self.in_contact, self.aos_t, self.initiations = True, t, 0
                self.passes.appendleft({"aos_t_s": t, "aos_utc": self._utc(t), "los_t_s": None, "los_utc": None,
                                        "frames": 0, "packets": 0, "cltus": 0})
                self._log(f"AOS at t = {t:.1f} s")
            elif not aos and self.in_contact:
                self.in_contact = False
                if self.passes:
                    self.passes[0].update(los_t_s=t, los_utc=self._utc(t))
                self._log(f"LOS at t = {t:.1f} s")
            self.link_state["in_contact"] = self.in_contact
            self.hub.publish("pass", {"passes": list(self.passes)})
            self.hub.publish("link", dict(self.link_state))

    def _count_frames(self, frames: int, batch: LiveBatch | None) -> None:
        st = self.link_state
        st["frames"] += frames
        if batch is not None:
            st["packets_new"] += batch.new_packets
            st["packets_duplicate"] += batch.duplicates
            st["packets_bad"] += batch.bad
        if self.passes and self.passes[0]["los_t_s"] is None:
            self.passes[0]["frames"] += frames
            self.passes[0]["packets"] += batch.new_packets if batch is not None else 0
            self.hub.publish("pass", {"passes": list(self.passes)})
        self.hub.publish("link", dict(st))

    # -- inside: commands ------------------------------------------------------------------------
    def _serve_commands(self, conn: RadioConnection) -> None:
        """Offer the waiting commands to FOP-1 and radiate what it hands out (in contact only)."""
        with self._lock:
            while True:
                try:
                    self._waiting.append(self._requests.get_nowait())
                except queue.Empty:
                    break
            if not self.in_contact:
                return
            fop = self.link.fop
            self.link.tick(self.now_s)
            fresh = self.clcw is not None and self.clcw_t >= self.aos_t
            if fop.state is FopState.INITIAL and self._waiting and fresh:
                self.initiations += 1
                if self.initiations <= MAX_INITIATIONS_PER_PASS:
                    self._log(initiate_ad(fop, self.clcw, self.now_s))
            while self._waiting and fop.state in (FopState.ACTIVE, FopState.RETRANSMIT_WITHOUT_WAIT,
                                                  FopState.RETRANSMIT_WITH_WAIT):
                rec = self.commands[self._waiting[0] - 1]
                if not self.link.send_packet(rec["_packet"], self.now_s):
                    break
                self._waiting.popleft()
                rec["link"] = "with_fop"
                self._command_changed(rec)
            self._take_notices()
            cltus = self.link.radiate()
            self.link_state.update(fop_state=fop.state.name, next_arsn=self.up.seq)
        for cltu in cltus:
            conn.send_cltu(cltu)
        if cltus:
            with self._lock:
                if self.passes:
                    self.passes[0]["cltus"] += len(cltus)
                self.hub.publish("pass", {"passes": list(self.passes)})
                self.hub.publish("link", dict(self.link_state))

    def _take_notices(self) -> None:
        notices = self.link.notices
        while self._notice_pos < len(notices):
            kind, payload = notices[self._notice_pos]
            self._notice_pos += 1
            i = self._by_fdu.get(payload) if isinstance(payload, bytes) else None
            rec = self.commands[i - 1] if i is not None else None
            if kind == "accept" and rec is not None:
                rec["link"] = "sent"
                rec["sent_t_s"] = self.now_s if rec["sent_t_s"] is None else rec["sent_t_s"]
            elif kind == "positive_confirm" and rec is not None:
                rec["link"], rec["confirmed_t_s"] = "confirmed", self.now_s
            elif kind == "negative_confirm" and rec is not None:
                rec["link"] = "unconfirmed"  # not sent again: it may have run with its CLCW lost
                self._log(f"command {rec['id']} unconfirmed by FOP-1 (not sent again: it may have run)")
            elif kind == "reject" and rec is not None and rec["link"] == "with_fop":
                rec["link"] = "queued"  # FOP-1 purged its wait queue: never transmitted
                self._waiting.appendleft(rec["id"])
            elif kind == "alert":
                self._log(f"FOP-1 alert {payload}")
            if rec is not None:
                self._command_changed(rec)
        self.link_state["fop_state"] = self.link.fop.state.name

    def _command_changed(self, rec: dict) -> None:
        rec["status"] = command_status(rec)
        self.hub.publish("command", _public(rec))

    # -- inside: bookkeeping ------------------------------------------------------------------------
    def _first_arsn(self) -> int:
        """Past every ARSN the satellite has reported for our association (HK SID 6 in the
        archive): a number it has seen would be refused as a replay."""
        try:
            row = self.archive.conn.execute("SELECT max(arsn) FROM hk_sa WHERE spi = ?", (self.up.key_id,)).fetchone()
        except sqlite3.OperationalError:
            row = None
        return max(self.up.seq, (row[0] + 1) if row and row[0] is not None else 1)

    def _load_history(self) -> None:
        """The page's starting point after a restart: the latest housekeeping and model events."""
        conn = self.archive.conn
        cur = conn.execute("SELECT * FROM hk_core ORDER BY t_s DESC, packet_id DESC LIMIT 1")
        row = cur.fetchone()
        if row is not None:
            sample = dict(zip([c[0] for c in cur.description], row, strict=True))
            sample.pop("packet_id")
            self._hk(sample)
        marks = ", ".join("?" * len(MODEL_EVENTS))
        for pid, t, eid, detail in reversed(conn.execute(
                f"SELECT packet_id, t_s, event_id, detail FROM events WHERE event_id IN ({marks}) "
                f"ORDER BY t_s DESC LIMIT {KEEP_MODELS}", tuple(MODEL_EVENTS)).fetchall()):
            self.models.appendleft({"packet_id": pid, "t_s": t, "utc": self._utc(t), "kind": MODEL_EVENTS[eid],
                                    "text": detail})

    def _set_link(self, **changes) -> None:
        with self._lock:
            self.link_state.update(changes)
            self.hub.publish("link", dict(self.link_state))

    def _log(self, text: str) -> None:
        with self._lock:
            log = self.link_state["log"]
            log.append({"t_s": self.now_s, "wall": time.time(), "text": text})
            del log[:-20]

    def _utc(self, t_s: float | None) -> str | None:
        if t_s is None:
            return None
        return (self.cfg.mission.start_utc + timedelta(seconds=t_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-5] + "Z"


class RadioThread:
    """A station's radio thread (`Station.run`) in the background, stopped by `close` or at the
    end of a `with` block."""

    def __init__(self, station: Station):
        self.station = station
        self.stop = threading.Event()
        self.thread = threading.Thread(target=station.run, args=(self.stop,), name="station-radio", daemon=True)

    def start(self) -> RadioThread:
        self.thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        self.stop.set()
        self.thread.join(timeout_s)

    def __enter__(self) -> RadioThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def command_status(rec: dict) -> str:
    """A command's one-word status: the furthest verification stage reached, a failure at any
    stage, or else where the link has got with it (queued / with_fop / sent / confirmed by
    the CLCW / unconfirmed)."""
    if any(rec[s] == "failed" for s in STAGES):
        return "failed"
    for stage, word in (("completion", "completed"), ("start", "started"), ("acceptance", "accepted")):
        if rec[stage] == "ok":
            return word
    return rec["link"]


def _public(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def _json_number(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
