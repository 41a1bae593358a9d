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
    PUS_SERVICE_EVENT,
    PUS_SERVICE_HK,
    PUS_SUBTYPE_HK_REPORT,
    SID_STRUCT,
)

_CCSDS_EPOCH = datetime(1958, 1, 1, tzinfo=UTC)
_SEQ_MODULO = 1 << 14


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

    def event(self, event_id: int, severity: str, params: bytes, t_s: float) -> None:
        self._emit(
            PUS_SERVICE_EVENT, EVENT_SEVERITY_SUBTYPE[severity], EVENT_ID_STRUCT.pack(event_id) + params, t_s
        )
