"""The static schedule: feasible tables build; infeasible ones are refused with frame and task names."""

import dataclasses
from pathlib import Path

import pytest

from flight_sw.config import load_mission_config
from flight_sw.config.schema import ExecutiveConfig, TaskConfig
from flight_sw.exec.schedule import ScheduleError, build_frame_table, build_task_specs

DEFAULT = Path(__file__).resolve().parents[2] / "mission_configs" / "default_sso.yaml"


def task(name, period=10.0, offset=0.0, budget=0.1, modes=("NOMINAL",), prio=5):
    return TaskConfig(name=name, kind="housekeeping", period_s=period, offset_s=offset, compute_budget_s=budget,
                      energy_j=1.0, criticality="essential", modes=modes, priority=prio)


EXEC = ExecutiveConfig(minor_frame_s=1.0, frames_per_major=60)


def test_default_table_builds_and_is_indexed_by_frame():
    cfg = load_mission_config(DEFAULT)
    specs = build_task_specs(cfg.tasks, 1.0)
    table = build_frame_table(specs, cfg.executive)
    assert len(table) == 60
    for spec in specs:  # each task is due exactly in the frames its period and offset give
        frames = [f for f, due in enumerate(table) if spec.index in due]
        assert frames == list(range(spec.offset_frames, 60, spec.period_frames)), spec.name


def test_priority_order_within_a_frame():
    specs = build_task_specs((task("low", prio=9), task("high", prio=1)), 1.0)
    assert build_frame_table(specs, EXEC)[0] == (1, 0)


def test_overloaded_frame_refused_with_frame_and_tasks():
    specs = build_task_specs((task("a", budget=0.6), task("b", budget=0.5), task("c", offset=1, budget=0.2)), 1.0)
    with pytest.raises(ScheduleError) as info:
        build_frame_table(specs, EXEC)
    msg = str(info.value)
    assert "frame 0: 1.100 s of 1.000 s (a, b)" in msg
    assert "frame 1:" not in msg and "(and 3 more)" in msg


def test_period_must_divide_major_frame():
    specs = build_task_specs((task("odd", period=7.0),), 1.0)
    with pytest.raises(ScheduleError, match="'odd': period of 7 frames does not divide the major frame of 60"):
        build_frame_table(specs, EXEC)


@pytest.mark.parametrize(
    "tasks,fragment",
    [
        ((task("z", period=0.0),), "period_s must be > 0"),
        ((task("n", period=-5.0),), "period_s must be > 0"),
        ((task("o", period=10.0, offset=10.0),), "offset_s must be in [0, period_s=10.0)"),
        ((task("d"), task("d")), "duplicate task name"),
        ((task("m", modes=("SCIENCE",)),), "unknown mode 'SCIENCE'"),
        ((task("f", period=1.5),), "not a multiple of the minor frame"),
        ((), "task table is empty"),
    ],
)
def test_bad_task_tables_refused(tasks, fragment):
    with pytest.raises(ScheduleError) as info:
        build_task_specs(tasks, 1.0)
    assert fragment in str(info.value)


def test_config_with_overloaded_frame_refused_at_startup():
    from flight_sw.app import FlightSoftware

    cfg = load_mission_config(DEFAULT)
    heavy = tuple(dataclasses.replace(t, compute_budget_s=0.9) if t.name in ("inference", "label_collect") else t
                  for t in cfg.tasks)
    cfg = dataclasses.replace(cfg, tasks=heavy)
    with pytest.raises(ScheduleError, match=r"frame 5: .*inference, label_collect"):
        FlightSoftware(cfg, image=None, payload=None, downlink_sink=lambda p: None)  # type: ignore[arg-type]
