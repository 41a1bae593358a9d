"""Determinism of the simulation loop: idle-frame crossing and snapshot/resume change no byte."""

from pathlib import Path

import numpy as np
import pytest

from flight_sw.app import SnapshotError
from flight_sw.config import load_mission_config
from ground_tools.decode import packet_stream, split_packets, unframe
from sim.simulation import Simulation

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"
SECONDS = 0.3 * 86400


@pytest.fixture(scope="module")
def cfg():
    return load_mission_config(DEFAULT)


@pytest.fixture(scope="module")
def image(cfg):
    from sim.prelaunch import train_prelaunch_model
    from sim.simulation import spawn_rngs

    return train_prelaunch_model(cfg, spawn_rngs(cfg.mission.seed)["prelaunch"])


def _run(cfg, image, skip_idle, seconds=SECONDS):
    packets = []
    sim = Simulation(cfg, cfg.mission.seed, seconds, packets.append, skip_idle=skip_idle, image=image)
    sim.advance(sim.n_ticks)
    return sim, packets


def test_crossing_idle_frames_changes_no_telemetry_byte(cfg, image):
    fast, a = _run(cfg, image, skip_idle=True)
    slow, b = _run(cfg, image, skip_idle=False)
    assert len(a) > 300
    assert b"".join(a) == b"".join(b)
    np.testing.assert_array_equal(fast.world.battery.state, slow.world.battery.state)
    assert fast.fsw.snapshot() == slow.fsw.snapshot()


def test_resume_from_snapshot_continues_byte_identically(cfg, image):
    _, full = _run(cfg, image, skip_idle=True)
    packets = []
    first = Simulation(cfg, cfg.mission.seed, SECONDS, packets.append, image=image)
    first.advance(int(SECONDS * 0.4) + 7)  # an arbitrary tick, mid-block
    blob = first.snapshot()
    head = len(packets)
    first.advance(first.n_ticks)
    assert b"".join(packets) == b"".join(full)  # the snapshot itself disturbs nothing

    resumed_packets = []
    resumed = Simulation(cfg, cfg.mission.seed, SECONDS, resumed_packets.append, image=image)
    resumed.restore(blob)
    resumed.advance(resumed.n_ticks)
    assert len(resumed_packets) > 100
    assert b"".join(resumed_packets) == b"".join(full[head:])


def test_corrupt_or_foreign_snapshots_are_refused(cfg, image):
    import dataclasses

    sim = Simulation(cfg, cfg.mission.seed, 600.0, lambda p: None, image=image)
    sim.advance(100)
    blob = sim.fsw.snapshot()
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0x01
    with pytest.raises(SnapshotError, match="CRC"):
        sim.fsw.restore(bytes(bad))
    with pytest.raises(SnapshotError, match="not a flight software snapshot"):
        sim.fsw.restore(b"garbage")
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, replay_buffer_size=128))
    sim2 = Simulation(other, cfg.mission.seed, 600.0, lambda p: None, image=image)
    with pytest.raises(SnapshotError, match="different configuration"):
        sim2.fsw.restore(blob)


