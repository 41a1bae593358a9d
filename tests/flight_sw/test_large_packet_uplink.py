"""Service 13 large packet uplink of a model package: ECSS field layout, sequencing, aborts,
reboots, acknowledgement flags (flight_sw.tmtc.upload, commands.py; ground_tools.uplink)."""

from __future__ import annotations

import numpy as np

from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc.nv_store import RedundantStore
from ground_tools.uplink import ModelPackage, Uplinker, package_model
from tests.flight_sw.test_tmtc_helpers import Bench, uplinker

CHUNK = 64


def _pkg(cfg, image, version=5, sc=5, **kw):
    head = image.head * (1.0 + 0.01 * np.random.default_rng(version).standard_normal(image.head.shape))
    return package_model(cfg, head, version=version, parent_version=image.version, security_counter=sc,
                         chunk_size=CHUNK, provenance={"run": "test"}, **kw)


def _aborts(b):
    """[(transaction id, failure code name)] of every TM[13,16]."""
    return [(tid, d.TC_FAILURES[code]) for p in b.packets()
            if (p.service, p.message_subtype) == (d.PUS_SERVICE_LARGE_PACKET, d.LPT_UPLINK_ABORT)
            for tid, code in [d.LPT_ABORT_STRUCT.unpack(bytes(p.source_data))]]


def _fails(b):
    return [v for v in b.verification() if v[0] in (2, 8)]


def _stages(b):
    return [d.MODEL_UPLOAD_STAGES[s] for s, *_ in b.events(d.EVENT_MODEL_UPLOAD, d.MODEL_UPLOAD_STRUCT)]


def test_ecss_field_layout_golden_bytes(default_cfg):
    """ECSS-E-ST-70-41C 6.13 (large packet transfer) and 8.13 (its messages): TC[13,9] first,
    TC[13,10] intermediate, TC[13,11] last uplink part, each with the large message transaction
    identifier, the part sequence number (u16 each, as AcubeSAT ecss-services'
    LargeMessageTransactionId / PartSequenceNum) and the part; the first part is number 1.
    TM[13,16] large packet uplink abortion report: transaction identifier, failure reason."""
    up = Uplinker(default_cfg, packets_only=True)
    pkg = ModelPackage({}, b"", b"", 0, b"", [b"OL", b"PK", b"!"], {}, transaction_id=0x1234)
    first, middle, last = (up.upload_part(pkg, i) for i in (1, 2, 3))
    # primary header (TC, sec. header, APID 101, unsegmented, count, length), PUS-C 0x2f (ack 1111),
    # service 13, subtype, source id 0, then transaction id 0x1234, part number, part, CRC
    assert first.hex() == "1865c000000c2f0d090000" "1234" "0001" "4f4c" "0858"
    assert middle.hex() == "1865c001000c2f0d0a0000" "1234" "0002" "504b" "6487"
    assert last.hex() == "1865c002000b2f0d0b0000" "1234" "0003" "21" "d654"
    assert d.LPT_ABORT_STRUCT.pack(0x1234, d.TC_FAILURES.index("upload_too_large")).hex() == "1234000e"


