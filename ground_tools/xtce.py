"""XTCE 1.2 export of the telemetry and command dictionary, for a standard ground system (Yamcs).

The space system is generated from `flight_sw.tmtc.dictionary` with `yamcs-pymdb`: every field
list below comes from the dictionary's `Param` tuples and `struct.Struct` layouts, never from a
second hand-written copy. What this module defines itself is what the standards define and the
dictionary leaves to `spacepackets`: the CCSDS primary header (133.0-B), the PUS-C TM and TC
secondary headers and the service 1 request id (ECSS-E-ST-70-41C), the CDS short time code
(301.0-B) and the packet CRC.

Telemetry (`TelemetryMetaData`), one container tree by inheritance and restriction criteria:

    ccsds_packet (abstract) -> pus_tm (type TM, secondary header) -> by service/subtype:
      hk_report (3,25) -> by hk_sid: hk_core, hk_tasks, hk_orbit, hk_device, hk_samples, hk_sa
      event_report (5, subtype = severity) -> by event_id: ev_<name>
      verification_<stage>_<ok|fail> (1, subtypes TM_*), large_packet_uplink_abort (13,16),
      test_pong (17,2)

Structures with one record per task or per security association (SIDs 2, 3 and 6) carry no
count in the packet; the count follows from the packet length. XTCE 1.2 arrays with a length
computed from the packet length are not understood by every decoder, so each count k up to
`max_records` gets its own leaf container, restricted on `ccsds_packet_length`, whose entries
are the record containers 0..k-1 (parameters `<sid name>_<i>_<field>`). Parts whose layout the
dictionary does not give field by field (the bands of a sample record, the parameters of events
that have neither a `Param` tuple nor a `*_STRUCT`, the text of a failure report) are binary
parameters sized from the packet length (DynamicValue with LinearAdjustment, which pymdb cannot
express, so the XML is patched after pymdb writes it). Every leaf ends with `packet_crc`.

Commands (`CommandMetaData`): an abstract PUS-C TC (`pus_tc`, primary header with the APID as
an argument, secondary header with service/subtype assigned by each command), ping (17,1), the
service 8 functions (`fn_<name>`, one per `FN_*` constant, function id fixed), parameter load
(20,3), the large packet uplink parts (13,9 / 13,10 / 13,11) that carry a model package, the
service 15 requests on the TM store (`store_<request>_1`, one store). The TC Transfer Frame, its SDLS security
header and trailer and the CLTU around each TC (`flight_sw.tmtc.tc_link`) are link-level and
not XTCE's business.

`decoded_share(run_folder)` measures the export: every packet of a run decoded by
space-packet-parser (an independent XTCE decoder, imported only there) from the exported XML
alone, compared parameter by parameter with `ground_tools.decode`.
"""

from __future__ import annotations

import math
import re
import struct
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from yamcs import pymdb as y

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.commands import SA_PROCEDURES
from ground_tools import decode as gd

SYSTEM_NAME = "orbit_learning"
XTCE_NS = "http://www.omg.org/spec/XTCE/20180204"
#: Leaf containers generated per record structure (tasks, security associations): counts 0..N.
MAX_RECORDS = 32
#: `EVENT_*` integer constants of the dictionary that are not event ids (none today: every
#: `EVENT_<NAME>` integer is an event id, which `ground_tools.decode.event_names` relies on).
NOT_EVENT_IDS: tuple[str, ...] = ()

# Octets before the PUS source data: primary header, PUS-C TM secondary header, CDS short time.
_PRE_DATA = gd.DATA_OFFSET
_CRC = gd.CRC_LEN
_INT = {
    "b": (8, True),
    "B": (8, False),
    "h": (16, True),
    "H": (16, False),
    "i": (32, True),
    "I": (32, False),
    "l": (32, True),
    "L": (32, False),
    "q": (64, True),
    "Q": (64, False),
}
_FLOAT = {"f": 32, "d": 64}
_VERIFICATION = {
    "TM_ACCEPT_OK": "acceptance_ok",
    "TM_ACCEPT_FAIL": "acceptance_fail",
    "TM_START_OK": "start_ok",
    "TM_START_FAIL": "start_fail",
    "TM_COMPLETE_OK": "completion_ok",
    "TM_COMPLETE_FAIL": "completion_fail",
}


def _codes(st: struct.Struct) -> list[tuple[str, int]]:
    """Struct format as (code, repeat) pairs, '>BH' -> [('B', 1), ('H', 1)]; '9s' -> [('s', 9)]"""
    out = []
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", st.format.lstrip("<>!=@")):
        n = int(count or 1)
        if code in "sp":
            out.append((code, n))
        else:
            out.extend((code, 1) for _ in range(n))
    return out


def _size_fields(n_octets_before_end: int) -> int:
    """Intercept [bits] of the size of what lies between `n_octets_before_end` octets (counted
    from the packet start, the CRC included) as 8 * ccsds_packet_length + intercept."""
    return 8 * (1 + gd.PRIMARY_HEADER - n_octets_before_end)


