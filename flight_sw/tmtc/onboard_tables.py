"""Table-driven onboard automation (ECSS-E-ST-70-41C): time-based scheduling (service 11),
on-board parameter monitoring (service 12) and event-action (service 19).

All three tables live in the NV record (they survive a reboot and a power cut like the rest
of the telecommand state), are bounded by the config (`tmtc.schedule_slots`,
`fdir.monitor_slots`, `fdir.event_action_slots`: a full table refuses the addition with a
reason) and are changed only by authenticated ground commands.

- Service 11: 11,4 inserts time-tagged commands (release time in mission seconds, then a
  complete PUS TC packet); 11,1 / 11,2 enable and disable the release function; 11,3 resets
  the schedule. Due commands are released by the tc_handler task in time order.
- Service 12: a monitoring definition checks one core housekeeping parameter (its index in
  `dictionary.HK_CORE`) against low and high limits at every housekeeping report; after
  `repetitions` consecutive samples out of limits it raises the definition's event (once per
  transition, 12.3.3's check transition). 12,5 adds, 12,6 deletes, 12,1 / 12,2 enable and
  disable definitions, 12,15 / 12,16 the monitoring function.
- Service 19: an event-action definition stores a complete TC packet to run when an event of
  a given id is raised. 19,1 adds, 19,2 deletes, 19,4 / 19,5 enable and disable definitions,
  19,8 / 19,9 the function. The stored packet was authenticated when it was loaded; it runs
  through the same service 1 path as an uplinked one.

Stored packets are executed by the handler (commands.py), which refuses, when they arrive,
packets that would themselves change these tables (no self-modifying automation).
"""

from __future__ import annotations

import math
import struct

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.upload import UploadError

SCHEDULE_ENTRY = struct.Struct(">I")  # release time [s since mission start], then the TC packet
MONITOR_DEF = struct.Struct(">HHBddH")  # monitor id, HK core index, repetitions, low, high, event id
EVENT_ACTION_DEF = struct.Struct(">H")  # event id, then the TC packet
ID = struct.Struct(">H")
#: Services a stored (time-tagged or event-triggered) packet may not use.
NOT_STORABLE = (d.PUS_SERVICE_SCHEDULE, d.PUS_SERVICE_MONITORING, d.PUS_SERVICE_EVENT_ACTION)


def _packet_service(packet: bytes) -> tuple[int, int]:
    """(service, subtype) of a PUS-C TC packet, checked enough to be stored."""
    from spacepackets.ecss import PusTc

    try:
        tc = PusTc.unpack(packet)
    except Exception:  # noqa: BLE001 - any malformed packet is refused, with its reason
        raise UploadError("bad_arguments", "the stored command is not a valid PUS-C TC packet") from None
    if tc.packet_len != len(packet):
        raise UploadError("bad_arguments", "trailing bytes after the stored TC packet")
    if tc.service in NOT_STORABLE:
        raise UploadError("bad_arguments", f"a stored command may not use service {tc.service}")
    return tc.service, tc.message_subtype


