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


class VersionedSlots:
    """A versioned artefact in two slots (the calibration table, the input normalisation, the
    extractor's last layer): the candidate is built in the inactive slot, committed by the atomic
    switch, watched on the next labels, and rolled back bit-identically.

    The owner keeps as attributes `active`, `version`, `next_version`, `slot_versions` (-1 for a
    slot being overwritten), `phase` (0 idle), `accepted`, `refused`, `rollbacks`, `last_refusal`,
    the watch counters and `rollback_pending_report`; it sets `watch_window` and `watch_margin`
    and implements `_activate(slot)` (what the switch does besides setting `active`).
    """

    watch_window = 64
    watch_margin = 0.05
    #: The onboard version an uploaded head's trial set aside (0: none), and that switch or its
    #: undoing while not yet reported (an outcome name; owners keep both in their snapshot).
    trial_replaced = 0
    trial_report = ""

    def _activate(self, slot: int) -> None:
        self.active = slot

    def _write_ground(self, slot: int) -> bool:
        """Write the boot image's version (the one the ground builds heads for) into `slot`;
        False when the owner cannot (then nothing is switched)."""
        return False

    def install_ground(self) -> int:
        """Put the boot image's version in front of a head the ground built for it (an uploaded
        model's trial). The onboard version stays in the other slot, bit-identical, until
        `end_trial`; a candidate being built is dropped. Returns the onboard version set aside
        (0: the image's version was active already, or the owner cannot: nothing changed)."""
        slot = 1 - self.active
        if self.version == 0 or not self._write_ground(slot):
            return 0
        replaced = self.version
        self.slot_versions[slot] = 0
        self.phase = 0
        self._activate(slot)
        self.version = 0
        self.watch_remaining = 0
        self.trial_replaced = replaced  # in the snapshot: a restart in the trial finds it here
        self.trial_report = "ground_version_for_upload_trial"
        return replaced

    def end_trial(self, confirmed: bool) -> bool:
        """The uploaded head's trial ended: confirmed, the image's version stays; otherwise the
        onboard version set aside comes back (bit-identical). True when the active version changed."""
        replaced, self.trial_replaced = self.trial_replaced, 0
        other = 1 - self.active
        if confirmed or not replaced or self.version != 0 or self.slot_versions[other] != replaced:
            return False
        self._activate(other)
        self.version = replaced
        self.trial_report = "onboard_version_restored"
        return True

    def _gate_verdict(self, judged: int, min_judged: int, passes: bool, site_vote: int) -> str | None:
        """The held-back gate's verdict on a candidate judged by the learner's paired test:
        refusal 3 too few judged samples, 4 not better, 5 the site labels alone prefer the active
        version; None when it may be committed."""
        if judged < min_judged:
            return self._refuse(3)
        if not passes:
            return self._refuse(4)
        if site_vote < 0:
            return self._refuse(5)
        return None

    def _refuse(self, reason: int) -> str:
        self.refused += 1
        self.last_refusal = reason
        return "refused"

    def _commit(self) -> None:
        new = 1 - self.active
        self.slot_versions[new] = self.next_version
        self._activate(new)  # the atomic switch
        self.version = self.next_version
        self.next_version += 1
        self.accepted += 1
        self.phase = 0
        self.last_refusal = 0
        self.watch_remaining = self.watch_window
        self.watch_new_correct = self.watch_old_correct = 0

    def watch(self, correct_new: int, correct_old: int, n: int) -> bool:
        """Labels after a commit: True when they favour the previous version and it is restored."""
        if previous_wins(self, correct_new, correct_old, n, self.watch_window, self.watch_margin) and self.rollback():
            self.rollback_pending_report = True
            return True
        return False

    def can_roll_back(self) -> bool:
        """The other slot holds a committed version (not a candidate being built or refused)."""
        return self.slot_versions[1 - self.active] >= 0 and self.phase == 0

    def rollback(self) -> bool:
        """Back to the other slot (the previous version, bit-identical); False when there is none."""
        if not self.can_roll_back():
            return False
        self._activate(1 - self.active)
        self.version = self.slot_versions[self.active]
        self.rollbacks += 1
        self.watch_remaining = 0
        return True
