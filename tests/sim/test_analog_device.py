"""The analog device emulator: physics (settling, drift, noise, quantisation, energy) and faults."""

import dataclasses

import numpy as np
import pytest

from flight_sw.devices import protocol as p
from sim.analog import FAULT_KINDS, DeviceEndpoint, DeviceParams
from sim.analog.physics import AnalogArray
from sim.analog.problems import random_spd

RNG = np.random.default_rng


def programmed(q, params=None, seed=0):
    a = AnalogArray(params or DeviceParams(n_max=256), RNG(seed))
    a.program(q / np.max(np.abs(q)))
    return a


def settle(a, u, out_range=50.0, timeout=1.0):
    return a.settle(u, np.full(u.shape[1], out_range), timeout)


def test_settling_time_follows_one_over_lambda_min_not_size():
    times = {}
    for n in (8, 64, 200):
        for lam_min in (0.5, 0.05):
            q = np.eye(n) * 1.0
            q[0, 0] = lam_min  # normalised: max |q| = 1, smallest eigenvalue lam_min
            u = np.zeros((n, 1))
            u[0, 0] = lam_min  # solution x_0 = 1 along the slow mode
            out = settle(programmed(q, dataclasses.replace(DeviceParams(n_max=256), program_noise=0.0, read_noise=0.0)), u)
            assert out.settled
            times[(n, lam_min)] = out.settle_time_s
    for n in (8, 64, 200):
        assert times[(n, 0.05)] / times[(n, 0.5)] == pytest.approx(10.0, rel=0.15)
    assert times[(200, 0.05)] / times[(8, 0.05)] == pytest.approx(1.0, rel=0.1)


def test_settle_timeout_and_transient_output():
    q = np.eye(4)
    q[0, 0] = 1e-3
    a = programmed(q, dataclasses.replace(DeviceParams(), program_noise=0.0, read_noise=0.0))
    u = np.zeros((4, 1))
    u[0, 0] = 2e-3  # x_0 = 2, reached after ~tau/1e-3 ln(2/half-LSB) ~ 8 ms
    out = a.settle(u, np.array([4.0]), 1e-4)
    assert not out.settled and out.settle_time_s == pytest.approx(1e-4)
    assert out.y[0, 0] == pytest.approx(2.0 * (1.0 - np.exp(-0.1)), abs=0.05)  # still on its way to 2
    done = a.settle(u, np.array([4.0]), 0.1)
    assert done.settled and done.y[0, 0] == pytest.approx(2.0, abs=0.05)


def test_indefinite_matrix_saturates_at_the_rails():
    q = np.diag([1.0, 0.5, -0.2])
    out = settle(programmed(q), np.ones((3, 2)) * 0.1, out_range=3.0)
    assert out.saturated > 0
    assert np.all(np.abs(out.y) <= 3.0)


def test_outputs_beyond_the_range_clip():
    q = np.eye(3) * 0.1
    q[0, 0] = 1.0
    out = settle(programmed(q), np.ones((3, 1)), out_range=2.0)  # x = 10 on two outputs
    assert out.saturated == 2 and np.max(np.abs(out.y)) <= 2.0


def test_accuracy_improves_with_bits_and_averaging():
    rng = RNG(1)
    q = random_spd(rng, 33, 3.0)
    qn = q / np.max(np.abs(q))
    u = rng.uniform(-1, 1, (33, 4))
    x = np.linalg.solve(qn, u)

    def err(**kw):
        a = programmed(q, dataclasses.replace(DeviceParams(), **kw), seed=2)
        y = a.settle(u, 1.5 * np.max(np.abs(x), axis=0), 1.0).y
        return np.linalg.norm(y - x) / np.linalg.norm(x)

    coarse = err(dac_bits=4, input_bits=4, adc_bits=4, program_slices=1)
    default = err()
    ideal = err(program_noise=0.0, read_noise=0.0, output_noise=0.0, dac_bits=16, input_bits=16, adc_bits=16)
    assert coarse > default > ideal
    assert ideal < 1e-3 and default < 0.05 and coarse > 0.05


