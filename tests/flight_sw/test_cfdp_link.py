"""CFDP class 2 file uplink: onboard receiver (flight_sw.tmtc.cfdp_link) against the ground's
source entity (ground_tools.cfdp_uplink) over a lossy link in short contacts."""

import numpy as np
import pytest
from cfdppy.handler.source import TransactionStep as SourceStep
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacepackets.cfdp import ConditionCode, PduType
from spacepackets.cfdp.pdu import DirectiveType
from spacepackets.cfdp.pdu.helper import PduFactory

from flight_sw.config import load_mission_config
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc import sdls
from flight_sw.tmtc.cfdp_link import (
    CfdpReceiver,
    SlotFilestore,
    cfdp_apid,
    max_pdu_bytes,
    unwrap_pdu,
    wrap_pdu,
)
from flight_sw.tmtc.cltu import decode_cltu
from flight_sw.tmtc.tc_frames import PRIMARY_HEADER_LEN, decode_tc_frame
from ground_tools import cfdp_uplink
from ground_tools.cfdp_uplink import CfdpUplink, contacts_needed, play_contacts
from ground_tools.uplink import max_packet_bytes, mission_key_slot

from .conftest import DEFAULT

KIB64 = 64 * 1024


@pytest.fixture(scope="module")
def cfg():
    return load_mission_config(DEFAULT)


@pytest.fixture
def no_wall_clock(monkeypatch):
    """Any wall-clock read by spacepackets' Countdown fails the test: onboard (CfdpReceiver) and
    ground timers run on mission time only."""

    def refuse():
        raise AssertionError("a CFDP timer read the wall clock")

    monkeypatch.setattr("spacepackets.countdown.time_ms", refuse)


class LoggingReceiver(CfdpReceiver):
    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        self.packets_in: list[bytes] = []
        self.replies: list[bytes] = []

    def on_packet(self, packet, t_s):
        self.packets_in.append(bytes(packet))
        out = super().on_packet(packet, t_s)
        self.replies += out or []
        return out


