"""TM Space Data Link Protocol, onboard side (CCSDS 132.0-B): packets in, framed octets out.

Space packets queue per virtual channel as a byte stream; each fixed-length TM Transfer
Frame takes the next data-field's worth of one channel's stream, so a packet may span
frames and the First Header Pointer tells the ground where the first packet header of the
frame starts. The scheduler fills a minor frame's budget of frames by strict priority
(events and verification, then housekeeping, then playback) and sends an Only-Idle-Data
frame when nothing is pending, so a synchronous link never starves. Every frame carries
the CLCW in its Operational Control Field and a CRC-16 Frame Error Control Field, and
goes out behind the 0x1ACFFC1D Attached Sync Marker (131.0-B). No pseudo-randomisation or
channel coding here: that is the radio's job.

Memory is fixed at construction: one ring per channel, one frame buffer (ASM + frame),
one idle-pattern buffer; `buffer_bytes` sizes them for the start-up memory plan, and the
constructor takes them preallocated (`buffers`, keyed like `buffer_bytes`) or allocates
them itself. `state_dict`/`load_state_dict` carry the counts and the queued octets across
a snapshot.

spacepackets (0.32) packs the primary header. Its `TmFramePrimaryHeader` does not range-
check fields (a VCID of 8 silently changes the SCID, a SCID above 1023 the version bits, a
pointer above 0x7FF is lost), so the constructor checks them; its `TmTransferFrame` refuses
the legal 2048-octet length (`length < 2048`) and leaves the FECF to the caller, so frames
are assembled in our buffer around the packed header.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping, Sequence

from spacepackets.ccsds.spacepacket import PacketType, SpacePacketHeader
from spacepackets.ccsds.tm_frame import (
    MasterChannelId,
    TmFramePrimaryHeader,
    TransferFrameDataFieldStatus,
)

#: Attached Sync Marker for uncoded and RS/convolutional-coded frames (131.0-B §9).
ASM = bytes.fromhex("1ACFFC1D")
PRIMARY_HEADER_BYTES = 6
OCF_BYTES = 4
FECF_BYTES = 2
#: Largest TM Transfer Frame (132.0-B §4.1.1, limited by 131.0-B coding).
MAX_FRAME_BYTES = 2048
#: First Header Pointer when no packet starts in the frame / the frame holds only idle data
#: (132.0-B §4.1.2.7.6).
FHP_NO_PACKET_START = 0x7FF
FHP_IDLE = 0x7FE
#: Segment Length Identifier required when the Synchronization Flag is '0' (§4.1.2.7.5).
SEGMENT_LENGTH_ID_PACKETS = 0b11
#: Space packet limits (133.0-B §4.1.3): 6-octet primary header, at least one data octet.
SPACE_PACKET_HEADER_BYTES = 6
MIN_PACKET_BYTES = 7
MAX_PACKET_BYTES = 65542
#: APID of idle packets (133.0-B: all ones); the ground discards them.
IDLE_APID = 0x7FF
#: Idle data octet: alternating bits keep a non-randomised link's bit synchroniser locked.
IDLE_OCTET = 0x55

VC_HK = 0
VC_EVENTS = 1
VC_PLAYBACK = 2
VC_IDLE = 7
#: (virtual channel, ring bytes) in priority order: events and verification before
#: housekeeping before playback of stored TM.
DEFAULT_CHANNELS: tuple[tuple[int, int], ...] = ((VC_EVENTS, 8192), (VC_HK, 8192), (VC_PLAYBACK, 65536))


def fecf(data: bytes | bytearray | memoryview) -> int:
    """CRC-16 of 132.0-B §4.1.6: G(X) = X^16+X^12+X^5+1, register preset to ones, no final XOR."""
    return binascii.crc_hqx(data, 0xFFFF)


def packet_length(header: bytes | bytearray | memoryview) -> int:
    """Total octets of a space packet from its primary header's Packet Data Length field."""
    return ((header[4] << 8) | header[5]) + MIN_PACKET_BYTES


def data_field_bytes(frame_bytes: int, with_ocf: bool = True) -> int:
    """Octets of packet data one frame carries (no secondary header)."""
    return frame_bytes - PRIMARY_HEADER_BYTES - FECF_BYTES - (OCF_BYTES if with_ocf else 0)


def buffer_bytes(frame_bytes: int, channels: Sequence[tuple[int, int]] = DEFAULT_CHANNELS,
                 with_ocf: bool = True) -> dict[str, int]:
    """Bytes `TmDownlink` allocates, per buffer: the memory plan and the constructor agree."""
    out = {f"vc{vcid}_ring": capacity for vcid, capacity in channels}
    out["frame"] = len(ASM) + frame_bytes
    out["idle_pattern"] = data_field_bytes(frame_bytes, with_ocf)
    return out


