"""The restore preflight of an upgrade (pure): the new version proves that it can read
the app's state before the running version is stopped.

    start(ctx, summary)          at rest: create the preflight Job, stage `preflight`
    waiting(ctx, op) -> bool     stage `preflight`: passed -> the upgrade goes on (a
                                 savepoint first, or a restart from the newest checkpoint);
                                 failed (exit 1) or unstartable -> stage `refused`;
                                 no verdict (exit 3: storage unreadable, or no answer
                                 in time) -> the upgrade goes on as without a preflight
    refused(ctx, op) -> bool     stage `refused`: stays until the spec changes
    tidy(ctx)                    after every reconcile: delete preflight Jobs no longer used

(True: the spec changed under the operation, which ended; the app is at rest again.)

Its one pod (a Job that is never retried) runs the new image with the arguments of the
real start plus `--preflight` (`workload.preflight_job`): the engine restores the app's
newest snapshot into the new code's subtasks without reading a source or writing a
sink, and exits 0 with its report or 1 with the error (uid, step, file), which the
termination message carries here.

What must stay true:
- nothing here stops, scales or replaces the running version: the only way on to the
  stop-with-savepoint is a preflight pod that succeeded;
- one Job per spec generation (a deterministic name), created again if it is lost;
  a Job is deleted only once neither the stored status nor the one being written names
  it: an operator that dies before writing the pass finds the pod (and its pass) again
  instead of running a second preflight; a refused upgrade keeps its Job for
  `kubectl logs` until the spec changes;
- `status.lastPreflight` remembers the outcome (image, generation, report, times).
"""

from __future__ import annotations

from rewind_operator.changes import restart_digest, spec_summary
from rewind_operator.context import Ctx
from rewind_operator.lifecycle import On
from rewind_operator.models import Operation, PreflightResult, parse_duration
from rewind_operator.operations import begin_upgrade, report_ready
from rewind_operator.vocabulary import (
    FALSE,
    IMAGE_PROBLEMS,
    NORMAL,
    PREFLIGHT_UNCHECKED_EXIT,
    TRUE,
    WARNING,
    Cond,
    EventReason,
    Kind,
    PodPhase,
    Reason,
    Stage,
)
from rewind_operator.workload import preflight_name


def wanted(ctx: Ctx) -> bool:
    """Whether an upgrade of this app begins with a preflight."""
    return ctx.strategy.preflight and ctx.app.spec.preflight.enabled


def start(ctx: Ctx, summary: str) -> None:
    """Begin an upgrade with its preflight Job; the running version is not touched."""
    spec = ctx.app.spec
    name = preflight_name(ctx.name, ctx.generation)
    ctx.go(On.UPGRADE_WITH_PREFLIGHT)
    ctx.run_preflight(name, spec)
    ctx.status.operation = Operation(
        kind=Kind.UPGRADE,
        stage=Stage.PREFLIGHT,
        generation=ctx.generation,
        preflight_job=name,
        preflight_spec=restart_digest(spec),
        started_at=ctx.now,
    )
    ctx.event(
        NORMAL,
        EventReason.UPGRADE_STARTED,
        f"{summary}: {ctx.strategy.upgrade_words}, after a restore preflight (job {name})",
    )
    ctx.cond(
        Cond.PROGRESSING,
        TRUE,
        Reason.PREFLIGHT_RUNNING,
        f"{summary}: checking that image {spec.image} restores the app's state (job {name})",
    )
    report_ready(ctx)