def _file(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_64k_file_over_lossy_short_contacts_arrives_once(cfg, no_wall_clock):
    data = _file(7, KIB64)
    rx = LoggingReceiver(cfg)
    contact_s = 3.0  # a 64 KiB file needs about 10 s of uplink at 64 kbit/s
    n, src, rx, delivered = play_contacts(
        cfg, data, 0.10, np.random.default_rng(11), contact_s, cfg.tmtc.uplink_rate_bps, receiver=rx
    )
    assert n >= 4, "several contacts"
    assert delivered == [("upload.bin", data)]
    assert [r.ok for r in src.results] == [True]
    assert not rx.busy and not src.busy
    assert rx.counters.files == 1 and rx.counters.failed == 0
    # every PDU played again, late: nothing is delivered twice, nothing is reopened
    for i, packet in enumerate(list(rx.packets_in)):
        rx.on_packet(packet, 1e6 + i)
    assert rx.completed() == []
    assert not rx.busy and rx.counters.files == 1


def _pdu(src, packet, telecommand):
    return PduFactory.from_raw(unwrap_pdu(src.apid, packet, telecommand))


def test_timers_resume_at_next_pass(cfg, no_wall_clock):
    """The pass ends right after the EOF is acknowledged with data missing: the next pass's
    Prompt brings the NAK out, the retransmission completes the file."""
    data = _file(3, 20_000)
    rx = CfdpReceiver(cfg)
    src = CfdpUplink(cfg)
    src.put("f.bin", data, 0.0)
    t, dropped = 0.0, 0
    while src.src.states.step != SourceStep.WAITING_FOR_FINISHED:
        pdu = src.next_packet(t)
        t += 0.1
        if _pdu(src, pdu, True).pdu_type == PduType.FILE_DATA and dropped < 2:  # lose two
            dropped += 1
            continue
        for reply in rx.on_packet(pdu, t):
            if _pdu(src, reply, False).directive_type != DirectiveType.NAK_PDU:  # the pass ends
                src.on_packet(reply, t)
    assert dropped == 2 and src.next_packet(t) is None
    assert rx.state_dict()["step"] == "WAITING_FOR_MISSING_DATA" and rx.completed() == []
    t = 5400.0  # the next pass
    for _ in range(200):
        pdu = src.next_packet(t)
        t += 0.5
        if pdu is not None:
            for reply in rx.on_packet(pdu, t):
                src.on_packet(reply, t)
        if not src.busy:
            break
    assert rx.completed() == [("f.bin", data)]
    assert src.results[-1].ok


def test_file_larger_than_the_filestore_is_refused(cfg, no_wall_clock):
    rx = CfdpReceiver(cfg, slot_bytes=4096)
    n, src, rx, delivered = play_contacts(
        cfg,
        _file(1, 8192),
        0.0,
        np.random.default_rng(0),
        60.0,
        cfg.tmtc.uplink_rate_bps,
        receiver=rx,
    )
    assert delivered == []
    assert [r.condition for r in src.results] == [ConditionCode.FILESTORE_REJECTION]
    assert rx.counters.failed == 1 and not rx.busy
    assert rx.store.names == [None, None], "nothing left in the slots"
    # the receiver takes the next file that fits
    n, src, rx, delivered = play_contacts(
        cfg,
        _file(2, 4000),
        0.0,
        np.random.default_rng(0),
        60.0,
        cfg.tmtc.uplink_rate_bps,
        receiver=rx,
        first_seq=1,
    )
    assert delivered == [("upload.bin", _file(2, 4000))]


def test_filestore_is_one_fixed_region(cfg):
    rx = CfdpReceiver(cfg, slots=3)
    assert len(rx.store.region) == 3 * cfg.tmtc.max_upload_bytes
    store = SlotFilestore(1, 8)
    with pytest.raises(PermissionError, match="8-byte slot"):
        store.put("a.bin", bytes(9))
    with pytest.raises(PermissionError, match="plain name"):
        store.put("../etc/passwd", b"x")


def test_transfers_are_deterministic(cfg):
    def run():
        states = []
        rx = LoggingReceiver(cfg)
        play_contacts(
            cfg,
            _file(5, KIB64),
            0.2,
            np.random.default_rng(3),
            3.0,
            cfg.tmtc.uplink_rate_bps,
            receiver=rx,
            on_contact=lambda k, s, r: states.append(r.state_dict()),
        )
        return states, rx.replies

    assert run() == run()


def test_pdus_fit_one_tc_frame(cfg):
    assert max_pdu_bytes(cfg) == max_packet_bytes(cfg) - 8 == cfdp_uplink.max_pdu_bytes(cfg)
    key = mission_key_slot(cfg, "command")
    from ground_tools.uplink import Uplinker

    src = CfdpUplink(cfg, Uplinker(cfg, iv_salt=b"\0" * 4))
    src.put("f.bin", _file(0, 5000), 0.0)
    sizes = []
    while (packet := src.next_packet(0.0)) is not None:
        raw, _ = decode_cltu(src.cltu(packet))
        frame, _ = decode_tc_frame(
            raw, spacecraft_id=cfg.telemetry.spacecraft_id, virtual_channel_ids=frozenset((0,))
        )
        why, _, plain = sdls.unprotect(
            key.service, bytes.fromhex(key.key_hex), raw[:PRIMARY_HEADER_LEN], frame.data
        )
        assert why is None and plain == packet
        sizes.append(len(raw))
    assert max(sizes) == cfg.tmtc.max_frame_bytes - (
        sdls.overhead(sdls.AUTH_ENC) - sdls.overhead(key.service)
    )


def test_space_packet_wrapping(cfg):
    apid = cfdp_apid(cfg)
    packet = wrap_pdu(apid, b"\x20\x00\x05\x11abcdefgh", telecommand=True, seq_count=5)
    assert unwrap_pdu(apid, packet, telecommand=True) == b"\x20\x00\x05\x11abcdefgh"
    assert unwrap_pdu(apid, packet, telecommand=False) is None
    assert unwrap_pdu(apid + 1, packet, telecommand=True) is None
    assert unwrap_pdu(apid, packet[:-1] + bytes([packet[-1] ^ 1]), telecommand=True) is None
    assert CfdpReceiver(cfg).on_packet(b"\x18\x65\xc0\x00\x00\x01ab", 0.0) is None


_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(st.lists(st.binary(max_size=1100), max_size=8))
def test_garbage_never_crashes(cfg, blobs):
    rx = CfdpReceiver(cfg)
    for i, b in enumerate(blobs):
        out = rx.on_pdu(b, float(i))
        assert isinstance(out, list) and all(isinstance(x, bytes) for x in out)
        assert rx.on_packet(b, float(i)) is None or isinstance(rx.on_packet(b, float(i)), list)


def _valid_pdus(cfg):
    src = CfdpUplink(cfg)
    src.put("g.bin", _file(4, 3000), 0.0)
    out = []
    while (pdu := src.next_pdu(0.0)) is not None:
        out.append(pdu)
    return out


@_SETTINGS
@given(st.data())
def test_mutated_pdus_never_crash_and_a_clean_transfer_still_works(cfg, data):
    valid = _valid_pdus(cfg)
    rx = CfdpReceiver(cfg)
    for i in range(data.draw(st.integers(1, 6))):
        pdu = bytearray(valid[data.draw(st.integers(0, len(valid) - 1))])
        for _ in range(data.draw(st.integers(1, 4))):
            pdu[data.draw(st.integers(0, len(pdu) - 1))] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(pdu)))
        assert isinstance(rx.on_pdu(bytes(pdu[:cut]), float(i)), list)
    # a later transfer (next transaction number) still gets through
    rx.completed()
    n, src, rx, delivered = play_contacts(
        cfg,
        _file(9, 3000),
        0.0,
        np.random.default_rng(0),
        60.0,
        cfg.tmtc.uplink_rate_bps,
        receiver=rx,
        first_seq=1,
    )
    assert delivered == [("upload.bin", _file(9, 3000))]