class VcPacketQueue:
    """One virtual channel: a byte ring of whole packets, read out one data field at a time.

    When the ring runs dry inside a data field the rest is an idle packet; if fewer than
    seven octets are left it spills into the channel's next frame, which is legal (packets
    may span frames) and costs at most six octets.
    """

    def __init__(self, vcid: int, capacity_bytes: int, idle_pattern: memoryview, ring=None):
        """`ring`: a preallocated writable buffer of `capacity_bytes` octets (None: allocate)."""
        if capacity_bytes < MIN_PACKET_BYTES:
            raise ValueError(
                f"vc{vcid} capacity_bytes must be at least {MIN_PACKET_BYTES}, got {capacity_bytes}")
        self.vcid = vcid
        self.capacity_bytes = capacity_bytes
        self._view = _octets(ring, capacity_bytes, f"vc{vcid}_ring") if ring is not None else \
            memoryview(bytearray(capacity_bytes))
        self._idle = idle_pattern
        self._idle_header = bytearray(SPACE_PACKET_HEADER_BYTES)
        self._header_scratch = bytearray(SPACE_PACKET_HEADER_BYTES)
        self._head = 0
        self._used = 0
        self._rest = 0  # octets of the packet in progress not yet framed (0: at a boundary)
        self._idle_len = 0  # length of the idle packet in progress, 0 when it is a queued one
        self.packets = 0
        self.refused = 0

    @property
    def pending_bytes(self) -> int:
        """Queued packet octets not yet framed (idle fill is never pending)."""
        return self._used

    def push(self, packet: bytes | bytearray | memoryview) -> bool:
        """Queue one whole space packet; False (and counted) when the ring has no room."""
        n = len(packet)
        if not MIN_PACKET_BYTES <= n <= MAX_PACKET_BYTES:
            raise ValueError(f"vc{self.vcid} packet length must be {MIN_PACKET_BYTES}.."
                             f"{MAX_PACKET_BYTES} octets, got {n}")
        if packet_length(packet) != n:
            raise ValueError(f"vc{self.vcid} packet data length field says {packet_length(packet)} "
                             f"octets in total, packet has {n}")
        if n > self.capacity_bytes - self._used:
            self.refused += 1
            return False
        tail = (self._head + self._used) % self.capacity_bytes
        first = min(n, self.capacity_bytes - tail)
        self._view[tail : tail + first] = packet[:first]
        self._view[: n - first] = packet[first:]
        self._used += n
        self.packets += 1
        return True

    def read_data_field(self, out: memoryview) -> int:
        """Fill `out` with the next octets of the stream; return the First Header Pointer."""
        size = len(out)
        pos = 0
        fhp = FHP_NO_PACKET_START
        while pos < size:
            if self._rest == 0:
                if fhp == FHP_NO_PACKET_START:
                    fhp = pos
                if self._used:
                    self._rest = packet_length(self._peek_header())
                    self._idle_len = 0
                else:
                    self._start_idle_packet(max(size - pos, MIN_PACKET_BYTES))
            n = min(self._rest, size - pos)
            if self._idle_len:
                self._copy_idle(out[pos : pos + n])
            else:
                self._pop(out[pos : pos + n])
            self._rest -= n
            pos += n
        return fhp

    def _peek_header(self) -> bytearray:
        h = self._header_scratch
        for i in range(SPACE_PACKET_HEADER_BYTES):
            h[i] = self._view[(self._head + i) % self.capacity_bytes]
        return h

    def state_dict(self) -> dict:
        """Counts, the packet in progress and the queued octets (hex), oldest first."""
        first = min(self._used, self.capacity_bytes - self._head)
        pending = bytes(self._view[self._head : self._head + first]) + bytes(self._view[: self._used - first])
        return {"pending": pending.hex(), "rest": self._rest, "idle_len": self._idle_len,
                "packets": self.packets, "refused": self.refused}

    def load_state_dict(self, s: dict) -> None:
        pending = bytes.fromhex(s["pending"])
        if len(pending) > self.capacity_bytes:
            raise ValueError(f"vc{self.vcid} state: {len(pending)} pending octets exceed the ring's "
                             f"{self.capacity_bytes}")
        self._view[: len(pending)] = pending
        self._head, self._used = 0, len(pending)
        self._rest, self._idle_len = s["rest"], s["idle_len"]
        self.packets, self.refused = s["packets"], s["refused"]
        if self._idle_len:
            self._start_idle_packet(self._idle_len)
            self._rest = s["rest"]

    def _pop(self, out: memoryview) -> None:
        n = len(out)
        first = min(n, self.capacity_bytes - self._head)
        out[:first] = self._view[self._head : self._head + first]
        out[first:] = self._view[: n - first]
        self._head = (self._head + n) % self.capacity_bytes
        self._used -= n

    def _start_idle_packet(self, length: int) -> None:
        header = SpacePacketHeader(PacketType.TM, apid=IDLE_APID, seq_count=0,
                                   data_len=length - MIN_PACKET_BYTES)
        self._idle_header[:] = header.pack()
        self._idle_len = self._rest = length

    def _copy_idle(self, out: memoryview) -> None:
        offset = self._idle_len - self._rest
        in_header = max(0, min(len(out), SPACE_PACKET_HEADER_BYTES - offset))
        out[:in_header] = self._idle_header[offset : offset + in_header]
        out[in_header:] = self._idle[: len(out) - in_header]


