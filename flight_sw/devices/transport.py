"""Byte transports between the driver and the analog optimizer: in-process, TCP, serial.

Every transport has the same small surface::

    send(data: bytes) -> None          # whole frame out (OSError on a dead link)
    recv(timeout_s: float) -> bytes    # what arrived; b"" = silence for timeout_s
    reopen() -> None                   # drop and re-establish the link
    close() -> None
    modelled: bool                     # True: timeouts are modelled, not waited

Flight code never reads a clock: a real transport waits only through the
socket/serial timeout it is handed per call, and the driver bounds the number
of calls, so a reply wait is bounded without looking at the time. The
in-process transport answers synchronously (a silent device returns b""
immediately and the driver books the modelled timeout).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol
from urllib.parse import parse_qs, urlparse


class TransportError(OSError):
    """The link is down (connection refused/reset, port gone)."""


class Transport(Protocol):
    modelled: bool

    def send(self, data: bytes) -> None: ...

    def recv(self, timeout_s: float) -> bytes: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


class DeviceEndpoint(Protocol):
    """The device end of the byte protocol (the emulator, or a bridge to hardware)."""

    def handle(self, data: bytes) -> bytes: ...


class InProcessTransport:
    """Bytes handed straight to an endpoint object living in the same process.

    The endpoint (e.g. `sim.analog.DeviceEndpoint`) returns its reply bytes,
    possibly empty (dead device) or corrupted (fault injection).
    """

    modelled = True

    def __init__(self, endpoint: DeviceEndpoint):
        self.endpoint = endpoint
        self._rx = bytearray()
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        self._rx += self.endpoint.handle(bytes(data))

    def recv(self, timeout_s: float) -> bytes:
        out = bytes(self._rx)
        self._rx.clear()
        self.bytes_received += len(out)
        return out

    def reopen(self) -> None:
        self._rx.clear()

    def close(self) -> None:
        self._rx.clear()


class TcpTransport:
    """A TCP client link (HIL bench: `flightsim hil serve`), Nagle off, lazy connect."""

    modelled = False

    def __init__(self, host: str, port: int, connect_timeout_s: float = 2.0):
        if not 0 < int(port) < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self.host = host
        self.port = int(port)
        self.connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.connects = 0

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
            except OSError as exc:
                raise TransportError(f"tcp://{self.host}:{self.port}: {exc}") from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self.connects += 1
        return self._sock

    def send(self, data: bytes) -> None:
        sock = self._connect()
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise TransportError(str(exc)) from exc
        self.bytes_sent += len(data)

    def recv(self, timeout_s: float) -> bytes:
        sock = self._connect()
        sock.settimeout(max(timeout_s, 1e-4))
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            return b""
        except OSError as exc:
            self.close()
            raise TransportError(str(exc)) from exc
        if not data:
            self.close()
            raise TransportError("connection closed by the device")
        self.bytes_received += len(data)
        return data

    def reopen(self) -> None:
        self.close()
        self._connect()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


class SerialTransport:
    """A serial line through pyserial (a UART on the bench, a pty pair in tests)."""

    modelled = False

    def __init__(self, port: str, baudrate: int = 115200, serial_factory: Callable | None = None):
        self.port = port
        self.baudrate = int(baudrate)
        self._factory = serial_factory
        self._ser = None
        self.bytes_sent = 0
        self.bytes_received = 0

    def _open(self):
        if self._ser is None:
            factory = self._factory
            if factory is None:
                import serial  # pyserial; imported lazily so TCP-only hosts need not load it

                factory = serial.Serial
            try:
                self._ser = factory(self.port, self.baudrate, timeout=0.1, write_timeout=2.0)
            except (OSError, ValueError) as exc:
                raise TransportError(f"serial {self.port}: {exc}") from exc
        return self._ser

    def send(self, data: bytes) -> None:
        ser = self._open()
        try:
            ser.write(data)
            ser.flush()
        except Exception as exc:  # pyserial raises SerialException/SerialTimeoutException (OSError subclasses)
            self.close()
            raise TransportError(str(exc)) from exc
        self.bytes_sent += len(data)

    def recv(self, timeout_s: float) -> bytes:
        ser = self._open()
        try:
            ser.timeout = max(timeout_s, 1e-4)
            first = ser.read(1)
            if not first:
                return b""
            rest = ser.read(ser.in_waiting) if ser.in_waiting else b""
        except Exception as exc:
            self.close()
            raise TransportError(str(exc)) from exc
        data = first + rest
        self.bytes_received += len(data)
        return data

    def reopen(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            finally:
                self._ser = None


def transport_from_url(url: str, endpoint: DeviceEndpoint | None = None) -> Transport:
    """Build a transport from a device URL.

    - ``tcp://HOST:PORT`` -> `TcpTransport`
    - ``serial:///dev/pts/N`` or ``serial:///dev/ttyUSB0?baud=115200`` -> `SerialTransport`
    - ``inproc://`` -> `InProcessTransport` around `endpoint` (the host supplies it)

    `ValueError` names what is wrong with a malformed URL.
    """
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "tcp":
        if not parsed.hostname or parsed.port is None:
            raise ValueError(f"{url!r}: expected tcp://HOST:PORT")
        return TcpTransport(parsed.hostname, parsed.port)
    if scheme == "serial":
        path = parsed.path or parsed.netloc
        if not path:
            raise ValueError(f"{url!r}: expected serial:///dev/NAME[?baud=N]")
        query = parse_qs(parsed.query)
        baud = int(query.get("baud", ["115200"])[0])
        if not 50 <= baud <= 20_000_000:
            raise ValueError(f"{url!r}: baud {baud} out of range")
        return SerialTransport(path, baud)
    if scheme == "inproc":
        if endpoint is None:
            raise ValueError("inproc:// needs the device endpoint object from the host")
        return InProcessTransport(endpoint)
    raise ValueError(f"{url!r}: unknown device URL scheme; expected tcp://, serial:// or inproc://")


def check_device_url(url: str) -> str | None:
    """None if `url` is a well-formed device URL, else what is wrong (for config checks)."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "inproc":
        return None
    if scheme == "tcp":
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            return "expected tcp://HOST:PORT"
        return None
    if scheme == "serial":
        if not (parsed.path or parsed.netloc):
            return "expected serial:///dev/NAME[?baud=N]"
        try:
            baud = int(parse_qs(parsed.query).get("baud", ["115200"])[0])
        except ValueError:
            return "baud must be an integer"
        return None if 50 <= baud <= 20_000_000 else "baud out of range"
    return "unknown scheme; expected inproc://, tcp://HOST:PORT or serial:///dev/NAME"
