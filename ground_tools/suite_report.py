"""Review page of the learning-evaluation suite: one HTML file with PNG plots beside it.

`flightsim bench learning` runs several drift scenarios x several seeds x six comparison arms
(frozen model, calibration only, self-training, reactive ground loop, onboard learning,
clairvoyant bound) and writes one JSON document (its layout: `check_suite`). This page puts it
in front of the mission team (`groundtools suite-report SUITE_JSON --out DIR`):

- a header (seeds, arms, wall time) and a summary table, one row per scenario: each arm's
  accuracy drop in points (mean +- 95 % CI over seeds), the best non-bound baseline highlighted,
  onboard learning's cell marked win or loss against it (`onboard_verdict`), the recovery
  orbits of onboard learning and of the ground loop, and forgetting;
- per scenario: its title and description and three plots, written as PNG files beside the
  HTML (`learning_suite_<scenario>_<kind>.png`, kind in `PNG_KINDS`): accuracy over time for
  every arm with its CI band; labels accepted per orbit by source; how often each source's
  labels agreed with the truth, with the teacher's own accuracy.

Every accuracy and agreement figure here is scored by the simulator against its truth, for
review only: none of it is available onboard. A series the document lacks (an arm, the
teacher) is skipped and the section says so in words; nothing missing stops the page.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["HTML_NAME", "PNG_KINDS", "SuiteError", "Verdict", "check_suite", "load_suite", "onboard_verdict",
           "write_suite_report"]

HTML_NAME = "learning_suite.html"
#: The plots of one scenario, in page order (file `learning_suite_<scenario slug>_<kind>.png`).
PNG_KINDS = ("accuracy", "labels", "agreement")
SUITE_VERSION = 1
EXPECTED = ("the learning-suite JSON document written by `flightsim bench learning` "
            f"(an object with \"version\": {SUITE_VERSION} and \"scenarios\": {{name: scenario object}})")

ONBOARD, BOUND, GROUND = "onboard", "bound", "ground"
#: Arm key -> (what it is, plot colour). Arms the suite names beyond these get the spare colours.
ARM_INFO = {
    "frozen": ("frozen pre-launch model", "tab:brown"),
    "calibration": ("calibration updates only", "tab:olive"),
    "selftrain": ("self-training on its own labels", "tab:purple"),
    "ground": ("reactive ground retraining loop", "tab:cyan"),
    "onboard": ("onboard learning", "tab:blue"),
    "bound": ("clairvoyant bound (upper limit, not a baseline)", "black"),
}
SPARE_COLORS = ("tab:pink", "tab:gray", "tab:red", "tab:green", "tab:orange")
#: Label source -> (what it is, plot colour).
SOURCE_INFO = {
    "site": ("calibration sites", "tab:green"),
    "teacher": ("teacher model", "tab:orange"),
    "self": ("self-labels (own predictions)", "tab:gray"),
}
TRUTH_NOTE = ("Every accuracy, label-agreement and teacher-accuracy figure on this page is scored by the "
              "simulator against its truth, for review only: none of it is available onboard. Onboard, the "
              "satellite sees its labels, never whether they are right.")


#: Caption above each plot kind.
CAPTIONS = {
    "accuracy": "Accuracy per orbit of every arm (mean over seeds, shaded: 95 % CI over seeds; the clairvoyant "
                "bound dashed), the drift start (vertical line) and the reference level (dashed grey). "
                "Simulator truth.",
    "labels": "Labels accepted per orbit by source, mean over seeds (totals over the run in the legend).",
    "agreement": "Share of each source's accepted labels that agree with the truth, and the teacher model's own "
                 "accuracy on scene frames (orbits without any are skipped). Simulator-truth scoring for review "
                 "only: never available onboard.",
}


class SuiteError(ValueError):
    """The suite document is missing, unreadable or not the layout this page reads."""


# -- reading ------------------------------------------------------------------------------------
def _json_type(x) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(x), "a number" if isinstance(x, int | float) else type(x).__name__)


def check_suite(suite, where: str = "suite") -> None:
    """Refuse a document whose top level is not the suite layout (SuiteError naming `where`).

    Checked: an object; "version" (when present) is 1; "scenarios" is an object of objects;
    "arms" and "seeds" (when present) are arrays; "figures" (when present) is an object. What a
    scenario lacks inside is tolerated: the page skips that series and says so.
    """
    if not isinstance(suite, dict):
        raise SuiteError(f"{where}: the top level is {_json_type(suite)}; expected {EXPECTED}")
    if "version" in suite and suite["version"] != SUITE_VERSION:
        raise SuiteError(f"{where}: \"version\" is {json.dumps(suite['version'])}; this page reads version "
                         f"{SUITE_VERSION} ({EXPECTED})")
    scenarios = suite.get("scenarios")
    if not isinstance(scenarios, dict):
        got = "missing" if scenarios is None else _json_type(scenarios)
        raise SuiteError(f"{where}: \"scenarios\" is {got}; expected an object of scenario objects ({EXPECTED})")
    for name, sc in scenarios.items():
        if not isinstance(sc, dict):
            raise SuiteError(f"{where}: scenarios.{name} is {_json_type(sc)}; expected a scenario object")
    for key, kind in (("arms", list), ("seeds", list), ("figures", dict)):
        if key in suite and not isinstance(suite[key], kind):
            raise SuiteError(f"{where}: \"{key}\" is {_json_type(suite[key])}; expected "
                             f"{'an array' if kind is list else 'an object'}")
    for arm in suite.get("arms", []):
        if not isinstance(arm, str):
            raise SuiteError(f"{where}: \"arms\" holds {_json_type(arm)}; expected arm names (strings)")


def load_suite(path: str | Path) -> dict:
    """Read and check a suite JSON file; SuiteError names the file and what was expected."""
    path = Path(path)
    if not path.exists():
        raise SuiteError(f"{path}: file not found; expected {EXPECTED}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected {EXPECTED}") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read it ({exc.strerror or exc}); expected {EXPECTED}") from None
    try:
        suite = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                         f"expected {EXPECTED}") from None
    check_suite(suite, str(path))
    return suite


def _num(x) -> float:
    """A JSON number as float; null (NaN in the producer) and anything else as NaN."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def _series(value, n: int, what: str, notes: list[str]) -> np.ndarray | None:
    """A per-orbit series of length n (nulls -> NaN), or None with the reason added to notes."""
    if value is None:
        return None
    if not isinstance(value, list):
        notes.append(f"{what}: is {_json_type(value)}, expected an array of {n} per-orbit values: not drawn.")
        return None
    if len(value) != n:
        notes.append(f"{what}: {len(value)} values for {n} orbits: not drawn.")
        return None
    bad = [v for v in value if v is not None and _json_type(v) != "a number"]
    if bad:
        notes.append(f"{what}: holds {_json_type(bad[0])} where numbers were expected: not drawn.")
        return None
    out = np.array([_num(v) for v in value], dtype=np.float64)
    if not np.isfinite(out).any():
        notes.append(f"{what}: no values (all null): not drawn.")
        return None
    return out


