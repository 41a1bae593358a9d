"""A FAILED analog device that comes back returns to service (issue 16, item 4).

The real flight software and the real driver, against the device emulator served over TCP
(`flightsim hil serve`'s server in-process), killed mid-run and restarted on the same port
(`sim/hil/recovery.py`).
"""

from __future__ import annotations

import numpy as np
import pytest

from flight_sw.tmtc import dictionary as d
from ground_tools.decode import packet_stream, split_packets
from sim.hil.recovery import SitePayload, run_device_restart
from tests.flight_sw.conftest import DEFAULT


@pytest.fixture(scope="module")
def default_cfg():
    from flight_sw.config import load_mission_config

    return load_mission_config(DEFAULT)


@pytest.fixture(scope="module")
def image(default_cfg):
    from sim.prelaunch import train_prelaunch_model

    return train_prelaunch_model(default_cfg, np.random.default_rng(1))


def test_a_device_server_killed_and_restarted_returns_to_service_and_training_resumes(default_cfg, image):
    r = run_device_restart(default_cfg, image, dead_checks=3)
    fsw = r.fsw
    # Dead for a while: three checks (60, 120, 240 s apart) failed and FDIR held NOMINAL.
    assert r.checks_while_dead == 3 and fsw.device_recoveries == 1
    # Back: the next check passed, FDIR returned to TRAINING, and a solve was served by the device.
    assert fsw.mode == "TRAINING"
    assert 0 < r.recovery_s <= fsw.cfg.fdir.device_check_max_s + 120.0
    reasons = [d.MODE_REASONS[e[2]] for e in _mode_events(split_packets(packet_stream(b"".join(r.cadus), default_cfg))[0])]
    assert reasons[-2:] == ["device_failure", "device_recovered"]
    assert fsw.solver.stats.transport_errors > 0


def test_a_healthy_or_digital_optimizer_is_never_checked(default_cfg, image):
    from flight_sw.app import FlightSoftware

    payload = SitePayload(default_cfg)
    fsw = FlightSoftware(default_cfg.with_optimizer("digital"), image, payload, lambda p: None,
                         reference=payload.reference)
    task = next(s.index for s in fsw.specs if s.kind == "device_health")
    for tick in range(0, 600):
        fsw.step(tick)
    assert fsw.device_checks == 0 and fsw.task_runs[task] == 0 and fsw.task_energy_j[task] == 0.0


def _mode_events(packets):
    from spacepackets.ecss import PusTm

    out = []
    for raw in packets:
        p = PusTm.unpack(raw, timestamp_len=7)
        data = bytes(p.source_data)
        if p.service == d.PUS_SERVICE_EVENT and d.EVENT_ID_STRUCT.unpack_from(data)[0] == d.EVENT_MODE_CHANGE:
            out.append(data[2:])
    return out


def test_an_unreachable_device_at_start_up_is_a_warning_and_the_run_goes_on(tmp_path):
    """`flightsim run --device tcp://...` with nothing listening: a warning naming the URL on
    stderr and in the summary, and the run completes on the digital fallback."""
    import json
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free port, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(DEFAULT), "--days", "0.05", "--device", url,
                        "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"warning: device {url}: unreachable at start-up" in r.stderr and "Traceback" not in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device_warning"].startswith(f"warning: device {url}: unreachable")
    assert summary["solves_analog"] == 0 and summary["solves_fallback"] >= 1
    assert summary["device_recoveries"] == 0
