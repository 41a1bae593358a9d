"""The flight software's hardware interfaces over one socket: the world link.

In the split deployment (`flightsw run` against `flightsim serve`, or a bench board against
a workstation) the flight software reaches the world only through this link, as NASA's NOS3
arranges it: the world drives time, and every interface is a typed message on the stream
(framing: `flight_sw.tmtc.link_messages`):

| interface        | world -> flight                           | flight -> world                    |
|------------------|-------------------------------------------|------------------------------------|
| time source      | `W_STEP` tick, `W_IDLE` first tick + n    | `F_DONE` (tick done: energy drawn) |
| power system     | `W_EPS` battery SoC, solar array power    | (the energy drawn, in `F_DONE`)    |
| radio            | `W_CARRIER` lock, `W_CLTU` each CLTU in   | `F_CADU` each CADU out             |
| payload          | `W_FRAME` pixels + ancillary, `W_CAL`     | `F_ACQUIRE`, `F_CALIBRATE`         |

The analog device keeps its own byte link (`flight_sw.devices.transport`); the non-volatile
memory is a file the flight process opens (`flight_sw.tmtc.nv_store.FileDevice`).

The exchange is lock-step: the world sends the readings of a tick and `W_STEP`; the flight
software runs the tick (asking for payload frames as its tasks need them, each answered before
it goes on) and answers `F_DONE`. Idle stretches (`W_IDLE`) out of contact produce nothing, so
the world does not wait for them (it asks for an answer only when frames may come down).
Same messages in the same order give the same telemetry bytes as the in-process simulation.

Prefetch: a round trip per payload frame costs as much as the frame. In `F_DONE` the flight
software gives its plan for the next due tick: the buffers its payload tasks due there will
acquire into, in their order (an optional task may still be refused power, a calibration
reading ends the plan). The world draws those frames before `W_STEP` and sends them ahead
(`W_PREFETCH`, in order). The tick takes them as its requests match them, in order, without
asking; at the first request that does not match, the request carries the index of the first
frame not taken and the world undoes that draw and the later ones (its generators back to
where they were before the tick's frames, the taken ones drawn again) before it serves the
request; frames not asked for by the end of the tick
are undone the same way from `F_DONE`. Either way the world draws exactly what it would have
drawn without prefetching, in the same order.

After a link loss the flight side connects again and says `F_HELLO` with the last tick it
completed, so the world knows whether the tick it was waiting for ran (its `F_DONE` was lost)
or must be sent again. A payload frame that cannot be fetched because the link is down is a
frame not acquired (`ACQ_DARK`: the task skips), as a payload interface timeout would be.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import numpy as np

from flight_sw.ml.pipeline import ACQ_DARK
from flight_sw.ml.radiometry import CAL_UNAVAILABLE
from flight_sw.tmtc.link_messages import MessageReader, encode

# world -> flight
W_EPS = 16  # soc f64, solar_power_w f64
W_CARRIER = 17  # in_contact u8
W_CLTU = 18  # one CLTU
W_STEP = 19  # tick u64 -> F_DONE
W_IDLE = 20  # first tick u64, frames u32, in_contact u8, answer u8 (1: reply F_DONE)
W_NEXT_DUE = 21  # tick u64 -> F_NEXT_DUE
W_FRAME = 22  # status i8, sun elevation f64, pixels, ancillary (answer to F_ACQUIRE)
W_CAL = 23  # status i8, readings (answer to F_CALIBRATE)
W_STOP = 24  # end of the run
W_PREFETCH = 25  # buffer u8, then as W_FRAME: a frame drawn ahead for the tick (in request order)
# flight -> world
F_HELLO = 32  # last completed tick i64, boots u32, config fingerprint (ASCII)
F_CADU = 33  # one CADU
F_ACQUIRE = 34  # buffer u8 (BUFFER_*), rows u32, undo from u8 (see NOTHING_TO_UNDO)
F_CALIBRATE = 35  # kind u8, first column u32, columns u32, undo from u8
F_DONE = 36  # tick i64, energy_j f64, next due tick i64, predictions valid u8, undo from u8, plan
#              length u8; then the plan (buffer u8 each: the next due tick's acquisitions, in
#              order) and the predictions
F_NEXT_DUE = 37  # next due tick i64

BUFFER_SCENE = 0  # ml.batch_pixels / ml.batch_ancillary (inference)
BUFFER_LABEL = 1  # ml.label_pixels / ml.label_ancillary (labelling, dark frames)

EPS = struct.Struct(">dd")
STEP = struct.Struct(">Q")
IDLE = struct.Struct(">QIBB")
FRAME_HEAD = struct.Struct(">bd")
CAL_HEAD = struct.Struct(">b")
HELLO_HEAD = struct.Struct(">qI")
ACQUIRE = struct.Struct(">BIB")
CALIBRATE = struct.Struct(">BIIB")
DONE_HEAD = struct.Struct(">qdqBBB")
PREFETCH_HEAD = struct.Struct(">B")
#: "Undo from" when every frame drawn ahead was used (or none was sent); otherwise the field is
#: the index of the first frame drawn ahead that the tick did not take, in order: the world
#: undoes that draw and every later one.
NOTHING_TO_UNDO = 255
#: Frames drawn ahead for one tick, at most.
MAX_AHEAD = 8
NEXT_DUE = struct.Struct(">q")


#: Non-blocking reads tried before a blocking one (about 0.5 us each; see StreamLink._recv).
SPIN_POLLS = 2000


class LinkDown(OSError):
    """The world link is down (closed, reset or never reached)."""


class StreamLink:
    """A connected stream socket carrying link messages, with an outbox flushed in one write."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = MessageReader()
        self._inbox: list[tuple[int, bytes]] = []
        self._pos = 0
        self._out: list[bytes] = []
        self.bytes_in = 0
        self.bytes_out = 0
        self.spin_polls = SPIN_POLLS

    def post(self, kind: int, body: bytes = b"") -> None:
        """Queue a message (sent at the next `flush`)."""
        self._out.append(encode(kind, body))

    def flush(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise LinkDown(f"world link: send failed ({exc})") from exc
        self.bytes_out += len(data)

    def receive(self) -> tuple[int, bytes]:
        """The next message (blocks until one has arrived)."""
        while self._pos >= len(self._inbox):
            try:
                chunk = self._recv()
            except OSError as exc:
                raise LinkDown(f"world link: receive failed ({exc})") from exc
            if not chunk:
                raise LinkDown("world link: closed by the peer")
            self.bytes_in += len(chunk)
            self._inbox = self.reader.feed(chunk)
            self._pos = 0
        msg = self._inbox[self._pos]
        self._pos += 1
        return msg

    def _recv(self) -> bytes:
        """Poll briefly before blocking: in lock-step the answer usually comes within tens of
        microseconds, and a blocked process takes longer than that to be woken."""
        sock = self.sock
        for _ in range(self.spin_polls):
            try:
                return sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
        return sock.recv(1 << 20)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class LinkPayload:
    """The payload interface over the world link (`flight_sw.app.PayloadDevice`)."""

    def __init__(self):
        self.link: StreamLink | None = None
        self.sun_elevation_deg = 90.0  # ancillary of the last frame fetched
        self._tags: dict[int, int] = {}
        self.frames_missed = 0  # frames not fetched because the link was down
        self.ahead: list[tuple[int, bytes]] = []  # (buffer, W_FRAME body) drawn ahead, in order
        self.ahead_taken = 0  # frames drawn ahead that this tick has taken
        self.ahead_used = 0  # in all (a figure for the bench)

    def bind(self, buffers: dict[str, np.ndarray]) -> None:
        """Learn which flight buffer is which (the world fills its copy of the same one)."""
        self._tags = {id(buffers["ml.batch_pixels"]): BUFFER_SCENE, id(buffers["ml.label_pixels"]): BUFFER_LABEL}

    def acquire(self, pixels: np.ndarray, ancillary: np.ndarray) -> int:
        tag = self._tags.get(id(pixels))
        if tag is None:
            raise ValueError("payload: acquire into a buffer that is not ml.batch_pixels or ml.label_pixels")
        ahead = self._take_prefetch(tag)
        if ahead is not None:
            body = ahead
        else:
            try:
                kind, body = self._ask(F_ACQUIRE, ACQUIRE.pack(tag, pixels.shape[0], self._undo_from()), W_FRAME)
            except LinkDown:
                self.frames_missed += 1
                return ACQ_DARK  # no frame: the task skips
        status, elev = FRAME_HEAD.unpack_from(body)
        self.sun_elevation_deg = elev
        rest = memoryview(body)[FRAME_HEAD.size:]
        if len(rest):  # a frame (a dark one carries none and leaves the buffers as they were)
            n_pix = pixels.nbytes
            if len(rest) != n_pix + ancillary.nbytes:
                raise ValueError(f"payload: W_FRAME of {len(rest)} octets, expected {n_pix + ancillary.nbytes}")
            pixels.reshape(-1)[:] = np.frombuffer(rest[:n_pix], dtype=pixels.dtype)
            ancillary.reshape(-1)[:] = np.frombuffer(rest[n_pix:], dtype=ancillary.dtype)
        return status

    def acquire_calibration(self, kind: int, first_column: int, out: np.ndarray) -> int:
        try:
            _, body = self._ask(F_CALIBRATE, CALIBRATE.pack(kind, first_column, out.shape[0], self._undo_from()),
                                W_CAL)
        except LinkDown:
            self.frames_missed += 1
            return CAL_UNAVAILABLE
        (status,) = CAL_HEAD.unpack_from(body)
        rest = memoryview(body)[CAL_HEAD.size:]
        if len(rest):
            if len(rest) != out.nbytes:
                raise ValueError(f"payload: W_CAL of {len(rest)} octets, expected {out.nbytes}")
            out.reshape(-1)[:] = np.frombuffer(rest, dtype=out.dtype)
        return status

    def _take_prefetch(self, tag: int) -> bytes | None:
        """The next frame drawn ahead, if it is the one asked for."""
        if not self.ahead or self.ahead[0][0] != tag:
            return None
        self.ahead_taken += 1
        self.ahead_used += 1
        return self.ahead.pop(0)[1]

    def _undo_from(self) -> int:
        """Index of the first frame drawn ahead and not taken (the world undoes it and the rest),
        dropping them here; NOTHING_TO_UNDO when none is left."""
        if not self.ahead:
            return NOTHING_TO_UNDO
        self.ahead.clear()
        return self.ahead_taken

    def end_tick(self) -> int:
        """`_undo_from` at the end of a tick, ready for the next one."""
        undo = self._undo_from()
        self.ahead_taken = 0
        return undo

    def _ask(self, kind: int, body: bytes, answer: int) -> tuple[int, bytes]:
        link = self.link
        if link is None:
            raise LinkDown("world link: not connected")
        link.post(kind, body)
        link.flush()
        got, reply = link.receive()
        if got != answer:
            raise ValueError(f"world link: expected message {answer} in answer to {kind}, got {got}")
        return got, reply


class FlightLoop:
    """The flight side of the world link: runs the flight software as the world's messages say.

    `fsw` is a built `FlightSoftware` whose payload is `payload` and whose downlink sink is
    `self.downlink`. `checkpoint(fsw)`, if given, is called after every tick whose mission time
    crosses a multiple of `checkpoint_every_s` (the flight process writes its state to NV).
    `last_tick`: the last tick this state completed (-1: a cold start), told to the world.
    """

    def __init__(self, fsw, payload: LinkPayload, checkpoint: Callable | None = None,
                 checkpoint_every_s: float = 0.0, boots: int = 0, last_tick: int = -1):
        self.fsw = fsw
        self.payload = payload
        self.link: StreamLink | None = None
        self.checkpoint = checkpoint
        self.checkpoint_every_s = checkpoint_every_s
        self._next_checkpoint_s = (fsw.t_s // checkpoint_every_s + 1) * checkpoint_every_s if checkpoint_every_s else 0
        self.boots = boots
        self.last_tick = last_tick
        self.steps = 0
        self.idles = 0

    def downlink(self, cadu: bytes) -> None:
        """The downlink sink: each CADU leaves with the tick's answer."""
        if self.link is not None:
            self.link.post(F_CADU, cadu)

    def _plan(self, tick: int) -> bytes:
        """The buffers the payload tasks due at `tick` will acquire into, in order (world_link:
        prefetch); up to the first calibration reading, at most MAX_AHEAD."""
        if tick < 0:
            return b""
        plan = bytearray()
        for kind in self.fsw.executive.due_kinds(tick):
            buffer = self.fsw.learning.acquisition_of(kind)
            if buffer == "" or len(plan) >= MAX_AHEAD:
                break  # a calibration reading: not drawn ahead, and nothing after it
            if buffer is not None:
                plan.append(BUFFER_SCENE if buffer == "ml.batch_pixels" else BUFFER_LABEL)
        return bytes(plan)

    def attach(self, link: StreamLink, fingerprint: str) -> None:
        """Take a (new) connection and say where the flight software stands."""
        self.link = link
        self.payload.link = link
        self.payload.ahead.clear()  # frames drawn ahead on the old link are the world's to undo
        self.payload.ahead_taken = 0
        link.post(F_HELLO, HELLO_HEAD.pack(self.last_tick, self.boots) + fingerprint.encode("ascii"))
        link.flush()

    def serve(self) -> bool:
        """Run messages until `W_STOP` (True) or the link goes down (False)."""
        link = self.link
        fsw = self.fsw
        inputs = fsw.inputs
        try:
            while True:
                kind, body = link.receive()
                if kind == W_STEP:
                    (tick,) = STEP.unpack(body)
                    fsw.step(tick)
                    self.steps += 1
                    self._done(tick)
                elif kind == W_PREFETCH:
                    self.payload.ahead.append((body[0], body[PREFETCH_HEAD.size:]))
                elif kind == W_EPS:
                    inputs.soc, inputs.solar_power_w = EPS.unpack(body)
                elif kind == W_CARRIER:
                    inputs.in_contact = bool(body[0])
                elif kind == W_CLTU:
                    fsw.telecommand(body)
                elif kind == W_IDLE:
                    first, n, contact, answer = IDLE.unpack(body)
                    inputs.in_contact = bool(contact)
                    fsw.idle(first, n, bool(contact))
                    self.idles += 1
                    self.last_tick = first + n - 1
                    if answer:
                        self._post_done(self.last_tick, 0.0, NOTHING_TO_UNDO)
                    link.flush()
                elif kind == W_NEXT_DUE:
                    (tick,) = STEP.unpack(body)
                    link.post(F_NEXT_DUE, NEXT_DUE.pack(fsw.next_due_tick(tick)))
                    link.flush()
                elif kind == W_STOP:
                    if self.checkpoint is not None:
                        self.checkpoint(fsw)
                    return True
                else:
                    raise ValueError(f"world link: unexpected message kind {kind}")
        except LinkDown:
            self.link = None
            self.payload.link = None
            return False

    def _done(self, tick: int) -> None:
        fsw = self.fsw
        self.last_tick = tick
        self._post_done(tick, fsw.outputs.energy_j, self.payload.end_tick())
        self.link.flush()
        if self.checkpoint is not None and self.checkpoint_every_s and fsw.t_s >= self._next_checkpoint_s:
            self.checkpoint(fsw)
            every = self.checkpoint_every_s
            self._next_checkpoint_s = (fsw.t_s // every + 1) * every

    def _post_done(self, tick: int, energy_j: float, undo_from: int) -> None:
        fsw = self.fsw
        out = fsw.outputs
        valid = bool(out.predictions_valid)
        due = fsw.next_due_tick(tick + 1)
        plan = self._plan(due)
        body = DONE_HEAD.pack(tick, energy_j, due, int(valid), undo_from, len(plan)) + plan
        if valid:
            body += out.predictions.tobytes()
        self.link.post(F_DONE, body)
