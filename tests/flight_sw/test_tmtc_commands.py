"""PUS services through the authenticated path: service 1 for every TC, 17 ping, functions, parameters."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from fastcrc import crc16
from spacepackets.ecss import PusTc

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.cltu import decode_cltu
from tests.flight_sw.test_tmtc_helpers import Bench, packet_of, uplinker


@pytest.fixture
def bench(default_cfg, image):
    return Bench(default_cfg, image)


def test_golden_ping_tc_bytes_and_frame_layout(default_cfg):
    """The PUS-C ping TC against bytes derived by hand from the standard and the library's CRC."""
    raw = PusTc(service=17, message_subtype=1, apid=0x65, seq_count=5).pack()
    # 0x1865: version 0, TC, secondary header, APID 0x065; 0xC005: unsegmented, seq 5; length 6;
    # 0x2F: PUS-C, all acks; service 17, subtype 1; source id 0; CRC-16/CCITT-FALSE.
    assert raw[:-2] == bytes.fromhex("1865c00500062f1101 0000".replace(" ", ""))
    assert raw[-2:] == crc16.ibm_3740(bytes(raw[:-2])).to_bytes(2, "big") == bytes.fromhex("b881")
    up = uplinker(default_cfg)
    up.pus_seq = 5
    frame, _ = decode_cltu(up.ping())
    # TC primary header (232.0-B 4.1.2): version 00, bypass 1 (Type-BD), control 0, spare 00,
    # SCID 0x1AB | VCID 0, length 5 + 10 (security header) + 13 + 16 (MAC) + 2 (FECF) - 1 = 45,
    # frame sequence number 0.
    header = bytes.fromhex("21ab002d00")
    assert frame[:5] == header and len(frame) == 46
    # SDLS security header (355.0-B 4.1.1): SPI 1, ARSN 1; then the packet; then the 128-bit MAC
    # (HMAC-SHA-256 truncated, 352.0-B) over primary header, security header and packet.
    sec = bytes.fromhex("0001" "0000000000000001")
    assert frame[5:15] == sec and frame[15:28] == raw
    key = bytes.fromhex(default_cfg.tmtc.keys[0].key_hex)
    assert frame[28:44] == hmac.new(key, header + sec + raw, hashlib.sha256).digest()[:16]
    assert frame[44:] == crc16.ibm_3740(frame[:44]).to_bytes(2, "big")  # FECF, 232.0-B 4.1.4.2


def test_every_tc_gets_service1_reports_and_ping_answers(bench, default_cfg):
    up = uplinker(default_cfg)
    assert {p.service for p in bench.packets()} == {5}  # what the boot reported (boot, mode)
    bench.clear()
    bench.send(up.ping())
    pk = bench.packets()
    assert [(p.service, p.message_subtype) for p in pk] == [(1, 1), (1, 3), (17, 2), (1, 7)]
    tc = PusTc.unpack(packet_of(up.ping()))
    assert bytes(pk[0].source_data)[:2] == tc.pack()[:2]  # request id: packet id of the TC


def test_unknown_command_and_wrong_apid_fail_acceptance(bench, default_cfg):
    up = uplinker(default_cfg)
    bench.send(up.frame(42, 7))
    up.apid = 5
    bench.send(up.ping())
    assert bench.verification() == [(2, "unknown_command", "service 42,7"), (2, "apid_mismatch", "apid 5 != 101")]


def test_mode_command_reaches_the_mode_manager(bench, default_cfg):
    up = uplinker(default_cfg)
    bench.send(up.mode("NOMINAL"))
    assert bench.fsw.mode == "NOMINAL"
    bench.send(up.function(d.FN_MODE, b"\x09"))
    assert bench.verification()[-1][:2] == (8, "bad_arguments")


def test_tle_upload_good_and_bad(bench, default_cfg):
    up = uplinker(default_cfg)
    bench.fsw.step(0)  # the first orbit opens at the first power_monitor run
    l1, l2 = default_cfg.orbit.tle_line1, default_cfg.orbit.tle_line2
    bench.send(up.load_tle(l1, l2))
    assert bench.verification()[-1] == (7, None, None)
    bad = l2[:-1] + str((int(l2[-1]) + 1) % 10)
    bench.send(up.load_tle(l1, bad))
    assert bench.verification()[-1][:2] == (8, "bad_tle")
    assert bench.fsw.tle.line2 == l2  # the old TLE keeps flying


def test_task_disable_and_enable_by_command(bench, default_cfg):
    up = uplinker(default_cfg)
    idx = next(s.index for s in bench.fsw.specs if s.name == "extra_inference")
    bench.send(up.task(idx, enable=False))
    assert bench.fsw.task_disabled[idx]
    bench.send(up.task(idx, enable=True))
    assert not bench.fsw.task_disabled[idx]
    tc_idx = next(s.index for s in bench.fsw.specs if s.kind == "tc_handler")
    bench.send(up.task(tc_idx, enable=False), up.task(200, enable=False))
    assert [v[1] for v in bench.verification() if v[0] == 8] == ["unknown_task", "unknown_task"]


