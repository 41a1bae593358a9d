"""Transports end to end: serial over a pty pair, TCP on loopback, the fault proxy, URL parsing."""

import os
import sys

import numpy as np
import pytest

from flight_sw.devices import driver as dv
from flight_sw.devices.driver import AnalogDriver, DriverConfig
from flight_sw.devices.transport import (
    InProcessTransport,
    SerialTransport,
    TcpTransport,
    TransportError,
    check_device_url,
    transport_from_url,
)
from sim.analog import DeviceEndpoint, DeviceParams
from sim.analog.problems import random_spd
from sim.hil import FaultProxy, PtyDeviceServer, TcpDeviceServer

N, M = 33, 6


def problems(k, seed=0):
    rng = np.random.default_rng(seed)
    return [(random_spd(rng, N, 4.0), rng.standard_normal((N, M))) for _ in range(k)]


def run(drv, probs):
    for q, b in probs:
        x, r = drv.solve(q, b)
        assert r.ok and np.linalg.norm(q @ x - b) / np.linalg.norm(b) <= 1e-6
    return drv.stats


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty pair")
def test_serial_over_a_pty_pair_end_to_end():
    ep = DeviceEndpoint(DeviceParams(), 1)
    with PtyDeviceServer(ep) as srv:
        assert srv.url.startswith("serial:///dev/")
        t = transport_from_url(srv.url)
        assert isinstance(t, SerialTransport)
        drv = AnalogDriver(N, M, t, DriverConfig(reply_timeout_s=1.0))
        st = run(drv, problems(4))
        t.close()
    assert st.analog_accepted == 4 and st.timeouts == 0 and st.frames_rejected == 0
    assert srv.bytes_in > 4 * 4000 and srv.bytes_out > 0


def test_tcp_end_to_end_on_loopback():
    ep = DeviceEndpoint(DeviceParams(), 2)
    with TcpDeviceServer(ep, "127.0.0.1", 0) as srv:
        assert srv.host == "127.0.0.1" and srv.port > 0
        t = transport_from_url(srv.url)
        assert isinstance(t, TcpTransport)
        drv = AnalogDriver(N, M, t, DriverConfig(reply_timeout_s=2.0))
        st = run(drv, problems(4, seed=1))
        t.close()
    assert st.analog_accepted == 4 and st.transport_errors == 0


def test_tcp_through_the_fault_proxy_stays_correct():
    ep = DeviceEndpoint(DeviceParams(), 3)
    with TcpDeviceServer(ep) as srv, FaultProxy(srv.host, srv.port, corrupt=0.2, drop=0.05, seed=4) as proxy:
        t = transport_from_url(proxy.url)
        drv = AnalogDriver(N, M, t, DriverConfig(reply_timeout_s=0.1, max_retries=4))
        st = run(drv, problems(6, seed=2))  # run() asserts every answer is right
        t.close()
    assert proxy.corrupted + proxy.dropped > 0
    assert st.frames_rejected + st.timeouts + st.stale_replies > 0


def test_tcp_server_gone_mid_run_falls_back_then_reconnects():
    ep = DeviceEndpoint(DeviceParams(), 5)
    srv = TcpDeviceServer(ep).start()
    port = srv.port
    t = TcpTransport("127.0.0.1", port, connect_timeout_s=0.5)
    drv = AnalogDriver(N, M, t, DriverConfig(reply_timeout_s=0.2, degrade_after=1, fail_after=2, selftest_period_solves=1))
    probs = problems(3, seed=3)
    run(drv, probs[:1])
    srv.stop()
    run(drv, probs[1:])  # fallback answers
    assert drv.stats.transport_errors >= 1 and drv.stats.fallbacks >= 1
    assert drv.health != dv.HEALTH_OK
    t.close()


def test_transport_urls():
    assert isinstance(transport_from_url("tcp://127.0.0.1:5000"), TcpTransport)
    s = transport_from_url("serial:///dev/ttyUSB0?baud=921600")
    assert isinstance(s, SerialTransport) and s.port == "/dev/ttyUSB0" and s.baudrate == 921600
    ep = DeviceEndpoint(DeviceParams(), 0)
    assert isinstance(transport_from_url("inproc://", ep), InProcessTransport)
    for bad in ("tcp://host", "udp://x:1", "serial://", "inproc://"):
        with pytest.raises(ValueError):
            transport_from_url(bad)
    assert check_device_url("tcp://127.0.0.1:1") is None
    assert check_device_url("tcp://127.0.0.1") and check_device_url("ftp://x")
    with pytest.raises(TransportError):
        TcpTransport("127.0.0.1", 1, connect_timeout_s=0.2).send(b"x")


def test_serial_open_failure_is_a_transport_error(tmp_path):
    t = SerialTransport(str(tmp_path / "no-such-tty"))
    with pytest.raises(TransportError):
        t.send(b"x")
    assert not os.path.exists(tmp_path / "no-such-tty")
