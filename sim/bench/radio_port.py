"""A stand-in for the world server's ground radio port, and a synthetic spacecraft to feed it.

`flightsim serve` owns the real port; the live station's tests and its benchmark need one they
can steer: stream chosen CADUs, drop the connection mid-stream, see the CLTUs the station
radiates, and know when each CADU was written (the start of the latency figures). The framing
is `flight_sw.tmtc.link_messages`, the same the server speaks.

`SyntheticSpacecraft` makes CADUs the flight software's own way (`TmEncoder` packs the PUS
reports, `TmDownlink` frames them with a CLCW in the OCF), with housekeeping values the caller
chooses: a limit violation on demand, without running a simulation to wait for one.
"""

from __future__ import annotations

import math
import queue
import socket
import threading
import time

from flight_sw.config.schema import MODES, MissionConfig
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc import link_messages as lm
from flight_sw.tmtc.packets import TmEncoder
from flight_sw.tmtc.tm_frames import TmDownlink

#: A CLCW with N(R) 0 and no flags: what a FARM-1 that has accepted nothing reports.
IDLE_CLCW = bytes([0x01, 0x00, 0x00, 0x00])


class FakeRadioPort:
    """A TCP server with one client at a time: `send_*` writes messages to it, CLTUs it sends
    are collected in `cltus`. `drop()` closes the connection; the port keeps listening, and
    `wait_client()` waits for the next one. `written_at` maps a label the caller gives to the
    monotonic time the message was handed to the socket."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self.url = f"tcp://{self.host}:{self.port}"
        self.cltus: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self.connections = 0
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._connected = threading.Condition(self._lock)
        self._closed = False
        threading.Thread(target=self._accept_loop, name="fake-radio-accept", daemon=True).start()

    # -- what the test does ----------------------------------------------------------------
    def wait_client(self, timeout_s: float = 10.0) -> None:
        """Block until a client is connected (the station's first connect or its reconnect)."""
        with self._connected:
            if not self._connected.wait_for(lambda: self._conn is not None, timeout_s):
                raise TimeoutError(f"no ground station connected to {self.url} within {timeout_s} s")

    def send(self, kind: int, body: bytes) -> float:
        """Write one message; returns the monotonic time just before the write (the start of
        the latency figures: what the station does with it comes after)."""
        data = lm.encode(kind, body)
        with self._lock:
            conn = self._conn
            if conn is None:
                raise ConnectionError(f"no ground station connected to {self.url}")
            t = time.monotonic()
            conn.sendall(data)
        return t

    def send_cadu(self, t_s: float, cadu: bytes) -> float:
        return self.send(lm.RADIO_CADU, lm.timed(t_s, bytes(cadu)))

    def send_contact(self, t_s: float, aos: bool) -> float:
        return self.send(lm.RADIO_CONTACT, lm.timed(t_s, bytes([1 if aos else 0])))

    def send_time(self, t_s: float) -> float:
        return self.send(lm.RADIO_TIME, lm.timed(t_s))

    def drop(self) -> None:
        """Close the current connection (the station should reconnect)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self._closed = True
        self.drop()
        self._listener.close()

    # -- inside ----------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._connected:
                old, self._conn = self._conn, conn
                self.connections += 1
                self._connected.notify_all()
            if old is not None:
                old.close()
            threading.Thread(target=self._read_loop, args=(conn,), name="fake-radio-read", daemon=True).start()

    def _read_loop(self, conn: socket.socket) -> None:
        reader = lm.MessageReader()
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            for kind, body in reader.feed(chunk):
                if kind == lm.RADIO_CLTU:
                    self.cltus.put((time.monotonic(), body))


class SyntheticSpacecraft:
    """CADUs carrying core housekeeping (SID 1) with chosen values, framed as the flight
    software frames them. One `hk_cadu` call is one CADU that completes exactly one packet."""

    def __init__(self, cfg: MissionConfig):
        self.cfg = cfg
        self._packets: list[bytes] = []
        self.encoder = TmEncoder(cfg.telemetry.apid, cfg.mission.start_utc,
                                 lambda pkt, high: self._packets.append(bytes(pkt)))
        self.clcw = IDLE_CLCW
        self.link = TmDownlink(cfg.telemetry.spacecraft_id, cfg.downlink.tm_frame_bytes, lambda: self.clcw)
        self.sent_packets: list[bytes] = []

    @staticmethod
    def hk_values(**values) -> tuple:
        """A full SID-1 record: zeros, this dictionary's version, NOMINAL mode, a healthy
        battery and no label accuracy yet (NaN: not checked), then `values` on top."""
        base = {p.name: 0 for p in d.HK_CORE}
        base.update(dict_version=d.DICTIONARY_VERSION, mode=MODES.index("NOMINAL"), soc=0.8,
                    label_accuracy=math.nan, drift_stat=0.0, drift_label_stat=0.0)
        unknown = set(values) - set(base)
        if unknown:
            raise KeyError(f"not SID-1 parameters: {sorted(unknown)}")
        base.update(values)
        return tuple(base[p.name] for p in d.HK_CORE)

    def hk_cadu(self, t_s: float, **values) -> bytes:
        """One CADU whose frame carries one core housekeeping report stamped `t_s`."""
        self.encoder.housekeeping(d.HK_CORE_SID, d.HK_CORE_STRUCT.pack(*self.hk_values(**values)), t_s)
        return self._frame_packets()

    def _frame_packets(self) -> bytes:
        for pkt in self._packets:
            if not self.link.push(0, pkt):
                raise OverflowError("the synthetic downlink queue is full")
            self.sent_packets.append(pkt)
        self._packets.clear()
        out: list[bytes] = []
        self.link.send(1, lambda view: out.append(bytes(view)))
        if self.link.pending_bytes:
            raise ValueError("a report did not fit one frame: use a longer tm_frame_bytes")
        return out[0]


class StationRig:
    """A fake radio port and a live station on it, its radio thread running (and its page, if
    asked), torn down by `close`; every event the station publishes is kept in `events`."""

    def __init__(self, db, mission, web: bool = False):
        from ground_tools.limits import load_limits
        from ground_tools.station import RadioThread, Station
        from ground_tools.station_web import WebServer

        self.mission = mission
        self.port = FakeRadioPort()
        self.station = Station(mission, db, load_limits(None, mission.cfg), self.port.url)
        self.events: list[tuple[str, dict]] = []
        self.station.hub.taps.append(lambda kind, data: self.events.append((kind, data)))
        self.radio = RadioThread(self.station).start()
        self.web = WebServer(self.station).start() if web else None
        self.port.wait_client()

    def alarms(self) -> list[dict]:
        return [data for kind, data in list(self.events) if kind == "alarm"]

    def close(self) -> None:
        if self.web is not None:
            self.web.stop()
        self.radio.close()
        self.port.close()
