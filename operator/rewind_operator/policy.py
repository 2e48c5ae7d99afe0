"""Tunables and naming shared by the operator's two state machines (pure, no I/O).

`Policy` is built only by `Settings.policy()` (its fields have no defaults of their own,
so every default lives once, in `settings`; `settings.DEFAULT_POLICY` is the one at the
defaults). Savepoint
names and targets are deterministic functions of the app and the reason, which is what
makes every action idempotent and lets an operator restarted mid-upgrade find the
savepoint it had asked for instead of taking a second one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from rewind_operator.vocabulary import UpgradeMode


@dataclass(frozen=True)
class Policy:
    """Tunables of the state machines, from `Settings.policy()` (meaning and defaults are
    documented on the settings they come from)."""

    upgrade_retry_delay: timedelta
    """After a gating savepoint failed for good: wait this long, then try a new one."""
    savepoint_backoff: timedelta
    """First retry delay of a failed savepoint attempt; doubles per failure."""
    savepoint_backoff_max: timedelta
    """Upper bound of the savepoint retry delay."""
    crash_restarts: int
    """A new version whose container restarted this often is rolled back at once,
    without waiting for the readiness timeout."""
    default_upgrade_mode: UpgradeMode
    """The upgrade mode of apps that do not set `spec.upgradeMode`."""
    engine_service_account: str
    """ServiceAccount of engine pods (part of the workload hash)."""


def savepoint_name(app: str, uid: str, reason: str, serial: str, attempt: int = 0) -> str:
    """Deterministic name of an operator-made Savepoint. The app's uid is part of it, so
    a recreated app with the same name never mistakes an old savepoint for its own."""
    suffix = f"-{reason}-{serial}-{uid[:5]}" + (f"-{attempt}" if attempt else "")
    base = (
        app
        if len(app) + len(suffix) <= 253
        else app[: 253 - len(suffix) - 9] + "-" + (hashlib.sha256(app.encode()).hexdigest()[:8])
    )
    return base + suffix


def savepoint_target(location: str, namespace: str, name: str) -> str:
    """Where the operator asks the engine to write a savepoint (docs/CONTRACTS.md)."""
    return f"{location.rstrip('/')}/savepoints/{namespace}/{name}/"