def _drop(figures: dict, arm: str) -> tuple[float, float] | None:
    """(mean, ci95) drop in points of an arm from a scenario's figures, or None when absent."""
    v = figures.get(f"{arm}_drop_pts")
    if isinstance(v, dict):
        return _num(v.get("mean")), _num(v.get("ci95"))
    if v is None:
        return None
    return _num(v), math.nan  # a bare number: the mean without its interval


def _arm_order(suite: dict) -> list[str]:
    """The suite's arms, then any arm a scenario has that the list lacks (first seen first)."""
    arms = list(suite.get("arms") or [])
    for sc in suite["scenarios"].values():
        acc = sc.get("accuracy") if isinstance(sc.get("accuracy"), dict) else {}
        figs = sc.get("figures") if isinstance(sc.get("figures"), dict) else {}
        for arm in [*acc, *(k[: -len("_drop_pts")] for k in figs if k.endswith("_drop_pts"))]:
            if arm not in arms:
                arms.append(arm)
    return arms


def _arm_color(arm: str, arms: list[str]) -> str:
    if arm in ARM_INFO:
        return ARM_INFO[arm][1]
    extras = [a for a in arms if a not in ARM_INFO]
    return SPARE_COLORS[extras.index(arm) % len(SPARE_COLORS)] if arm in extras else "tab:gray"


