"""Non-volatile storage: redundant A/B record, append-only staging, power cuts at every byte."""

from __future__ import annotations

import zlib

import pytest

from flight_sw.tmtc.nv_store import (
    SLOT_HEADER,
    SLOT_MAGIC,
    FileDevice,
    MemoryDevice,
    NvLayout,
    RecordState,
    RedundantRecord,
    RedundantStore,
)
from sim.bench.nv_power_cut import RecordingDevice, cut_everywhere, record_session
from tests.flight_sw.test_tmtc_helpers import Bench, uplinker


@pytest.fixture(scope="module")
def session(default_cfg, image):
    return record_session(default_cfg, image)


def test_a_power_cut_at_every_byte_of_every_write_leaves_the_old_or_the_new_state(session):
    log, layout = session
    report = cut_everywhere(log, layout)
    assert report.writes >= 30 and report.offsets_tested == sum(len(d) for _, d in log) > 10_000
    assert report.states_lost == 0, report.failures


def test_the_cut_checker_finds_a_record_that_overwrites_its_only_good_copy(default_cfg, image, monkeypatch):
    """The same replay against a record that writes into its newest slot must find lost states."""

    def single_slot_save(self, blob):
        body = SLOT_HEADER.pack(SLOT_MAGIC, self.generation + 1, len(blob)) + blob
        self.device.write(self._slot_offset(0), body + zlib.crc32(body).to_bytes(4, "big"))
        self.generation += 1
        self.newest_slot = 0
        self.state = RecordState.VALID

    monkeypatch.setattr(RedundantRecord, "save", single_slot_save)
    log, layout = record_session(default_cfg, image)
    report = cut_everywhere(log, layout)
    assert report.states_lost > 1000


def test_erased_damaged_and_lost_are_told_apart():
    layout = NvLayout(4096)
    dev = MemoryDevice(layout.size)
    rec = RedundantRecord(dev, 0, layout.record_capacity)
    assert rec.load() == b"" and rec.state is RecordState.EMPTY
    rec.format(b"first")
    rec.save(b"second")
    assert RedundantRecord(dev, 0, layout.record_capacity).load() == b"second"
    dev.cells[rec.slot_bytes * rec.newest_slot + 18] ^= 1  # the newest copy takes an upset
    again = RedundantRecord(dev, 0, layout.record_capacity)
    assert again.load() == b"first" and again.state is RecordState.VALID
    dev.cells[rec.slot_bytes * (1 - rec.newest_slot) + 18] ^= 1  # and then the other one
    both = RedundantRecord(dev, 0, layout.record_capacity)
    assert both.load() == b"" and both.state is RecordState.LOST
    fresh = MemoryDevice(layout.size)
    fresh.cells[3] = 0  # a format cut short: one slot damaged, the other erased
    cut = RedundantRecord(fresh, 0, layout.record_capacity)
    assert cut.load() == b"" and cut.state is RecordState.EMPTY
    with pytest.raises(ValueError, match="exceeds"):
        rec.save(bytes(layout.record_capacity + 1))


def test_file_device_keeps_the_record_across_a_reopen(tmp_path):
    layout = NvLayout(4096)
    path = tmp_path / "nv.bin"
    with open(path, "w+b") as f:
        store = RedundantStore(FileDevice(f, layout.size), layout)
        assert store.load() == b""
        store.format(b"a")
        store.save(b"b")
        store.staging.begin(7)
        store.staging.append(0, b"part-zero")
    assert path.stat().st_size == layout.size
    with open(path, "r+b") as f:
        store = RedundantStore(FileDevice(f, layout.size), layout)
        assert store.load() == b"b"
        store.staging.scan(7)
        assert store.staging.read(0) == b"part-zero"
        with pytest.raises(ValueError, match="outside"):
            store.device.read(layout.size - 1, 2)


def test_upload_parts_append_and_never_rewrite_the_record(default_cfg, image):
    """Before: every part rewrote the whole record (16 commits, 17 KB for a 198-byte head).
    Now a part writes its own bytes plus a 16-byte entry frame, and the record not at all
    (the first part opens the transaction in the record; the last completes the package)."""
    from ground_tools.uplink import package_model

    layout = NvLayout(default_cfg.tmtc.max_upload_bytes)
    dev = RecordingDevice(layout.size)
    b = Bench(default_cfg, image, RedundantStore(dev, layout))
    up = uplinker(default_cfg)
    pkg = package_model(default_cfg, image.head * 0.9, version=5, parent_version=image.version,
                        security_counter=1, chunk_size=16)
    n = len(pkg.chunks)
    b.send(up.upload_part(pkg, 1))
    start = len(dev.log)
    parts = [up.upload_part(pkg, i) for i in range(2, n)]
    for frame in parts:  # one frame per run
        b.send(frame)
    writes = dev.log[start:]
    staged = [d for off, d in writes if off >= layout.staging_offset]
    record = [d for off, d in writes if off < layout.staging_offset]
    assert len(record) == len(parts)  # only each frame's anti-replay commit
    assert len(staged) == len(parts) and sum(map(len, staged)) == sum(map(len, pkg.chunks[1:-1])) + 16 * len(parts)
    b.send(up.upload_part(pkg, n))
    assert b.verification()[-1][0] == 7 and b.fsw.tc.nv.data["staging"]["verified"]


_WRITER = """
import sys
from flight_sw.tmtc.nv_store import FileDevice, NvLayout, RedundantStore
layout = NvLayout(4096)
with open(sys.argv[1], "r+b") as f:
    store = RedundantStore(FileDevice(f, layout.size), layout)
    k = int(store.load()[:8] or b"0")
    while True:
        k += 1
        store.save(b"%08d" % k * 200)  # 1.6 KB a record: the kill lands mid-write often
        print(k, flush=True)
"""


def test_a_killed_process_leaves_the_file_store_at_its_last_or_next_record(tmp_path):
    """The file-backed store under real process kills (SIGKILL at random moments, the OS does not
    get to finish anything for the process): every reopen finds the last record the writer
    reported committed, or the one it was writing; never a lost or mixed record."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpy as np

    layout = NvLayout(4096)
    path = tmp_path / "nv.bin"
    with open(path, "w+b") as f:
        RedundantStore(FileDevice(f, layout.size), layout).format(b"%08d" % 0 * 200)
    rng = np.random.default_rng(11)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    last = 0
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                                env=env)
        first = proc.stdout.readline()  # the writer is running and has committed once
        assert first.strip(), "the writer did not start"
        time.sleep(float(rng.uniform(0.0, 0.05)))
        proc.send_signal(signal.SIGKILL)
        out = first + proc.stdout.read()
        proc.wait()
        reported = [int(x) for x in out.split()]
        with open(path, "r+b") as f:
            store = RedundantStore(FileDevice(f, layout.size), layout)
            blob = store.load()
        k = int(blob[:8])
        assert blob == b"%08d" % k * 200  # a whole record, not a mix
        assert k in (reported[-1], reported[-1] + 1), (k, reported[-3:])
        assert k > last
        last = k
