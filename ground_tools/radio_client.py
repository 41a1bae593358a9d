"""The ground station's end of the world server's radio port: a TCP client speaking the link
message framing (`flight_sw.tmtc.link_messages`). It only moves messages; what they mean is
the station's business, and reconnecting is its loop's (this object is one connection).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from flight_sw.tmtc import link_messages as lm


def parse_radio_url(url: str) -> tuple[str, int]:
    """(host, port) of ``tcp://HOST:PORT``; anything else is refused with what was expected."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ValueError(f"radio address {url!r}: expected tcp://HOST:PORT (the world server's ground radio port)")
    return parts.hostname, port


class RadioConnection:
    """One TCP connection to the radio port."""

    def __init__(self, url: str, connect_timeout_s: float = 2.0):
        self.url = url
        host, port = parse_radio_url(url)
        self.sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = lm.MessageReader()

    def receive(self, timeout_s: float) -> list[tuple[int, bytes]]:
        """The messages completed by what arrives within `timeout_s` (none on a quiet link).
        Raises ConnectionError when the server closes the connection."""
        self.sock.settimeout(timeout_s)
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            return []
        if not chunk:
            raise ConnectionError(f"{self.url}: the radio port closed the connection")
        return self.reader.feed(chunk)

    def send_cltu(self, cltu: bytes) -> None:
        self.sock.settimeout(5.0)
        self.sock.sendall(lm.encode(lm.RADIO_CLTU, cltu))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
