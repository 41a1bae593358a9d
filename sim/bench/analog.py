"""Benchmark group `analog`: the analog optimizer (emulator + driver) against the digital solver.

The problems are **the default training problems**: the default mission flown by the
real flight software with the analog backend (the emulator in-process, its clock
following mission time: drift, calibration, reprogramming), 30 days with an abrupt
detector shift on day 10 (`--quick`: 2 days, shift on day 1), every system the
learner hands its optimizer recorded with the solve's report (`sim.analog.problems`):
the head's (n = 33: 32 features + bias, m = 6 classes, in the learner's whitened basis)
and the last layer's (n = 48, one right-hand side).

Figures (numbers; `flightsim bench analog [--quick]`):

- ``analog.energy_ratio_digital_to_analog``: the mission's own problems (head and last-layer
  systems) as the flight software solved them with the mission's driver (the energy rule,
  `device.driver_energy_aware`, on by default): the energy a digital Cholesky (1 nJ/flop CPU
  model, residual check included) would have spent on every one of them, over the energy
  spent (device energy + the driver's digital refinement and checks + the systems the rule
  sent digital).
- ``analog.rounds_p95`` (``_p50``): refinement rounds to the 1e-6 relative residual over the
  solves the device served in that mission; ``analog.fallback_share``: share of the mission's
  solves the digital fallback served for any reason but the energy rule (faults,
  non-convergence, budget); ``analog.energy_rule_device_share``: share the device served;
  ``analog.mission_wrong_accepted``: answers above 1e-6 (recomputed in float64).
- ``analog.{head,layer}_solve_energy_uj_{analog,digital}``: mean solve energy per kind of
  problem and optimizer path, as flown (a path a kind never took has no key).
- ``analog.head_energy_ratio_device_only``, ``analog.head_rounds_p95_device_only``,
  ``analog.head_fallback_share_device_only``, ``analog.head_wrong_accepted_device_only``: the
  head's systems (n = 33, m = 6) replayed in order through a driver with the rule off, every
  one on the device: what the rule acts on.
- ``analog.layer_energy_ratio_digital_to_analog``, ``analog.layer_rounds_p95``,
  ``analog.layer_fallback_share``, ``analog.layer_solves``, ``analog.layer_wrong_accepted``:
  the last layer's systems as flown (one right-hand side, n = model.layer_units x
  layer_basis; flight_sw/ml/layer_update.py), and ``analog.mission_energy_ratio_all_systems``:
  head and layer systems together with every one on the device (the rule off).
- ``analog.raw_rel_residual_median``: relative residual of the device's first answer on
  the head's systems, no refinement, 8-bit DAC, input DAC and ADC.
- ``analog.campaign_solves``, ``analog.campaign_wrong_accepted``,
  ``analog.campaign_crashes``: fault campaign on the same problems, every fault kind
  injected at random (10,000 solves; 300 with --quick).
- ``analog.solves_per_s_inproc``, ``analog.solves_per_s_tcp``: throughput through the
  in-process transport and through TCP to `flightsim hil serve` in a subprocess.

Context figures: ``analog.learner_kappa_median``/``_p95``/``_max`` (exact condition numbers
of the whitened systems), ``analog.learner_refresh_share`` (solves preceded by a
whitening-basis refresh, one digital Cholesky each), ``analog.learner_flight_basis_*``
(the same systems in the flight basis, as the learner built them before whitening: the
driver falls back on them), ``analog.reference_*`` (synthetic SPD systems, kappa
log-uniform in [2, 20]: how the device does beyond the learner's kappa <= 4), and
``analog.energy_ratio_n128``/``_n512`` (larger heads).
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sim.bench import median_time_s

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"
N, M = 33, 6
CHOLESKY_N_MAX = 64  # the default device's array (analog_n_max): the largest mission system
KAPPA_RANGE = (2.0, 20.0)

# Driver counters that make each injected fault kind visible (any of them increasing).
VISIBLE_BY = {
    "stuck": ("verify_failures",),
    "dead": ("timeouts",),
    "brownout": ("timeouts", "device_resets"),
    "corrupt": ("frames_rejected", "bad_replies", "stale_replies"),
    "seu": ("seu_detected", "selftest_failures"),
    "slow_settle": ("settle_timeouts", "selftest_failures"),
    "no_settle": ("settle_timeouts", "selftest_failures"),
    "saturate": ("saturations", "selftest_failures"),
    "wrong_output": ("stalled_rounds", "bad_outputs", "selftest_failures"),
}


# Reply statuses that make the driver discard a device answer, and the counters that show them.
MASKING_STATUS = {
    3: ("settle_timeouts",),  # STATUS_SETTLE_TIMEOUT
    4: ("saturations",),  # STATUS_SATURATED
    2: ("not_programmed",),  # STATUS_NOT_PROGRAMMED
}


def reference_problems(n_problems: int, seed: int, n: int = N, m: int = M, kappa=KAPPA_RANGE):
    from sim.analog.problems import random_spd

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_problems):
        k = float(np.exp(rng.uniform(np.log(kappa[0]), np.log(kappa[1]))))
        out.append((k, random_spd(rng, n, k), rng.standard_normal((n, m))))
    return out


def _driver(params, seed: int, n: int = N, m: int = M, **driver_kw):
    from flight_sw.devices.driver import AnalogDriver, DriverConfig
    from flight_sw.devices.transport import InProcessTransport
    from sim.analog import DeviceEndpoint

    ep = DeviceEndpoint(params, seed)
    return AnalogDriver(n, m, InProcessTransport(ep), DriverConfig(**driver_kw)), ep


def _rel_res(q, x, b) -> float:
    return float(np.linalg.norm(q @ x - b) / np.linalg.norm(b))


def _histogram(rounds: np.ndarray) -> dict[int, int]:
    return {int(v): int(np.sum(rounds == v)) for v in np.unique(rounds)}


def mission_figures(ps, log) -> dict[str, float]:
    """Conditioning of the head systems the mission made, and the whitening refreshes."""
    kappa = ps.exact_kappa()
    est = np.array(ps.kappa_estimate)
    n = len(ps)
    log(f"  whitened head systems: kappa median {np.median(kappa):.2f}, p95 {np.percentile(kappa, 95):.2f}, max "
        f"{kappa.max():.2f} (learner's Lanczos estimate / exact: median {np.median(est / kappa):.3f}); "
        f"basis refreshes {ps.refreshes} ({ps.refreshes / max(n, 1):.2%} of solves)")
    st = ps.stats
    if st:
        log(f"  driver: programs {st.get('programs')}, calibrations {st.get('calibrations')}, ADC re-rangings "
            f"{st.get('range_increases')}, retries {st.get('retries_total')}, selftests {st.get('selftests')}")
    return {
        "analog.mission_solves": float(n + len(ps.layer)),
        "analog.learner_kappa_median": float(np.median(kappa)),
        "analog.learner_kappa_p95": float(np.percentile(kappa, 95)),
        "analog.learner_kappa_max": float(kappa.max()),
        "analog.learner_refresh_share": ps.refreshes / max(n, 1),
    }


def _flown_solves(ps) -> list[tuple]:
    """Every system of the mission as flown: (kind, q, b, path, rounds, fallback reason, energy_j, checked residual)."""
    head = [("head", q, b, path, r, f, e, res) for q, b, path, r, f, e, res in
            zip(ps.q, ps.b, ps.path, ps.rounds, ps.fallback, ps.energy_j, ps.checked_residual, strict=True)]
    layer = [("layer", q, b, path, r, f, e, res) for q, b, path, r, f, e, res, _ in ps.layer]
    return head + layer


@functools.lru_cache(maxsize=4)
def _cholesky_solver(energy_per_flop_j: float):
    """One digital solver for the bench's Cholesky energies: it solves every problem up to the
    device's size in its leading block."""
    from flight_sw.devices.optimizer import DigitalSolver

    return DigitalSolver(CHOLESKY_N_MAX, M, energy_per_flop_j)


