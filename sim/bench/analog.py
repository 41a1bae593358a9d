"""Benchmark group `analog`: the analog optimizer (emulator + driver) against the digital solver.

Figures (numbers; `flightsim bench analog [--quick]`):

- ``analog.rounds_p95``: 95th percentile of analog refinement rounds to reach the
  1e-6 relative residual, solves served by the analog path, default device, on the
  reference problem set (below). The log prints the whole distribution.
- ``analog.raw_rel_residual_median``: median relative residual of the device's first
  answer, no refinement, 8-bit DAC/input DAC/ADC.
- ``analog.energy_ratio_digital_to_analog``: mean modelled energy per solve of the
  digital fallback (Cholesky, 1 nJ/flop CPU model) over that of the analog path
  (device energy + the driver's digital refinement and checks), same problems.
- ``analog.fallback_share``: share of solves that needed the digital fallback at
  nominal noise, no faults.
- ``analog.campaign_solves``, ``analog.campaign_wrong_accepted``,
  ``analog.campaign_crashes``: fault campaign with every fault kind injected at random
  (10,000 solves; 300 with --quick).
- ``analog.solves_per_s_inproc``, ``analog.solves_per_s_tcp``: throughput through the
  in-process transport and through TCP to `flightsim hil serve` in a subprocess.

Reference problem set: SPD systems of the learner's shape (n = 33 = 32 features + bias,
m = 6 classes) with eigenvalues log-spaced over [1, kappa], kappa log-uniform in [2, 20]:
the well-conditioned regime where analog solvers work (Zuo et al. 2025's MIMO systems).
The learner's own problems are far worse conditioned (kappa ~1e4-1e7): extra figures
``analog.learner_*`` report what the driver does with them (it falls back, never accepts
a wrong X), on the raw statistics and in the pre-launch-whitened basis.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sim.bench import median_time_s

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"
N, M = 33, 6
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


def accuracy_and_energy(problems, params, log) -> dict[str, float]:
    from flight_sw.devices.optimizer import DigitalSolver

    drv, _ = _driver(params, seed=11)
    dig = DigitalSolver(N, M, drv.cfg.energy_per_flop_j, drv.cfg.residual_tolerance)
    rounds, kappas, e_an, e_dig, fb = [], [], [], [], 0
    for k, q, b in problems:
        _, r = drv.solve(q, b)
        if r.fallback:
            fb += 1
        else:
            rounds.append(r.rounds)
            kappas.append(k)
            e_an.append(r.energy_j)
            e_dig.append(dig.solve(q, b)[1].energy_j)
    rounds = np.array(rounds)
    kappas = np.array(kappas)
    hist = {int(v): int(np.sum(rounds == v)) for v in np.unique(rounds)}
    log(f"reference set: {len(problems)} SPD problems n={N} m={M}, kappa log-uniform {KAPPA_RANGE}")
    log(f"rounds to 1e-6 (analog-served): histogram {hist}; p50 {np.percentile(rounds, 50):g}, p95 {np.percentile(rounds, 95):g}")
    for lo, hi in ((2, 5), (5, 10), (10, 20)):
        sel = (kappas >= lo) & (kappas < hi)
        if sel.any():
            log(f"  kappa {lo}-{hi}: rounds p50 {np.percentile(rounds[sel], 50):g}, p95 {np.percentile(rounds[sel], 95):g}")
    st = drv.stats
    log(
        f"fallback {fb}/{len(problems)}; energy per solve analog path {np.mean(e_an) * 1e6:.1f} uJ "
        f"(device {st.energy_device_j / max(st.solves, 1) * 1e6:.1f} uJ, digital refinement/checks the rest) "
        f"vs digital Cholesky {np.mean(e_dig) * 1e6:.1f} uJ"
    )
    return {
        "analog.rounds_p95": float(np.percentile(rounds, 95)),
        "analog.rounds_p50": float(np.percentile(rounds, 50)),
        "analog.fallback_share": fb / len(problems),
        "analog.energy_ratio_digital_to_analog": float(np.mean(e_dig) / np.mean(e_an)),
    }


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


def learner_figures(params, seeds, log) -> dict[str, float]:
    from flight_sw.config import load_mission_config
    from sim.analog.problems import learner_problems

    cfg = load_mission_config(DEFAULT_CONFIG)
    out = {}
    for basis in ("raw", "whitened"):
        kappas, fb, total, wrong = [], 0, 0, 0
        for s in seeds:
            ps = learner_problems(cfg, s, basis=basis)
            drv, _ = _driver(params, seed=100 + s)
            for q, b in zip(ps.q, ps.b, strict=True):
                x, r = drv.solve(q, b)
                total += 1
                fb += r.fallback
                wrong += bool(r.ok and _rel_res(q, x, b) > drv.cfg.residual_tolerance)
            kappas.extend(ps.kappa)
        share = fb / max(total, 1)
        out[f"analog.learner_{basis}_fallback_share"] = share
        out[f"analog.learner_{basis}_kappa_median"] = float(np.median(kappas))
        log(f"learner problems ({basis} basis): {total} solves, kappa median {np.median(kappas):.3g} "
            f"(p95 {np.percentile(kappas, 95):.3g}), fallback share {share:.2f}, wrong accepted {wrong}")
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
    from sim.analog import DeviceParams

    params = DeviceParams()
    n_ref = 200 if quick else 2000
    problems = reference_problems(n_ref, seed=1)
    figures: dict[str, float] = {}
    figures.update(accuracy_and_energy(problems, params, log))
    figures["analog.raw_rel_residual_median"] = raw_accuracy(problems[:100 if quick else 500], params, log)
    figures.update(energy_scaling(params, (128,) if quick else (128, 512), log))
    figures.update(learner_figures(params, range(1) if quick else range(8), log))
    figures.update(campaign(problems, params, 300 if quick else 10_000, seed=7, log=log))
    figures["analog.solves_per_s_inproc"] = throughput_inproc(problems, params, 50 if quick else 300)
    log(f"in-process: {figures['analog.solves_per_s_inproc']:.0f} solves/s")
    figures["analog.solves_per_s_tcp"] = throughput_tcp(problems, 30 if quick else 200, log)
    return figures