def waiting(ctx: Ctx, op: Operation) -> bool:
    """Stage `preflight`: go on, refuse, or keep waiting for the pod."""
    if restart_digest(ctx.app.spec) != op.preflight_spec:
        return _spec_changed(ctx, op)
    spec = ctx.app.spec
    found = next((p for p in ctx.observed.preflights if p.name == op.preflight_job), None)
    if found is not None and found.phase == PodPhase.SUCCEEDED:
        report = found.message or "passed"
        _remember(ctx, op, passed=True, message=report)
        ctx.event(NORMAL, EventReason.PREFLIGHT_PASSED, f"image {spec.image}: {report}")
        summary = spec_summary(ctx.status.last_reconciled_spec, spec)
        begin_upgrade(
            ctx,
            f"{summary}: preflight passed",
            with_savepoint=On.PREFLIGHT_PASSED,
            without_savepoint=On.PREFLIGHT_PASSED_NO_SAVEPOINT,
        )
        return False
    failure = unchecked = None
    if found is not None and found.phase == PodPhase.FAILED:
        if found.exit_code == PREFLIGHT_UNCHECKED_EXIT:
            unchecked = found.message or "the snapshot could not be read"
        else:
            failure = found.message or "the preflight pod failed without a message"
    elif found is not None and found.waiting_reason in IMAGE_PROBLEMS:
        failure = f"the new image cannot be started: {found.message}"
    elif ctx.now - (op.started_at or ctx.now) >= parse_duration(spec.preflight.timeout):
        where = f"pod {found.phase}: {found.message}" if found else "its pod does not exist"
        unchecked = f"it did not finish within {spec.preflight.timeout} ({where})"
    if unchecked is not None:
        # No verdict on the new version (storage down or hanging, a slow cluster): go on
        # as without a preflight; a savepoint that fails still leaves v1 running.
        _remember(ctx, op, passed=False, message=f"could not check: {unchecked}")
        ctx.event(
            WARNING,
            EventReason.PREFLIGHT_INCONCLUSIVE,
            f"the restore preflight of image {spec.image} could not check: {unchecked}; "
            "upgrading without its verdict",
        )
        begin_upgrade(
            ctx,
            f"{spec_summary(ctx.status.last_reconciled_spec, spec)}: preflight inconclusive",
            with_savepoint=On.PREFLIGHT_INCONCLUSIVE,
            without_savepoint=On.PREFLIGHT_INCONCLUSIVE_NO_SAVEPOINT,
        )
        return False
    if failure is not None:
        _refuse(ctx, op, failure, keep_pod=found is not None and found.phase == PodPhase.FAILED)
        return False
    if found is None:
        ctx.run_preflight(op.preflight_job or preflight_name(ctx.name, ctx.generation), spec)
    ctx.go(On.PREFLIGHT_PENDING)
    ctx.cond(
        Cond.PROGRESSING,
        TRUE,
        Reason.PREFLIGHT_RUNNING,
        f"checking that image {spec.image} restores the app's state (job {op.preflight_job}: "
        f"{found.phase if found else 'being created'})",
    )
    report_ready(ctx)
    return False


def refused(ctx: Ctx, op: Operation) -> bool:
    """Stage `refused`: the running version runs on until the spec changes."""
    if restart_digest(ctx.app.spec) != op.preflight_spec:
        return _spec_changed(ctx, op)
    ctx.go(On.STILL_REFUSED)
    ctx.cond(Cond.PROGRESSING, FALSE, Reason.PREFLIGHT_FAILED, op.message or "preflight failed")
    report_ready(ctx)
    return False


def _refuse(ctx: Ctx, op: Operation, failure: str, *, keep_pod: bool) -> None:
    st = ctx.status
    spec = ctx.app.spec
    _remember(ctx, op, passed=False, message=failure)
    logs = f" (kubectl logs job/{op.preflight_job})" if keep_pod else ""
    message = (
        f"the upgrade to image {spec.image} is refused, its restore preflight failed: "
        f"{failure}{logs}; image {st.image} keeps running. Change the spec to try again"
    )
    st.operation = op.model_copy(
        update={
            "stage": Stage.REFUSED,
            "message": message,
            "preflight_job": op.preflight_job if keep_pod else None,
        }
    )
    ctx.go(On.PREFLIGHT_FAILED)
    ctx.cond(Cond.PROGRESSING, FALSE, Reason.PREFLIGHT_FAILED, message)
    ctx.cond(Cond.DEGRADED, TRUE, Reason.PREFLIGHT_FAILED, message)
    ctx.event(WARNING, EventReason.PREFLIGHT_FAILED, message)
    report_ready(ctx)


def tidy(ctx: Ctx) -> None:
    """Delete the app's preflight Jobs that neither the stored status nor the new one
    names (passed, replaced by a newer spec's, or left by an earlier operation)."""
    named = {
        op.preflight_job
        for op in (ctx.app.status.operation, ctx.status.operation)
        if op is not None and op.preflight_job
    }
    for pod in ctx.observed.preflights:
        if pod.name not in named:
            ctx.delete_preflight(pod.name)


def _spec_changed(ctx: Ctx, op: Operation) -> bool:
    ctx.status.operation = None
    ctx.go(On.SPEC_CHANGED)
    ctx.event(
        NORMAL,
        EventReason.OPERATION_CANCELLED,
        f"the spec changed (generation {op.generation} -> {ctx.generation}) in the "
        f"upgrade's {op.stage} stage; the new spec starts over",
    )
    return True


def _remember(ctx: Ctx, op: Operation, *, passed: bool, message: str) -> None:
    ctx.status.last_preflight = PreflightResult(
        job=op.preflight_job or "",
        image=ctx.app.spec.image,
        generation=op.generation or ctx.generation,
        passed=passed,
        message=message,
        started_at=op.started_at,
        finished_at=ctx.now,
    )
