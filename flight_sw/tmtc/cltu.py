"""CLTUs: TC synchronisation and channel coding (CCSDS 231.0-B).

A CLTU is the start sequence 0xEB90, BCH(63,56) codeblocks and the tail sequence
0xC5C5C5C5C5C5C579. Each codeblock is 7 information octets and one octet of 7 parity bits
(complemented) plus a filler bit 0; the last codeblock is padded with 0x55 fill octets.
The optional pseudo-randomiser (231.0-B section 6, h(x) = x^8+x^6+x^4+x^3+x^2+x+1, all-ones
seed) is XORed onto the frame before coding so long runs of equal bits still give the
receiver bit transitions.

`decode_cltu` runs in the two modes 231.0-B allows: detection (a codeblock with a parity
error ends the CLTU) and single-error correction. It never raises: arbitrary bytes from
the radio give (None, reason). The frame is cut from the decoded octets by its own length
field; whatever follows is fill.
"""

from __future__ import annotations

START_SEQUENCE = b"\xeb\x90"
TAIL_SEQUENCE = bytes.fromhex("C5C5C5C5C5C5C579")
FILL_OCTET = 0x55
INFO_OCTETS = 7
CODEBLOCK_OCTETS = 8
#: Generator g(x) = x^7 + x^6 + x^2 + 1 (231.0-B 3.2), without its x^7 term.
_G_LOW = 0b1000101
#: Longest frame a CLTU carries (232.0-B frame cap), octets.
MAX_FRAME_OCTETS = 1024
_MAX_INFO_OCTETS = -(-MAX_FRAME_OCTETS // INFO_OCTETS) * INFO_OCTETS


def _parity7(info: bytes) -> int:
    """Remainder of info(x) * x^7 divided by g(x): the 7 uncomplemented parity bits."""
    reg = 0
    for octet in info:
        for bit in range(7, -1, -1):
            feedback = ((reg >> 6) & 1) ^ ((octet >> bit) & 1)
            reg = (reg << 1) & 0x7F
            if feedback:
                reg ^= _G_LOW
    return reg


def bch_parity_octet(info: bytes) -> int:
    """The 8th octet of a codeblock: complemented parity bits, then filler bit 0."""
    if len(info) != INFO_OCTETS:
        raise ValueError(f"info: {len(info)} octets, expected {INFO_OCTETS}")
    return ((~_parity7(info)) & 0x7F) << 1


def _syndrome(block: bytes) -> int:
    return _parity7(block[:INFO_OCTETS]) ^ ((~block[INFO_OCTETS] >> 1) & 0x7F)


def _single_error_table() -> dict[int, tuple[int, int]]:
    """Syndrome -> (octet, bit mask) for each of the 63 single-bit errors of a codeblock."""
    table: dict[int, tuple[int, int]] = {}
    for pos in range(63):  # 56 information bits, then 7 parity bits; the filler is not coded
        octet, mask = pos // 8, 0x80 >> (pos % 8)
        block = bytearray(INFO_OCTETS)
        block.append(bch_parity_octet(bytes(block)))
        block[octet] ^= mask
        table[_syndrome(bytes(block))] = (octet, mask)
    assert len(table) == 63, "BCH(63,56) single errors must have distinct syndromes"
    return table


_CORRECTABLE = _single_error_table()


def _randomiser_sequence(n_octets: int) -> bytes:
    """The TC pseudo-random sequence (231.0-B section 6): first octets FF 39 9E 5A 68."""
    reg, out = 0xFF, bytearray()
    for _ in range(n_octets):
        octet = 0
        for _ in range(8):
            bit = reg & 1
            octet = (octet << 1) | bit
            # Fibonacci LFSR for h(x) = x^8+x^6+x^4+x^3+x^2+x+1.
            fb = (reg ^ (reg >> 1) ^ (reg >> 2) ^ (reg >> 3) ^ (reg >> 4) ^ (reg >> 6)) & 1
            reg = (reg >> 1) | (fb << 7)
        out.append(octet)
    return bytes(out)


RANDOMISER_SEQUENCE = _randomiser_sequence(_MAX_INFO_OCTETS)


def randomise(data: bytes) -> bytes:
    """XOR with the pseudo-random sequence; applying it twice gives the data back."""
    if len(data) > len(RANDOMISER_SEQUENCE):
        raise ValueError(f"data: {len(data)} octets, expected at most {_MAX_INFO_OCTETS}")
    return bytes(a ^ b for a, b in zip(data, RANDOMISER_SEQUENCE[: len(data)], strict=True))


def encode_cltu(frame: bytes, *, randomised: bool = False) -> bytes:
    """Start sequence, BCH codeblocks (0x55 fill) and tail sequence around one frame."""
    if not 0 < len(frame) <= MAX_FRAME_OCTETS:
        raise ValueError(f"frame: {len(frame)} octets, expected 1..{MAX_FRAME_OCTETS}")
    data = randomise(frame) if randomised else bytes(frame)
    data += bytes((FILL_OCTET,)) * (-len(data) % INFO_OCTETS)
    out = bytearray(START_SEQUENCE)
    for i in range(0, len(data), INFO_OCTETS):
        info = data[i : i + INFO_OCTETS]
        out += info
        out.append(bch_parity_octet(info))
    return bytes(out + TAIL_SEQUENCE)


def decode_cltu(
    cltu: bytes, *, randomised: bool = False, correct_errors: bool = False
) -> tuple[bytes | None, str]:
    """(frame octets, "ok...") or (None, reason). Never raises on arbitrary input.

    Detection mode rejects the first codeblock with a non-zero syndrome and ends the CLTU
    there; with `correct_errors` a single-bit error is repaired and any other error ends it.
    """
    try:
        cltu = bytes(cltu)
    except (TypeError, ValueError):
        return None, "input is not a byte string"
    if cltu[:2] != START_SEQUENCE:
        return None, "start sequence: missing, expected EB 90"
    info, corrected, pos, ended = bytearray(), 0, 2, "no tail sequence"
    while pos + CODEBLOCK_OCTETS <= len(cltu) and len(info) < _MAX_INFO_OCTETS:
        block = cltu[pos : pos + CODEBLOCK_OCTETS]
        pos += CODEBLOCK_OCTETS
        if block == TAIL_SEQUENCE:
            ended = "tail sequence"
            break
        syndrome = _syndrome(block)
        if syndrome:
            hit = _CORRECTABLE.get(syndrome) if correct_errors else None
            if hit is None:
                ended = f"codeblock {len(info) // INFO_OCTETS} rejected (parity error)"
                break
            block = bytearray(block)
            block[hit[0]] ^= hit[1]
            corrected += 1
        info += block[:INFO_OCTETS]
    if randomised:
        info = bytearray(randomise(bytes(info)))
    if len(info) < 5:
        return None, f"CLTU ended ({ended}) before a frame header was decoded"
    frame_len = (((info[2] & 0x03) << 8) | info[3]) + 1
    if frame_len > len(info):
        return None, (
            f"CLTU ended ({ended}) after {len(info)} octets, frame length field says {frame_len}"
        )
    return bytes(info[:frame_len]), f"ok ({ended}, {corrected} codeblocks corrected)"
