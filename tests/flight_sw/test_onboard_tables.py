"""Services 11 (time-tagged commands), 12 (on-board monitoring), 19 (event-action) and the PUS-C
acknowledgement flags (ECSS-E-ST-70-41C 5.3.5, 6.11, 6.12, 6.19)."""

from __future__ import annotations

import pytest

from flight_sw.tmtc import dictionary as d
from tests.flight_sw.test_tmtc_helpers import Bench, uplinker


@pytest.fixture
def bench(default_cfg, image):
    b = Bench(default_cfg, image)
    b.clear()
    return b


def _subtypes(bench):
    return [(p.service, p.message_subtype) for p in bench.packets() if p.service in (1, 17)]


def test_success_reports_follow_the_acknowledgement_flags(bench, default_cfg):
    up = uplinker(default_cfg)
    bench.fsw.telecommand(up.protect_cltu(
        up.packet(d.PUS_SERVICE_TEST, 1, ack_flags=d.ACK_ACCEPTANCE | d.ACK_COMPLETION)))
    bench.fsw.tc.run(0.0)
    assert _subtypes(bench) == [(1, 1), (17, 2), (1, 7)]  # no start report
    bench.clear()
    bench.fsw.telecommand(up.protect_cltu(up.packet(d.PUS_SERVICE_TEST, 1, ack_flags=0)))
    bench.fsw.telecommand(up.protect_cltu(up.packet(99, 1, ack_flags=0)))
    bench.fsw.tc.run(0.0)
    assert _subtypes(bench) == [(17, 2), (1, 2)]  # failures are always reported


def test_time_tagged_commands_run_at_their_time_and_survive_a_reboot(bench, default_cfg):
    up = uplinker(default_cfg)
    ping = up.packet(d.PUS_SERVICE_TEST, 1)
    late = up.packet(d.PUS_SERVICE_TEST, 1)
    bench.send(up.schedule([(500, late), (100, ping)]))
    assert bench.verification()[-1][0] == 7
    bench.clear()
    bench.fsw.tc.run(99.0)
    assert _subtypes(bench) == []
    bench.fsw.tc.run(100.0)
    assert (17, 2) in _subtypes(bench) and bench.fsw.tc.tables.data["schedule"] == [[500, late.hex()]]
    bench.boot()  # the schedule is in the NV record
    bench.clear()
    bench.fsw.tc.run(600.0)
    assert (17, 2) in _subtypes(bench) and bench.fsw.tc.tables.data["schedule"] == []


def test_stored_commands_may_not_change_the_tables_and_the_tables_are_bounded(bench, default_cfg):
    up = uplinker(default_cfg)
    nested = up.packet(d.PUS_SERVICE_SCHEDULE, 3)
    bench.send(up.schedule([(10, nested)]))
    assert bench.verification()[-1][:2] == (8, "bad_arguments")
    ping = up.packet(d.PUS_SERVICE_TEST, 1)
    for first in range(0, default_cfg.tmtc.schedule_slots, 32):
        bench.send(up.schedule([(1000 + i, ping) for i in range(first, first + 32)]))
    assert len(bench.fsw.tc.tables.data["schedule"]) == default_cfg.tmtc.schedule_slots
    bench.send(up.schedule([(5000, ping)]))
    assert bench.verification()[-1][:2] == (8, "table_full")


def test_a_monitored_limit_raises_its_event_and_the_event_action_runs_the_stored_command(bench, default_cfg):
    """Service 12 watches the state of charge; below 0.9 it raises event 101, which service 19
    turns into a mode command to NOMINAL. Reported once per transition."""
    up = uplinker(default_cfg)
    event = d.EVENT_MONITOR_CHECK + 1
    bench.send(up.monitor_add(7, "soc", 0.9, 1.0, event, repetitions=2),
               up.event_action_add(event, up.packet(d.PUS_SERVICE_FUNCTION, 1, d.FN_STRUCT.pack(d.FN_MODE) + bytes([1]))))
    assert [v[0] for v in bench.verification()] == [1, 3, 7, 1, 3, 7]
    bench.clear()
    fsw = bench.fsw
    fsw.inputs.soc = 0.85
    fsw._task_housekeeping(60.0)  # first sample out of limits: not yet (2 repetitions)
    assert bench.events(event, d.MONITOR_CHECK_STRUCT) == []
    fsw._task_housekeeping(120.0)
    assert bench.events(event, d.MONITOR_CHECK_STRUCT) == [(7, 1, pytest.approx(0.85))]
    fsw._task_housekeeping(180.0)  # still low: no new report
    assert len(bench.events(event, d.MONITOR_CHECK_STRUCT)) == 1
    assert fsw.mode == default_cfg.executive.initial_mode
    fsw.tc.run(180.0)  # the event-action's command runs in the next tc_handler run
    assert fsw.mode == "NOMINAL"
    # disable the action, bring the value back and out again: the event, but no action
    bench.send(up.table_ids(d.PUS_SERVICE_EVENT_ACTION, 5, [event]), up.mode("TRAINING"))
    fsw.inputs.soc = 0.95
    fsw._task_housekeeping(240.0)
    fsw.inputs.soc = 0.5
    fsw._task_housekeeping(300.0)
    fsw._task_housekeeping(360.0)
    fsw.tc.run(360.0)
    assert len(bench.events(event, d.MONITOR_CHECK_STRUCT)) == 2 and fsw.mode == "TRAINING"
    bench.send(up.table_ids(d.PUS_SERVICE_MONITORING, 6, [99]))
    assert bench.verification()[-1][:2] == (8, "bad_arguments")


def test_an_event_action_that_triggers_itself_cannot_starve_the_uplink(bench, default_cfg):
    """Found by the lockout search: an event-action on SA_STATUS whose command raises SA_STATUS
    again re-queued itself for ever and took every tc_handler run, so no uplinked frame (not
    even the one deleting it) was processed again. Stored commands now take at most half a run
    while frames wait."""
    up = uplinker(default_cfg)
    loop = up.packet(d.PUS_SERVICE_FUNCTION, 1, d.FN_STRUCT.pack(d.FN_SA_STATUS) + (up.key_id).to_bytes(2, "big"))
    bench.send(up.event_action_add(d.EVENT_SA_STATUS, loop), up.sa_status(up.key_id))  # the loop starts
    for _ in range(3):
        bench.fsw.tc.run(0.0)
    assert bench.fsw.tc.internal  # it keeps running itself
    bench.clear()
    bench.send(up.ping(), up.table_ids(d.PUS_SERVICE_EVENT_ACTION, 2, [d.EVENT_SA_STATUS]))
    assert (17, 2) in [(p.service, p.message_subtype) for p in bench.packets()]  # the ping got through
    for _ in range(3):
        bench.fsw.tc.run(0.0)
    assert not bench.fsw.tc.internal  # deleted: the loop has stopped
