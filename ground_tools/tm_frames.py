"""TM Space Data Link Protocol, ground side (CCSDS 132.0-B): received octets in, packets out.

The decoder finds each frame behind its Attached Sync Marker (garbage between frames is
skipped), accepts it only if its FECF checks, demultiplexes by virtual channel and
rebuilds the packets that span frames. Frame counts reveal lost frames: the master
channel count is reported as gaps, the VC count decides when a half-built packet can no
longer be completed. Such a packet is dropped and the channel waits for the next First
Header Pointer; a packet whose length disagrees with the next pointer is dropped too, so
what comes out is always a packet as sent (up to the FECF's residual error rate).

Limits: 256 or more consecutive lost frames alias the 8-bit counts; a frame repeating the
previous master channel count is taken for a duplicate and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spacepackets.ccsds.tm_frame import TmFramePrimaryHeader

from flight_sw.tmtc.tm_frames import (
    ASM,
    FECF_BYTES,
    FHP_IDLE,
    FHP_NO_PACKET_START,
    IDLE_APID,
    MAX_FRAME_BYTES,
    MAX_PACKET_BYTES,
    OCF_BYTES,
    PRIMARY_HEADER_BYTES,
    SPACE_PACKET_HEADER_BYTES,
    fecf,
    packet_length,
)


@dataclass
class TmLinkStats:
    """What the link did to the frames, for the pass report."""

    frames: int = 0  # frames of this spacecraft whose FECF checked
    bad_crc: int = 0  # ASM-marked candidates whose FECF failed (corrupted or false syncs)
    foreign_frames: int = 0  # good frames of another spacecraft, version or format
    duplicate_frames: int = 0  # repeated the previous master channel count
    idle_frames: int = 0  # frames with the idle-data First Header Pointer
    gaps: int = 0  # breaks in the master channel frame count
    frames_lost: int = 0  # frames missing by the master channel frame count
    vc_frames_lost: dict[int, int] = field(default_factory=dict)
    packets: int = 0  # packets delivered (idle packets excluded)
    idle_packets: int = 0
    packets_dropped: int = 0  # partial packets discarded at a gap or an inconsistency
    inconsistent: int = 0  # good frames whose pointer or packet headers did not fit
    bytes_skipped: int = 0  # octets outside accepted frames and their markers


@dataclass
class TmDecodeResult:
    packets: dict[int, list[bytes]]
    stats: TmLinkStats
    last_clcw: bytes | None
    #: (vcid, packet) of every channel, in the order the frames completing them arrived.
    in_order: list[tuple[int, bytes]] = field(default_factory=list)


class _VcReassembler:
    """One virtual channel's packet stream, rebuilt frame by frame."""

    def __init__(self, vcid: int, stats: TmLinkStats, max_packet_bytes: int):
        self.vcid = vcid
        self.stats = stats
        self.max_packet_bytes = max_packet_bytes
        self.count: int | None = None
        self.synced = False  # the next data field continues the stream where we stand
        self.partial = bytearray()
        self.need = 0  # length of the packet in `partial`, once its header is complete
        self.bad = False

    def frame(self, count: int, fhp: int, data: bytes, out: list[bytes]) -> None:
        st = self.stats
        if self.count is not None and count != (self.count + 1) & 0xFF:
            st.vc_frames_lost[self.vcid] = (st.vc_frames_lost.get(self.vcid, 0)
                                            + ((count - self.count - 1) & 0xFF))
            self._lose()
        self.count = count
        if fhp == FHP_IDLE:
            return
        size = len(data)
        if fhp != FHP_NO_PACKET_START and fhp >= size:
            st.inconsistent += 1
            self._lose()
            return
        limit = size if fhp == FHP_NO_PACKET_START else fhp
        if self.synced and self.partial:
            pos = self._take(data, 0, limit)
            done = self._complete()
            if self.bad or (done and pos != limit) or (not done and fhp != FHP_NO_PACKET_START):
                st.inconsistent += 1
                self._lose()
            elif done:
                self._emit(out)
            else:
                return
        elif self.synced and fhp != 0:
            st.inconsistent += 1
            self.synced = False
        if fhp == FHP_NO_PACKET_START:
            return
        self.synced = True
        pos = fhp
        while pos < size:
            pos = self._take(data, pos, size)
            if self.bad:
                st.inconsistent += 1
                self._lose()
                return
            if not self._complete():
                return
            self._emit(out)

    def _take(self, data: bytes, pos: int, end: int) -> int:
        """Append octets of data[pos:end] to the packet in progress, up to its end."""
        if len(self.partial) < SPACE_PACKET_HEADER_BYTES:
            k = min(SPACE_PACKET_HEADER_BYTES - len(self.partial), end - pos)
            self.partial += data[pos : pos + k]
            pos += k
            if len(self.partial) < SPACE_PACKET_HEADER_BYTES:
                return pos
            self.need = packet_length(self.partial)
            if self.partial[0] >> 5 != 0 or self.need > self.max_packet_bytes:
                self.bad = True  # version must be '000' (133.0-B §4.1.3.2)
                return pos
        k = min(self.need - len(self.partial), end - pos)
        self.partial += data[pos : pos + k]
        return pos + k

    def _complete(self) -> bool:
        return self.need > 0 and len(self.partial) == self.need

    def _is_idle(self) -> bool:
        p = self.partial
        return len(p) >= 2 and ((p[0] & 0x07) << 8 | p[1]) == IDLE_APID

    def _emit(self, out: list[bytes]) -> None:
        if self._is_idle():
            self.stats.idle_packets += 1
        else:
            out.append(bytes(self.partial))
            self.stats.packets += 1
        self.partial.clear()
        self.need = 0

    def _lose(self) -> None:
        if self.partial and not (len(self.partial) >= SPACE_PACKET_HEADER_BYTES and self._is_idle()):
            self.stats.packets_dropped += 1
        self.partial.clear()
        self.need = 0
        self.bad = False
        self.synced = False