class TmFramer:
    """Wraps a data field into a TM Transfer Frame behind the ASM; owns the frame counters.

    The caller writes `data_field` in place and calls `seal`; the returned view is the
    ASM and the frame, valid until the next `seal`.
    """

    def __init__(self, spacecraft_id: int, frame_bytes: int, clcw: Callable[[], bytes] | None,
                 buffer=None):
        """`buffer`: a preallocated writable buffer of ASM + frame octets (None: allocate)."""
        if not 0 <= spacecraft_id <= 0x3FF:
            raise ValueError(f"spacecraft_id must be 0..1023 (10 bits), got {spacecraft_id}")
        with_ocf = clcw is not None
        least = PRIMARY_HEADER_BYTES + FECF_BYTES + (OCF_BYTES if with_ocf else 0) + MIN_PACKET_BYTES
        if not least <= frame_bytes <= MAX_FRAME_BYTES:
            raise ValueError(f"frame_bytes must be {least}..{MAX_FRAME_BYTES} octets, got {frame_bytes}")
        self.frame_bytes = frame_bytes
        self._clcw = clcw
        self.buffer_bytes = len(ASM) + frame_bytes
        self._view = _octets(buffer, self.buffer_bytes, "frame") if buffer is not None else \
            memoryview(bytearray(self.buffer_bytes))
        self._view[: len(ASM)] = ASM
        self._frame = self._view[len(ASM) :]
        start = PRIMARY_HEADER_BYTES
        self._ocf_at = start + data_field_bytes(frame_bytes, with_ocf)
        self.data_field = self._frame[start : self._ocf_at]
        self._status = TransferFrameDataFieldStatus(
            secondary_header_flag=False, sync_flag=False, packet_order_flag=False,
            segment_len_id=SEGMENT_LENGTH_ID_PACKETS, first_header_pointer=0)
        self._header = TmFramePrimaryHeader(
            MasterChannelId(transfer_frame_version=0, spacecraft_id=spacecraft_id), vc_id=0,
            ocf_flag=with_ocf, master_ch_frame_count=0, vc_frame_count=0,
            frame_datafield_status=self._status)
        self.mc_count = 0
        self.vc_counts = [0] * 8

    def seal(self, vcid: int, fhp: int) -> memoryview:
        """Write header, OCF and FECF around `data_field`, advance the counts (mod 256)."""
        h = self._header
        h.vc_id = vcid
        h.master_ch_frame_count = self.mc_count
        h.vc_frame_count = self.vc_counts[vcid]
        self._status.first_header_pointer = fhp
        self._frame[:PRIMARY_HEADER_BYTES] = h.pack()
        if self._clcw is not None:
            word = self._clcw()
            if len(word) != OCF_BYTES:
                raise ValueError(f"clcw must be {OCF_BYTES} octets, got {len(word)}")
            self._frame[self._ocf_at : self._ocf_at + OCF_BYTES] = word
        crc_at = self.frame_bytes - FECF_BYTES
        crc = fecf(self._frame[:crc_at])
        self._frame[crc_at] = crc >> 8
        self._frame[crc_at + 1] = crc & 0xFF
        self.mc_count = (self.mc_count + 1) & 0xFF
        self.vc_counts[vcid] = (self.vc_counts[vcid] + 1) & 0xFF
        return self._view.toreadonly()