def test_analog_backend_runs_through_the_driver_and_reports_device_health(cfg, image):
    import dataclasses
    import struct

    from spacepackets.ecss import PusTm

    from flight_sw.devices.driver import AnalogDriver
    from flight_sw.tmtc import dictionary as d

    analog = dataclasses.replace(cfg, device=dataclasses.replace(cfg.device, backend="analog"))
    packets = []
    sim = Simulation(analog, cfg.mission.seed, 0.15 * 86400, packets.append, image=image)
    sim.advance(sim.n_ticks)
    solver = sim.fsw.solver
    assert isinstance(solver, AnalogDriver)
    st = solver.stats
    assert st.solves > 0 and st.analog_accepted + st.fallbacks == st.solves - st.rejected_by_gate
    device_hk = []
    for raw in split_packets(packet_stream(b"".join(packets), analog))[0]:
        p = PusTm.unpack(raw, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == 3 and struct.unpack(">H", data[:2])[0] == d.HK_DEVICE_SID:
            device_hk.append(d.HK_DEVICE_STRUCT.unpack(data[2:]))
    assert device_hk and device_hk[-1][1] <= st.solves  # solves counter reaches the ground


def test_the_frames_carry_exactly_the_packets_the_flight_software_sent(cfg, image):
    """Every packet the downlink handed to the framer reaches the ground from the CADU stream,
    in that order, with each APID's sequence count increasing by one (mod 2^14); every frame
    carries the CLCW of `clcw_source` (FARM-1's, until the test replaces it); a CLCW goes out at
    least every CLCW_REFRESH_MINOR_FRAMES minor frames in contact."""
    from flight_sw.tmtc.cop1 import Clcw
    from flight_sw.tmtc.downlink import CLCW_REFRESH_MINOR_FRAMES

    cadus: list[bytes] = []
    sim = Simulation(cfg, cfg.mission.seed, 0.15 * 86400, cadus.append, image=image)
    framed: list[bytes] = []
    link = sim.fsw.downlink.link
    for vc in link.queues:  # what enters the frames, per virtual channel, in order
        vc.push = lambda packet, push=vc.push: framed.append(bytes(packet)) or push(packet)
    emitted: list[bytes] = []  # the boot's reports, still queued
    for r in sim.fsw.downlink.rings:
        for i in range(r.count):
            row = r.first + (r.head + i) % r.capacity
            emitted.append(r.flat[row * r.row_bytes :][: int(r.lengths[row])].tobytes())
    encoder_sink = sim.fsw.tm.sink
    sim.fsw.tm.sink = lambda packet, high=False: emitted.append(bytes(packet)) or encoder_sink(packet, high)
    word = Clcw(virtual_channel_id=0, report_value=9).pack()
    contact_ticks = [0]
    drain = sim.fsw.downlink.drain

    def counting_drain(n_frames, in_contact):
        contact_ticks[0] += n_frames if in_contact else 0
        drain(n_frames, in_contact)

    sim.fsw.downlink.drain = counting_drain
    sim.advance(sim.n_ticks // 2)
    sim.fsw.downlink.clcw_source = lambda: word
    sim.advance(sim.n_ticks)

    raw = b"".join(cadus)
    stream = unframe(raw, cfg.downlink.tm_frame_bytes, cfg.telemetry.spacecraft_id)
    packets = split_packets(stream.packets)[0]
    tail = link.pending_bytes  # octets of the last packets still in the framer at the end
    assert len(packets) > 300 and stream.link.bad_crc == stream.link.gaps == stream.link.packets_dropped == 0
    assert packets == framed[: len(packets)] and sum(map(len, framed[len(packets):])) <= tail
    # a CLCW at least every CLCW_REFRESH_MINOR_FRAMES minor frames in contact
    assert len(cadus) >= contact_ticks[0] // CLCW_REFRESH_MINOR_FRAMES > 0
    last: dict[int, int] = {}
    for p in packets:
        apid, seq = ((p[0] & 7) << 8) | p[1], ((p[2] & 0x3F) << 8) | p[3]
        assert apid not in last or seq == (last[apid] + 1) % (1 << 14)
        last[apid] = seq

    def masked(r: bytes) -> bytes:  # without the count and the CRC, which the queue rewrites
        return r[:2] + r[4:-2]

    sent = {}
    for r in emitted:
        sent[masked(r)] = sent.get(masked(r), 0) + 1
    for p in packets:
        assert sent.get(masked(p), 0) > 0, "a packet the flight software never emitted"
        sent[masked(p)] -= 1
    dl = sim.fsw.downlink
    assert len(emitted) == len(framed) + dl.count + dl.overflow  # none lost between queue and frames
    ocf = slice(4 + cfg.downlink.tm_frame_bytes - 6, 4 + cfg.downlink.tm_frame_bytes - 2)
    words = [c[ocf] for c in cadus]
    farm = Clcw(virtual_channel_id=0, report_value=0).pack()  # FARM-1 at boot: Open, V(R) = 0
    assert sim.fsw.tc.link.clcw() == farm
    assert farm in words and word in words and words[-1] == word == stream_clcw(raw, cfg)


def stream_clcw(raw: bytes, cfg) -> bytes:
    from ground_tools.tm_frames import decode_tm_stream

    return decode_tm_stream(raw, cfg.downlink.tm_frame_bytes, cfg.telemetry.spacecraft_id).last_clcw