class TmFrameDecoder:
    """Streaming decoder of one master channel: `feed` octets as they arrive, `flush` at the end.

    `frame_bytes` is the mission's fixed frame length (a managed parameter, not on the
    link); `spacecraft_id` None accepts any spacecraft.
    """

    def __init__(self, frame_bytes: int, spacecraft_id: int | None = None,
                 max_packet_bytes: int = MAX_PACKET_BYTES):
        least = PRIMARY_HEADER_BYTES + FECF_BYTES + 1
        if not least <= frame_bytes <= MAX_FRAME_BYTES:
            raise ValueError(f"frame_bytes must be {least}..{MAX_FRAME_BYTES} octets, got {frame_bytes}")
        self.frame_bytes = frame_bytes
        self.spacecraft_id = spacecraft_id
        self.max_packet_bytes = max_packet_bytes
        self.stats = TmLinkStats()
        self.last_clcw: bytes | None = None
        self._buf = bytearray()
        self._mc: int | None = None
        self._vcs: dict[int, _VcReassembler] = {}
        self._order: list[tuple[int, bytes]] | None = None

    def feed_in_order(self, data: bytes | bytearray | memoryview, final: bool = False) -> list[tuple[int, bytes]]:
        """Like `feed` (then `flush` when `final`), but (vcid, packet) across channels in the
        order the frames completing them arrived: the order the spacecraft sent them."""
        self._order = order = []
        try:
            self.feed(data)
            if final:
                self.flush()
        finally:
            self._order = None
        return order

    def feed(self, data: bytes | bytearray | memoryview) -> dict[int, list[bytes]]:
        """Decode what `data` completes; returns the new packets per virtual channel."""
        self._buf += data
        return self._scan(final=False)

    def flush(self) -> dict[int, list[bytes]]:
        """End of stream: give up on candidates cut short (a false sync may hide a frame)."""
        return self._scan(final=True)

    def _scan(self, final: bool) -> dict[int, list[bytes]]:
        out: dict[int, list[bytes]] = {}
        buf, st, pos = self._buf, self.stats, 0
        while True:
            at = buf.find(ASM, pos)
            if at < 0:
                keep = len(buf) if final else max(pos, len(buf) - (len(ASM) - 1))
                st.bytes_skipped += keep - pos
                pos = keep
                break
            st.bytes_skipped += at - pos
            pos = at
            end = at + len(ASM) + self.frame_bytes
            if end > len(buf):
                if not final:
                    break
                st.bytes_skipped += len(ASM)
                pos = at + len(ASM)
                continue
            frame = bytes(buf[at + len(ASM) : end])
            if fecf(frame) != 0:  # the CRC over data and FECF leaves no remainder
                st.bad_crc += 1
                st.bytes_skipped += len(ASM)
                pos = at + len(ASM)
                continue
            self._frame(frame, out)
            pos = end
        del buf[:pos]
        return out

    def _frame(self, frame: bytes, out: dict[int, list[bytes]]) -> None:
        st = self.stats
        h = TmFramePrimaryHeader.unpack(frame)
        status = h.frame_datafield_status
        mcid = h.master_channel_id
        if (mcid.transfer_frame_version != 0 or status.secondary_header_flag or status.sync_flag
                or self.spacecraft_id not in (None, mcid.spacecraft_id)):
            st.foreign_frames += 1
            return
        mc = h.master_ch_frame_count
        if self._mc is not None and mc != (self._mc + 1) & 0xFF:
            if mc == self._mc:
                st.duplicate_frames += 1
                return
            st.gaps += 1
            st.frames_lost += (mc - self._mc - 1) & 0xFF
        self._mc = mc
        st.frames += 1
        data_end = self.frame_bytes - FECF_BYTES
        if h.ocf_flag:
            data_end -= OCF_BYTES
            self.last_clcw = frame[data_end : data_end + OCF_BYTES]
        fhp = status.first_header_pointer
        if fhp == FHP_IDLE:
            st.idle_frames += 1
        vc = self._vcs.get(h.vc_id)
        if vc is None:
            vc = self._vcs[h.vc_id] = _VcReassembler(h.vc_id, st, self.max_packet_bytes)
        got = out.setdefault(h.vc_id, [])
        before = len(got)
        vc.frame(h.vc_frame_count, fhp, frame[PRIMARY_HEADER_BYTES:data_end], got)
        if self._order is not None:
            self._order.extend((h.vc_id, p) for p in got[before:])
        if not got:
            del out[h.vc_id]


def decode_tm_stream(data: bytes, frame_bytes: int, spacecraft_id: int | None = None) -> TmDecodeResult:
    """Decode a whole recorded pass."""
    dec = TmFrameDecoder(frame_bytes, spacecraft_id)
    in_order = dec.feed_in_order(data, final=True)
    packets: dict[int, list[bytes]] = {}
    for vcid, packet in in_order:
        packets.setdefault(vcid, []).append(packet)
    return TmDecodeResult(packets, dec.stats, dec.last_clcw, in_order)
