"""The world's end of the world link: a flight software running in another process, driven
over `flight_sw.platform.world_link` with the same surface the simulation loop uses on an
in-process `FlightSoftware` (`inputs`, `outputs`, `step`, `idle`, `next_due_tick`,
`telecommand`).

The world serves the flight software's payload requests from its own `PayloadTruth`, into its
own copies of the flight buffers (`buffers`), so the truth of every frame stays here for
scoring and never crosses the link. After a link loss (the flight process killed, or the
link cut) it waits for the flight software to connect again; the flight's `F_HELLO` says the
last tick it completed, so the tick in progress is sent again only if it did not run.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import numpy as np

from flight_sw.app import Inputs, Outputs, config_fingerprint
from flight_sw.config.schema import MissionConfig
from flight_sw.memory import allocate_buffers
from flight_sw.ml.pipeline import ACQ_DARK
from flight_sw.ml.radiometry import CAL_OK
from flight_sw.platform import world_link as wl


class FlightLinkError(RuntimeError):
    """The flight process did not connect, or connected with another configuration."""


class RemoteFlight:
    def __init__(self, cfg: MissionConfig, listener: socket.socket, connect_timeout_s: float = 120.0,
                 on_disconnect: Callable[[], None] | None = None):
        """`listener`: a bound, listening stream socket the flight process connects to.
        `on_disconnect()` is called when the link is lost, before waiting for the flight again
        (the server may restart a flight process there)."""
        self.cfg = cfg
        self.listener = listener
        self.connect_timeout_s = connect_timeout_s
        self.on_disconnect = on_disconnect
        self.frame_s = cfg.executive.minor_frame_s
        self.buffers = allocate_buffers(cfg)  # the world's copies of the buffers it fills
        self.fingerprint = config_fingerprint(cfg, self.buffers)
        self.inputs = Inputs(soc=cfg.power.battery.initial_soc, solar_power_w=0.0, in_contact=False)
        self.outputs = Outputs(predictions=self.buffers["ml.batch_pred"])
        self.payload = None  # the world's PayloadTruth, set by the simulation
        self.sink: Callable[[bytes], None] = lambda cadu: None
        self._buffer_pairs = {
            wl.BUFFER_SCENE: (self.buffers["ml.batch_pixels"], self.buffers["ml.batch_ancillary"]),
            wl.BUFFER_LABEL: (self.buffers["ml.label_pixels"], self.buffers["ml.label_ancillary"]),
        }
        self._cal = self.buffers["cal.reading"]
        self._due_from = 0  # the cached next due tick answers queries from this tick on
        self._due = None
        self.link: wl.StreamLink | None = None
        self.connects = 0
        self.link_losses = 0
        self.done_lost = 0  # ticks the flight completed whose answer the link lost
        self.last_hello: tuple[int, int] | None = None  # (last tick, boots) of the latest F_HELLO
        self._plan: tuple[int, bytes] | None = None  # (tick, buffers) to draw ahead: F_DONE's plan
        self._ahead_mark = None  # the payload's mark before the frames drawn ahead for this tick
        self._ahead_plan = b""  # their buffers, in order
        self.prefetched = 0
        self.prefetch_undone = 0
        #: Why the flight process cannot connect any more (it exited), or None; polled while waiting.
        self.flight_problem: Callable[[], str | None] = lambda: None

    # -- connection ----------------------------------------------------------------------
    def connect(self) -> int:
        """Wait for the flight software to connect; return the last tick it completed."""
        host, port = self.listener.getsockname()[:2]
        self.listener.settimeout(0.25)
        waited_s = 0.0
        while True:
            try:
                sock, _ = self.listener.accept()
                break
            except TimeoutError:
                waited_s += 0.25
                problem = self.flight_problem()
                if problem:
                    raise FlightLinkError(f"tcp://{host}:{port}: {problem}") from None
                if waited_s >= self.connect_timeout_s:
                    raise FlightLinkError(f"no flight process connected to tcp://{host}:{port} within "
                                          f"{self.connect_timeout_s:g} s") from None
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = wl.StreamLink(sock)
        kind, body = link.receive()
        if kind != wl.F_HELLO:
            link.close()
            raise FlightLinkError(f"the flight process opened with message {kind}, expected F_HELLO")
        last_tick, boots = wl.HELLO_HEAD.unpack_from(body)
        theirs = body[wl.HELLO_HEAD.size:].decode("ascii", "replace")
        if theirs != self.fingerprint:
            link.close()
            raise FlightLinkError(f"the flight process runs configuration {theirs}, the world {self.fingerprint}: "
                                  "start both from the same config file")
        self.link = link
        self.connects += 1
        self.last_hello = (last_tick, boots)
        self._due = None
        return last_tick

    def drop_link(self) -> None:
        """Cut the world link between ticks (fault injection): what was queued is sent first,
        then the socket is closed; the flight software connects again by itself."""
        if self.link is not None:
            try:
                self.link.flush()
            except wl.LinkDown:
                pass
            self.link.close()
            self.link = None

    def _live(self) -> wl.StreamLink:
        """The link, or LinkDown when it is cut (the caller connects again)."""
        if self.link is None:
            raise wl.LinkDown("world link: cut")
        return self.link

    def _relink(self) -> int:
        self.link_losses += 1
        self._undo_ahead(0)  # the flight software drops the frames sent ahead on the old link
        if self.link is not None:
            self.link.close()
        self.link = None
        if self.on_disconnect is not None:
            self.on_disconnect()
        return self.connect()

    def close(self, stop: bool = True) -> None:
        """End the run: tell the flight software to stop (it writes its checkpoint) and close."""
        if self.link is None:
            return
        try:
            if stop:
                self.link.post(wl.W_STOP)
                self.link.flush()
                self.link.sock.settimeout(30.0)
                try:  # wait for the flight process to close its end (checkpoint written)
                    while True:
                        self.link.receive()
                except (wl.LinkDown, TimeoutError):
                    pass
        except wl.LinkDown:
            pass
        self.link.close()
        self.link = None

    # -- the surface of an in-process FlightSoftware -----------------------------------------
    def telecommand(self, cltu: bytes) -> None:
        if self.link is not None:
            self.link.post(wl.W_CLTU, cltu)

    def next_due_tick(self, tick: int) -> int:
        due = self._due
        if due is not None and tick >= self._due_from and (due < 0 or tick <= due):
            return due
        while True:
            try:
                link = self._live()
                link.post(wl.W_NEXT_DUE, wl.STEP.pack(tick))
                link.flush()
                body = self._until(wl.F_NEXT_DUE)
                break
            except wl.LinkDown:
                self._relink()
        (due,) = wl.NEXT_DUE.unpack(body)
        self._due_from, self._due = tick, due
        return due

    def step(self, tick: int, generation: int | None = None) -> None:
        inp = self.inputs
        out = self.outputs
        out.energy_j = 0.0
        out.predictions_valid = False
        while True:
            try:
                link = self._live()
                link.post(wl.W_EPS, wl.EPS.pack(inp.soc, inp.solar_power_w))
                link.post(wl.W_CARRIER, bytes([int(inp.in_contact)]))
                if self._plan is not None and self._plan[0] == tick and self.payload is not None:
                    self._send_ahead(link, self._plan[1])
                link.post(wl.W_STEP, wl.STEP.pack(tick))
                link.flush()
                self._take_done(self._until(wl.F_DONE), tick)
                return
            except wl.LinkDown:
                if self._relink() >= tick:
                    self.done_lost += 1  # it ran; its answer (energy, predictions) is lost
                    return

    def idle(self, first_tick: int, n_frames: int, in_contact: bool) -> None:
        answer = bool(in_contact)  # frames may come down only in contact
        while True:
            try:
                link = self._live()
                link.post(wl.W_IDLE, wl.IDLE.pack(first_tick, n_frames, int(in_contact), int(answer)))
                if answer:
                    link.flush()
                    self._until(wl.F_DONE)
                return
            except wl.LinkDown:
                if self._relink() >= first_tick + n_frames - 1:
                    return

    # -- messages --------------------------------------------------------------------------
    def _until(self, kind: int) -> bytes:
        """Serve the flight's requests until message `kind` arrives; return its body."""
        link = self._live()
        while True:
            got, body = link.receive()
            if got == kind:
                return body
            if got == wl.F_CADU:
                self.sink(body)
            elif got == wl.F_ACQUIRE:
                self._serve_frame(body)
            elif got == wl.F_CALIBRATE:
                self._serve_calibration(body)
            else:
                raise FlightLinkError(f"world link: unexpected message kind {got} while waiting for {kind}")

    def _send_ahead(self, link: wl.StreamLink, plan: bytes) -> None:
        """Draw the tick's planned frames now and send them with the step (world_link: prefetch)."""
        self._ahead_mark = self.payload.mark()
        self._ahead_plan = plan
        for tag in plan:
            link.post(wl.W_PREFETCH, wl.PREFETCH_HEAD.pack(tag) + self._frame(tag))
        self.prefetched += len(plan)

    def _undo_ahead(self, first: int) -> None:
        """Undo the frames drawn ahead from index `first` on (the tick did not take them): back to
        the mark, then the taken ones drawn again, which leaves the generators, the buffers and
        their truth exactly as if only those had been asked for."""
        plan = self._ahead_plan
        if first < len(plan):
            self.payload.rewind(self._ahead_mark)
            for tag in plan[:first]:
                pixels, ancillary = self._buffer_pairs[tag]
                self.payload.acquire(pixels, ancillary)
            self.prefetch_undone += len(plan) - first
        self._ahead_mark, self._ahead_plan = None, b""

    def _take_done(self, body: bytes, tick: int) -> None:
        done_tick, energy_j, due, valid, undo_from, plan_len = wl.DONE_HEAD.unpack_from(body)
        self._settle_ahead(undo_from)
        plan = body[wl.DONE_HEAD.size:wl.DONE_HEAD.size + plan_len]
        self._plan = (due, plan) if plan else None
        if done_tick != tick:
            raise FlightLinkError(f"world link: the flight answered tick {done_tick} for tick {tick}")
        out = self.outputs
        out.energy_j = energy_j
        out.predictions_valid = bool(valid)
        if valid:
            pred = out.predictions
            pred[:] = np.frombuffer(body, dtype=pred.dtype, count=pred.size, offset=wl.DONE_HEAD.size + plan_len)
        self._due_from, self._due = tick + 1, due

    def _settle_ahead(self, undo_from: int) -> None:
        """A request or F_DONE says which frames drawn ahead the tick did not take."""
        if undo_from == wl.NOTHING_TO_UNDO:
            self._ahead_mark, self._ahead_plan = None, b""
        else:
            self._undo_ahead(undo_from)

    def _serve_frame(self, body: bytes) -> None:
        tag, rows, undo_from = wl.ACQUIRE.unpack(body)
        self._settle_ahead(undo_from)
        if rows != self._buffer_pairs[tag][0].shape[0]:
            raise FlightLinkError(f"world link: F_ACQUIRE of {rows} rows, the buffer holds "
                                  f"{self._buffer_pairs[tag][0].shape[0]}")
        self.link.post(wl.W_FRAME, self._frame(tag))
        self.link.flush()

    def _frame(self, tag: int) -> bytes:
        """Acquire into the world's copy of buffer `tag`: a W_FRAME body."""
        pixels, ancillary = self._buffer_pairs[tag]
        status = self.payload.acquire(pixels, ancillary)
        elev = float(getattr(self.payload, "sun_elevation_deg", 90.0))
        data = b"" if status == ACQ_DARK else pixels.tobytes() + ancillary.tobytes()
        return wl.FRAME_HEAD.pack(status, elev) + data

    def _serve_calibration(self, body: bytes) -> None:
        kind, first, columns, undo_from = wl.CALIBRATE.unpack(body)
        self._settle_ahead(undo_from)
        if columns > self._cal.shape[0]:
            raise FlightLinkError(f"world link: F_CALIBRATE of {columns} columns, the buffer holds {self._cal.shape[0]}")
        out = self._cal[:columns]
        status = self.payload.acquire_calibration(kind, first, out)
        data = out.tobytes() if status == CAL_OK else b""
        self.link.post(wl.W_CAL, wl.CAL_HEAD.pack(status) + data)
        self.link.flush()
