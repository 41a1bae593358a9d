"""Telemetry packet encoding: CCSDS space packets carrying PUS-C TM, via `spacepackets`.

The encoder owns the APID's 14-bit sequence counter and stamps each packet with a
CDS short time computed from mission time (never the wall clock), so the same
run gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from spacepackets.ccsds.time import CdsShortTimestamp
from spacepackets.ecss import PusTm

from flight_sw.tmtc.dictionary import (
    EVENT_ID_STRUCT,
    EVENT_SEVERITY_SUBTYPE,
    EVENTS_PER_ID_LIMIT,
    EVENTS_PER_ID_WINDOW_S,
    PUS_SERVICE_EVENT,
    PUS_SERVICE_HK,
    PUS_SUBTYPE_HK_REPORT,
    SID_STRUCT,
)

_CCSDS_EPOCH = datetime(1958, 1, 1, tzinfo=UTC)
_SEQ_MODULO = 1 << 14
#: Rate-limit buckets: one per event id below this, the last shared by any larger id.
_EVENT_BUCKETS = 64


def cds_short(start_utc: datetime, t_s: float) -> bytes:
    """CDS short timestamp (days since 1958-01-01, ms of day) for mission time t_s."""
    total_ms = round(((start_utc - _CCSDS_EPOCH).total_seconds() + t_s) * 1000.0)
    days, ms = divmod(total_ms, 86_400_000)
    return CdsShortTimestamp(days, ms, init_dt_unix_stamp=False).pack()


class TmEncoder:
    """Packs HK and event reports for one APID and hands them to `sink`."""

    def __init__(self, apid: int, start_utc: datetime, sink: Callable[[bytes, bool], None]):
        """`sink(packet, high)` receives each packed report and its priority."""
        self.apid = apid
        self.start_utc = start_utc
        self.sink = sink
        self.seq_count = 0
        self.packets = 0
        self.events_suppressed = 0
        #: Called with every event id raised, sent or rate-limited (service 19 event-action).
        self.on_event: Callable[[int], None] | None = None
        self._event_window_start_s = [-1e30] * _EVENT_BUCKETS  # long ago (finite: snapshots are JSON)
        self._event_count = [0] * _EVENT_BUCKETS

    def emit(self, service: int, subtype: int, data: bytes, t_s: float, high: bool | None = None) -> None:
        """Pack one PUS TM report and queue it; `high` defaults to every service but housekeeping."""
        self._emit(service, subtype, data, t_s, high)

    def _emit(self, service: int, subtype: int, data: bytes, t_s: float, high: bool | None = None) -> None:
        packet = PusTm(
            service=service,
            message_subtype=subtype,
            timestamp=cds_short(self.start_utc, t_s),
            source_data=data,
            apid=self.apid,
            seq_count=self.seq_count,
        ).pack()
        self.seq_count = (self.seq_count + 1) % _SEQ_MODULO
        self.packets += 1
        self.sink(packet, service != PUS_SERVICE_HK if high is None else high)

    def housekeeping(self, sid: int, payload: bytes, t_s: float, high: bool = False) -> None:
        self._emit(PUS_SERVICE_HK, PUS_SUBTYPE_HK_REPORT, SID_STRUCT.pack(sid) + payload, t_s, high)

    def event(self, event_id: int, severity: str, params: bytes, t_s: float) -> bool:
        """Pack and queue an event unless its id already sent EVENTS_PER_ID_LIMIT in this window
        (then it is counted in `events_suppressed`). True when sent."""
        if self.on_event is not None:
            self.on_event(event_id)
        b = min(event_id, _EVENT_BUCKETS - 1)
        if t_s - self._event_window_start_s[b] >= EVENTS_PER_ID_WINDOW_S:
            self._event_window_start_s[b] = t_s
            self._event_count[b] = 0
        if self._event_count[b] >= EVENTS_PER_ID_LIMIT:
            self.events_suppressed += 1
            return False
        self._event_count[b] += 1
        self._emit(
            PUS_SERVICE_EVENT, EVENT_SEVERITY_SUBTYPE[severity], EVENT_ID_STRUCT.pack(event_id) + params, t_s
        )
        return True

    def state(self) -> dict:
        return {"seq_count": self.seq_count, "packets": self.packets, "events_suppressed": self.events_suppressed,
                "window": list(self._event_window_start_s), "count": list(self._event_count)}

    def load_state(self, state: dict) -> None:
        self.seq_count, self.packets = state["seq_count"], state["packets"]
        self.events_suppressed = state["events_suppressed"]
        self._event_window_start_s[:] = state["window"]
        self._event_count[:] = state["count"]
