"""The XTCE export of the dictionary: schema-valid XTCE 1.2, complete, and decoding a real run.

The decoder is space-packet-parser (LASP, BSD-3-Clause), an XTCE-driven CCSDS packet decoder
written outside this project: it is handed only the exported XML and the packet bytes, and each
value it decodes is compared with `ground_tools.decode`'s for the same packet
(`ground_tools.xtce.compare_run`). The schema is the OMG XTCE 1.2 XSD (SpaceSystem.xsd,
namespace http://www.omg.org/spec/XTCE/20180204) that space-packet-parser ships; validation
reads it from the package, never from the network.
"""

from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from flight_sw.tmtc import dictionary as d
from ground_tools import xtce

spp = pytest.importorskip("space_packet_parser")

NS = {"x": xtce.XTCE_NS}


@pytest.fixture(scope="module")
def xml_text() -> str:
    return xtce.xtce_text(apid=101)


def _root(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_export_validates_against_the_xtce_1_2_schema(tmp_path, xml_text):
    path = xtce.export_xtce(tmp_path / "dictionary.xml", apid=101)
    assert path.read_text(encoding="utf-8") == xml_text
    assert _root(xml_text).tag == f"{{{xtce.XTCE_NS}}}SpaceSystem"
    xsd = Path(spp.__file__).parent / "xtce" / "schemas" / "SpaceSystem.xsd"
    schema = ET.parse(xsd).getroot()
    assert schema.get("version") == "1.2" and schema.get("targetNamespace") == xtce.XTCE_NS
    result = spp.validate_xtce(
        path,
        level="schema",
        local_xsd=xsd,
        allow_schema_download=False,
        raise_on_error=False,
        print_results=False,
    )
    assert result.valid and not result.errors, [str(e) for e in result.errors[:10]]
    # A broken document is refused by the same check (the validation is not vacuous).
    broken = tmp_path / "broken.xml"
    broken.write_text(xml_text.replace("<EntryList>", "<EntryList><Bogus/>", 1), encoding="utf-8")
    refused = spp.validate_xtce(
        broken,
        level="schema",
        local_xsd=xsd,
        allow_schema_download=False,
        raise_on_error=False,
        print_results=False,
    )
    assert not refused.valid


def test_export_holds_every_dictionary_structure(xml_text):
    root = _root(xml_text)
    containers = {c.get("name"): c for c in root.iterfind(".//x:SequenceContainer", NS)}
    params = {p.get("name"): p for p in root.iterfind(".//x:ParameterSet/x:Parameter", NS)}
    commands = {c.get("name"): c for c in root.iterfind(".//x:MetaCommand", NS)}
    for leaf in (
        "hk_core",
        "hk_device",
        "hk_samples",
        "hk_tasks_n12",
        "hk_orbit_n12",
        "hk_sa_n3",
        "test_pong",
        "verification_acceptance_ok",
        "verification_completion_fail",
    ):
        assert leaf in containers, leaf
    for name, fields in (
        ("hk_core", d.HK_CORE),
        ("hk_device", d.HK_DEVICE),
        ("hk_orbit", d.HK_ORBIT),
        ("hk_tasks_0", d.HK_TASK_RECORD),
        ("hk_sa_2", d.HK_SA_RECORD),
        ("ev_training_update", d.TRAINING_UPDATE),
    ):
        for p in fields:
            assert f"{name}_{p.name}" in params, (name, p.name)
    for num, name in xtce.event_layouts().items():
        assert f"ev_{name.lower()}" in containers, (num, name)
    assert "ev_rate_limit" not in containers and "ev_events_per_id_limit" not in containers
    for num, name in xtce.function_ids().items():
        cmd = commands[f"fn_{name.lower()}"]
        assign = cmd.find(".//x:ArgumentAssignment[@argumentName='function_id']", NS)
        assert assign is not None and int(assign.get("argumentValue")) == num, name
    assert {"ping", "load_parameter", "large_packet_first_part", "large_packet_intermediate_part",
            "large_packet_last_part"} <= set(commands)
    assert not {"upload_open", "upload_part", "upload_verify"} & set(commands)  # service 23 is gone
    for name, sub in (("large_packet_first_part", 9), ("large_packet_intermediate_part", 10),
                      ("large_packet_last_part", 11)):
        assign = commands[name].find(".//x:ArgumentAssignment[@argumentName='subtype']", NS)
        assert int(assign.get("argumentValue")) == sub
        args = [a.get("name") for a in commands[name].findall(".//x:ArgumentList/x:Argument", NS)]
        assert args == ["transaction_id", "part_sequence_number", "part"], args
    assert "large_packet_uplink_abort" in containers
    # Units come from the dictionary.
    soc_type = root.find(".//x:ParameterTypeSet/*[@name='hk_core_solar_power_w']", NS)
    assert soc_type.find(".//x:Unit", NS).text == "W"


def test_real_run_decoded_from_the_xtce_alone_matches_the_ground_decoder(short_run):
    res = xtce.compare_run(short_run)
    assert res.packets > 500
    assert not res.mismatches, res.mismatches
    # Every packet is either decoded identically or one decode.py gives no values for.
    assert res.identical + sum(res.ground_undecoded.values()) == res.packets
    for kind in (
        "hk_core",
        "hk_tasks",
        "hk_orbit",
        "hk_device",
        "hk_samples",
        "ev_training_update",
        "ev_contact",
    ):
        assert res.by_kind.get(kind, 0) > 0, (kind, res.by_kind)
    # What decode.py does not decode yet (HK SID 6), the XTCE decoder parses to the last bit.
    assert sum(res.xtce_only.values()) == sum(res.ground_undecoded.values())
    assert res.parameters_compared > 30 * res.identical
    share = xtce.decoded_share(short_run)
    assert share == res.share
    print(
        f"tmtc.xtce_decoded_share = {share:.4f} ({res.identical}/{res.packets}; "
        f"not decoded by decode.py: {res.ground_undecoded})"
    )


def test_comparison_catches_a_wrong_layout(short_run, xml_text):
    """Guard against a vacuous comparison: one field's byte order flipped is found."""
    root = _root(xml_text)
    enc = root.find(".//x:IntegerParameterType[@name='hk_core_tick']/x:IntegerDataEncoding", NS)
    enc.set("byteOrder", "leastSignificantByteFirst")
    bad = ET.tostring(root, encoding="unicode")
    res = xtce.compare_run(short_run, xml=bad)
    assert res.mismatches and all("hk_core_tick" in m for m in res.mismatches)
    assert res.by_kind.get("hk_core", 0) <= 1  # tick 0 reads the same in either byte order


def test_verification_reports_of_the_flight_handler_decode_identically(run_copy):
    """Service 1 and 17 reports (no uplink in the short run): packed by the flight's own TC handler
    (`TcHandler._execute`, its encoder) for a ping, an unknown service and a foreign APID, appended
    to a copy of the run's telemetry."""
    from types import SimpleNamespace

    from spacepackets.ecss import PusTc

    from flight_sw.tmtc.commands import TcHandler
    from flight_sw.tmtc.packets import TmEncoder
    from ground_tools.decode import packet_stream
    from ground_tools.runfolder import open_run

    cfg = open_run(run_copy).cfg
    out: list[bytes] = []
    handler = TcHandler.__new__(TcHandler)  # only the encoder is needed: no NV store, no keys
    handler.tables = SimpleNamespace(data={})
    handler.tm = TmEncoder(cfg.telemetry.apid, cfg.mission.start_utc, lambda pkt, high: out.append(pkt))
    handler.apid = cfg.telemetry.apid
    for seq, (apid, service) in enumerate(
        ((cfg.telemetry.apid, 17), (cfg.telemetry.apid, 99), (cfg.telemetry.apid + 1, 17))
    ):
        tc = PusTc(service=service, message_subtype=1, apid=apid, seq_count=seq + 7)
        handler._execute(tc, 100.0 + seq)
    assert len(out) == 4 + 1 + 1  # ping: accept, start, pong, complete; two acceptance failures
    telemetry = run_copy / "telemetry.bin"  # TM frames: the packets they carry, then the new ones
    telemetry.write_bytes(packet_stream(telemetry.read_bytes(), cfg) + b"".join(out))
    res = xtce.compare_run(run_copy)
    assert not res.mismatches, res.mismatches
    assert res.by_kind.get("verification") == 5 and res.by_kind.get("test") == 1


def test_service_15_reports_decode_identically_and_the_requests_are_exported(run_copy, xml_text):
    """TM[15,13] and TM[15,19] of a real packet store, packed by the flight encoder and appended
    to a copy of the run; the XTCE decoder must read every field as decode.store_report does."""
    import numpy as np

    from flight_sw.tmtc.packet_store import PacketStore
    from flight_sw.tmtc.packets import TmEncoder
    from ground_tools.decode import packet_stream
    from ground_tools.runfolder import open_run

    cfg = open_run(run_copy).cfg
    store = PacketStore(np.zeros(4096, np.uint8))
    for i in range(7):
        store.store(bytes(40 + i), 1000.0 + 30 * i)
    store.retrieve_view()
    store.open_in_progress = False
    out: list[bytes] = []
    enc = TmEncoder(cfg.telemetry.apid, cfg.mission.start_utc, lambda pkt, high: out.append(pkt))
    enc.emit(d.PUS_SERVICE_STORAGE, 13, bytes([1]) + store.content_summary(), 2000.0)
    enc.emit(d.PUS_SERVICE_STORAGE, 19, bytes([1]) + store.status(), 2001.0)
    telemetry = run_copy / "telemetry.bin"
    telemetry.write_bytes(packet_stream(telemetry.read_bytes(), cfg) + b"".join(out))
    res = xtce.compare_run(run_copy)
    assert not res.mismatches, res.mismatches
    assert res.by_kind.get("store_content_summary") == 1 and res.by_kind.get("store_status") == 1
    commands = {c.get("name") for c in _root(xml_text).iterfind(".//x:MetaCommand", NS)}
    assert {f"store_{n}_1" for n in ("enable", "disable", "retrieve_range", "delete_up_to", "report_summary",
                                     "open_start", "resume_open", "suspend_open", "abort_range",
                                     "report_status")} <= commands


def test_large_packet_uplink_abort_report_decodes_from_the_export(xml_text, tmp_path):
    """TM[13,16] as the flight software packs it, decoded by space-packet-parser from the XML."""
    import warnings
    from datetime import UTC, datetime

    from flight_sw.tmtc.packets import TmEncoder

    raw: list[bytes] = []
    enc = TmEncoder(101, datetime(2026, 3, 1, tzinfo=UTC), lambda p, high=False: raw.append(p))
    code = d.TC_FAILURES.index("lpt_superseded")
    enc.emit(d.PUS_SERVICE_LARGE_PACKET, d.LPT_UPLINK_ABORT, d.LPT_ABORT_STRUCT.pack(0xBEEF, code), 0.0)
    path = tmp_path / "d.xml"
    path.write_text(xml_text, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pkt = spp.load_xtce(path).parse_bytes(raw[0], root_container_name="ccsds_packet")
    values = {k: getattr(v, "raw_value", v) for k, v in pkt.items()}
    assert values["large_packet_uplink_abort_p0"] == 0xBEEF and values["large_packet_uplink_abort_p1"] == code
