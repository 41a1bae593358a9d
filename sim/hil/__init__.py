"""Hardware-in-the-loop bench: the analog device emulator as a TCP or pty/serial server
(`server`), a fault proxy between flight and device (`proxy`), and the `flightsim hil`
command line (`cli`)."""

from sim.hil.proxy import FaultProxy
from sim.hil.server import PtyDeviceServer, TcpDeviceServer

__all__ = ["FaultProxy", "PtyDeviceServer", "TcpDeviceServer"]
