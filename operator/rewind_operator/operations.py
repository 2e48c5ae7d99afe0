"""An operation in flight: how one begins, and each stage it waits in (pure).

    deploy / start_gated / scale_down     begin an operation (write `status.operation`)
    wait_for_gate(ctx, op)                stage `savepoint`: the gating stop-with-savepoint
    blocked(ctx, op)                      stage `blocked`: that savepoint failed, retry later
    deploying(ctx, op)                    stage `deploying`: the new workload, until ready

Every move goes through `ctx.go(On...)`, the declared edge in `lifecycle`; the edge's
target says which operation is written. What must stay true: the stop-with-savepoint
decides the fate of the running job, so a completed one always leads to a deploy (or
the scale-down of a suspend), and a failed one always leaves the running version as it
is; a new version is judged only on what is observed (ready pods, crashes, the
readiness timeout).
"""

from __future__ import annotations

from datetime import datetime

from rewind_operator.changes import Change, classify, spec_summary
from rewind_operator.context import Ctx, current_ready, running_spec, running_workers
from rewind_operator.lifecycle import GATE_REASON, On
from rewind_operator.models import (
    Operation,
    SavepointRef,
    StreamAppSpec,
    StreamAppStatus,
    parse_duration,
)
from rewind_operator.policy import savepoint_name
from rewind_operator.queries import (
    crash_reason,
    describe_restore,
    find_savepoint,
    is_ready,
    not_ready_detail,
    workload_of,
)
from rewind_operator.vocabulary import (
    FALSE,
    NORMAL,
    SAVEPOINT_OPEN,
    TRUE,
    WARNING,
    Cond,
    Desired,
    EventReason,
    Kind,
    OperationKind,
    Phase,
    Reason,
    SpPhase,
    Stage,
)
from rewind_operator.workload import workload_hash

# --------------------------------------------------------------------------- begin


def deploy(
    ctx: Ctx,
    on: On,
    spec: StreamAppSpec,
    restore: str | None,
    message: str,
    *,
    savepoint: str | None = None,
    attempt: int = 0,
    started: datetime | None = None,
) -> None:
    """Apply the workload for `spec` restoring from `restore`; wait for it to be ready."""
    kind = ctx.go(on).dst.kind
    assert kind is not None, f"{on} leads to a deploy"
    st = ctx.status
    digest = ctx.apply(spec, restore, 1)
    st.operation = Operation(
        kind=kind,
        stage=Stage.DEPLOYING,
        generation=ctx.generation,
        target_spec_hash=digest,
        savepoint=savepoint,
        attempt=attempt,
        restore_path=restore,
        started_at=started or ctx.now,
        deployed_at=ctx.now,
    )
    st.last_reconciled_spec = spec
    st.workload_hash = digest
    ctx.cond(Cond.PROGRESSING, TRUE, Reason.DEPLOYING, message)
    ctx.event(
        NORMAL,
        EventReason.DEPLOYING if kind != Kind.ROLLBACK else EventReason.ROLLING_BACK,
        message,
    )


def gate_name(ctx: Ctx, kind: OperationKind, attempt: int) -> str:
    """The deterministic name of the gating savepoint of this generation's `kind`."""
    return savepoint_name(ctx.name, ctx.uid, kind, f"g{ctx.generation}", attempt)


def start_gated(ctx: Ctx, on: On, message: str, attempt: int = 0) -> None:
    """Begin an operation that first takes a stop-with-savepoint."""
    kind = ctx.go(on).dst.kind
    assert kind is not None, f"{on} leads to a gated operation"
    name = gate_name(ctx, kind, attempt)
    ctx.create_savepoint(name, GATE_REASON[kind], stop=True)
    previous = ctx.status.operation
    ctx.status.operation = Operation(
        kind=kind,
        stage=Stage.SAVEPOINT,
        generation=ctx.generation,
        savepoint=name,
        attempt=attempt,
        started_at=previous.started_at if previous else ctx.now,
    )
    ctx.cond(Cond.PROGRESSING, TRUE, Reason.SAVEPOINT_IN_PROGRESS, message)
    ctx.event(NORMAL, EventReason.SAVEPOINT_REQUESTED, message)


