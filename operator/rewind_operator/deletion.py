"""Deleting a StreamApp: optionally a final stop-with-savepoint, then the finalizer goes.

What must stay true: a final savepoint that fails never blocks the deletion (earlier
savepoints and checkpoints are kept, and the Event says so); the app is finalized only
once the final savepoint is in a final phase, or when there is nothing running to save.
"""

from __future__ import annotations

from rewind_operator.context import Ctx, Decision, current_ready
from rewind_operator.lifecycle import On
from rewind_operator.policy import savepoint_name
from rewind_operator.queries import find_savepoint
from rewind_operator.vocabulary import (
    NORMAL,
    SAVEPOINT_OPEN,
    TRUE,
    WARNING,
    Cond,
    EventReason,
    Reason,
    SpPhase,
    SpReason,
)

# ---- deletion


def decide_delete(ctx: Ctx) -> Decision:
    spec = ctx.app.spec
    st = ctx.status
    ctx.go(On.DELETING)
    if not spec.savepoint_on_delete or st.last_reconciled_spec is None:
        return ctx.done(finalize=True)
    name = savepoint_name(ctx.name, ctx.uid, SpReason.DELETE, "final")
    sp = find_savepoint(ctx.observed, name)
    if sp is None:
        if not current_ready(ctx):
            ctx.event(
                WARNING,
                EventReason.NO_FINAL_SAVEPOINT,
                "the job is not running: deleting without a "
                "final savepoint; earlier savepoints and checkpoints are kept",
            )
            return ctx.done(finalize=True)
        ctx.create_savepoint(name, SpReason.DELETE, stop=True)
        ctx.event(
            NORMAL, EventReason.FINAL_SAVEPOINT, f"taking final savepoint {name} before deletion"
        )
        ctx.cond(
            Cond.PROGRESSING, TRUE, Reason.FINAL_SAVEPOINT, f"waiting for final savepoint {name}"
        )
        return ctx.done()
    if sp.phase in SAVEPOINT_OPEN:
        ctx.cond(
            Cond.PROGRESSING,
            TRUE,
            Reason.FINAL_SAVEPOINT,
            f"waiting for final savepoint {name} ({sp.phase})",
        )
        return ctx.done()
    if sp.phase == SpPhase.COMPLETED:
        ctx.event(
            NORMAL,
            EventReason.FINAL_SAVEPOINT_COMPLETED,
            f"final savepoint {name} at {sp.path}; the app is deleted",
        )
    else:
        ctx.event(
            WARNING,
            EventReason.FINAL_SAVEPOINT_FAILED,
            f"final savepoint {name} {sp.phase.lower()}: {sp.error}; "
            "deleting anyway (earlier savepoints and checkpoints are kept)",
        )
    return ctx.done(finalize=True)