def _cholesky_j(q, b, energy_per_flop_j: float) -> float:
    """A digital Cholesky's modelled energy on Q X = B (factor, substitutions, residual check)."""
    return _cholesky_solver(energy_per_flop_j).solve(q, b)[1].energy_j


def flown_energy(ps, cfg, log) -> dict[str, float]:
    """The mission's own problems (head and layer) as the flight software solved them with the
    mission's driver (energy rule on by default): all-digital energy over the energy spent, the
    rounds and fallbacks of the solves the device served, and mean solve energy per kind and path."""
    from flight_sw.devices.driver import FB_ENERGY
    from flight_sw.devices.optimizer import PATH_ANALOG

    solves = _flown_solves(ps)
    flop_j = cfg.device.digital_energy_per_flop_j
    spent = sum(s[6] for s in solves)
    cholesky = sum(_cholesky_j(s[1], s[2], flop_j) for s in solves)
    analog = [s for s in solves if s[3] == PATH_ANALOG]
    by_rule = sum(1 for s in solves if s[5] == FB_ENERGY)
    faulted = sum(1 for s in solves if s[3] != PATH_ANALOG and s[5] != FB_ENERGY)
    rounds = np.array([s[4] for s in analog])
    wrong = sum(1 for s in solves if not s[7] <= 1e-6)
    n = max(len(solves), 1)
    out = {
        "analog.energy_ratio_digital_to_analog": float(cholesky / spent),
        "analog.energy_rule_device_share": len(analog) / n,
        "analog.fallback_share": faulted / n,
        "analog.rounds_p95": float(np.percentile(rounds, 95)) if rounds.size else 99.0,
        "analog.rounds_p50": float(np.percentile(rounds, 50)) if rounds.size else 99.0,
        "analog.mission_wrong_accepted": float(wrong),
    }
    for kind in ("head", "layer"):  # mean solve energy per kind of problem and per optimizer path, as flown
        for path_name, on_device in (("analog", True), ("digital", False)):
            e = [s[6] for s in solves if s[0] == kind and (s[3] == PATH_ANALOG) == on_device]
            if e:
                out[f"analog.{kind}_solve_energy_uj_{path_name}"] = float(np.mean(e) * 1e6)
    log(f"mission solves as flown ({'energy rule on' if cfg.device.driver_energy_aware else 'energy rule off'}): "
        f"{len(solves)} ({len(ps)} head, {len(ps.layer)} layer); {len(analog)} on the device (rounds histogram "
        f"{_histogram(rounds)}), {by_rule} sent digital by the energy rule, {faulted} other fallbacks, {wrong} "
        f"accepted above 1e-6; all-digital {cholesky * 1e3:.2f} mJ vs {spent * 1e3:.2f} mJ spent -> ratio "
        f"{out['analog.energy_ratio_digital_to_analog']:.2f}")
    log("  mean solve energy per kind and path [uJ]: " + ", ".join(
        f"{k.removeprefix('analog.').removesuffix('_solve_energy_uj_analog').removesuffix('_solve_energy_uj_digital')}"
        f" {'analog' if k.endswith('analog') else 'digital'} {v:.1f}" for k, v in out.items() if "_solve_energy_uj_" in k))
    return out


