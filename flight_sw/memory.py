"""Start-up memory plan: every buffer the flight software allocates, sized from the config.

The same function sizes the buffers at start-up (the components allocate exactly
these shapes once) and checks the config against `onboard.ram_budget_bytes`, so
the report and the refusal can never disagree with what is really allocated.
"""

from __future__ import annotations

from flight_sw.config.schema import MissionConfig

#: Least row size of the downlink queue (core HK is ~150 B); the task table's HK report
#: (22 B per task) can need more: `tm_packet_bytes`.
MAX_TM_PACKET_BYTES = 256
#: Bytes of a PUS TM packet around its source data (primary and secondary header, CRC) plus
#: the HK structure id.
TM_PACKET_OVERHEAD_BYTES = 24
HK_TASK_RECORD_BYTES = 22
#: Files the CFDP receiver can hold at once (one arriving, one waiting to be staged).
CFDP_FILE_SLOTS = 2
HK_SA_RECORD_BYTES = 13  # the security-association report (SID 6), per association


def tm_packet_bytes(cfg: MissionConfig) -> int:
    """Downlink queue row size: the largest packet this config can produce, in 8-byte steps."""
    task_report = TM_PACKET_OVERHEAD_BYTES + HK_TASK_RECORD_BYTES * len(cfg.tasks)
    sa_report = TM_PACKET_OVERHEAD_BYTES + HK_SA_RECORD_BYTES * len(cfg.tmtc.keys)
    return max(MAX_TM_PACKET_BYTES, -(-max(task_report, sa_report) // 8) * 8)
#: Lanczos steps of the head-system condition estimate (flight_sw/ml/precondition.py;
#: defined here so that sizing the buffers does not import the numba kernels).
LANCZOS_STEPS = 8
#: Cells per side of a calibration site's reference land-cover map (uplinked before launch).
SITE_MAP_CELLS = 32
#: Ancillary values per pixel (flight_sw.ml.labels: site, map row, map column, detector column,
#: position in the acquisition).
ANCILLARY_WIDTH = 5
#: Held-back samples the validation gate judges on (flight_sw/ml/learner.py).
VALIDATION_WINDOW = 96


def radiometry_buffer_specs(cfg: MissionConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """The radiometric calibration's buffers (flight_sw/ml/radiometry.py): two int16 table slots
    (gain and offset per detector column and band), the dark estimate, one chunk of readings."""
    cols, bands = cfg.payload.detector_columns, cfg.payload.bands
    return {
        "cal.gain_q": ((2, cols, bands), "int16"),
        "cal.offset_q": ((2, cols, bands), "int16"),
        "cal.dark_q": ((cols, bands), "int16"),
        "cal.dark_seen": ((cols,), "uint8"),
        "cal.reading": ((min(cfg.radiometry.chunk_columns, cols), bands), "float32"),
        "cal.diffuser_reflectance": ((bands,), "float64"),
        "cal.band_change": ((bands,), "float64"),
        "cal.rows": ((cfg.payload.samples_per_acquisition, bands), "float32"),
    }


def adaptation_buffer_specs(cfg: MissionConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """The label-free input adaptation's buffers (flight_sw/ml/adaptation.py): two normalisation
    slots (mean and scale per band), the reference window's statistics, the current window's sums."""
    bands = cfg.payload.bands
    return {
        "adapt.norm_slots": ((2, 2, bands), "float64"),
        "adapt.reference": ((2, bands), "float64"),
        "adapt.window": ((2, bands), "float64"),
    }


#: One byte arena for the learning jobs' step-local scratch (DESIGN.md, "Memory"): buffers that
#: live only inside one call (a head solve's system and factor, a layer solve's system, the
#: whitened rows of one labelled batch, the calibration gate's window) share it, because those
#: calls never overlap. Each group below is laid out from offset 0; the arena is the largest.
SOLVE_ARENA = "ml.solve_arena"


def arena_groups(cfg: MissionConfig) -> list[dict[str, tuple[tuple[int, ...], str]]]:
    """The step-local buffers, grouped by the call that uses them (one group at a time)."""
    from flight_sw.ml.layer_update import layer_buffer_specs

    bands = cfg.payload.bands
    aug = cfg.model.feature_dim + 1
    window = min(cfg.model.replay_buffer_size, VALIDATION_WINDOW)
    head_solve = {  # OnboardLearner training step: the system, and a basis refresh's factor and scratch
        "ml.solver_work": ((aug, aug), "float64"),
        "ml.precond_factor": ((aug, aug), "float64"),
        "ml.precond_scratch": ((aug, aug), "float64"),
    }
    labelled_batch = {"ml.batch_features_white": ((cfg.payload.samples_per_acquisition, aug), "float64")}
    calibration_gate = {"ml.replay_remap": ((window, bands), "float32")}
    groups = [head_solve, labelled_batch, calibration_gate]
    return groups + layer_buffer_specs(cfg)[1]


def _aligned(nbytes: int) -> int:
    return -(-nbytes // 8) * 8


def _arena_bytes(group: dict[str, tuple[tuple[int, ...], str]]) -> int:
    import numpy as np

    return sum(_aligned(int(np.prod(shape)) * np.dtype(dtype).itemsize) for shape, dtype in group.values())


def arena_views(arena, cfg: MissionConfig) -> dict:
    """Typed views of the step-local buffers into the arena (each group from offset 0)."""
    import numpy as np

    views = {}
    for group in arena_groups(cfg):
        offset = 0
        for name, (shape, dtype) in group.items():
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            views[name] = arena[offset:offset + nbytes].view(dtype).reshape(shape)
            offset += _aligned(nbytes)
    return views


def buffer_shapes(cfg: MissionConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, numpy dtype) of every fixed buffer, grouped by component prefix."""
    bands = cfg.payload.bands
    hidden = cfg.model.hidden_units
    feat = cfg.model.feature_dim
    n_cls = len(cfg.payload.classes)
    batch = cfg.payload.samples_per_acquisition
    replay = cfg.model.replay_buffer_size
    aug = feat + 1  # features plus bias
    plan = {
        "ml.input_mean": ((bands,), "float64"),
        "ml.input_scale": ((bands,), "float64"),
        "ml.w1_int8": ((hidden, bands), "int8"),
        "ml.w1_scales": ((hidden,), "float64"),
        "ml.b1": ((hidden,), "float64"),
        "ml.w2_int8": ((feat, hidden), "int8"),
        "ml.w2_scales": ((feat,), "float64"),
        "ml.b2": ((feat,), "float64"),
        "ml.hidden_row": ((hidden,), "int32"),
        "ml.input_q_row": ((bands,), "int32"),
        "ml.batch_margins": ((batch,), "float64"),
        "ml.class_spectra": ((n_cls, bands), "float64"),
        "ml.angle_model": ((n_cls, 2), "float64"),
        "ml.drift_scratch": ((2, batch), "float64"),
        "ml.drift_sample": ((1,), "float64"),
        "ml.batch_correct": ((batch,), "float64"),
        "ml.drift_state_margin": ((4,), "float64"),
        "ml.drift_state_labels": ((4,), "float64"),
        "ml.feat_row": ((aug,), "float64"),
        "ml.score_row": ((n_cls,), "float64"),
        "ml.head_slot_a": ((aug, n_cls), "float64"),
        "ml.head_slot_b": ((aug, n_cls), "float64"),
        "ml.candidate_head": ((aug, n_cls), "float64"),
        "ml.stats_q": ((n_cls, aug, aug), "float64"),
        "ml.class_present": ((n_cls,), "int64"),
        "ml.prior_system": ((aug, aug), "float64"),
        "ml.precond": ((aug, aug), "float64"),
        "ml.lanczos_vectors": ((3, aug), "float64"),
        "ml.lanczos_tridiag": ((2, LANCZOS_STEPS), "float64"),
        "ml.prior_b": ((aug, n_cls), "float64"),
        "ml.solver_rhs": ((aug, n_cls), "float64"),
        "ml.stats_b": ((aug, n_cls), "float64"),
        "ml.replay_samples": ((replay, bands), "float32"),
        "ml.replay_labels": ((replay,), "int16"),
        "ml.replay_columns": ((replay,), "int16"),
        "ml.replay_sources": ((replay,), "int8"),
        "ml.source_weights": ((3,), "float64"),
        "ml.paired": ((6,), "float64"),
        "ml.replay_window_labels": ((min(replay, VALIDATION_WINDOW),), "int16"),
        "ml.replay_window_columns": ((min(replay, VALIDATION_WINDOW),), "int16"),
        "ml.batch_pixels": ((batch, bands), "float32"),
        "ml.batch_ancillary": ((batch, ANCILLARY_WIDTH), "int64"),
        "ml.label_ancillary": ((batch, ANCILLARY_WIDTH), "int64"),
        "ml.teacher_confidence": ((batch,), "float64"),
        "ml.site_maps": ((max(len(cfg.calibration_sites), 1), SITE_MAP_CELLS, SITE_MAP_CELLS), "uint8"),
        "ml.label_pixels": ((batch, bands), "float32"),
        "ml.label_labels": ((batch,), "int64"),
        "ml.label_pred": ((batch,), "int64"),
        "ml.batch_features": ((batch, aug), "float64"),
        "ml.batch_scores": ((batch, n_cls), "float64"),
        "ml.batch_pred": ((batch,), "int64"),
        "ml.batch_pred_tmp": ((batch,), "int64"),
        "tmtc.downlink_queue": ((cfg.downlink.queue_packets, tm_packet_bytes(cfg)), "uint8"),
        "tmtc.downlink_lengths": ((cfg.downlink.queue_packets,), "uint16"),
        "tmtc.cfdp_filestore": ((CFDP_FILE_SLOTS, cfg.tmtc.max_upload_bytes), "uint8"),
    }
    plan.update(radiometry_buffer_specs(cfg))
    plan.update(adaptation_buffer_specs(cfg))
    from flight_sw.ml.layer_update import layer_buffer_specs

    plan.update(layer_buffer_specs(cfg)[0])
    plan[SOLVE_ARENA] = ((max(_arena_bytes(g) for g in arena_groups(cfg)),), "uint8")
    from flight_sw.tmtc.downlink import link_buffer_specs  # TM frames: VC rings, frame, idle data

    plan.update(link_buffer_specs(cfg.downlink.tm_frame_bytes, tm_packet_bytes(cfg)))
    if cfg.downlink.store_bytes:
        plan["tmtc.packet_store"] = ((cfg.downlink.store_bytes,), "uint8")  # PUS 15 (packet_store.py)
    if "teacher" in cfg.payload.label_sources:
        from flight_sw.ml.teacher import teacher_buffer_specs

        dims = (bands, *cfg.model.teacher_hidden, n_cls)
        plan.update(teacher_buffer_specs(tuple(zip(dims[:-1], dims[1:], strict=True)), batch))
    return plan


def buffer_sizes_bytes(cfg: MissionConfig) -> dict[str, int]:
    """Bytes per buffer, for the start-up memory report and the RAM-budget check."""
    import numpy as np

    sizes = {}
    for name, (shape, dtype) in buffer_shapes(cfg).items():
        count = 1
        for dim in shape:
            count *= dim
        sizes[name] = count * np.dtype(dtype).itemsize
    return sizes


def memory_report(cfg: MissionConfig) -> dict[str, int]:
    """Bytes per component (the prefix before the first dot), plus the total."""
    report: dict[str, int] = {}
    for name, size in buffer_sizes_bytes(cfg).items():
        comp = name.split(".", 1)[0]
        report[comp] = report.get(comp, 0) + size
    report["total"] = sum(v for k, v in report.items())
    return report


def allocate_buffers(cfg: MissionConfig) -> dict[str, np.ndarray]:  # noqa: F821
    """Allocate every planned buffer once, at start-up (zeros, exact planned shapes), plus the
    step-local views into the solve arena (which own no memory: `ndarray.base` is the arena)."""
    import numpy as np

    buffers = {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in buffer_shapes(cfg).items()}
    buffers.update(arena_views(buffers[SOLVE_ARENA], cfg))
    return buffers