def test_model_rollback_by_command(bench, default_cfg):
    lrn = bench.fsw.learner
    lrn.slot_versions[1] = 99
    up = uplinker(default_cfg)
    bench.send(up.rollback())
    assert lrn.active == 1 and lrn.version == 99 and lrn.rollbacks == 1


def test_tc_handler_task_runs_queued_frames_in_the_executive(bench, default_cfg):
    up = uplinker(default_cfg)
    fsw = bench.fsw
    fsw.telecommand(up.ping())
    idx = next(s.index for s in fsw.specs if s.kind == "tc_handler")
    for tick in range(0, 11):
        fsw.step(tick)
    assert fsw.tc.accepted == 1 and fsw.task_runs[idx] == 1  # ran once, idle (not counted) at tick 10


def test_queue_overflow_is_counted_and_reported(bench, default_cfg):
    up = uplinker(default_cfg)
    for _ in range(default_cfg.tmtc.tc_queue_frames + 3):
        bench.fsw.telecommand(up.ping())
    assert [r[0] for r in bench.rejections()] == ["queue_full"] * 3


# -- parameter tables (config upload) --------------------------------------------------------
def test_param_load_validate_activate(bench, default_cfg):
    up = uplinker(default_cfg)
    fsw = bench.fsw
    bench.send(up.param_load({1: 2500.0, 2: 0.0, 4: 7.5}))
    assert fsw.power.eclipse_policy == default_cfg.power.budget.eclipse_policy  # staged, not active yet
    bench.send(up.param_activate())
    assert fsw.budget._margin_j == 2500.0 and fsw.power.eclipse_policy == "never"
    assert fsw.learner.drift_free.threshold == 7.5
    assert bench.verification()[-1] == (7, None, None)
    bench.boot()  # the active table survives a reboot
    assert bench.fsw.budget._margin_j == 2500.0 and bench.fsw.power.eclipse_policy == "never"


def test_refused_param_names_parameter_and_bound_and_changes_nothing(bench, default_cfg):
    up = uplinker(default_cfg)
    bench.send(up.param_load({1: 100.0}), up.param_activate())
    bench.send(up.param_load({1: 3000.0, 3: 1.5}))
    sub, code, text = bench.verification()[-1]
    assert (sub, code) == (8, "param_out_of_bounds")
    assert text == "power.budget.eclipse_soc_margin=1.5 outside [0, 1]"
    bench.send(up.param_activate())
    assert bench.verification()[-1][1] == "param_none_staged"
    assert bench.fsw.budget._margin_j == 100.0  # the active table is untouched
    bench.send(up.param_load({2: 1.5}), up.frame(d.PUS_SERVICE_PARAMS, 3, b"\x01" + struct.pack(">Hd", 77, 1.0)))
    fails = [v[1] for v in bench.verification() if v[0] == 8]
    assert fails[-2:] == ["param_out_of_bounds", "param_unknown"]  # 1.5 is not a policy index


def test_calibration_commands_roll_back_and_ask(bench, default_cfg):
    """Operators can put the previous calibration table back (bit-identical) and ask for a new one."""
    up = uplinker(default_cfg)
    fsw = bench.fsw
    cal = fsw.calibration
    cal.gain_q[1 - cal.active] = 123  # a committed table in the other slot...
    cal.slot_versions[1 - cal.active] = 4
    previous = cal.gain_q[1 - cal.active].tobytes()
    bench.send(up.calibration_rollback())
    assert cal.version == 4 and cal.gain_q[cal.active].tobytes() == previous and cal.rollbacks == 1
    cal.requested = False
    bench.send(up.calibration_request())
    assert cal.requested and cal.request_reason == d.CALIBRATION_REASONS.index("ground_command")
    bench.send(up.function(d.FN_CAL_REQUEST, b"\x01"))
    assert bench.verification()[-1][:2] == (8, "bad_arguments")
    cal.slot_versions[1 - cal.active] = -1  # a diffuser sweep is overwriting the previous table
    bench.send(up.calibration_rollback())
    assert bench.verification()[-1][:2] == (8, "calibration_no_previous") and cal.version == 4


def test_noise_without_a_cltu_start_sequence_takes_no_queue_slot(bench, default_cfg):
    """The receiver checks a CLTU before it takes a queue slot: noise is refused (bad_cltu) at once,
    so a burst of it never fills the queue ahead of a real command."""
    import numpy as np

    rng = np.random.default_rng(5)
    up = uplinker(default_cfg)
    noise = [b"\x00" + rng.bytes(100) for _ in range(3 * default_cfg.tmtc.tc_queue_frames)]
    for junk in noise:
        bench.fsw.telecommand(junk)
    bench.fsw.telecommand(up.ping())
    assert len(bench.fsw.tc.queue) == 1
    assert {r[0] for r in bench.rejections()} == {"bad_cltu"}
    bench.fsw.tc.run(0.0)
    assert bench.fsw.tc.accepted == 1
