"""Declarative config fields: every key documented with its unit and limits.

Modelled on cFS platform configs, where each constant carries its unit and its
valid range next to it. `param()` attaches that to a dataclass field; the
validator in `loader.py` enforces it and `describe()` renders it as docs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_MISSING = dataclasses.MISSING


def param(
    default: Any = _MISSING,
    *,
    doc: str,
    unit: str = "",
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    min_len: int | None = None,
) -> Any:
    """A config field with its documentation, SI unit and numeric limits."""
    metadata = {"doc": doc, "unit": unit, "ge": ge, "gt": gt, "le": le, "lt": lt, "min_len": min_len}
    if isinstance(default, list | dict):
        raise TypeError("use tuples/mappingproxy for immutable defaults")
    if default is _MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def bounds_text(meta: dict[str, Any]) -> str:
    """Human-readable limits, e.g. '> 0 and <= 1'."""
    parts = []
    for key, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if meta.get(key) is not None:
            parts.append(f"{sym} {meta[key]:g}")
    return " and ".join(parts)
