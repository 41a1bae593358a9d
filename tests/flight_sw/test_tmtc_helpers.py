"""Shared helpers for the telecommand tests (no tests here): a flight software on an injected NV store."""

from __future__ import annotations

import struct

from spacepackets.ecss import PusTm

from flight_sw.app import FlightSoftware
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.security import MemoryStore
from ground_tools.uplink import Uplinker
from tests.flight_sw.conftest import FakePayload


class Bench:
    """One flight software with a TM tap (every packet, before the downlink queue)."""

    def __init__(self, cfg, image, store: MemoryStore | None = None):
        self.cfg, self.image = cfg, image
        self.store = store if store is not None else MemoryStore()
        self.tm: list[bytes] = []
        self.boot()

    def boot(self, snapshot: bytes | None = None):
        """Power on (cold start) with the same NV store, optionally restoring a snapshot."""
        payload = FakePayload(self.cfg)
        self.fsw = FlightSoftware(self.cfg, self.image, payload, lambda p: None, tc_store=self.store,
                                  reference=payload.reference)
        self.fsw.tm.sink = lambda packet, high=False: self.tm.append(packet)
        if snapshot is not None:
            self.fsw.restore(snapshot)
        return self.fsw

    def send(self, *frames: bytes) -> None:
        """Queue frames and run the tc_handler (the task's own entry point)."""
        for f in frames:
            self.fsw.telecommand(f)
        self.fsw.tc.run(self.fsw.t_s)

    def packets(self):
        return [PusTm.unpack(r, timestamp_len=d.CDS_SHORT_LEN) for r in self.tm]

    def verification(self):
        """[(subtype, failure code name or None, text)] of every service 1 report."""
        out = []
        for p in self.packets():
            if p.service != 1:
                continue
            data = bytes(p.source_data)
            code = text = None
            if p.message_subtype in (2, 4, 8):
                code = d.TC_FAILURES[struct.unpack_from(">H", data, 4)[0]]
                text = data[6:].decode()
            out.append((p.message_subtype, code, text))
        return out

    def rejections(self):
        out = []
        for p in self.packets():
            data = bytes(p.source_data)
            if p.service == 5 and struct.unpack_from(">H", data)[0] == d.EVENT_TC_REJECTED:
                r, kid, seq = d.TC_REJECTED_STRUCT.unpack_from(data, 2)
                out.append((d.TC_REJECT_REASONS[r], kid, seq))
        return out

    def clear(self):
        self.tm.clear()


def uplinker(cfg, first_seq=1):
    return Uplinker(cfg, first_seq=first_seq)
