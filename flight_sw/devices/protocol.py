"""The analog optimizer's byte protocol: framing, commands, responses, status codes.

One frame on the wire (all integers big-endian, floats IEEE 754)::

    offset size field
    0      2    sync            0xEB 0x90
    2      1    version         PROTOCOL_VERSION (1)
    3      1    code            command 0x01..0x7F; response = command | 0x80
    4      2    seq             sequence number; a response echoes its command's
    6      1    status          STATUS_* in responses, 0 in commands
    7      1    flags           FLAG_* bits (responses), 0 in commands
    8      4    length          payload bytes, <= MAX_PAYLOAD
    12     2    header_crc      CRC-16/CCITT-FALSE over bytes 0..11
    14     L    payload         command/response specific (pack_*/unpack_* below)
    14+L   4    crc32           CRC-32 (ISO-HDLC, zlib) over bytes 0..14+L-1

The header has its own CRC so a corrupted length can never make the receiver
wait for (or skip) a huge payload. Every `pack_*` has an `unpack_*` that
checks exact lengths and field ranges and raises `ProtocolError` with a reason;
`pack_*` raises `ValueError` on out-of-range fields (as `spacepackets` does).
`FrameDecoder` turns a byte stream into frames and `Rejected` records and
never raises: junk, truncated or corrupted frames come out as reasons.

The full specification with the payload tables is docs/analog_device.md.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass

import numpy as np

SYNC = b"\xeb\x90"
PROTOCOL_VERSION = 1
_HEADER = struct.Struct(">2sBBHBBI")  # 12 bytes
_HCRC = struct.Struct(">H")
_CRC32 = struct.Struct(">I")
HEADER_LEN = _HEADER.size + _HCRC.size  # 14
TRAILER_LEN = _CRC32.size  # 4
OVERHEAD = HEADER_LEN + TRAILER_LEN
MAX_PAYLOAD = 1 << 20
MAX_N = 4096
MAX_M = 256
RESPONSE_BIT = 0x80

# -- commands ----------------------------------------------------------------------
CMD_PING = 0x01
CMD_PROGRAM = 0x02
CMD_SOLVE = 0x03
CMD_CALIBRATE = 0x04
CMD_REFRESH_REFERENCE = 0x05
CMD_RESET = 0x06
CMD_TIME = 0x07
COMMANDS = {
    CMD_PING: "PING",
    CMD_PROGRAM: "PROGRAM",
    CMD_SOLVE: "SOLVE",
    CMD_CALIBRATE: "CALIBRATE",
    CMD_REFRESH_REFERENCE: "REFRESH_REFERENCE",
    CMD_RESET: "RESET",
    CMD_TIME: "TIME",
}

# -- status codes (responses) --------------------------------------------------------
STATUS_OK = 0
STATUS_ACK_PARTIAL = 1  # a PROGRAM block was stored; more rows expected
STATUS_NOT_PROGRAMMED = 2  # SOLVE without a (complete) programmed matrix, e.g. after a reset
STATUS_SETTLE_TIMEOUT = 3  # the circuit did not settle within the requested time
STATUS_SATURATED = 4  # one or more outputs sat at a rail
STATUS_VERIFY_FAIL = 5  # PROGRAM done, but some cells missed their target (stuck cells)
STATUS_BAD_COMMAND = 6  # unknown command code
STATUS_BAD_PAYLOAD = 7  # payload malformed for its command
STATUS_BAD_VERSION = 8  # protocol version not supported
STATUS_TOO_LARGE = 9  # n or m beyond the device's array
STATUS_INTERNAL = 10  # device-side error
STATUS_NAMES = {
    STATUS_OK: "OK",
    STATUS_ACK_PARTIAL: "ACK_PARTIAL",
    STATUS_NOT_PROGRAMMED: "NOT_PROGRAMMED",
    STATUS_SETTLE_TIMEOUT: "SETTLE_TIMEOUT",
    STATUS_SATURATED: "SATURATED",
    STATUS_VERIFY_FAIL: "VERIFY_FAIL",
    STATUS_BAD_COMMAND: "BAD_COMMAND",
    STATUS_BAD_PAYLOAD: "BAD_PAYLOAD",
    STATUS_BAD_VERSION: "BAD_VERSION",
    STATUS_TOO_LARGE: "TOO_LARGE",
    STATUS_INTERNAL: "INTERNAL",
}

# -- flags (responses) ---------------------------------------------------------------
FLAG_RESET = 0x01  # the device (re)booted since its previous reply: programmed state lost
FLAG_PROGRAMMED = 0x02  # the device holds a complete programmed matrix


class ProtocolError(ValueError):
    """A frame or payload that must be rejected; `reason` says why (for telemetry)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Frame:
    code: int
    seq: int
    status: int
    flags: int
    payload: bytes

    @property
    def is_response(self) -> bool:
        return bool(self.code & RESPONSE_BIT)

    @property
    def command(self) -> int:
        return self.code & ~RESPONSE_BIT