# -- the win/loss rule --------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """Onboard learning against the best non-bound baseline of one scenario.

    outcome: "win" when the onboard mean drop <= the best baseline's mean drop + the onboard
    ci95 (indistinguishable or better), "loss" otherwise, None when it cannot be decided.
    best: the baseline arm(s) with the smallest mean drop (ties: all of them).
    """

    outcome: str | None
    best: tuple[str, ...]
    why: str


def _paired(entry) -> str:
    """'-0.31 +- 0.12 (strictly better)' from the suite's paired onboard-minus-best-baseline entry."""
    if not isinstance(entry, dict):
        return "n/a"
    mean, half = _num(entry.get("mean")), _num(entry.get("ci95"))
    if not math.isfinite(mean):
        return "n/a"
    text = _pm(mean, half) + f" vs {entry.get('arm', '?')}"
    if math.isfinite(half):
        text += " (strictly better)" if mean + half < 0 else (" (worse)" if mean - half > 0 else " (not distinguishable)")
    return text


def onboard_verdict(drops: dict[str, tuple[float, float] | None]) -> Verdict:
    """Apply the win rule to {arm: (mean drop [pts], ci95 [pts]) or None}.

    Baselines are every arm but onboard and the clairvoyant bound. A missing onboard ci95
    (e.g. one seed) counts as 0: the comparison is then of the means alone.
    """
    base = {a: v[0] for a, v in drops.items()
            if a not in (ONBOARD, BOUND) and v is not None and math.isfinite(v[0])}
    best_mean = min(base.values()) if base else math.nan
    best = tuple(a for a, m in base.items() if m == best_mean)
    onboard = drops.get(ONBOARD)
    if onboard is None or not math.isfinite(onboard[0]):
        return Verdict(None, best, "no onboard drop in this scenario")
    if not base:
        return Verdict(None, best, "no baseline drop in this scenario to compare with")
    mean, ci = onboard
    ci_note = ""
    if not math.isfinite(ci):
        ci, ci_note = 0.0, " (onboard ci95 unknown: means compared)"
    win = mean <= best_mean + ci
    why = (f"onboard {mean:.2f} pts {'<=' if win else '>'} best baseline {' / '.join(best)} {best_mean:.2f} "
           f"+ onboard ci95 {ci:.2f}{ci_note}")
    return Verdict("win" if win else "loss", best, why)


# -- plots --------------------------------------------------------------------------------------
def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png", dpi=90, bbox_inches="tight")


def _drift_line(ax, drift_days: float, label: bool = True) -> None:
    if math.isfinite(drift_days):
        ax.axvline(drift_days, color="k", lw=1.0, ls="-", alpha=0.7)
        if label:
            ax.text(drift_days, 0.97, " drift starts", fontsize=8, va="top", transform=ax.get_xaxis_transform())


def _time_axis(ax, x: np.ndarray, days: float) -> None:
    right = max(float(x.max()), days) if math.isfinite(days) else float(x.max())
    ax.set_xlim(0.0, right if right > 0 else 1.0)
    ax.set_xlabel("days since start")


def _finite_line(ax, x, y, **kw) -> None:
    """Connect the finite points of y (a sparse series still draws as a line)."""
    m = np.isfinite(y)
    ax.plot(x[m], y[m], **kw)


