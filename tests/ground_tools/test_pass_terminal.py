"""The FOP-1 ground terminal in a simulated mission (issue 14): the plan's packets go up as
Type-AD frames, the CLCW comes back in the downlinked frames' OCF, and every command runs
exactly once, in plan order, over a clean and over a lossy link; a checkpoint keeps it all."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from spacepackets.ecss import PusTm

from flight_sw.config import load_mission_config
from flight_sw.tmtc import dictionary as d
from ground_tools.decode import split_packets
from ground_tools.pass_terminal import PacketPlan, PassTerminal
from ground_tools.uplink import Uplinker
from ground_tools.uplink_plan import build_default_packet_plan
from sim.simulation import Simulation, spawn_rngs

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "mission_configs" / "default_sso.yaml"
#: Two contacts of the default mission (0: 1280-1872 s, 1: 6965-7548 s).
SECONDS = 0.1 * 86400


@pytest.fixture(scope="module")
def cfg():
    base = load_mission_config(DEFAULT)  # no teacher: it takes seconds to train and the link needs none
    return dataclasses.replace(base, payload=dataclasses.replace(base.payload, label_sources=("site", "self")))


@pytest.fixture(scope="module")
def image(cfg):
    from sim.prelaunch import train_prelaunch_model

    return train_prelaunch_model(cfg, spawn_rngs(cfg.mission.seed)["prelaunch"])


@pytest.fixture(scope="module")
def plan(cfg):
    """The `make sim` plan without the model upload (its ground retraining takes seconds): ping,
    a parameter load + activate, a mode change and a second ping at contact 0, a ping at contact 1."""
    up = Uplinker(cfg, packets_only=True)
    entries = [(0, up.ping()), (0, up.param_load({1: cfg.power.budget.margin_j + 500.0})),
               (0, up.param_activate()), (0, up.mode("NOMINAL")), (0, up.ping()), (1, up.ping())]
    return PacketPlan(key_id=1, first_arsn=1, iv_salt=bytes(4), entries=tuple(entries))


def _run(cfg, image, terminal, stop_at=None, seconds=SECONDS):
    cadus: list[bytes] = []
    sim = Simulation(cfg, cfg.mission.seed, seconds, cadus.append, image=image, ground_terminal=terminal)
    sim.advance(stop_at if stop_at is not None else sim.n_ticks)
    return sim, cadus


def _verifications(cadus: list[bytes]) -> list[tuple[int, bytes]]:
    """(subtype, request id) of every PUS service 1 report, decoded from the CADUs independently."""
    out = []
    for pkt in split_packets(b"".join(cadus))[0]:
        p = PusTm.unpack(pkt, timestamp_len=7)
        if p.service == d.PUS_SERVICE_VERIFICATION:
            out.append((p.message_subtype, bytes(p.source_data)[:4]))
    return out


def _assert_exactly_once_in_order(plan, cadus):
    reports = _verifications(cadus)
    sent_ids = [packet[:4] for _, packet in plan.entries]
    accepted = [rid for sub, rid in reports if sub == d.TM_ACCEPT_OK]
    completed = [rid for sub, rid in reports if sub == d.TM_COMPLETE_OK]
    assert accepted == sent_ids  # each command accepted once, in plan order
    assert completed == sent_ids
    assert not [r for r in reports if r[0] in (d.TM_ACCEPT_FAIL, d.TM_START_FAIL, d.TM_COMPLETE_FAIL)]


def test_every_command_runs_once_in_order_and_fop1_confirms_it_from_the_clcw(cfg, image, plan):
    term = PassTerminal(cfg, plan)
    sim, cadus = _run(cfg, image, term)
    _assert_exactly_once_in_order(plan, cadus)
    s = term.summary()
    assert s["uplink_commands_confirmed"] == len(plan.entries) and s["uplink_fop_alerts"] == 0
    assert s["uplink_ad_frames"] == len(plan.entries) and s["uplink_retransmissions"] == 0
    assert sim.fsw.tc.accepted == len(plan.entries) and sim.fsw.tc.rejected == 0
    report = term.report()
    starts = [p.start_s for p in sim.world.contacts]
    for rec, (group, _) in zip(report["commands"], plan.entries, strict=True):
        # confirmed by a CLCW of the contact of its group, after it was sent
        assert rec["status"] == "confirmed" and rec["confirmed_contact"] == group
        assert starts[group] <= rec["first_sent_t_s"] < rec["confirmed_t_s"] < sim.world.contacts[group].end_s
        assert rec["reports"] == {"acceptance": 1, "start": 1, "completion": 1}
    assert report["fop"]["state"] == "ACTIVE" and report["fop"]["v_s"] == report["fop"]["nn_r"] == len(plan.entries)
    assert report["fop"]["clcws_seen"] > 0 and report["association"]["next_arsn"] == 1 + len(plan.entries)
    assert sim.fsw.budget._margin_j == cfg.power.budget.margin_j + 500.0  # the parameter change took effect
    assert [p["commands_queued"] for p in report["passes"]] == [[0, 1, 2, 3, 4], [5]]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_lossy_uplink_is_repaired_by_retransmission_and_still_runs_each_command_once(cfg, image, plan, seed):
    term = PassTerminal(cfg, plan, uplink_loss=0.4, clcw_loss=0.3, seed=seed, transmission_limit=10)
    sim, cadus = _run(cfg, image, term)
    s = term.summary()
    assert s["uplink_cltus_dropped"] > 0 and s["uplink_retransmissions"] > 0  # the loss was real and repaired
    assert s["uplink_commands_confirmed"] == len(plan.entries), term.report()["events"]
    assert s["uplink_fop_alerts"] == 0 and s["uplink_commands_unconfirmed"] == 0
    _assert_exactly_once_in_order(plan, cadus)
    assert sim.fsw.tc.rejected == 0  # a retransmission is never taken for a forgery or a replay


def test_a_locked_out_farm_is_unlocked_before_the_plan_goes_up(cfg, image, plan):
    """FARM-1 in Lockout at the first pass (an AD frame far outside its window arrived earlier):
    the terminal sees it in the CLCW and initiates the AD service with a BC Unlock."""
    term = PassTerminal(cfg, plan)
    sim = Simulation(cfg, cfg.mission.seed, SECONDS, lambda c: None, image=image, ground_terminal=term)
    stray = Uplinker(cfg, 100, iv_salt=bytes(4))  # a later ARSN: security passes, FARM-1 locks out
    from flight_sw.tmtc.cltu import encode_cltu

    sim.fsw.telecommand(encode_cltu(stray.protect(stray.packet(d.PUS_SERVICE_TEST, 1), bypass=False, n_s=100)))
    sim.advance(60)
    assert sim.fsw.tc.link.farm.lockout
    term.up.seq = stray.seq  # the ground's ARSN moves past the one the stray frame used
    sim.advance(sim.n_ticks)
    s = term.summary()
    assert s["uplink_bc_frames"] >= 1 and s["uplink_commands_confirmed"] == len(plan.entries)
    assert any("Unlock" in e["text"] for e in term.report()["events"])


def test_after_the_farm_restarts_between_passes_the_terminal_re_initiates_from_the_clcw(cfg, image, plan):
    """FARM-1's state is volatile: after a restart its V(R) is 0 while FOP-1 expects 5. The next
    pass's first CLCW does not fit (alert NN(R)); the terminal sets V(S) to its N(R) and goes on."""
    from flight_sw.tmtc.cop1 import Farm1
    from flight_sw.tmtc.tc_link import FARM_BUFFER_FRAMES, FARM_WINDOW, TC_VIRTUAL_CHANNEL

    term = PassTerminal(cfg, plan)
    sim, cadus = _run(cfg, image, term, stop_at=3000)  # between contact 0 and contact 1
    assert sim.fsw.tc.link.farm.v_r == 5
    sim.fsw.tc.link.farm = Farm1(TC_VIRTUAL_CHANNEL, window_width=FARM_WINDOW, buffer_frames=FARM_BUFFER_FRAMES)
    sim.advance(sim.n_ticks)
    _assert_exactly_once_in_order(plan, cadus)
    s = term.summary()
    assert s["uplink_fop_alerts"] == 1 and s["uplink_commands_confirmed"] == len(plan.entries)
    kinds = [(e["contact"], e["kind"]) for e in term.report()["events"]]
    assert kinds.index((1, "alert")) < kinds.index((1, "initiate"))