def begin_upgrade(ctx: Ctx, prefix: str, *, with_savepoint: On, without_savepoint: On) -> None:
    """Take the stop-with-savepoint and start the new version from it; or, when the mode
    takes none or the running job cannot take one (not ready), deploy the new version
    restoring what the mode restarts from."""
    spec = ctx.app.spec
    strategy = ctx.strategy
    if strategy.savepoint_first and current_ready(ctx):
        name = gate_name(ctx, Kind.UPGRADE, 0)
        start_gated(ctx, with_savepoint, f"{prefix}: waiting for savepoint {name}")
        return
    previous = ctx.status.operation
    restore = strategy.restart_from
    deploy(
        ctx,
        without_savepoint,
        spec,
        restore,
        f"{prefix}: deploying {describe_restore(restore)}",
        started=previous.started_at if previous else None,
    )


def scale_down(ctx: Ctx, on: On, savepoint: str | None) -> None:
    """Suspend: scale the running workload to zero (after `savepoint`, if one was taken)."""
    st = ctx.status
    started = st.operation.started_at if st.operation else ctx.now
    ctx.go(on)
    running = running_spec(st)
    restore = st.restored_from.path if st.restored_from else None
    digest = ctx.apply(running, restore, 0)
    st.workload_hash = digest
    st.operation = Operation(
        kind=Kind.SUSPEND,
        stage=Stage.DEPLOYING,
        generation=ctx.generation,
        target_spec_hash=digest,
        savepoint=savepoint,
        started_at=started,
        deployed_at=ctx.now,
    )
    ctx.cond(Cond.PROGRESSING, TRUE, Reason.SCALING_DOWN, "stopping the engine")
    ctx.event(
        NORMAL,
        EventReason.SUSPENDING,
        "scaling the engine to zero" + (f" after savepoint {savepoint}" if savepoint else ""),
    )


# --------------------------------------------------------------------------- stage savepoint


def wait_for_gate(ctx: Ctx, op: Operation, fallback: StreamAppSpec | None = None) -> None:
    """Wait for the gating savepoint; then deploy from it, or block if it failed."""
    st = ctx.status
    sp = find_savepoint(ctx.observed, op.savepoint)
    # The stop-with-savepoint decides the fate of the running job; whatever the spec says
    # now (even if it was changed again meanwhile) is what starts from it.
    if sp is None or sp.phase in SAVEPOINT_OPEN:
        if sp is None and op.savepoint:
            # idempotent re-issue
            ctx.create_savepoint(op.savepoint, GATE_REASON[op.kind], stop=True)
        state = sp.phase if sp else "being created"
        extra = f", {sp.failures} failed attempt(s): {sp.error}" if sp and sp.failures else ""
        ctx.cond(
            Cond.PROGRESSING,
            TRUE,
            Reason.SAVEPOINT_IN_PROGRESS,
            f"savepoint {op.savepoint} is {state}{extra}",
        )
        ctx.go(On.SAVEPOINT_PENDING)
        report_ready(ctx)
        return
    if sp.phase == SpPhase.COMPLETED and sp.path:
        ctx.event(
            NORMAL, EventReason.SAVEPOINT_COMPLETED, f"savepoint {sp.name} completed at {sp.path}"
        )
        if op.kind == Kind.SUSPEND:
            scale_down(ctx, On.SAVEPOINT_COMPLETED, sp.name)
            return
        spec = fallback or ctx.app.spec
        summary = spec_summary(st.last_reconciled_spec, spec)
        deploy(
            ctx,
            On.SAVEPOINT_COMPLETED,
            spec,
            sp.path,
            f"{summary}: deploying {describe_restore(sp.path)}",
            savepoint=sp.name,
            attempt=op.attempt,
            started=op.started_at,
        )
        return
    # Failed or Abandoned: the running version is untouched (a failed stop-with-savepoint
    # leaves the job running). Block, and try a fresh savepoint later.
    retry_at = ctx.now + ctx.policy.upgrade_retry_delay
    what = Kind.UPGRADE if op.kind == Kind.UPGRADE else Kind.SUSPEND
    message = (
        f"savepoint {sp.name} {sp.phase.lower()}: {sp.error or 'no reason given'}; the "
        f"{what} is on hold, image {st.image} keeps running; next attempt at "
        f"{retry_at.isoformat()}"
    )
    st.operation = op.model_copy(
        update={"stage": Stage.BLOCKED, "retry_at": retry_at, "message": message}
    )
    ctx.go(On.SAVEPOINT_FAILED)
    ctx.cond(Cond.PROGRESSING, FALSE, Reason.SAVEPOINT_FAILED, message)
    ctx.event(WARNING, EventReason.SAVEPOINT_FAILED, message)
    report_ready(ctx)


# --------------------------------------------------------------------------- stage blocked


