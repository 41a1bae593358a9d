"""Onboard parameter table (PUS service 20): load into staging -> validate -> activate.

A load (20,3) is validated entry by entry against dictionary.PARAMS bounds; one bad
value refuses the whole load with the parameter and its bound named, and neither the
staged nor the active table changes. Activation (8, FN_PARAM_ACTIVATE) swaps the staged
table in and applies it through `apply` (the flight software's hooks). Both tables live
in the NV record, so an activated table survives a reboot.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.security import NvState
from flight_sw.tmtc.upload import UploadError


class ParamTable:
    def __init__(self, nv: NvState, apply: Callable[[dict[int, float]], None]):
        self.nv = nv
        self.apply = apply

    @property
    def table(self) -> dict:
        return self.nv.data["params"]

    def active(self) -> dict[int, float]:
        return {int(k): v for k, v in self.table["active"].items()}

    def load(self, app_data: bytes) -> int:
        """Parse and check a 20,3 load (u8 count, then count x (u16 id, f64 value)); stage it."""
        es = d.PARAM_ENTRY_STRUCT
        if not app_data or len(app_data) != 1 + app_data[0] * es.size or app_data[0] == 0:
            raise UploadError("bad_arguments", "expected u8 count then count x (u16 id, f64 value)")
        staged = dict(self.table["active"])
        for i in range(app_data[0]):
            pid, value = es.unpack_from(app_data, 1 + i * es.size)
            if pid not in d.PARAMS:
                raise UploadError("param_unknown", f"parameter id {pid} is not in the table")
            name, lo, hi = d.PARAMS[pid]
            if not math.isfinite(value) or not lo <= value <= hi:
                raise UploadError("param_out_of_bounds", f"{name}={value:g} outside [{lo:g}, {hi:g}]")
            if name.endswith("eclipse_policy") and value != int(value):
                raise UploadError("param_out_of_bounds", f"{name}={value:g} must be an integer index")
            staged[str(pid)] = value
        self.table["staged"] = staged
        self.nv.commit()
        return len(staged)

    def activate(self) -> int:
        if self.table["staged"] is None:
            raise UploadError("param_none_staged", "no validated parameter table staged")
        self.table["active"] = self.table["staged"]
        self.table["staged"] = None
        self.table["version"] += 1
        self.nv.commit()
        self.apply(self.active())
        return self.table["version"]