def head_device_only(ps, cfg, log) -> dict[str, float]:
    """The head's systems again, in mission order, through a driver with the energy rule off: what
    the device costs on them when it gets every one (the figure the rule acts on)."""
    from flight_sw.devices.driver import AnalogDriver
    from flight_sw.devices.factory import driver_config
    from flight_sw.devices.optimizer import PATH_ANALOG, DigitalSolver
    from flight_sw.devices.transport import InProcessTransport
    from sim.analog import DeviceEndpoint

    dcfg = dataclasses.replace(driver_config(cfg.device), energy_aware=False)
    drv = AnalogDriver(N, M, InProcessTransport(DeviceEndpoint.from_config(cfg.device, 17)), dcfg)
    digital = DigitalSolver(N, M, cfg.device.digital_energy_per_flop_j)
    e_an, e_dig, rounds = [], [], []
    fallbacks = wrong = 0
    for q, b in zip(ps.q, ps.b, strict=True):
        x, rep = drv.solve(q, b)
        wrong += not (rep.ok and np.linalg.norm(q @ x - b) <= 1e-6 * np.linalg.norm(b))
        if rep.path == PATH_ANALOG:
            e_an.append(rep.energy_j)
            e_dig.append(digital.solve(q, b)[1].energy_j)
            rounds.append(rep.rounds)
        else:
            fallbacks += 1
    n = max(len(ps), 1)
    out = {"analog.head_fallback_share_device_only": fallbacks / n,
           "analog.head_wrong_accepted_device_only": float(wrong)}
    if e_an:
        out["analog.head_energy_ratio_device_only"] = float(np.mean(e_dig) / np.mean(e_an))
        out["analog.head_rounds_p95_device_only"] = float(np.percentile(rounds, 95))
        log(f"head systems, every one on the device (rule off): {len(e_an)} analog, {fallbacks} fallbacks, {wrong} "
            f"above 1e-6; analog path {np.mean(e_an) * 1e6:.1f} uJ vs Cholesky {np.mean(e_dig) * 1e6:.1f} uJ -> ratio "
            f"{out['analog.head_energy_ratio_device_only']:.2f}, rounds histogram {_histogram(np.array(rounds))}")
    return out


