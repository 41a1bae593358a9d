"""The telemetry dictionary shared by flight and ground: one definition, versioned.

Flight packs with these structures and the ground decodes with the same ones, so
a parameter can never mean one thing onboard and another in the archive. Bump
`DICTIONARY_VERSION` whenever a layout changes; every housekeeping report carries
it and the ground refuses to decode a version it does not know.

Housekeeping (PUS service 3, subtype 25) reports start with a u16 structure id
(SID). Events (service 5, subtypes 1-4 by severity) start with a u16 event id.
All fields are big-endian (network order, as CCSDS).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

DICTIONARY_VERSION = 13  # 4: telecommands, service 1/17/8/13/20/23 (issue 7); 5: head-system conditioning in TRAINING_UPDATE; 6: labels per source in core HK; 7: radiometric calibration (core HK, CALIBRATION_UPDATE), gate refusal and z in TRAINING_UPDATE; 8: label-free input adaptation (core HK, ADAPTATION_UPDATE); 9: security associations (SA procedures, HK SID 6, SA_STATUS, TC_STATE_LOST, BOOT, onboard ARSN in TC_REJECTED, TC and boot fields in core HK), services 11, 12, 19 and MONITOR_CHECK events; 10: service 13 large packet uplink (ECSS meanings: 13,9/10/11 parts of the OLPK model package, TM 13,16 abort report, LPT_* failure codes), service 23 removed; service 15 TM store (core HK store fields, 15,13 / 15,19 reports); 11: HK SID 7, task execution measured by a flight process (issue 15); 12: LAYER_UPDATE and the last layer's counters at the end of core HK (training beyond the head, issue 13); 13: digital_by_energy_rule at the end of HK SID 4 (the driver's energy rule, on by default); LAYER_UPDATE and ADAPTATION_UPDATE outcomes 3 and 4 (an uploaded head's trial runs with the boot image's last layer and input normalisation)

PUS_SERVICE_HK = 3
PUS_SUBTYPE_HK_REPORT = 25
PUS_SERVICE_EVENT = 5
CDS_SHORT_LEN = 7


@dataclass(frozen=True)
class Param:
    name: str
    fmt: str  # struct code
    unit: str
    doc: str


#: SID 1: core housekeeping, every `housekeeping` task run.
HK_CORE_SID = 1
HK_CORE: tuple[Param, ...] = (
    Param("dict_version", "H", "", "Telemetry dictionary version."),
    Param("tick", "I", "frame", "Minor frame counter since start."),
    Param("mode", "B", "", "0 SAFE, 1 NOMINAL, 2 TRAINING."),
    Param("soc", "f", "", "Battery state of charge (EPS fuel gauge)."),
    Param("solar_power_w", "f", "W", "Solar array power at this tick."),
    Param("load_power_w", "f", "W", "Mean bus load since the previous report."),
    Param("predicted_eclipse", "B", "", "1 when the onboard predictor places this tick in umbra."),
    Param("orbit_index", "I", "", "Orbit counter (ascending node to ascending node)."),
    Param("budget_optional_j", "f", "J", "This orbit's optional-energy budget."),
    Param("budget_remaining_j", "f", "J", "Optional budget still available in this orbit."),
    Param("model_version", "I", "", "Version of the active model."),
    Param("model_slot", "B", "", "Active model slot (0 = A, 1 = B)."),
    Param("updates_accepted", "H", "", "Training updates committed since start."),
    Param("updates_refused", "H", "", "Candidates refused by the validation gate."),
    Param("rollbacks", "H", "", "Automatic or commanded rollbacks."),
    Param("label_accuracy", "f", "", "Active model accuracy on recent calibration labels (NaN: none)."),
    Param("drift_stat", "f", "", "Label-free Page-Hinkley statistic (alarm at model.drift_threshold)."),
    Param("drift_label_stat", "f", "", "Label-based Page-Hinkley statistic on calibration correctness."),
    Param("drift_alarms", "H", "", "Drift alarms since start (both monitors)."),
    Param("labels_total", "I", "", "Labels received since start (all sources)."),
    Param("labels_site", "I", "", "Labels from calibration-site reference maps since start."),
    Param("labels_teacher", "I", "", "Labels from the onboard teacher model since start."),
    Param("labels_self", "I", "", "Self-training labels (own confident predictions) since start."),
    Param("cal_version", "I", "", "Version of the active radiometric calibration table (0: identity)."),
    Param("cal_accepted", "H", "", "Calibration tables committed since start."),
    Param("cal_refused", "H", "", "Candidate calibration tables refused by the gate."),
    Param("cal_rollbacks", "H", "", "Calibration tables rolled back."),
    Param("cal_hot", "I", "", "Column-bands whose dark signal is above radiometry.hot_threshold."),
    Param("adapt_version", "I", "", "Version of the active input normalisation (0: the model image's own)."),
    Param("adapt_accepted", "H", "", "Label-free input adaptations committed since start."),
    Param("adapt_refused", "H", "", "Candidate input adaptations refused (no change, out of range, or the gate)."),
    Param("adapt_rollbacks", "H", "", "Input adaptations rolled back."),
    Param("overruns_total", "I", "", "Task runs whose cost exceeded their compute budget."),
    Param("optional_skipped_total", "I", "", "Optional runs refused by power admission."),
    Param("solves_total", "I", "", "Optimizer solves since start."),
    Param("tle_age_days", "f", "day", "Age of the onboard TLE."),
    Param("in_contact", "B", "", "1 while a ground station has carrier lock."),
    Param("downlink_backlog", "I", "packet", "Packets waiting in the downlink queue."),
    Param("downlink_overflow", "I", "packet", "Packets refused by a full downlink queue (counted, not lost silently)."),
    Param("tc_accepted", "I", "", "Telecommand frames authenticated and executed since boot."),
    Param("tc_rejected", "I", "", "Telecommand frames refused since boot (each also an event, rate-limited)."),
    Param("tc_backlog", "H", "frame", "Frames queued for the next tc_handler run."),
    Param("events_suppressed", "I", "", "Events not sent because their id exceeded EVENTS_PER_ID_LIMIT in a window."),
    Param("boot_count", "I", "", "Boots recorded in the non-volatile record."),
    Param("boots_unstable", "B", "", "Consecutive boots that did not reach fdir.boot_stable_s of uptime."),
    Param("safe_latch", "B", "", "1 when boot escalation holds the satellite in SAFE until a ground mode command."),
    Param("tc_state_lost", "B", "", "1 when both NV copies of the TC record are damaged (only FN_TC_RECOVER runs)."),
    Param("store_packets", "I", "packet", "Packets held in the onboard TM store (PUS 15)."),
    Param("store_fill", "f", "", "Share of the TM store's octets in use."),
    Param("store_lost", "I", "packet", "Stored packets overwritten before open retrieval played them back."),
    Param("store_played_back", "I", "packet", "Stored packets played back on VC2 (both retrievals) since start."),
    Param("layer_version", "I", "", "Version of the extractor's active last layer (0: the ground's; "
          "flight_sw/ml/layer_update.py)."),
    Param("layer_accepted", "H", "", "Last-layer updates committed since start."),
    Param("layer_refused", "I", "", "Candidate last layers refused (degenerate, solve failed, or the gate)."),
    Param("layer_rollbacks", "H", "", "Last-layer updates rolled back."),
)

#: SID 2: one record per task, every `housekeeping` run: the per-task counters.
HK_TASKS_SID = 2
HK_TASK_RECORD: tuple[Param, ...] = (
    Param("task_index", "B", "", "Index in the task table."),
    Param("runs", "I", "", "Completed runs."),
    Param("skipped", "I", "", "Runs refused by power admission."),
    Param("overruns", "I", "", "Runs whose cost exceeded the compute budget."),
    Param("deadline_misses", "I", "", "Runs that ended after their minor frame (frame load above the frame)."),
    Param("disabled", "B", "", "1 when FDIR or the watchdog has disabled the task."),
    Param("energy_j", "f", "J", "Energy drawn since start."),
)

#: SID 6: one record per security association, every `housekeeping` run. The ARSN is not
#: secret (every frame carries it in clear); a ground that lost count reads it here even when
#: refusal events are rate-limited away (SDLS 355.1-B Read ARSN, without needing a command).
HK_SA_SID = 6
HK_SA_RECORD: tuple[Param, ...] = (
    Param("spi", "H", "", "Security parameter index (the frame's association field)."),
    Param("key_slot", "H", "", "Key slot the association signs with."),
    Param("state", "B", "", "Index in SA_STATES (0 keyed, 1 operational)."),
    Param("arsn", "Q", "", "Anti-replay sequence number of the last accepted frame."),
)

#: SID 7: task execution measured by the flight computer's CPU clock, one record per task, every
#: `housekeeping` run; only from a flight process handed a CPU clock (`flightsw run`), never from
#: the in-process simulation, whose modelled costs are in SID 2 (issue 15).
HK_EXEC_SID = 7
HK_EXEC_RECORD: tuple[Param, ...] = (
    Param("task_index", "B", "", "Index in the task table."),
    Param("measured_runs", "I", "", "Runs measured since boot."),
    Param("exec_max_us", "I", "us", "Longest measured execution since the previous SID 7 report."),
    Param("exec_mean_us", "f", "us", "Mean measured execution since boot."),
)

#: SID 4: the optimizer device driver (analog backend only), every `housekeeping` run.
HK_DEVICE_SID = 4
HK_DEVICE: tuple[Param, ...] = (
    Param("health", "B", "", "0 OK, 1 DEGRADED, 2 FAILED."),
    Param("solves", "I", "", "Solves requested."),
    Param("analog_accepted", "I", "", "Solutions from the analog path (refinement, retries included)."),
    Param("analog_after_retry", "I", "", "... of which needed a retry."),
    Param("fallbacks", "I", "", "Solutions from the digital fallback."),
    Param("rejected_by_gate", "I", "", "Solves with no usable answer (reported not ok)."),
    Param("rounds_total", "I", "", "Analog refinement rounds."),
    Param("retries_total", "I", "", "Retries (with backoff)."),
    Param("timeouts", "I", "", "Replies that did not come in time."),
    Param("frames_rejected", "I", "", "Malformed frames rejected by the decoder."),
    Param("crc_errors", "I", "", "... of which CRC mismatches."),
    Param("settle_timeouts", "I", "", "Solves that did not settle."),
    Param("saturations", "I", "", "Outputs at the rails."),
    Param("device_resets", "I", "", "Brown-outs / reboots seen."),
    Param("seu_detected", "I", "", "Bit flips found in programmed values."),
    Param("verify_failures", "I", "", "Programming verify failures (stuck cells)."),
    Param("selftest_failures", "I", "", "Canary problems failed."),
    Param("calibrations", "I", "", "Drift calibrations (reference reads)."),
    Param("last_gain", "f", "", "Last calibrated conductance gain."),
    Param("last_rel_residual", "f", "", "||QX - B|| / ||B|| of the last solve."),
    Param("energy_analog_j", "f", "J", "Energy of solves served by the analog path."),
    Param("energy_fallback_j", "f", "J", "Energy of solves served by the fallback."),
    Param("digital_by_energy_rule", "I", "", "... of the fallbacks, problems sent to the digital solver by the "
          "energy rule (cheaper there; not a fault)."),
)

#: SID 5: labelled calibration samples sent down for the ground (replay of candidate
#: models, the ground retraining loop). Layout: SAMPLES_HEADER, then per sample one
#: SAMPLE_RECORD_HEAD followed by `bands` big-endian f32 reflectances.
HK_SAMPLES_SID = 5
SAMPLES_PER_REPORT = 4
SAMPLES_HEADER = struct.Struct(">IB")  # model version, sample count
SAMPLE_RECORD_HEAD = struct.Struct(">BB")  # site label, onboard prediction

#: SID 3: the per-orbit budget, emitted when an orbit starts.
HK_ORBIT_SID = 3
HK_ORBIT: tuple[Param, ...] = (
    Param("orbit_index", "I", "", "Orbit that starts now."),
    Param("orbit_start_s", "d", "s", "Predicted start (ascending node), mission seconds."),
    Param("orbit_end_s", "d", "s", "Predicted end."),
    Param("umbra_entry_s", "d", "s", "Predicted umbra entry (NaN: none)."),
    Param("umbra_exit_s", "d", "s", "Predicted umbra exit (NaN: none)."),
    Param("sunlit_s", "f", "s", "Predicted sunlit time (illumination integral)."),
    Param("generation_j", "f", "J", "Predicted array energy."),
    Param("essential_j", "f", "J", "Essential loads over the orbit."),
    Param("reserve_need_j", "f", "J", "Energy to end at reserve SoC (negative: surplus)."),
    Param("margin_j", "f", "J", "Configured margin."),
    Param("budget_j", "f", "J", "Optional budget granted."),
    Param("prev_optional_used_j", "f", "J", "Optional energy used in the previous orbit."),
)
#: SID 3 is followed by one f32 per task: the previous orbit's energy per task [J].

EVENT_SEVERITY_SUBTYPE = {"info": 1, "low": 2, "medium": 3, "high": 4}

EVENT_MODE_CHANGE = 1  # params: from u8, to u8, reason u8
EVENT_TRAINING_UPDATE = 2  # params: see TRAINING_UPDATE
EVENT_CONTACT = 3  # params: aos(1)/los(0) u8
EVENT_TASK_OVERRUN = 4  # params: task u8, cost f32
EVENT_TASK_DISABLED = 5  # params: task u8, reason u8 (index in TASK_DISABLE_REASONS)
EVENT_DEADLINE_MISS = 6  # params: task u8, frame load f32 [s]
EVENT_DRIFT_DETECTED = 7  # params: source u8 (0 label-free, 1 label-based), samples seen u32
DRIFT_SOURCES = ("label_free", "label_based")
TASK_DISABLE_REASONS = ("overruns", "watchdog", "ground_command")

MODE_REASONS = (
    "start", "low_soc", "soc_recovered", "device_failure", "overruns", "invalid_model", "ground_command",
    "device_recovered", "watchdog", "boot_escalation",
)

TRAINING_UPDATE: tuple[Param, ...] = (
    Param("outcome", "B", "", "0 committed, 1 refused by gate, 2 rolled back."),
    Param("version", "I", "", "Candidate (or restored) model version."),
    Param("candidate_accuracy", "f", "", "Candidate accuracy on held-back samples."),
    Param("active_accuracy", "f", "", "Active model accuracy on the same samples."),
    Param("labels_used", "I", "", "Labels in the statistics (effective count)."),
    Param("solve_path", "B", "", "0 digital, 1 analog."),
    Param("solve_energy_j", "f", "J", "Energy of the solve."),
    Param("rel_residual", "f", "", "||QX - B|| / ||B|| of the accepted solve (whitened head system)."),
    Param("system_kappa", "f", "", "Lanczos estimate of the condition number of the system handed to the optimizer."),
    Param("precond_refreshes", "I", "", "Whitening-basis refreshes since start (one digital Cholesky each)."),
    Param("refusal", "B", "", "Why refused: 0 -, 1 solve failed, 2 no held-back labels, 3 not better, "
          "4 not significantly better, 5 the site labels alone prefer the active head (TRAINING_REFUSALS)."),
    Param("gate_z", "f", "", "Reliability-weighted paired statistic of candidate against active (accept >= model.validation_z)."),
)
TRAINING_OUTCOMES = ("committed", "refused", "rolled_back")

#: Why the validation gate refused a candidate head (TRAINING_UPDATE.refusal).
TRAINING_REFUSALS = ("none", "solve_failed", "no_heldback", "not_better", "not_significant", "site_veto")

EVENT_CALIBRATION_UPDATE = 12  # params: see CALIBRATION_UPDATE
CALIBRATION_OUTCOMES = ("committed", "refused", "rolled_back")
CALIBRATION_REASONS = ("commissioning", "drift_alarm", "routine", "ground_command")
CALIBRATION_REFUSALS = ("none", "out_of_range", "no_change", "heldback_drop")
CALIBRATION_UPDATE: tuple[Param, ...] = (
    Param("outcome", "B", "", "0 committed, 1 refused by the gate, 2 rolled back (flight_sw.ml.radiometry.OUTCOMES)."),
    Param("version", "I", "", "Candidate (or restored) calibration table version."),
    Param("reason", "B", "", "Why it was asked for: 0 commissioning, 1 drift alarm, 2 routine, 3 ground."),
    Param("refusal", "B", "", "0 none, 1 out of range, 2 no significant change, 3 held-back labels worse."),
    Param("max_band_gain_change", "f", "", "Largest band-mean relative gain change, candidate against active."),
    Param("changed_share", "f", "", "Share of column-bands whose gain or offset moved beyond noise."),
    Param("candidate_accuracy", "f", "", "Active model on held-back labels under the candidate table (NaN: too few)."),
    Param("active_accuracy", "f", "", "... under the active table."),
    Param("hot_column_bands", "I", "", "Column-bands above the hot threshold (last dark sweep)."),
    Param("dark_jumps", "I", "", "Dark readings that jumped beyond radiometry.dark_jump since start."),
    Param("diffuser_sweeps", "I", "", "Complete sun-diffuser sweeps since start."),
)

EVENT_ADAPTATION_UPDATE = 13  # params: see ADAPTATION_UPDATE
#: Outcomes 3, 4 of ADAPTATION_UPDATE and LAYER_UPDATE: an uploaded head's trial put the boot image's
#: version in front of it / the trial ended unconfirmed and the onboard version came back
#: (flight_sw/tmtc/upload.py; no candidate described).
TRIAL_OUTCOMES = ("ground_version_for_upload_trial", "onboard_version_restored")
ADAPTATION_OUTCOMES = ("committed", "refused", "rolled_back", *TRIAL_OUTCOMES)
ADAPTATION_REFUSALS = ("none", "out_of_range", "no_change", "no_heldback", "worse", "site_veto")
ADAPTATION_UPDATE: tuple[Param, ...] = (
    Param("outcome", "B", "", "0 committed, 1 refused, 2 rolled back, 3 the image's normalisation put back "
          "for an uploaded head's trial, 4 the onboard one back after an unconfirmed trial (ADAPTATION_OUTCOMES)."),
    Param("version", "I", "", "Candidate (or restored) input normalisation version."),
    Param("refusal", "B", "", "0 none, 1 out of range, 2 no significant change, 3 too few held-back labels, "
          "4 worse on the held-back labels, 5 the site labels alone prefer the active one (ADAPTATION_REFUSALS)."),
    Param("max_change", "f", "", "Largest per-band change against the active normalisation (scale ratio - 1, "
          "or mean shift in image band standard deviations)."),
    Param("candidate_accuracy", "f", "", "Active head on the held-back labels with the candidate normalisation (NaN: not judged)."),
    Param("active_accuracy", "f", "", "... with the active normalisation."),
    Param("gate_z", "f", "", "Reliability-weighted paired statistic, candidate against active (accept >= adaptation.min_gate_z)."),
    Param("window_pixels", "I", "", "Pixels in the window the candidate was estimated from."),
)

EVENT_LAYER_UPDATE = 19  # params: see LAYER_UPDATE
LAYER_OUTCOMES = ("committed", "refused", "rolled_back", *TRIAL_OUTCOMES)
LAYER_REFUSALS = ("none", "degenerate", "solve_failed", "no_heldback", "worse", "site_veto")
LAYER_UPDATE: tuple[Param, ...] = (
    Param("outcome", "B", "", "0 committed, 1 refused, 2 rolled back, 3 the ground's layer put back for an "
          "uploaded head's trial, 4 the onboard layer back after an unconfirmed trial (LAYER_OUTCOMES)."),
    Param("version", "I", "", "Candidate (or restored) version of the extractor's last layer (0: the ground's)."),
    Param("refusal", "B", "", "0 none, 1 too few units the labels reach or a degenerate hidden layer, 2 the solve "
          "failed, 3 too few held-back labels, 4 not better on the held-back labels, 5 the site labels alone "
          "prefer the active layer (LAYER_REFUSALS)."),
    Param("units", "I", "", "Bit mask of the last-layer units the candidate changed (chosen by the data)."),
    Param("candidate_accuracy", "f", "", "Active head on the held-back labels with the candidate layer (NaN: not judged)."),
    Param("active_accuracy", "f", "", "... with the active layer."),
    Param("gate_z", "f", "", "Reliability-weighted paired statistic, candidate against active (accept >= model.layer_gate_z)."),
    Param("solve_path", "B", "", "Optimizer path of the layer system: 0 digital, 1 analog."),
    Param("solve_energy_j", "f", "J", "Modelled energy of the layer system's solve on that path."),
    Param("solve_residual", "f", "", "Relative residual of the accepted solution (recomputed digitally)."),
)


#: Service 15 reports (flight_sw.tmtc.packet_store): source data is N (u8, the number of packet
#: stores: 1) then one record per store. TM[15,13] packet store content summary (70-41C 8.15.2.9):
STORE_CONTENT_SUMMARY: tuple[Param, ...] = (
    Param("store_id", "H", "", "Packet store id (1: housekeeping generated out of contact)."),
    Param("oldest_s", "I", "s", "Storage time of the oldest packet, s since mission start (0: empty)."),
    Param("newest_s", "I", "s", "Storage time of the newest packet."),
    Param("open_start_s", "I", "s", "Storage time of the next packet open retrieval sends."),
    Param("fill_pct", "B", "%", "Share of the store's octets in use."),
    Param("open_fill_pct", "B", "%", "Share of the store's octets open retrieval has still to send."),
)
#: TM[15,19] packet store status (70-41C 8.15.2.13):
STORE_STATUS: tuple[Param, ...] = (
    Param("store_id", "H", "", "Packet store id."),
    Param("storage_enabled", "B", "", "1 when the storage function is enabled (15,1 / 15,2)."),
    Param("open_retrieval", "B", "", "1 when open retrieval is in progress, 0 suspended (15,15 / 15,16)."),
    Param("range_retrieval", "B", "", "1 while a by-time-range retrieval runs (15,9 / 15,17)."),
)


def struct_of(params: tuple[Param, ...]) -> struct.Struct:
    return struct.Struct(">" + "".join(p.fmt for p in params))


HK_CORE_STRUCT = struct_of(HK_CORE)
HK_TASK_STRUCT = struct_of(HK_TASK_RECORD)
HK_SA_STRUCT = struct_of(HK_SA_RECORD)
HK_EXEC_STRUCT = struct_of(HK_EXEC_RECORD)
HK_ORBIT_STRUCT = struct_of(HK_ORBIT)
TRAINING_UPDATE_STRUCT = struct_of(TRAINING_UPDATE)
CALIBRATION_UPDATE_STRUCT = struct_of(CALIBRATION_UPDATE)
ADAPTATION_UPDATE_STRUCT = struct_of(ADAPTATION_UPDATE)
LAYER_UPDATE_STRUCT = struct_of(LAYER_UPDATE)
HK_DEVICE_STRUCT = struct_of(HK_DEVICE)
STORE_CONTENT_SUMMARY_STRUCT = struct_of(STORE_CONTENT_SUMMARY)
STORE_STATUS_STRUCT = struct_of(STORE_STATUS)
SID_STRUCT = struct.Struct(">H")
EVENT_ID_STRUCT = struct.Struct(">H")


# -- Telecommands (issue 7) ---------------------------------------------------------------
# Every TC is a PUS-C PusTc in a TC Transfer Frame with SDLS security, in a CLTU (flight_sw.tmtc.tc_link).
PUS_SERVICE_VERIFICATION = 1
TM_ACCEPT_OK, TM_ACCEPT_FAIL, TM_START_OK, TM_START_FAIL, TM_COMPLETE_OK, TM_COMPLETE_FAIL = 1, 2, 3, 4, 7, 8
#: Service 1 report source data: request id (4 bytes: version/type/sec-hdr/APID, flags/seq count,
#: as spacepackets' RequestId), then for failures a PUS failure code (PFC 16: u16) and parameters:
#: TC_FAIL_PARAM_STRUCT followed by an ASCII text naming the field and the bound (at most 96 bytes).
TC_FAIL_PARAM_STRUCT = struct.Struct(">H")  # failure code (index in TC_FAILURES)
TC_FAILURES = (
    "ok", "unknown_command", "bad_arguments", "mode_refused", "bad_tle", "unknown_task",
    "upload_no_session", "upload_bad_signature", "upload_incompatible", "upload_downgrade",
    "upload_bad_name", "upload_missing_chunks", "upload_hash_mismatch", "upload_not_verified",
    "upload_too_large", "trial_none", "trial_validation_failed", "param_out_of_bounds", "param_unknown",
    "param_none_staged", "unknown_key", "apid_mismatch", "calibration_no_previous",
    "last_command_sa", "sa_operational", "wrong_key_purpose", "recovery_refused", "table_full",
    "store_unknown", "store_busy",
    # 10: large packet uplink (service 13) and the trial guard
    "lpt_unexpected_part", "lpt_no_transaction", "lpt_part_differs", "lpt_superseded", "upload_trial_running",
)

PUS_SERVICE_FUNCTION = 8  # 8,1 perform function: u16 function id + arguments
PUS_SERVICE_PARAMS = 20  # 20,3 load parameter values into the staging table
PUS_SERVICE_TEST = 17  # 17,1 ping -> 17,2 pong
#: Service 13, large packet transfer (ECSS-E-ST-70-41C 6.13, 8.13): the uplink of one large
#: message (here: a model package in the OLPK format of flight_sw.tmtc.upload) in parts.
#: TC[13,9] first part, TC[13,10] intermediate part, TC[13,11] last part, each with
#: LPT_PART_STRUCT (large message transaction identifier u16, part sequence number u16, as
#: AcubeSAT ecss-services' LargeMessageTransactionId / PartSequenceNum) then the part (octets,
#: to the end of the packet). The first part has sequence number 1, the next ones count up by 1.
#: TM[13,16] large packet uplink abortion report: LPT_ABORT_STRUCT (transaction identifier
#: u16, failure reason u16 = index in TC_FAILURES).
PUS_SERVICE_LARGE_PACKET = 13
LPT_UPLINK_FIRST, LPT_UPLINK_INTERMEDIATE, LPT_UPLINK_LAST = 9, 10, 11
LPT_UPLINK_ABORT = 16
LPT_PART_STRUCT = struct.Struct(">HH")
LPT_ABORT_STRUCT = struct.Struct(">HH")
PUS_SERVICE_SCHEDULE = 11  # time-based scheduling (onboard_tables.py): 11,1/2 enable/disable, 11,3 reset, 11,4 insert
PUS_SERVICE_MONITORING = 12  # on-board monitoring: 12,1/2 enable/disable defs, 12,5 add, 12,6 delete, 12,15/16 function
PUS_SERVICE_EVENT_ACTION = 19  # event-action: 19,1 add, 19,2 delete, 19,4/5 enable/disable defs, 19,8/9 function
#: Storage and retrieval (packet_store.py): 15,1/2 enable/disable storage, 15,9 by-time-range retrieval,
#: 15,11 delete up to a time, 15,12 -> 15,13 content summary, 15,14 open-retrieval start, 15,15/16
#: resume/suspend open retrieval, 15,17 abort by-time-range, 15,18 -> 15,19 status.
PUS_SERVICE_STORAGE = 15
#: PUS-C TC acknowledgement flags (ECSS-E-ST-70-41C 7.4.3.1): which success reports the sender
#: wants; failure reports are always sent.
ACK_ACCEPTANCE, ACK_START, ACK_PROGRESS, ACK_COMPLETION = 0b0001, 0b0010, 0b0100, 0b1000
FN_MODE = 1  # u8 mode index
FN_LOAD_TLE = 2  # 69 + 69 ASCII bytes
FN_TASK_ENABLE = 3  # u8 task index
FN_TASK_DISABLE = 4  # u8 task index
FN_MODEL_ROLLBACK = 5  # none: switch to the other head slot
FN_MODEL_ACTIVATE = 6  # none: the verified staged model becomes a trial
FN_MODEL_CONFIRM = 7  # none: validate and confirm the trial (raises the security counter)
FN_SA_STOP = 8  # u16 SPI: operational -> keyed (SDLS 355.1-B Stop SA); never the last command SA
FN_PARAM_ACTIVATE = 9  # none: the validated staged parameter table becomes active
FN_CAL_ROLLBACK = 10  # none: switch to the other radiometric calibration slot (the previous table)
FN_CAL_REQUEST = 11  # none: ask for a radiometric calibration at the next dark sweep and diffuser window
FN_SA_START = 12  # u16 SPI: keyed -> operational (355.1-B Start SA)
FN_SA_REKEY = 13  # u16 SPI, u16 key slot: a stopped SA takes another key of its purpose, ARSN 0
FN_SA_SET_ARSN = 14  # u16 SPI, u64 ARSN (355.1-B Set ARSN)
FN_SA_STATUS = 15  # u16 SPI -> event SA_STATUS (355.1-B SA Status Request / Read ARSN)
#: Only command the satellite runs while its NV state is lost: u64 boot nonce (from event
#: TC_STATE_LOST), u64 ARSN floor for every SA, u32 security counter floor for uploads.
FN_TC_RECOVER = 16
TC_RECOVER_STRUCT = struct.Struct(">QQI")
FN_STRUCT = struct.Struct(">H")

#: Onboard parameter table (service 20): id -> (name, lower bound, upper bound). Values are f64;
#: eclipse_policy is an index in ECLIPSE_POLICIES.
PARAMS: dict[int, tuple[str, float, float]] = {
    1: ("power.budget.margin_j", 0.0, 1e6),
    2: ("power.budget.eclipse_policy", 0.0, 2.0),
    3: ("power.budget.eclipse_soc_margin", 0.0, 1.0),
    4: ("model.drift_threshold", 1e-3, 1e3),
}
ECLIPSE_POLICIES = ("never", "soc_margin", "always")
PARAM_ENTRY_STRUCT = struct.Struct(">Hd")

#: params: reason u8 (TC_REJECT_REASONS), SPI u16, ARSN u64 (as claimed), the SA's onboard ARSN u64
#: (0 for an unknown SA): a ground that lost count reads where the window is from the refusal.
EVENT_TC_REJECTED = 8
TC_REJECT_REASONS = (
    "too_short", "too_long", "bad_version", "bad_length", "unknown_key", "key_deactivated", "wrong_key_purpose",
    "bad_mac", "replay", "outside_window", "queue_full", "state_corrupt", "bad_packet", "bad_cltu", "bad_frame",
)
TC_REJECTED_STRUCT = struct.Struct(">BHQQ")
EVENT_MODEL_UPLOAD = 9  # params: stage u8 (MODEL_UPLOAD_STAGES), version u32, security counter u32
#: session_open: a service 13 transaction began (its first part; version and counter are 0, the
#: manifest is read only when the last part arrives).
MODEL_UPLOAD_STAGES = ("session_open", "verified", "trial_started", "confirmed", "trial_reverted", "refused",
                       "reverted_at_boot", "installed_at_boot")
MODEL_UPLOAD_STRUCT = struct.Struct(">BII")
EVENT_PARAMS_ACTIVATED = 10  # params: table version u32
EVENT_STATISTICS_RESET = 11  # params: reason u8 (STATISTICS_RESET_REASONS), resets since start u16
#: Why the learner re-seeded its head statistics from the ground's (a memory upset or a bug
#: made the head system unusable; training resumes from the pre-launch knowledge).
STATISTICS_RESET_REASONS = ("not_finite", "not_positive_definite")
STATISTICS_RESET_STRUCT = struct.Struct(">BH")

EVENT_SA_STATUS = 14  # params: see SA_STATUS_STRUCT (reply to FN_SA_STATUS)
SA_STATUS_STRUCT = struct.Struct(">HHBQ")  # SPI, key slot, state (index in SA_STATES), ARSN
SA_STATES = ("keyed", "operational")
#: The TC record is lost (both NV copies damaged): params u64 nonce of this boot, to be echoed
#: by FN_TC_RECOVER. Sent at boot and with every refused frame while the state stays lost.
EVENT_TC_STATE_LOST = 15
TC_STATE_LOST_STRUCT = struct.Struct(">Q")
#: params: boot count u32, consecutive unstable boots u8, safe latch u8 (1: held in SAFE)
EVENT_BOOT = 16
BOOT_STRUCT = struct.Struct(">IBB")
#: A parameter table delivered as a file (CFDP, magic PARAM_TABLE_MAGIC, body as 20,3): params
#: outcome u8 (0 staged: activate with FN_PARAM_ACTIVATE; 1 refused), failure code u16 (index in
#: TC_FAILURES, 0 when staged), entries in the staged table u16.
EVENT_PARAMS_STAGED = 17
PARAMS_STAGED_STRUCT = struct.Struct(">BHH")
PARAM_TABLE_MAGIC = b"OLPT"
#: A radiometric calibration table delivered as a file (CFDP): magic, u16 columns, u16 bands,
#: then gain and offset as big-endian int16 (columns x bands each, the onboard quantisation:
#: gain 1 + q / 16384, offset q x 4e-6). It becomes the candidate of the onboard gate; its
#: outcome is the usual CALIBRATION_UPDATE event (reason ground_command). Event
#: CALIBRATION_FILE: accepted as candidate u8 (0 no: busy or wrong shape, 1 yes), columns u16, bands u16.
CAL_TABLE_MAGIC = b"OLCT"
CAL_TABLE_HEAD = struct.Struct(">4sHH")
EVENT_CALIBRATION_FILE = 18
CALIBRATION_FILE_STRUCT = struct.Struct(">BHH")
#: Events of one id beyond this many per EVENTS_PER_ID_WINDOW_S are counted, not sent, so a flood
#: of one kind (rejected frames) cannot crowd out another (a mode change) in the downlink queue.
EVENTS_PER_ID_LIMIT = 20
EVENTS_PER_ID_WINDOW_S = 600.0

#: On-board monitoring (service 12) raises events with ids EVENT_MONITOR_CHECK..+99 (the id is
#: the definition's choice, so that event-action can tell monitors apart); all share this layout:
#: monitor id u16, check state u8 (1 below the low limit, 2 above the high limit), value f64.
EVENT_MONITOR_CHECK = 100
MONITOR_EVENT_IDS = range(EVENT_MONITOR_CHECK, EVENT_MONITOR_CHECK + 100)
MONITOR_CHECK_STRUCT = struct.Struct(">HBd")