@dataclass
class _Builder:
    system: y.System
    apid: int | None
    max_records: int
    remainders: dict[str, int] = field(default_factory=dict)  # binary parameter -> intercept [bits]

    # -- parameters --------------------------------------------------------------------------
    def param(
        self,
        name: str,
        code: str,
        units: str = "",
        doc: str = "",
        alias: str | None = None,
        n: int = 1,
    ) -> y.Parameter:
        kw = {
            "short_description": doc or None,
            "units": units or None,
            "aliases": {"dictionary": alias} if alias else None,
        }
        if code in _INT:
            bits, signed = _INT[code]
            scheme = (
                y.IntegerEncodingScheme.TWOS_COMPLEMENT
                if signed
                else y.IntegerEncodingScheme.UNSIGNED
            )
            return y.IntegerParameter(
                self.system,
                name,
                signed=signed,
                bits=bits,
                encoding=y.IntegerEncoding(bits=bits, scheme=scheme),
                **kw,
            )
        if code in _FLOAT:
            bits = _FLOAT[code]
            return y.FloatParameter(
                self.system, name, bits=bits, encoding=y.FloatEncoding(bits=bits), **kw
            )
        if code == "?":
            return y.BooleanParameter(self.system, name, encoding=y.uint8_t, **kw)
        if code == "s":
            return y.BinaryParameter(self.system, name, encoding=y.BinaryEncoding(bits=8 * n), **kw)
        raise ValueError(f"struct code {code!r} of {name} has no XTCE mapping")

    def bits_param(self, name: str, bits: int, doc: str) -> y.Parameter:
        return y.IntegerParameter(
            self.system,
            name,
            signed=False,
            bits=max(8, bits),
            encoding=y.IntegerEncoding(bits=bits),
            short_description=doc,
        )

    def remainder(self, name: str, octets_before: int, doc: str) -> y.Parameter:
        """Binary parameter running from `octets_before` (from the packet start) up to the CRC."""
        self.remainders[name] = _size_fields(octets_before + _CRC)
        return y.BinaryParameter(
            self.system, name, encoding=y.BinaryEncoding(bits=None), short_description=doc
        )

    def fields(self, prefix: str, params: tuple[d.Param, ...], where: str) -> list[y.Parameter]:
        return [
            self.param(f"{prefix}_{p.name}", p.fmt, p.unit, p.doc, f"{where}.{p.name}")
            for p in params
        ]

    def struct_fields(self, prefix: str, st: struct.Struct, where: str) -> list[y.Parameter]:
        """Fields of a struct the dictionary gives without names: `<prefix>_p<i>` (a gap)."""
        return [
            self.param(
                f"{prefix}_p{i}",
                code,
                alias=f"{where}[{i}]",
                n=n,
                doc=f"Field {i} of {where} ({code}); the dictionary names it only in a comment.",
            )
            for i, (code, n) in enumerate(_codes(st))
        ]

    # -- containers --------------------------------------------------------------------------
    def leaf(self, name: str, base: y.Container, cond, entries: list, doc: str = "") -> y.Container:
        return y.Container(
            self.system,
            name,
            [*map(_entry, entries), y.ParameterEntry(self.crc)],
            base=base,
            condition=cond,
            short_description=doc or None,
        )

    def build(self) -> None:
        s = self.system
        self.header()
        self.crc = y.IntegerParameter(
            s,
            "packet_crc",
            signed=False,
            bits=16,
            encoding=y.uint16_t,
            short_description="CRC-16/CCITT-FALSE of the packet (checks to zero).",
        )
        self.housekeeping()
        self.events()
        self.verification()
        self.storage()
        self.commands()

    def header(self) -> None:
        s, b = self.system, self.bits_param
        prim = [
            b("ccsds_version", 3, "Packet version number (0)."),
            b("ccsds_type", 1, "0 TM, 1 TC."),
            b("ccsds_sec_hdr_flag", 1, "1: secondary header present."),
            b("ccsds_apid", 11, "APID."),
            b("ccsds_seq_flags", 2, "Sequence flags (3: unsegmented)."),
            b("ccsds_seq_count", 14, "Source sequence count."),
            b("ccsds_packet_length", 16, "Packet data length minus one [octets]."),
        ]
        self.p = {p.name: p for p in prim}
        self.root = y.Container(
            s,
            "ccsds_packet",
            [y.ParameterEntry(p) for p in prim],
            abstract=True,
            short_description="CCSDS 133.0-B space packet (primary header).",
        )
        sec = [
            b("pus_version", 4, "PUS version (2: PUS-C)."),
            b("pus_time_ref_status", 4, "Time reference status."),
            b("pus_service", 8, "PUS service type."),
            b("pus_subtype", 8, "PUS message subtype."),
            b("pus_msg_counter", 16, "Message type counter."),
            b("pus_destination_id", 16, "Destination id."),
            b("cds_pfield", 8, "CDS short time code P-field."),
            y.IntegerParameter(
                s,
                "cds_days",
                signed=False,
                bits=16,
                encoding=y.uint16_t,
                units="day",
                short_description="CDS short: days since 1958-01-01 (TAI epoch of CCSDS).",
            ),
            y.IntegerParameter(
                s,
                "cds_ms_of_day",
                signed=False,
                bits=32,
                encoding=y.uint32_t,
                units="ms",
                short_description="CDS short: milliseconds of the day.",
            ),
        ]
        self.p.update({p.name: p for p in sec})
        conds = [y.eq(self.p["ccsds_type"], 0), y.eq(self.p["ccsds_sec_hdr_flag"], 1)]
        if self.apid is not None:
            conds.append(y.eq(self.p["ccsds_apid"], self.apid))
        cond = y.all_of(*conds)
        self.tm = y.Container(
            s,
            "pus_tm",
            [y.ParameterEntry(p) for p in sec],
            base=self.root,
            condition=cond,
            abstract=True,
            short_description="PUS-C TM: secondary header and CDS short time.",
        )

    def _svc(self, service: int, subtype: int | None):
        c = y.eq(self.p["pus_service"], service)
        return c if subtype is None else y.all_of(c, y.eq(self.p["pus_subtype"], subtype))

    def housekeeping(self) -> None:
        s = self.system
        sid = y.IntegerParameter(
            s,
            "hk_sid",
            signed=False,
            bits=16,
            encoding=y.uint16_t,
            short_description="Housekeeping structure id (SID).",
        )
        hk = y.Container(
            s,
            "hk_report",
            [y.ParameterEntry(sid)],
            base=self.tm,
            condition=self._svc(d.PUS_SERVICE_HK, d.PUS_SUBTYPE_HK_REPORT),
            short_description="PUS 3,25 housekeeping report.",
        )
        start = _PRE_DATA + d.SID_STRUCT.size
        self.leaf(
            "hk_core",
            hk,
            y.eq(sid, d.HK_CORE_SID),
            self.fields("hk_core", d.HK_CORE, "HK_CORE"),
            "SID 1: core housekeeping.",
        )
        self.leaf(
            "hk_device",
            hk,
            y.eq(sid, d.HK_DEVICE_SID),
            self.fields("hk_device", d.HK_DEVICE, "HK_DEVICE"),
            "SID 4: optimizer device driver.",
        )
        self.records(
            "hk_tasks",
            hk,
            y.eq(sid, d.HK_TASKS_SID),
            [],
            start,
            d.HK_TASK_RECORD,
            "HK_TASK_RECORD",
            "SID 2: one record per task.",
        )
        self.records(
            "hk_sa",
            hk,
            y.eq(sid, d.HK_SA_SID),
            [],
            start,
            d.HK_SA_RECORD,
            "HK_SA_RECORD",
            "SID 6: one record per security association.",
        )
        self.records(
            "hk_exec",
            hk,
            y.eq(sid, d.HK_EXEC_SID),
            [],
            start,
            d.HK_EXEC_RECORD,
            "HK_EXEC_RECORD",
            "SID 7: task execution measured by a flight process's CPU clock, one record per task.",
        )
        # SID 3: HK_ORBIT then one f32 per task (the dictionary's comment; no Param for it).
        orbit = self.fields("hk_orbit", d.HK_ORBIT, "HK_ORBIT")
        energy = (d.Param("task_energy_j", "f", "J", "Previous orbit's energy of this task."),)
        self.records(
            "hk_orbit",
            hk,
            y.eq(sid, d.HK_ORBIT_SID),
            orbit,
            start + d.HK_ORBIT_STRUCT.size,
            energy,
            "HK_ORBIT+f32 per task",
            "SID 3: the orbit's budget, then one f32 per task.",
        )
        # SID 5: SAMPLES_HEADER, then count x (SAMPLE_RECORD_HEAD + bands x f32); bands is config.
        head = self.struct_fields("hk_samples", d.SAMPLES_HEADER, "SAMPLES_HEADER")
        rest = self.remainder(
            "hk_samples_records",
            start + d.SAMPLES_HEADER.size,
            "count x (SAMPLE_RECORD_HEAD, bands x f32): the band count is mission config.",
        )
        self.leaf(
            "hk_samples", hk, y.eq(sid, d.HK_SAMPLES_SID), [*head, rest], "SID 5: labelled samples."
        )

    def records(
        self,
        name: str,
        base: y.Container,
        cond,
        head: list,
        start: int,
        rec: tuple[d.Param, ...],
        where: str,
        doc: str,
    ) -> None:
        """Leaves for 0..max_records records after `head`, told apart by the packet length."""
        parent = y.Container(
            self.system,
            name,
            [y.ParameterEntry(p) for p in head],
            base=base,
            condition=cond,
            short_description=doc,
        )
        size = d.struct_of(rec).size
        recs = []
        for i in range(self.max_records + 1):
            length = start + i * size + _CRC - gd.PRIMARY_HEADER - 1
            self.leaf(
                f"{name}_n{i}",
                parent,
                y.eq(self.p["ccsds_packet_length"], length),
                recs,
                f"{doc} ({i} records)",
            )
            if i < self.max_records:
                recs = [
                    *recs,
                    y.Container(
                        self.system,
                        f"{name}_{i}",
                        [
                            y.ParameterEntry(p)
                            for p in self.fields(f"{name}_{i}", rec, f"{where}[{i}]")
                        ],
                    ),
                ]

    def events(self) -> None:
        s = self.system
        eid = y.IntegerParameter(
            s,
            "event_id",
            signed=False,
            bits=16,
            encoding=y.uint16_t,
            short_description="Event id (severity: the PUS subtype, EVENT_SEVERITY_SUBTYPE).",
        )
        ev = y.Container(
            s,
            "event_report",
            [y.ParameterEntry(eid)],
            base=self.tm,
            condition=self._svc(d.PUS_SERVICE_EVENT, None),
            short_description="PUS 5 event report.",
        )
        start = _PRE_DATA + d.EVENT_ID_STRUCT.size
        for num, name in sorted(event_layouts().items()):
            kind, layout = event_layouts_detail(name)
            prefix = f"ev_{name.lower()}"
            if kind == "params":
                entries = self.fields(prefix, layout, name)
            elif kind == "struct":
                entries = self.struct_fields(prefix, layout, f"{name}_STRUCT")
            else:
                entries = [
                    self.remainder(
                        f"{prefix}_params",
                        start,
                        f"Parameters of EVENT_{name}: the "
                        "dictionary gives their layout only in a comment.",
                    )
                ]
            self.leaf(prefix, ev, y.eq(eid, num), entries, f"Event {num} EVENT_{name}.")

    def verification(self) -> None:
        s, b = self.system, self.bits_param
        req = [
            b("req_version", 3, "Request id: TC packet version."),
            b("req_type", 1, "Request id: packet type."),
            b("req_sec_hdr_flag", 1, "Request id: secondary header flag."),
            b("req_apid", 11, "TC APID."),
            b("req_seq_flags", 2, "Request id: sequence flags."),
            b("req_seq_count", 14, "TC sequence count."),
        ]
        code = self.struct_fields(
            "verification_failure", d.TC_FAIL_PARAM_STRUCT, "TC_FAIL_PARAM_STRUCT"
        )[0]
        text = self.remainder(
            "verification_failure_text",
            _PRE_DATA + 4 + d.TC_FAIL_PARAM_STRUCT.size,
            "ASCII text naming the field and the bound (at most 96 octets).",
        )
        base = y.Container(
            s,
            "verification_report",
            [y.ParameterEntry(p) for p in req],
            base=self.tm,
            condition=self._svc(d.PUS_SERVICE_VERIFICATION, None),
            short_description="PUS 1 request verification report.",
        )
        for const, name in _VERIFICATION.items():
            subtype = getattr(d, const)
            fail = name.endswith("fail")
            self.leaf(
                f"verification_{name}",
                base,
                y.eq(self.p["pus_subtype"], subtype),
                [code, text] if fail else [],
                f"1,{subtype} ({const}).",
            )
        self.leaf(
            "large_packet_uplink_abort",
            self.tm,
            self._svc(d.PUS_SERVICE_LARGE_PACKET, d.LPT_UPLINK_ABORT),
            self.struct_fields("large_packet_uplink_abort", d.LPT_ABORT_STRUCT, "LPT_ABORT_STRUCT"),
            "13,16 large packet uplink abortion report: transaction id, failure reason (TC_FAILURES).",
        )
        self.leaf(
            "test_pong",
            self.tm,
            self._svc(d.PUS_SERVICE_TEST, 2),
            [],
            "17,2 connection test report.",
        )

    def storage(self) -> None:
        """15,13 content summary and 15,19 status: N (u8) then one record (one packet store)."""
        n = self.param("store_count", "B", doc="N: packet stores reported (this flight software has one).")
        for name, sub, params, where in (
            ("store_content_summary", 13, d.STORE_CONTENT_SUMMARY, "STORE_CONTENT_SUMMARY"),
            ("store_status", 19, d.STORE_STATUS, "STORE_STATUS"),
        ):
            self.leaf(name, self.tm, self._svc(d.PUS_SERVICE_STORAGE, sub),
                      [n, *self.fields(name, params, where)], f"15,{sub} ({where}).")

    def storage_commands(self, svc) -> None:
        """Service 15 requests on one packet store: [u32 time,] N = 1, store id (+ range for 15,9)."""
        u16, u32 = y.uint16_t, y.uint32_t

        def one(name: str, sub: int, doc: str, time_arg: bool = False, extra=()) -> None:
            args = [y.IntegerArgument("time_s", signed=False, encoding=u32,
                                      short_description="Onboard time, s since mission start.")] if time_arg else []
            args += [y.IntegerArgument("store_id", signed=False, encoding=u16, default=1), *extra]
            cmd = svc(name, d.PUS_SERVICE_STORAGE, sub, doc, abstract=True)
            entries = [y.ArgumentEntry(a) for a in args[:1]] if time_arg else []
            entries.append(y.FixedValueEntry("01", "store_n", short_description="N = 1 packet store."))
            entries += [y.ArgumentEntry(a) for a in args[int(time_arg):]]
            y.Command(self.system, name + "_1", base=cmd, arguments=args, entries=entries,
                      short_description=doc + " (one store).")

        one("store_enable", 1, "15,1 enable the storage function")
        one("store_disable", 2, "15,2 disable the storage function")
        one("store_retrieve_range", 9, "15,9 start the by-time-range retrieval", extra=[
            y.IntegerArgument("from_s", signed=False, encoding=u32), y.IntegerArgument("to_s", signed=False, encoding=u32)])
        one("store_delete_up_to", 11, "15,11 delete the content up to a time", time_arg=True)
        one("store_report_summary", 12, "15,12 report the content summary (-> 15,13)")
        one("store_open_start", 14, "15,14 change the open retrieval start time tag", time_arg=True)
        one("store_resume_open", 15, "15,15 resume open retrieval")
        one("store_suspend_open", 16, "15,16 suspend open retrieval")
        one("store_abort_range", 17, "15,17 abort the by-time-range retrieval")
        one("store_report_status", 18, "15,18 report the status (-> 15,19)")

    # -- commands ----------------------------------------------------------------------------
    def commands(self) -> None:
        s = self.system
        apid = y.IntegerArgument(
            "apid",
            signed=False,
            encoding=y.IntegerEncoding(bits=11),
            default=self.apid,
            short_description="The mission's APID (config telemetry.apid).",
        )
        service = y.IntegerArgument("service", signed=False, encoding=y.uint8_t)
        subtype = y.IntegerArgument("subtype", signed=False, encoding=y.uint8_t)
        tc = y.Command(
            s,
            "pus_tc",
            abstract=True,
            arguments=[apid, service, subtype],
            entries=[
                y.FixedValueEntry("00", "ccsds_version", bits=3),
                y.FixedValueEntry("01", "ccsds_type", bits=1),
                y.FixedValueEntry("01", "ccsds_sec_hdr_flag", bits=1),
                y.ArgumentEntry(apid),
                y.FixedValueEntry("03", "ccsds_seq_flags", bits=2),
                y.FixedValueEntry(
                    "0000", "ccsds_seq_count", bits=14, short_description="Set by the ground link."
                ),
                y.FixedValueEntry(
                    "0000",
                    "ccsds_packet_length",
                    bits=16,
                    short_description="Set by the ground link.",
                ),
                y.FixedValueEntry(
                    "2f", "pus_version_ack", short_description="PUS-C (2), all acknowledgements."
                ),
                y.ArgumentEntry(service),
                y.ArgumentEntry(subtype),
                y.FixedValueEntry("0000", "pus_source_id"),
            ],
            short_description="PUS-C telecommand (the link adds the CRC and the security frame).",
        )

        def svc(name: str, srv: int, sub: int, doc: str, args=(), abstract=False) -> y.Command:
            return y.Command(
                s,
                name,
                base=tc,
                abstract=abstract,
                assignments={"service": srv, "subtype": sub},
                arguments=list(args),
                entries=[y.ArgumentEntry(a) for a in args],
                short_description=doc,
            )

        svc("ping", d.PUS_SERVICE_TEST, 1, "17,1 connection test.")
        fid = y.IntegerArgument("function_id", signed=False, encoding=y.uint16_t)
        fn = svc(
            "perform_function",
            d.PUS_SERVICE_FUNCTION,
            1,
            "8,1 perform function.",
            [fid],
            abstract=True,
        )
        for num, name in sorted(function_ids().items()):
            args = self.function_args(name, num)
            y.Command(
                s,
                f"fn_{name.lower()}",
                base=fn,
                assignments={"function_id": num},
                arguments=args,
                entries=[y.ArgumentEntry(a) for a in args],
                short_description=f"Function {num} (FN_{name}).",
            )
        names = [(pid, name) for pid, (name, _lo, _hi) in sorted(d.PARAMS.items())]
        pid_code, value_code = (c for c, _ in _codes(d.PARAM_ENTRY_STRUCT))
        pid = y.EnumeratedArgument(
            "param_id", choices=names, encoding=y.IntegerEncoding(bits=_INT[pid_code][0])
        )
        value = y.FloatArgument(
            "value", bits=_FLOAT[value_code], encoding=y.FloatEncoding(bits=_FLOAT[value_code])
        )
        count = y.FixedValueEntry(
            "01", "count", short_description="u8 entry count (flight_sw.tmtc.params)."
        )
        y.Command(
            s,
            "load_parameter",
            base=tc,
            assignments={"service": d.PUS_SERVICE_PARAMS, "subtype": 3},
            arguments=[pid, value],
            entries=[count, y.ArgumentEntry(pid), y.ArgumentEntry(value)],
            short_description="20,3 stage one onboard parameter (activate: FN_PARAM_ACTIVATE).",
        )
        # Service 13 large packet uplink (ECSS-E-ST-70-41C 6.13): the parts of a model package.
        for sub, name, doc in (
            (d.LPT_UPLINK_FIRST, "large_packet_first_part", "13,9 uplink the first part (number 1)."),
            (d.LPT_UPLINK_INTERMEDIATE, "large_packet_intermediate_part", "13,10 uplink an intermediate part."),
            (d.LPT_UPLINK_LAST, "large_packet_last_part", "13,11 uplink the last part (stages the package)."),
        ):
            tid_code, seq_code = (c for c, _ in _codes(d.LPT_PART_STRUCT))
            svc(
                name,
                d.PUS_SERVICE_LARGE_PACKET,
                sub,
                doc,
                [
                    y.IntegerArgument(
                        "transaction_id", signed=False, bits=_INT[tid_code][0],
                        encoding=y.IntegerEncoding(bits=_INT[tid_code][0]),
                        short_description="Large message transaction identifier (LPT_PART_STRUCT[0]).",
                    ),
                    y.IntegerArgument(
                        "part_sequence_number", signed=False, bits=_INT[seq_code][0],
                        encoding=y.IntegerEncoding(bits=_INT[seq_code][0]),
                        short_description="Part sequence number, 1 for the first part (LPT_PART_STRUCT[1]).",
                    ),
                    _binary_arg("part", "The part's octets (a slice of the OLPK model package)."),
                ],
            )
        self.storage_commands(svc)

    def function_args(self, name: str, num: int) -> list:
        st = getattr(d, f"{name}_STRUCT", None) or SA_PROCEDURES.get(num)
        if st is None:
            return [
                _binary_arg(
                    "args", f"Arguments of FN_{name}: the dictionary gives them only in a comment."
                )
            ]
        out = []
        for i, (code, n) in enumerate(_codes(st)):
            kw = {"short_description": f"Field {i} of the argument struct ({code})."}
            if code in _INT:
                bits, signed = _INT[code]
                out.append(
                    y.IntegerArgument(
                        f"arg{i}",
                        signed=signed,
                        bits=bits,
                        encoding=y.IntegerEncoding(
                            bits=bits,
                            scheme=y.IntegerEncodingScheme.TWOS_COMPLEMENT
                            if signed
                            else y.IntegerEncodingScheme.UNSIGNED,
                        ),
                        **kw,
                    )
                )
            elif code in _FLOAT:
                out.append(
                    y.FloatArgument(
                        f"arg{i}",
                        bits=_FLOAT[code],
                        encoding=y.FloatEncoding(bits=_FLOAT[code]),
                        **kw,
                    )
                )
            else:
                out.append(y.BinaryArgument(f"arg{i}", encoding=y.BinaryEncoding(bits=8 * n), **kw))
        return out


