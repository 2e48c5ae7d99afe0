"""Upgrade modes as data: what each `spec.upgradeMode` does at start, upgrade, suspend
and resume, one row per mode.

    STRATEGIES[mode] -> Strategy(keeps_state, savepoint_first, restart_from, ...)

`decide`, `validation` and `observe` ask the row, never the mode's name, so a new mode
is a new value of `vocabulary.UpgradeMode` plus one row here (a test checks every mode
has one). What must stay true: only a mode that takes a savepoint first upgrades with
neither loss nor repeats; a mode that keeps state never starts empty by accident (the
empty-state guard), and never changes maxParallelism (it fixes the key groups).
"""

from __future__ import annotations

from dataclasses import dataclass

from rewind_operator.vocabulary import LATEST, Mode, UpgradeMode


@dataclass(frozen=True)
class Strategy:
    """What one upgrade mode does."""

    keeps_state: bool
    """At start and at every restart the job continues from state: the first start
    refuses to begin empty when state exists (unless `allowEmptyState`), and
    `maxParallelism` cannot change."""

    savepoint_first: bool
    """Upgrade and suspend of a ready job begin with a stop-with-savepoint, and the new
    version starts from it."""

    restart_from: str | None
    """What a restart without a savepoint restores from (an upgrade in this mode, or of
    a job that is not ready): `latest` (the newest checkpoint) or None (empty state)."""

    resume_from_savepoint: bool
    """Resume from the app's newest savepoint (the suspend's); else from `restart_from`."""

    upgrade_words: str
    """How the UpgradeStarted Event says what happens."""

    preflight: bool
    """An upgrade first checks, in a preflight pod of the new version, that it restores
    the app's state (unless `spec.preflight.enabled` is false); a failure leaves the
    running version running."""


STRATEGIES: dict[UpgradeMode, Strategy] = {
    #               keeps_state  savepoint_first  restart_from  resume_from_savepoint
    #               upgrade_words                                preflight
    Mode.SAVEPOINT: Strategy(True, True, LATEST, True, "taking a savepoint first", True),
    Mode.LAST_STATE: Strategy(True, False, LATEST, False, "last-state upgrade", True),
    Mode.STATELESS: Strategy(
        False, False, None, False, "stateless upgrade, restarting empty", False
    ),
}

NOT_READY_WORDS = (
    "the running version is not ready, so no savepoint can be taken; restarting from "
    "the newest checkpoint"
)
"""UpgradeStarted when a savepoint-first mode cannot take one."""


def strategy_for(mode: UpgradeMode) -> Strategy:
    """The row of `mode`."""
    return STRATEGIES[mode]
