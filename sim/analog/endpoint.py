"""The device end of the byte protocol: frames in, physics, frames out (with faults).

`DeviceEndpoint.handle(data) -> bytes` is all a transport needs: the in-process
transport calls it directly, the HIL servers (sim/hil) call it with whatever
arrived on a socket or a pty. Malformed frames are dropped silently (the host
times out), as a real device without a NAK would; each is counted.
"""

from __future__ import annotations

import numpy as np

from flight_sw.devices import protocol as p
from sim.analog.faults import FaultInjector
from sim.analog.physics import AnalogArray, DeviceParams

SLOW_FACTOR = 1e4


class DeviceEndpoint:
    def __init__(self, params: DeviceParams, seed: int | np.random.SeedSequence = 0):
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        phys_ss, fault_ss = ss.spawn(2)
        self.params = params
        self.array = AnalogArray(params, np.random.default_rng(phys_ss))
        self.faults = FaultInjector(np.random.default_rng(fault_ss))
        self.decoder = p.FrameDecoder()
        self.boot_count = 0
        self._reset_flag = False
        self._rows = 0
        self._pending: np.ndarray | None = None
        self.commands = 0
        self.frames_dropped = 0
        # for commands a fault hit: command index -> (reply status, reply delivered intact)
        self.event_replies: dict[int, tuple[int, bool]] = {}
        self.energy_j = 0.0

    # -- construction helpers -------------------------------------------------------------
    @classmethod
    def from_config(cls, dev, seed: int | np.random.SeedSequence = 0) -> DeviceEndpoint:
        """From a `DeviceConfig`: physics, permanent stuck cells and random fault rates."""
        ep = cls(DeviceParams.from_config(dev), seed)
        if dev.fault_stuck_cells:
            ep.stuck_cells(dev.fault_stuck_cells, n=min(dev.analog_n_max, 33))
        ep.faults.set_rates(
            {
                "dead": dev.fault_dead_rate,
                "slow_settle": dev.fault_slow_settle_rate,
                "no_settle": dev.fault_no_settle_rate,
                "saturate": dev.fault_saturate_rate,
                "corrupt": dev.fault_corrupt_rate,
                "seu": dev.fault_seu_rate,
                "brownout": dev.fault_brownout_rate,
                "wrong_output": dev.fault_wrong_output_rate,
            }
        )
        return ep

    def stuck_cells(self, k: int, n: int | None = None, value: float | None = None) -> list[tuple[int, int]]:
        """Make k random cells of the first n x n block stuck (at +-1 or 0, or `value`)."""
        n = n or self.params.n_max
        rng = self.faults.rng
        cells = []
        for _ in range(k):
            i, j = (int(v) for v in rng.integers(0, n, 2))
            v = float(rng.choice([-1.0, 0.0, 1.0])) if value is None else value
            self.array.stuck[i, j] = v
            self.array.stuck[j, i] = v
            cells.append((i, j))
        return cells  # noted as triggered when a PROGRAM runs into them

    def clear_stuck(self) -> None:
        self.array.stuck[...] = np.nan

    def advance(self, dt_s: float) -> None:
        """Let device time pass (the simulator's clock; drift runs on it)."""
        if dt_s > 0:
            self.array.time_s += dt_s

    # -- the byte interface --------------------------------------------------------------
    def handle(self, data: bytes) -> bytes:
        out = bytearray()
        for item in self.decoder.feed(data):
            if isinstance(item, p.Rejected):
                self.frames_dropped += 1
                continue
            if item.is_response:
                self.frames_dropped += 1
                continue
            out += self._command(item)
        return bytes(out)

    def _command(self, frame: p.Frame) -> bytes:
        self.commands += 1
        f = self.faults
        f.begin_command()
        n_log = len(f.log)
        status, intact, reply = self._run(frame)
        if len(f.log) > n_log:
            self.event_replies[f.command_index] = (status, intact)
        return reply

    def _run(self, frame: p.Frame) -> tuple[int, bool, bytes]:
        f = self.faults
        if f.take("dead"):
            return -1, False, b""
        if frame.code == p.CMD_SOLVE and f.take("brownout"):
            self._brownout()
            return -1, False, b""
        status, payload = self._dispatch(frame)
        flags = (p.FLAG_RESET if self._reset_flag else 0) | (p.FLAG_PROGRAMMED if self.array.programmed else 0)
        self._reset_flag = False
        reply = p.encode_frame(frame.code | p.RESPONSE_BIT, frame.seq, payload, status, flags)
        if f.take("corrupt"):
            return status, False, f.corrupt(reply)
        return status, True, reply

    def _brownout(self) -> None:
        self.array.reset()
        self._pending = None
        self._rows = 0
        self.boot_count += 1
        self._reset_flag = True
        self.decoder.reset()

    def _dispatch(self, frame: p.Frame) -> tuple[int, bytes]:
        code = frame.code
        try:
            if code == p.CMD_PING:
                p.unpack_empty(frame.payload, "PING")
                a = self.array
                gain, _, _, _ = a.calibrate()
                info = p.DeviceInfo(
                    p.PROTOCOL_VERSION, self.params.n_max, self.params.dac_bits, self.params.adc_bits,
                    self.params.program_slices, self.boot_count, a.time_s, gain,
                )
                return p.STATUS_OK, p.pack_ping_response(info)
            if code == p.CMD_PROGRAM:
                return self._program(frame.payload)
            if code == p.CMD_SOLVE:
                return self._solve(frame.payload)
            if code == p.CMD_CALIBRATE:
                p.unpack_empty(frame.payload, "CALIBRATE")
                gain, age, t, e = self.array.calibrate()
                self.energy_j += e
                return p.STATUS_OK, p.pack_calibrate_response(p.CalibrationResult(gain, age, t, e, self.array.time_s))
            if code == p.CMD_REFRESH_REFERENCE:
                p.unpack_empty(frame.payload, "REFRESH_REFERENCE")
                t, e = self.array.refresh_reference()
                self.energy_j += e
                return p.STATUS_OK, self._cost(t, e)
            if code == p.CMD_RESET:
                p.unpack_empty(frame.payload, "RESET")
                self._brownout()
                self._reset_flag = False
                return p.STATUS_OK, self._cost(0.0, 0.0)
            if code == p.CMD_TIME:
                t = p.unpack_time(frame.payload)
                self.array.time_s = max(self.array.time_s, t)
                return p.STATUS_OK, self._cost(0.0, 0.0)
            return p.STATUS_BAD_COMMAND, b""
        except p.ProtocolError:
            return p.STATUS_BAD_PAYLOAD, b""

    def _cost(self, t: float, e: float) -> bytes:
        return p.pack_cost_response(p.CostResult(t, e, self.array.time_s, self.boot_count))

    def _program(self, payload: bytes) -> tuple[int, bytes]:
        n, row0, rows = p.unpack_program(payload)
        a = self.array

        def reply(status: int, crc: int = 0, failed: int = 0, t: float = 0.0, e: float = 0.0) -> tuple[int, bytes]:
            return status, p.pack_program_response(p.ProgramResult(n, self._rows, crc, failed, t, e, a.time_s))

        if n > self.params.n_max:
            self._rows = 0
            return reply(p.STATUS_TOO_LARGE)
        if row0 == 0:
            self._pending = np.zeros((n, n))
            self._rows = 0
            a.reset()
        if self._pending is None or self._pending.shape[0] != n or row0 != self._rows:
            self._pending = None
            self._rows = 0
            return reply(p.STATUS_BAD_PAYLOAD)
        self._pending[row0 : row0 + rows.shape[0]] = rows
        self._rows += rows.shape[0]
        if self._rows < n:
            return reply(p.STATUS_ACK_PARTIAL)
        out = a.program(self._pending)
        self._pending = None
        self.energy_j += out.energy_j
        if out.failed_cells:
            self.faults.note("stuck")
        status = p.STATUS_VERIFY_FAIL if out.failed_cells else p.STATUS_OK
        return reply(status, out.crc, out.failed_cells, out.time_s, out.energy_j)

    def _solve(self, payload: bytes) -> tuple[int, bytes]:
        u, out_range, timeout = p.unpack_solve(payload)
        a = self.array
        n, m = u.shape
        f = self.faults
        zeros = np.zeros((n, m))

        def reply(status: int, y: np.ndarray, settle: float = 0.0, t: float = 0.0, e: float = 0.0, sat: int = 0):
            return status, p.pack_solve_response(
                p.SolveResult(n, m, a.codes_crc() if a.programmed else 0, settle, t, e, a.time_s, min(sat, 0xFFFF), y)
            )

        if n > self.params.n_max:
            return reply(p.STATUS_TOO_LARGE, zeros)
        if not a.programmed or a.n != n:
            return reply(p.STATUS_NOT_PROGRAMMED, zeros)
        if f.pending("seu"):
            f.take("seu")
            i, j = (int(v) for v in f.rng.integers(0, n, 2))
            a.flip_code_bit(i, j, int(f.rng.integers(0, self.params.dac_bits)))
        slow = f.take("slow_settle")
        never = f.take("no_settle")
        sat = f.take("saturate")
        out = a.settle(u, out_range, timeout, SLOW_FACTOR if slow else 1.0, never, sat)
        self.energy_j += out.energy_j
        y = out.y
        if f.take("wrong_output"):
            y = f.rng.permutation(y.ravel()).reshape(y.shape) * f.rng.choice([-1.0, 1.0], size=y.shape)
        if not out.settled:
            status = p.STATUS_SETTLE_TIMEOUT
        elif out.saturated:
            status = p.STATUS_SATURATED
        else:
            status = p.STATUS_OK
        return reply(status, y, out.settle_time_s, out.time_s, out.energy_j, out.saturated)
