"""The learning evaluation suite: drift scenarios x seeds x comparison arms, in one world per run.

Each scenario is an overlay on the default mission (`mission_configs/scenarios/*.yaml`:
its title, description and sources, the day its drift starts, the run length, and the
`payload.drift` keys it sets). Every run flies the flight software (the onboard arm)
and scores the other arms (`sim.arms`, the ground loop) on the same frames. Runs go
through a Dask client the caller hands in (the bench starts a local cluster, one
process per worker); the ground's pre-launch products (flight model, teacher) are made
once per seed and shared by that seed's scenarios.

Figures (definitions used by the bench and the review page):
- reference level: the frozen model's mean per-orbit accuracy before the drift starts
  (the level every arm is held to, so drops compare accuracies directly);
- drop of an arm [points]: reference level minus the arm's mean per-orbit accuracy
  from the drift start to the end of the run (negative: better than the reference);
- recovery [orbits]: from the orbit the drift starts in to the first orbit at or
  above the reference level minus 2 points (0: it never left); a run that never
  recovers counts the orbits to its end (censored);
- forgetting [points]: on a held-out undrifted test set (flight spectra, healthy
  sensor), the pre-launch model's accuracy minus the final onboard model's;
- 95 % confidence intervals: Student's t over seeds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "mission_configs" / "scenarios"
BASE_CONFIG = Path(__file__).resolve().parents[1] / "mission_configs" / "default_sso.yaml"
SCENARIOS = ("ageing", "radiation", "filter_shift", "season", "new_surface", "stress")
ARMS = ("frozen", "calibration", "selftrain", "ground", "onboard", "bound")
BASELINES = ("frozen", "calibration", "selftrain", "ground")
RECOVERY_TOLERANCE = 0.02
#: Student's t 97.5 % quantile by degrees of freedom (1..30).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    sources: str
    drift_start_day: float
    days: float
    quick_days: float
    cfg: object  # MissionConfig


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def load_scenario(name: str, quick: bool = False) -> Scenario:
    """The scenario overlay merged into the default mission and validated like any config."""
    from flight_sw.config import parse_mission_config
    from flight_sw.config.loader import ConfigError

    path = SCENARIO_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(str(path), [f"no such scenario; expected one of {', '.join(SCENARIOS)}"])
    over, text, start = overlay_text(path, quick)
    cfg = parse_mission_config(text, str(path))
    return Scenario(name, over["title"], over["description"], over["sources"], start,
                    float(over["quick_days"] if quick else over["days"]), float(over["quick_days"]), cfg)


def is_overlay(path: Path) -> bool:
    """A scenario overlay (top-level `overrides`) rather than a whole mission config."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "overrides" in data


def overlay_text(path: Path, quick: bool = False) -> tuple[dict, str, float]:
    """(overlay, merged mission YAML text, drift start day) of a scenario overlay file."""
    from flight_sw.config.loader import ConfigError

    over = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    for key in ("title", "description", "sources", "drift_start_day", "days", "quick_days", "overrides"):
        if key not in over:
            raise ConfigError(str(path), [f"{key}: missing; a scenario overlay needs title, description, "
                                          "sources, drift_start_day, days, quick_days and overrides"])
    if not isinstance(over["overrides"], dict):
        raise ConfigError(str(path), ["overrides: expected a mapping of mission sections to override"])
    base = yaml.safe_load(BASE_CONFIG.read_text(encoding="utf-8"))
    merged = _merge(base, over["overrides"])
    days = float(over["quick_days"] if quick else over["days"])
    merged["mission"]["duration_days"] = days
    start = float(over["drift_start_day"])
    if quick:
        start = min(start, days * 0.4)
        drift = merged["payload"]["drift"]
        for key in ("abrupt_shift_day", "filter_shift_day", "new_surface_day"):
            if drift.get(key) is not None:
                drift[key] = start
    header = f"# {over['title']}: scenario overlay {Path(path).name} merged into {BASE_CONFIG.name}\n"
    return over, header + yaml.safe_dump(merged, sort_keys=False), start


def prelaunch_products(seed: int) -> tuple:
    """The ground's pre-launch flight model and teacher for a seed (as `Simulation` makes them)."""
    from flight_sw.config import load_mission_config
    from sim.prelaunch import prelaunch_teacher, train_prelaunch_model
    from sim.simulation import spawn_rngs

    cfg = load_mission_config(BASE_CONFIG)
    return train_prelaunch_model(cfg, spawn_rngs(seed)["prelaunch"]), prelaunch_teacher(cfg, seed)


