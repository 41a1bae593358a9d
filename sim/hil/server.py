"""The device emulator as a server: TCP (loopback by default) or a serial line over a pty.

Either server feeds every byte it receives to a `DeviceEndpoint` and writes back
whatever the endpoint answers, exactly as a device on a UART or a network bridge
would. `pace="realtime"` makes the server take as long as the modelled device
operation (`speed` x faster) and lets device time follow the wall clock between
commands, so drift runs in real time; `"accelerated"` (default) answers at once and
device time advances only by modelled operation times and TIME commands.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time

from sim.analog.endpoint import DeviceEndpoint


class _Pacer:
    def __init__(self, endpoint: DeviceEndpoint, pace: str, speed: float):
        if pace not in ("accelerated", "realtime"):
            raise ValueError("pace must be 'accelerated' or 'realtime'")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.endpoint = endpoint
        self.realtime = pace == "realtime"
        self.speed = speed
        self._last = time.monotonic()
        self.lock = threading.Lock()

    def handle(self, data: bytes) -> bytes:
        with self.lock:
            ep = self.endpoint
            if self.realtime:
                now = time.monotonic()
                ep.advance((now - self._last) * self.speed)
                self._last = now
            t0 = ep.array.time_s
            reply = ep.handle(data)
            if self.realtime:
                busy = (ep.array.time_s - t0) / self.speed
                if busy > 0:
                    time.sleep(min(busy, 5.0))
                self._last = time.monotonic()
            return reply


class TcpDeviceServer:
    """Serve one endpoint over TCP; one client at a time (a device has one host)."""

    def __init__(
        self,
        endpoint: DeviceEndpoint,
        host: str = "127.0.0.1",
        port: int = 0,
        pace: str = "accelerated",
        speed: float = 1.0,
    ):
        self.pacer = _Pacer(endpoint, pace, speed)
        self.endpoint = endpoint
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> TcpDeviceServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hil-tcp", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self.connections += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(0.2)
            with conn:
                self._serve_connection(conn)

    def _serve_connection(self, conn: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = conn.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.bytes_in += len(data)
            reply = self.pacer.handle(data)
            if reply:
                try:
                    conn.sendall(reply)
                except OSError:
                    return
                self.bytes_out += len(reply)

    def stop(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> TcpDeviceServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PtyDeviceServer:
    """Serve one endpoint on the master side of a pty; the host opens `slave_path` as a serial port."""

    def __init__(self, endpoint: DeviceEndpoint, pace: str = "accelerated", speed: float = 1.0):
        import tty

        self.pacer = _Pacer(endpoint, pace, speed)
        self.endpoint = endpoint
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)  # no line discipline: bytes pass unchanged
        self.slave_path = os.ttyname(self.slave_fd)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def url(self) -> str:
        return f"serial://{self.slave_path}"

    def start(self) -> PtyDeviceServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hil-pty", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        fd = self.master_fd
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                return
            if not data:
                continue
            self.bytes_in += len(data)
            reply = self.pacer.handle(data)
            view = memoryview(reply)
            while view:
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    select.select([], [fd], [], 0.2)
                    continue
                except OSError:
                    return
                view = view[n:]
                self.bytes_out += n

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for fd in (self.master_fd, self.slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> PtyDeviceServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