def test_resume_from_a_checkpoint_mid_pass_gives_the_same_bytes_and_log(cfg, image, plan):
    full_term = PassTerminal(cfg, plan, uplink_loss=0.4, clcw_loss=0.3, seed=1)
    _, full = _run(cfg, image, full_term)
    first_term = PassTerminal(cfg, plan, uplink_loss=0.4, clcw_loss=0.3, seed=1)
    first, head = _run(cfg, image, first_term, stop_at=1300)  # contact 0, frames outstanding
    assert first_term.link.fop.sent_queue or first_term.queue  # the checkpoint holds link state
    blob = first.snapshot()
    resumed_term = PassTerminal(cfg, plan, uplink_loss=0.4, clcw_loss=0.3, seed=1)
    tail: list[bytes] = []
    resumed = Simulation(cfg, cfg.mission.seed, SECONDS, tail.append, image=image, ground_terminal=resumed_term)
    resumed.restore(blob)
    resumed.advance(resumed.n_ticks)
    assert b"".join(head + tail) == b"".join(full)
    assert resumed_term.report() == full_term.report()
    plain = Simulation(cfg, cfg.mission.seed, SECONDS, lambda c: None, image=image).snapshot()
    other = Simulation(cfg, cfg.mission.seed, SECONDS, lambda c: None, image=image,
                       ground_terminal=PassTerminal(cfg, plan))
    with pytest.raises(ValueError, match="without a ground terminal"):
        other.restore(plain)
    bare = Simulation(cfg, cfg.mission.seed, SECONDS, lambda c: None, image=image)
    with pytest.raises(ValueError, match="with a ground terminal"):
        bare.restore(blob)