def layer_energy(ps, cfg, log) -> dict[str, float]:
    """The last layer's systems (one right-hand side, n = layer_units x layer_basis): the analog
    path against a digital Cholesky of the same system."""
    from flight_sw.devices.optimizer import PATH_ANALOG

    if not ps.layer:
        log("last-layer systems: none solved in this mission")
        return {"analog.layer_solves": 0.0}
    flop_j = cfg.device.digital_energy_per_flop_j
    e_an, e_dig, rounds = [], [], []
    for q, b, path, r, _, e, _, _ in ps.layer:
        if path == PATH_ANALOG:
            e_an.append(e)
            e_dig.append(_cholesky_j(q, b, flop_j))
            rounds.append(r)
    out = {
        "analog.layer_solves": float(len(ps.layer)),
        "analog.layer_fallback_share": float(np.mean([f != 0 for *_, f, _, _, _ in ps.layer])),
        "analog.layer_wrong_accepted": float(sum(res > 1e-6 for *_, res, _ in ps.layer)),
    }
    if e_an:
        out["analog.layer_energy_ratio_digital_to_analog"] = float(np.mean(e_dig) / np.mean(e_an))
        out["analog.layer_rounds_p95"] = float(np.percentile(rounds, 95))
        log(f"last-layer systems (n = {ps.layer[0][0].shape[0]}, one right-hand side): {len(ps.layer)} solves, "
            f"analog path {np.mean(e_an) * 1e6:.1f} uJ vs Cholesky {np.mean(e_dig) * 1e6:.1f} uJ -> ratio "
            f"{out['analog.layer_energy_ratio_digital_to_analog']:.2f}, rounds p95 {out['analog.layer_rounds_p95']:g}, "
            f"fallback {out['analog.layer_fallback_share']:.1%}")
    return out


def all_systems_device_only(figures: dict[str, float], ps, cfg) -> dict[str, float]:
    """Head and layer systems together with every one on the device (rule off): from the head replay's
    and the layer's mean energies, weighted by their counts."""
    head_ratio = figures.get("analog.head_energy_ratio_device_only")
    layer_ratio = figures.get("analog.layer_energy_ratio_digital_to_analog")
    if head_ratio is None or layer_ratio is None:
        return {}
    flop_j = cfg.device.digital_energy_per_flop_j
    head_dig = float(np.mean([_cholesky_j(q, b, flop_j) for q, b in zip(ps.q, ps.b, strict=True)]))
    layer_dig = float(np.mean([_cholesky_j(q, b, flop_j) for q, b, *_ in ps.layer]))
    dig = len(ps) * head_dig + len(ps.layer) * layer_dig
    spent = len(ps) * head_dig / head_ratio + len(ps.layer) * layer_dig / layer_ratio
    return {"analog.mission_energy_ratio_all_systems": float(dig / spent)}


def raw_accuracy(problems, params, log) -> float:
    raw_params = dataclasses.replace(params, dac_bits=8, input_bits=8, adc_bits=8)
    drv, _ = _driver(raw_params, seed=12, max_rounds=1, max_retries=0)
    raw = []
    for _, q, b in problems:
        drv.solve(q, b)
        raw.append(drv.report.raw_rel_residual)
    med = float(np.nanmedian(raw))
    log(f"raw accuracy (8-bit DAC, input DAC and ADC, one settle, no refinement): median rel. residual {med:.3g}, "
        f"p95 {np.nanpercentile(raw, 95):.3g}")
    return med


