"""Service 15 requests on the onboard TM store (ECSS-E-ST-70-41C 6.15 and 8.15), through the
real command path (CLTU, frame, SDLS, PUS) of a flight software."""

from __future__ import annotations

import pytest
from spacepackets.ecss import PusTm

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc import packet_store as ps
from tests.flight_sw.test_tmtc_helpers import Bench, uplinker


@pytest.fixture
def bench(default_cfg, image):
    b = Bench(default_cfg, image)
    b.clear()
    return b


def _hk(i: int) -> bytes:
    return PusTm(service=3, message_subtype=25, timestamp=bytes(7), source_data=bytes([0, 1, i]), apid=0x65).pack()


def _reports(bench, subtype: int) -> list[bytes]:
    return [bytes(p.source_data) for p in bench.packets() if (p.service, p.message_subtype) == (15, subtype)]


def test_status_and_content_summary_reports(bench, default_cfg):
    store = bench.fsw.downlink.store
    for i in range(6):
        store.store(_hk(i), 100.0 + 10 * i)
    store.retrieve_view()
    up = uplinker(default_cfg)
    bench.send(up.store_request(ps.REPORT_STATUS), up.store_request(ps.REPORT_CONTENT_SUMMARY, store_ids=(1,)))
    (status,) = _reports(bench, ps.STATUS_REPORT)
    assert status[0] == 1 and ps.STATUS_STRUCT.unpack_from(status, 1) == (ps.STORE_ID, 1, 1, 0)
    (summary,) = _reports(bench, ps.CONTENT_SUMMARY_REPORT)
    sid, oldest, newest, open_start, fill, _ = ps.CONTENT_SUMMARY_STRUCT.unpack_from(summary, 1)
    assert (sid, oldest, newest, open_start) == (1, 100, 150, 110)
    assert fill == round(100 * store.used / store.capacity)


def test_storage_and_open_retrieval_switch_by_command(bench, default_cfg):
    store = bench.fsw.downlink.store
    up = uplinker(default_cfg)
    bench.send(up.store_request(ps.DISABLE_STORAGE), up.store_request(ps.SUSPEND_OPEN_RETRIEVAL))
    assert not store.storing and not store.open_in_progress
    bench.fsw.downlink.push(_hk(1))  # out of contact, storage off: the low ring keeps it
    assert store.count == 0 and bench.fsw.downlink.low.count == 1
    bench.send(up.store_request(ps.ENABLE_STORAGE, store_ids=(1,)), up.store_request(ps.RESUME_OPEN_RETRIEVAL))
    assert store.storing and store.open_in_progress


def test_by_time_range_retrieval_delete_and_open_start_by_command(bench, default_cfg):
    store = bench.fsw.downlink.store
    for i in range(10):
        store.store(_hk(i), 10.0 * i)
    while store.retrievable:
        store.retrieve_view()
    up = uplinker(default_cfg)
    bench.send(up.store_retrieve_range(20, 40))
    assert [bytes(store.retrieve_view())[-3] for _ in range(3)] == [2, 3, 4] and not store.retrievable
    bench.send(up.store_request(ps.CHANGE_OPEN_RETRIEVAL_START, time_s=70))
    assert [bytes(store.retrieve_view())[-3] for _ in range(3)] == [7, 8, 9]
    bench.send(up.store_request(ps.DELETE_UP_TO, time_s=50))
    assert store.count == 5 and store.lost == 0
    bench.send(up.store_retrieve_range(0, 1000), up.store_request(ps.ABORT_BY_TIME_RANGE))
    assert not store.retrievable
    assert [v for v in bench.verification() if v[1]] == []  # every request succeeded


def test_bad_requests_fail_with_a_code_that_names_the_problem(bench, default_cfg):
    up = uplinker(default_cfg)
    bench.send(
        up.store_request(ps.ENABLE_STORAGE, store_ids=(7,)),
        up.frame(d.PUS_SERVICE_STORAGE, ps.REPORT_STATUS, bytes([2, 0, 1])),  # N = 2, one id
        up.store_retrieve_range(50, 10),
        up.store_retrieve_range(0, 10), up.store_retrieve_range(0, 10),  # the second while one runs
    )
    failures = [(code, text) for sub, code, text in bench.verification() if code]
    assert [c for c, _ in failures] == ["store_unknown", "bad_arguments", "bad_arguments", "store_busy"]
    assert "7" in failures[0][1] and "N = 2" in failures[1][1]


def test_reports_and_failures_honour_the_acknowledgement_flags(bench, default_cfg):
    up = uplinker(default_cfg)
    bench.send(up.protect_cltu(up.packet(d.PUS_SERVICE_STORAGE, ps.REPORT_STATUS, bytes([0]), ack_flags=0)))
    assert [(p.service, p.message_subtype) for p in bench.packets()] == [(15, 19)]
    bench.clear()
    bench.send(up.protect_cltu(up.packet(d.PUS_SERVICE_STORAGE, ps.ENABLE_STORAGE, bytes([1, 0, 9]),
                                         ack_flags=0)))
    (sub, code, _), = bench.verification()
    assert (sub, code) == (d.TM_COMPLETE_FAIL, "store_unknown")


def test_without_a_store_every_request_is_refused(default_cfg, image):
    import dataclasses

    cfg = dataclasses.replace(default_cfg, downlink=dataclasses.replace(default_cfg.downlink, store_bytes=0))
    b = Bench(cfg, image)
    b.clear()
    assert b.fsw.downlink.store is None and "tmtc.packet_store" not in b.fsw.buffers
    b.send(uplinker(cfg).store_request(ps.REPORT_STATUS))
    assert [code for _, code, _ in b.verification() if code] == ["store_unknown"]
