"""Benchmark harness: named groups of figures, each measured against a baseline
taken in the same process.

A group is a module `sim.bench.<name>` exposing::

    def run(quick: bool, log: Callable[[str], None]) -> dict[str, float]

returning flat, dotted figure keys (e.g. ``"eclipse.max_err_s_7d"``) mapped to
plain numbers. `quick` must finish in well under a minute with smaller sizes.
Timings use `median_time_s` (several repetitions, median) because these machines
are shared and noisy; a comparison figure is a ratio of two medians taken in the
same run, never one absolute time against a number measured elsewhere.
"""

from __future__ import annotations

import importlib
import math
import statistics
import time
from collections.abc import Callable

#: Every benchmark group, in the order `make bench` runs them. Issues add theirs here.
GROUPS: tuple[str, ...] = ("exec", "eclipse", "analog", "ground", "learning", "tmtc", "reliability", "station")


def median_time_s(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` unmeasured runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def run_group(name: str, quick: bool, log: Callable[[str], None] = print, **options) -> dict[str, float]:
    """Run one group and check that it returned flat numeric figures under its own prefix.

    `options` go to the group's `run` as keyword arguments (only groups that take them:
    the learning group's `seeds`).
    """
    if name not in GROUPS:
        raise KeyError(f"unknown benchmark group {name!r}; known groups: {', '.join(GROUPS)}")
    module = importlib.import_module(f"sim.bench.{name}")
    figures = module.run(quick=quick, log=log, **options)
    for key, value in figures.items():
        if not key.startswith(name + ".") and not key.startswith(_prefix_alias(name)):
            raise ValueError(f"bench group {name!r} returned figure {key!r} outside its prefix")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"bench figure {key!r} must be a finite number, got {value!r}")
    return {k: float(v) for k, v in figures.items()}


#: Groups whose figures carry another group's prefix: the live station's latencies are ground figures.
PREFIX_ALIASES = {"station": "ground."}


def _prefix_alias(name: str) -> str:
    return PREFIX_ALIASES.get(name, name + ".")
