"""YAML -> typed, frozen `MissionConfig`, with errors a person can act on.

Every error names the file, the line, the key path, the bad value and what was
expected; unknown keys are errors so a typo never passes silently. All errors of
a file are collected and reported together. The loader takes text, not a path,
so the flight software itself never touches the file system; `load_mission_config`
is the convenience the simulator and ground tools use.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from flight_sw.config.fields import bounds_text
from flight_sw.config.schema import MissionConfig


class ConfigError(ValueError):
    """One or more validation errors; `errors` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  {e}" for e in errors))


class _LineMap(dict):
    """A YAML mapping that remembers the line of each key (for error messages)."""

    key_lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineMap:
    mapping = _LineMap()
    mapping.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# Timestamps stay strings; the schema parses them so the error names the key.
_LineLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.1 reads `1.0e6` as a string; accept the YAML 1.2 float forms people write.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _Ctx:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, path: str, line: int | None, message: str) -> None:
        where = f"line {line}: " if line else ""
        self.errors.append(f"{where}{path or '<top>'}: {message}")


_INVALID = object()


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is datetime:
        return "an ISO 8601 UTC time string"
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, path: str, line: int | None, ctx: _Ctx, meta: dict) -> Any:
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        return _convert(value, others[0], path, line, ctx, meta)
    if origin is Literal:
        if value not in get_args(tp):
            ctx.err(path, line, f"got {value!r}, expected {_type_name(tp)}")
            return _INVALID
        return value
    if origin is tuple:
        if not isinstance(value, list):
            ctx.err(path, line, f"got {value!r}, expected {_type_name(tp)}")
            return _INVALID
        if meta.get("min_len") and len(value) < meta["min_len"]:
            ctx.err(path, line, f"got {len(value)} item(s), expected at least {meta['min_len']}")
        item_tp = get_args(tp)[0]
        items = [_convert(v, item_tp, f"{path}[{i}]", line, ctx, {}) for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        if not isinstance(value, dict):
            ctx.err(path, line, f"got {value!r}, expected {_type_name(tp)}")
            return _INVALID
        lines = getattr(value, "key_lines", {})
        return {
            _convert(k, key_tp, f"{path}.{k}", lines.get(k, line), ctx, {}): _convert(
                v, val_tp, f"{path}.{k}", lines.get(k, line), ctx, {}
            )
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return _build(value, tp, path, line, ctx)
    if tp is datetime:
        if not isinstance(value, str):
            ctx.err(path, line, f"got {value!r}, expected {_type_name(tp)}")
            return _INVALID
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            ctx.err(path, line, f"got {value!r}, expected {_type_name(tp)}")
            return _INVALID
        if parsed.tzinfo is None:
            ctx.err(path, line, f"got {value!r}, expected a UTC time with 'Z' or '+00:00'")
            return _INVALID
        return parsed.astimezone(UTC)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            ctx.err(path, line, f"got {value!r}, expected {_type_name(tp)}")
            return _INVALID
        value = float(value)
        if not math.isfinite(value):
            ctx.err(path, line, f"got {value!r}, expected a finite number")
            return _INVALID
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            ctx.err(path, line, f"got {value!r}, expected {_type_name(tp)}")
            return _INVALID
    elif tp is str:
        if not isinstance(value, str):
            ctx.err(path, line, f"got {value!r}, expected {_type_name(tp)}")
            return _INVALID
    elif tp is bool:
        if not isinstance(value, bool):
            ctx.err(path, line, f"got {value!r}, expected {_type_name(tp)}")
            return _INVALID
    if tp in (float, int):
        checks = (
            ("gt", lambda v, b: v > b),
            ("ge", lambda v, b: v >= b),
            ("lt", lambda v, b: v < b),
            ("le", lambda v, b: v <= b),
        )
        for key, ok in checks:
            bound = meta.get(key)
            if bound is not None and not ok(value, bound):
                unit = f" {meta['unit']}" if meta.get("unit") else ""
                ctx.err(path, line, f"got {value!r}{unit}, expected {bounds_text(meta)}")
                return _INVALID
    return value


def _build(data: Any, cls: type, path: str, line: int | None, ctx: _Ctx) -> Any:
    if not isinstance(data, dict):
        ctx.err(path, line, f"got {data!r}, expected a mapping of {cls.__name__} keys")
        return _INVALID
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    lines = getattr(data, "key_lines", {})
    for key in data:
        if key not in fields:
            near = ", ".join(sorted(fields))
            ctx.err(
                f"{path}.{key}" if path else str(key),
                lines.get(key, line),
                f"unknown key; expected one of: {near}",
            )
    kwargs = {}
    ok = True
    for name, f in fields.items():
        sub_path = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                ctx.err(sub_path, line, f"missing required key ({_type_name(hints[name])}: {f.metadata.get('doc', '')})")
                ok = False
            continue
        value = _convert(data[name], hints[name], sub_path, lines.get(name, line), ctx, dict(f.metadata))
        if value is _INVALID or _contains_invalid(value):
            ok = False
        else:
            kwargs[name] = value
    if not ok:
        return _INVALID
    return cls(**kwargs)


def _contains_invalid(value: Any) -> bool:
    if value is _INVALID:
        return True
    if isinstance(value, tuple):
        return any(_contains_invalid(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_invalid(v) for v in value.values())
    return False


def parse_mission_config(text: str, source: str = "<config>") -> MissionConfig:
    """Parse and validate YAML text; raise `ConfigError` listing every problem."""
    from flight_sw.config.consistency import check_consistency

    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}not valid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [f"expected a YAML mapping of mission sections, got {type(data).__name__}"])
    ctx = _Ctx()
    cfg = _build(data, MissionConfig, "", None, ctx)
    if cfg is _INVALID or ctx.errors:
        raise ConfigError(source, ctx.errors)
    problems = check_consistency(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def load_mission_config(path: str | Path) -> MissionConfig:
    """Read a mission YAML file (for the simulator and ground tools, not flight code)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), ["file not found"]) from None
    except IsADirectoryError:
        raise ConfigError(str(p), ["is a directory, expected a YAML file"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), ["not a UTF-8 text file, expected YAML"]) from None
    return parse_mission_config(text, str(p))


def describe(cls: type = MissionConfig, prefix: str = "") -> list[str]:
    """One line per config key: path, type, default, unit, limits and doc (for docs/CLI)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        inner = get_args(tp)[0] if get_origin(tp) is tuple else tp
        meta = f.metadata
        default = "" if f.default is dataclasses.MISSING else f" = {f.default!r}"
        if dataclasses.is_dataclass(f.default):
            default = ""
        unit = f" [{meta.get('unit')}]" if meta.get("unit") else ""
        lim = f" ({bounds_text(meta)})" if bounds_text(meta) else ""
        out.append(f"{path}: {_type_name(tp)}{default}{unit}{lim} - {meta.get('doc', '')}")
        if dataclasses.is_dataclass(inner):
            sub = "[]." if get_origin(tp) is tuple else "."
            out.extend(describe(inner, path + sub))
    return out