def blocked(ctx: Ctx, op: Operation) -> bool:
    """Wait for the retry, then take a new gating savepoint. True when the operation was
    cancelled because the spec no longer asks for it (the app is at rest again)."""
    st = ctx.status
    spec = ctx.app.spec
    reconciled = st.last_reconciled_spec
    still_wanted = (
        reconciled is None
        or (op.kind == Kind.SUSPEND and spec.state == Desired.SUSPENDED)
        or (op.kind == Kind.UPGRADE and classify(reconciled, spec) >= Change.UPGRADE)
    )
    if not still_wanted:
        st.operation = None
        ctx.go(On.NOT_WANTED)
        ctx.event(
            NORMAL,
            EventReason.OPERATION_CANCELLED,
            f"the {op.kind} is no longer wanted by the spec",
        )
        ctx.cond(Cond.PROGRESSING, FALSE, Reason.IDLE, "the spec is reconciled")
        return True
    if op.retry_at is not None and ctx.now < op.retry_at:
        ctx.go(On.RETRY_NOT_DUE)
        ctx.cond(Cond.PROGRESSING, FALSE, Reason.SAVEPOINT_FAILED, op.message or "savepoint failed")
        report_ready(ctx)
        return False
    attempt = op.attempt + 1
    name = gate_name(ctx, op.kind, attempt)
    start_gated(
        ctx,
        On.RETRY_DUE,
        f"{op.kind}: new attempt {attempt}, waiting for savepoint {name}",
        attempt,
    )
    return False


def report_ready(ctx: Ctx) -> None:
    """The Ready condition of the version that runs (while an operation waits)."""
    workers = running_workers(ctx)
    if is_ready(ctx.observed, ctx.status.workload_hash, workers):
        ctx.cond(Cond.READY, TRUE, Reason.JOB_RUNNING, f"image {ctx.status.image} is running")
    else:
        ctx.cond(
            Cond.READY,
            FALSE,
            Reason.JOB_NOT_READY,
            not_ready_detail(ctx.observed, ctx.status.workload_hash, workers),
        )


# --------------------------------------------------------------------------- stage deploying


def deploying(ctx: Ctx, op: Operation) -> None:
    """Wait for the new workload: ready, still within its timeout, rolled back, or failed."""
    st = ctx.status
    obs = ctx.observed
    spec = _target_spec(st, op)
    if op.kind == Kind.SUSPEND:
        _suspending(ctx, op)
        return
    workload = workload_of(obs, spec.workers)
    stale = spec.workers > 1 and any(
        p.workload_hash != op.target_spec_hash and not p.deleting for p in obs.pods
    )
    if workload is None or workload.workload_hash != op.target_spec_hash or stale:
        # Not there yet (or lost), or a worker of the old version is left (the
        # StatefulSet replaces only pods that were deleted): apply again.
        ctx.apply(spec, op.restore_path, 1)
    if is_ready(obs, op.target_spec_hash, spec.workers):
        _deployed(ctx, op, spec)
        return
    timeout = parse_duration(spec.rollback.readiness_timeout)
    waited = ctx.now - (op.deployed_at or ctx.now)
    crash = crash_reason(obs, op.target_spec_hash, ctx.policy)
    detail = crash or not_ready_detail(obs, op.target_spec_hash, spec.workers)
    ctx.cond(Cond.READY, FALSE, Reason.JOB_NOT_READY, detail)
    if crash is None and waited < timeout:
        ctx.go(On.WAITING)
        ctx.cond(
            Cond.PROGRESSING,
            TRUE,
            Reason.DEPLOYING,
            f"waiting for image {spec.image} to be ready: {detail}",
        )
        return
    why = crash or f"not ready within {spec.rollback.readiness_timeout}: {detail}"
    stable = st.last_stable_spec
    can_roll_back = (
        op.kind in (Kind.UPGRADE, Kind.REDEPLOY)
        and ctx.app.spec.rollback.enabled
        and stable is not None
        and workload_hash(ctx.name, stable, op.restore_path, ctx.policy.engine_service_account)
        != op.target_spec_hash
    )
    if can_roll_back and stable is not None:
        message = (
            f"image {spec.image} {why}; rolling back to image {stable.image} "
            f"{describe_restore(op.restore_path)}"
        )
        ctx.event(WARNING, EventReason.ROLLING_BACK, message)
        st.rolled_back_generation = op.generation
        digest = ctx.apply(stable, op.restore_path, 1)
        st.operation = op.model_copy(
            update={
                "kind": Kind.ROLLBACK,
                "target_spec_hash": digest,
                "deployed_at": ctx.now,
                "message": message,
            }
        )
        st.last_reconciled_spec = stable
        st.workload_hash = digest
        ctx.go(On.ROLLING_BACK)
        ctx.cond(Cond.PROGRESSING, TRUE, Reason.ROLLING_BACK, message)
        ctx.cond(Cond.DEGRADED, TRUE, Reason.UPGRADE_FAILED, message)
        return
    message = f"image {spec.image} {why}"
    if op.kind == Kind.ROLLBACK:
        message = f"the rollback to image {spec.image} is not ready either: {why}"
    if st.phase != Phase.FAILED:
        ctx.event(WARNING, EventReason.DEPLOY_FAILED, message + "; still waiting for it")
    ctx.go(On.FAILED)
    ctx.cond(Cond.PROGRESSING, FALSE, Reason.DEPLOY_FAILED, message)
    ctx.cond(Cond.DEGRADED, TRUE, Reason.DEPLOY_FAILED, message)


