"""The command path under abuse and faults: floods, reset loops (issue 14, items 3 and 4)."""

from __future__ import annotations

from spacepackets.ecss import PusTm

from flight_sw.config.schema import MODES
from flight_sw.tmtc import dictionary as d
from sim.bench.tmtc import flood
from tests.flight_sw.test_tmtc_helpers import Bench, uplinker


def test_repeated_short_boots_latch_safe_until_a_ground_mode_command(default_cfg, image):
    n = default_cfg.fdir.boot_escalation_count
    b = Bench(default_cfg, image)
    assert b.fsw.mode == default_cfg.executive.initial_mode
    for _ in range(n - 2):
        b.boot()
    assert b.fsw.mode == default_cfg.executive.initial_mode and b.fsw.tc.boot_record() == (n - 1, n - 1, 0)
    b.boot()  # the n-th boot in a row without a stable period
    assert b.fsw.mode == "SAFE" and b.fsw.tc.boot_record() == (n, n, 1)
    assert b.events(d.EVENT_BOOT, d.BOOT_STRUCT)[-1] == (n, n, 1)
    b.boot()  # the latch persists across boots
    assert b.fsw.mode == "SAFE"
    up = uplinker(default_cfg)
    b.send(up.mode("NOMINAL"))
    assert b.fsw.mode == "NOMINAL" and b.fsw.tc.boot_record()[1:] == (0, 0)
    b.boot()
    assert b.fsw.mode == default_cfg.executive.initial_mode and b.fsw.tc.boot_record()[1:] == (1, 0)


def test_a_stable_period_restarts_the_escalation_count(default_cfg, image):
    b = Bench(default_cfg, image)
    b.boot()
    assert b.fsw.tc.boot_record()[1] == 2
    b.fsw.tc.run(default_cfg.fdir.boot_stable_s - 1.0)
    assert b.fsw.tc.boot_record()[1] == 2
    b.fsw.tc.run(default_cfg.fdir.boot_stable_s)
    assert b.fsw.tc.boot_record()[1] == 0
    b.boot()
    b.boot()
    assert b.fsw.mode != "SAFE"


def test_a_flood_of_valid_and_invalid_frames_never_changes_the_mode(default_cfg, image):
    """30 authenticated pings and 64 garbage frames per 10 s for 10 minutes, out of contact.
    Before: the handler's cost grew with its queue, was charged to the overrun rule, and the
    satellite went to SAFE with the ceiling latched; rejection events filled the HIGH ring."""
    cfg = default_cfg
    fsw, up = flood(cfg, image, pings_per_run=30, garbage_per_run=64, seconds=600)
    tc_idx = next(s.index for s in fsw.specs if s.kind == "tc_handler")
    assert fsw.modes.transitions == 0 and fsw.mode == cfg.executive.initial_mode
    assert fsw.task_overruns[tc_idx] == 0 and fsw.overruns_total == 0
    assert fsw.tc.accepted >= 0.8 * 60 * fsw.tc.frames_per_run * 0.5  # the handler kept working
    assert fsw.tm.events_suppressed > 1000  # rejection events beyond the per-id limit
    assert fsw.downlink.event.overflow == 0  # (the pings' own verification reports may overflow)
    # The flood's own valid pings (more than a run takes) drain within a few runs once it stops;
    # then the ground is heard at once and a mode change is reported. (An outsider's flood does
    # not even take a queue slot: test_an_outsiders_flood_never_delays_a_fresh_command.)
    runs = 0
    while fsw.tc.queue:
        fsw.tc.run(fsw.t_s)
        runs += 1
    assert runs <= -(-fsw.tc.queue_max // fsw.tc.frames_per_run)
    fsw.telecommand(up.mode("NOMINAL"))
    fsw.tc.run(fsw.t_s)
    assert fsw.mode == "NOMINAL"
    ids = [d.EVENT_ID_STRUCT.unpack_from(bytes(PusTm.unpack(p, timestamp_len=d.CDS_SHORT_LEN).source_data))[0]
           for p in _queued_events(fsw)]
    assert d.EVENT_MODE_CHANGE in ids


def _queued_events(fsw):
    out = []
    ring = fsw.downlink.event
    while ring.count:
        out.append(ring.pop())
    return out


def test_the_handler_takes_only_what_its_budget_pays_for(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    for _ in range(b.fsw.tc.frames_per_run + 5):
        b.fsw.telecommand(up.ping())
    spec = next(s for s in default_cfg.tasks if s.kind == "tc_handler")
    cost = b.fsw.tc.run(0.0)
    assert cost <= spec.compute_budget_s and len(b.fsw.tc.queue) == 5
    assert MODES[b.fsw.modes.mode_index] == default_cfg.executive.initial_mode


def test_an_outsiders_flood_never_delays_a_fresh_command(default_cfg, image):
    """Noise, forgeries (fresh ARSNs, wrong MACs) and recordings of accepted frames, many times
    what one tc_handler run can take, pour in without pause. The receiver refuses all of them
    before they take a queue slot, so the ground's mode command sent in the middle of the flood
    runs at the very next run (before: the queue filled and the command was refused queue_full)."""
    import numpy as np

    from tests.flight_sw.test_tmtc_helpers import forge_mac

    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    recorded = [up.ping() for _ in range(5)]
    b.send(*recorded)  # accepted once: from now on they are replays
    forger = uplinker(default_cfg, first_seq=10_000)  # fresh ARSNs, but the MACs will be wrong
    rng = np.random.default_rng(1)
    per_run = 3 * default_cfg.tmtc.tc_queue_frames
    for run in range(20):
        for k in range(per_run):
            kind = k % 3
            if kind == 0:
                frame = recorded[k % len(recorded)]
            elif kind == 1:
                frame = forge_mac(forger.ping())
            else:
                frame = b"\xeb\x90" + rng.bytes(int(rng.integers(10, 200)))
            b.fsw.telecommand(frame)
            if run == 10 and k == per_run // 2:
                b.fsw.telecommand(up.mode("SAFE"))
        assert len(b.fsw.tc.queue) <= 1  # nothing of the flood is queued
        b.fsw.tc.run(float(run * 10))
        if run == 10:
            assert b.fsw.mode == "SAFE"
    reasons = {r[0] for r in b.rejections()}
    assert {"replay", "bad_mac", "bad_cltu"} <= reasons and "queue_full" not in reasons
    assert b.fsw.tc.rejected >= 20 * per_run
