"""Power cuts at every byte of every NV write of a telecommand session (issue 14, item 3).

`record_session` runs a real flight software through a session that touches every kind of
NV write (anti-replay commits, association procedures, parameter load and activation, a
model upload by service 13 with its parts appended to the staging log and a reboot in the
middle, the package staged by the last part, trial and confirm, boots) on a device that logs
each write.
`cut_everywhere` then replays the log: before each write it applies the first k bytes of
that write, for every k from 0 to its length - 1 (a power cut k bytes in), boots the NV
store from that image and checks that what it finds is the state before the write or the
state after it: the record blob one or the other, the staged parts one or the other, never
a lost record. Used by tests/flight_sw/test_nv_store.py and `flightsim bench tmtc`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flight_sw.tmtc.nv_store import MemoryDevice, NvLayout, RecordState, RedundantStore


class RecordingDevice(MemoryDevice):
    """A memory device that keeps every write (offset, bytes) in order."""

    def __init__(self, size: int):
        super().__init__(size)
        self.log: list[tuple[int, bytes]] = []

    def write(self, offset: int, data: bytes) -> None:
        super().write(offset, data)
        self.log.append((offset, bytes(data)))


@dataclass
class CutReport:
    writes: int = 0
    offsets_tested: int = 0
    states_lost: int = 0
    failures: list[str] = field(default_factory=list)


def _observe(device: MemoryDevice, layout: NvLayout) -> tuple[RecordState, bytes, dict[int, bytes]]:
    """What a boot finds: the record's state and blob, and the staged parts of its session."""
    import json

    from flight_sw.tmtc.security import NV_MAGIC

    store = RedundantStore(device, layout)
    blob = store.load()
    session = -1
    if blob.startswith(NV_MAGIC):
        staging = json.loads(blob[len(NV_MAGIC):]).get("staging")
        session = staging["session"] if staging else -1
    store.staging.scan(session)
    return store.state, blob, {i: store.staging.read(i) for i in sorted(store.staging.parts)}


def cut_everywhere(log: list[tuple[int, bytes]], layout: NvLayout, max_failures: int = 20) -> CutReport:
    """Replay `log` on an erased device with a power cut at every byte of every write."""
    device = MemoryDevice(layout.size)
    cells = device.cells
    report = CutReport(writes=len(log))
    before = _observe(device, layout)
    for w, (offset, data) in enumerate(log):
        original = bytes(cells[offset : offset + len(data)])
        cells[offset : offset + len(data)] = data
        after = _observe(device, layout)
        for k in range(len(data)):
            cells[offset : offset + len(data)] = data[:k] + original[k:]
            seen = _observe(device, layout)
            report.offsets_tested += 1
            lost = seen[0] is RecordState.LOST or (before[0] is RecordState.VALID and seen[0] is not RecordState.VALID)
            if lost or seen not in (before, after):
                report.states_lost += 1
                if len(report.failures) < max_failures:
                    report.failures.append(f"write {w} at {offset} ({len(data)} bytes) cut after {k}: "
                                           f"{seen[0].value}, neither the state before nor after")
        cells[offset : offset + len(data)] = data
        before = after
    return report


def record_session(cfg, image, entropy_seed: int = 0) -> tuple[list[tuple[int, bytes]], NvLayout]:
    """Run a session touching every NV write kind on a recording device; return its write log."""
    import numpy as np

    from flight_sw.app import FlightSoftware
    from ground_tools.uplink import Uplinker, package_model

    layout = NvLayout(cfg.tmtc.max_upload_bytes)
    device = RecordingDevice(layout.size)
    store = RedundantStore(device, layout)
    boots = [0]

    class Dark:
        def acquire(self, pixels, ancillary):
            return 0

    def boot():
        boots[0] += 1
        fsw = FlightSoftware(cfg.with_optimizer("digital"), image, Dark(), lambda p: None, tc_store=store,
                             entropy=np.random.default_rng([entropy_seed, boots[0]]).bytes)
        fsw.tm.sink = lambda packet, high=False: None
        return fsw

    def send(fsw, *frames):
        for f in frames:
            fsw.telecommand(f)
        fsw.tc.run(fsw.t_s)

    fsw = boot()
    keys = {k.key_id: k for k in cfg.tmtc.keys}
    spare = next((k for k in keys if keys[k].purpose == "command" and not keys[k].active), None)
    up = Uplinker(cfg)
    send(fsw, up.ping(), up.ping(), up.param_load({1: 5.0}), up.param_activate())
    if spare is not None:
        send(fsw, up.sa_start(spare), up.sa_set_arsn(spare, 40), up.sa_stop(spare), up.sa_rekey(spare, spare))
    # the onboard tables (services 11, 12, 19): every kind of table write
    ping = up.packet(17, 1)
    send(fsw, up.schedule([(3600, ping)]), up.monitor_add(1, "tc_rejected", -1.0, 1e6, 100),
         up.event_action_add(100, ping), up.table_ids(12, 6, [1]))
    head = np.asarray(image.head, dtype=np.float64) * 0.9
    # parts of about 200 bytes: five or six parts, as many NV writes as the old 48-byte payload chunks
    pkg = package_model(cfg, head, version=image.version + 4, parent_version=image.version,
                        security_counter=3, chunk_size=200)
    n = len(pkg.chunks)
    send(fsw, *(up.upload_part(pkg, i) for i in range(1, n // 2 + 1)))
    fsw = boot()  # a reboot mid-upload: the parts are found again in the staging log
    up.seq = fsw.tc.auth.last_seq(up.key_id) + 1
    assert fsw.tc.upload.next_part() == n // 2 + 1, "the transfer must resume after the reboot"
    send(fsw, *up.upload_resume(pkg, n // 2 + 1), up.activate(), up.confirm())
    assert fsw.tc.nv.data["sc"] == 3, "the session must end with the upload confirmed"
    for _ in range(cfg.fdir.boot_escalation_count):  # short boots in a row: the safe latch is written
        fsw = boot()
    assert fsw.tc.boot_record()[2] == 1, "the session must set the safe latch"
    up.seq = fsw.tc.auth.last_seq(up.key_id) + 1
    send(fsw, up.mode("NOMINAL"))  # and a ground mode command clears it
    assert fsw.tc.boot_record()[2] == 0
    boot()
    return device.log, layout
