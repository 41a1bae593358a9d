"""Limit checks on archived housekeeping: warning and alarm bounds per parameter, per mode.

Limits live in a YAML file (`limits_default.yaml` beside this module is the default;
the format is in its header and in docs/ground_tools.md). Bounds may name a key of
the run's mission config, so a mission's own thresholds (reserve SoC, SAFE-mode SoC,
TLE age limit, queue size) are the limits without being copied. A file with an
error is refused as a whole, with every problem listed as
``FILE: limits.soc.warning.low: got 'x', expected ...``.

A violation is reported per excursion: consecutive housekeeping samples of one
parameter outside the same bound at the same level form one row (start, end,
worst value, sample count), so a long eclipse is one line, not sixty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import yaml

from flight_sw.config.schema import MODES, MissionConfig
from flight_sw.tmtc import dictionary as d

DEFAULT_LIMITS = Path(__file__).with_name("limits_default.yaml")
LEVELS = ("warning", "alarm")
_BOUND_HELP = "a number, a config key path such as power.battery.reserve_soc, or {config: KEY, scale: X}"


class LimitsError(ValueError):
    """The limits file is invalid; `errors` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s) in the limits file\n" + "\n".join(f"  {e}" for e in errors))


@dataclass(frozen=True)
class Bounds:
    low: float | None = None
    high: float | None = None

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f">= {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return " and ".join(parts) or "none"


@dataclass(frozen=True)
class Limit:
    parameter: str
    description: str
    levels: dict[str, Bounds | None]  # "warning"/"alarm" -> bounds (None: not checked)
    per_mode: dict[str, dict[str, Bounds | None]] = field(default_factory=dict)

    def bounds(self, level: str, mode: str) -> Bounds | None:
        over = self.per_mode.get(mode, {})
        return over[level] if level in over else self.levels.get(level)


@dataclass(frozen=True)
class Disabled:
    parameter: str  # "*" for every parameter
    from_s: float
    to_s: float
    reason: str


@dataclass(frozen=True)
class LimitSet:
    source: str
    limits: tuple[Limit, ...]
    disabled: tuple[Disabled, ...]


@dataclass(frozen=True)
class Violation:
    parameter: str
    level: str
    side: str  # "low" / "high"
    bound: float
    start_s: float
    end_s: float
    worst: float
    samples: int
    mode: str


DEVICE_PREFIX = "device."


def parameters() -> tuple[str, ...]:
    """Parameters that limits can refer to: the core housekeeping (SID 1) by name, and the
    optimizer-device housekeeping (SID 4, dictionary v3+) as ``device.<name>``."""
    core = tuple(p.name for p in d.HK_CORE if p.name != "dict_version")
    return core + tuple(DEVICE_PREFIX + p.name for p in getattr(d, "HK_DEVICE", ()))


