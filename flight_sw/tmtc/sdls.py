"""SDLS security header and trailer inside TC Transfer Frames (CCSDS 355.0-B).

The frame data field of a protected TC frame is (355.0-B 4.1.1, 4.1.2, 4.1.3)::

    Security Header: SPI u16 | IV (12 octets, authenticated encryption only) | ARSN u64
    Frame Data:      the PUS packet (plain) or its ciphertext
    Security Trailer: MAC (16 octets)

Services (one per security association, from its key slot's `service`):

- authentication: MAC = HMAC-SHA-256 truncated to 128 bits (CCSDS 352.0-B 3.3 allows the
  truncation) over the frame's primary header, the security header and the frame data;
- authenticated encryption: AES-256-GCM (352.0-B 3.2) with the 96-bit IV from the header;
  the additional authenticated data is the primary header and the security header, the
  frame data is the ciphertext and the MAC is the GCM tag.

The authentication mask (355.0-B 4.2.2.2, a managed parameter) covers the whole primary
header here: the frame length, the spacecraft and virtual channel ids and the COP flags are
all protected, so a valid MAC cannot be moved to another channel or service. The FECF that
follows the trailer is the frame's (232.0-B), outside the security processing.

`protect` is the ground's side (sending end, 355.0-B 3.3.2); `unprotect` the onboard side
(receiving end, 3.3.3), which never raises on arbitrary input.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SPI = struct.Struct(">H")
ARSN = struct.Struct(">Q")
IV_LEN = 12
MAC_LEN = 16
AUTH, AUTH_ENC = "authentication", "authenticated_encryption"
AES_KEY_BYTES = 32


def header_len(service: str) -> int:
    return SPI.size + (IV_LEN if service == AUTH_ENC else 0) + ARSN.size


def overhead(service: str) -> int:
    """Octets the security header and trailer add to a frame's data field."""
    return header_len(service) + MAC_LEN


def protect(service: str, key: bytes, spi: int, arsn: int, primary_header: bytes, data: bytes,
            iv: bytes | None = None) -> bytes:
    """The protected frame data field: security header, data (or ciphertext), MAC.

    `primary_header` is the 5-octet TC primary header of the frame that will carry the result
    (its length field already counting the security fields and the FECF)."""
    if service == AUTH_ENC:
        if iv is None or len(iv) != IV_LEN:
            raise ValueError(f"iv: authenticated encryption needs a {IV_LEN}-octet IV")
        sec = SPI.pack(spi) + iv + ARSN.pack(arsn)
        sealed = AESGCM(key).encrypt(iv, data, primary_header + sec)  # ciphertext | tag
        return sec + sealed
    if service != AUTH:
        raise ValueError(f"service: {service!r}, expected {AUTH!r} or {AUTH_ENC!r}")
    sec = SPI.pack(spi) + ARSN.pack(arsn)
    mac = hmac.new(key, primary_header + sec + data, hashlib.sha256).digest()[:MAC_LEN]
    return sec + data + mac


def peek_spi(field: bytes) -> int | None:
    """The SPI of a protected data field, read before the association is known."""
    return SPI.unpack_from(field)[0] if len(field) >= SPI.size else None


def unprotect(service: str, key: bytes, primary_header: bytes, field: bytes) -> tuple[str | None, int, bytes]:
    """(reject reason or None, ARSN, plain data). The MAC is checked before anything else is
    believed; the ARSN is returned for the caller's anti-replay check."""
    hl = header_len(service)
    if len(field) < hl + MAC_LEN:
        return "too_short", 0, b""
    sec = field[:hl]
    arsn = ARSN.unpack_from(sec, hl - ARSN.size)[0]
    if service == AUTH_ENC:
        try:
            plain = AESGCM(key).decrypt(sec[SPI.size : SPI.size + IV_LEN], field[hl:], primary_header + sec)
        except InvalidTag:
            return "bad_mac", arsn, b""
        return None, arsn, plain
    data = field[hl:-MAC_LEN]
    good = hmac.new(key, primary_header + sec + data, hashlib.sha256).digest()[:MAC_LEN]
    if not hmac.compare_digest(good, field[-MAC_LEN:]):
        return "bad_mac", arsn, b""
    return None, arsn, data
