"""Model lifecycle from telemetry, the model file format, and replay of a candidate model.

Lifecycle (`groundtools models RUN`): every model version that was active onboard,
rebuilt from the training-update events (committed / refused / rolled back) and the
`model_version` of every core housekeeping report:

- the version in the first HK report is the pre-launch model;
- a *committed* update creates version v, trained onboard, whose parent is the model
  active at that moment; the parent is replaced ("superseded");
- a *rolled back* update re-activates the restored version; the model it replaces is
  marked "rolled back" (the flight software does this when live labels score it below
  its parent);
- a *refused* candidate never becomes active: it is counted against the model that
  was active (the candidate's parent). Refused candidates reuse the next version
  number, so they are counts, not versions;
- a model-upload event (dictionary v4+, telecommands) that starts a trial activates the
  uplinked version ("uplinked (trial)", "uplinked" once confirmed); a reverted trial
  restores the model it replaced;
- a change of `model_version` in HK with no event (an invalid-model rollback done by
  housekeeping, or an event packet lost) is shown as such.

"Label accuracy" is the onboard figure from HK while the version was active (an
exponential average over calibration batches, so it lags a switch by a few batches);
"truth accuracy" is the simulator's, from truth.npz, over the same intervals.

Model files (`save_model` / `load_model`): an .npz with one array per field of
`flight_sw.ml.model.ModelImage` (names and shapes as the dataclass), plus
`format_version` = 1. Uplinking a model is a later issue (TM/TC); `replay` is what the
ground runs before that: it scores a candidate on labelled samples the satellite
downlinked (archive table `samples`: t_s, pixels, label, and when the flight software
sends them the onboard prediction and model version), against the model that flew.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

MODEL_FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """The model file is unreadable or does not match the ModelImage fields / the mission."""


class NoSamplesError(ValueError):
    """The archive holds no downlinked samples to replay on."""


# -- lifecycle ------------------------------------------------------------------------------
@dataclass
class ModelVersion:
    version: int
    origin: str
    parent: int | None
    intervals: list[list[float]] = field(default_factory=list)  # [start_s, end_s] while active
    why_replaced: str = ""
    refused_candidates: int = 0
    labels_used: int | None = None
    solve_energy_j: float | None = None
    solve_path: str | None = None
    candidate_accuracy: float | None = None
    label_accuracy: float = math.nan
    truth_accuracy: float = math.nan

    @property
    def activated_s(self) -> float:
        return self.intervals[0][0] if self.intervals else math.nan

    @property
    def active_s(self) -> float:
        return sum(b - a for a, b in self.intervals)

    @property
    def replaced_s(self) -> float | None:
        return None if not self.intervals or self.why_replaced.startswith("active at") else self.intervals[-1][1]


def lifecycle(hk: dict, updates: list[dict], truth: dict | None = None, end_s: float | None = None,
              uploads: list[dict] = ()) -> list[ModelVersion]:
    """Model versions in order of first activation (see the module docstring for the rules).

    `uploads`: model-upload events (t_s, stage, version) when the telemetry has them: a trial
    of an uplinked model activates it, a revert restores the model it replaced.
    """
    if not hk and not updates:
        return []
    hk_t = np.asarray(hk.get("t_s", []), dtype=np.float64)
    hk_v = np.asarray(hk.get("model_version", []), dtype=np.float64)
    timeline = [(u["t_s"], 0, u) for u in updates] + [(float(t), 1, int(v)) for t, v in zip(hk_t, hk_v, strict=True)]
    timeline += [(u["t_s"], 0, {**u, "outcome": "upload"}) for u in uploads]
    timeline.sort(key=lambda x: (x[0], x[1]))
    if end_s is None:
        end_s = max((x[0] for x in timeline), default=0.0)
    versions: dict[int, ModelVersion] = {}
    active: int | None = None

    def activate(v: int, t: float, origin: str, parent: int | None = None) -> ModelVersion:
        mv = versions.get(v)
        if mv is None:
            mv = versions[v] = ModelVersion(v, origin, parent)
        mv.intervals.append([t, t])
        mv.why_replaced = ""
        return mv

    def close(t: float, why: str) -> None:
        if active is not None:
            mv = versions[active]
            mv.intervals[-1][1] = t
            mv.why_replaced = why

    for t, kind, item in timeline:
        if kind == 1:  # HK sample
            v = item
            if active is None:
                active = v
                activate(v, t, "pre-launch")
            elif v != active:
                close(t, f"switched to v{v} with no training-update event (invalid-model rollback or a lost event)")
                activate(v, t, "unknown (first seen in HK)")
                active = v
            continue
        u = item
        outcome, v = u["outcome"], int(u["version"])
        if outcome == "upload":
            stage = u["stage"]
            if stage in ("trial_started", "installed_at_boot") and v != active:
                parent = active
                close(t, f"replaced by uplinked v{v} ({stage.replace('_', ' ')})")
                mv = activate(v, t, "uplinked (trial)" if stage == "trial_started" else "uplinked", parent=parent)
                mv.parent = parent if mv.parent is None else mv.parent
                active = v
            elif stage == "confirmed" and v in versions:
                versions[v].origin = "uplinked"
            elif stage in ("trial_reverted", "reverted_at_boot") and v == active and versions[v].parent is not None:
                back = versions[v].parent
                close(t, f"uplinked trial reverted to v{back}")
                activate(back, t, "pre-launch")
                active = back
            continue
        if outcome == "refused":
            if active is not None:
                versions[active].refused_candidates += 1
            continue
        if active is None:  # an event before any HK report: the parent is unknown
            active = v - 1 if outcome == "committed" else v
            activate(active, t, "pre-launch (before the first HK report)")
        if outcome == "committed":
            close(t, f"superseded by v{v} (onboard update committed)")
            mv = activate(v, t, "trained onboard", parent=active)
            mv.labels_used = int(u["labels_used"])
            mv.solve_energy_j = float(u["solve_energy_j"])
            mv.solve_path = "analog" if int(u["solve_path"]) else "digital"
            mv.candidate_accuracy = float(u["candidate_accuracy"])
            active = v
        elif outcome == "rolled_back":
            close(t, f"rolled back to v{v} (worse than v{v} on live calibration labels)")
            activate(v, t, "unknown (restored by a rollback)")
            active = v
    if active is not None:
        versions[active].intervals[-1][1] = max(end_s, versions[active].intervals[-1][1])
        versions[active].why_replaced = "active at the end of the run"
    lab = np.asarray(hk.get("label_accuracy", []), dtype=np.float64)
    for mv in versions.values():
        m = hk_v == mv.version
        good = m & np.isfinite(lab) if len(lab) else m[:0]
        mv.label_accuracy = float(lab[good].mean()) if good.any() else math.nan
        if truth is not None and len(truth.get("acc_t_s", [])):
            at = np.asarray(truth["acc_t_s"])
            inside = np.zeros(len(at), bool)
            for a, b in mv.intervals:
                inside |= (at >= a) & (at < b)
            if inside.any():
                mv.truth_accuracy = float(np.mean(np.asarray(truth["acc_onboard"])[inside]))
    return sorted(versions.values(), key=lambda x: x.activated_s)


def format_lifecycle(versions: list[ModelVersion], start_utc: datetime | None) -> list[str]:
    def utc(t):
        if t is None or not math.isfinite(t):
            return "-"
        if start_utc is None:
            return f"{t / 3600:.2f} h"
        return (start_utc + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def acc(x):
        return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"

    head = (f"{'version':<8} {'origin':<17} {'parent':<7} {'activated (UTC)':<21} {'active [h]':>10} "
            f"{'label acc':>9} {'truth acc':>9} {'refused':>7} {'labels':>7} {'solve J':>8}  replaced / why")
    lines = [head]
    for mv in versions:
        lines.append(
            f"{'v' + str(mv.version):<8} {mv.origin[:17]:<17} {('v' + str(mv.parent)) if mv.parent is not None else '-':<7} "
            f"{utc(mv.activated_s):<21} {mv.active_s / 3600:>10.2f} {acc(mv.label_accuracy):>9} "
            f"{acc(mv.truth_accuracy):>9} {mv.refused_candidates:>7} "
            f"{mv.labels_used if mv.labels_used is not None else '-':>7} "
            f"{f'{mv.solve_energy_j:.3g}' if mv.solve_energy_j is not None else '-':>8}  "
            f"{utc(mv.replaced_s) + ': ' if mv.replaced_s is not None else ''}{mv.why_replaced}"
        )
    return lines


# -- model files ------------------------------------------------------------------------------
def save_model(path: Path | str, image) -> Path:
    from flight_sw.ml.model import ModelImage

    path = Path(path)
    arrays = {f.name: np.asarray(getattr(image, f.name)) for f in dataclasses.fields(ModelImage)}
    with open(path, "wb") as fh:
        np.savez(fh, format_version=np.int64(MODEL_FORMAT_VERSION), **arrays)
    return path


def load_model(path: Path | str):
    """Read a model .npz, checking every ModelImage field is there with a sensible type."""
    from flight_sw.ml.model import ModelImage

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found") from None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a model file (.npz with the ModelImage fields): {exc}") from None
    errors = []
    fv = data.get("format_version")
    if fv is None or int(fv) != MODEL_FORMAT_VERSION:
        errors.append(f"format_version: got {None if fv is None else int(fv)}, expected {MODEL_FORMAT_VERSION}")
    kwargs = {}
    for f in dataclasses.fields(ModelImage):
        tp = str(f.type)
        if f.name not in data:
            errors.append(f"{f.name}: missing, expected {tp}")
            continue
        v = data[f.name]
        if "ndarray" in tp:
            if v.ndim == 0 or not np.issubdtype(v.dtype, np.number) or not np.all(np.isfinite(v)):
                errors.append(f"{f.name}: got {v.dtype} shape {v.shape}, expected a finite numeric array")
            kwargs[f.name] = v
        elif tp in ("int", "float"):
            if v.ndim != 0 or not np.issubdtype(v.dtype, np.number):
                errors.append(f"{f.name}: got {v.dtype} shape {v.shape}, expected a scalar {tp}")
                continue
            kwargs[f.name] = int(v) if tp == "int" else float(v)
        else:
            kwargs[f.name] = v
    if errors:
        raise ModelFileError(f"{path}: invalid model file\n" + "\n".join(f"  {e}" for e in errors))
    return ModelImage(**kwargs)


def _extractor(image):
    from flight_sw.ml.model import FeatureExtractor

    return FeatureExtractor(image)  # the onboard int8 extractor: scores match what would fly


def predict(image, pixels: np.ndarray) -> np.ndarray:
    """Class predictions of `image` with the onboard (quantised) feature extractor."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    aug = image.head.shape[0]
    feat = np.zeros((len(pixels), aug))
    _extractor(image).features_into(pixels, feat)
    return np.argmax(feat @ image.head, axis=1)


