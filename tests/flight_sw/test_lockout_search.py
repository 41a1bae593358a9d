"""Stateful search: no sequence of commands, floods, reboots, power cuts and NV upsets leaves the
ground unable to command the satellite (issue 14, item 2). The bench runs a longer search."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

from flight_sw.tmtc import dictionary as d
from sim.bench.lockout_search import machine_for


def test_no_sequence_locks_the_ground_out(default_cfg, image):
    machine = machine_for(default_cfg, image)
    machine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                         suppress_health_check=list(HealthCheck), database=None,
                                         derandomize=True)  # the same search every run; the bench varies it
    machine.TestCase().runTest()


def test_the_search_finds_the_old_lockout(default_cfg, image, monkeypatch):
    """With the last-association guard removed (the behaviour before), the search must find the
    single command that locked commanding out for good."""
    import pytest

    from flight_sw.tmtc.security import Authenticator

    monkeypatch.setattr(Authenticator, "operational_command_sas", lambda self: [])
    machine = machine_for(default_cfg, image)
    machine.TestCase.settings = settings(max_examples=300, stateful_step_count=10, deadline=None,
                                         suppress_health_check=list(HealthCheck), database=None,
                                         derandomize=True,
                                         phases=[Phase.generate])  # found is enough: no shrinking
    with pytest.raises(AssertionError, match="lockout"):
        machine.TestCase().runTest()


def test_the_search_really_loads_automation(default_cfg, image):
    """Guard against a vacuous search: the automation rules reach the satellite. An event-action
    on refused frames that commands SAFE runs when garbage arrives; a time-tagged mode command
    runs when its time comes."""
    from flight_sw.tmtc import dictionary as d

    m = machine_for(default_cfg, image)()
    m.mode(signer=0, mode="NOMINAL")
    assert m.fsw.mode == "NOMINAL"
    m.automation(signer=0, kind=4, spi=1, arg=0, when="event_action", event=d.EVENT_TC_REJECTED, delay_s=0)
    m.garbage(n=1, seed=3)
    m.time_passes(seconds=1)
    assert m.fsw.mode == "SAFE"
    m.mode(signer=0, mode="NOMINAL")
    m.automation(signer=0, kind=4, spi=1, arg=0, when="schedule", event=0, delay_s=50)
    m.time_passes(seconds=10)
    assert m.fsw.mode == "NOMINAL"
    m.time_passes(seconds=60)
    assert m.fsw.mode == "SAFE"


def test_the_search_really_uploads_and_uses_cop1(default_cfg, image):
    """Guard against a vacuous search: the upload rules stage and activate a model, and the
    sequence-controlled rule gets pings through FARM-1 with half the CLCWs lost."""
    m = machine_for(default_cfg, image)()
    pkg = m._package(2)
    m.upload_parts(signer=0, version=2, parts=list(range(1, len(pkg.chunks) + 1)))
    m.trial(signer=0, fn=d.FN_MODEL_ACTIVATE)
    assert m.fsw.tc.upload.trial is not None
    before = m.fsw.tc.link.farm.v_r
    m.sequence_controlled(n=4, clcw_loss=0.5, seed=2)
    assert (m.fsw.tc.link.farm.v_r - before) % 256 == 4