def test_contacts_needed_figure(cfg):
    n = contacts_needed(cfg, KIB64, 0.10, np.random.default_rng(0), 480.0, cfg.tmtc.uplink_rate_bps)
    assert n == 1  # about 10 s of uplink against an 8-minute contact
    assert (
        contacts_needed(cfg, KIB64, 0.10, np.random.default_rng(0), 2.0, cfg.tmtc.uplink_rate_bps)
        > 5
    )


def _transfer_through_flight(bench, up, name: str, blob: bytes, seq: int, rng=None, loss: float = 0.0,
                             limit_s: float = 3000.0):
    """CFDP class 2 from the ground (a new transaction number `seq`) into a Bench's real flight
    software, in expedited SDLS frames, `loss` of the PDUs dropped each way; the ground source."""
    from ground_tools.cfdp_uplink import CfdpUplink

    ground = CfdpUplink(bench.cfg, up, first_seq=seq)
    ground.put(name, blob, 0.0)
    t = 0.0
    while ground.busy and t < limit_s:
        t += 1.0
        while (packet := ground.next_packet(t)) is not None:
            if not loss or rng.random() >= loss:
                bench.fsw.telecommand(ground.cltu(packet))
        start = len(bench.tm)
        bench.fsw.tc.run(t)
        for raw in bench.tm[start:]:
            if not loss or rng.random() >= loss:
                ground.on_packet(raw, t)
    return ground


