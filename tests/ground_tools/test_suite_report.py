"""`groundtools suite-report`: the learning-suite review page from a synthetic suite document."""

import copy
import json
import math
import re

import numpy as np
import pytest

from ground_tools.suite_report import (
    HTML_NAME,
    PNG_KINDS,
    SuiteError,
    check_suite,
    load_suite,
    onboard_verdict,
    write_suite_report,
)

from .helpers import cli, cli_subprocess

ARMS = ["frozen", "calibration", "selftrain", "ground", "onboard", "bound"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Mean drop [pts] per scenario and arm, chosen so onboard wins "thermal" (2.0 <= 2.5 + 0.6)
#: and loses "radiation" (6.0 > 3.0 + 0.6); the best baseline is ground in both.
DROPS = {
    "thermal": {"frozen": 9.0, "calibration": 4.0, "selftrain": 7.5, "ground": 2.5, "onboard": 2.0, "bound": 0.5},
    "radiation": {"frozen": 12.0, "calibration": 5.0, "selftrain": 8.0, "ground": 3.0, "onboard": 6.0, "bound": 1.0},
}
TITLES = {"thermal": "Detector warming (gain drift)", "radiation": "Radiation event (dark-signal step)"}


def _scenario(name: str, n_orbits: int = 40) -> dict:
    rng = np.random.default_rng(len(name))
    orbits = list(range(n_orbits))
    period_s = 5700.0
    drift_orbit = 10
    ref = 0.9
    accuracy = {}
    for arm in ARMS:
        drop = DROPS[name][arm] / 100.0
        mean = [ref if k < drift_orbit else ref - drop * (1.5 - 0.5 * (k - drift_orbit) / n_orbits) for k in orbits]
        mean = [float(m + rng.normal(0, 0.004)) for m in mean]
        accuracy[arm] = {"mean": mean, "lo": [m - 0.01 for m in mean], "hi": [min(1.0, m + 0.01) for m in mean]}
    site = [5.0 if k % 4 == 0 else 0.0 for k in orbits]
    agreement_site = [0.95 if k % 4 == 0 else None for k in orbits]
    return {
        "title": TITLES[name],
        "description": f"{name}: what drifts and where the numbers come from (synthetic test case).",
        "days": n_orbits * period_s / 86400.0,
        "orbit_period_s": period_s,
        "drift_start_s": drift_orbit * period_s,
        "reference_level": ref,
        "orbits": orbits,
        "accuracy": accuracy,
        "labels_by_source": {"site": site, "teacher": [40.0] * n_orbits, "self": [300.0] * n_orbits},
        "label_agreement": {"site": agreement_site, "teacher": [0.8 - 0.002 * k for k in orbits]},
        "teacher_accuracy": [0.82 - 0.002 * k for k in orbits],
        "figures": {
            **{f"{arm}_drop_pts": {"mean": DROPS[name][arm], "ci95": 0.6} for arm in ARMS},
            "onboard_recovery_orbits": 4.0,
            "ground_recovery_orbits": None,  # never came back within the run
            "forgetting_pts": 0.7,
            # onboard minus the best baseline, paired by seed: thermal clearly below zero, radiation above
            "onboard_vs_best": {"arm": "ground", "mean": DROPS[name]["onboard"] - DROPS[name]["ground"], "ci95": 0.2},
        },
    }


def make_suite() -> dict:
    """2 scenarios, 3 seeds, the six arms; round-trips through JSON like the real document."""
    suite = {
        "version": 1,
        "created_by": "flightsim bench learning",
        "seeds": [0, 1, 2],
        "arms": list(ARMS),
        "figures": {"learning.suite_wall_s": 754.0, "learning.onboard_wins": 1.0,
                    **{f"learning.{s}.{a}_drop_pts": DROPS[s][a] for s in DROPS for a in ARMS}},
        "scenarios": {name: _scenario(name) for name in DROPS},
    }
    return json.loads(json.dumps(suite))


def _pngs(page: str) -> list[str]:
    return re.findall(r'<img alt="[^"]*" src="([^"]+\.png)">', page)


def _onboard_cell(page: str, scenario: str) -> str:
    row = re.search(rf'<tr id="row-{scenario}">(.*?)</tr>', page).group(1)
    cells = re.findall(r"<td[^>]*>.*?</td>", row)
    return cells[1 + ARMS.index("onboard")]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "review"
    path = write_suite_report(make_suite(), out)
    return path, path.read_text(encoding="utf-8")


def test_page_and_plots_are_written(rendered):
    import matplotlib.image as mpimg

    path, page = rendered
    assert path.name == HTML_NAME and path.is_file()
    for title in TITLES.values():
        assert title in page
    for arm in ARMS:
        assert arm in page
    assert "seeds 0, 1, 2" in page and "wall time 12 min 34 s" in page
    assert "simulator against its truth" in page and "never available onboard" in page
    expected = [f"learning_suite_{s}_{kind}.png" for s in DROPS for kind in PNG_KINDS]
    assert _pngs(page) == expected  # relative links, in page order
    for name in expected:
        png = path.parent / name
        data = png.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 10_000, name
        assert mpimg.imread(png).ndim == 3  # matplotlib reads back what it wrote
    assert "data:image" not in page and "<script" not in page and "http" not in page


def test_win_loss_marking(rendered):
    _, page = rendered
    win, loss = _onboard_cell(page, "thermal"), _onboard_cell(page, "radiation")
    assert 'class="win"' in win and "2.00 ± 0.60 win" in win
    assert 'class="loss"' in loss and "6.00 ± 0.60 loss" in loss
    for s in DROPS:  # the best non-bound baseline is highlighted, the bound never is
        row = re.search(rf'<tr id="row-{s}">(.*?)</tr>', page).group(1)
        cells = re.findall(r"<td[^>]*>.*?</td>", row)
        assert [i for i, c in enumerate(cells) if 'class="best"' in c] == [1 + ARMS.index("ground")]
    assert "not recovered" in page  # ground recovery null: never came back
    paired = {s: re.findall(r"<td[^>]*>.*?</td>", re.search(rf'<tr id="row-{s}">(.*?)</tr>', page).group(1))[
        2 + len(ARMS)] for s in DROPS}
    assert "-0.50 ± 0.20 vs ground (strictly better)" in paired["thermal"]
    assert "(worse)" in paired["radiation"]
    assert "wins 1 of 2 scenarios" in page


def test_verdict_rule():
    base = {"frozen": (9.0, 1.0), "ground": (3.0, 0.4), "bound": (0.1, 0.1)}
    assert onboard_verdict({**base, "onboard": (3.5, 0.5)}).outcome == "win"  # within its own ci95
    v = onboard_verdict({**base, "onboard": (3.51, 0.5)})
    assert v.outcome == "loss" and v.best == ("ground",)  # the bound is not a baseline
    assert onboard_verdict({**base, "onboard": (3.2, math.nan)}).outcome == "loss"  # unknown ci: means only
    assert onboard_verdict({**base, "onboard": None}).outcome is None
    assert onboard_verdict({"onboard": (1.0, 0.1), "bound": (0.0, 0.0)}).outcome is None


def test_missing_arm_and_teacher_still_render(tmp_path):
    suite = make_suite()
    sc = suite["scenarios"]["thermal"]
    del sc["accuracy"]["selftrain"], sc["figures"]["selftrain_drop_pts"]
    del sc["teacher_accuracy"], sc["label_agreement"]["teacher"], sc["labels_by_source"]["teacher"]
    sc["accuracy"]["ground"]["lo"] = sc["accuracy"]["ground"]["lo"][:-3]  # wrong length: no band
    rad = suite["scenarios"]["radiation"]
    del rad["label_agreement"], rad["teacher_accuracy"]  # nothing for the agreement plot
    rad["figures"]["onboard_drop_pts"] = {"mean": None, "ci95": None}  # NaN in the producer
    page = write_suite_report(suite, tmp_path).read_text(encoding="utf-8")
    assert "arm &#x27;selftrain&#x27; is absent from this scenario: not drawn" in page
    assert "no teacher_accuracy in this scenario" in page and "no teacher labels in this scenario" in page
    assert "accuracy.ground.lo: 37 values for 40 orbits: not drawn" in page
    assert "nothing to draw (no agreement and no teacher accuracy)" in page
    assert "not decided — no onboard drop in this scenario" in page
    assert _pngs(page) == ["learning_suite_thermal_accuracy.png", "learning_suite_thermal_labels.png",
                           "learning_suite_thermal_agreement.png", "learning_suite_radiation_accuracy.png",
                           "learning_suite_radiation_labels.png"]
    assert not (tmp_path / "learning_suite_radiation_agreement.png").exists()
    # a scenario with almost nothing still gets its section
    bare = {"version": 1, "scenarios": {"bare": {"title": "Bare scenario"}}}
    page = write_suite_report(bare, tmp_path / "bare").read_text(encoding="utf-8")
    assert "Bare scenario" in page and "no usable &quot;orbits&quot; array" in page


def test_check_suite_refuses_foreign_documents():
    with pytest.raises(SuiteError, match="top level is an array"):
        check_suite([1, 2])
    with pytest.raises(SuiteError, match="\"scenarios\" is missing"):
        check_suite({"version": 1})
    with pytest.raises(SuiteError, match="this page reads version 1"):
        check_suite({"version": 2, "scenarios": {}})
    bad = copy.deepcopy(make_suite())
    bad["scenarios"]["thermal"] = 3
    with pytest.raises(SuiteError, match="scenarios.thermal is a number"):
        check_suite(bad)


def test_cli(tmp_path, capsys):
    missing = tmp_path / "no_such_suite.json"
    rc, _, err = cli(capsys, "suite-report", missing, "--out", tmp_path / "o")
    assert rc == 2 and "no_such_suite.json" in err and "file not found" in err and "Traceback" not in err
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "scenarios": {', encoding="utf-8")
    rc, _, err = cli(capsys, "suite-report", broken, "--out", tmp_path / "o")
    assert rc == 2 and "broken.json" in err and "not valid JSON" in err and "expected" in err
    foreign = tmp_path / "foreign.json"
    foreign.write_text("[]", encoding="utf-8")
    rc, _, err = cli(capsys, "suite-report", foreign)
    assert rc == 2 and "foreign.json" in err and "expected" in err
    with pytest.raises(SuiteError, match="cannot read it"):
        load_suite(tmp_path)  # a folder, not a file
    good = tmp_path / "suite.json"
    good.write_text(json.dumps(make_suite()), encoding="utf-8")
    rc, out, err = cli(capsys, "suite-report", good, "--out", tmp_path / "page")
    assert rc == 0, err
    assert (tmp_path / "page" / HTML_NAME).is_file() and "suite report:" in out


def test_cli_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("not json", encoding="utf-8")
    r = cli_subprocess("suite-report", broken, "--out", tmp_path / "o", timeout=60)
    assert r.returncode == 2 and "broken.json" in r.stderr and "Traceback" not in r.stderr