def check_model_fits(image, bands: int, classes: list[str], where: str) -> None:
    mean = np.asarray(image.input_mean)
    head = np.asarray(image.head)
    errors = []
    if mean.shape != (bands,):
        errors.append(f"input_mean: shape {mean.shape}, expected ({bands},) for this mission's {bands} bands")
    if head.ndim != 2 or head.shape[1] != len(classes):
        errors.append(f"head: shape {head.shape}, expected (features + 1, {len(classes)}) for classes {', '.join(classes)}")
    if errors:
        raise ModelFileError(f"{where}: model does not fit this mission\n" + "\n".join(f"  {e}" for e in errors))


@dataclass
class ReplayResult:
    n: int
    t_range_s: tuple[float, float]
    candidate: np.ndarray  # correct (bool) per sample
    flown: np.ndarray | None  # correct per sample for the onboard prediction (None: not downlinked)
    baseline: np.ndarray | None  # correct per sample for --baseline
    labels: np.ndarray
    t_s: np.ndarray


def replay(image, samples, baseline=None) -> ReplayResult:
    t, pixels, labels, onboard, _versions = samples
    cand = predict(image, pixels) == labels
    flown = None
    if np.all(onboard >= 0):
        flown = onboard == labels
    base = predict(baseline, pixels) == labels if baseline is not None else None
    return ReplayResult(len(labels), (float(t.min()), float(t.max())), cand, flown, base, labels, t)


