"""The ground radio port: the world's side of the RF link as a TCP server a live ground station
connects to (`groundtools station --radio tcp://HOST:PORT`).

It is a `sim.ground_link.GroundTerminal`, so the simulation hands it every downlinked CADU
and asks it, at contact ticks, for the CLTUs that reach the spacecraft. Messages are those of
`flight_sw.tmtc.link_messages` (RADIO_CADU, RADIO_CLTU, RADIO_CONTACT, RADIO_TIME).

- CLTUs the station sends are radiated at the next tick in contact (out of contact they wait,
  as they would in the station's queue).
- Acquisition and loss of signal are sent as RADIO_CONTACT at the contact edges, from the
  world's contact list, and the mission time every `time_every_s` as RADIO_TIME.
- A station that connects during a contact is told so first (the pass's RADIO_CONTACT again,
  unless its backlog holds it).
- While no station is connected, what it would have received is kept (up to `backlog_max`
  messages; beyond that the oldest go and are counted in `backlog_dropped`) and sent when a
  station connects, so a station that reconnects misses nothing the port still holds.
"""

from __future__ import annotations

import socket
import threading
from collections import deque

from flight_sw.tmtc import link_messages as lm


class RadioPort:
    def __init__(self, contacts, host: str = "127.0.0.1", port: int = 0, time_every_s: float = 60.0,
                 backlog_max: int = 200_000):
        self._edges = sorted([(c.start_s, 1) for c in contacts] + [(c.end_s, 0) for c in contacts])
        self._edge_next = 0
        self._aos_message: bytes | None = None  # the current pass's AOS while in contact
        self.time_every_s = time_every_s
        self._next_time_s = 0.0
        self._server = socket.create_server((host, port))
        self._server.settimeout(0.2)
        self.host, self.port = self._server.getsockname()[:2]
        self._station: socket.socket | None = None
        self._lock = threading.Lock()
        self._uplink: deque[bytes] = deque()
        self._backlog: deque[bytes] = deque()
        self.backlog_max = backlog_max
        self.backlog_dropped = 0
        self.connections = 0
        self.cadus_sent = 0
        self.cltus_received = 0
        self.cltus_radiated = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="radio-port", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    # -- station connections (background thread) ------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._station is not None:
                    self._close_station()
                self._station = conn
                self.connections += 1
                backlog, self._backlog = list(self._backlog), deque()
                aos = self._aos_message
                if aos is not None and aos not in backlog:
                    backlog.insert(0, aos)
            try:
                conn.sendall(b"".join(backlog))
            except OSError:
                with self._lock:
                    self._backlog.extendleft(reversed(backlog))
                    self._close_station()
                continue
            threading.Thread(target=self._read_station, args=(conn,), name="radio-port-rx", daemon=True).start()

    def _read_station(self, conn: socket.socket) -> None:
        reader = lm.MessageReader()
        while not self._stop.is_set():
            try:
                chunk = conn.recv(1 << 16)
            except OSError:
                break
            if not chunk:
                break
            try:
                messages = reader.feed(chunk)
            except lm.LinkMessageError:
                break
            with self._lock:
                for kind, body in messages:
                    if kind == lm.RADIO_CLTU:
                        self._uplink.append(body)
                        self.cltus_received += 1
        with self._lock:
            if self._station is conn:
                self._close_station()

    def drop_station(self) -> None:
        """Close the station's connection (fault injection); it may connect again."""
        with self._lock:
            if self._station is not None:
                self._station.shutdown(socket.SHUT_RDWR)
                self._close_station()

    @property
    def station_connected(self) -> bool:
        return self._station is not None

    def _close_station(self) -> None:
        try:
            self._station.close()
        except OSError:
            pass
        self._station = None

    def _send(self, message: bytes) -> None:
        with self._lock:
            conn = self._station
            if conn is not None:
                try:
                    conn.sendall(message)
                    return
                except OSError:
                    self._close_station()
            if len(self._backlog) >= self.backlog_max:
                self._backlog.popleft()
                self.backlog_dropped += 1
            self._backlog.append(message)

    def _sync(self, t: float) -> None:
        """Send the contact edges and time marks up to mission time `t`, in order."""
        edges = self._edges
        while self._edge_next < len(edges) and edges[self._edge_next][0] <= t:
            edge_t, aos = edges[self._edge_next]
            message = lm.encode(lm.RADIO_CONTACT, lm.timed(edge_t, bytes([aos])))
            self._aos_message = message if aos else None
            self._send(message)
            self._edge_next += 1
        if t >= self._next_time_s:
            self._send(lm.encode(lm.RADIO_TIME, lm.timed(t)))
            self._next_time_s = (t // self.time_every_s + 1) * self.time_every_s

    def advance_to(self, t: float) -> None:
        """The world has reached `t` (between steps): contact edges and the time mark."""
        self._sync(t)

    # -- sim.ground_link.GroundTerminal -------------------------------------------------------
    def pending(self, t: float, contact_index: int) -> bool:
        self._sync(t)
        with self._lock:
            return bool(self._uplink)

    def radiate(self, t: float, contact_index: int) -> list[bytes]:
        with self._lock:
            out = list(self._uplink)
            self._uplink.clear()
        self.cltus_radiated += len(out)
        return out

    def on_cadu(self, cadu: bytes, t: float) -> None:
        self._sync(t)
        self._send(lm.encode(lm.RADIO_CADU, lm.timed(t, cadu)))
        self.cadus_sent += 1

    def state_dict(self) -> dict:
        raise NotImplementedError("a live radio port has no checkpoint")

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError("a live radio port has no checkpoint")

    def summary(self) -> dict:
        return {"radio_cadus_sent": self.cadus_sent, "radio_cltus_received": self.cltus_received,
                "radio_cltus_radiated": self.cltus_radiated, "radio_station_connections": self.connections,
                "radio_backlog_dropped": self.backlog_dropped}

    def report(self) -> dict:
        return self.summary()

    def close(self) -> None:
        self._stop.set()
        try:
            self._server.close()
        except OSError:
            pass
        with self._lock:
            if self._station is not None:
                self._close_station()
