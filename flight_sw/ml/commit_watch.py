"""The watch after a commit, shared by the head, the calibration table and the input
normalisation: the next labelled samples are scored under the new and the previous
version, and the previous one comes back (bit-identically, by the owner) when it did
better by more than a margin over the whole watch window.

The owner keeps the counters as attributes (so its snapshot carries them):
`watch_remaining`, `watch_new_correct`, `watch_old_correct`.
"""

from __future__ import annotations


def previous_wins(owner, correct_new: int, correct_old: int, n: int, window: int, margin: float) -> bool:
    """Fold n samples' correct counts into `owner`'s watch; True once the window is complete
    and the previous version was right on more than `margin` of the samples more often."""
    if owner.watch_remaining <= 0 or n <= 0:
        return False
    owner.watch_new_correct += correct_new
    owner.watch_old_correct += correct_old
    owner.watch_remaining -= n
    if owner.watch_remaining > 0:
        return False
    seen = window - owner.watch_remaining
    return (owner.watch_old_correct - owner.watch_new_correct) / max(seen, 1) > margin
