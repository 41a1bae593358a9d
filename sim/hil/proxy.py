"""A TCP fault proxy between the flight software and the device: drop, delay, corrupt bytes.

    flight --tcp--> FaultProxy(listen) --tcp--> device server

Each chunk travelling in either direction is, with the configured probabilities,
dropped, delayed by `delay_s`, or has 1-4 random bits flipped (seeded). Counters
say what it did, so a HIL run can be checked against the driver's telemetry.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np


class FaultProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        drop: float = 0.0,
        delay: float = 0.0,
        delay_s: float = 0.05,
        corrupt: float = 0.0,
        seed: int = 0,
    ):
        for name, v in (("drop", drop), ("delay", delay), ("corrupt", corrupt)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} probability must be in [0, 1], got {v}")
        self.target = (target_host, int(target_port))
        self.drop, self.delay, self.delay_s, self.corrupt = drop, delay, delay_s, corrupt
        self.rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()
        self._sock = socket.create_server((listen_host, listen_port))
        self._sock.settimeout(0.2)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.delayed = 0
        self.corrupted = 0
        self.chunks = 0

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._accept_loop, name="hil-proxy", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2.0)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(0.2)
            a = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            b = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
            a.start()
            b.start()

    def _mangle(self, data: bytes) -> bytes | None:
        with self._rng_lock:
            self.chunks += 1
            r = self.rng.random(3)
            if r[0] < self.drop:
                self.dropped += 1
                return None
            if r[2] < self.corrupt:
                self.corrupted += 1
                buf = bytearray(data)
                for _ in range(int(self.rng.integers(1, 5))):
                    i = int(self.rng.integers(0, len(buf)))
                    buf[i] ^= 1 << int(self.rng.integers(0, 8))
                data = bytes(buf)
            if r[1] < self.delay:
                self.delayed += 1
                time.sleep(self.delay_s)
        return data

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = src.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            out = self._mangle(data)
            if out is None:
                continue
            try:
                dst.sendall(out)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