class OnboardTables:
    """The three tables in the NV record `nv.data` (keys "schedule", "monitors", "actions")."""

    def __init__(self, cfg, nv):
        self.nv = nv
        self.schedule_slots = cfg.tmtc.schedule_slots
        self.monitor_slots = cfg.fdir.monitor_slots
        self.action_slots = cfg.fdir.event_action_slots
        self._out_count: dict[int, int] = {}  # monitor id -> consecutive samples out of limits

    @property
    def data(self) -> dict:
        t = self.nv.data.setdefault("tables", {})
        t.setdefault("schedule", [])
        t.setdefault("schedule_on", True)
        t.setdefault("monitors", {})
        t.setdefault("monitoring_on", True)
        t.setdefault("actions", {})
        t.setdefault("actions_on", True)
        return t

    # -- service 11 ------------------------------------------------------------------------
    def schedule_insert(self, app: bytes) -> None:
        """11,4: one or more (u32 release time, u16 length, packet) entries."""
        entries, pos = [], 0
        while pos < len(app):
            if pos + SCHEDULE_ENTRY.size + 2 > len(app):
                raise UploadError("bad_arguments", "11,4: expected u32 release time, u16 length, packet")
            (t_rel,) = SCHEDULE_ENTRY.unpack_from(app, pos)
            (n,) = ID.unpack_from(app, pos + SCHEDULE_ENTRY.size)
            packet = app[pos + SCHEDULE_ENTRY.size + 2 : pos + SCHEDULE_ENTRY.size + 2 + n]
            if len(packet) != n:
                raise UploadError("bad_arguments", f"11,4: packet of {len(packet)} bytes, length says {n}")
            _packet_service(packet)
            entries.append([t_rel, packet.hex()])
            pos += SCHEDULE_ENTRY.size + 2 + n
        if not entries:
            raise UploadError("bad_arguments", "11,4: no entry")
        table = self.data["schedule"]
        if len(table) + len(entries) > self.schedule_slots:
            raise UploadError("table_full", f"schedule holds {len(table)} of {self.schedule_slots} entries")
        table.extend(entries)
        table.sort(key=lambda e: e[0])
        self.nv.commit()

    def due(self, t_s: float) -> list[bytes]:
        """Release (and remove) the commands whose time has come, oldest first."""
        table = self.data["schedule"]
        if not self.data["schedule_on"] or not table or table[0][0] > t_s:
            return []
        out = []
        while table and table[0][0] <= t_s:
            out.append(bytes.fromhex(table.pop(0)[1]))
        self.nv.commit()  # released before they run: a reboot mid-way never runs one twice
        return out

    # -- service 12 ------------------------------------------------------------------------
    def monitor_add(self, app: bytes) -> None:
        """12,5: one definition (MONITOR_DEF)."""
        if len(app) != MONITOR_DEF.size:
            raise UploadError("bad_arguments", "12,5: u16 id, u16 HK core index, u8 repetitions, f64 low, "
                              "f64 high, u16 event id")
        mid, index, reps, low, high, event_id = MONITOR_DEF.unpack(app)
        if not 0 <= index < len(d.HK_CORE):
            raise UploadError("bad_arguments", f"12,5: HK core index {index} outside 0..{len(d.HK_CORE) - 1}")
        if not (math.isfinite(low) and math.isfinite(high) and low < high) or reps < 1:
            raise UploadError("bad_arguments", "12,5: limits must be finite with low < high, repetitions >= 1")
        table = self.data["monitors"]
        if str(mid) not in table and len(table) >= self.monitor_slots:
            raise UploadError("table_full", f"monitoring holds {len(table)} of {self.monitor_slots} definitions")
        table[str(mid)] = {"index": index, "reps": reps, "low": low, "high": high, "event": event_id,
                           "on": True, "state": 0}
        self.nv.commit()

    def check(self, hk_core: tuple, t_s: float, raise_event) -> None:
        """Run every enabled definition on one core housekeeping sample."""
        if not self.data["monitoring_on"]:
            return
        for mid, m in self.data["monitors"].items():
            if not m["on"]:
                continue
            v = float(hk_core[m["index"]])
            state = 0 if m["low"] <= v <= m["high"] else (1 if v < m["low"] else 2)
            count = self._out_count.get(int(mid), 0) + 1 if state else 0
            self._out_count[int(mid)] = count
            if state and count >= m["reps"] and m["state"] != state:
                m["state"] = state  # check transition: reported once until the value comes back
                raise_event(int(mid), m["event"], state, v, t_s)
            elif not state and m["state"]:
                m["state"] = 0

    # -- service 19 ------------------------------------------------------------------------
    def action_add(self, app: bytes) -> None:
        """19,1: u16 event id, then the TC packet to run when it is raised."""
        if len(app) < EVENT_ACTION_DEF.size + 1:
            raise UploadError("bad_arguments", "19,1: u16 event id, then a PUS TC packet")
        (event_id,) = EVENT_ACTION_DEF.unpack_from(app)
        packet = app[EVENT_ACTION_DEF.size :]
        _packet_service(packet)
        table = self.data["actions"]
        if str(event_id) not in table and len(table) >= self.action_slots:
            raise UploadError("table_full", f"event-action holds {len(table)} of {self.action_slots} definitions")
        table[str(event_id)] = {"packet": packet.hex(), "on": True}
        self.nv.commit()

    def action_for(self, event_id: int) -> bytes | None:
        a = self.data["actions"].get(str(event_id))
        if not self.data["actions_on"] or a is None or not a["on"]:
            return None
        return bytes.fromhex(a["packet"])

    # -- common: enable, disable, delete by id ---------------------------------------------
    def set_enabled(self, table: str, app: bytes, on: bool) -> None:
        """12,1 / 12,2 / 19,4 / 19,5: u8 count, then count x u16 ids."""
        for key in self._ids(table, app):
            self.data[table][key]["on"] = on
        self.nv.commit()

    def delete(self, table: str, app: bytes) -> None:
        """12,6 / 19,2: u8 count, then count x u16 ids."""
        for key in self._ids(table, app):
            del self.data[table][key]
        self.nv.commit()

    def set_function(self, name: str, on: bool) -> None:
        """11,1/11,2, 12,15/12,16, 19,8/19,9: the whole function on or off."""
        self.data[name] = on
        self.nv.commit()

    def reset_schedule(self) -> None:
        self.data["schedule"] = []
        self.nv.commit()

    def _ids(self, table: str, app: bytes) -> list[str]:
        if not app or len(app) != 1 + 2 * app[0]:
            raise UploadError("bad_arguments", "expected u8 count, then count x u16 ids")
        keys = [str(ID.unpack_from(app, 1 + 2 * i)[0]) for i in range(app[0])]
        missing = [k for k in keys if k not in self.data[table]]
        if missing:
            raise UploadError("bad_arguments", f"no definition {', '.join(missing)} in {table}")
        return keys