def flight_basis_figures(ps, params, n_problems: int, log) -> dict[str, float]:
    """The same systems in the flight basis (no whitening): what the driver does with kappa ~1e7."""
    idx = np.linspace(0, len(ps) - 1, min(n_problems, len(ps))).astype(int)
    drv, _ = _driver(params, seed=14)
    fb = wrong = 0
    kappas = []
    for i in idx:
        q, b = ps.flight_basis(int(i))
        w = np.linalg.eigvalsh(q)
        kappas.append(w[-1] / w[0])
        x, r = drv.solve(q, b)
        fb += r.fallback
        wrong += bool(r.ok and _rel_res(q, x, b) > drv.cfg.residual_tolerance)
    share = fb / len(idx)
    log(f"the same systems in the flight basis (no whitening), {len(idx)} of them: kappa median {np.median(kappas):.3g}, "
        f"fallback share {share:.2f}, wrong accepted {wrong}")
    return {"analog.learner_flight_basis_kappa_median": float(np.median(kappas)),
            "analog.learner_flight_basis_fallback_share": share}


def reference_figures(problems, params, log) -> dict[str, float]:
    """Synthetic SPD systems, kappa log-uniform in KAPPA_RANGE: the device beyond the learner's regime."""
    drv, _ = _driver(params, seed=11)
    rounds, kappas, fb = [], [], 0
    for k, q, b in problems:
        _, r = drv.solve(q, b)
        if r.fallback:
            fb += 1
        else:
            rounds.append(r.rounds)
            kappas.append(k)
    rounds = np.array(rounds)
    kappas = np.array(kappas)
    log(f"reference set: {len(problems)} SPD problems n={N} m={M}, kappa log-uniform {KAPPA_RANGE}: rounds histogram "
        f"{_histogram(rounds)}, p95 {np.percentile(rounds, 95):g}; fallback {fb}")
    for lo, hi in ((2, 5), (5, 10), (10, 20)):
        sel = (kappas >= lo) & (kappas < hi)
        if sel.any():
            log(f"  kappa {lo}-{hi}: rounds p50 {np.percentile(rounds[sel], 50):g}, p95 {np.percentile(rounds[sel], 95):g}")
    return {"analog.reference_rounds_p95": float(np.percentile(rounds, 95)),
            "analog.reference_fallback_share": fb / len(problems)}


#: Device parameters varied one at a time around the defaults (the log's sensitivity table).
SENSITIVITY = (
    ("adc_bits", (9, 10, 12)),
    ("adc_averages", (64, 256, 1024, 4096)),
    ("output_noise", (0.02, 0.04, 0.1)),
    ("program_noise", (0.01, 0.02, 0.04)),
    ("program_slices", (1, 2)),
)


def sensitivity(problems, params, log) -> None:
    """Rounds and fallback on the mission's systems with one device parameter changed: the margin."""
    log(f"sensitivity on {len(problems)} of the mission's systems (one parameter changed at a time):")
    for name, values in SENSITIVITY:
        cells = []
        for v in values:
            drv, _ = _driver(dataclasses.replace(params, **{name: v}), seed=15)
            rounds, fb = [], 0
            for _, q, b in problems:
                _, r = drv.solve(q, b)
                fb += r.fallback
                if not r.fallback:
                    rounds.append(r.rounds)
            p95 = f"{np.percentile(rounds, 95):g}" if rounds else "-"
            mark = "*" if getattr(params, name) == v else ""
            cells.append(f"{v}{mark}: p95 {p95}, fallback {fb / len(problems):.0%}")
        log(f"  {name:15s} " + "; ".join(cells))


def energy_scaling(params, sizes, log) -> dict[str, float]:
    from flight_sw.devices.optimizer import DigitalSolver

    out = {}
    for n in sizes:
        big = dataclasses.replace(params, n_max=max(params.n_max, n))
        drv, _ = _driver(big, seed=13, n=n)
        dig = DigitalSolver(n, M, drv.cfg.energy_per_flop_j)
        e_an, e_dig = [], []
        for _, q, b in reference_problems(3, seed=n, n=n, kappa=(3.0, 3.0)):
            _, r = drv.solve(q, b)
            if not r.fallback:
                e_an.append(r.energy_j)
                e_dig.append(dig.solve(q, b)[1].energy_j)
        if e_an:
            ratio = float(np.mean(e_dig) / np.mean(e_an))
            out[f"analog.energy_ratio_n{n}"] = ratio
            log(f"energy scaling n={n}, m={M}, kappa 3: digital {np.mean(e_dig) * 1e3:.3f} mJ vs analog "
                f"{np.mean(e_an) * 1e3:.3f} mJ per solve -> ratio {ratio:.2f}")
    return out


