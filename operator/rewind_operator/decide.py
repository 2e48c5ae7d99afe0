"""The StreamApp state machine: a pure function from (app, observation, now) to a Decision.

    decide(app, observed, now)            -> Decision(actions, status, finalize)

Where an app can be and every allowed move is declared in `lifecycle` (read it first:
the upgrade path is on one screen); `decide` finds out what the observation says and
moves along the declared edge. The steps of an operation in flight are in
`operations`; what a spec change means is `changes`, what is invalid `validation`,
periodic savepoints and retention `retention`, deletion `deletion`. The Savepoint state
machine is `decide_savepoint`; tunables and savepoint names are in `policy`.

Nothing here does I/O or reads a clock: `observe` gathers the facts, `act` carries out
the actions, the handlers write the status. What must stay true:

1. State advances only on what was observed, never because an action was issued: a
   Savepoint is Completed when the engine (or storage) says so; an upgrade is done when
   a pod of the new workload is seen ready.
2. The status is the operator's memory. Every operation in flight (`status.operation`)
   names the gating savepoint deterministically, so an operator restarted half-way
   carries on with the same savepoint instead of taking a second one.
3. A failed or timed-out upgrade savepoint never stops the running version; the
   operation is `blocked` and retried later, and `Progressing=False` says why.
4. A spec change is classified by `changes.SPEC_CHANGES` (ignore < no-restart < upgrade
   < redeploy); only `upgrade` and `redeploy` restart the job.
5. No secret value ever enters a status, an Event or an action: only Secret names.
"""

from __future__ import annotations

from datetime import datetime

from rewind_operator import operations, preflight
from rewind_operator.changes import Change, changed_fields, classify, kind_of, spec_summary
from rewind_operator.conditions import condition
from rewind_operator.context import (
    Ctx,
    Decision,
    app_meta,
    current_ready,
    running_spec,
    running_workers,
)
from rewind_operator.deletion import decide_delete
from rewind_operator.lifecycle import On, state_of
from rewind_operator.models import (
    Condition,
    SavepointRef,
    StreamApp,
)
from rewind_operator.observed import AppObserved
from rewind_operator.policy import Policy
from rewind_operator.queries import (
    app_savepoints,
    crash_reason,
    describe_restore,
    find_savepoint,
    is_ready,
    job_status,
    newest_completed,
    not_ready_detail,
    ready_workers,
    workload_of,
)
from rewind_operator.retention import apply_retention, request_periodic
from rewind_operator.settings import DEFAULT_POLICY
from rewind_operator.strategy import NOT_READY_WORDS
from rewind_operator.validation import validate
from rewind_operator.vocabulary import (
    FALSE,
    NORMAL,
    SAVEPOINT_UNUSABLE,
    TRUE,
    WARNING,
    Cond,
    Desired,
    EventReason,
    Kind,
    Phase,
    Reason,
    SpPhase,
    Stage,
)


def decide(
    app: StreamApp, observed: AppObserved, now: datetime, policy: Policy = DEFAULT_POLICY
) -> Decision:
    """The next step for one StreamApp (see the module docstring)."""
    name, namespace, uid, generation = app_meta(app)
    ctx = Ctx(
        app=app,
        observed=observed,
        now=now,
        policy=policy,
        name=name,
        namespace=namespace,
        uid=uid,
        generation=generation,
        status=app.status.model_copy(deep=True),
        state=state_of(app.status.operation),
    )
    _observe_into_status(ctx)
    if app.metadata.get("deletionTimestamp"):
        return decide_delete(ctx)
    problems = validate(app, observed, policy)
    op = ctx.status.operation
    if problems:
        # Finish what is in flight with the spec accepted before: a completed
        # stop-with-savepoint must never leave the job stopped. The invalid change waits.
        if op is not None and op.stage == Stage.SAVEPOINT:
            operations.wait_for_gate(ctx, op, ctx.status.last_reconciled_spec)
        elif op is not None and op.stage == Stage.DEPLOYING:
            operations.deploying(ctx, op)
        return _invalid(ctx, problems)
    if op is None:
        _at_rest(ctx)
    elif op.stage == Stage.SAVEPOINT:
        operations.wait_for_gate(ctx, op)
    elif op.stage == Stage.BLOCKED:
        if operations.blocked(ctx, op):
            _at_rest(ctx)
    elif op.stage == Stage.PREFLIGHT:
        if preflight.waiting(ctx, op):
            _at_rest(ctx)
    elif op.stage == Stage.REFUSED:
        if preflight.refused(ctx, op):
            _at_rest(ctx)
    else:
        operations.deploying(ctx, op)
    if ctx.status.operation is None and ctx.status.phase not in (Phase.PENDING, Phase.FAILED):
        request_periodic(ctx)
    apply_retention(ctx)
    preflight.tidy(ctx)
    ctx.status.observed_generation = generation
    return ctx.done()


