"""Checks of output paths the user gives on a command line, made before any work starts.

A run, a benchmark or a report that fails only when it writes its result loses the work;
one that writes into `/` or a pseudo file system does harm. Both command lines
(`flightsim`, `groundtools`) call these.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Folders a command never writes into (nor anything under the pseudo file systems).
SYSTEM_DIRS = frozenset(Path(p) for p in ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc",
                                          "/root", "/run", "/sbin", "/sys", "/usr", "/var"))
PSEUDO_FS = (Path("/proc"), Path("/sys"), Path("/dev"))


def output_folder_problem(out: Path) -> str | None:
    """What is wrong with `out` as a folder to write into (None: fine): a file, a system
    folder, the home folder itself, or under a parent that is missing, not a folder or not
    writable. Checked before any work, so a long run cannot fail at its end."""
    resolved = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        return f"{out} exists and is not a folder"
    if resolved in SYSTEM_DIRS or resolved == Path.home().resolve() or any(
            resolved == fs or fs in resolved.parents for fs in PSEUDO_FS):
        return f"{out} is {resolved}: refusing to write into a system folder or the home folder itself"
    parent = resolved
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{out}: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{out}: {parent} is not writable"
    return None


def output_file_problem(out: Path) -> str | None:
    """The same for a file to write: its folder must be acceptable and it must not be a folder."""
    if out.is_dir():
        return f"{out} is a folder; expected a file name"
    problem = output_folder_problem(out.parent)
    return f"{out}: its folder {problem}" if problem else None