def test_an_idle_terminal_changes_no_telemetry_byte(cfg, image):
    """With nothing to send, the terminal only listens: the run is the run without it."""
    empty = PacketPlan(key_id=1, first_arsn=1, iv_salt=bytes(4), entries=())
    _, with_terminal = _run(cfg, image, PassTerminal(cfg, empty), seconds=3000)
    _, without = _run(cfg, image, None, seconds=3000)
    assert len(without) > 10 and with_terminal == without


def test_the_default_plan_goes_up_through_fop1(cfg):
    """`groundtools uplink plan`'s default is a packet plan of the make-sim commands."""
    plan, pkg, notes = build_default_packet_plan(cfg, cfg.mission.seed, first_arsn=5)
    assert plan.first_arsn == 5 and plan.key_id == 1 and len(plan.iv_salt) == 4
    assert [g for g, _ in plan.entries] == [0] * (len(plan.entries) - 1) + [1]
    services = [(p[7], p[8]) for _, p in plan.entries]
    assert services[0] == (d.PUS_SERVICE_TEST, 1) and services[-1] == (d.PUS_SERVICE_FUNCTION, 1)
    assert any("ARSNs from 5" in n for n in notes)


def test_a_plan_the_link_cannot_carry_is_refused(cfg):
    from ground_tools.uplink import max_packet_bytes

    big = PacketPlan(1, 1, bytes(4), ((0, bytes(max_packet_bytes(cfg) + 1)),))
    with pytest.raises(ValueError, match="entry 0: packet of"):
        PassTerminal(cfg, big)
    with pytest.raises(KeyError, match="no active command key with id 9"):
        PassTerminal(cfg, PacketPlan(9, 1, bytes(4), ()))
    with pytest.raises(ValueError, match="uplink_loss"):
        PassTerminal(cfg, PacketPlan(1, 1, bytes(4), ()), uplink_loss=1.0)
