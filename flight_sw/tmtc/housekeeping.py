"""The housekeeping component (issue 15): the periodic reports that say how every other
component is doing, and the onboard monitoring of them (PUS service 12).

It reads the others (they are handed to it by `flight_sw.app`, never imported) and owns only
what the reports need between runs: the energy drawn by tasks since the last report (for the
mean load) and the tick of that report.
"""

from __future__ import annotations

from collections.abc import Callable

from flight_sw.fdir.modes import NOMINAL
from flight_sw.power.tle import tle_age_days
from flight_sw.tmtc import dictionary as d


class Housekeeping:
    def __init__(self, cfg, tm, inputs, executive, power, learning, modes, downlink, solver, tc,
                 tick: Callable[[], int], frame_s: float):
        self.cfg = cfg
        self.tm = tm
        self.inputs = inputs
        self.executive = executive
        self.power = power
        self.learning = learning
        self.modes = modes
        self.downlink = downlink
        self.solver = solver
        self.tc = tc
        self.tick = tick
        self.frame_s = frame_s
        self.n_tasks = len(executive.specs)
        self._energy_j = 0.0  # drawn by tasks since the last report
        self._last_tick = 0

    def note_energy(self, energy_j: float) -> None:
        """Energy drawn by the tasks of one step (the report's mean load)."""
        self._energy_j += energy_j

    def state_dict(self) -> dict:
        return {"energy_j": self._energy_j, "last_tick": self._last_tick}

    def load_state_dict(self, state: dict) -> None:
        self._energy_j = state["energy_j"]
        self._last_tick = state["last_tick"]

    def _store_values(self) -> tuple[int, float, int, int]:
        """(packets held, fill, lost before playback, played back) of the TM store (zeros: none)."""
        st = self.downlink.store
        return (0, 0.0, 0, 0) if st is None else (st.count, st.fill, st.lost, st.played_back)

    def task(self, t: float) -> float:
        """The `housekeeping` task: core (SID 1), tasks (2), associations (6), measured execution (7)
        and device (4) reports, and the onboard monitoring (service 12) of the core values."""
        inp = self.inputs
        learner = self.learning.learner
        if not learner.head_is_valid():
            learner.rollback()
            if not learner.head_is_valid():
                self.modes.cap(NOMINAL, "invalid_model", t)
        s = self.power.budget.state
        ex = self.executive
        dt = max((self.tick() - self._last_tick) * self.frame_s, self.frame_s)
        load_w = self.cfg.power.bus_base_load_w + self._energy_j / dt
        self._energy_j = 0.0
        self._last_tick = self.tick()
        layer = self.learning.layer
        core_values = (
            d.DICTIONARY_VERSION,
            self.tick(),
            self.modes.mode_index,
            inp.soc,
            inp.solar_power_w,
            load_w,
            int(self.power.predicted_eclipse(t)),
            max(self.power.orbit_index, 0),
            s.budget_j,
            s.remaining_j,
            learner.version,
            learner.active,
            learner.accepted,
            learner.refused,
            learner.rollbacks,
            learner.label_accuracy,
            learner.drift_free.statistic,
            learner.drift_labels.statistic,
            learner.drift_free.alarms + learner.drift_labels.alarms,
            learner.labels_total,
            *learner.labels_by_source,
            self.learning.calibration.version,
            self.learning.calibration.accepted,
            self.learning.calibration.refused,
            self.learning.calibration.rollbacks,
            self.learning.calibration.hot_count,
            self.learning.adaptation.version,
            self.learning.adaptation.accepted,
            self.learning.adaptation.refused,
            self.learning.adaptation.rollbacks,
            ex.overruns_total,
            ex.optional_skipped_total,
            self.solver.solves,
            tle_age_days(self.power.tle, self.cfg.mission.start_utc) + t / 86400.0,
            int(inp.in_contact),
            self.downlink.count,
            self.downlink.overflow,
            self.tc.accepted,
            self.tc.rejected,
            len(self.tc.queue),
            self.tm.events_suppressed,
            *self.tc.boot_record(),
            int(self.tc.nv.lost),
            *self._store_values(),
            layer.version,
            min(layer.accepted, 0xFFFF),  # u16 counters saturate rather than fail the report
            layer.refused,
            min(layer.rollbacks, 0xFFFF),
        )
        self.tm.housekeeping(d.HK_CORE_SID, d.HK_CORE_STRUCT.pack(*core_values), t)
        if not self.tc.nv.lost:
            self.tc.tables.check(core_values, t, self.tc.monitor_event)  # service 12
        tasks = b"".join(
            d.HK_TASK_STRUCT.pack(i, ex.task_runs[i], ex.task_skipped[i], ex.task_overruns[i],
                                  ex.task_deadline_misses[i], int(ex.task_disabled[i]), ex.task_energy_j[i])
            for i in range(self.n_tasks)
        )
        self.tm.housekeeping(d.HK_TASKS_SID, tasks, t)
        self.tm.housekeeping(d.HK_SA_SID, self.tc.sa_report(), t)
        if self.executive.cpu_clock is not None:
            self.tm.housekeeping(d.HK_EXEC_SID, self._exec_report(), t)
        st = getattr(self.solver, "stats", None)
        if st is not None:
            self.tm.housekeeping(d.HK_DEVICE_SID, d.HK_DEVICE_STRUCT.pack(
                st.health, st.solves, st.analog_accepted, st.analog_after_retry, st.fallbacks,
                st.rejected_by_gate, st.rounds_total, st.retries_total, st.timeouts, st.frames_rejected,
                st.crc_errors, st.settle_timeouts, st.saturations, st.device_resets, st.seu_detected,
                st.verify_failures, st.selftest_failures, st.calibrations, st.last_gain,
                st.last_rel_residual, st.energy_analog_path_j, st.energy_fallback_path_j, st.fallback_energy,
            ), t)
        return 1e-3

    def _exec_report(self) -> bytes:
        """SID 7: each task's execution as the CPU clock measured it (this boot)."""
        ex = self.executive
        return b"".join(
            d.HK_EXEC_STRUCT.pack(i, ex.task_exec_count[i], min(int(ex.take_exec_max(i) * 1e6), 0xFFFFFFFF),
                                  ex.exec_mean_s(i) * 1e6)
            for i in range(self.n_tasks)
        )