def _binary_arg(name: str, doc: str) -> y.BinaryArgument:
    return y.BinaryArgument(name, encoding=y.BinaryEncoding(bits=None), short_description=doc)


def _entry(item) -> y.ParameterEntry | y.ContainerEntry:
    return y.ContainerEntry(item) if isinstance(item, y.Container) else y.ParameterEntry(item)


# -- what the dictionary declares ------------------------------------------------------------
def event_layouts() -> dict[int, str]:
    """Event id -> EVENT_ constant suffix, from the dictionary (as `decode.event_names`)."""
    return {
        num: name.upper()
        for num, name in gd.event_names().items()
        if f"EVENT_{name.upper()}" not in NOT_EVENT_IDS
    }


def event_layouts_detail(name: str) -> tuple[str, object]:
    """How the dictionary describes an event's parameters: ('params', Param tuple), ('struct',
    struct.Struct without field names) or ('opaque', None) when it gives them only in a comment."""
    params = getattr(d, name, None)
    if isinstance(params, tuple) and params and all(isinstance(p, d.Param) for p in params):
        return "params", params
    st = getattr(d, f"{name}_STRUCT", None)
    if isinstance(st, struct.Struct):
        return "struct", st
    return "opaque", None


def function_ids() -> dict[int, str]:
    """Function id -> FN_ constant suffix (FN_STRUCT, the id's own layout, excluded)."""
    return {v: k[3:] for k, v in vars(d).items() if k.startswith("FN_") and isinstance(v, int)}