def campaign(problems, params, n_solves: int, seed: int, log) -> dict[str, float]:
    """Every fault kind injected at random; every accepted X re-checked; faults must show in counters."""
    from sim.analog.faults import FAULT_KINDS

    drv, ep = _driver(params, seed=seed)
    rng = np.random.default_rng(seed)
    tol = drv.cfg.residual_tolerance
    wrong = crashes = 0
    served = {"refinement": 0, "retry": 0, "fallback": 0, "not_ok": 0}
    events: list[tuple[int, str]] = []
    deltas: list[dict[str, int]] = []
    stuck_until = -1
    injected = dict.fromkeys(FAULT_KINDS, 0)
    n_before = 0
    t0 = time.perf_counter()
    for i in range(n_solves):
        if i == stuck_until:
            ep.clear_stuck()
        ep.faults.clear()  # a fault drawn for a solve acts within it or expires (stuck cells persist)
        if rng.random() < 0.3:
            kind = FAULT_KINDS[int(rng.integers(len(FAULT_KINDS)))]
            injected[kind] += 1
            if kind == "stuck":
                n_cells = int(rng.integers(1, 4))
                for _ in range(n_cells):  # off-diagonal cells at a rail: always a real error
                    a, b_ = (int(v) for v in rng.choice(N, 2, replace=False))
                    ep.array.stuck[a, b_] = ep.array.stuck[b_, a] = float(rng.choice([-1.0, 1.0]))
                stuck_until = i + int(rng.integers(1, 6))
            elif kind == "dead":
                ep.faults.arm("dead", int(rng.integers(1, 10)))
            else:
                ep.faults.arm(kind, int(rng.integers(1, 3)))
        before = drv.stats.as_dict()
        _, q, b = problems[i % len(problems)]
        try:
            x, r = drv.solve(q, b)
        except Exception as exc:  # noqa: BLE001 - counting crashes is the point
            crashes += 1
            log(f"CRASH at solve {i}: {exc!r}")
            deltas.append({})
            continue
        after = drv.stats.as_dict()
        deltas.append({k: after[k] - before[k] for k in after if isinstance(after[k], int) and after[k] != before[k]})
        n_log = len(ep.faults.log)
        events.extend((i, kind, cmd) for cmd, kind in ep.faults.log[n_before:n_log])
        n_before = n_log
        if r.ok:
            if not (np.all(np.isfinite(x)) and _rel_res(q, x, b) <= tol):
                wrong += 1
            if r.fallback:
                served["fallback"] += 1
            elif r.retries:
                served["retry"] += 1
            else:
                served["refinement"] += 1
        else:
            served["not_ok"] += 1
    wall = time.perf_counter() - t0
    invisible: dict[str, int] = {}
    masked = 0
    for i, kind, cmd in events:
        window = deltas[i : i + 2]  # the solve it hit, or the next one (deferred effects)

        def seen(counters, window=window):
            return any(d.get(c, 0) > 0 for d in window for c in counters)

        if seen(VISIBLE_BY[kind]):
            continue
        # Another fault on the same command can hide this one's evidence (its reply lost or
        # corrupted, or an error status that made the driver discard the output): then that
        # fault's own counters must show.
        status, intact = ep.event_replies.get(cmd, (0, True))
        if not intact and seen(("timeouts", "frames_rejected", "bad_replies", "stale_replies")):
            masked += 1
        elif status in MASKING_STATUS and seen(MASKING_STATUS[status]):
            masked += 1
        else:
            invisible[kind] = invisible.get(kind, 0) + 1
    st = drv.stats
    by_kind = {k: sum(1 for _, kk, _ in events if kk == k) for k in FAULT_KINDS}
    log(f"campaign: {n_solves} solves in {wall:.1f} s, faults armed {injected}, hit a command {by_kind}")
    log(f"  served: refinement only {served['refinement']}, after retry {served['retry']}, fallback "
        f"{served['fallback']} (failed {st.fallback_failed}, device {st.fallback_device}, nonconverged "
        f"{st.fallback_nonconverged}, budget {st.fallback_budget}), not ok {served['not_ok']}")
    log(f"  wrong accepted {wrong}, crashes {crashes}, fault events not visible in counters {invisible or 0} "
        f"({masked} hidden behind a coincident fault that was itself visible)")
    log(f"  counters: timeouts {st.timeouts}, frames_rejected {st.frames_rejected}, crc {st.crc_errors}, "
        f"seu {st.seu_detected}, resets {st.device_resets}, settle_timeouts {st.settle_timeouts}, saturations "
        f"{st.saturations}, verify_failures {st.verify_failures}, stalled {st.stalled_rounds}, selftests "
        f"{st.selftests} ({st.selftest_failures} failed), health changes {st.health_changes}")
    total = max(n_solves, 1)
    return {
        "analog.campaign_solves": float(n_solves),
        "analog.campaign_wrong_accepted": float(wrong),
        "analog.campaign_crashes": float(crashes),
        "analog.campaign_fault_events": float(len(events)),
        "analog.campaign_faults_invisible": float(sum(invisible.values())),
        "analog.campaign_share_refinement": served["refinement"] / total,
        "analog.campaign_share_retry": served["retry"] / total,
        "analog.campaign_share_fallback": served["fallback"] / total,
    }