@dataclass(frozen=True)
class Rejected:
    """Bytes the decoder threw away and why (junk, bad CRC, bad version...)."""

    reason: str
    n_bytes: int


REJECT_JUNK = "junk before sync"
REJECT_HEADER_CRC = "header crc mismatch"
REJECT_VERSION = "unsupported version"
REJECT_LENGTH = "length exceeds maximum"
REJECT_PAYLOAD_CRC = "payload crc mismatch"
REJECT_CODE = "unknown code"
REJECT_TRUNCATED = "truncated frame"


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), as in CCSDS/PUS packets."""
    return binascii.crc_hqx(data, 0xFFFF)


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int | np.integer) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _known_code(code: int) -> bool:
    return (code & ~RESPONSE_BIT) in COMMANDS


def encode_frame(code: int, seq: int, payload: bytes = b"", status: int = 0, flags: int = 0) -> bytes:
    """One complete frame; `ValueError` for out-of-range fields or an oversized payload."""
    _check_range("code", code, 0, 255)
    if not _known_code(code):
        raise ValueError(f"code 0x{code:02x} is not a known command or response")
    _check_range("seq", seq, 0, 0xFFFF)
    _check_range("status", status, 0, 255)
    _check_range("flags", flags, 0, 255)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
    head = _HEADER.pack(SYNC, PROTOCOL_VERSION, code, seq, status, flags, len(payload))
    head += _HCRC.pack(crc16(head))
    body = head + bytes(payload)
    return body + _CRC32.pack(crc32(body))


def decode_frame(data: bytes) -> Frame:
    """Exactly one complete frame; `ProtocolError` with the reason otherwise."""
    data = bytes(data)
    if len(data) < OVERHEAD:
        raise ProtocolError(REJECT_TRUNCATED, f"{len(data)} bytes, need at least {OVERHEAD}")
    if data[:2] != SYNC:
        raise ProtocolError(REJECT_JUNK, "missing sync pattern")
    sync, version, code, seq, status, flags, length = _HEADER.unpack_from(data)
    if _HCRC.unpack_from(data, _HEADER.size)[0] != crc16(data[: _HEADER.size]):
        raise ProtocolError(REJECT_HEADER_CRC)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(REJECT_VERSION, f"got {version}, speak {PROTOCOL_VERSION}")
    if length > MAX_PAYLOAD:
        raise ProtocolError(REJECT_LENGTH, f"{length} > {MAX_PAYLOAD}")
    total = HEADER_LEN + length + TRAILER_LEN
    if len(data) != total:
        raise ProtocolError(REJECT_TRUNCATED if len(data) < total else "trailing bytes", f"{len(data)} vs {total}")
    if _CRC32.unpack_from(data, HEADER_LEN + length)[0] != crc32(data[: HEADER_LEN + length]):
        raise ProtocolError(REJECT_PAYLOAD_CRC)
    if not _known_code(code):
        raise ProtocolError(REJECT_CODE, f"0x{code:02x}")
    return Frame(code, seq, status, flags, data[HEADER_LEN : HEADER_LEN + length])


class FrameDecoder:
    """Stream -> frames. Resynchronises on the sync pattern; never raises.

    A bad header CRC drops one byte and searches the next sync (the length
    field cannot be trusted); a bad payload CRC drops the whole frame. The
    buffer never holds more than one maximal frame.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = min(max_payload, MAX_PAYLOAD)
        self._buf = bytearray()
        self.frames = 0
        self.rejected = 0

    def reset(self) -> None:
        self._buf.clear()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | Rejected]:
        buf = self._buf
        buf += data
        out: list[Frame | Rejected] = []
        while True:
            if len(buf) < 2:
                break
            start = buf.find(SYNC)
            if start < 0:
                # keep a trailing 0xEB: it may be the first sync byte of the next frame
                keep = 1 if buf[-1] == SYNC[0] else 0
                self._reject(out, REJECT_JUNK, len(buf) - keep)
                del buf[: len(buf) - keep]
                break
            if start > 0:
                self._reject(out, REJECT_JUNK, start)
                del buf[:start]
            if len(buf) < HEADER_LEN:
                break
            _, version, code, _, _, _, length = _HEADER.unpack_from(buf)
            if _HCRC.unpack_from(buf, _HEADER.size)[0] != crc16(bytes(buf[: _HEADER.size])):
                self._reject(out, REJECT_HEADER_CRC, 1)
                del buf[:1]
                continue
            if length > self.max_payload:
                self._reject(out, REJECT_LENGTH, 1)
                del buf[:1]
                continue
            total = HEADER_LEN + length + TRAILER_LEN
            if len(buf) < total:
                break
            if version != PROTOCOL_VERSION:
                # the header CRC holds, so the length is trustworthy: skip the whole frame
                self._reject(out, REJECT_VERSION, total)
                del buf[:total]
                continue
            body_end = HEADER_LEN + length
            if _CRC32.unpack_from(buf, body_end)[0] != crc32(bytes(buf[:body_end])):
                self._reject(out, REJECT_PAYLOAD_CRC, total)
                del buf[:total]
                continue
            if not _known_code(code):
                self._reject(out, REJECT_CODE, total)
                del buf[:total]
                continue
            _, _, code, seq, status, flags, _ = _HEADER.unpack_from(buf)
            out.append(Frame(code, seq, status, flags, bytes(buf[HEADER_LEN:body_end])))
            self.frames += 1
            del buf[:total]
        return out

    def _reject(self, out: list, reason: str, n: int) -> None:
        if n <= 0:
            return
        # merge consecutive rejections of the same kind (one resync = one record)
        if out and isinstance(out[-1], Rejected) and out[-1].reason == reason:
            out[-1] = Rejected(reason, out[-1].n_bytes + n)
        else:
            out.append(Rejected(reason, n))
            self.rejected += 1