# -- export ----------------------------------------------------------------------------------
def xtce_text(apid: int | None = None, max_records: int = MAX_RECORDS) -> str:
    """The XTCE 1.2 document. `apid`: restrict telemetry to it and default the TC APID (mission
    config `telemetry.apid`); `max_records`: largest task / security-association count decoded."""
    system = y.System(
        SYSTEM_NAME, short_description=f"Telemetry dictionary version {d.DICTIONARY_VERSION}"
    )
    b = _Builder(system, apid, max_records)
    b.build()
    text = system.dumps(
        format="xtce-1.2",
        top_comment=(
            f" Generated by ground_tools.xtce from flight_sw.tmtc.dictionary "
            f"v{d.DICTIONARY_VERSION}; do not edit. "
        ),
    )
    return _patch_remainders(text, b.remainders)


def _patch_remainders(text: str, remainders: dict[str, int]) -> str:
    """Size each 'rest of the packet' binary from ccsds_packet_length (slope 8, intercept)."""
    ET.register_namespace("", XTCE_NS)
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")
    found = re.search(r"<!--(.*?)-->", text, re.S)
    comment = found.group(1) if found else ""
    root = ET.fromstring(text)
    ns = {"x": XTCE_NS}
    types = {}
    for p in root.iterfind(".//x:ParameterSet/x:Parameter", ns):
        if p.get("name") in remainders:
            types[p.get("parameterTypeRef")] = remainders[p.get("name")]
    done = set()
    for t in root.iterfind(".//x:ParameterTypeSet/x:BinaryParameterType", ns):
        if t.get("name") not in types:
            continue
        size = t.find("x:BinaryDataEncoding/x:SizeInBits", ns)
        for child in list(size):
            size.remove(child)
        dyn = ET.SubElement(size, f"{{{XTCE_NS}}}DynamicValue")
        ET.SubElement(
            dyn,
            f"{{{XTCE_NS}}}ParameterInstanceRef",
            parameterRef="ccsds_packet_length",
            useCalibratedValue="false",
        )
        ET.SubElement(
            dyn, f"{{{XTCE_NS}}}LinearAdjustment", slope="8", intercept=str(types[t.get("name")])
        )
        done.add(t.get("name"))
    if done != set(types):
        raise RuntimeError(
            f"binary parameter types not found in the pymdb output: {set(types) - done}"
        )
    ET.indent(root)
    head = f"<!--{comment}-->\n" if comment else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + head
        + ET.tostring(root, encoding="unicode")
        + "\n"
    )