def series(parameter: str, hk: dict, dev: dict | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(t_s, values, mode index) of a parameter, or None when the run has no such samples.
    Device samples take the mode of the latest core report at or before them."""
    if parameter.startswith(DEVICE_PREFIX):
        name = parameter[len(DEVICE_PREFIX):]
        if not dev or name not in dev or not hk:
            return None
        t = np.asarray(dev["t_s"], dtype=np.float64)
        idx = np.clip(np.searchsorted(hk["t_s"], t, side="right") - 1, 0, len(hk["t_s"]) - 1)
        return t, np.asarray(dev[name], dtype=np.float64), np.asarray(hk["mode"]).astype(int)[idx]
    if not hk or parameter not in hk:
        return None
    return (np.asarray(hk["t_s"], dtype=np.float64), np.asarray(hk[parameter], dtype=np.float64),
            np.asarray(hk["mode"]).astype(int))


def _config_value(cfg: MissionConfig | None, path: str) -> float | None:
    if cfg is None:
        return None
    obj = cfg
    for part in path.split("."):
        if not hasattr(obj, part):
            raise KeyError(path)
        obj = getattr(obj, part)
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise TypeError(path)
    return float(obj)


class _Parser:
    def __init__(self, source: str, cfg: MissionConfig | None, start_utc: datetime | None):
        self.source = source
        self.cfg = cfg
        self.start_utc = start_utc
        self.errors: list[str] = []

    def err(self, key: str, got, expected: str) -> None:
        self.errors.append(f"{key}: got {got!r}, expected {expected}")

    def keys(self, node: dict, key: str, allowed: tuple[str, ...]) -> None:
        for k in node:
            if k not in allowed:
                self.err(f"{key}.{k}", k, f"one of the keys {', '.join(allowed)}")

    def number(self, value, key: str) -> float | None:
        """A bound: number, config key path, or {config: KEY, scale: X}."""
        scale = 1.0
        if isinstance(value, dict):
            self.keys(value, key, ("config", "scale"))
            if not isinstance(value.get("config"), str):
                self.err(f"{key}.config", value.get("config"), "a config key path such as downlink.queue_packets")
                return None
            s = value.get("scale", 1.0)
            if isinstance(s, bool) or not isinstance(s, int | float):
                self.err(f"{key}.scale", s, "a number")
                return None
            scale, value = float(s), value["config"]
        if isinstance(value, bool):
            self.err(key, value, _BOUND_HELP)
            return None
        if isinstance(value, int | float):
            if not math.isfinite(value):
                self.err(key, value, "a finite number")
                return None
            return float(value) * scale
        if isinstance(value, str):
            try:
                v = _config_value(self.cfg, value)
            except KeyError:
                self.err(key, value, f"{_BOUND_HELP}; there is no config key {value!r}")
                return None
            except TypeError:
                self.err(key, value, f"a config key whose value is a number ({value!r} is not)")
                return None
            return None if v is None else v * scale
        self.err(key, value, _BOUND_HELP)
        return None

    def bounds(self, node, key: str) -> Bounds | None:
        if node is None:
            return None
        if not isinstance(node, dict):
            self.err(key, node, "a mapping {low: ..., high: ...} or null")
            return None
        self.keys(node, key, ("low", "high"))
        low = self.number(node["low"], f"{key}.low") if "low" in node else None
        high = self.number(node["high"], f"{key}.high") if "high" in node else None
        if "low" not in node and "high" not in node:
            self.err(key, node, "at least one of low, high")
        if low is not None and high is not None and low > high:
            self.err(key, node, f"low <= high (low {low:g} > high {high:g})")
        return Bounds(low, high)

    def limit(self, name: str, node) -> Limit | None:
        key = f"limits.{name}"
        if name not in parameters():
            self.err(key, name, "a housekeeping parameter: " + ", ".join(parameters()))
            return None
        if not isinstance(node, dict):
            self.err(key, node, "a mapping with warning / alarm / per_mode / description")
            return None
        self.keys(node, key, ("description", "warning", "alarm", "per_mode"))
        levels = {lv: self.bounds(node.get(lv), f"{key}.{lv}") for lv in LEVELS}
        if levels["warning"] is None and levels["alarm"] is None and "per_mode" not in node:
            self.err(key, node, "a warning or alarm bound")
        w, a = levels["warning"], levels["alarm"]
        if w and a:
            if w.low is not None and a.low is not None and a.low > w.low:
                self.err(f"{key}.alarm.low", a.low, f"<= warning.low ({w.low:g}): an alarm is the worse level")
            if w.high is not None and a.high is not None and a.high < w.high:
                self.err(f"{key}.alarm.high", a.high, f">= warning.high ({w.high:g}): an alarm is the worse level")
        per_mode = {}
        pm = node.get("per_mode") or {}
        if not isinstance(pm, dict):
            self.err(f"{key}.per_mode", pm, "a mapping MODE -> {warning: ..., alarm: ...}")
            pm = {}
        for mode, over in pm.items():
            mkey = f"{key}.per_mode.{mode}"
            if mode not in MODES:
                self.err(mkey, mode, "a mode: " + ", ".join(MODES))
                continue
            if over is None:
                per_mode[mode] = {lv: None for lv in LEVELS}
                continue
            if not isinstance(over, dict):
                self.err(mkey, over, "a mapping {warning: ..., alarm: ...} or null (not checked in this mode)")
                continue
            self.keys(over, mkey, LEVELS)
            per_mode[mode] = {lv: self.bounds(over[lv], f"{mkey}.{lv}") for lv in LEVELS if lv in over}
        desc = node.get("description", "")
        return Limit(name, str(desc), levels, per_mode)

    def time(self, entry: dict, key: str, which: str) -> float | None:
        if f"{which}_s" in entry:
            v = entry[f"{which}_s"]
            if isinstance(v, bool) or not isinstance(v, int | float):
                self.err(f"{key}.{which}_s", v, "mission seconds (a number)")
                return None
            return float(v)
        if f"{which}_utc" in entry:
            v = entry[f"{which}_utc"]
            try:
                dt = v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))
                if dt.tzinfo is None:
                    raise ValueError
            except ValueError:
                self.err(f"{key}.{which}_utc", v, "an ISO 8601 UTC time such as 2026-03-02T00:00:00Z")
                return None
            if self.start_utc is None:
                return None
            return (dt - self.start_utc) / timedelta(seconds=1)
        self.err(key, entry, f"{which}_s (mission seconds) or {which}_utc (ISO 8601)")
        return None

    def disabled(self, node) -> list[Disabled]:
        out = []
        if node is None:
            return out
        if not isinstance(node, list):
            self.err("disabled", node, "a list of {parameter, from_s|from_utc, to_s|to_utc, reason}")
            return out
        for i, entry in enumerate(node):
            key = f"disabled[{i}]"
            if not isinstance(entry, dict):
                self.err(key, entry, "a mapping {parameter, from_s|from_utc, to_s|to_utc, reason}")
                continue
            self.keys(entry, key, ("parameter", "from_s", "to_s", "from_utc", "to_utc", "reason"))
            p = entry.get("parameter")
            if p != "*" and p not in parameters():
                self.err(f"{key}.parameter", p, "'*' or a housekeeping parameter")
                continue
            lo, hi = self.time(entry, key, "from"), self.time(entry, key, "to")
            if lo is not None and hi is not None:
                if hi < lo:
                    self.err(key, entry, f"from <= to (from {lo:g} s > to {hi:g} s)")
                    continue
                out.append(Disabled(p, lo, hi, str(entry.get("reason", ""))))
        return out


def load_limits(path: Path | str | None = None, cfg: MissionConfig | None = None) -> LimitSet:
    """Parse and validate a limits file; bounds that name config keys are resolved from `cfg`."""
    path = Path(path) if path else DEFAULT_LIMITS
    source = str(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LimitsError(source, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LimitsError(source, [f"unreadable ({exc})"]) from None
    except yaml.YAMLError as exc:
        raise LimitsError(source, [f"not valid YAML ({str(exc).splitlines()[0]})"]) from None
    p = _Parser(source, cfg, cfg.mission.start_utc if cfg else None)
    if not isinstance(doc, dict):
        raise LimitsError(source, [f"top level: got {type(doc).__name__}, expected a mapping with version, limits"])
    p.keys(doc, "(top level)", ("version", "limits", "disabled"))
    if doc.get("version") != 1:
        p.err("version", doc.get("version"), "1")
    limits_node = doc.get("limits")
    limits = []
    if not isinstance(limits_node, dict) or not limits_node:
        p.err("limits", limits_node, "a mapping of parameter name -> limit definition")
    else:
        for name, node in limits_node.items():
            lim = p.limit(str(name), node)
            if lim is not None:
                limits.append(lim)
    disabled = p.disabled(doc.get("disabled"))
    if p.errors:
        raise LimitsError(source, p.errors)
    return LimitSet(source, tuple(limits), tuple(disabled))


def check(limits: LimitSet, hk: dict[str, np.ndarray], dev: dict[str, np.ndarray] | None = None) -> list[Violation]:
    """Every excursion of the HK parameters outside their bounds, in time order."""
    out: list[Violation] = []
    for lim in limits.limits:
        ser = series(lim.parameter, hk, dev)
        if ser is None:
            continue
        t, v, mode_idx = ser
        active = np.ones(len(t), bool)
        for dis in limits.disabled:
            if dis.parameter in ("*", lim.parameter):
                active &= ~((t >= dis.from_s) & (t <= dis.to_s))
        # level per sample: 0 ok, 1 warning, 2 alarm; side: -1 low, +1 high
        level = np.zeros(len(t), np.int8)
        side = np.zeros(len(t), np.int8)
        bound = np.full(len(t), np.nan)
        for m, mode in enumerate(MODES):
            in_mode = (mode_idx == m) & active & np.isfinite(v)
            if not in_mode.any():
                continue
            for li, lv in ((1, "warning"), (2, "alarm")):
                b = lim.bounds(lv, mode)
                if b is None:
                    continue
                if b.low is not None:
                    hit = in_mode & (v < b.low)
                    level[hit], side[hit], bound[hit] = li, -1, b.low
                if b.high is not None:
                    hit = in_mode & (v > b.high)
                    level[hit], side[hit], bound[hit] = li, 1, b.high
        code = level * 4 + side  # unique per (level, side)
        bad = np.flatnonzero(level > 0)
        if not len(bad):
            continue
        # split into runs of consecutive samples with the same code and bound
        breaks = np.flatnonzero((np.diff(bad) != 1) | (np.diff(code[bad]) != 0) | (np.diff(bound[bad]) != 0)) + 1
        for run in np.split(bad, breaks):
            s = int(side[run[0]])
            vals = v[run]
            out.append(Violation(
                parameter=lim.parameter,
                level=LEVELS[int(level[run[0]]) - 1],
                side="low" if s < 0 else "high",
                bound=float(bound[run[0]]),
                start_s=float(t[run[0]]),
                end_s=float(t[run[-1]]),
                worst=float(vals.min() if s < 0 else vals.max()),
                samples=len(run),
                mode=MODES[mode_idx[run[0]]] if 0 <= mode_idx[run[0]] < len(MODES) else str(mode_idx[run[0]]),
            ))
    out.sort(key=lambda x: (x.start_s, x.parameter))
    return out


def violation_mask(violations: list[Violation], parameter: str, t_s: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks over `t_s` of samples inside a violation of `parameter`, per level."""
    t_s = np.asarray(t_s)
    masks = {lv: np.zeros(len(t_s), bool) for lv in LEVELS}
    for v in violations:
        if v.parameter == parameter:
            masks[v.level] |= (t_s >= v.start_s) & (t_s <= v.end_s)
    masks["warning"] &= ~masks["alarm"]
    return masks


def format_table(violations: list[Violation], start_utc: datetime | None = None) -> list[str]:
    head = f"{'parameter':<20} {'level':<8} {'start':<21} {'t [h]':>8} {'duration':>10} {'worst':>10}  {'bound':<12} {'mode':<9} samples"
    lines = [head]
    for v in violations:
        when = (start_utc + timedelta(seconds=v.start_s)).strftime("%Y-%m-%dT%H:%M:%SZ") if start_utc else ""
        dur = v.end_s - v.start_s
        bound = f"{'<' if v.side == 'low' else '>'} {v.bound:g}"
        lines.append(
            f"{v.parameter:<20} {v.level:<8} {when:<21} {v.start_s / 3600:>8.2f} {dur / 60:>7.1f} min "
            f"{v.worst:>10.4g}  {bound:<12} {v.mode:<9} {v.samples}"
        )
    return lines
