"""Preflight: would this flow restore from that snapshot? Checked without running it.

    check(flow, settings) -> Report       raises RestoreError naming the uid, step and file

Flows through here: a loaded flow and the Settings `rewind run` would use (restore URI or
`latest`, snapshot location, app identity, parallelism, max parallelism,
allow-non-restored-state). The subtasks are built exactly as the job builds them, the
snapshot is resolved exactly as the job resolves it (`latest` = the newest snapshot of
the app's own history), and every step's state is loaded into them by the job's own
`restore_tasks`; then everything is thrown away.

What must stay true:
- the same code path as a real start: a flow that passes here restores in `rewind run`
  (same resolve, same uid matching, same decoding), and one that fails here fails there
  with the same message;
- no record moves and nothing is written: sources are never started, operators never
  opened, sinks never connected, no snapshot is taken. The operator runs this in a
  short-lived pod of the new image before it stops the old version (an upgrade's
  restore preflight), so it must be safe to run beside the live job;
- nothing to restore (a first start, or an app without snapshots yet) passes: there is
  no state the new code could fail to read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import snapshots
from ..dataflow import Dataflow
from ..settings import Settings
from .graph import build_tasks
from .operators import Capture
from .restore import resolve, restore_tasks
from .tasks import SourceTask, Task, TaskBase


@dataclass(frozen=True)
class Report:
    """What a passing preflight found."""

    snapshot: str | None
    """The snapshot checked (None: nothing to restore)."""
    restored: list[str] = field(default_factory=list)
    """Uids whose state the new flow reads."""
    new: list[str] = field(default_factory=list)
    """Stateful uids of the new flow without state in the snapshot (they start empty)."""
    dropped: list[str] = field(default_factory=list)
    """Uids in the snapshot the new flow lacks (only with allow-non-restored-state)."""
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for logs, Events and the operator's status."""
        if self.snapshot is None:
            return "nothing to restore yet: the new version starts empty"
        parts = [f"the new version restores {self.snapshot}"]
        parts.append(f"state of {', '.join(self.restored)}" if self.restored else "no state")
        if self.new:
            parts.append(f"new (empty): {', '.join(self.new)}")
        if self.dropped:
            parts.append(f"dropped: {', '.join(self.dropped)}")
        return "; ".join(parts) + f" ({self.seconds:.1f} s)"


def check(flow: Dataflow, settings: Settings) -> Report:
    """Restore `settings.snapshots.restore` into fresh subtasks of `flow` (see the module
    docstring); RestoreError if it cannot be."""
    started = time.monotonic()
    snap = settings.snapshots
    sp = settings.parallelism
    uri = resolve(snap.restore, snap.location, app=settings.app)
    if uri is None:
        return Report(snapshot=None, seconds=time.monotonic() - started)
    tasks = build_tasks(
        flow,
        parallelism=sp.parallelism,
        max_parallelism=sp.max_parallelism,
        channel_capacity=settings.runtime.channel_capacity,
        batch_size=settings.runtime.batch_size,
        job_id="preflight",
        attempt="preflight",
        now_ms=settings.runtime.clock.now_ms,
        snapshots=_NoSnapshots(),
        app=settings.app,
    )
    restored = restore_tasks(
        uri,
        tasks,
        max_parallelism=sp.max_parallelism,
        allow_non_restored_state=snap.allow_non_restored_state,
    )
    stateful = {
        t.uid for t in tasks if isinstance(t, SourceTask) or (isinstance(t, Task) and t.op.stateful)
    }
    return Report(
        snapshot=restored.uri,
        restored=sorted(restored.uids),
        new=sorted(stateful - set(restored.uids)),
        dropped=sorted(restored.dropped),
        seconds=time.monotonic() - started,
    )


def unreadable(exc: BaseException) -> bool:
    """Whether `exc` (from `check`) says the storage could not be read (down, hanging,
    refusing) rather than anything about the flow or the snapshot's content: a missing
    file is the snapshot's fault, an unreachable endpoint is not."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, snapshots.StorageError) and not isinstance(
            seen, snapshots.NotFoundError
        ):
            return True
        seen = seen.__cause__
    return False


class _NoSnapshots:
    """The subtasks' snapshot sink: a preflight never takes a snapshot."""

    def ack(self, task: TaskBase, checkpoint_id: int, capture: Capture) -> None:
        raise AssertionError("a preflight takes no snapshot")
