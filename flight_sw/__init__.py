"""Flight software: the onboard module that keeps the satellite's model accurate.

Runs unchanged in the orbital simulation, on a hardware-in-the-loop bench and,
in principle, on a flight computer. It never imports `sim` or `ground_tools` and
never reads the wall clock, the network or the file system except through the
interfaces handed to it at start-up (see ../shared/DESIGN.md).
"""

__version__ = "0.1.0"