def test_compensation_slices_reduce_the_static_error():
    rng = RNG(3)
    q = random_spd(rng, 33, 3.0)
    qn = q / np.max(np.abs(q))
    errs = []
    for s in (1, 2, 3):
        a = programmed(q, dataclasses.replace(DeviceParams(), program_slices=s), seed=4)
        errs.append(np.max(np.abs(a.effective_matrix() - qn)))
    assert errs[0] > 3 * errs[1] and errs[1] >= errs[2] * 0.5
    assert errs[0] > 0.02 and errs[1] < 0.01


def test_power_law_drift_and_reference_calibration():
    a = programmed(np.eye(5) * 0.5, dataclasses.replace(DeviceParams(), drift_nu=0.05, drift_nu_std=0.0))
    g0 = a.effective_matrix()[0, 0]
    a.time_s += 5700.0
    expected = (5700.0 / 20.0) ** -0.05  # ~0.75 after one 95-minute orbit
    assert a.effective_matrix()[0, 0] / g0 == pytest.approx(expected, rel=1e-3)
    gain, age, t, e = a.calibrate()
    assert gain == pytest.approx(expected, rel=0.01) and age == pytest.approx(5700.0, rel=1e-6)
    a.refresh_reference()
    gain2, age2, _, _ = a.calibrate()
    assert gain2 == pytest.approx(1.0, abs=0.01) and age2 < 1.0
    assert 0.7 < expected < 0.8


def test_energy_and_time_are_reported():
    a = programmed(random_spd(RNG(5), 33, 3.0))
    out = settle(a, RNG(6).uniform(-1, 1, (33, 6)))
    assert out.energy_j > 0 and out.time_s > out.settle_time_s > 0
    assert 1e-7 < out.energy_j < 1e-3


def test_same_seed_same_device():
    q = random_spd(RNG(7), 20, 3.0)
    u = RNG(8).uniform(-1, 1, (20, 2))
    y1 = settle(programmed(q, seed=9), u).y
    y2 = settle(programmed(q, seed=9), u).y
    y3 = settle(programmed(q, seed=10), u).y
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)


# -- the endpoint (byte protocol) and its faults --------------------------------------------
def command(ep, code, payload=b"", seq=1):
    out = p.FrameDecoder().feed(ep.handle(p.encode_frame(code, seq, payload)))
    return out[0] if out else None


def program_and_solve(ep, q, seq=1):
    qn = q / np.max(np.abs(q))
    n = q.shape[0]
    r = command(ep, p.CMD_PROGRAM, p.pack_program(n, 0, qn), seq)
    u = np.ones((n, 2)) * 0.5
    s = command(ep, p.CMD_SOLVE, p.pack_solve(u, 8.0, 0.01), seq + 1)
    return r, s


def test_endpoint_protocol_basics():
    ep = DeviceEndpoint(DeviceParams(), 1)
    info = p.unpack_ping_response(command(ep, p.CMD_PING).payload)
    assert info.n_max == 64 and info.version == p.PROTOCOL_VERSION
    s = command(ep, p.CMD_SOLVE, p.pack_solve(np.zeros((3, 1)), 1.0, 0.01))
    assert s.status == p.STATUS_NOT_PROGRAMMED
    q = random_spd(RNG(1), 10, 3.0)
    r, s = program_and_solve(ep, q)
    assert r.status == p.STATUS_OK and s.status == p.STATUS_OK and s.seq == 2
    res = p.unpack_program_response(r.payload)
    assert p.unpack_solve_response(s.payload).codes_crc == res.codes_crc
    big = command(ep, p.CMD_SOLVE, p.pack_solve(np.zeros((65, 1)), 1.0, 0.01))
    assert big.status == p.STATUS_TOO_LARGE
    assert command(ep, p.CMD_CALIBRATE, b"\x00").status == p.STATUS_BAD_PAYLOAD
    # a corrupted command is dropped silently, and counted
    raw = bytearray(p.encode_frame(p.CMD_PING, 5))
    raw[-1] ^= 0xFF
    assert ep.handle(bytes(raw)) == b"" and ep.frames_dropped == 1