class TmDownlink:
    """Virtual channel queues and the frame scheduler of one master channel.

    `send(n, sink)` is called once per minor frame with the frames the link carries in it.
    Priority is strict: a busy event channel delays housekeeping, which is why events are
    rate-limited upstream (packets.py).
    """

    def __init__(self, spacecraft_id: int, frame_bytes: int,
                 clcw: Callable[[], bytes] | None,
                 channels: Sequence[tuple[int, int]] = DEFAULT_CHANNELS,
                 idle_vcid: int = VC_IDLE, buffers: Mapping[str, object] | None = None):
        """`buffers`: preallocated buffers named and sized as `buffer_bytes` gives them
        (the start-up memory plan); None allocates them here."""
        vcids = [vcid for vcid, _ in channels]
        for vcid in [*vcids, idle_vcid]:
            if not 0 <= vcid <= 7:
                raise ValueError(f"virtual channel id must be 0..7 (3 bits), got {vcid}")
        if len(set(vcids)) != len(vcids) or idle_vcid in vcids:
            raise ValueError(f"channels must name distinct VCs other than idle_vcid {idle_vcid}, "
                             f"got {vcids}")
        buffers = buffers or {}
        self.framer = TmFramer(spacecraft_id, frame_bytes, clcw, buffers.get("frame"))
        n_idle = len(self.framer.data_field)
        idle = buffers.get("idle_pattern")
        self._idle = _octets(idle, n_idle, "idle_pattern") if idle is not None else memoryview(bytearray(n_idle))
        self._idle[:] = bytes([IDLE_OCTET]) * n_idle
        idle_view = self._idle
        self.queues = [VcPacketQueue(vcid, capacity, idle_view, buffers.get(f"vc{vcid}_ring"))
                       for vcid, capacity in channels]
        self._by_vc = {q.vcid: q for q in self.queues}
        self.idle_vcid = idle_vcid
        self.frames_sent = 0
        self.idle_frames = 0
        self.memory_bytes = (len(self._idle) + self.framer.buffer_bytes
                             + sum(q.capacity_bytes for q in self.queues))

    def push(self, vcid: int, packet: bytes | bytearray | memoryview) -> bool:
        """Queue a whole space packet on a virtual channel; False when its ring is full."""
        queue = self._by_vc.get(vcid)
        if queue is None:
            raise ValueError(f"vcid must be one of {sorted(self._by_vc)}, got {vcid}")
        return queue.push(packet)

    def send(self, frames: int, sink: Callable[[memoryview], None], fill_idle: bool = True) -> int:
        """Emit `frames` ASM-prefixed frames to `sink` (the view is reused: copy to keep it).

        Idle frames fill the slots nothing is pending for, unless `fill_idle` is False (an
        asynchronous link). Returns the frames that carried packet data.
        """
        if frames < 0:
            raise ValueError(f"frames must be >= 0, got {frames}")
        carried = 0
        for _ in range(frames):
            queue = next((q for q in self.queues if q.pending_bytes), None)
            if queue is not None:
                fhp = queue.read_data_field(self.framer.data_field)
                sink(self.framer.seal(queue.vcid, fhp))
                carried += 1
            elif fill_idle:
                self.framer.data_field[:] = self._idle
                sink(self.framer.seal(self.idle_vcid, FHP_IDLE))
                self.idle_frames += 1
            else:
                break
            self.frames_sent += 1
        return carried

    @property
    def pending_bytes(self) -> int:
        """Queued packet octets not yet framed, all channels."""
        return sum(q.pending_bytes for q in self.queues)

    def state_dict(self) -> dict:
        """Frame counts and every channel's queue: what a snapshot needs to continue identically."""
        f = self.framer
        return {"mc_count": f.mc_count, "vc_counts": list(f.vc_counts), "frames_sent": self.frames_sent,
                "idle_frames": self.idle_frames, "queues": {str(q.vcid): q.state_dict() for q in self.queues}}

    def load_state_dict(self, s: dict) -> None:
        if sorted(s["queues"]) != sorted(str(q.vcid) for q in self.queues):
            raise ValueError(f"tm link state: channels {sorted(s['queues'])}, this downlink has "
                             f"{sorted(str(q.vcid) for q in self.queues)}")
        self.framer.mc_count = s["mc_count"]
        self.framer.vc_counts[:] = s["vc_counts"]
        self.frames_sent, self.idle_frames = s["frames_sent"], s["idle_frames"]
        for q in self.queues:
            q.load_state_dict(s["queues"][str(q.vcid)])


def _octets(buffer, size: int, name: str) -> memoryview:
    """A preallocated buffer as a flat octet view, refused unless it has exactly `size` octets."""
    view = memoryview(buffer).cast("B")
    if view.readonly or view.nbytes != size:
        raise ValueError(f"tm link buffer {name}: need a writable buffer of {size} octets, got "
                         f"{view.nbytes}{' (read-only)' if view.readonly else ''}")
    return view