def _target_spec(st: StreamAppStatus, op: Operation) -> StreamAppSpec:
    if op.kind == Kind.ROLLBACK and st.last_stable_spec is not None:
        return st.last_stable_spec
    return running_spec(st)


def _deployed(ctx: Ctx, op: Operation, spec: StreamAppSpec) -> None:
    st = ctx.status
    st.operation = None
    st.image = spec.image
    st.restored_from = _restore_ref(ctx, op)
    ctx.go(On.READY)
    ctx.cond(Cond.READY, TRUE, Reason.JOB_RUNNING, f"image {spec.image} is running")
    if op.kind == Kind.ROLLBACK:
        message = op.message or f"rolled back to image {spec.image}"
        ctx.event(
            NORMAL,
            EventReason.ROLLED_BACK,
            f"rollback complete: image {spec.image} is running {describe_restore(op.restore_path)}",
        )
        ctx.cond(Cond.PROGRESSING, FALSE, Reason.ROLLED_BACK, message)
        ctx.cond(Cond.DEGRADED, TRUE, Reason.ROLLED_BACK, message)
        return
    st.last_stable_spec = spec
    st.rolled_back_generation = None
    verb = {
        Kind.UPGRADE: EventReason.UPGRADE_SUCCEEDED,
        Kind.RESUME: EventReason.RESUMED,
        Kind.REDEPLOY: EventReason.REDEPLOYED,
    }.get(op.kind, EventReason.DEPLOYED)
    ctx.event(NORMAL, verb, f"image {spec.image} is ready, {describe_restore(op.restore_path)}")
    ctx.cond(Cond.PROGRESSING, FALSE, Reason.IDLE, "the spec is reconciled")
    ctx.cond(Cond.DEGRADED, FALSE, Reason.HEALTHY, "the job is ready")
    if st.last_periodic_savepoint_at is None:
        st.last_periodic_savepoint_at = ctx.now


def _restore_ref(ctx: Ctx, op: Operation) -> SavepointRef | None:
    if op.restore_path is None:
        return None
    match = next(
        (
            s
            for s in ctx.observed.savepoints
            if s.path and s.path.rstrip("/") == op.restore_path.rstrip("/")
        ),
        None,
    )
    return SavepointRef(
        name=match.name if match else op.savepoint,
        path=op.restore_path,
        completed_at=match.completed_at if match else None,
    )


def _suspending(ctx: Ctx, op: Operation) -> None:
    st = ctx.status
    obs = ctx.observed
    running = running_spec(st)
    workload = workload_of(obs, running.workers)
    if workload is None or workload.replicas != 0:
        restore = st.restored_from.path if st.restored_from else None
        ctx.apply(running, restore, 0)
    if workload is not None and workload.replicas == 0 and not obs.pods:
        st.operation = None
        st.last_reconciled_spec = ctx.app.spec
        ctx.go(On.STOPPED)
        ctx.cond(
            Cond.READY,
            FALSE,
            Reason.SUSPENDED,
            "suspended" + (f" with savepoint {op.savepoint}" if op.savepoint else ""),
        )
        ctx.cond(Cond.PROGRESSING, FALSE, Reason.IDLE, "suspended")
        ctx.event(
            NORMAL,
            EventReason.SUSPENDED,
            "the engine is stopped"
            + (f"; it resumes from savepoint {op.savepoint}" if op.savepoint else ""),
        )
        return
    ctx.go(On.STOPPING)
    ctx.cond(Cond.PROGRESSING, TRUE, Reason.SCALING_DOWN, "waiting for the engine pod to stop")