def _observe_into_status(ctx: Ctx) -> None:
    st = ctx.status
    digest = st.workload_hash
    st.job = job_status(ctx.observed, digest)
    wanted = running_workers(ctx)
    st.workers = f"{ready_workers(ctx.observed, digest) if digest else 0}/{wanted}"
    newest = newest_completed(app_savepoints(ctx.name, ctx.observed))
    if newest is not None:
        st.last_savepoint = SavepointRef(
            name=newest.name, path=newest.path, completed_at=newest.completed_at
        )


def _invalid(ctx: Ctx, problems: list[str]) -> Decision:
    message = "; ".join(problems)
    running = ctx.status.last_reconciled_spec is not None
    if running:
        message += f" (the running version, image {ctx.status.image}, is left as it is)"
    else:
        message += " (nothing deployed)"
    if ctx.reason_of(Cond.READY) != Reason.INVALID_SPEC or (
        (condition(ctx.status, Cond.READY) or Condition(type=Cond.READY, status=FALSE)).message
        != message
    ):
        ctx.event(WARNING, EventReason.INVALID_SPEC, message)
    ctx.cond(Cond.READY, FALSE, Reason.INVALID_SPEC, message)
    ctx.cond(Cond.PROGRESSING, FALSE, Reason.INVALID_SPEC, "fix the spec to continue")
    ctx.go(On.INVALID_SPEC if running else On.INVALID_SPEC_NOTHING_DEPLOYED)
    ctx.status.observed_generation = ctx.generation
    return ctx.done()


# ---- at rest: nothing in flight, compare desired with reconciled


def _at_rest(ctx: Ctx) -> None:
    spec = ctx.app.spec
    st = ctx.status
    reconciled = st.last_reconciled_spec
    if reconciled is None:
        if spec.state == Desired.SUSPENDED:
            ctx.go(On.SUSPENDED_BEFORE_START)
            ctx.cond(Cond.READY, FALSE, Reason.SUSPENDED, "suspended before its first start")
            ctx.cond(Cond.PROGRESSING, FALSE, Reason.IDLE, "nothing to do")
            return
        _first_deploy(ctx)
        return
    if reconciled.state == Desired.RUNNING and spec.state == Desired.SUSPENDED:
        _start_suspend(ctx)
        return
    if reconciled.state == Desired.SUSPENDED:
        if spec.state == Desired.RUNNING:
            _start_resume(ctx)
        else:
            st.last_reconciled_spec = spec
            ctx.go(On.STILL_SUSPENDED)
            ctx.cond(Cond.READY, FALSE, Reason.SUSPENDED, "suspended")
            ctx.cond(Cond.PROGRESSING, FALSE, Reason.IDLE, "suspended")
        return
    change = classify(reconciled, spec)
    if change == Change.REDEPLOY:
        _start_redeploy(ctx)
        return
    if change == Change.UPGRADE and st.rolled_back_generation != ctx.generation:
        _start_upgrade(ctx)
        return
    if change == Change.NO_RESTART:
        fields = [f for f in changed_fields(reconciled, spec) if kind_of(f) == Change.NO_RESTART]
        ctx.event(NORMAL, EventReason.SPEC_APPLIED, f"applied without restart: {', '.join(fields)}")
    if change <= Change.NO_RESTART:
        st.last_reconciled_spec = spec
    _steady(ctx)