def export_xtce(path: Path | str, apid: int | None = None, max_records: int = MAX_RECORDS) -> Path:
    """Write the XTCE 1.2 document to `path` (see `xtce_text`)."""
    path = Path(path)
    path.write_text(xtce_text(apid, max_records), encoding="utf-8")
    return path


# -- measurement: an independent decoder against ground_tools.decode ---------------------------
@dataclass
class XtceComparison:
    """Per-packet comparison of the XTCE decoding with `ground_tools.decode`."""

    packets: int = 0
    identical: int = 0
    parameters_compared: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)  # identical packets per kind
    ground_undecoded: dict[str, int] = field(default_factory=dict)  # decode.py gives no values: why
    mismatches: list[str] = field(default_factory=list)  # first few disagreements, for the report
    #: Packets decode.py does not decode that the XTCE decoder parses to the last bit, per kind.
    xtce_only: dict[str, int] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.identical / self.packets if self.packets else 0.0


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return float(a) == float(b) or (math.isnan(float(a)) and math.isnan(float(b)))
    if isinstance(a, bytes | bytearray) or isinstance(b, bytes | bytearray):
        return bytes(a) == bytes(b)
    return int(a) == int(b)


def compare_run(
    run_folder: Path | str, xml: str | None = None, max_mismatches: int = 20
) -> XtceComparison:
    """Decode every packet of a run with space-packet-parser from the exported XTCE alone and
    compare each parameter with what `ground_tools.decode` (and, for service 1 reports, which it
    only counts, the archive's decoding) gives for the same packet. `xml`: another XTCE text to
    measure instead of this export (the tests check that a wrong layout is caught)."""
    import space_packet_parser as spp  # test/benchmark dependency only

    from ground_tools import archive
    from ground_tools.runfolder import open_run

    run = open_run(run_folder)
    cfg = run.cfg
    n_tasks = len(cfg.tasks)
    raw = run.telemetry_path.read_bytes()
    tm = gd.decode_file(run.telemetry_path, cfg.mission.start_utc, n_tasks, cfg.telemetry.apid)
    if xml is None:
        xml = xtce_text(cfg.telemetry.apid, max(MAX_RECORDS, n_tasks))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dictionary.xml"
        path.write_text(xml, encoding="utf-8")
        definition = spp.load_xtce(path)

    def parse(pkt: bytes):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "bits parsed did not match": a layout error
            return definition.parse_bytes(pkt, root_container_name="ccsds_packet")

    res = XtceComparison()
    cursor = {"core": 0, "tasks": 0, "orbit": 0, "device": 0, "event": 0, "sa": 0}
    evs = {
        num: event_layouts_detail(name) + (f"ev_{name.lower()}",)
        for num, name in event_layouts().items()
    }

    for fr in gd.frame_stream(raw, cfg.telemetry.apid):
        res.packets += 1
        if fr.reason is not None:
            res.ground_undecoded[fr.reason.split(":")[0]] = (
                res.ground_undecoded.get(fr.reason.split(":")[0], 0) + 1
            )
            continue
        h = gd.parse_header(fr.raw)
        data = fr.raw[gd.DATA_OFFSET : -gd.CRC_LEN]
        expect = {
            "ccsds_apid": h.apid,
            "ccsds_seq_count": h.seq,
            "pus_service": h.service,
            "pus_subtype": h.subtype,
            "cds_days": h.cds_days,
            "cds_ms_of_day": h.cds_ms,
            "packet_crc": int.from_bytes(fr.raw[-2:], "big"),
        }
        kind, why = _reference(h, data, tm, cursor, n_tasks, evs, archive, expect)
        if why is not None:
            res.ground_undecoded[why] = res.ground_undecoded.get(why, 0) + 1
            try:
                parse(fr.raw)
                res.xtce_only[kind] = res.xtce_only.get(kind, 0) + 1
            except Exception:  # noqa: BLE001, S110 - counted above as not decoded by the ground
                pass
            continue
        try:
            got = parse(fr.raw)
        except Exception as e:  # noqa: BLE001 - any decoder failure is a mismatch to report
            if len(res.mismatches) < max_mismatches:
                res.mismatches.append(
                    f"packet {res.packets - 1} ({kind}): XTCE decoder failed: {e}"
                )
            continue
        bad = [k for k, v in expect.items() if k not in got or not _same(got[k], v)]
        res.parameters_compared += len(expect)
        if bad:
            if len(res.mismatches) < max_mismatches:
                res.mismatches.append(
                    f"packet {res.packets - 1} ({kind}): "
                    + ", ".join(
                        f"{k}: xtce {got.get(k)!r} != ground {expect[k]!r}" for k in bad[:5]
                    )
                )
            continue
        res.identical += 1
        res.by_kind[kind] = res.by_kind.get(kind, 0) + 1
    return res


