"""Every `flightsim` and `groundtools` subcommand with bad paths, bad values and a closed
output pipe: each must end with a message on stderr and exit status 2, never a traceback.

Shared by `tests/test_cli_bad_input.py` (one parametrised test) and `flightsim bench
reliability` (``reliability.cli_tracebacks``, ``reliability.cli_cases``).
Placeholders: {cfg} a valid mission config, {run} a complete run folder, {tmp} a scratch
folder, {file} an existing plain file, {missing} a path that does not exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Case:
    tool: str  # "flightsim", "groundtools" or "flightsw"
    args: tuple[str, ...]
    closed_pipe: bool = False  # stdout is a pipe whose reader has already gone

    @property
    def name(self) -> str:
        return f"{self.tool} {' '.join(self.args)}" + (" | (closed)" if self.closed_pipe else "")


def _c(tool: str, *args: str, closed_pipe: bool = False) -> Case:
    return Case(tool, args, closed_pipe)


F, G, W = "flightsim", "groundtools", "flightsw"
CASES: tuple[Case, ...] = (
    _c(F, "validate", "{missing}"),
    _c(F, "validate", "{tmp}"),
    _c(F, "validate", "{file}"),
    _c(F, "validate", "{cfg}", closed_pipe=True),
    _c(F, "run", "{missing}"),
    _c(F, "run", "{cfg}", "--days", "0.01", "--out", "{file}"),
    _c(F, "run", "{cfg}", "--days", "0.01", "--out", "/proc/run"),
    _c(F, "run", "{cfg}", "--days", "0.01", "--out", "/"),
    _c(F, "run", "{cfg}", "--days", "0.01", "--out", "{file}/run"),
    _c(F, "run", "{cfg}", "--days", "nan"),
    _c(F, "run", "{cfg}", "--seed=-3"),
    _c(F, "run", "{cfg}", "--days", "0.01", "--realtime", "--speedup", "nan"),
    _c(F, "run", "{cfg}", "--days", "0.01", "--uplink", "{missing}"),
    _c(F, "run", "{cfg}", "--days", "0.01", "--device", "ftp://x"),
    _c(F, "bench", "nosuch"),
    _c(F, "bench", "exec", "--quick", "--out", "{tmp}"),
    _c(F, "bench", "exec", "--quick", "--out", "/proc/bench.json"),
    _c(F, "bench", "exec", "--quick", "--seeds", "3"),
    _c(F, "bench", "learning", "--quick", "--seeds", "1"),
    _c(F, "config-doc", closed_pipe=True),
    _c(F, "hil", "serve", "--port", "70000"),
    _c(F, "hil", "serve", "--faults", "garbage"),
    _c(F, "hil", "proxy", "--target", "foo"),
    _c(G, "ingest", "{missing}"),
    _c(G, "ingest", "{file}"),
    _c(G, "limits", "{run}", "--limits", "{missing}"),
    _c(G, "limits", "{run}", closed_pipe=True),
    _c(G, "report", "{missing}"),
    _c(G, "report", "{run}", "--out", "{tmp}"),
    _c(G, "report", "{run}", "--out", "/proc/report.html"),
    _c(G, "report", "{run}", "--out", "{file}/report.html"),
    _c(G, "suite-report", "{file}"),
    _c(G, "suite-report", "{missing}"),
    _c(G, "decode", "{missing}"),
    _c(G, "decode", "{run}", closed_pipe=True),
    _c(G, "models", "{run}", closed_pipe=True),
    _c(G, "replay", "{missing}", "{run}"),
    _c(G, "campaign", "{missing}"),
    _c(G, "campaign", "{cfg}", "--seeds", "0"),
    _c(G, "campaign", "{cfg}", "--days", "nan"),
    _c(G, "plan", "eclipses", "{missing}"),
    _c(G, "plan", "eclipses", "{cfg}", "--days", "nan"),
    _c(G, "plan", "eclipses", "{cfg}", "--out", "/proc/plan"),
    _c(G, "uplink", "plan", "{missing}", "--out", "{tmp}/uplink.bin"),
    _c(G, "uplink", "plan", "{cfg}", "--out", "{tmp}"),
    _c(G, "model", "package", "{missing}", "--config", "{cfg}", "--out", "{tmp}/m", "--version", "2", "--parent",
       "1", "--counter", "1"),
    _c(G, "station", "--radio", "localhost:1", "--config", "{cfg}", "--db", "{tmp}/s.sqlite", "--port", "0"),
    _c(G, "station", "--radio", "tcp://127.0.0.1:1", "--config", "{missing}", "--db", "{tmp}/s.sqlite"),
    _c(G, "station", "--radio", "tcp://127.0.0.1:1", "--config", "{cfg}", "--db", "{tmp}", "--port", "0"),
    _c(G, "station", "--radio", "tcp://127.0.0.1:1", "--config", "{cfg}", "--db", "{tmp}/s.sqlite", "--port",
       "70000"),
    _c(G, "station", "--radio", "tcp://127.0.0.1:1", "--config", "{cfg}", "--db", "{tmp}/s.sqlite", "--limits",
       "{missing}"),
    _c(F, "serve", "{missing}"),
    _c(F, "serve", "{cfg}", "--speedup", "0", "--out", "{tmp}/serve"),
    _c(F, "serve", "{cfg}", "--out", "{file}"),
    _c(F, "serve", "{cfg}", "--out", "{run}"),
    _c(W, "run", "{missing}", "--link", "tcp://127.0.0.1:1", "--nv-dir", "{tmp}/nv1"),
    _c(W, "run", "{cfg}", "--link", "localhost:1", "--nv-dir", "{tmp}/nv2"),
    _c(W, "run", "{cfg}", "--link", "tcp://127.0.0.1:1", "--nv-dir", "{tmp}/nv3"),
    _c(W, "run", "{cfg}", "--link", "tcp://127.0.0.1:1", "--nv-dir", "{tmp}/nv4", "--load", "{file}"),
    _c(W, "run", "{cfg}", "--link", "tcp://127.0.0.1:1", "--nv-dir", "{file}"),
    _c(W, "run", "{cfg}", "--link", "tcp://127.0.0.1:1", "--nv-dir", "{tmp}/nv5", "--load", "{missing}"),
    _c(W, "run", "{cfg}", "--link", "tcp://127.0.0.1:1", "--nv-dir", "{tmp}/nv6", "--checkpoint-every-s", "-1"),
    _c(G, "xtce", "--out", "{tmp}"),
    _c(G, "xtce", "--out", "/proc/dictionary.xml"),
    _c(G, "xtce", "--out", "{tmp}/d.xml", "--config", "{missing}"),
    _c(G, "config", "validate", "{missing}"),
    _c(G, "config", "diff", "{cfg}"),
    _c(G, "config", "package", "{cfg}", "--active", "{cfg}", "--out", "/proc/frames.bin"),
)

MODULES = {F: "sim.cli", G: "ground_tools.cli", W: "flight_sw.cli"}


def run_case(case: Case, places: dict[str, str], cwd: Path, timeout_s: float = 120.0) -> tuple[int, str]:
    """(exit status, stderr) of one case."""
    args = [a.format(**places) for a in case.args]
    cmd = [sys.executable, "-m", MODULES[case.tool], *args]
    if not case.closed_pipe:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout_s, stdin=subprocess.DEVNULL)
        return r.returncode, r.stderr
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte is written
    try:
        r = subprocess.run(cmd, stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=cwd, timeout=timeout_s,
                           stdin=subprocess.DEVNULL)
    finally:
        os.close(write_end)
    return r.returncode, r.stderr


def judge(rc: int, stderr: str) -> str | None:
    """None when the case ended as it must; else what went wrong."""
    if "Traceback" in stderr:
        return "traceback:\n" + stderr[-2000:]
    if rc != EXIT_BAD_INPUT:
        return f"exit status {rc}, expected {EXIT_BAD_INPUT}; stderr: {stderr[-500:]!r}"
    if "error" not in stderr.lower():
        return f"no error message on stderr: {stderr[-500:]!r}"
    return None


def run_all(places: dict[str, str], cwd: Path, workers: int = 4) -> list[tuple[Case, str | None]]:
    with ThreadPoolExecutor(workers) as pool:
        outs = list(pool.map(lambda c: run_case(c, places, cwd), CASES))
    return [(c, judge(rc, err)) for c, (rc, err) in zip(CASES, outs, strict=True)]


def make_places(tmp: Path, run_dir: Path, cfg: Path) -> dict[str, str]:
    file = tmp / "plain.txt"
    file.write_text("not what any command wants\n")
    scratch = tmp / "scratch"
    scratch.mkdir(exist_ok=True)
    return {"cfg": str(cfg), "run": str(run_dir), "tmp": str(scratch), "file": str(file),
            "missing": str(tmp / "does-not-exist")}
