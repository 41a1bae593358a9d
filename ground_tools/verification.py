"""What every ground terminal that sends sequence-controlled commands does the same way: match
the PUS service 1 reports to the commands, and start FOP-1's AD service from a CLCW.

Shared by the simulated pass terminal (`pass_terminal.PassTerminal`, run inside `flightsim run`)
and the live station (`station.Station`, on the radio port of a running world), so the two
cannot disagree on what "accepted" or "completed" means or on how a pass begins.
"""

from __future__ import annotations

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.cop1 import Clcw
from ground_tools.fop1 import Fop1

#: PUS-C TM: service type and subtype octets, and where the source data starts (6-octet primary
#: header, then version/time reference, service, subtype, message count 2, destination 2, CUC 7).
TM_SERVICE_AT, TM_SUBTYPE_AT, TM_DATA_AT = 7, 8, 20
#: Verification report subtype -> (stage, success).
VERIF_STAGE = {d.TM_ACCEPT_OK: ("acceptance", True), d.TM_ACCEPT_FAIL: ("acceptance", False),
               d.TM_START_OK: ("start", True), d.TM_START_FAIL: ("start", False),
               d.TM_COMPLETE_OK: ("completion", True), d.TM_COMPLETE_FAIL: ("completion", False)}
STAGES = ("acceptance", "start", "completion")


def request_id(tc_packet: bytes) -> bytes:
    """A TC's request id as its verification reports quote it: its first four octets (packet
    id and sequence control)."""
    return bytes(tc_packet[:4])


def verification_report(tm_packet: bytes) -> tuple[bytes, str, bool] | None:
    """(request id, stage, success) of a PUS service 1 report; None for any other packet."""
    if len(tm_packet) <= TM_DATA_AT + 4 or tm_packet[TM_SERVICE_AT] != d.PUS_SERVICE_VERIFICATION:
        return None
    stage = VERIF_STAGE.get(tm_packet[TM_SUBTYPE_AT])
    if stage is None:
        return None
    return bytes(tm_packet[TM_DATA_AT:TM_DATA_AT + 4]), stage[0], stage[1]


def record_stage(rec: dict, stage: str, ok: bool, t_s: float) -> None:
    """Note one report in a command record (keys `reports`, and per stage `stage` and
    `stage_t_s`). The first failure sticks: a later success of the same stage (a duplicate
    report, a retransmitted command) does not hide it."""
    rec["reports"][stage] += 1
    if rec[stage] is None or rec[stage] == "ok":
        rec[stage] = "ok" if ok else "failed"
        rec[f"{stage}_t_s"] = t_s


def initiate_ad(fop: Fop1, clcw: bytes, t_s: float) -> str:
    """Start the AD service the usual way from the pass's latest CLCW: Set V(S) to its N(R),
    then Initiate AD with CLCW check, or with a BC Unlock when the CLCW shows Lockout,
    Retransmit or Wait (only an Unlock clears them). Returns what was done, for the log."""
    word = Clcw.unpack(clcw)
    fop.set_vs(word.report_value)
    if word.lockout or word.retransmit or word.wait:
        fop.initiate_ad_with_unlock(t_s)
        return (f"Set V(S) = N(R) = {word.report_value}, Initiate AD with Unlock (CLCW lockout "
                f"{word.lockout:d}, retransmit {word.retransmit:d}, wait {word.wait:d})")
    fop.initiate_ad_with_clcw_check(t_s)
    return f"Set V(S) = N(R) = {word.report_value}, Initiate AD with CLCW check"