def _plot_accuracy(sc: dict, x: np.ndarray, arms: list[str], drops: dict, drift_days: float, title: str,
                   path: Path, notes: list[str]) -> bool:
    acc = sc.get("accuracy")
    if not isinstance(acc, dict):
        notes.append("Accuracy over time: the scenario has no \"accuracy\" object: no plot.")
        return False
    n = len(x)
    fig = Figure(figsize=(11, 4.0))
    ax = fig.subplots()
    lows: list[float] = []
    drawn = 0
    for arm in arms:
        entry = acc.get(arm)
        if entry is None:
            notes.append(f"Accuracy over time: arm '{arm}' is absent from this scenario: not drawn.")
            continue
        if not isinstance(entry, dict):
            notes.append(f"Accuracy over time: accuracy.{arm} is {_json_type(entry)}, expected an object: not drawn.")
            continue
        mean = _series(entry.get("mean"), n, f"Accuracy over time: accuracy.{arm}.mean", notes)
        if mean is None:
            if "mean" not in entry:
                notes.append(f"Accuracy over time: arm '{arm}' has no \"mean\": not drawn.")
            continue
        color = _arm_color(arm, arms)
        lo = _series(entry.get("lo"), n, f"Accuracy over time: accuracy.{arm}.lo", notes)
        hi = _series(entry.get("hi"), n, f"Accuracy over time: accuracy.{arm}.hi", notes)
        if lo is not None and hi is not None:
            m = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(x[m], lo[m], hi[m], color=color, alpha=0.15 if arm != BOUND else 0.08, lw=0)
            lows.append(float(np.nanmin(lo)))
        else:
            notes.append(f"Accuracy over time: arm '{arm}' has no complete CI band (lo/hi): line drawn without it.")
        d = drops.get(arm)
        label = arm if d is None or not math.isfinite(d[0]) else f"{arm} (drop {_pm(*d)} pts)"
        _finite_line(ax, x, mean, color=color, ls="--" if arm == BOUND else "-",
                     lw=1.8 if arm == ONBOARD else 1.1, label=label, zorder=3 if arm == ONBOARD else 2)
        lows.append(float(np.nanmin(mean)))
        drawn += 1
    if not drawn:
        notes.append("Accuracy over time: no arm has a usable accuracy series: no plot.")
        return False
    ref = _num(sc.get("reference_level"))
    if math.isfinite(ref):
        ax.axhline(ref, color="0.45", ls=(0, (6, 3)), lw=0.9, label=f"reference level {ref:.3f}")
        lows.append(ref)
    else:
        notes.append("Accuracy over time: no reference_level: the reference line is not drawn.")
    _drift_line(ax, drift_days)
    ax.set_ylim(max(0.0, min(lows) - 0.04), 1.005)
    _time_axis(ax, x, _num(sc.get("days")))
    ax.set_ylabel("accuracy (simulator truth)")
    ax.grid(alpha=0.25)
    ax.set_title(f"{title}: accuracy per orbit, mean over seeds with 95 % CI band (simulator truth)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, frameon=False)
    _save(fig, path)
    return True


def _plot_labels(sc: dict, x: np.ndarray, drift_days: float, title: str, path: Path, notes: list[str]) -> bool:
    lbs = sc.get("labels_by_source")
    if not isinstance(lbs, dict) or not lbs:
        notes.append("Labels by source: the scenario has no \"labels_by_source\": no plot.")
        return False
    n = len(x)
    sources = [s for s in SOURCE_INFO if s in lbs] + [s for s in lbs if s not in SOURCE_INFO]
    missing = [s for s in SOURCE_INFO if s not in lbs]
    if missing:
        notes.append(f"Labels by source: no {', '.join(missing)} labels in this scenario: not drawn.")
    series = {}
    for s in sources:
        y = _series(lbs[s], n, f"Labels by source: labels_by_source.{s}", notes)
        if y is not None:
            series[s] = y
    if not series:
        notes.append("Labels by source: no usable series: no plot.")
        return False
    fig = Figure(figsize=(11, 3.2))
    ax = fig.subplots()
    spare = iter(SPARE_COLORS)
    for s, y in series.items():
        what, color = SOURCE_INFO.get(s, (s, next(spare, "tab:gray")))
        _finite_line(ax, x, y, color=color, lw=1.2, drawstyle="steps-mid",
                     label=f"{s}: {what} ({np.nansum(y):,.0f} over the run)")
    peaks = [float(np.nanmax(y)) for y in series.values() if np.nanmax(y) > 0]
    scale = ""
    if len(peaks) > 1 and max(peaks) / min(peaks) > 30:
        ax.set_yscale("symlog", linthresh=1.0)  # one source dwarfs another: keep the small one visible
        ax.set_ylim(bottom=0)
        scale = ", symlog scale"
    else:
        ax.set_ylim(bottom=0)
    _drift_line(ax, drift_days)
    _time_axis(ax, x, _num(sc.get("days")))
    ax.set_ylabel(f"labels per orbit{scale}")
    ax.grid(alpha=0.25)
    ax.set_title(f"{title}: labels accepted per orbit by source, mean over seeds", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    _save(fig, path)
    return True


def _plot_agreement(sc: dict, x: np.ndarray, drift_days: float, title: str, path: Path,
                    notes: list[str]) -> bool:
    n = len(x)
    agr = sc.get("label_agreement")
    if not isinstance(agr, dict):
        agr = {}
        notes.append("Label agreement: the scenario has no \"label_agreement\": no agreement series drawn.")
    lines = []
    for s in [s for s in ("site", "teacher") if s in agr] + [s for s in agr if s not in ("site", "teacher")]:
        y = _series(agr[s], n, f"Label agreement: label_agreement.{s}", notes)
        if y is not None:
            lines.append((f"{s} labels agreeing with truth", SOURCE_INFO.get(s, (s, "tab:gray"))[1], "-", "o", y))
    if agr and "site" not in agr:
        notes.append("Label agreement: no site agreement in this scenario: not drawn.")
    if agr and "teacher" not in agr:
        notes.append("Label agreement: no teacher agreement in this scenario: not drawn.")
    teacher = _series(sc.get("teacher_accuracy"), n, "Label agreement: teacher_accuracy", notes)
    if "teacher_accuracy" not in sc:
        notes.append("Label agreement: no teacher_accuracy in this scenario (no teacher data): not drawn.")
    if teacher is not None:
        lines.append(("teacher's accuracy on scene frames", "tab:red", "--", "", teacher))
    if not lines:
        notes.append("Label agreement: nothing to draw (no agreement and no teacher accuracy): no plot.")
        return False
    fig = Figure(figsize=(11, 3.2))
    ax = fig.subplots()
    for label, color, ls, marker, y in lines:
        k = int(np.isfinite(y).sum())
        _finite_line(ax, x, y, color=color, ls=ls, marker=marker, ms=2.5, lw=1.1,
                     label=f"{label} ({k} of {n} orbits)")
    _drift_line(ax, drift_days)
    ax.set_ylim(0.0, 1.02)
    _time_axis(ax, x, _num(sc.get("days")))
    ax.set_ylabel("share / accuracy")
    ax.grid(alpha=0.25)
    ax.set_title(f"{title}: label agreement with truth and teacher accuracy\n"
                 "(simulator-truth scoring for review only; never available onboard)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    _save(fig, path)
    return True


# -- page ---------------------------------------------------------------------------------------
def _fmt(x: float, spec: str = ".2f") -> str:
    return "n/a" if not math.isfinite(x) else format(x, spec)


def _pm(mean: float, ci: float) -> str:
    return f"{_fmt(mean)} ± {_fmt(ci)}"


def _recovery(figs: dict, key: str) -> str:
    if key not in figs:
        return "n/a"
    v = _num(figs[key])
    return "not recovered" if not math.isfinite(v) else f"{v:g}"


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "scenario"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 3600:
        m, sec = divmod(round(s), 60)
        return f"{m} min {sec:02d} s"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"


def _note(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _cell(text: str, cls: str = "", title: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' title="{html.escape(title)}"' if title else "")
    return f"<td{attrs}>{html.escape(text)}</td>"


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}
th{background:#f3f3f3}img{max-width:100%}.note,.caption{color:#555;font-size:13px}
.missing{background:#f6f6f6;border-left:4px solid #bbb;padding:6px 10px;color:#444}
.truth{background:#fff6dd;border-left:4px solid #e0a800;padding:6px 10px}
td.best{background:#dcebfa;font-weight:bold}.win{background:#dff3e3}.loss{background:#fde2e2}
p.win,p.loss{padding:4px 10px}
.ok{color:#1a7f37}summary{cursor:pointer;color:#0645ad;font-size:13px}ul.toc{columns:3;font-size:13px}"""


def _headroom_paragraph(flat: dict) -> str:
    """What the label sources can teach at most (the bench's label-headroom figures), or ''."""
    teacher = _num(flat.get("learning.label_headroom_teacher_pts"))
    truth = _num(flat.get("learning.label_headroom_truth_pts"))
    if not (math.isfinite(teacher) and math.isfinite(truth)):
        return ""
    ci = [_num(flat.get(f"learning.label_headroom_{s}_ci95_pts")) for s in ("teacher", "truth")]
    return (f'<p class="note">Label headroom, without drift (undrifted flight pixels, 6,000 labels): a head '
            f"refitted on the onboard teacher's labels is {_pm(teacher, ci[0])} points from the pre-launch head, "
            f"one refitted on truth labels {_pm(truth, ci[1])}: what learning all of the teacher's labels "
            f"gives, against what the bound arm reaches for.</p>")


def write_suite_report(suite: dict, out_dir: Path) -> Path:
    """Write out_dir/learning_suite.html and its PNG plots; returns the HTML path.

    `suite` is the parsed suite document (`load_suite`); SuiteError when its top level is not
    the suite layout. Anything missing inside a scenario is skipped and noted on the page.
    """
    check_suite(suite)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arms = _arm_order(suite)
    flat = suite.get("figures") or {}
    seeds = suite.get("seeds") or []
    scenarios = suite["scenarios"]

    rows, sections, toc = [], [], []
    wins = decided = 0
    taken: set[str] = set()
    for name, sc in scenarios.items():
        slug = _slug(str(name), taken)
        title = str(sc.get("title") or name)
        figs = sc.get("figures") if isinstance(sc.get("figures"), dict) else {}
        drops = {arm: _drop(figs, arm) for arm in arms}
        verdict = onboard_verdict(drops)
        decided += verdict.outcome is not None
        wins += verdict.outcome == "win"

        # summary row
        cells = [f'<td><a href="#{slug}">{html.escape(title)}</a></td>']
        for arm in arms:
            d = drops[arm]
            if d is None:
                cells.append(_cell("absent", title=f"no {arm}_drop_pts in this scenario"))
            elif arm == ONBOARD and verdict.outcome:
                cells.append(_cell(f"{_pm(*d)} {verdict.outcome}", verdict.outcome, verdict.why))
            else:
                cells.append(_cell(_pm(*d), "best" if arm in verdict.best else ""))
        cells.append(_cell(" / ".join(verdict.best) or "n/a"))
        cells.append(_cell(_paired(figs.get("onboard_vs_best"))))
        cells += [_cell(_recovery(figs, "onboard_recovery_orbits")), _cell(_recovery(figs, "ground_recovery_orbits")),
                  _cell(_fmt(_num(figs.get("forgetting_pts")), ".2f"))]
        rows.append(f'<tr id="row-{slug}">' + "".join(cells) + "</tr>")

        # section
        notes: list[str] = []
        body = [f'<h2 id="{slug}">{html.escape(title)} <span class="note">({html.escape(str(name))})</span></h2>']
        desc = sc.get("description")
        body.append(f"<p>{html.escape(str(desc))}</p>" if desc else _note("No description in the suite document."))
        period = _num(sc.get("orbit_period_s"))
        days, ref, drift_s = _num(sc.get("days")), _num(sc.get("reference_level")), _num(sc.get("drift_start_s"))
        drift_days = drift_s / 86400.0
        body.append(f'<p class="note">{_fmt(days, ".3g")} days; orbit period {_fmt(period / 60.0, ".1f")} min; '
                    f"drift starts at day {_fmt(drift_days, '.2f')}; reference accuracy {_fmt(ref, '.3f')} "
                    "(drops are measured against it, in points: lower is better).</p>")
        v_text = (f"Onboard learning: {verdict.outcome.upper()} — {verdict.why}." if verdict.outcome
                  else f"Onboard learning: not decided — {verdict.why}.")
        body.append(f'<p class="{verdict.outcome or "note"}">{html.escape(v_text)}</p>')
        orbits = sc.get("orbits")
        ok_orbits = isinstance(orbits, list) and orbits and all(_json_type(o) == "a number" for o in orbits)
        images = []
        if not ok_orbits:
            notes.append("The scenario has no usable \"orbits\" array: no plots.")
        elif not (math.isfinite(period) and period > 0):
            notes.append("The scenario has no positive orbit_period_s: no plots (the time axis needs it).")
        else:
            x = np.asarray(orbits, dtype=np.float64) * period / 86400.0
            for kind in PNG_KINDS:
                png = out_dir / f"learning_suite_{slug}_{kind}.png"
                if kind == "accuracy":
                    drawn = _plot_accuracy(sc, x, arms, drops, drift_days, title, png, notes)
                elif kind == "labels":
                    drawn = _plot_labels(sc, x, drift_days, title, png, notes)
                else:
                    drawn = _plot_agreement(sc, x, drift_days, title, png, notes)
                if drawn:
                    images.append(f'<p class="caption">{html.escape(CAPTIONS[kind])}</p>'
                                  f'<img alt="{html.escape(f"{title}: {kind}")}" src="{html.escape(png.name)}">')
        if notes:
            body.append("".join(_note(t) for t in notes))
        body += images
        sections.append("\n".join(body))
        toc.append(f'<li><a href="#{slug}">{html.escape(title)}</a></li>')

    header = [f"{len(scenarios)} scenarios x {len(seeds)} seeds x {len(arms)} arms"]
    if seeds:
        header.append("seeds " + ", ".join(html.escape(str(s)) for s in seeds))
    wall = _num(flat.get("learning.suite_wall_s"))
    if math.isfinite(wall):
        header.append(f"wall time {_duration(wall)}")
    if suite.get("created_by"):
        header.append(f"written by {html.escape(str(suite['created_by']))}")
    header.append(f"suite document version {html.escape(str(suite.get('version', 'absent (read as 1)')))}")
    arm_list = "".join(f"<li><b>{html.escape(a)}</b>: {html.escape(ARM_INFO.get(a, ('(not described)',))[0])}</li>"
                       for a in arms)
    wins_line = f"Onboard learning wins {wins} of {decided} scenarios by this page's rule"
    bench_wins = _num(flat.get("learning.onboard_wins"))
    if math.isfinite(bench_wins):
        wins_line += f"; the bench figure learning.onboard_wins is {bench_wins:g}"
        if bench_wins != wins:
            wins_line += " (they differ: the bench counts by its own rule or over other scenarios)"
    head_cells = ["scenario", *(f"{a} drop [pts]" for a in arms), "best baseline",
                  "onboard - best, paired by seed [pts]", "onboard recovery [orbits]",
                  "ground recovery [orbits]", "forgetting [pts]"]
    summary = (f"<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head_cells)}</tr>{''.join(rows)}</table>"
               if rows else _note("The suite has no scenarios."))
    flat_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(_num(v), '.6g'))}</td></tr>"
                        for k, v in sorted(flat.items()))
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Learning suite review</title>
<style>{STYLE}</style></head><body>
<h1>Learning suite review</h1>
<p class="note">{'; '.join(header)}.</p>
<p class="truth">{html.escape(TRUTH_NOTE)}</p>
<p class="note">Arms:</p><ul class="note">{arm_list}</ul>
<h2>Summary</h2>
<p class="caption">Accuracy drop in points against each scenario's reference level, mean ± 95 % CI over seeds
(lower is better). Blue: the best baseline (every arm but onboard and the clairvoyant bound). Onboard's cell is
marked <span class="ok">win</span> when its mean drop is at most the best baseline's mean plus onboard's own
ci95 (indistinguishable or better), else loss; hover a cell for the comparison. "Onboard - best": the difference
to that baseline seed by seed (the same world and frames), mean ± 95 % CI; strictly better when the whole interval
is below zero. Recovery: orbits from the drift
until accuracy is back near its pre-drift level, as the bench scores it ("not recovered": not within the run).</p>
{summary}
<p class="note">{html.escape(wins_line)}.</p>
{_headroom_paragraph(flat)}
{f'<details><summary>every bench figure ({len(flat)})</summary><table>{flat_rows}</table></details>' if flat else ''}
<h2>Contents</h2><ul class="toc">{''.join(toc)}</ul>
{''.join(sections)}
</body></html>
"""
    path = out_dir / HTML_NAME
    path.write_text(doc, encoding="utf-8")
    return path
