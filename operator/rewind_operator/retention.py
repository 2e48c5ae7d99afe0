"""Periodic savepoints: when one is due, and which old ones retention deletes.

What must stay true: retention only ever deletes `periodic` savepoints in a final phase,
never the one the app restored from, the one an operation in flight waits for, or the
newest completed one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rewind_operator.actions import (
    DeleteSavepoint,
)
from rewind_operator.context import Ctx, current_ready
from rewind_operator.models import (
    parse_duration,
)
from rewind_operator.observed import SavepointObs
from rewind_operator.policy import savepoint_name
from rewind_operator.queries import app_savepoints
from rewind_operator.vocabulary import (
    NORMAL,
    SAVEPOINT_OPEN,
    SAVEPOINT_UNUSABLE,
    Desired,
    EventReason,
    Phase,
    SpPhase,
    SpReason,
)

# ---- periodic savepoints and retention


def request_periodic(ctx: Ctx) -> None:
    spec = ctx.app.spec
    st = ctx.status
    interval_text = spec.snapshots.savepoint_interval
    if interval_text is None or spec.state != Desired.RUNNING or st.phase != Phase.RUNNING:
        return
    if not current_ready(ctx):
        return
    mine = [s for s in app_savepoints(ctx.name, ctx.observed) if s.reason == SpReason.PERIODIC]
    if any(s.phase in SAVEPOINT_OPEN for s in mine):
        return
    interval = parse_duration(interval_text)
    last_times = [s.created_at for s in mine if s.app_uid in (None, ctx.uid)]
    if st.last_periodic_savepoint_at is not None:
        last_times.append(st.last_periodic_savepoint_at)
    if not last_times:
        st.last_periodic_savepoint_at = ctx.now  # start the clock when the app first runs
        return
    if ctx.now - max(last_times) < interval:
        return
    serial = ctx.now.strftime("%Y%m%d-%H%M%S")
    name = savepoint_name(ctx.name, ctx.uid, SpReason.PERIODIC, serial)
    ctx.create_savepoint(name, SpReason.PERIODIC, stop=False, dispose=True)
    st.last_periodic_savepoint_at = ctx.now
    ctx.event(NORMAL, EventReason.PERIODIC_SAVEPOINT, f"requested periodic savepoint {name}")


def retention_victims(
    savepoints: list[SavepointObs],
    *,
    count: int | None,
    max_age: timedelta | None,
    protected: set[str],
    now: datetime,
) -> list[str]:
    """Names of savepoints that retention deletes (oldest first).

    Completed `periodic` savepoints are candidates by count and age; `protected` (the one
    the app restored from, the newest) never are. Failed or Abandoned savepoints that the
    operator made (periodic, upgrade, suspend: a failed attempt that was retried) go
    once a newer savepoint of the app completed; a manual one is the user's to delete."""
    live = [s for s in savepoints if not s.deleting]
    periodic = [s for s in live if s.reason == SpReason.PERIODIC]
    completed = sorted(
        (s for s in periodic if s.phase == SpPhase.COMPLETED),
        key=lambda s: (s.completed_at or s.created_at, s.name),
        reverse=True,
    )
    victims: set[str] = set()
    if count is not None:
        victims |= {s.name for s in completed[count:]}
    if max_age is not None:
        victims |= {s.name for s in completed if now - (s.completed_at or s.created_at) > max_age}
    if completed:
        protected = protected | {completed[0].name}
    done = [s.completed_at or s.created_at for s in live if s.phase == SpPhase.COMPLETED]
    if done:
        newest = max(done)
        victims |= {
            s.name
            for s in live
            if s.reason in _OPERATOR_MADE
            and s.phase in SAVEPOINT_UNUSABLE
            and s.created_at < newest
        }
    ordered = sorted(live, key=lambda s: (s.created_at, s.name))
    return [s.name for s in ordered if s.name in victims and s.name not in protected]


_OPERATOR_MADE = frozenset({SpReason.PERIODIC, SpReason.UPGRADE, SpReason.SUSPEND})
"""Reasons of the savepoints the operator creates itself (and so may clean up)."""


def apply_retention(ctx: Ctx) -> None:
    retain = ctx.app.spec.snapshots.retain
    if retain is None or (retain.count is None and retain.max_age is None):
        return
    st = ctx.status
    protected = {
        ref.name for ref in (st.restored_from,) if ref is not None and ref.name is not None
    }
    op = st.operation
    if op is not None and op.savepoint:
        protected.add(op.savepoint)
    victims = retention_victims(
        app_savepoints(ctx.name, ctx.observed),
        count=retain.count,
        max_age=parse_duration(retain.max_age) if retain.max_age else None,
        protected=protected,
        now=ctx.now,
    )
    for name in victims:
        ctx.actions.append(DeleteSavepoint(name))
    if victims:
        ctx.event(
            NORMAL,
            EventReason.RETENTION_APPLIED,
            f"deleting savepoints {', '.join(victims)}",
        )