def test_program_in_row_blocks():
    ep = DeviceEndpoint(DeviceParams(), 2)
    q = random_spd(RNG(2), 12, 3.0)
    qn = q / np.max(np.abs(q))
    first = command(ep, p.CMD_PROGRAM, p.pack_program(12, 0, qn[:5]))
    assert first.status == p.STATUS_ACK_PARTIAL
    out_of_order = command(ep, p.CMD_PROGRAM, p.pack_program(12, 7, qn[7:]))
    assert out_of_order.status == p.STATUS_BAD_PAYLOAD
    command(ep, p.CMD_PROGRAM, p.pack_program(12, 0, qn[:5]))
    last = command(ep, p.CMD_PROGRAM, p.pack_program(12, 5, qn[5:]))
    assert last.status == p.STATUS_OK and p.unpack_program_response(last.payload).rows_received == 12


@pytest.mark.parametrize("kind", [k for k in FAULT_KINDS if k != "stuck"])
def test_each_fault_kind_shows_on_the_wire(kind):
    ep = DeviceEndpoint(DeviceParams(), 3)
    q = random_spd(RNG(3), 10, 3.0)
    r, s = program_and_solve(ep, q)
    clean = p.unpack_solve_response(s.payload)
    ep.faults.arm(kind)
    raw = ep.handle(p.encode_frame(p.CMD_SOLVE, 9, p.pack_solve(np.ones((10, 2)) * 0.5, 8.0, 0.01)))
    items = p.FrameDecoder().feed(raw)
    frames = [i for i in items if isinstance(i, p.Frame)]
    assert ep.faults.triggered[kind] == 1
    if kind in ("dead", "brownout"):
        assert raw == b""
        if kind == "brownout":
            again = command(ep, p.CMD_PING, seq=10)
            assert again.flags & p.FLAG_RESET and not again.flags & p.FLAG_PROGRAMMED and ep.boot_count == 1
        return
    if kind == "corrupt":
        assert not frames and items  # rejected by the host's decoder
        return
    (f,) = frames
    res = p.unpack_solve_response(f.payload)
    if kind in ("slow_settle", "no_settle"):
        assert f.status == p.STATUS_SETTLE_TIMEOUT
    elif kind == "saturate":
        assert f.status == p.STATUS_SATURATED and res.saturated > 0
    elif kind == "seu":
        assert res.codes_crc != clean.codes_crc
    elif kind == "wrong_output":
        assert f.status == p.STATUS_OK and not np.allclose(res.y, clean.y, rtol=0.2, atol=0.05)


def test_stuck_cells_fail_write_verify():
    ep = DeviceEndpoint(DeviceParams(), 4)
    ep.stuck_cells(2, n=10, value=-1.0)
    r, _ = program_and_solve(ep, random_spd(RNG(4), 10, 3.0))
    assert r.status == p.STATUS_VERIFY_FAIL and p.unpack_program_response(r.payload).failed_cells >= 1
    assert ep.faults.triggered["stuck"] == 1
    ep.clear_stuck()
    r, _ = program_and_solve(ep, random_spd(RNG(4), 10, 3.0), seq=5)
    assert r.status == p.STATUS_OK


def test_random_fault_rates_from_config(default_cfg_device):
    dev = dataclasses.replace(default_cfg_device, fault_corrupt_rate=1.0, fault_stuck_cells=3)
    ep = DeviceEndpoint.from_config(dev, 5)
    assert np.count_nonzero(~np.isnan(ep.array.stuck)) >= 3
    raw = ep.handle(p.encode_frame(p.CMD_PING, 1))
    assert not [f for f in p.FrameDecoder().feed(raw) if isinstance(f, p.Frame)]


@pytest.fixture
def default_cfg_device():
    from pathlib import Path

    from flight_sw.config import load_mission_config

    return load_mission_config(Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml").device
