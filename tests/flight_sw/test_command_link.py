"""COP-1 end to end: the ground's FOP-1 and the real flight software's FARM-1 over a lossy link,
with SDLS under both and the CLCW as the only feedback (issue 14, item 1)."""

from __future__ import annotations

import numpy as np
import pytest

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.cop1 import Clcw
from ground_tools.command_link import CommandLink
from ground_tools.uplink import Uplinker
from tests.flight_sw.test_tmtc_helpers import Bench


def _pass(bench, link, up, n_commands, rng, loss, clcw_loss, reboot_at=None, max_steps=400):
    """Run 10-s tc_handler periods until every command is confirmed: CLTUs lost at `loss`,
    CLCWs at `clcw_loss`. Returns the PUS sequence counts of the pings the satellite answered."""
    packets = [up.packet(d.PUS_SERVICE_TEST, 1) for _ in range(n_commands)]
    pending = list(packets)
    t = 0.0
    for step in range(max_steps):
        t += 10.0
        if step == reboot_at:
            bench.boot()  # FARM-1's V(R) is volatile: the ground must notice and re-initiate
        while pending and link.send_packet(pending[0], t):
            pending.pop(0)
        for cltu in link.radiate():
            if rng.random() >= loss:
                bench.fsw.telecommand(cltu)
        bench.fsw.tc.run(t)
        if rng.random() >= clcw_loss:
            link.on_clcw(bench.fsw.tc.link.clcw(), t)
        link.tick(t)
        if link.alerts():
            return None
        if not pending and len(link.confirmed()) == n_commands:
            break
    return packets


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_command_arrives_once_and_in_order_over_a_lossy_link(default_cfg, image, seed):
    rng = np.random.default_rng(seed)
    bench = Bench(default_cfg, image)
    up = Uplinker(default_cfg, iv_salt=bytes(4))
    link = CommandLink(up)
    assert link.fop.initiate_ad_without_clcw_check(0.0)
    bench.clear()
    sent = _pass(bench, link, up, 40, rng, loss=0.2, clcw_loss=0.3)
    assert sent is not None, link.alerts()
    assert link.confirmed() == sent  # FOP-1 confirmed each, in order
    pongs = [p for p in bench.packets() if (p.service, p.message_subtype) == (17, 2)]
    accepted = [bytes(p.source_data)[:4] for p in bench.packets() if (p.service, p.message_subtype) == (1, 1)]
    assert len(pongs) == 40 and len(accepted) == 40  # each command executed exactly once
    assert accepted == [s[:4] for s in sent]  # in the order sent (request ids: packet id + sequence)
    assert bench.fsw.tc.farm_discards > 0 and bench.fsw.tc.rejected == 0  # losses made the FARM discard


def test_after_a_flight_reboot_the_ground_resynchronises_with_unlock(default_cfg, image):
    """FARM-1 restarts at V(R) = 0: the next AD frame (N(S) = 10) is beyond its window, so the
    FARM locks out and FOP-1 raises an alert. The operator re-initiates the AD service with
    Unlock (a BC frame, authenticated) from V(S) = 0, and the rest goes through."""
    rng = np.random.default_rng(5)
    bench = Bench(default_cfg, image)
    up = Uplinker(default_cfg, iv_salt=bytes(4))
    link = CommandLink(up)
    link.fop.initiate_ad_without_clcw_check(0.0)
    assert _pass(bench, link, up, 10, rng, loss=0.0, clcw_loss=0.0) is not None
    bench.boot()
    bench.fsw.tc.run(0.0)
    link.fop.request_transfer(up.packet(d.PUS_SERVICE_TEST, 1), 1000.0)
    for cltu in link.radiate():
        bench.fsw.telecommand(cltu)
    bench.fsw.tc.run(1000.0)
    link.on_clcw(bench.fsw.tc.link.clcw(), 1000.0)
    assert link.alerts()  # N(R) = 0 does not fit what FOP-1 sent
    assert Clcw.unpack(bench.fsw.tc.link.clcw()).lockout
    link2 = CommandLink(up)  # the operator re-initiates the AD service
    assert link2.fop.initiate_ad_with_unlock(1010.0)
    for cltu in link2.radiate():
        bench.fsw.telecommand(cltu)
    bench.fsw.tc.run(1010.0)
    link2.on_clcw(bench.fsw.tc.link.clcw(), 1010.0)
    assert not Clcw.unpack(bench.fsw.tc.link.clcw()).lockout and not link2.alerts()
    bench.clear()
    sent = _pass(bench, link2, up, 10, rng, loss=0.1, clcw_loss=0.1)
    assert sent is not None and link2.confirmed() == sent
    assert len([p for p in bench.packets() if (p.service, p.message_subtype) == (17, 2)]) == 10


def test_a_replayed_ad_frame_is_refused_once_accepted(default_cfg, image):
    """Right after acceptance a copy is a FOP-1-style retransmission (counted as a FARM discard);
    once the FARM has moved past its window, the copy is refused as a replay (an event)."""
    bench = Bench(default_cfg, image)
    up = Uplinker(default_cfg, iv_salt=bytes(4))
    link = CommandLink(up, sliding_window=30)
    link.fop.initiate_ad_without_clcw_check(0.0)
    link.send_packet(up.packet(d.PUS_SERVICE_TEST, 1), 10.0)
    (old,) = link.radiate()
    bench.fsw.telecommand(old)
    bench.fsw.tc.run(10.0)
    bench.fsw.telecommand(old)  # an eavesdropper's copy, at once
    bench.fsw.tc.run(20.0)
    assert bench.fsw.tc.accepted == 1 and bench.fsw.tc.farm_discards == 1 and bench.rejections() == []
    for i in range(20):  # the FARM moves on: V(R) = 21, beyond the negative window of N(S) = 0
        link.send_packet(up.packet(d.PUS_SERVICE_TEST, 1), 30.0 + i)
        for cltu in link.radiate():
            bench.fsw.telecommand(cltu)
        bench.fsw.tc.run(30.0 + i)
        link.on_clcw(bench.fsw.tc.link.clcw(), 30.0 + i)
    assert bench.fsw.tc.link.farm.v_r == 21
    bench.fsw.telecommand(old)
    bench.fsw.tc.run(60.0)
    assert bench.fsw.tc.accepted == 21 and bench.rejections()[-1][0] == "replay"