def _steady(ctx: Ctx) -> None:
    """Nothing to change: keep the workload as built, report health."""
    st = ctx.status
    obs = ctx.observed
    workers = running_workers(ctx)
    workload = workload_of(obs, workers)
    if st.last_reconciled_spec is not None and (
        workload is None or workload.workload_hash != st.workload_hash
    ):
        # Someone deleted or edited the Deployment: put back what we built.
        restore = st.restored_from.path if st.restored_from else None
        st.workload_hash = ctx.apply(running_spec(st), restore, 1)
        ctx.event(
            WARNING,
            EventReason.WORKLOAD_RESTORED,
            "the engine workload was missing or changed; re-applied it",
        )
    ready = is_ready(obs, st.workload_hash, workers)
    rolled_back = st.rolled_back_generation == ctx.generation
    if ready:
        ctx.go(On.READY)
        ctx.cond(Cond.READY, TRUE, Reason.JOB_RUNNING, f"image {st.image} is running")
        if not rolled_back:
            ctx.cond(Cond.DEGRADED, FALSE, Reason.HEALTHY, "the job is ready")
            ctx.cond(Cond.PROGRESSING, FALSE, Reason.IDLE, "the spec is reconciled")
        return
    ctx.go(On.NOT_READY)
    crash = crash_reason(obs, st.workload_hash, ctx.policy)
    detail = crash or not_ready_detail(obs, st.workload_hash, workers)
    if ctx.reason_of(Cond.READY) == Reason.JOB_RUNNING:
        ctx.event(WARNING, EventReason.JOB_NOT_READY, detail)
    ctx.cond(Cond.READY, FALSE, Reason.JOB_NOT_READY, detail)
    if crash:
        ctx.cond(Cond.DEGRADED, TRUE, Reason.JOB_CRASHING, crash)


def _restore_named(ctx: Ctx) -> tuple[bool, str | None, str | None]:
    """(ok, restore, problem) for `spec.restore.savepoint`/`path`; ok=False = wait."""
    restore = ctx.app.spec.restore
    if restore.path is not None:
        return True, restore.path, None
    if restore.savepoint is not None:
        sp = find_savepoint(ctx.observed, restore.savepoint)
        if sp is None:
            return False, None, f"Savepoint {restore.savepoint!r} not found in {ctx.namespace}"
        if sp.phase == SpPhase.COMPLETED and sp.path:
            return True, sp.path, None
        if sp.phase in SAVEPOINT_UNUSABLE:
            return False, None, f"Savepoint {restore.savepoint!r} is {sp.phase}: {sp.error}"
        return False, None, f"waiting for Savepoint {restore.savepoint!r} ({sp.phase})"
    return True, None, None


