"""Shared helpers for the telecommand tests (no tests here): a flight software on an injected NV store."""

from __future__ import annotations

import struct

import numpy as np
from spacepackets.ecss import PusTm

from flight_sw.app import FlightSoftware
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.nv_store import RedundantStore
from ground_tools.uplink import Uplinker
from tests.flight_sw.conftest import FakePayload


class Bench:
    """One flight software with a TM tap (every packet, before the downlink queue)."""

    def __init__(self, cfg, image, store: RedundantStore | None = None):
        self.cfg, self.image = cfg, image
        self.store = store if store is not None else RedundantStore.in_memory(cfg.tmtc.max_upload_bytes)
        self.boots = 0
        self.tm: list[bytes] = []
        self.boot()

    def boot(self, snapshot: bytes | None = None):
        """Power on (cold start) with the same NV store, optionally restoring a snapshot."""
        payload = FakePayload(self.cfg)
        self.boots += 1  # a hardware RNG differs at every boot: so does this one
        self.fsw = FlightSoftware(self.cfg, self.image, payload, lambda p: None, tc_store=self.store,
                                  reference=payload.reference,
                                  entropy=np.random.default_rng([7, self.boots]).bytes)
        for ring in self.fsw.downlink.rings:  # what the boot itself reported
            while ring.count:
                self.tm.append(ring.pop())
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

    def events(self, event_id: int, layout: struct.Struct) -> list[tuple]:
        """The parameters of every event `event_id`, unpacked with `layout`."""
        out = []
        for p in self.packets():
            data = bytes(p.source_data)
            if p.service == 5 and struct.unpack_from(">H", data)[0] == event_id:
                out.append(layout.unpack_from(data, 2))
        return out

    def rejections(self, with_onboard: bool = False):
        """[(reason, SPI, claimed ARSN)] (and the onboard ARSN when asked) of every refused frame."""
        return [(d.TC_REJECT_REASONS[r], kid, seq, *((onboard,) if with_onboard else ()))
                for r, kid, seq, onboard in self.events(d.EVENT_TC_REJECTED, d.TC_REJECTED_STRUCT)]

    def clear(self):
        self.tm.clear()


def uplinker(cfg, first_seq=1, key_id=None):
    return Uplinker(cfg, first_seq=first_seq, key_id=key_id)


def packet_of(cltu: bytes) -> bytes:
    """The PUS packet inside an Uplinker CLTU (authentication service: 10-octet security header,
    16-octet MAC), without checking anything: for tests that need the plain command."""
    from flight_sw.tmtc.cltu import decode_cltu

    frame, _ = decode_cltu(cltu)
    return frame[5 + 10 : -16 - 2]


def forge_mac(cltu: bytes) -> bytes:
    """The same CLTU with one MAC bit flipped and the frame re-coded (valid FECF and BCH): a
    forgery that only the security layer can catch."""
    from flight_sw.tmtc.cltu import decode_cltu, encode_cltu
    from flight_sw.tmtc.tc_frames import crc16

    frame, _ = decode_cltu(cltu)
    body = bytearray(frame[:-2])
    body[-1] ^= 1  # the last MAC octet
    return encode_cltu(bytes(body) + crc16(bytes(body)).to_bytes(2, "big"))