def throughput_inproc(problems, params, n: int) -> float:
    drv, _ = _driver(params, seed=21)
    sub = problems[:n]

    def go():
        for _, q, b in sub:
            drv.solve(q, b)

    return n / median_time_s(go, repeats=3, warmup=1)


def throughput_tcp(problems, n: int, log) -> float:
    from flight_sw.devices.driver import AnalogDriver, DriverConfig
    from flight_sw.devices.transport import transport_from_url

    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "hil", "serve", "--port", "0", "--seed", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=str(DEFAULT_CONFIG.parents[1]),
    )
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        if not line.startswith("device: tcp://"):
            raise RuntimeError(f"hil serve did not start: {line!r}")
        url = line.split(" ", 1)[1]
        drv = AnalogDriver(N, M, transport_from_url(url), DriverConfig(reply_timeout_s=2.0))
        sub = problems[:n]

        def go():
            for _, q, b in sub:
                drv.solve(q, b)

        rate = n / median_time_s(go, repeats=3, warmup=1)
        log(f"TCP via `flightsim hil serve` subprocess at {url}: {rate:.0f} solves/s "
            f"(timeouts {drv.stats.timeouts}, fallbacks {drv.stats.fallbacks})")
        drv.transport.close()
        return rate
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(quick: bool, log) -> dict[str, float]:
    from flight_sw.config import load_mission_config
    from sim.analog import DeviceParams
    from sim.analog.problems import mission_problems

    cfg = load_mission_config(DEFAULT_CONFIG)
    params = DeviceParams.from_config(cfg.device)
    days, shift_day = (2.0, 1.0) if quick else (30.0, 10.0)
    log(f"default training problems: {DEFAULT_CONFIG.name} flown {days:g} days (detector shift on day {shift_day:g}) "
        "with the analog backend, the emulator in-process")
    marks = iter(np.arange(0.25, 1.01, 0.25))
    nxt = [next(marks)]

    def progress(frac: float) -> None:
        if frac + 1e-9 >= nxt[0]:
            log(f"  {frac:.0%} of the mission flown")
            nxt[0] = next(marks, 2.0)

    ps = mission_problems(cfg, days, shift_day, "analog", progress=progress)
    problems = [(float("nan"), q, b) for q, b in zip(ps.q, ps.b, strict=True)]
    figures: dict[str, float] = {}
    figures.update(flown_energy(ps, cfg, log))
    figures.update(mission_figures(ps, log))
    figures.update(head_device_only(ps, cfg, log))
    figures.update(layer_energy(ps, cfg, log))
    figures.update(all_systems_device_only(figures, ps, cfg))
    spread = problems[:: max(1, len(problems) // (100 if quick else 500))]
    figures["analog.raw_rel_residual_median"] = raw_accuracy(spread, params, log)
    figures.update(flight_basis_figures(ps, params, 30 if quick else 200, log))
    sensitivity(problems[:: max(1, len(problems) // (40 if quick else 300))], params, log)
    figures.update(reference_figures(reference_problems(100 if quick else 1000, seed=1), params, log))
    figures.update(energy_scaling(params, (128,) if quick else (128, 512), log))
    figures.update(campaign(problems, params, 300 if quick else 10_000, seed=7, log=log))
    figures["analog.solves_per_s_inproc"] = throughput_inproc(problems, params, 50 if quick else 300)
    log(f"in-process: {figures['analog.solves_per_s_inproc']:.0f} solves/s")
    figures["analog.solves_per_s_tcp"] = throughput_tcp(problems, 30 if quick else 200, log)
    return figures
