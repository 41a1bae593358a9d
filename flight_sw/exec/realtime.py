"""Real-time execution for HIL benches: ticks paced to wall time, and a task watchdog.

The clock is injected: the host hands in `now()` and `sleep()` (e.g. time.monotonic
and time.sleep), so flight code never reads the wall clock itself. In the
simulation nothing here is used; the executive runs as fast as possible.

The watchdog: each tick runs in a worker thread; the executive waits until the
end of the frame plus a grace period. A task still running then is declared hung:
the task is disabled (event, reason "watchdog"), the stuck worker is abandoned
(Python cannot kill a thread; its generation is retired, so if it ever returns it
runs nothing more) and a fresh worker takes the next tick. The executive keeps
running.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class PacedClock:
    """Maps tick k to wall time t0 + k * frame_s / speedup and sleeps until then."""

    def __init__(self, frame_s: float, now: Callable[[], float], sleep: Callable[[float], None], speedup: float = 1.0):
        if speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        self.frame_wall_s = frame_s / speedup
        self.now = now
        self.sleep = sleep
        self.t0: float | None = None
        self.tick0 = 0

    def start(self, tick: int) -> None:
        self.t0 = self.now()
        self.tick0 = tick

    def deadline(self, tick: int) -> float:
        """Wall time at which `tick` starts."""
        return self.t0 + (tick - self.tick0) * self.frame_wall_s

    def wait_for(self, tick: int) -> float:
        """Sleep until `tick` is due; return how late the wake-up was [s] (the tick jitter)."""
        if self.t0 is None:
            self.start(tick)
        target = self.deadline(tick)
        delay = target - self.now()
        if delay > 0:
            self.sleep(delay)
        return self.now() - target


class RealTimeExecutive:
    """Runs `fsw.step` each tick on a worker thread, paced, under a watchdog."""

    def __init__(self, fsw, clock: PacedClock, grace_s: float):
        self.fsw = fsw
        self.clock = clock
        self.grace_s = grace_s
        self.jitter_s: list[float] = []
        self.hung_tasks = 0
        self._worker: _Worker | None = None

    def run_tick(self, tick: int) -> None:
        self.jitter_s.append(self.clock.wait_for(tick))
        if self._worker is None:
            self._worker = _Worker(self.fsw)
        done = self._worker.submit(tick)
        timeout = max(self.clock.deadline(tick + 1) + self.grace_s - self.clock.now(), 0.0)
        if not done.wait(timeout):
            self._declare_hung()

    def _declare_hung(self) -> None:
        fsw = self.fsw
        idx = fsw.current_task
        fsw.generation += 1  # the stuck step runs nothing more if it ever returns
        self.hung_tasks += 1
        if idx is not None:
            fsw.disable_task(fsw.specs[idx].name, "watchdog")
        self._worker.abandon()
        self._worker = None

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()


class _Worker:
    def __init__(self, fsw):
        self.fsw = fsw
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._loop, daemon=True, name="fsw-tick")
        self.thread.start()

    def submit(self, tick: int) -> threading.Event:
        done = threading.Event()
        self.jobs.put((tick, self.fsw.generation, done))
        return done

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            tick, generation, done = job
            self.fsw.step(tick, generation)
            done.set()

    def abandon(self) -> None:
        """Leave the stuck thread behind (daemon); it exits after its job if it ever returns."""
        try:
            self.jobs.put_nowait(None)
        except queue.Full:
            pass

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=1.0)
