"""SDLS-like command security: MAC before anti-replay, windows, key slots, persistence, fuzzing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight_sw.config import load_mission_config
from flight_sw.config.loader import ConfigError, parse_mission_config
from flight_sw.config.schema import MissionConfig, TmtcConfig
from flight_sw.tmtc import dictionary as d
from flight_sw.tmtc import sdls
from flight_sw.tmtc.cltu import decode_cltu, encode_cltu
from flight_sw.tmtc.dictionary import TC_REJECT_REASONS
from flight_sw.tmtc.nv_store import RedundantStore
from flight_sw.tmtc.tc_frames import TcFrame, crc16
from ground_tools.uplink import tc_frame
from tests.flight_sw.test_tmtc_helpers import Bench, forge_mac, packet_of, uplinker

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "mission_configs").glob("*.yaml"))


@pytest.fixture
def bench(default_cfg, image):
    return Bench(default_cfg, image)


def test_valid_frame_is_accepted_and_counter_persisted(bench, default_cfg):
    up = uplinker(default_cfg)
    bench.send(up.ping())
    assert bench.fsw.tc.accepted == 1 and bench.rejections() == []
    assert [v[0] for v in bench.verification()] == [1, 3, 7]
    assert bench.store.saves >= 1 and bench.fsw.tc.auth.last_seq(up.key_id) == 1


def test_bad_mac_is_rejected_before_the_counter_is_touched(bench, default_cfg):
    up = uplinker(default_cfg, first_seq=5)
    good = up.ping()
    forged = forge_mac(good)
    saves = bench.store.saves
    bench.send(forged)
    assert bench.rejections() == [("bad_mac", up.key_id, 5)]
    assert bench.fsw.tc.auth.last_seq(up.key_id) == 0 and bench.store.saves == saves
    bench.send(good)  # the genuine frame with the same number still works
    assert bench.fsw.tc.accepted == 1


def test_replay_and_window(bench, default_cfg):
    up = uplinker(default_cfg)
    f1 = up.ping()
    bench.send(f1, f1)
    assert [r[0] for r in bench.rejections()] == ["replay"]
    w = default_cfg.tmtc.anti_replay_window
    up.seq = 1 + w + 1  # just outside (last, last + window]
    bench.send(up.ping())
    up.seq = 1 + w
    bench.send(up.ping())
    assert [r[0] for r in bench.rejections()] == ["replay", "outside_window"]
    assert bench.fsw.tc.auth.last_seq(up.key_id) == 1 + w


def test_huge_sequence_number_then_valid_one(bench, default_cfg):
    up = uplinker(default_cfg)
    up.seq = 2**64 - 1
    bench.send(up.ping())
    up.seq = 1
    bench.send(up.ping())
    assert [r[0] for r in bench.rejections()] == ["outside_window"]
    assert bench.fsw.tc.accepted == 1 and bench.fsw.tc.auth.last_seq(up.key_id) == 1


def _frame(cfg, material, spi, arsn, packet, service=sdls.AUTH):
    """(primary header, data field) of an SDLS-protected expedited frame, for `verify_frame`."""
    raw = tc_frame(cfg, material, service, spi, arsn, packet, bypass=True,
                   iv=bytes(12) if service == sdls.AUTH_ENC else None)
    return raw[:5], raw[5:-2]


def test_every_key_slot_is_swept(bench, default_cfg):
    """Every SPI 0..65535: only configured, operational command associations authenticate."""
    packet = packet_of(uplinker(default_cfg).ping())
    keys = {k.key_id: k for k in default_cfg.tmtc.keys}
    auth = bench.fsw.tc.auth
    for kid in range(65536):
        k = keys.get(kid)
        material = bytes.fromhex(k.key_hex) if k else bytes(32)
        for mat in (material, bytes(32), b""):
            reason, *_ = auth.verify_frame(*_frame(default_cfg, mat, kid, auth.last_seq(kid) + 1, packet))
            if k is None:
                assert reason == "unknown_key", kid
            elif not k.active:
                assert reason == "key_deactivated", kid
            elif k.purpose != "command":
                assert reason == "wrong_key_purpose", kid
            elif mat == material:
                assert reason is None, kid
            else:
                assert reason == "bad_mac", kid


def test_authenticated_encryption_hides_the_command_and_refuses_tampering(default_cfg, image):
    """An association whose key slot is AES-256-GCM (355.0-B authenticated encryption): the
    command is not in the frame in clear, and any bit changed in header, IV, ARSN, ciphertext or
    tag is refused as bad_mac."""
    keys = tuple(dataclasses.replace(k, service="authenticated_encryption") if k.purpose == "command" else k
                 for k in default_cfg.tmtc.keys)
    cfg = dataclasses.replace(default_cfg, tmtc=dataclasses.replace(default_cfg.tmtc, keys=keys))
    b = Bench(cfg, image)
    up = uplinker(cfg)
    cltu = up.ping()
    frame, _ = decode_cltu(cltu)
    plain = up.packet(d.PUS_SERVICE_TEST, 1)[:-2]  # the packet's header and data field, without its CRC
    assert plain[6:] not in frame
    b.send(cltu)
    assert b.fsw.tc.accepted == 1 and [v[0] for v in b.verification()] == [1, 3, 7]
    header, field = frame[:5], frame[5:-2]
    for bit in range(0, 8 * (len(header) + len(field)), 7):
        raw = bytearray(header + field)
        raw[bit // 8] ^= 1 << (bit % 8)
        reason, *_ = b.fsw.tc.auth.verify_frame(bytes(raw[:5]), bytes(raw[5:]))
        assert reason in ("bad_mac", "unknown_key", "key_deactivated", "too_short"), bit


def test_the_last_command_association_cannot_be_stopped(bench, default_cfg):
    """SDLS 355.1-B 3.4.6 Stop SA, with the rule that keeps the satellite commandable: stopping the
    only operational command association is refused (it used to lock commanding out for good)."""
    up = uplinker(default_cfg)
    bench.send(up.sa_stop(up.key_id))
    assert bench.verification()[-1][:2] == (8, "last_command_sa")
    bench.send(up.ping())
    assert bench.rejections() == [] and bench.fsw.tc.accepted == 2


def test_spare_association_started_then_the_first_stopped_persists(bench, default_cfg):
    spare = next(k.key_id for k in default_cfg.tmtc.keys if k.purpose == "command" and not k.active)
    up = uplinker(default_cfg)
    up_spare = uplinker(default_cfg, key_id=spare)
    bench.send(up_spare.ping())
    assert bench.rejections()[-1][0] == "key_deactivated"  # keyed, not operational yet
    bench.send(up.sa_start(spare), up_spare.ping(), up_spare.sa_stop(up.key_id), up.ping())
    assert bench.rejections()[-1][0] == "key_deactivated"  # the first one is now stopped
    assert bench.events(d.EVENT_SA_STATUS, d.SA_STATUS_STRUCT)[-1] == (up.key_id, up.key_id, 0, 1)
    bench.boot()
    bench.send(up.ping(), up_spare.ping())
    assert bench.rejections()[-1][0] == "key_deactivated" and bench.fsw.tc.auth.last_seq(spare) == 4
    # and the spare cannot be stopped now: it is the last one
    bench.send(up_spare.sa_stop(spare))
    assert bench.verification()[-1][:2] == (8, "last_command_sa")


def test_rekey_and_set_arsn_keep_a_window_open(bench, default_cfg):
    keys = {k.key_id: k for k in default_cfg.tmtc.keys}
    spare = next(k for k in keys if keys[k].purpose == "command" and not keys[k].active)
    upload = next(k for k in keys if keys[k].purpose == "upload")
    up = uplinker(default_cfg)
    bench.send(up.sa_rekey(up.key_id, spare))  # operational: refused
    assert bench.verification()[-1][:2] == (8, "sa_operational")
    bench.send(up.sa_rekey(spare, upload))  # a command association cannot take an upload key
    assert bench.verification()[-1][:2] == (8, "wrong_key_purpose")
    bench.send(up.sa_set_arsn(up.key_id, 2**62))  # above a quarter of the space: refused
    assert bench.verification()[-1][:2] == (8, "bad_arguments")
    bench.send(up.sa_set_arsn(spare, 500), up.sa_status(spare))
    assert bench.events(d.EVENT_SA_STATUS, d.SA_STATUS_STRUCT)[-1] == (spare, spare, 0, 500)
    bench.send(up.sa_set_arsn(spare, 499))  # lower: a recording of frame 500 would pass again
    assert bench.verification()[-1][:2] == (8, "bad_arguments") and bench.fsw.tc.auth.last_seq(spare) == 500
    bench.send(up.sa_rekey(spare, spare))  # same purpose: allowed, and the ARSN is kept
    assert bench.fsw.tc.auth.last_seq(spare) == 500


def test_a_rekey_back_to_an_old_key_does_not_reopen_its_recordings(bench, default_cfg):
    """Before: a rekey restarted the ARSN at 0, so giving an association back a key it had
    used made every frame recorded under that key acceptable again."""
    keys = {k.key_id: k for k in default_cfg.tmtc.keys}
    spare = next(k for k in keys if keys[k].purpose == "command" and not keys[k].active)
    up = uplinker(default_cfg)
    up_spare = uplinker(default_cfg, key_id=spare)
    bench.send(up.sa_start(spare))
    recorded = [up_spare.ping() for _ in range(3)]
    bench.send(*recorded)
    assert bench.fsw.tc.auth.last_seq(spare) == 3
    bench.send(up.sa_stop(spare), up.sa_rekey(spare, up.key_id), up.sa_rekey(spare, spare), up.sa_start(spare))
    bench.clear()
    bench.send(*recorded)  # the eavesdropper replays what it recorded under the spare key
    assert [r[0] for r in bench.rejections()] == ["replay"] * 3


def test_a_refusal_tells_the_ground_where_the_window_is(bench, default_cfg):
    """A ground that lost its count (too far ahead or behind) reads the onboard ARSN from the
    refusal event and is commanding again with the next frame."""
    up = uplinker(default_cfg)
    bench.send(up.ping(), up.ping())
    up.seq = 10**9
    bench.send(up.ping())
    reason, spi, claimed, onboard = bench.rejections(with_onboard=True)[-1]
    assert (reason, claimed, onboard) == ("outside_window", 10**9, 2)
    up.seq = onboard + 1
    bench.send(up.ping())
    assert bench.fsw.tc.accepted == 3


def test_replay_after_reboot_fails_including_first_frame(default_cfg, image):
    store = RedundantStore.in_memory(default_cfg.tmtc.max_upload_bytes)
    b = Bench(default_cfg, image, store)
    up = uplinker(default_cfg)
    frames = [up.ping() for _ in range(3)]
    snap = b.fsw.snapshot()  # taken before the frames: an older NV image of the flight state
    b.send(*frames)
    # Cold start with the same store: the very first frame after boot is a replay.
    b.boot()
    b.clear()
    b.send(frames[2])
    assert b.rejections() == [("replay", up.key_id, 3)]
    # Restore an older snapshot: the store, not the snapshot, holds the counter.
    b.boot(snapshot=snap)
    b.clear()
    b.send(*frames)
    assert [r[0] for r in b.rejections()] == ["replay"] * 3
    b.send(up.ping())
    assert b.fsw.tc.accepted == 1


def test_lost_record_is_recovered_only_with_this_boots_nonce(default_cfg, image):
    """Both NV copies damaged: every frame is refused except FN_TC_RECOVER echoing the nonce of
    this boot (event TC_STATE_LOST); a recovery frame recorded at an earlier loss is refused."""
    store = RedundantStore.in_memory(default_cfg.tmtc.max_upload_bytes)
    b = Bench(default_cfg, image, store)
    up = uplinker(default_cfg)
    b.send(up.ping(), up.ping())
    cells = store.device.cells
    for slot in range(2):  # damage both slots (e.g. an upset in each)
        cells[slot * store.record.slot_bytes + 20] ^= 0xFF
    b.boot()
    (nonce,) = b.events(d.EVENT_TC_STATE_LOST, d.TC_STATE_LOST_STRUCT)[-1]
    b.send(up.ping())
    assert b.rejections()[-1][0] == "state_corrupt"
    stale = up.recover(nonce ^ 1, 1000, 0)
    b.send(stale)
    assert b.verification()[-1][:2] == (8, "recovery_refused") and b.fsw.tc.nv.lost
    old = up.recover(nonce, 1000, 0)  # recorded by an eavesdropper, replayed after the next loss
    b.send(old)
    assert not b.fsw.tc.nv.lost and b.fsw.tc.auth.last_seq(up.key_id) == 1000
    b.send(up.ping())
    assert b.fsw.tc.accepted == 3  # since this boot: the refused recovery, the good one, the ping
    for slot in range(2):
        cells[slot * store.record.slot_bytes + 20] ^= 0x0F
    b.boot()
    b.send(old)
    assert b.fsw.tc.nv.lost and b.verification()[-1][:2] == (8, "recovery_refused")
    # An honest frame below the floor is a replay once the state is back.
    (nonce2,) = b.events(d.EVENT_TC_STATE_LOST, d.TC_STATE_LOST_STRUCT)[-1]
    assert nonce2 != nonce
    b.send(up.recover(nonce2, 5000, 0))
    up.seq = 4000
    b.send(up.ping())
    assert b.rejections()[-1][0] == "replay"


def test_keys_never_appear_in_telemetry(default_cfg, image):
    """Run commands, rejections and housekeeping through the real downlink; scan every byte."""
    sent: list[bytes] = []
    b = Bench(default_cfg, image)
    from flight_sw.app import FlightSoftware
    from tests.flight_sw.conftest import FakePayload

    payload = FakePayload(default_cfg)
    fsw = FlightSoftware(default_cfg, image, payload, sent.append, tc_store=b.store, reference=payload.reference)
    up = uplinker(default_cfg)
    fsw.telecommand(up.ping())
    fsw.telecommand(forge_mac(up.ping()))
    fsw.telecommand(b"\x01" * 50)
    for tick in range(0, 400):
        fsw.inputs.in_contact = True
        fsw.step(tick)
    blob = b"".join(sent) + bytes(b.store.device.cells)
    assert len(sent) > 20 and fsw.tc.accepted == 1 and fsw.tc.rejected == 2
    for k in default_cfg.tmtc.keys:
        material = bytes.fromhex(k.key_hex)
        for i in range(0, len(material) - 7):  # no 8-byte window of any key, raw or hex
            assert material[i : i + 8] not in blob
            assert material[i : i + 8].hex().encode() not in blob
    assert "key_hex=<redacted>" in repr(default_cfg) and default_cfg.tmtc.keys[0].key_hex not in repr(default_cfg)


# -- no insecure switch in any shipped config ------------------------------------------------
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_shipped_config_can_disable_authentication(path, image):
    cfg = load_mission_config(path)
    names = {f.name.lower() for f in dataclasses.fields(TmtcConfig)} | {
        f.name.lower() for f in dataclasses.fields(MissionConfig)
    }
    assert not any(w in n for n in names for w in ("insecure", "bypass", "disable_auth", "no_auth"))
    commands = [k for k in cfg.tmtc.keys if k.purpose == "command" and k.active]
    assert commands and all(len(bytes.fromhex(k.key_hex)) >= 32 for k in cfg.tmtc.keys)
    assert any(t.kind == "tc_handler" and t.criticality == "essential" for t in cfg.tasks)
    # An unsigned frame and a frame with an all-zero key are refused by this config's flight software.
    b = Bench(cfg.with_optimizer("digital"), image) if cfg.payload.bands == image.w1.shape[0] else None
    if b is not None:
        up = uplinker(cfg)
        packet = packet_of(up.ping())
        kid = commands[0].key_id
        header, field = _frame(cfg, bytes(32), kid, 1, packet)
        unsigned = field[:-sdls.MAC_LEN] + bytes(sdls.MAC_LEN)
        b.send(*(encode_cltu(header + f + crc16(header + f).to_bytes(2, "big")) for f in (unsigned, field)))
        assert [r[0] for r in b.rejections()] == ["bad_mac", "bad_mac"]
    text = path.read_text().replace("tmtc:\n", "tmtc:\n  insecure: true\n", 1)
    with pytest.raises(ConfigError, match="insecure"):
        parse_mission_config(text, str(path))


def test_short_or_duplicate_keys_are_refused(default_cfg, image):
    from flight_sw.tmtc.security import keys_from_config

    k = default_cfg.tmtc.keys[0]
    short = dataclasses.replace(default_cfg.tmtc, keys=(dataclasses.replace(k, key_hex="00" * 16),))
    with pytest.raises(ValueError, match="at least 32 bytes") as e:
        keys_from_config(short)
    assert "00" * 16 not in str(e.value)
    dup = dataclasses.replace(default_cfg.tmtc, keys=(k, k))
    with pytest.raises(ValueError, match="duplicate"):
        keys_from_config(dup)


# -- property-based fuzzing of the TC path ---------------------------------------------------
@st.composite
def cltus(draw, valid: bytes, cfg):
    """Mutations of a valid CLTU at every layer: bytes, codeblocks, frame fields, SDLS fields."""
    kind = draw(st.sampled_from(["random", "truncated", "bitflip", "huge", "forged", "frame", "recoded"]))
    if kind == "random":
        return draw(st.binary(max_size=1200))
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "bitflip":
        i = draw(st.integers(0, 8 * len(valid) - 1))
        out = bytearray(valid)
        out[i // 8] ^= 1 << (i % 8)
        return bytes(out)
    if kind == "huge":
        return valid + draw(st.binary(min_size=1, max_size=10)) * draw(st.integers(100, 5000))
    frame, _ = decode_cltu(valid)
    if kind == "forged":  # a correctly coded frame whose MAC is made up
        body = frame[:-2 - sdls.MAC_LEN] + draw(st.binary(min_size=sdls.MAC_LEN, max_size=sdls.MAC_LEN))
        return encode_cltu(body + crc16(body).to_bytes(2, "big"))
    if kind == "frame":  # any frame fields, any data, valid FECF and coding
        data = draw(st.binary(min_size=1, max_size=300))
        bypass = draw(st.booleans())
        t = TcFrame(spacecraft_id=draw(st.sampled_from([cfg.telemetry.spacecraft_id, 0, 0x3FF])),
                    virtual_channel_id=draw(st.integers(0, 63)), frame_sequence_number=draw(st.integers(0, 255)),
                    data=data, bypass=bypass, control_command=bypass and draw(st.booleans()))
        return encode_cltu(t.pack())
    # a valid frame with one byte of its data field changed, re-coded with a good FECF
    i = draw(st.integers(5, len(frame) - 3))
    body = bytearray(frame[:-2])
    body[i] ^= draw(st.integers(1, 255))
    return encode_cltu(bytes(body) + crc16(bytes(body)).to_bytes(2, "big"))


@pytest.fixture(scope="module")
def fuzz_bench(default_cfg, image):
    return Bench(default_cfg, image)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_frames_are_rejected_with_a_reason_and_never_move_the_window(fuzz_bench, default_cfg, data):
    b = fuzz_bench
    auth = b.fsw.tc.auth
    up = uplinker(default_cfg, first_seq=auth.last_seq(1) + 1)
    valid = up.ping()
    cltu = data.draw(cltus(valid, default_cfg))
    before = json.dumps(auth.nv.data["sa"], sort_keys=True)
    genuine = decode_cltu(cltu)[0] == decode_cltu(valid)[0]
    reason = b.fsw.tc.process(cltu, 0.0)  # must not raise
    if reason is None:
        assert genuine, "a frame other than the genuine one was accepted"
    else:
        assert reason in TC_REJECT_REASONS
    if not genuine:
        assert json.dumps(auth.nv.data["sa"], sort_keys=True) == before, "an unauthenticated frame moved the window"
    b.clear()


def test_the_sdls_mac_is_rfc_4231_hmac_sha_256_over_header_security_header_and_data():
    """Known-answer test of our construction (CCSDS 355.0-B 3.3.2.3: MAC over the frame primary
    header, the security header and the data; truncated to its 128 leftmost bits). RFC 4231
    test case 2: key "Jefe", message "what do ya want for nothing?", HMAC-SHA-256
    5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843. The message is cut into
    a 5-octet primary header, the 10-octet security header (SPI "do", ARSN " ya want") and data."""
    from flight_sw.tmtc import sdls

    header, spi, arsn, data = b"what ", int.from_bytes(b"do", "big"), int.from_bytes(b" ya want", "big"), b" for nothing?"
    field = sdls.protect(sdls.AUTH, b"Jefe", spi, arsn, header, data)
    assert field[:10] + field[10:-16] == b"do ya want for nothing?"
    assert field[-16:] == bytes.fromhex("5bdcc146bf60754e6a042426089575c7")
    assert sdls.unprotect(sdls.AUTH, b"Jefe", header, field) == (None, arsn, data)
