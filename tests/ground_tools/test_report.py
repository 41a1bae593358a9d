"""`groundtools report`: every section is a non-empty plot or says in words why it has none."""

import base64
import re

from flight_sw.tmtc import dictionary as d
from ground_tools.archive import default_db

from .helpers import cli, cli_subprocess

#: Plots every run with telemetry has.
ALWAYS = (
    "Eclipses, contacts and state of charge",
    "Per-orbit energy budget",
    "Model accuracy",
    "Training updates",
    "Optimizer solves by path",
    "Limit-checked parameters",
    "Generation and load",
    "Task execution counters",
)
#: Sections that show a plot when the telemetry has the data, else a note in words.
OPTIONAL = {
    "Drift statistics": "not available in this run",
    "Analog device health": "No device telemetry in this run",
}


def _images(html):
    return re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)


def test_report_has_every_plot_or_a_note(run_copy, capsys):
    rc, out, err = cli(capsys, "report", run_copy)
    assert rc == 0, err
    assert "ingested" in err  # the archive was made on the way
    assert default_db(run_copy).is_file()
    html = (run_copy / "report.html").read_text()
    images = dict(_images(html))
    for title in ALWAYS:
        assert title in images, f"missing plot {title!r}"
    timeline = [t for t in images if t.startswith("Task execution timeline, orbit ")]
    assert len(timeline) == 1
    for title, note in OPTIONAL.items():
        assert title in images or note in html, title
    for title, data in images.items():
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, f"plot {title!r} looks empty"
    assert "Drift statistics" in images if any(p.name.startswith("drift_") for p in d.HK_CORE) else True
    # tables and notes a reviewer needs
    assert "<h2>Summary</h2>" in html and "training_updates_committed" in html
    assert "Limit violations (" in html and "Model versions (" in html and "pre-launch" in html
    assert "Command history" in html and "No command history in this run" in html
    assert "http" not in html.replace("http-equiv", "")  # self-contained: nothing fetched


def test_report_orbit_option(run_copy, capsys):
    from ground_tools.archive import Archive, ensure_archive
    from ground_tools.report import choose_orbit

    with Archive(ensure_archive(run_copy)) as ar:
        tm = ar.telemetry()
    assert choose_orbit(tm, 2) == (2, "chosen with --orbit")
    n, why = choose_orbit(tm, None)
    assert n in set(tm.orbits["orbit_index"].astype(int)) and "--orbit N" in why
    rc, _, err = cli(capsys, "report", run_copy, "--orbit", "999")
    assert rc == 2 and "--orbit 999: no such orbit" in err and "are archived" in err


def test_report_bad_input_exits_2_without_traceback(run_copy, tmp_path):
    (run_copy / "truth.npz").unlink()
    r = cli_subprocess("report", run_copy)
    assert r.returncode == 2 and "missing truth.npz" in r.stderr and "Traceback" not in r.stderr
    r = cli_subprocess("report", tmp_path / "nothing")
    assert r.returncode == 2 and "not a run folder" in r.stderr and "Traceback" not in r.stderr


def test_device_housekeeping_is_archived_plotted_and_limit_checked(tmp_path):
    """A run on the analog backend reports the optimizer device (HK SID 4)."""
    import numpy as np

    from flight_sw.config import parse_mission_config
    from ground_tools.archive import Archive, ingest
    from ground_tools.decode import decode_file
    from ground_tools.limits import check, load_limits
    from ground_tools.report import plot_device, plot_solve_paths
    from sim.runner import run_mission

    from .conftest import DEFAULT

    text = DEFAULT.read_text().replace("  backend: digital", "  backend: analog")
    assert "backend: analog" in text
    cfg = parse_mission_config(text)
    run = run_mission(cfg, text, tmp_path / "analog", days=0.1, show_progress=False).run_dir
    rep = ingest(run)
    assert rep.bad == 0 and rep.new_rows["hk_device"] == rep.new_rows["hk_core"] > 0
    with Archive(run / "archive.sqlite") as ar:
        tm = ar.telemetry()
        updates = ar.training_updates()
    plain = decode_file(run / "telemetry.bin", cfg.mission.start_utc, len(cfg.tasks))
    assert plain.bad_packets == 0
    np.testing.assert_array_equal(tm.hk_device["solves"], plain.hk_device["solves"])
    dev = tm.hk_device
    assert dev["solves"][-1] == dev["analog_accepted"][-1] + dev["fallbacks"][-1] + dev["rejected_by_gate"][-1]
    # the default energy rule's digital solves reach the ground apart from the fault fallbacks
    assert cfg.device.driver_energy_aware and 0 < dev["digital_by_energy_rule"][-1] <= dev["fallbacks"][-1]
    for png in (plot_device(tm), plot_solve_paths(updates, dev)):
        assert png and len(png) > 10_000
    limits = load_limits(None, cfg)
    assert any(lim.parameter == "device.health" for lim in limits.limits)
    dev_bad = dict(dev, health=np.where(np.arange(len(dev["health"])) >= 3, 2, 0))
    v = [x for x in check(limits, tm.hk_core, dev_bad) if x.parameter == "device.health"]
    assert [(x.level, x.start_s, x.worst) for x in v] == [("alarm", dev["t_s"][3], 2.0)]