def test_parts_reassemble_in_order_and_stage_the_package(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    n = len(pkg.chunks)
    assert n > 3 and b"".join(pkg.chunks) == pkg.package and pkg.transaction_id == 5
    frames = up.upload_frames(pkg, activate=False)
    b.send(*frames[:-1])
    upl = b.fsw.tc.upload
    assert upl.transaction() == 5 and upl.next_part() == n
    assert upl.received_bytes() == len(pkg.package) - len(pkg.chunks[-1])
    assert b.fsw.tc.nv.data["staging"]["manifest"] is None  # not staged until the last part
    b.send(frames[-1])
    st = b.fsw.tc.nv.data["staging"]
    assert st["verified"] and st["manifest"] == pkg.manifest_bytes.decode() and upl.transaction() is None
    assert _stages(b) == ["session_open", "verified"] and not _fails(b) and not _aborts(b)
    b.send(up.activate(), up.confirm())
    assert b.fsw.learner.version == 5 and b.fsw.tc.nv.data["sc"] == 5


def test_a_part_received_again_is_a_no_op(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    b.send(*(up.upload_part(pkg, i) for i in (1, 2, 3)))
    end = b.store.staging.end
    b.send(up.upload_part(pkg, 1), up.upload_part(pkg, 2), up.upload_part(pkg, 2))  # resent frames
    assert b.fsw.tc.upload.next_part() == 4 and not _fails(b) and not _aborts(b)
    assert b.store.staging.end == end  # nothing appended to the staging log again
    # same number, other octets: refused, the transaction kept
    other = bytes([pkg.chunks[1][0] ^ 1]) + pkg.chunks[1][1:]
    b.send(up.frame(d.PUS_SERVICE_LARGE_PACKET, d.LPT_UPLINK_INTERMEDIATE,
                    d.LPT_PART_STRUCT.pack(pkg.transaction_id, 2) + other))
    assert _fails(b)[-1] == (8, "lpt_part_differs", "part 2 differs from the one received; expected part 4")
    b.send(*up.upload_resume(pkg, 4), up.activate())
    assert b.fsw.learner.version == 5


def test_a_gap_is_refused_naming_the_expected_part_and_the_transaction_kept(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    n = len(pkg.chunks)
    b.send(up.upload_part(pkg, 1), up.upload_part(pkg, 2), up.upload_part(pkg, 5), up.upload_part(pkg, n))
    assert _fails(b) == [(8, "lpt_unexpected_part", "part 5: expected part 3"),
                         (8, "lpt_unexpected_part", f"part {n}: expected part 3")]
    assert b.fsw.tc.upload.transaction() == pkg.transaction_id and not _aborts(b)
    b.send(*up.upload_resume(pkg, 3), up.activate())
    assert b.fsw.learner.version == 5


def test_parts_of_no_or_another_transaction_fail(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    b.send(up.upload_part(pkg, 2), up.upload_part(pkg, len(pkg.chunks)))  # nothing open
    assert [f[1] for f in _fails(b)] == ["lpt_no_transaction"] * 2
    b.send(up.upload_part(pkg, 1))
    other = _pkg(default_cfg, image, version=6, sc=6)
    b.send(up.upload_part(other, 2))
    assert _fails(b)[-1] == (8, "lpt_no_transaction", "no open transaction 6 (open: 5, expected part 2)")
    assert b.fsw.tc.upload.transaction() == 5 and b.fsw.tc.upload.next_part() == 2 and not _aborts(b)
    # a first part must carry number 1, the others at least 2
    b.send(up.frame(13, 9, d.LPT_PART_STRUCT.pack(5, 2) + b"x"), up.frame(13, 10, d.LPT_PART_STRUCT.pack(5, 0) + b"x"),
           up.frame(13, 10, d.LPT_PART_STRUCT.pack(5, 2)))
    assert [f[1] for f in _fails(b)[-3:]] == ["bad_arguments"] * 3
    assert b.fsw.tc.upload.next_part() == 2


def test_a_new_first_part_aborts_the_open_transaction(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    old, new = _pkg(default_cfg, image, version=5, sc=5), _pkg(default_cfg, image, version=6, sc=6)
    b.send(*(up.upload_part(old, i) for i in (1, 2, 3)))
    b.send(up.upload_part(new, 1))
    assert _aborts(b) == [(5, "lpt_superseded")] and not _fails(b)
    upl = b.fsw.tc.upload
    assert upl.transaction() == 6 and upl.next_part() == 2
    b.send(up.upload_part(old, 4))  # the old transaction is gone
    assert _fails(b)[-1][1] == "lpt_no_transaction"
    b.send(*up.upload_resume(new, 2), up.activate())
    assert b.fsw.learner.version == 6
    # the same transaction id with another first part starts over too (the ground changed its package)
    b.clear()
    b.send(up.confirm())
    again = _pkg(default_cfg, image, version=7, sc=7)
    b.send(up.upload_part(again, 1), up.upload_part(again, 2))
    changed = _pkg(default_cfg, image, version=7, sc=8)
    b.send(up.upload_part(changed, 1))
    assert _aborts(b) == [(7, "lpt_superseded")] and upl.next_part() == 2
    assert _stages(b).count("session_open") == 2  # the restart is a new transaction


def test_exceeding_max_upload_bytes_aborts(default_cfg, image):
    import dataclasses

    cfg = dataclasses.replace(default_cfg, tmtc=dataclasses.replace(default_cfg.tmtc, max_upload_bytes=256))
    b = Bench(cfg, image)
    up = uplinker(cfg)
    pkg = _pkg(default_cfg, image)  # packaged under the default limit: larger than 256 bytes
    assert len(pkg.package) > 256
    b.send(*up.upload_frames(pkg, activate=False))
    fails = _fails(b)
    assert fails[0][1] == "upload_too_large" and "> max_upload_bytes 256" in fails[0][2]
    assert _aborts(b) == [(pkg.transaction_id, "upload_too_large")]
    assert all(f[1] == "lpt_no_transaction" for f in fails[1:])  # the rest find no transaction
    assert b.fsw.tc.nv.data["staging"] is None


def test_reboot_mid_transfer_resumes_from_the_next_expected_part(default_cfg, image):
    store = RedundantStore.in_memory(default_cfg.tmtc.max_upload_bytes)
    b = Bench(default_cfg, image, store)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    b.send(*(up.upload_part(pkg, i) for i in range(1, 7)))
    b.boot()  # power cycle: next pass, hours later
    upl = b.fsw.tc.upload
    assert upl.transaction() == pkg.transaction_id and upl.next_part() == 7
    assert upl.received_bytes() == sum(map(len, pkg.chunks[:6]))
    up.seq = b.fsw.tc.auth.last_seq(up.key_id) + 1
    b.send(up.upload_part(pkg, 8))  # the ground guessed wrong: told where to resume
    assert _fails(b)[-1] == (8, "lpt_unexpected_part", "part 8: expected part 7")
    b.send(*up.upload_resume(pkg, 7), up.activate(), up.confirm())
    assert b.fsw.learner.version == 5 and b.fsw.tc.nv.data["sc"] == 5 and not _aborts(b)


def test_no_transfer_starts_while_a_trial_runs(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    b.send(*up.upload_frames(_pkg(default_cfg, image)))
    assert b.fsw.tc.upload.trial is not None
    nxt = _pkg(default_cfg, image, version=6, sc=6)
    b.send(up.upload_part(nxt, 1))
    assert _fails(b)[-1][1] == "upload_trial_running" and b.fsw.tc.upload.transaction() is None
    b.send(up.confirm(), *up.upload_frames(nxt))
    assert b.fsw.learner.version == 6


def test_ack_flags_success_reports_only_when_asked_failures_always(default_cfg, image):
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    pkg = _pkg(default_cfg, image)
    n = len(pkg.chunks)

    def part(i, ack_flags):
        sub = 9 if i == 1 else 11 if i == n else 10
        body = d.LPT_PART_STRUCT.pack(pkg.transaction_id, i) + pkg.chunks[i - 1]
        return up.protect_cltu(up.packet(d.PUS_SERVICE_LARGE_PACKET, sub, body, ack_flags=ack_flags))

    b.send(*(part(i, 0) for i in range(1, n)))
    assert b.verification() == []  # flags 0: no acceptance, start or completion success report
    b.send(up.protect_cltu(up.packet(d.PUS_SERVICE_LARGE_PACKET, 10,
                                     d.LPT_PART_STRUCT.pack(pkg.transaction_id, n + 3) + b"x", ack_flags=0)))
    assert b.verification() == [(8, "lpt_unexpected_part", f"part {n + 3}: expected part {n}")]
    b.clear()
    b.send(part(n, 0))
    assert b.verification() == [] and b.fsw.tc.nv.data["staging"]["verified"]
    b.send(up.protect_cltu(up.packet(d.PUS_SERVICE_LARGE_PACKET, 10,
                                     d.LPT_PART_STRUCT.pack(1, 2) + b"x", ack_flags=d.ACK_ACCEPTANCE)))
    assert [v[:2] for v in b.verification()] == [(1, None), (8, "lpt_no_transaction")]
    b.clear()
    b.send(up.upload_part(_pkg(default_cfg, image, version=9, sc=9), 1))  # default flags: all reports
    assert [v[0] for v in b.verification()] == [1, 3, 7]


def test_a_cfdp_package_replacing_an_open_transfer_aborts_it(default_cfg, image):
    """Both paths end in stage_package; a file CFDP delivered (the handler's entry for it; the
    transport is tested in test_cfdp_link.py) supersedes an open service 13 transaction."""
    b = Bench(default_cfg, image)
    up = uplinker(default_cfg)
    by_parts, by_file = _pkg(default_cfg, image, version=5, sc=5), _pkg(default_cfg, image, version=6, sc=6)
    b.send(up.upload_part(by_parts, 1), up.upload_part(by_parts, 2))
    b.fsw.tc._stage_file("head_v6.olpk", by_file.package, 0.0)
    assert _aborts(b) == [(5, "lpt_superseded")] and b.fsw.tc.upload.transaction() is None
    assert _stages(b)[-1] == "verified"
    b.send(up.upload_part(by_parts, 3))
    assert _fails(b)[-1][1] == "lpt_no_transaction"
    b.send(up.activate())
    assert b.fsw.learner.version == 6
