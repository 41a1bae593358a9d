"""What the simulated ground station needs from a ground terminal that runs a command link
during the passes (e.g. FOP-1 in `ground_tools.pass_terminal`).

The simulator knows nothing of the link's contents: it hands the terminal every CADU the
flight software downlinks (ASM + TM Transfer Frame; the CLCW is in its OCF), asks it at
contact ticks whether it has work, and passes the CLTUs it radiates to the flight radio.
While the terminal has work during a contact, the simulation steps every minor frame
(no idle frames are crossed in one call) so the link's timer and the CLCW see each second.

`contact_index` is the index (in the run's contact list) of the latest contact that has
started at `t`; plan group k belongs to the k-th contact of the run.
"""

from __future__ import annotations

from typing import Protocol


class GroundTerminal(Protocol):
    def pending(self, t: float, contact_index: int) -> bool:
        """Anything to radiate, to wait for or a timer running at `t` in contact `contact_index`."""
        ...

    def radiate(self, t: float, contact_index: int) -> list[bytes]:
        """The CLTUs that reach the flight radio at `t` (a lossy terminal leaves some out)."""
        ...

    def on_cadu(self, cadu: bytes, t: float) -> None:
        """One downlinked CADU (ASM + TM Transfer Frame), received at (about) `t`."""
        ...

    def state_dict(self) -> dict:
        """Everything needed to resume the terminal exactly (picklable; kept in a checkpoint)."""
        ...

    def load_state_dict(self, state: dict) -> None: ...

    def summary(self) -> dict:
        """A few headline counters for summary.json (JSON values)."""
        ...

    def report(self) -> dict:
        """The full log for the run folder (uplink_log.json; JSON values)."""
        ...