def _paired(a: np.ndarray, b: np.ndarray) -> str:
    diff = a.astype(float) - b.astype(float)
    se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
    return f"{100 * diff.mean():+.1f} points (+/- {196 * se:.1f} at 95%)"


def format_replay(res: ReplayResult, classes: list[str], name: str, baseline_name: str | None) -> list[str]:
    cols = [("candidate", res.candidate)]
    if res.flown is not None:
        cols.append(("flown onboard", res.flown))
    if res.baseline is not None:
        cols.append((baseline_name or "baseline", res.baseline))
    lines = [
        f"replay of {name} on {res.n} downlinked labelled samples "
        f"(mission time {res.t_range_s[0] / 3600:.2f} h to {res.t_range_s[1] / 3600:.2f} h)",
        f"{'':<16}" + "".join(f"{c:>16}" for c, _ in cols),
        f"{'accuracy':<16}" + "".join(f"{v.mean():>16.3f}" for _, v in cols),
    ]
    for k, cname in enumerate(classes):
        m = res.labels == k
        if m.any():
            lines.append(f"  {cname:<14}" + "".join(f"{v[m].mean():>16.3f}" for _, v in cols) + f"   (n={int(m.sum())})")
    days = np.floor(res.t_s / 86400.0).astype(int)
    if len(np.unique(days)) > 1:
        for day in np.unique(days):
            m = days == day
            lines.append(f"  day {day:<10}" + "".join(f"{v[m].mean():>16.3f}" for _, v in cols) + f"   (n={int(m.sum())})")
    if res.flown is not None:
        lines.append(f"candidate vs the model that flew: {_paired(res.candidate, res.flown)}")
    else:
        lines.append("the onboard predictions were not downlinked with these samples: no flown-model comparison")
    if res.baseline is not None:
        lines.append(f"candidate vs {baseline_name or 'baseline'}: {_paired(res.candidate, res.baseline)}")
    return lines
