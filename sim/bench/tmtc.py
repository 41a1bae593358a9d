"""Benchmark group `tmtc`: telecommand fuzzing and model uplink over the contact schedule.

- ``tmtc.frame_fuzz_frames``: CLTUs pushed through `TcHandler.process` of a real flight
  software (full: 1,000,000; quick: 20,000): random bytes, truncations, bit errors on the
  coded CLTU, oversize input, correctly coded frames with made-up MACs or one changed byte,
  frames with any header fields and random data, authentic frames with ARSNs far outside the
  window, and about 1% genuine frames (so the accept path is exercised).
- ``tmtc.frame_fuzz_crashes``: exceptions that escaped the handler (must be 0).
- ``tmtc.frame_fuzz_forgeries_accepted``: accepted CLTUs whose frame was not a genuine one.
- ``tmtc.frame_fuzz_frames_per_s``: handler throughput on this machine (refusal events included).
- ``tmtc.torn_write_offsets_tested`` / ``tmtc.torn_write_states_lost``: a power cut at every
  byte of every NV write of a full telecommand session (sim/bench/nv_power_cut.py); the boot
  after each must find the state before or after the write (lost: must be 0).
- ``tmtc.lockout_states_found``: lockouts found by the stateful search of
  sim/bench/lockout_search.py over ``tmtc.lockout_sequences_searched`` random sequences of
  association procedures, pings, floods, mode commands, reboots, power cuts and NV upsets
  (must be 0).
- ``tmtc.flood_mode_changes``: mode changes while 30 authenticated pings and 64 garbage frames
  arrive every 10 s out of contact (10 min quick, 1 h full; must be 0), with
  ``tmtc.flood_overruns``, ``tmtc.flood_events_suppressed`` and ``tmtc.flood_event_ring_overflow``.
- ``tmtc.xtce_decoded_share``: share of a 0.25-day default run's packets that an independent
  decoder (space-packet-parser) decodes from the exported XTCE alone exactly as the ground
  decoder does (ground_tools/xtce.py; goal 1.0).
- ``tmtc.cfdp_contacts_10pct_loss``: contacts a 64 KiB file needs by CFDP class 2 over the
  mean contact at the uplink rate, 10% of PDUs lost each way (mean of 20 draws; ``_max``).
- ``tmtc.uplink_contacts_1pct_loss`` / ``tmtc.uplink_contacts_10pct_loss``: contacts the
  default model (the uploadable head, int8, signed) needs over the default mission's
  contact schedule (skyfield truth) at `tmtc.uplink_rate_bps`, frames lost at random;
  mean over 50 independent loss draws (``..._max``: the worst draw). The upload is the
  service 13 large packet uplink of the signed package: each round the ground resends from
  the part the service 1 failure reports name as expected (a lost part stops the ones after
  it) and waits one tc_handler period (10 s) for the reports; an unconfirmed trial reverts
  between contacts.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"
ROUND_TRIP_S = 10.0


class _Payload:
    def acquire(self, pixels, ancillary):
        return 0


def _fsw(cfg, image):
    from flight_sw.app import FlightSoftware

    # the flight software alone (no device): its optimizer is the digital one
    fsw = FlightSoftware(cfg.with_optimizer("digital"), image, _Payload(), lambda p: None)
    fsw.tm.sink = lambda p, high=False: None  # events are built (cost measured) but not queued
    return fsw


def _recode(frame_body: bytes) -> bytes:
    """A CLTU around `frame_body` with a correct FECF: only the security layer can refuse it."""
    from flight_sw.tmtc.cltu import encode_cltu
    from flight_sw.tmtc.tc_frames import crc16

    return encode_cltu(frame_body + crc16(frame_body).to_bytes(2, "big"))


def _fuzz(cfg, image, n: int, log) -> dict[str, float]:
    from flight_sw.tmtc.cltu import decode_cltu, encode_cltu
    from flight_sw.tmtc.tc_frames import TcFrame
    from ground_tools.uplink import Uplinker

    fsw = _fsw(cfg, image)
    tc = fsw.tc
    up = Uplinker(cfg)
    rng = np.random.default_rng(cfg.mission.seed)
    template = up.ping()
    tframe = decode_cltu(template)[0]
    forged_kinds: list[int] = []
    huge = [bytes(rng.integers(0, 256, size, dtype=np.uint8)) for size in (1025, 4096, 65536, 1 << 20)]
    kinds = rng.integers(0, 100, n)
    crashes = forgeries = accepted = 0
    genuine: set[bytes] = {tframe}  # built with the key: its truncations or tail flips may still decode to it
    t0 = time.perf_counter()
    for i in range(n):
        k = kinds[i]
        if k < 1:  # genuine
            frame = up.ping()
            genuine.add(decode_cltu(frame)[0])
        elif k < 15:
            frame = rng.bytes(int(rng.integers(0, 1100)))
        elif k < 25:
            frame = template[: int(rng.integers(0, len(template)))]
        elif k < 40:  # bit errors on the coded CLTU (BCH detects)
            b = bytearray(template)
            for j in rng.integers(0, 8 * len(b), int(rng.integers(1, 4))):
                b[j // 8] ^= 1 << (j % 8)
            frame = bytes(b)
        elif k < 42:
            frame = huge[int(rng.integers(0, len(huge)))]
        elif k < 57:  # made-up MAC on a correctly coded frame
            frame = _recode(tframe[: -2 - 16] + rng.bytes(16))
        elif k < 67:  # one byte of header, security header or packet changed, re-coded
            body = bytearray(tframe[:-2])
            body[int(rng.integers(0, len(body)))] ^= int(rng.integers(1, 256))
            frame = _recode(bytes(body))
        elif k < 77:  # authentic but far outside the window (ground bug / replayed old key use)
            seq = up.seq
            up.seq = int(rng.integers(seq + cfg.tmtc.anti_replay_window + 1, 2**62))
            frame = up.ping()
            up.seq = seq
            genuine.add(decode_cltu(frame)[0])  # authentic: acceptance would not be a forgery
        else:  # any frame fields (AD, BD, BC; any SCID and VC) with random data, valid coding
            bypass = bool(rng.integers(0, 2))
            frame = encode_cltu(TcFrame(
                spacecraft_id=int(rng.choice([cfg.telemetry.spacecraft_id, int(rng.integers(0, 1024))])),
                virtual_channel_id=int(rng.integers(0, 2)), frame_sequence_number=int(rng.integers(0, 256)),
                data=rng.bytes(int(rng.integers(1, 80))), bypass=bypass,
                control_command=bypass and bool(rng.integers(0, 2))).pack())
        try:
            reason = tc.process(frame, 0.0)
        except Exception:  # noqa: BLE001 - counted: the figure must be 0
            crashes += 1
            continue
        if reason is None:
            accepted += 1
            if decode_cltu(frame)[0] not in genuine:
                forgeries += 1
                forged_kinds.append(int(k))
        if i and i % 200_000 == 0:
            log(f"  fuzz: {i:,} frames")
    dt = time.perf_counter() - t0
    log(f"  fuzz: {n:,} frames, {accepted} accepted (genuine), {crashes} crashes, {forgeries} forgeries, {n / dt:,.0f}/s")
    if forged_kinds:
        log(f"  FORGERIES ACCEPTED, mutation kinds (0-99 draws): {forged_kinds[:10]}")
    return {"tmtc.frame_fuzz_frames": n, "tmtc.frame_fuzz_crashes": crashes,
            "tmtc.frame_fuzz_forgeries_accepted": forgeries, "tmtc.frame_fuzz_frames_per_s": n / dt,
            "tmtc.frame_fuzz_genuine_accepted": accepted}


def _uplink_contacts(fsw, cfg, pkg_for, contacts, loss: float, rng) -> int:
    """Contacts used until the model is confirmed onboard (the real handler decides every step)."""
    from ground_tools.uplink import Uplinker

    up = Uplinker(cfg, first_seq=fsw.tc.auth.last_seq(1) + 1)
    pkg = pkg_for()
    rate = cfg.tmtc.uplink_rate_bps
    tc, upl = fsw.tc, fsw.tc.upload
    sc0 = tc.nv.data["sc"]
    for used, c in enumerate(contacts, start=1):
        left = c.duration_s
        while left > ROUND_TRIP_S:
            st = tc.nv.data["staging"]
            if upl.trial is not None:
                batch = [up.confirm()]
            elif st is not None and st["verified"] and st["manifest"] == pkg.manifest_bytes.decode():
                batch = [up.activate()]
            elif upl.transaction() == pkg.transaction_id:
                # resume where the failure reports say (1,8 "expected part N"): read onboard here
                batch = up.upload_resume(pkg, upl.next_part()) + [up.activate()]
            else:
                batch = up.upload_frames(pkg)
            for f in batch:
                need = 8 * len(f) / rate
                if need > left:
                    break
                left -= need
                if rng.random() >= loss:
                    tc.process(f, 0.0)
            left -= ROUND_TRIP_S
            if tc.nv.data["sc"] > sc0:
                return used
        upl.revert()  # hours until the next contact: an unconfirmed trial reverts itself
    return -1


def flood(cfg, image, pings_per_run: int, garbage_per_run: int, seconds: int, seed: int = 3):
    """Step a flight software out of contact while authenticated pings and garbage frames pour in
    every tc_handler period (issue 14: a flood must not change the mode). Returns (fsw, uplinker)."""
    from flight_sw.app import FlightSoftware
    from ground_tools.uplink import Uplinker

    fsw = FlightSoftware(cfg.with_optimizer("digital"), image, _Payload(), lambda p: None)
    up = Uplinker(cfg)
    rng = np.random.default_rng(seed)
    period = int(next(s.period_s for s in cfg.tasks if s.kind == "tc_handler"))
    for tick in range(seconds):
        if tick % period == period // 2:
            for _ in range(pings_per_run):
                fsw.telecommand(up.ping())
            for _ in range(garbage_per_run):
                fsw.telecommand(rng.bytes(int(rng.integers(0, 200))))
        fsw.inputs.in_contact = False
        fsw.step(tick)
    return fsw, up


def _command_path(cfg, image, quick: bool, log) -> dict[str, float]:
    """Power cuts at every NV byte, the lockout search, and the flood (issue 14)."""
    from hypothesis import HealthCheck, settings

    from sim.bench.lockout_search import machine_for
    from sim.bench.nv_power_cut import cut_everywhere, record_session

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    writes, layout = record_session(cfg, image)
    cut = cut_everywhere(writes, layout)
    out["tmtc.torn_write_offsets_tested"] = float(cut.offsets_tested)
    out["tmtc.torn_write_states_lost"] = float(cut.states_lost)
    log(f"  power cut at every byte of {cut.writes} NV writes: {cut.offsets_tested} offsets, "
        f"{cut.states_lost} states lost ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    examples = 40 if quick else 400
    machine = machine_for(cfg, image)
    machine.TestCase.settings = settings(max_examples=examples, stateful_step_count=30, deadline=None,
                                         suppress_health_check=list(HealthCheck), database=None)
    try:
        machine.TestCase().runTest()
        found = 0
    except AssertionError as e:
        found = 1
        log(f"  LOCKOUT FOUND: {str(e).splitlines()[0]}")
    out["tmtc.lockout_sequences_searched"] = float(examples)
    out["tmtc.lockout_states_found"] = float(found)
    log(f"  lockout search: {examples} sequences of up to 30 steps, {found} lockouts "
        f"({time.perf_counter() - t0:.1f} s)")

    fsw, _ = flood(cfg, image, pings_per_run=30, garbage_per_run=64, seconds=600 if quick else 3600)
    out["tmtc.flood_mode_changes"] = float(fsw.modes.transitions)
    out["tmtc.flood_overruns"] = float(fsw.overruns_total)
    out["tmtc.flood_events_suppressed"] = float(fsw.tm.events_suppressed)
    out["tmtc.flood_event_ring_overflow"] = float(fsw.downlink.event.overflow)
    log(f"  flood (30 pings + 64 garbage frames per 10 s): {fsw.modes.transitions} mode changes, "
        f"{fsw.overruns_total} overruns, {fsw.tm.events_suppressed} events rate-limited, "
        f"{fsw.downlink.event.overflow} event reports refused")
    return out


def _xtce_share(cfg, log) -> dict[str, float]:
    """Decode a short default run's telemetry from the exported XTCE alone (space-packet-parser)
    and compare with the ground decoder: the share of packets decoded identically."""
    import tempfile

    from ground_tools.xtce import compare_run
    from sim.runner import run_mission

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_mission(cfg, DEFAULT_CONFIG.read_text(), Path(tmp) / "run", days=0.25, show_progress=False)
        cmp = compare_run(Path(tmp) / "run")
    share = cmp.identical / cmp.packets if cmp.packets else 0.0
    log(f"  XTCE: {cmp.identical} of {cmp.packets} packets decoded identically from the export alone "
        f"({time.perf_counter() - t0:.0f} s)")
    return {"tmtc.xtce_decoded_share": share, "tmtc.xtce_packets": float(cmp.packets)}


def _cfdp(cfg, contacts, quick: bool, log) -> dict[str, float]:
    """`tmtc.cfdp_contacts_10pct_loss`: contacts a 64 KiB file needs by CFDP class 2 at the
    mission's uplink rate over the mean contact, 10% of PDUs lost each way (CLTU coding, frame
    and SDLS overhead counted); mean and worst over seeded loss draws."""
    from ground_tools.cfdp_uplink import contacts_needed

    contact_s = float(np.mean([c.duration_s for c in contacts]))
    draws = 5 if quick else 20
    used = [contacts_needed(cfg, 64 * 1024, 0.10, np.random.default_rng(seed), contact_s,
                            cfg.tmtc.uplink_rate_bps) for seed in range(draws)]
    log(f"  CFDP class 2, 64 KiB at {cfg.tmtc.uplink_rate_bps / 1e3:g} kbit/s, 10% loss each way, "
        f"{contact_s:.0f} s contacts: {np.mean(used):.2f} contacts (max {max(used)}) over {draws} draws")
    return {"tmtc.cfdp_contacts_10pct_loss": float(np.mean(used)),
            "tmtc.cfdp_contacts_10pct_loss_max": float(max(used))}


def run(quick: bool, log=print) -> dict[str, float]:
    from flight_sw.config import load_mission_config
    from ground_tools.uplink import package_model
    from sim.orbit_truth import GroundStation, OrbitTruth
    from sim.prelaunch import train_prelaunch_model

    cfg = load_mission_config(DEFAULT_CONFIG)
    image = train_prelaunch_model(cfg, np.random.default_rng(cfg.mission.seed))
    out = _fuzz(cfg, image, 20_000 if quick else 1_000_000, log)
    out |= _command_path(cfg, image, quick, log)
    out |= _xtce_share(cfg, log)

    orbit = OrbitTruth(cfg.orbit.tle_line1, cfg.orbit.tle_line2, cfg.mission.start_utc)
    stations = [GroundStation(s.name, s.lat_deg, s.lon_deg, s.alt_m, s.elevation_mask_deg) for s in cfg.ground_stations]
    contacts = orbit.contact_windows(stations, 0.0, cfg.mission.duration_days * 86400.0)
    draws = 10 if quick else 50
    fsw = _fsw(cfg, image)
    counter = [1]

    def pkg_for():
        counter[0] += 1
        return package_model(cfg, image.head, version=counter[0], parent_version=image.version,
                             security_counter=counter[0], provenance={"source": "bench"})

    size = len(pkg_for().payload)
    for loss, key in ((0.01, "tmtc.uplink_contacts_1pct_loss"), (0.10, "tmtc.uplink_contacts_10pct_loss")):
        rng = np.random.default_rng(int(loss * 1000))
        used = [_uplink_contacts(fsw, cfg, pkg_for, contacts, loss, rng) for _ in range(draws)]
        out[key] = float(np.mean(used))
        out[key + "_max"] = float(max(used))
        log(f"  uplink {size} B head at {cfg.tmtc.uplink_rate_bps / 1e3:g} kbit/s, {loss:.0%} loss: "
            f"{np.mean(used):.2f} contacts (max {max(used)}) of {len(contacts)} in {cfg.mission.duration_days:g} d")
    out |= _cfdp(cfg, contacts, quick, log)
    out["tmtc.uplink_model_bytes"] = float(size)
    out["tmtc.contact_mean_s"] = float(np.mean([c.duration_s for c in contacts]))
    return out
