"""Restore: match a snapshot's state to the new flow's steps by uid.

Flows through here: a snapshot URI (or "latest") and the job's subtasks; out come
restored operators and source split positions. What must stay true:
- state of a uid the flow no longer has is an error naming every such uid, unless
  `allow_non_restored_state` (then it is dropped, and the log says so);
- a uid whose step changed kind (a count became a window) is an error;
- new uids start empty; parallelism may differ (each subtask reads its key-group range;
  source splits are reassigned from the merged positions); a different
  max_parallelism is refused by the reader with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from .. import snapshots
from ..keys import key_group_range
from .tasks import SourceTask, Task, TaskBase

log = structlog.get_logger("rewind.restore")


class RestoreError(RuntimeError):
    """The snapshot cannot be restored into this flow; the message says what and where."""


@dataclass
class SourceRestore:
    """Merged split state of one source step, from all of its old subtasks."""

    positions: dict[str, Any] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    max_ts: dict[str, int] = field(default_factory=dict)


@dataclass
class Restored:
    uri: str
    checkpoint_id: int
    sources: dict[str, SourceRestore]
    uids: list[str] = field(default_factory=list)
    """Uids whose state was loaded into these subtasks."""
    dropped: list[str] = field(default_factory=list)
    """Uids of the snapshot the flow does not have (allow_non_restored_state)."""


def resolve(
    restore: str | None,
    location: str,
    deployment_id: str | None = None,
    *,
    app: str | None = None,
) -> str | None:
    """The URI to restore from: the newest snapshot of this deployment if there is one
    (a restart of the same deployment continues where it was, never replays from its
    original savepoint); else as given, or for "latest" the newest snapshot of this app's
    own history at the location (`snapshots.lineage`; None, and a log line, when there
    is none)."""
    if deployment_id:
        own = snapshots.latest(location, app=app, deployment_id=deployment_id)
        if own is not None:
            log.info(
                "restore_own_snapshot",
                uri=own,
                deployment_id=deployment_id,
                instead_of=restore,
                message="a snapshot of this deployment exists: resuming from it (a restart)",
            )
            return own
        log.info(
            "restore_as_given",
            deployment_id=deployment_id,
            restore=restore,
            message="no snapshot of this deployment yet: a first start",
        )
    if restore is None:
        return None
    if restore == "latest":
        uri = snapshots.latest(location, app=app)
        if uri is None:
            log.info(
                "restore_latest_none", location=location, message="no snapshot; starting empty"
            )
        else:
            log.info("restore_latest", location=location, app=app, uri=uri)
        return uri
    return restore


def restore_tasks(
    uri: str,
    tasks: list[TaskBase],
    *,
    max_parallelism: int,
    allow_non_restored_state: bool,
    flow_uids: set[str] | None = None,
) -> Restored:
    """Load `uri` into the tasks' operators (before they open). `flow_uids`: every uid
    of the flow, when `tasks` are only some of its subtasks (one worker of several)."""
    try:
        reader = snapshots.SnapshotReader(uri, max_parallelism=max_parallelism)
    except snapshots.SnapshotError as exc:
        raise RestoreError(f"cannot restore from {uri}: {exc}") from exc
    with reader:
        kinds: dict[str, str] = {}
        for task in tasks:
            if isinstance(task, SourceTask):
                kinds[task.uid] = "source"
            elif task.operator is not None and task.operator.stateful:
                kinds[task.uid] = task.operator.kind
        in_snapshot = reader.uids()
        unknown = sorted(set(in_snapshot) - set(kinds) - (flow_uids or set()))
        if unknown and not allow_non_restored_state:
            raise RestoreError(
                f"cannot restore from {reader.uri}: it holds state for uid(s)"
                f" {', '.join(unknown)} that the flow does not have (was a step removed or"
                " its uid changed?); restore with --allow-non-restored-state to drop that state"
            )
        if unknown:
            log.warning("state_not_restored", uids=unknown, snapshot=reader.uri)
        op_states: dict[str, list[Any]] = {}
        for uid in sorted(set(in_snapshot) & set(kinds)):
            states = reader.operator_states(uid)
            old_kind = next((s.get("kind") for s in states if isinstance(s, dict)), None)
            if old_kind is not None and old_kind != kinds[uid]:
                raise RestoreError(
                    f"cannot restore from {reader.uri}: uid {uid!r} was a step of kind"
                    f" {old_kind!r} and is now of kind {kinds[uid]!r}; its state cannot be"
                    " restored into it (give the new step a new uid)"
                )
            op_states[uid] = [s for s in states if s is not None]
        sources: dict[str, SourceRestore] = {}
        for uid, kind in kinds.items():
            if kind != "source" or uid not in op_states:
                continue
            merged = sources[uid] = SourceRestore()
            for state in op_states[uid]:
                merged.positions.update(state.get("splits", {}))
                merged.finished.update(state.get("finished", []))
                merged.max_ts.update(state.get("max_ts", {}))
        try:
            # Every subtask's reads start before the first is decoded: the downloads of
            # the later subtasks overlap the decoding of the earlier ones (their bytes
            # wait in memory meanwhile: a fraction of the state they decode into).
            restoring: list[tuple[Task, Any]] = []
            for task in tasks:
                if not isinstance(task, Task) or task.uid not in op_states:
                    continue
                keyed: Any = ()
                if task.op.keyed:
                    kgs = key_group_range(task.index, task.parallelism, max_parallelism)
                    keyed = reader.keyed_state(task.uid, kgs, arrays=task.op.restores_arrays)
                restoring.append((task, keyed))
            for task, keyed in restoring:
                op = task.op
                try:
                    op.restore(keyed, op_states[task.uid])
                except (ValueError, TypeError) as exc:  # data that this step can't hold
                    raise RestoreError(
                        f"cannot restore from {uri}: step {task.uid!r}: {exc} (did this uid "
                        "belong to another kind of step? give the new step a new uid)"
                    ) from exc
        except snapshots.SnapshotError as exc:
            raise RestoreError(f"cannot restore from {uri}: {exc}") from exc
        checkpoint_id = int(reader.manifest.meta.get("checkpoint_id", 0))
        log.info(
            "restored",
            uri=reader.uri,
            uids=sorted(op_states),
            snapshot_parallelism={u: reader.parallelism(u) for u in sorted(op_states)},
        )
        return Restored(reader.uri, checkpoint_id, sources, sorted(op_states), unknown)