def _reference(
    h, data: bytes, tm: gd.Telemetry, cursor: dict, n_tasks: int, evs: dict, archive, expect: dict
) -> tuple[str, str | None]:
    """Fill `expect` with the ground decoder's values for this packet: (kind, None), or (kind,
    reason) when the ground decoder gives none. Walks `decode_file`'s output in packet order."""
    if h.service == d.PUS_SERVICE_HK and h.subtype == d.PUS_SUBTYPE_HK_REPORT and len(data) >= 2:
        sid = d.SID_STRUCT.unpack_from(data)[0]
        body = data[2:]
        expect["hk_sid"] = sid
        if sid == d.HK_CORE_SID and len(body) == d.HK_CORE_STRUCT.size:
            i = cursor["core"]
            cursor["core"] += 1
            expect.update({f"hk_core_{p.name}": tm.hk_core[p.name][i] for p in d.HK_CORE})
            return "hk_core", None
        if sid == d.HK_TASKS_SID and len(body) == d.HK_TASK_STRUCT.size * n_tasks:
            i = cursor["tasks"]
            cursor["tasks"] += 1
            expect.update(
                {
                    f"hk_tasks_{k}_{p.name}": tm.hk_tasks[p.name][i, k]
                    for k in range(n_tasks)
                    for p in d.HK_TASK_RECORD
                }
            )
            return "hk_tasks", None
        if sid == d.HK_ORBIT_SID and len(body) == d.HK_ORBIT_STRUCT.size + 4 * n_tasks:
            i = cursor["orbit"]
            cursor["orbit"] += 1
            expect.update({f"hk_orbit_{p.name}": tm.orbits[p.name][i] for p in d.HK_ORBIT})
            expect.update(
                {
                    f"hk_orbit_{k}_task_energy_j": tm.orbit_task_energy_j[i, k]
                    for k in range(n_tasks)
                }
            )
            return "hk_orbit", None
        if sid == d.HK_DEVICE_SID and len(body) == d.HK_DEVICE_STRUCT.size:
            i = cursor["device"]
            cursor["device"] += 1
            expect.update({f"hk_device_{p.name}": tm.hk_device[p.name][i] for p in d.HK_DEVICE})
            return "hk_device", None
        if sid == d.HK_SA_SID and tm.hk_sa and len(body) == d.HK_SA_STRUCT.size * tm.hk_sa["spi"].shape[1]:
            i = cursor["sa"]
            cursor["sa"] += 1
            expect.update(
                {
                    f"hk_sa_{k}_{p.name}": int(tm.hk_sa[p.name][i, k])
                    for k in range(tm.hk_sa["spi"].shape[1])
                    for p in d.HK_SA_RECORD
                }
            )
            return "hk_sa", None
        if sid == d.HK_SAMPLES_SID and (samples := archive.decode_samples(body)) is not None:
            # decode.py leaves SID 5 to the archive: its decoding, the records packed back.
            expect.update({"hk_samples_p0": samples[0], "hk_samples_p1": len(samples[1])})
            expect["hk_samples_records"] = b"".join(
                d.SAMPLE_RECORD_HEAD.pack(lab, pred) + struct.pack(f">{len(px)}f", *px)
                for lab, pred, px in samples[1]
            )
            return "hk_samples", None
        return f"hk_sid_{sid}", f"decode.py does not decode HK SID {sid} ({len(body)} octets)"
    if h.service == d.PUS_SERVICE_EVENT and len(data) >= 2:
        ev = tm.events[cursor["event"]]
        cursor["event"] += 1
        if ev["id"] not in evs:
            return "event", f"event id {ev['id']} not in the dictionary"
        layout_kind, layout, prefix = evs[ev["id"]]
        expect["event_id"] = ev["id"]
        expect["pus_subtype"] = ev["severity"]
        p = ev["params"]
        if layout_kind == "params":
            expect.update(
                {
                    f"{prefix}_{q.name}": v
                    for q, v in zip(layout, d.struct_of(layout).unpack(p), strict=True)
                }
            )
        elif layout_kind == "struct":
            expect.update({f"{prefix}_p{i}": v for i, v in enumerate(layout.unpack(p))})
        else:
            expect[f"{prefix}_params"] = p
        return prefix, None
    if h.service == d.PUS_SERVICE_VERIFICATION and len(data) >= 4:
        row = archive.verification_row(
            0, 0.0, h.subtype, data
        )  # the archive's decoding (decode.py counts these)
        expect.update({"req_apid": row[5], "req_seq_count": row[6]})
        if row[7] is not None:
            expect["verification_failure_p0"] = row[7]
            expect["verification_failure_text"] = data[6:]
        return "verification", None
    if (h.service, h.subtype) == (d.PUS_SERVICE_LARGE_PACKET, d.LPT_UPLINK_ABORT) and len(data) == d.LPT_ABORT_STRUCT.size:
        expect.update({f"large_packet_uplink_abort_p{i}": v for i, v in enumerate(d.LPT_ABORT_STRUCT.unpack(data))})
        return "large_packet_abort", None
    if h.service == d.PUS_SERVICE_TEST:
        return "test", None
    if h.service == d.PUS_SERVICE_STORAGE and (rec := gd.store_report(h.subtype, data)) is not None:
        name = "store_content_summary" if h.subtype == 13 else "store_status"
        expect["store_count"] = 1
        expect.update({f"{name}_{k}": v for k, v in rec.items()})
        return name, None
    return f"service_{h.service}", f"decode.py does not decode service {h.service}/{h.subtype}"


def decoded_share(run_folder: Path | str) -> float:
    """`tmtc.xtce_decoded_share`: share of a run's packets that the independent XTCE decoder
    decodes from the exported XML with every parameter equal to `ground_tools.decode`'s
    (goal 1.0)."""
    return compare_run(run_folder).share