def test_a_model_package_over_cfdp_is_staged_verified_activated_and_confirmed(default_cfg, image, no_wall_clock):
    """The whole path: the ground packs the signed package into one file, CFDP class 2 carries it
    in expedited SDLS frames through the real flight software (10% of PDUs lost each way), the
    handler stages it through the signed-manifest checks, and fn 6 / fn 7 activate and confirm.
    A package with a forged manifest signature arrives just as well and is refused."""
    import numpy as np

    from flight_sw.tmtc.upload import pack_package
    from ground_tools.uplink import Uplinker, package_model
    from tests.flight_sw.test_tmtc_helpers import Bench

    bench = Bench(default_cfg, image)
    up = Uplinker(default_cfg, iv_salt=bytes(4))
    rng = np.random.default_rng(4)

    def transfer(name, blob, seq):
        return _transfer_through_flight(bench, up, name, blob, seq, rng, loss=0.1)

    pkg = package_model(default_cfg, image.head * 0.98, version=7, parent_version=image.version,
                        security_counter=2, chunk_size=64)
    forged = pack_package(pkg.key_id, bytes(32), pkg.manifest_bytes, pkg.payload)
    transfer("forged.olpk", forged, 1)
    stages = [d.MODEL_UPLOAD_STAGES[s] for s, *_ in bench.events(d.EVENT_MODEL_UPLOAD, d.MODEL_UPLOAD_STRUCT)]
    assert stages == ["refused"] and bench.fsw.tc.nv.data["staging"] is None
    bench.clear()
    transfer("head_v7.olpk", pack_package(pkg.key_id, pkg.signature, pkg.manifest_bytes, pkg.payload), 2)
    stages = [d.MODEL_UPLOAD_STAGES[s] for s, *_ in bench.events(d.EVENT_MODEL_UPLOAD, d.MODEL_UPLOAD_STRUCT)]
    assert stages == ["verified"]
    bench.send(up.activate(), up.confirm())
    assert bench.fsw.learner.version == 7 and bench.fsw.tc.nv.data["sc"] == 2


def test_a_flight_reboot_mid_transfer_loses_nothing_the_ground_cannot_resend(default_cfg, image, no_wall_clock):
    """The CFDP destination's state is in RAM. A reboot after the Metadata and the first file
    data arrived forgets them; the new receiver hears file data of a transaction it does not
    know, asks for the Metadata (a NAK), and class 2 resends what is missing: the package is
    verified all the same, once."""
    import numpy as np

    from flight_sw.tmtc.upload import pack_package
    from ground_tools.cfdp_uplink import CfdpUplink
    from ground_tools.uplink import Uplinker, package_model
    from tests.flight_sw.test_tmtc_helpers import Bench

    bench = Bench(default_cfg, image)
    up = Uplinker(default_cfg, iv_salt=bytes(4))
    pkg = package_model(default_cfg, image.head * 0.98, version=7, parent_version=image.version,
                        security_counter=2, chunk_size=64)
    ground = CfdpUplink(default_cfg, up, first_seq=1)
    ground.put("head_v7.olpk", pack_package(pkg.key_id, pkg.signature, pkg.manifest_bytes, pkg.payload), 0.0)
    rng = np.random.default_rng(8)
    t, sent_before_reboot = 0.0, []
    while ground.busy and t < 3000.0:
        t += 1.0
        while (packet := ground.next_packet(t)) is not None:
            if t == 1.0:
                sent_before_reboot.append(packet)
                if len(sent_before_reboot) <= 2:  # the rest of this second (the EOF) is lost on the link
                    bench.fsw.telecommand(ground.cltu(packet))
            elif rng.random() >= 0.1:
                bench.fsw.telecommand(ground.cltu(packet))
        start = len(bench.tm)
        bench.fsw.tc.run(t)
        if t == 1.0:
            assert not bench.events(d.EVENT_MODEL_UPLOAD, d.MODEL_UPLOAD_STRUCT)  # nothing complete yet
            bench.boot()  # the flight computer resets: the CFDP state is gone
            continue
        for raw in bench.tm[start:]:
            if rng.random() >= 0.1:
                ground.on_packet(raw, t)
    assert len(sent_before_reboot) > 2  # the Metadata and file data that arrived were lost with the reboot
    stages = [d.MODEL_UPLOAD_STAGES[s] for s, *_ in bench.events(d.EVENT_MODEL_UPLOAD, d.MODEL_UPLOAD_STRUCT)]
    assert stages.count("verified") == 1 and "refused" not in stages
    assert not ground.busy


