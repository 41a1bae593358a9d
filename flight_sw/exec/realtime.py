"""Real-time execution for HIL benches: ticks paced to wall time, and a task watchdog.

The clock is injected: the host hands in `now()` and `sleep()` (e.g. time.monotonic
and time.sleep), so flight code never reads the wall clock itself. In the
simulation nothing here is used; the executive runs as fast as possible.

The watchdog: each tick runs in a worker thread; the executive waits for it at most
one frame plus a grace period from the moment the tick starts. A task still running
then is declared hung: the task is disabled (event, reason "watchdog"), its step's
generation is retired (if it ever returns it runs nothing more) and the stuck worker is
abandoned (Python cannot kill a thread) while a fresh worker takes the next tick.

Bounded: at most one abandoned worker at a time. If a second worker hangs while the
first abandoned one is still stuck, no third thread is started: the executive keeps the
stuck worker and skips ticks (counted in `skipped_ticks`) until one of the two returns.
Falling behind wall time (a slow host, a high speed-up) is lateness, measured in the
jitter and `late_ticks`, never a hang: the watchdog's clock starts when the tick does.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable


class PacedClock:
    """Maps tick k to wall time t0 + k * frame_s / speedup and sleeps until then."""

    def __init__(self, frame_s: float, now: Callable[[], float], sleep: Callable[[float], None], speedup: float = 1.0):
        if not (math.isfinite(speedup) and speedup > 0):
            raise ValueError(f"speedup must be a finite number > 0, got {speedup}")
        if not (math.isfinite(frame_s) and frame_s > 0):
            raise ValueError(f"frame_s must be a finite number > 0, got {frame_s}")
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
    """Runs `fsw.step` each tick on a worker thread, paced, under a bounded watchdog."""

    def __init__(self, fsw, clock: PacedClock, grace_s: float):
        if not (math.isfinite(grace_s) and grace_s >= 0):
            raise ValueError(f"grace_s must be a finite number >= 0, got {grace_s}")
        self.fsw = fsw
        self.clock = clock
        self.grace_s = grace_s
        self.jitter_s: list[float] = []
        self.hung_tasks = 0
        self.skipped_ticks = 0  # ticks not run: a second worker hung while an abandoned one was stuck
        self.late_ticks = 0  # ticks that started more than the grace behind their wall-time slot
        self._worker: _Worker | None = None
        self._busy: threading.Event | None = None  # the current worker's unfinished (hung) job
        self._abandoned: _Worker | None = None

    def run_tick(self, tick: int) -> None:
        late = self.clock.wait_for(tick)
        self.jitter_s.append(late)
        if late > self.grace_s:
            self.late_ticks += 1
        if self._abandoned is not None and not self._abandoned.thread.is_alive():
            self._abandoned = None  # it came back and exited: a hang may be abandoned again
        if self._busy is not None:
            if not self._busy.is_set():
                if self._abandoned is None:
                    self._abandon_current()  # now there is room to leave it behind
                else:
                    self.skipped_ticks += 1  # no third thread: wait for one of the two to return
                    return
            self._busy = None
        if self._worker is None:
            self._worker = _Worker(self.fsw)
        started = self.clock.now()
        done = self._worker.submit(tick)
        if not done.wait(max(started + self.clock.frame_wall_s + self.grace_s - self.clock.now(), 0.0)):
            self._declare_hung(done)

    def _declare_hung(self, done: threading.Event) -> None:
        fsw = self.fsw
        idx = fsw.current_task
        fsw.generation += 1  # the stuck step runs nothing more if it ever returns
        self.hung_tasks += 1
        if idx is not None:
            fsw.disable_task(fsw.specs[idx].name, "watchdog")
        if self._abandoned is None:
            self._abandon_current()
        else:
            self._busy = done  # keep it: the next ticks wait for it (or for the abandoned one)

    def _abandon_current(self) -> None:
        self._worker.abandon()
        self._abandoned = self._worker
        self._worker = None
        self._busy = None

    def threads(self) -> int:
        """Worker threads alive (current and abandoned): at most 2."""
        return sum(w is not None and w.thread.is_alive() for w in (self._worker, self._abandoned))

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
