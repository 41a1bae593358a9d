"""The `station` bench group on a small sample: it is registered, both latencies are measured
(every CADU committed, every alarm read from the event stream) and come out as plain numbers."""

import math

from sim.bench import GROUPS
from sim.bench import station as bench


def test_station_latencies_are_measured_on_a_small_stream():
    assert "station" in GROUPS
    lines = []
    archive_ms = bench.frame_to_archive_ms_p99(100, lines.append)
    alarm_ms = bench.alarm_latency_ms_p99(20, lines.append)
    for v in (archive_ms, alarm_ms):
        assert isinstance(v, float) and math.isfinite(v) and v > 0
    assert "100 CADUs" in lines[0] and "20 alarms" in lines[1]
