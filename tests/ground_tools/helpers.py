"""Test helpers: rewrite packets of a telemetry stream (with a valid CRC) and run the CLI."""

import binascii
import struct
import subprocess
import sys
from pathlib import Path

from ground_tools.cli import main
from ground_tools.decode import split_packets

ROOT = Path(__file__).resolve().parents[2]


def recrc(pkt: bytes) -> bytes:
    body = pkt[:-2]
    return body + struct.pack(">H", binascii.crc_hqx(body, 0xFFFF))


def rewrite(raw: bytes, fn) -> bytes:
    """Apply fn(packet) -> packet | None to each packet; CRCs of changed packets are recomputed."""
    out = []
    for pkt in split_packets(raw)[0]:
        new = fn(pkt)
        if new is None:
            out.append(pkt)
        else:
            out.append(recrc(new))
    return b"".join(out)


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run `groundtools` in-process; returns (exit status, stdout, stderr)."""
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def cli_subprocess(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ground_tools.cli", *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout,
    )