# -- payloads -------------------------------------------------------------------------
def _f32_block(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype=">f4").tobytes()


def _f32_array(data: bytes, offset: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.frombuffer(data, dtype=">f4", count=count, offset=offset).astype(np.float64)
    return arr.reshape(shape)


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise ProtocolError("bad payload length", f"{what}: {len(data)} bytes, expected {size}")


def _finite(arr: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ProtocolError("non-finite value", what)


# PING response: device identity and capabilities.
_PING_RESP = struct.Struct(">BHBBBIdd")


@dataclass(frozen=True)
class DeviceInfo:
    version: int
    n_max: int
    dac_bits: int
    adc_bits: int
    slices: int
    boot_count: int
    device_time_s: float
    reference_gain: float


def pack_ping_response(info: DeviceInfo) -> bytes:
    _check_range("n_max", info.n_max, 1, MAX_N)
    for name in ("dac_bits", "adc_bits", "slices"):
        _check_range(name, getattr(info, name), 1, 32)
    _check_range("boot_count", info.boot_count, 0, 0xFFFFFFFF)
    return _PING_RESP.pack(
        info.version, info.n_max, info.dac_bits, info.adc_bits, info.slices, info.boot_count,
        info.device_time_s, info.reference_gain,
    )


def unpack_ping_response(data: bytes) -> DeviceInfo:
    _need(data, _PING_RESP.size, "PING response")
    info = DeviceInfo(*_PING_RESP.unpack(data))
    if not 1 <= info.n_max <= MAX_N:
        raise ProtocolError("field out of range", f"n_max {info.n_max}")
    return info


# PROGRAM command: a block of rows of the normalised matrix (|values| <= 1).
_PROG_CMD = struct.Struct(">HHH")


def pack_program(n: int, row0: int, rows: np.ndarray) -> bytes:
    _check_range("n", n, 1, MAX_N)
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != n or rows.shape[0] < 1:
        raise ValueError(f"rows must be (k, {n}), got {rows.shape}")
    _check_range("row0", row0, 0, n - 1)
    if row0 + rows.shape[0] > n:
        raise ValueError(f"rows {row0}..{row0 + rows.shape[0]} exceed n={n}")
    if not np.all(np.isfinite(rows)) or np.max(np.abs(rows)) > 1.0:
        raise ValueError("program values must be finite and within [-1, 1]")
    payload = _PROG_CMD.pack(n, row0, rows.shape[0]) + _f32_block(rows)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("program block too large; send fewer rows per frame")
    return payload


def program_rows_per_frame(n: int) -> int:
    return max(1, min(n, (MAX_PAYLOAD - _PROG_CMD.size) // (4 * n)))


def unpack_program(data: bytes) -> tuple[int, int, np.ndarray]:
    if len(data) < _PROG_CMD.size:
        raise ProtocolError("bad payload length", "PROGRAM header")
    n, row0, k = _PROG_CMD.unpack_from(data)
    if not (1 <= n <= MAX_N and k >= 1 and row0 + k <= n):
        raise ProtocolError("field out of range", f"PROGRAM n={n} row0={row0} rows={k}")
    _need(data, _PROG_CMD.size + 4 * n * k, "PROGRAM")
    rows = _f32_array(data, _PROG_CMD.size, n * k, (k, n))
    _finite(rows, "PROGRAM values")
    if np.max(np.abs(rows)) > 1.0:
        raise ProtocolError("field out of range", "PROGRAM values beyond [-1, 1]")
    return n, row0, rows


_PROG_RESP = struct.Struct(">HHIIffd")


@dataclass(frozen=True)
class ProgramResult:
    n: int
    rows_received: int
    codes_crc: int  # CRC-32 of the stored DAC codes (an SEU changes it)
    failed_cells: int  # cells that missed their write-verify target
    time_s: float
    energy_j: float
    device_time_s: float


def pack_program_response(r: ProgramResult) -> bytes:
    _check_range("n", r.n, 0, MAX_N)
    _check_range("rows_received", r.rows_received, 0, MAX_N)
    _check_range("codes_crc", r.codes_crc, 0, 0xFFFFFFFF)
    _check_range("failed_cells", r.failed_cells, 0, 0xFFFFFFFF)
    return _PROG_RESP.pack(r.n, r.rows_received, r.codes_crc, r.failed_cells, r.time_s, r.energy_j, r.device_time_s)


def unpack_program_response(data: bytes) -> ProgramResult:
    _need(data, _PROG_RESP.size, "PROGRAM response")
    r = ProgramResult(*_PROG_RESP.unpack(data))
    if r.rows_received > r.n or not (np.isfinite(r.time_s) and np.isfinite(r.energy_j)):
        raise ProtocolError("field out of range", "PROGRAM response")
    return r


# SOLVE command: settle on each right-hand-side column; column c's outputs are
# digitised over +-out_range[c] (the column's amplifier gain / ADC full scale).
_SOLVE_CMD = struct.Struct(">HHf")


def pack_solve(rhs: np.ndarray, out_range, settle_timeout_s: float) -> bytes:
    rhs = np.asarray(rhs, dtype=np.float64)
    if rhs.ndim != 2:
        raise ValueError(f"rhs must be (n, m), got {rhs.shape}")
    n, m = rhs.shape
    _check_range("n", n, 1, MAX_N)
    _check_range("m", m, 1, MAX_M)
    ranges = np.broadcast_to(np.asarray(out_range, dtype=np.float64), (m,))
    if not (np.all(np.isfinite(ranges)) and np.all(ranges > 0)):
        raise ValueError(f"out_range must be finite and > 0, got {out_range}")
    if not (np.isfinite(settle_timeout_s) and settle_timeout_s > 0):
        raise ValueError(f"settle_timeout_s must be finite and > 0, got {settle_timeout_s}")
    if not np.all(np.isfinite(rhs)) or (rhs.size and np.max(np.abs(rhs)) > 1.0):
        raise ValueError("rhs must be finite and within [-1, 1]")
    payload = _SOLVE_CMD.pack(n, m, settle_timeout_s) + _f32_block(ranges) + _f32_block(rhs)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("solve payload too large")
    return payload


def unpack_solve(data: bytes) -> tuple[np.ndarray, np.ndarray, float]:
    """(rhs (n, m), out_range (m,), settle_timeout_s)."""
    if len(data) < _SOLVE_CMD.size:
        raise ProtocolError("bad payload length", "SOLVE header")
    n, m, timeout = _SOLVE_CMD.unpack_from(data)
    if not (1 <= n <= MAX_N and 1 <= m <= MAX_M):
        raise ProtocolError("field out of range", f"SOLVE n={n} m={m}")
    if not (np.isfinite(timeout) and timeout > 0):
        raise ProtocolError("field out of range", "SOLVE settle_timeout")
    _need(data, _SOLVE_CMD.size + 4 * m + 4 * n * m, "SOLVE")
    ranges = _f32_array(data, _SOLVE_CMD.size, m, (m,))
    if not (np.all(np.isfinite(ranges)) and np.all(ranges > 0)):
        raise ProtocolError("field out of range", "SOLVE out_range")
    rhs = _f32_array(data, _SOLVE_CMD.size + 4 * m, n * m, (n, m))
    _finite(rhs, "SOLVE rhs")
    if np.max(np.abs(rhs)) > 1.0:
        raise ProtocolError("field out of range", "SOLVE rhs beyond [-1, 1]")
    return rhs, ranges, float(timeout)


_SOLVE_RESP = struct.Struct(">HHIfffdH")


@dataclass(frozen=True)
class SolveResult:
    n: int
    m: int
    codes_crc: int
    settle_time_s: float  # longest column
    time_s: float  # whole command (settling + conversions)
    energy_j: float
    device_time_s: float
    saturated: int  # outputs at a rail
    y: np.ndarray  # (n, m), in units of the normalised problem


def pack_solve_response(r: SolveResult) -> bytes:
    y = np.asarray(r.y, dtype=np.float64)
    if y.shape != (r.n, r.m):
        raise ValueError(f"y must be ({r.n}, {r.m}), got {y.shape}")
    _check_range("n", r.n, 1, MAX_N)
    _check_range("m", r.m, 1, MAX_M)
    _check_range("codes_crc", r.codes_crc, 0, 0xFFFFFFFF)
    _check_range("saturated", r.saturated, 0, 0xFFFF)
    head = _SOLVE_RESP.pack(r.n, r.m, r.codes_crc, r.settle_time_s, r.time_s, r.energy_j, r.device_time_s, r.saturated)
    return head + _f32_block(y)


def unpack_solve_response(data: bytes) -> SolveResult:
    if len(data) < _SOLVE_RESP.size:
        raise ProtocolError("bad payload length", "SOLVE response header")
    n, m, crc, settle, t, e, dev_t, sat = _SOLVE_RESP.unpack_from(data)
    if not (1 <= n <= MAX_N and 1 <= m <= MAX_M):
        raise ProtocolError("field out of range", f"SOLVE response n={n} m={m}")
    _need(data, _SOLVE_RESP.size + 4 * n * m, "SOLVE response")
    y = _f32_array(data, _SOLVE_RESP.size, n * m, (n, m))
    return SolveResult(n, m, crc, settle, t, e, dev_t, sat, y)


# CALIBRATE response: the reference cells read against their nominal conductance.
_CAL_RESP = struct.Struct(">fdffd")


@dataclass(frozen=True)
class CalibrationResult:
    gain: float  # mean measured / nominal reference conductance
    reference_age_s: float  # time since the reference cells were programmed
    time_s: float
    energy_j: float
    device_time_s: float


def pack_calibrate_response(r: CalibrationResult) -> bytes:
    return _CAL_RESP.pack(r.gain, r.reference_age_s, r.time_s, r.energy_j, r.device_time_s)


def unpack_calibrate_response(data: bytes) -> CalibrationResult:
    _need(data, _CAL_RESP.size, "CALIBRATE response")
    r = CalibrationResult(*_CAL_RESP.unpack(data))
    if not (np.isfinite(r.gain) and np.isfinite(r.reference_age_s) and r.reference_age_s >= 0):
        raise ProtocolError("field out of range", "CALIBRATE response")
    return r


# Responses that only report the cost of the operation (REFRESH_REFERENCE, RESET, TIME).
_COST_RESP = struct.Struct(">ffdI")


@dataclass(frozen=True)
class CostResult:
    time_s: float
    energy_j: float
    device_time_s: float
    boot_count: int


def pack_cost_response(r: CostResult) -> bytes:
    _check_range("boot_count", r.boot_count, 0, 0xFFFFFFFF)
    return _COST_RESP.pack(r.time_s, r.energy_j, r.device_time_s, r.boot_count)


def unpack_cost_response(data: bytes) -> CostResult:
    _need(data, _COST_RESP.size, "cost response")
    return CostResult(*_COST_RESP.unpack(data))


_TIME_CMD = struct.Struct(">d")


def pack_time(host_time_s: float) -> bytes:
    if not np.isfinite(host_time_s) or host_time_s < 0:
        raise ValueError(f"host_time_s must be finite and >= 0, got {host_time_s}")
    return _TIME_CMD.pack(host_time_s)


def unpack_time(data: bytes) -> float:
    _need(data, _TIME_CMD.size, "TIME")
    (t,) = _TIME_CMD.unpack(data)
    if not np.isfinite(t) or t < 0:
        raise ProtocolError("field out of range", "TIME host_time_s")
    return float(t)


def pack_empty() -> bytes:
    return b""


def unpack_empty(data: bytes, what: str = "command") -> None:
    _need(data, 0, what)