def _first_deploy(ctx: Ctx) -> None:
    spec = ctx.app.spec
    obs = ctx.observed
    ok, restore, problem = _restore_named(ctx)
    if not ok:
        ctx.go(On.RESTORE_NOT_READY)
        if ctx.reason_of(Cond.READY) != Reason.RESTORE_SAVEPOINT_NOT_READY:
            ctx.event(WARNING, EventReason.RESTORE_SAVEPOINT_NOT_READY, problem or "")
        ctx.cond(Cond.READY, FALSE, Reason.RESTORE_SAVEPOINT_NOT_READY, problem or "")
        ctx.cond(Cond.PROGRESSING, FALSE, Reason.RESTORE_SAVEPOINT_NOT_READY, problem or "")
        return
    if restore is None and ctx.strategy.keeps_state and not spec.restore.allow_empty_state:
        existing = sorted(
            (s for s in app_savepoints(ctx.name, obs) if s.phase == SpPhase.COMPLETED),
            key=lambda s: (s.completed_at or s.created_at, s.name),
            reverse=True,
        )
        stored = list(obs.stored_snapshots or ())  # newest first
        refuse = None
        if existing or stored:
            found = []
            if stored:
                found.append(
                    f"{len(stored)} snapshot(s) of this app under {spec.snapshots.location}, "
                    f"the newest {stored[0]}"
                )
            if existing:
                found.append(f"{len(existing)} Savepoint(s), the newest {existing[0].name!r}")
            hint = ["spec.restore.path: latest (its newest snapshot)"] if stored else []
            hint.append(
                f"spec.restore.savepoint: {existing[0].name}"
                if existing
                else "spec.restore.savepoint (a Savepoint name)"
            )
            refuse = (
                f"refusing to start from empty state: found {' and '.join(found)}. Set "
                f"{' or '.join(hint)} to continue from it, or spec.restore.allowEmptyState: "
                "true to start empty"
            )
        elif obs.storage_error is not None:
            refuse = (
                f"cannot check {spec.snapshots.location} for existing state "
                f"({obs.storage_error}); set spec.restore.allowEmptyState: true to start "
                "empty without checking"
            )
        if refuse is not None:
            ctx.go(On.EMPTY_STATE_REFUSED)
            if ctx.reason_of(Cond.READY) != Reason.EMPTY_STATE_REFUSED:
                ctx.event(WARNING, EventReason.EMPTY_STATE_REFUSED, refuse)
            ctx.cond(Cond.READY, FALSE, Reason.EMPTY_STATE_REFUSED, refuse)
            ctx.cond(Cond.PROGRESSING, FALSE, Reason.EMPTY_STATE_REFUSED, refuse)
            return
    operations.deploy(
        ctx,
        On.FIRST_START,
        spec,
        restore,
        f"deploying image {spec.image} {describe_restore(restore)}",
    )


def _start_upgrade(ctx: Ctx) -> None:
    summary = spec_summary(ctx.status.last_reconciled_spec, ctx.app.spec)
    if preflight.wanted(ctx):
        preflight.start(ctx, summary)
        return
    strategy = ctx.strategy
    savepoint = strategy.savepoint_first and current_ready(ctx)
    why = NOT_READY_WORDS if strategy.savepoint_first and not savepoint else strategy.upgrade_words
    ctx.event(NORMAL, EventReason.UPGRADE_STARTED, f"{summary}: {why}")
    operations.begin_upgrade(
        ctx,
        summary,
        with_savepoint=On.UPGRADE_WITH_SAVEPOINT,
        without_savepoint=On.UPGRADE_WITHOUT_SAVEPOINT,
    )


def _start_suspend(ctx: Ctx) -> None:
    if not (ctx.strategy.savepoint_first and current_ready(ctx)):
        operations.scale_down(ctx, On.SUSPEND_WITHOUT_SAVEPOINT, None)
        return
    name = operations.gate_name(ctx, Kind.SUSPEND, 0)
    operations.start_gated(
        ctx, On.SUSPEND_WITH_SAVEPOINT, f"suspending: waiting for savepoint {name}"
    )


def _start_resume(ctx: Ctx) -> None:
    spec = ctx.app.spec
    newest = ctx.status.last_savepoint
    restore = ctx.strategy.restart_from
    if ctx.strategy.resume_from_savepoint and newest is not None and newest.path:
        restore = newest.path
    message = f"resuming image {spec.image} {describe_restore(restore)}"
    operations.deploy(ctx, On.RESUME_WANTED, spec, restore, message)


def _start_redeploy(ctx: Ctx) -> None:
    spec = ctx.app.spec
    previous = ctx.reason_of(Cond.PROGRESSING)
    ok, restore, problem = _restore_named(ctx)
    if ok and restore is None:
        newest = ctx.status.last_savepoint
        restore = newest.path if newest and newest.path else None
        if restore is None:
            ok, problem = False, "redeployNonce changed but there is no savepoint to redeploy from"
    if not ok:
        reason = (
            Reason.NO_SAVEPOINT
            if spec.restore.savepoint is None
            else Reason.RESTORE_SAVEPOINT_NOT_READY
        )
        _steady(ctx)
        if previous != reason:
            ctx.event(WARNING, reason, problem or "")
        ctx.cond(Cond.PROGRESSING, FALSE, reason, problem or "")
        return
    operations.deploy(
        ctx,
        On.REDEPLOY_WANTED,
        spec,
        restore,
        f"redeploying image {spec.image} {describe_restore(restore)}",
    )
