"""Benchmark group `station`: latencies of the live ground station (`groundtools station`).

Both figures are measured in one process with one monotonic clock: a fake radio port
(`sim.bench.radio_port.FakeRadioPort`, the world server's framing over real TCP on localhost)
writes CADUs of synthetic core housekeeping, the station (its radio thread, its SQLite archive
in a temporary folder, its page served by uvicorn) does what it does in operations.

- ``ground.live_frame_to_archive_ms_p99``: from just before the port writes a CADU to the
  moment the station's transaction holding the packet it carries has committed (the
  station's commit hook), p99 over 3000 CADUs (quick: 500), one CADU every 2 ms (500
  frames/s, hundreds of times a real pass's frame rate). Goal <= 100 ms.
- ``ground.live_alarm_latency_ms_p99``: from just before the port writes a CADU whose
  housekeeping violates the SoC alarm bound to the moment an SSE client (a plain HTTP reader
  of ``/events`` in another thread) has read the ``alarm`` event it raised, p99 over 500
  alarms (quick: 100; every other sample violates, so each violation is a new alarm), one
  CADU every 5 ms. Goal <= 100 ms.
"""

from __future__ import annotations

import http.client
import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


class _Rig:
    """The station rig of the default mission, with a synthetic spacecraft to feed it."""

    def __init__(self, tmp: Path, web: bool):
        from flight_sw.config import load_mission_config
        from ground_tools.runfolder import RunFolder
        from sim.bench.radio_port import StationRig, SyntheticSpacecraft

        cfg = load_mission_config(DEFAULT_CONFIG)
        self.cfg = cfg
        self.rig = StationRig(tmp / "station.sqlite", RunFolder(DEFAULT_CONFIG, cfg, DEFAULT_CONFIG.read_text()), web)
        self.port, self.station, self.web = self.rig.port, self.rig.station, self.rig.web
        self.spacecraft = SyntheticSpacecraft(cfg)

    def close(self) -> None:
        self.rig.close()


def _p99_ms(delays_s: list[float]) -> float:
    return float(np.percentile(np.asarray(delays_s) * 1000.0, 99))


def _stream(rig: _Rig, n: int, gap_s: float, soc_of: Callable[[int], float]) -> dict[float, float]:
    """Write n CADUs, one every gap_s (paced against the clock, not slept per frame, so a slow
    write does not slow the rate); returns mission t_s -> monotonic write time."""
    cadus = [(1000.0 + i, rig.spacecraft.hk_cadu(1000.0 + i, soc=soc_of(i))) for i in range(n)]
    written: dict[float, float] = {}
    start = time.monotonic()
    for i, (t, cadu) in enumerate(cadus):
        delay = start + i * gap_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        written[t] = rig.port.send_cadu(t, cadu)
    return written


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"station benchmark: timed out waiting for {what}")
        time.sleep(0.01)


def frame_to_archive_ms_p99(n: int, log) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        rig = _Rig(Path(tmp), web=False)
        try:
            committed: dict[float, float] = {}

            def on_commit(batch, t_commit):
                for row in batch.rows["packets"]:
                    committed[row[6]] = t_commit

            rig.station.commit_hooks.append(on_commit)
            written = _stream(rig, n, 0.002, lambda i: 0.8)
            _wait_for(lambda: len(committed) >= n, 30, f"{n} packets committed")
        finally:
            rig.close()
    delays = [committed[t] - w for t, w in written.items()]
    log(f"frame -> archive commit: {n} CADUs at 500/s, median {np.median(delays) * 1000:.2f} ms, "
        f"p99 {_p99_ms(delays):.2f} ms, max {max(delays) * 1000:.2f} ms")
    return _p99_ms(delays)


class _SseClient:
    """Reads /events in a thread; notes the monotonic time each `alarm` event was read."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        self.alarms: dict[float, tuple[float, dict]] = {}
        self.snapshot = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        kind = None
        try:
            for raw in self.resp:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind is not None:
                    now = time.monotonic()
                    if kind == "snapshot":
                        self.snapshot.set()
                    elif kind == "alarm":
                        ev = json.loads(line[5:])
                        if ev["kind"] == "raised":
                            self.alarms[ev["t_s"]] = (now, ev)
                elif not line:
                    kind = None
        except (OSError, ValueError, AttributeError, http.client.HTTPException):  # closed under us
            return

    def close(self) -> None:
        if self.conn.sock is not None:  # wake the reader now, not at the next keep-alive
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


def alarm_latency_ms_p99(n_alarms: int, log) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        rig = _Rig(Path(tmp), web=True)
        client = _SseClient(rig.web.url)
        try:
            if not client.snapshot.wait(10):
                raise TimeoutError("station benchmark: the event stream sent no snapshot")
            low = rig.cfg.power.battery.safe_mode_soc - 0.05
            written = _stream(rig, 2 * n_alarms, 0.005, lambda i: low if i % 2 else 0.8)
            _wait_for(lambda: len(client.alarms) >= n_alarms, 30, f"{n_alarms} alarms on the event stream")
        finally:
            client.close()
            rig.close()
    delays = [client.alarms[t][0] - written[t] for t in client.alarms]
    log(f"CADU -> alarm read from SSE: {len(delays)} alarms, median {np.median(delays) * 1000:.2f} ms, "
        f"p99 {_p99_ms(delays):.2f} ms, max {max(delays) * 1000:.2f} ms")
    return _p99_ms(delays)


def run(quick: bool, log=print) -> dict[str, float]:
    return {
        "ground.live_frame_to_archive_ms_p99": frame_to_archive_ms_p99(500 if quick else 3000, log),
        "ground.live_alarm_latency_ms_p99": alarm_latency_ms_p99(100 if quick else 500, log),
    }