def test_a_parameter_table_over_cfdp_is_staged_then_activated_by_command(default_cfg, image, no_wall_clock):
    """A config table as a file: CFDP class 2 carries it (10% of PDUs lost each way) through the
    real flight software, the handler checks and stages it as a 20,3 load would (event
    PARAMS_STAGED), and FN_PARAM_ACTIVATE makes it fly. A table with a value out of bounds
    arrives as well and is refused, naming the failure; nothing changes."""
    import numpy as np

    from ground_tools.uplink import Uplinker
    from tests.flight_sw.test_tmtc_helpers import Bench

    bench = Bench(default_cfg, image)
    up = Uplinker(default_cfg, iv_salt=bytes(4))
    rng = np.random.default_rng(6)

    def transfer(name, blob, seq):
        assert not _transfer_through_flight(bench, up, name, blob, seq, rng, loss=0.1).busy

    margin = default_cfg.power.budget.margin_j
    transfer("bad.params", Uplinker.param_table_file({1: -5.0}), 1)
    assert bench.events(d.EVENT_PARAMS_STAGED, d.PARAMS_STAGED_STRUCT) == [
        (1, d.TC_FAILURES.index("param_out_of_bounds"), 0)]
    bench.clear()
    transfer("margin.params", Uplinker.param_table_file({1: margin + 250.0, 3: 0.2}), 2)
    assert bench.events(d.EVENT_PARAMS_STAGED, d.PARAMS_STAGED_STRUCT) == [(0, 0, 2)]
    assert bench.fsw.budget._margin_j == margin  # staged, not active
    bench.send(up.param_activate())
    assert bench.fsw.budget._margin_j == margin + 250.0 and bench.fsw.power.eclipse_soc_margin == 0.2


def test_a_calibration_table_over_cfdp_is_judged_by_the_onboard_gate(default_cfg, image, no_wall_clock):
    """A radiometric calibration table as a file: delivered by CFDP, it becomes the candidate of
    the onboard gate (bounds, significance, held-back labels), is committed with reason
    ground_command, and can be rolled back to the table before, bit for bit. A table outside the
    gain bounds is refused by the same gate."""
    import numpy as np

    from flight_sw.ml.radiometry import CAL_UNAVAILABLE
    from ground_tools.uplink import Uplinker
    from tests.flight_sw.test_tmtc_helpers import Bench

    bench = Bench(default_cfg, image)
    fsw = bench.fsw
    fsw.learning.payload.acquire_calibration = lambda kind, first, out: CAL_UNAVAILABLE  # no diffuser now
    up = Uplinker(default_cfg, iv_salt=bytes(4))
    cal = fsw.calibration
    before_gain = cal.gain_q[cal.active].copy()

    def transfer(blob, seq):
        assert not _transfer_through_flight(bench, up, "cal.table", blob, seq, limit_s=600.0).busy

    def judge():
        for k in range(3):
            fsw.learning.task_calibration(1000.0 + k)
        return bench.events(d.EVENT_CALIBRATION_UPDATE, d.CALIBRATION_UPDATE_STRUCT)

    shape = cal.gain_q[0].shape
    gain = np.full(shape, int(0.05 * 16384), np.int16)  # +5 % gain in every column and band
    transfer(Uplinker.calibration_table_file(gain, np.zeros(shape, np.int16)), 1)
    assert bench.events(d.EVENT_CALIBRATION_FILE, d.CALIBRATION_FILE_STRUCT) == [(1, *shape)]
    outcome, version, reason, *_ = judge()[-1]
    assert (d.CALIBRATION_OUTCOMES[outcome], d.CALIBRATION_REASONS[reason]) == ("committed", "ground_command")
    assert cal.version == version and np.array_equal(cal.gain_q[cal.active], gain)
    assert fsw.rollback_calibration(2000.0) and np.array_equal(cal.gain_q[cal.active], before_gain)
    bench.clear()
    wild = np.full(shape, int(1.5 * 16384), np.int16)  # gain 2.5: outside the gate's bounds
    transfer(Uplinker.calibration_table_file(wild, np.zeros(shape, np.int16)), 2)
    outcome, _, _, refusal, *_ = judge()[-1]
    assert (d.CALIBRATION_OUTCOMES[outcome], d.CALIBRATION_REFUSALS[refusal]) == ("refused", "out_of_range")
    assert np.array_equal(cal.gain_q[cal.active], before_gain)