#: Labelled undrifted flight pixels a label-headroom head is refitted on, and scored on.
HEADROOM_TRAIN_PIXELS = 6000
HEADROOM_TEST_PIXELS = 8000


def label_headroom(seed: int, products: tuple) -> dict:
    """What a head refit can gain from a label source, with no drift and plenty of labels.

    On undrifted flight pixels (healthy sensor, the flight half of the spectral library:
    the launch domain gap only), the pre-launch head's accuracy against the head refitted
    (the onboard anchor and ridge) on 6,000 pixels labelled by (a) the onboard teacher,
    abstaining as it does in flight, and (b) the simulator's truth. (b) is what the bound
    arm can reach; (a) is what a head that learned all of its main label source's labels
    reaches (the onboard learner also has site labels and a gate). Diagnostic only: scored
    with truth, never flown. Returns accuracies in percent.
    """
    from flight_sw.config import load_mission_config
    from flight_sw.ml.model import FeatureExtractor
    from flight_sw.ml.teacher import Teacher
    from sim.prelaunch import prelaunch_dataset

    cfg = load_mission_config(BASE_CONFIG)
    image, teacher_image = products
    x_train, y_train = prelaunch_dataset(cfg, np.random.default_rng([seed, 101]), HEADROOM_TRAIN_PIXELS, "flight")
    x_test, y_test = prelaunch_dataset(cfg, np.random.default_rng([seed, 102]), HEADROOM_TEST_PIXELS, "flight")
    extractor = FeatureExtractor(image)
    aug, n_classes = image.head.shape
    phi_train = np.zeros((len(x_train), aug))
    phi_test = np.zeros((len(x_test), aug))
    extractor.features_into(x_train, phi_train)
    extractor.features_into(x_test, phi_test)
    teacher_labels = np.zeros(len(x_train), np.int64)
    confidence = np.zeros(len(x_train))
    Teacher(teacher_image, batch=len(x_train)).label_into(x_train, len(x_train), teacher_labels, confidence)
    anchor = cfg.model.prior_anchor
    prior_q = anchor * image.stats_q.sum(axis=0) + cfg.model.ridge_lambda * np.eye(aug)
    prior_b = anchor * image.stats_b
    onehot = np.eye(n_classes)

    def accuracy(head: np.ndarray) -> float:
        return float(np.mean(np.argmax(phi_test @ head, axis=1) == y_test)) * 100.0

    def refit(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
        f = phi_train[rows]
        return np.linalg.solve(f.T @ f + prior_q, f.T @ onehot[labels] + prior_b)

    given = teacher_labels >= 0
    everything = np.ones(len(x_train), bool)
    return {
        "prelaunch": accuracy(image.head),
        "teacher_refit": accuracy(refit(given, teacher_labels[given])),
        "truth_refit": accuracy(refit(everything, y_train)),
        "teacher_coverage": float(np.mean(given)) * 100.0,
        "teacher_precision": float(np.mean(teacher_labels[given] == y_train[given])) * 100.0,
    }


def per_orbit(t_s, values, period_s: float, n_orbits: int) -> np.ndarray:
    """Mean of `values` per orbit (NaN where an orbit has none)."""
    k = np.floor(np.asarray(t_s, dtype=np.float64) / period_s).astype(np.int64)
    v = np.asarray(values, dtype=np.float64)
    ok = (k >= 0) & (k < n_orbits)
    counts = np.bincount(k[ok], minlength=n_orbits).astype(np.float64)
    sums = np.bincount(k[ok], weights=v[ok], minlength=n_orbits)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def recovery_orbits(acc: np.ndarray, reference: float, start_orbit: int) -> float:
    """Orbits from start_orbit until acc >= reference - tolerance (censored at the run's end)."""
    after = acc[start_orbit:]
    ok = np.flatnonzero(np.isfinite(after) & (after >= reference - RECOVERY_TOLERANCE))
    return float(ok[0]) if len(ok) else float(len(after))


def run_one(name: str, seed: int, quick: bool, products: tuple) -> dict:
    """One scenario and seed: the per-orbit series of every arm and the run's figures."""
    from flight_sw.ml.kernels import classify_into
    from flight_sw.ml.model import FeatureExtractor
    from sim.prelaunch import prelaunch_dataset
    from sim.simulation import Simulation

    t0 = time.perf_counter()
    sc = load_scenario(name, quick)
    image, teacher = products
    sim = Simulation(sc.cfg, seed, sc.days * 86400.0, lambda p: None, image=image, teacher=teacher)
    while not sim.done:
        sim.advance(86400)
    log = sim.log
    period = sim.world.orbit.period_s
    n_orbits = int(math.ceil(sc.days * 86400.0 / period))
    start_orbit = int(sc.drift_start_day * 86400.0 // period)
    series = {arm: per_orbit(log.acc_t_s, getattr(log, f"acc_{arm}"), period, n_orbits) for arm in ARMS}
    frozen = series["frozen"]
    ref_orbits = frozen[: max(start_orbit, 1)] if start_orbit > 0 else frozen[:1]
    reference = float(np.nanmean(ref_orbits))
    figures = {}
    for arm in ARMS:
        post = series[arm][start_orbit:]
        figures[f"{arm}_drop_pts"] = (reference - float(np.nanmean(post))) * 100.0
    figures["onboard_recovery_orbits"] = recovery_orbits(series["onboard"], reference, start_orbit)
    figures["ground_recovery_orbits"] = recovery_orbits(series["ground"], reference, start_orbit)
    # Forgetting: the held-out undrifted flight distribution, pre-launch head against the final onboard head.
    x, y = prelaunch_dataset(sc.cfg, np.random.default_rng([seed, 11]), 4000, split="flight")
    phi = np.zeros((len(x), image.head.shape[0]))
    FeatureExtractor(image).features_into(x, phi)
    scores = np.zeros((len(x), image.head.shape[1]))
    pred = np.zeros(len(x), np.int64)
    classify_into(phi, np.ascontiguousarray(image.head), scores, pred)
    acc_pre = float(np.mean(pred == y))
    learner = sim.fsw.learner
    learner.extractor.features_into(x, phi)  # the onboard model: its input normalisation (adapted or not)
    classify_into(phi, learner.slots[learner.active], scores, pred)
    figures["forgetting_pts"] = (acc_pre - float(np.mean(pred == y))) * 100.0
    adapt = sim.fsw.adaptation
    figures["adaptations_committed"] = float(adapt.accepted)
    figures["adaptations_refused"] = float(adapt.refused)
    layer = sim.fsw.learning.layer
    figures["layer_commits"] = float(layer.accepted)
    figures["layer_refused"] = float(layer.refused)
    src = np.asarray(log.lab_source, dtype=np.int64)
    labels, agree = {}, {}
    for code, source in enumerate(("site", "teacher", "self")):
        m = src == code
        t = np.asarray(log.lab_t_s)[m]
        n = np.asarray(log.lab_n, dtype=np.float64)[m]
        a = np.asarray(log.lab_agree, dtype=np.float64)[m]
        k = np.floor(t / period).astype(np.int64)
        cnt = np.bincount(k, weights=n, minlength=n_orbits)[:n_orbits]
        agr = np.bincount(k, weights=a, minlength=n_orbits)[:n_orbits]
        labels[source] = cnt
        with np.errstate(invalid="ignore", divide="ignore"):
            agree[source] = np.where(cnt > 0, agr / cnt, np.nan)
    teacher_acc = per_orbit(log.acc_teacher_t_s, log.acc_teacher, period, n_orbits) if log.acc_teacher else None
    figures["teacher_post_accuracy"] = float(np.nanmean(teacher_acc[start_orbit:])) if teacher_acc is not None \
        else math.nan
    return {
        "scenario": name, "seed": seed, "days": sc.days, "orbit_period_s": period, "n_orbits": n_orbits,
        "drift_start_s": sc.drift_start_day * 86400.0, "start_orbit": start_orbit, "reference_level": reference,
        "series": series, "labels": labels, "agreement": agree, "teacher_accuracy": teacher_acc,
        "figures": figures, "labels_total": {s: float(v.sum()) for s, v in labels.items()},
        "wall_s": time.perf_counter() - t0,
    }


def ci95(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), 0.0
    t = T975[min(len(v) - 1, len(T975)) - 1]
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(len(v)))


def _band(rows: list, get) -> dict:
    stack = np.stack([get(r) for r in rows])
    mean = _nanmean0(stack)
    n = np.sum(np.isfinite(stack), axis=0)
    dev = np.where(np.isfinite(stack), stack - mean, 0.0)
    sd = np.sqrt(np.sum(dev * dev, axis=0) / np.maximum(n - 1, 1))
    t = np.array([T975[min(max(k - 1, 1), len(T975)) - 1] for k in n])
    half = np.where(n > 1, t * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    return {"mean": _json_list(mean), "lo": _json_list(mean - half), "hi": _json_list(mean + half)}


def _json_list(a) -> list:
    return [None if not math.isfinite(float(x)) else round(float(x), 5) for x in a]


def _nanmean0(stack: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN; NaN (no warning) where a column has no value."""
    n = np.sum(np.isfinite(stack), axis=0)
    total = np.nansum(stack, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def summarise(results: list[dict], seeds: list[int], wall_s: float, truth_labels: int,
              headroom: list[dict] | None = None) -> dict:
    """The suite document (the review page's input) with the flat bench figures.

    `headroom`: `label_headroom` per seed (optional: figures `learning.label_headroom_*_pts`,
    mean over seeds of the refitted head's accuracy minus the pre-launch head's).
    """
    scenarios, flat = {}, {}
    wins = strict = 0
    gaps = []
    for name in SCENARIOS:
        rows = [r for r in results if r["scenario"] == name]
        if not rows:
            continue
        sc = load_scenario(name)
        figs = {}
        for arm in ARMS:
            mean, half = ci95([r["figures"][f"{arm}_drop_pts"] for r in rows])
            figs[f"{arm}_drop_pts"] = {"mean": mean, "ci95": half}
            flat[f"learning.{name}.{arm}_drop_pts"] = mean
        flat[f"learning.{name}.onboard_ci95_pts"] = figs["onboard_drop_pts"]["ci95"]
        for key in ("onboard_recovery_orbits", "ground_recovery_orbits", "forgetting_pts", "adaptations_committed",
                    "adaptations_refused", "layer_commits", "layer_refused"):
            figs[key] = ci95([r["figures"][key] for r in rows])[0]
            flat[f"learning.{name}.{key}"] = figs[key]
        best = min(figs[f"{a}_drop_pts"]["mean"] for a in BASELINES)
        if figs["onboard_drop_pts"]["mean"] <= best + figs["onboard_drop_pts"]["ci95"]:
            wins += 1
        # The same comparison paired by seed (same world, same frames): far tighter than two
        # independent intervals, and what "strictly better" needs.
        best_arm = min(BASELINES, key=lambda a: figs[f"{a}_drop_pts"]["mean"])
        diff, diff_ci = ci95([r["figures"]["onboard_drop_pts"] - r["figures"][f"{best_arm}_drop_pts"] for r in rows])
        figs["onboard_vs_best"] = {"arm": best_arm, "mean": diff, "ci95": diff_ci}
        flat[f"learning.{name}.onboard_vs_best_pts"] = diff
        flat[f"learning.{name}.onboard_vs_best_ci95_pts"] = diff_ci
        strict += int(diff + diff_ci < 0.0)
        gaps.append(figs["onboard_drop_pts"]["mean"] - figs["bound_drop_pts"]["mean"])
        if name == "stress":
            flat["learning.teacher_post_shift_accuracy"] = ci95([r["figures"]["teacher_post_accuracy"]
                                                                 for r in rows])[0]
        n_orbits = min(r["n_orbits"] for r in rows)
        period = rows[0]["orbit_period_s"]
        cut = [dict(r, **{"series": {a: s[:n_orbits] for a, s in r["series"].items()}}) for r in rows]
        scenarios[name] = {
            "title": sc.title, "description": sc.description, "sources": sc.sources,
            "days": rows[0]["days"], "orbit_period_s": period, "drift_start_s": rows[0]["drift_start_s"],
            "reference_level": float(np.mean([r["reference_level"] for r in rows])),
            "orbits": list(range(n_orbits)),
            "accuracy": {a: _band(cut, lambda r, a=a: r["series"][a]) for a in ARMS},
            "labels_by_source": {s: _json_list(np.mean([r["labels"][s][:n_orbits] for r in rows], axis=0))
                                 for s in ("site", "teacher", "self")},
            "label_agreement": {s: _json_list(_nanmean0(np.stack([r["agreement"][s][:n_orbits] for r in rows])))
                                for s in ("site", "teacher", "self")},
            "teacher_accuracy": (_json_list(_nanmean0(np.stack([r["teacher_accuracy"][:n_orbits] for r in rows])))
                                 if rows[0]["teacher_accuracy"] is not None else None),
            "figures": figs,
            "labels_total": {s: float(np.mean([r["labels_total"][s] for r in rows])) for s in ("site", "teacher",
                                                                                               "self")},
            "run_wall_s": [r["wall_s"] for r in rows],
        }
    flat["learning.scenarios"] = float(len(scenarios))
    flat["learning.seeds"] = float(len(seeds))
    flat["learning.onboard_wins"] = float(wins)
    flat["learning.onboard_strict_wins"] = float(strict)
    flat["learning.worst_gap_to_bound_pts"] = float(max(gaps)) if gaps else math.nan
    flat["learning.truth_labels"] = float(truth_labels)
    flat["learning.suite_wall_s"] = wall_s
    for source in ("teacher", "truth") if headroom else ():
        mean, half = ci95([h[f"{source}_refit"] - h["prelaunch"] for h in headroom])
        flat[f"learning.label_headroom_{source}_pts"] = mean
        flat[f"learning.label_headroom_{source}_ci95_pts"] = half
    return {"version": 1, "created_by": "flightsim bench learning", "seeds": list(seeds), "arms": list(ARMS),
            "figures": flat, "scenarios": scenarios, "label_headroom": list(headroom or [])}


def truth_label_count(days: float = 0.5, seed: int = 1) -> int:
    """Labels whose value changes when every truth record of the simulator is scrambled.

    The same stress run twice: once as is, once with the payload's truth records (the true
    classes of every acquisition and the sites' public true maps) replaced by garbage after
    the pixels are drawn. A label path that read truth would give different labels; one
    that sees only pixels, ancillary data and uplinked data gives the same. Returns the
    number of differing labels (0 when no label reads truth).
    """
    runs = []
    for poison in (False, True):
        sc = load_scenario("stress", quick=True)
        from sim.simulation import Simulation

        sim = Simulation(sc.cfg, seed, days * 86400.0, lambda p: None)
        got = []
        if poison:
            scramble_truth_records(sim)
        sim.fsw.label_tap = lambda source, t, px, lab, anc, _got=got: _got.append((source, lab.copy()))
        sim.advance(sim.n_ticks)
        runs.append(got)
    a, b = runs
    if len(a) != len(b):
        return max(sum(len(x[1]) for x in a), sum(len(x[1]) for x in b))
    return int(sum(np.count_nonzero(x[1] != y[1]) + (x[0] != y[0]) * len(x[1]) for x, y in zip(a, b, strict=True)))


def scramble_truth_records(sim) -> None:
    """Replace every truth record a label path could read with garbage (pixels are unaffected)."""
    payload = sim.payload
    sites = sim.world.sites
    payload._maps = sites.true_maps.copy()  # pixels keep being drawn from the real maps
    sites.true_maps[...] = (sites.true_maps + 1) % len(sim.cfg.payload.classes)

    class _Scrambled(dict):
        def __getitem__(self, key):
            return (dict.__getitem__(self, key) + 3) % len(sim.cfg.payload.classes)

        def get(self, key, default=None):
            return dict.get(self, key, default)

    payload._truth = _Scrambled(payload._truth)


def run_suite(client, seeds: int, quick: bool, log, scenarios=SCENARIOS) -> dict:
    """Every scenario x seed on a Dask client (one process per worker); returns the suite document."""
    from distributed import as_completed

    from flight_sw.config import load_mission_config

    base_seed = load_mission_config(BASE_CONFIG).mission.seed
    seed_list = [base_seed + k for k in range(seeds)]
    t0 = time.perf_counter()
    products = {s: client.submit(prelaunch_products, s, key=f"prelaunch-{s}", pure=False) for s in seed_list}
    longest_first = sorted(scenarios, key=lambda n: -load_scenario(n, quick).days)  # better packing
    futures = {client.submit(run_one, name, s, quick, products[s], key=f"suite-{name}-{s}", pure=False): (name, s)
               for name in longest_first for s in seed_list}
    truth_future = client.submit(truth_label_count, key="truth-labels", pure=False)
    headroom_futures = [client.submit(label_headroom, s, products[s], key=f"headroom-{s}", pure=False)
                        for s in seed_list]
    results = []
    for done, fut in enumerate(as_completed(futures), 1):
        r = fut.result()
        results.append(r)
        f = r["figures"]
        log(f"[{done}/{len(futures)}] {r['scenario']} seed {r['seed']}: {r['wall_s']:.0f} s; drop frozen "
            f"{f['frozen_drop_pts']:.2f}, calibration {f['calibration_drop_pts']:.2f}, onboard "
            f"{f['onboard_drop_pts']:.2f}, bound {f['bound_drop_pts']:.2f} pts "
            f"(elapsed {time.perf_counter() - t0:.0f} s)")
    truth_labels = truth_future.result()
    headroom = [dict(f.result(), seed=s) for f, s in zip(headroom_futures, seed_list, strict=True)]
    return summarise(results, seed_list, time.perf_counter() - t0, truth_labels, headroom)
