"""The StreamApp state machine: a pure function from (app, observation, now) to a Decision.

    decide(app, observed, now)            -> Decision(actions, status, finalize)

The Savepoint state machine is `decide_savepoint`; tunables and savepoint names are in
`policy`, shared by both.

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
4. A spec change is classified by `SPEC_CHANGES` (ignore < no-restart < upgrade <
   redeploy); only `upgrade` and `redeploy` restart the job.
5. No secret value ever enters a status, an Event or an action: only Secret names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rewind_operator.actions import (
    Action,
    ApplyWorkload,
    CreateSavepoint,
    DeleteSavepoint,
    EmitEvent,
)
from rewind_operator.models import (
    AppPhase,
    Condition,
    ConditionStatus,
    JobStatus,
    Operation,
    OperationKind,
    SavepointRef,
    StreamApp,
    StreamAppSpec,
    StreamAppStatus,
    UpgradeMode,
    parse_duration,
)
from rewind_operator.observed import AppObserved, PodObs, SavepointObs
from rewind_operator.policy import DEFAULT_POLICY, Policy, savepoint_name
from rewind_operator.workload import workload_hash

# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """What to do for a StreamApp, and the status to write afterwards."""

    actions: tuple[Action, ...]
    status: StreamAppStatus
    finalize: bool = False
    """Deletion only: the app may go (remove the finalizer) once the actions succeeded."""


# --------------------------------------------------------------------------- spec changes


class Change(enum.IntEnum):
    """How much a spec change disturbs the running job (ordered)."""

    IGNORE = 0
    """Nothing to do now (read at the next start)."""
    NO_RESTART = 1
    """Operator-side settings: applied at once, the job keeps running."""
    UPGRADE = 2
    """Needs a new engine process: goes through `upgradeMode` (savepoint first)."""
    REDEPLOY = 3
    """`restore.redeployNonce`: restart from a chosen savepoint, no new savepoint."""


SPEC_CHANGES: dict[str, Change] = {
    "image": Change.UPGRADE,
    "flow": Change.UPGRADE,
    "args": Change.UPGRADE,
    "parallelism": Change.UPGRADE,
    "maxParallelism": Change.UPGRADE,
    "upgradeMode": Change.IGNORE,
    "state": Change.IGNORE,  # suspend/resume has its own path
    "snapshots.location": Change.UPGRADE,
    "snapshots.credentialsSecret": Change.UPGRADE,
    "snapshots.checkpointInterval": Change.UPGRADE,
    "snapshots.savepointInterval": Change.NO_RESTART,
    "snapshots.savepointTimeout": Change.NO_RESTART,
    "snapshots.retain": Change.NO_RESTART,
    "restore.savepoint": Change.IGNORE,
    "restore.path": Change.IGNORE,
    "restore.allowNonRestoredState": Change.IGNORE,
    "restore.allowEmptyState": Change.IGNORE,
    "restore.redeployNonce": Change.REDEPLOY,
    "rollback": Change.NO_RESTART,
    "savepointOnDelete": Change.NO_RESTART,
    "restartNonce": Change.UPGRADE,
    "env": Change.UPGRADE,
    "resources": Change.UPGRADE,
    "podTemplate": Change.UPGRADE,
}
"""Spec field (camelCase path) -> the change it makes. A field missing here counts as
UPGRADE: an unknown change restarts safely rather than being silently ignored."""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: data}


def _kind_of(path: str) -> Change:
    parts = path.split(".")
    for length in range(len(parts), 0, -1):
        kind = SPEC_CHANGES.get(".".join(parts[:length]))
        if kind is not None:
            return kind
    return Change.UPGRADE


def changed_fields(old: StreamAppSpec, new: StreamAppSpec) -> list[str]:
    """The camelCase paths that differ between two specs."""
    a = _flatten(old.model_dump(by_alias=True, mode="json"))
    b = _flatten(new.model_dump(by_alias=True, mode="json"))
    return sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))


def classify(old: StreamAppSpec, new: StreamAppSpec) -> Change:
    """The largest change kind among the fields that differ."""
    return max((_kind_of(p) for p in changed_fields(old, new)), default=Change.IGNORE)


# --------------------------------------------------------------------------- helpers


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Conditions with `type_` set; lastTransitionTime moves only when status changes."""
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    rest = [c for c in conditions if c.type != type_]
    order = {"Ready": 0, "Progressing": 1, "Degraded": 2}
    return sorted([*rest, new], key=lambda c: order.get(c.type, 9))


def condition(status: StreamAppStatus, type_: str) -> Condition | None:
    """The condition of that type, if set."""
    return next((c for c in status.conditions if c.type == type_), None)


def _meta(app: StreamApp) -> tuple[str, str, str, int]:
    md = app.metadata
    return (
        str(md.get("name", "")),
        str(md.get("namespace", "")),
        str(md.get("uid", "")),
        int(md.get("generation") or 0),
    )


def _app_savepoints(app_name: str, observed: AppObserved) -> list[SavepointObs]:
    return [s for s in observed.savepoints if s.app == app_name]


def _find(observed: AppObserved, name: str | None) -> SavepointObs | None:
    return next((s for s in observed.savepoints if s.name == name), None)


def _pods_for(observed: AppObserved, digest: str | None) -> list[PodObs]:
    return [p for p in observed.pods if p.workload_hash == digest and not p.deleting]


def _is_ready(observed: AppObserved, digest: str | None) -> bool:
    if digest is None:
        return False
    if any(p.ready and p.phase == "Running" for p in _pods_for(observed, digest)):
        return True
    engine = observed.engine
    return bool(engine and engine.workload_hash == digest and engine.reachable and engine.ready)


def _crash_reason(observed: AppObserved, digest: str | None, policy: Policy) -> str | None:
    """Why the workload `digest` is clearly broken (not merely slow), if it is."""
    for pod in _pods_for(observed, digest):
        if pod.phase == "Failed":
            return f"pod {pod.name} failed: {pod.message or 'no message'}"
        if pod.restarts >= policy.crash_restarts or pod.waiting_reason == "CrashLoopBackOff":
            detail = f": {pod.message}" if pod.message else ""
            state = pod.waiting_reason or "crashed"
            return f"pod {pod.name} restarted {pod.restarts} times ({state}){detail}"
    engine = observed.engine
    if engine and engine.workload_hash == digest and engine.state == "FAILED":
        return f"the job failed: {engine.error or 'see the engine log'}"
    return None


def _not_ready_detail(observed: AppObserved, digest: str | None) -> str:
    pods = _pods_for(observed, digest)
    if not pods:
        return "no engine pod yet"
    pod = pods[0]
    if pod.waiting_reason:
        return f"pod {pod.name} is waiting: {pod.waiting_reason}" + (
            f" ({pod.message})" if pod.message else ""
        )
    return f"pod {pod.name} is {pod.phase} and not ready (restarts: {pod.restarts})"


def _job_status(observed: AppObserved, digest: str | None) -> JobStatus | None:
    engine = observed.engine
    if engine is None or not engine.reachable or engine.workload_hash != digest:
        return None
    return JobStatus(
        id=engine.job_id,
        state=engine.state,
        restored_from=engine.restored_from,
        sources=engine.sources,
        records_in=engine.records_in,
        records_out=engine.records_out,
        last_checkpoint=engine.last_checkpoint,
    )


def _newest_completed(savepoints: list[SavepointObs]) -> SavepointObs | None:
    done = [s for s in savepoints if s.phase == "Completed" and s.path and not s.deleting]
    return max(done, key=lambda s: (s.completed_at or s.created_at, s.name), default=None)


def _describe_restore(restore: str | None) -> str:
    if restore is None:
        return "from empty state"
    if restore == "latest":
        return "from the newest checkpoint"
    return f"restored from {restore}"


def _spec_summary(old: StreamAppSpec | None, new: StreamAppSpec) -> str:
    if old is not None and old.image != new.image:
        return f"image {old.image} -> {new.image}"
    if old is None:
        return f"image {new.image}"
    fields = ", ".join(changed_fields(old, new)) or "no field"
    return f"changed {fields}"


# --------------------------------------------------------------------------- validation


def validate(app: StreamApp, observed: AppObserved, policy: Policy = DEFAULT_POLICY) -> list[str]:
    """What is wrong with the spec beyond what the schema checks (empty = fine)."""
    spec = app.spec
    status = app.status
    mode = spec.upgrade_mode or policy.default_upgrade_mode
    problems: list[str] = []
    if spec.restore.savepoint and spec.restore.path:
        problems.append("restore.savepoint and restore.path are mutually exclusive")
    if spec.max_parallelism is not None and spec.parallelism > spec.max_parallelism:
        problems.append(
            f"parallelism {spec.parallelism} exceeds maxParallelism {spec.max_parallelism}"
        )
    if (
        spec.restore.path is not None
        and spec.restore.path != "latest"
        and not (spec.restore.path.startswith(("s3://", "file://")))
    ):
        problems.append(
            f"restore.path {spec.restore.path!r} is not an s3:// or file:// URI or 'latest'"
        )
    if spec.restore.path == "latest" and mode == "stateless":
        problems.append("restore.path 'latest' contradicts upgradeMode 'stateless'")
    names = [var.name for var in spec.env]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"env has duplicate names: {', '.join(dupes)}")
    reserved = sorted({"POD_IP", "POD_NAME", "POD_NAMESPACE", "REWIND_APP"} & set(names))
    if reserved:
        problems.append(f"env may not set {', '.join(reserved)} (set by the operator)")
    for field_name, text in (
        ("snapshots.savepointInterval", spec.snapshots.savepoint_interval),
        ("snapshots.savepointTimeout", spec.snapshots.savepoint_timeout),
        ("rollback.readinessTimeout", spec.rollback.readiness_timeout),
    ):
        if text is not None and parse_duration(text) <= timedelta(0):
            problems.append(f"{field_name} must be longer than zero")
    reconciled = status.last_reconciled_spec
    if (
        reconciled is not None
        and mode != "stateless"
        and reconciled.max_parallelism != spec.max_parallelism
        and reconciled.max_parallelism is not None
    ):
        problems.append(
            f"maxParallelism cannot change from {reconciled.max_parallelism} to "
            f"{spec.max_parallelism} while keeping state (it fixes the key groups); "
            "use upgradeMode: stateless or a new app"
        )
    if spec.snapshots.credentials_secret and observed.secret_exists is False:
        problems.append(
            f"credentials secret {spec.snapshots.credentials_secret!r} does not exist "
            "in this namespace"
        )
    return problems


# --------------------------------------------------------------------------- StreamApp


@dataclass
class _Ctx:
    """One reconcile in progress: inputs, and the decision being built."""

    app: StreamApp
    observed: AppObserved
    now: datetime
    policy: Policy
    name: str
    namespace: str
    uid: str
    generation: int
    status: StreamAppStatus
    actions: list[Action] = field(default_factory=list)

    def event(self, type_: str, reason: str, message: str) -> None:
        assert type_ in ("Normal", "Warning")
        self.actions.append(EmitEvent(type_, reason, message))  # type: ignore[arg-type]

    def cond(self, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions,
            type_,
            status,
            reason,
            message,
            now=self.now,
            generation=self.generation,
        )

    def reason_of(self, type_: str) -> str | None:
        found = condition(self.status, type_)
        return found.reason if found else None

    @property
    def mode(self) -> UpgradeMode:
        """The app's upgrade mode, or the operator's default."""
        return self.app.spec.upgrade_mode or self.policy.default_upgrade_mode

    def phase(self, phase: AppPhase) -> None:
        self.status.phase = phase

    def apply(self, spec: StreamAppSpec, restore: str | None, replicas: int) -> str:
        sa = self.policy.engine_service_account
        digest = workload_hash(self.name, spec, restore, sa)
        self.actions.append(ApplyWorkload(spec, restore, replicas, digest, sa))
        return digest

    def create_savepoint(
        self, name: str, reason: Any, *, stop: bool, dispose: bool = False
    ) -> None:
        self.actions.append(CreateSavepoint(name, reason, stop=stop, dispose_on_delete=dispose))


def decide(
    app: StreamApp, observed: AppObserved, now: datetime, policy: Policy = DEFAULT_POLICY
) -> Decision:
    """The next step for one StreamApp (see the module docstring)."""
    name, namespace, uid, generation = _meta(app)
    ctx = _Ctx(
        app=app,
        observed=observed,
        now=now,
        policy=policy,
        name=name,
        namespace=namespace,
        uid=uid,
        generation=generation,
        status=app.status.model_copy(deep=True),
    )
    _observe_into_status(ctx)
    if app.metadata.get("deletionTimestamp"):
        return _decide_delete(ctx)
    problems = validate(app, observed, policy)
    op = ctx.status.operation
    if problems:
        # Finish what is in flight with the spec accepted before: a completed
        # stop-with-savepoint must never leave the job stopped. The invalid change waits.
        if op is not None and op.stage == "savepoint":
            _wait_for_gate(ctx, op, ctx.status.last_reconciled_spec)
        elif op is not None and op.stage == "deploying":
            _deploying(ctx, op)
        return _invalid(ctx, problems)
    if op is None:
        _idle(ctx)
    elif op.stage == "savepoint":
        _wait_for_gate(ctx, op)
    elif op.stage == "blocked":
        _blocked(ctx, op)
    else:
        _deploying(ctx, op)
    if ctx.status.operation is None and ctx.status.phase not in ("Pending", "Failed"):
        _periodic(ctx)
    _retention(ctx)
    ctx.status.observed_generation = generation
    return Decision(tuple(ctx.actions), ctx.status)


def _observe_into_status(ctx: _Ctx) -> None:
    st = ctx.status
    digest = st.workload_hash
    st.job = _job_status(ctx.observed, digest)
    newest = _newest_completed(_app_savepoints(ctx.name, ctx.observed))
    if newest is not None:
        st.last_savepoint = SavepointRef(
            name=newest.name, path=newest.path, completed_at=newest.completed_at
        )


def _invalid(ctx: _Ctx, problems: list[str]) -> Decision:
    message = "; ".join(problems)
    running = ctx.status.last_reconciled_spec is not None
    if running:
        message += f" (the running version, image {ctx.status.image}, is left as it is)"
    else:
        message += " (nothing deployed)"
    if ctx.reason_of("Ready") != "InvalidSpec" or (
        (condition(ctx.status, "Ready") or Condition(type="Ready", status="False")).message
        != message
    ):
        ctx.event("Warning", "InvalidSpec", message)
    ctx.cond("Ready", "False", "InvalidSpec", message)
    ctx.cond("Progressing", "False", "InvalidSpec", "fix the spec to continue")
    if not running:
        ctx.phase("Failed")
    ctx.status.observed_generation = ctx.generation
    return Decision(tuple(ctx.actions), ctx.status)


# ---- idle: nothing in flight, compare desired with reconciled


def _idle(ctx: _Ctx) -> None:
    spec = ctx.app.spec
    st = ctx.status
    reconciled = st.last_reconciled_spec
    if reconciled is None:
        if spec.state == "suspended":
            ctx.phase("Suspended")
            ctx.cond("Ready", "False", "Suspended", "suspended before its first start")
            ctx.cond("Progressing", "False", "Idle", "nothing to do")
            return
        _first_deploy(ctx)
        return
    if reconciled.state == "running" and spec.state == "suspended":
        _start_suspend(ctx)
        return
    if reconciled.state == "suspended":
        if spec.state == "running":
            _start_resume(ctx)
        else:
            st.last_reconciled_spec = spec
            ctx.phase("Suspended")
            ctx.cond("Ready", "False", "Suspended", "suspended")
            ctx.cond("Progressing", "False", "Idle", "suspended")
        return
    change = classify(reconciled, spec)
    if change == Change.REDEPLOY:
        _start_redeploy(ctx)
        return
    if change == Change.UPGRADE and st.rolled_back_generation != ctx.generation:
        _start_upgrade(ctx)
        return
    if change == Change.NO_RESTART:
        fields = [f for f in changed_fields(reconciled, spec) if _kind_of(f) == Change.NO_RESTART]
        ctx.event("Normal", "SpecApplied", f"applied without restart: {', '.join(fields)}")
    if change <= Change.NO_RESTART:
        st.last_reconciled_spec = spec
    _steady(ctx)


def _steady(ctx: _Ctx) -> None:
    """Nothing to change: keep the workload as built, report health."""
    st = ctx.status
    obs = ctx.observed
    if st.last_reconciled_spec is not None and (
        obs.deployment is None or obs.deployment.workload_hash != st.workload_hash
    ):
        # Someone deleted or edited the Deployment: put back what we built.
        restore = st.restored_from.path if st.restored_from else None
        st.workload_hash = ctx.apply(_running_spec(st), restore, 1)
        ctx.event(
            "Warning",
            "WorkloadRestored",
            "the engine Deployment was missing or changed; re-applied it",
        )
    ready = _is_ready(obs, st.workload_hash)
    rolled_back = st.rolled_back_generation == ctx.generation
    if ready:
        ctx.phase("Running")
        ctx.cond("Ready", "True", "JobRunning", f"image {st.image} is running")
        if not rolled_back:
            ctx.cond("Degraded", "False", "Healthy", "the job is ready")
            ctx.cond("Progressing", "False", "Idle", "the spec is reconciled")
        return
    crash = _crash_reason(obs, st.workload_hash, ctx.policy)
    detail = crash or _not_ready_detail(obs, st.workload_hash)
    if ctx.reason_of("Ready") == "JobRunning":
        ctx.event("Warning", "JobNotReady", detail)
    ctx.cond("Ready", "False", "JobNotReady", detail)
    if crash:
        ctx.cond("Degraded", "True", "JobCrashing", crash)


def _running_spec(st: StreamAppStatus) -> StreamAppSpec:
    assert st.last_reconciled_spec is not None, "only called once something was deployed"
    return st.last_reconciled_spec


def _restore_named(ctx: _Ctx) -> tuple[bool, str | None, str | None]:
    """(ok, restore, problem) for `spec.restore.savepoint`/`path`; ok=False = wait."""
    restore = ctx.app.spec.restore
    if restore.path is not None:
        return True, restore.path, None
    if restore.savepoint is not None:
        sp = _find(ctx.observed, restore.savepoint)
        if sp is None:
            return False, None, f"Savepoint {restore.savepoint!r} not found in {ctx.namespace}"
        if sp.phase == "Completed" and sp.path:
            return True, sp.path, None
        if sp.phase in ("Failed", "Abandoned"):
            return False, None, f"Savepoint {restore.savepoint!r} is {sp.phase}: {sp.error}"
        return False, None, f"waiting for Savepoint {restore.savepoint!r} ({sp.phase})"
    return True, None, None


def _first_deploy(ctx: _Ctx) -> None:
    spec = ctx.app.spec
    obs = ctx.observed
    ok, restore, problem = _restore_named(ctx)
    if not ok:
        ctx.phase("Pending")
        reason = "RestoreSavepointNotReady"
        if ctx.reason_of("Ready") != reason:
            ctx.event("Warning", reason, problem or "")
        ctx.cond("Ready", "False", reason, problem or "")
        ctx.cond("Progressing", "False", reason, problem or "")
        return
    if restore is None and ctx.mode != "stateless" and not spec.restore.allow_empty_state:
        existing = [s.name for s in _app_savepoints(ctx.name, obs) if s.phase == "Completed"]
        stored = list(obs.stored_snapshots or ())
        refuse = None
        if existing or stored:
            found = (
                f"Savepoints {', '.join(sorted(existing)[:3])}"
                if existing
                else f"{len(stored)} snapshot(s) under {spec.snapshots.location}, "
                f"newest {stored[0]}"
            )
            refuse = (
                f"refusing to start from empty state: found {found}. Set spec.restore.savepoint "
                "(a Savepoint name) or spec.restore.path (a URI, or 'latest') to continue from "
                "it, or spec.restore.allowEmptyState: true to start empty"
            )
        elif obs.storage_error is not None:
            refuse = (
                f"cannot check {spec.snapshots.location} for existing state "
                f"({obs.storage_error}); set spec.restore.allowEmptyState: true to start "
                "empty without checking"
            )
        if refuse is not None:
            ctx.phase("Pending")
            reason = "EmptyStateRefused"
            if ctx.reason_of("Ready") != reason:
                ctx.event("Warning", reason, refuse)
            ctx.cond("Ready", "False", reason, refuse)
            ctx.cond("Progressing", "False", reason, refuse)
            return
    _deploy(
        ctx, "deploy", spec, restore, f"deploying image {spec.image} {_describe_restore(restore)}"
    )


def _deploy(
    ctx: _Ctx,
    kind: OperationKind,
    spec: StreamAppSpec,
    restore: str | None,
    message: str,
    *,
    savepoint: str | None = None,
    attempt: int = 0,
    started: datetime | None = None,
) -> None:
    st = ctx.status
    digest = ctx.apply(spec, restore, 1)
    st.operation = Operation(
        kind=kind,
        stage="deploying",
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
    ctx.phase({"upgrade": "Upgrading", "rollback": "RollingBack"}.get(kind, "Deploying"))  # type: ignore[arg-type]
    ctx.cond("Progressing", "True", "Deploying", message)
    ctx.event("Normal", "Deploying" if kind != "rollback" else "RollingBack", message)


def _gate_name(ctx: _Ctx, kind: str, attempt: int) -> str:
    return savepoint_name(ctx.name, ctx.uid, kind, f"g{ctx.generation}", attempt)


def _start_gated(ctx: _Ctx, kind: OperationKind, message: str, attempt: int = 0) -> None:
    """Begin an operation that first takes a stop-with-savepoint."""
    name = _gate_name(ctx, kind, attempt)
    ctx.create_savepoint(name, kind, stop=True)
    previous = ctx.status.operation
    ctx.status.operation = Operation(
        kind=kind,
        stage="savepoint",
        generation=ctx.generation,
        savepoint=name,
        attempt=attempt,
        started_at=previous.started_at if previous else ctx.now,
    )
    ctx.phase("Upgrading" if kind == "upgrade" else "Suspending")
    ctx.cond("Progressing", "True", "SavepointInProgress", message)
    ctx.event("Normal", "SavepointRequested", message)


def _current_ready(ctx: _Ctx) -> bool:
    return _is_ready(ctx.observed, ctx.status.workload_hash)


def _start_upgrade(ctx: _Ctx) -> None:
    spec = ctx.app.spec
    st = ctx.status
    summary = _spec_summary(st.last_reconciled_spec, spec)
    if ctx.mode == "stateless":
        ctx.event("Normal", "UpgradeStarted", f"{summary}: stateless upgrade, restarting empty")
        _deploy(ctx, "upgrade", spec, None, f"{summary}: deploying from empty state")
        return
    if ctx.mode == "last-state" or not _current_ready(ctx):
        why = (
            "last-state upgrade"
            if ctx.mode == "last-state"
            else "the running version is not ready, so no savepoint can be taken; restarting from "
            "the newest checkpoint"
        )
        ctx.event("Normal", "UpgradeStarted", f"{summary}: {why}")
        _deploy(ctx, "upgrade", spec, "latest", f"{summary}: deploying from the newest checkpoint")
        return
    ctx.event("Normal", "UpgradeStarted", f"{summary}: taking a savepoint first")
    _start_gated(
        ctx, "upgrade", f"{summary}: waiting for savepoint {_gate_name(ctx, 'upgrade', 0)}"
    )


def _start_suspend(ctx: _Ctx) -> None:
    if ctx.mode != "savepoint" or not _current_ready(ctx):
        _scale_down(ctx, None)
        return
    _start_gated(
        ctx, "suspend", f"suspending: waiting for savepoint {_gate_name(ctx, 'suspend', 0)}"
    )


def _scale_down(ctx: _Ctx, savepoint: str | None) -> None:
    st = ctx.status
    running = _running_spec(st)
    restore = st.restored_from.path if st.restored_from else None
    digest = ctx.apply(running, restore, 0)
    st.workload_hash = digest
    st.operation = Operation(
        kind="suspend",
        stage="deploying",
        generation=ctx.generation,
        target_spec_hash=digest,
        savepoint=savepoint,
        started_at=st.operation.started_at if st.operation else ctx.now,
        deployed_at=ctx.now,
    )
    ctx.phase("Suspending")
    ctx.cond("Progressing", "True", "ScalingDown", "stopping the engine")
    ctx.event(
        "Normal",
        "Suspending",
        "scaling the engine to zero" + (f" after savepoint {savepoint}" if savepoint else ""),
    )


def _start_resume(ctx: _Ctx) -> None:
    spec = ctx.app.spec
    st = ctx.status
    if ctx.mode == "stateless":
        restore = None
    elif ctx.mode == "last-state":
        restore = "latest"
    elif st.last_savepoint is not None and st.last_savepoint.path:
        restore = st.last_savepoint.path
    else:
        restore = "latest"
    _deploy(
        ctx, "resume", spec, restore, f"resuming image {spec.image} {_describe_restore(restore)}"
    )


def _start_redeploy(ctx: _Ctx) -> None:
    spec = ctx.app.spec
    previous = ctx.reason_of("Progressing")
    ok, restore, problem = _restore_named(ctx)
    if ok and restore is None:
        newest = ctx.status.last_savepoint
        restore = newest.path if newest and newest.path else None
        if restore is None:
            ok, problem = False, "redeployNonce changed but there is no savepoint to redeploy from"
    if not ok:
        reason = "NoSavepoint" if spec.restore.savepoint is None else "RestoreSavepointNotReady"
        _steady(ctx)
        if previous != reason:
            ctx.event("Warning", reason, problem or "")
        ctx.cond("Progressing", "False", reason, problem or "")
        return
    _deploy(
        ctx,
        "redeploy",
        spec,
        restore,
        f"redeploying image {spec.image} {_describe_restore(restore)}",
    )


# ---- an operation waits for its gating savepoint


def _wait_for_gate(ctx: _Ctx, op: Operation, fallback: StreamAppSpec | None = None) -> None:
    st = ctx.status
    sp = _find(ctx.observed, op.savepoint)
    # The stop-with-savepoint decides the fate of the running job; whatever the spec says
    # now (even if it was changed again meanwhile) is what starts from it.
    if sp is None or sp.phase in ("Pending", "InProgress"):
        if sp is None and op.savepoint:
            ctx.create_savepoint(op.savepoint, op.kind, stop=True)  # idempotent re-issue
        state = sp.phase if sp else "being created"
        extra = f", {sp.failures} failed attempt(s): {sp.error}" if sp and sp.failures else ""
        ctx.cond(
            "Progressing",
            "True",
            "SavepointInProgress",
            f"savepoint {op.savepoint} is {state}{extra}",
        )
        ctx.phase("Upgrading" if op.kind == "upgrade" else "Suspending")
        _report_ready(ctx)
        return
    if sp.phase == "Completed" and sp.path:
        ctx.event("Normal", "SavepointCompleted", f"savepoint {sp.name} completed at {sp.path}")
        if op.kind == "suspend":
            _scale_down(ctx, sp.name)
            return
        spec = fallback or ctx.app.spec
        summary = _spec_summary(st.last_reconciled_spec, spec)
        _deploy(
            ctx,
            "upgrade",
            spec,
            sp.path,
            f"{summary}: deploying {_describe_restore(sp.path)}",
            savepoint=sp.name,
            attempt=op.attempt,
            started=op.started_at,
        )
        return
    # Failed or Abandoned: the running version is untouched (a failed stop-with-savepoint
    # leaves the job running). Block, and try a fresh savepoint later.
    retry_at = ctx.now + ctx.policy.upgrade_retry_delay
    what = "upgrade" if op.kind == "upgrade" else "suspend"
    message = (
        f"savepoint {sp.name} {sp.phase.lower()}: {sp.error or 'no reason given'}; the "
        f"{what} is on hold, image {st.image} keeps running; next attempt at "
        f"{retry_at.isoformat()}"
    )
    st.operation = op.model_copy(
        update={"stage": "blocked", "retry_at": retry_at, "message": message}
    )
    ctx.phase("Running")
    ctx.cond("Progressing", "False", "SavepointFailed", message)
    ctx.event("Warning", "SavepointFailed", message)
    _report_ready(ctx)


def _blocked(ctx: _Ctx, op: Operation) -> None:
    st = ctx.status
    spec = ctx.app.spec
    reconciled = st.last_reconciled_spec
    still_wanted = (
        reconciled is None
        or (op.kind == "suspend" and spec.state == "suspended")
        or (op.kind == "upgrade" and classify(reconciled, spec) >= Change.UPGRADE)
    )
    if not still_wanted:
        st.operation = None
        ctx.event("Normal", "OperationCancelled", f"the {op.kind} is no longer wanted by the spec")
        ctx.cond("Progressing", "False", "Idle", "the spec is reconciled")
        _idle(ctx)
        return
    if op.retry_at is not None and ctx.now < op.retry_at:
        ctx.phase("Running")
        ctx.cond("Progressing", "False", "SavepointFailed", op.message or "savepoint failed")
        _report_ready(ctx)
        return
    attempt = op.attempt + 1
    name = _gate_name(ctx, op.kind, attempt)
    _start_gated(
        ctx, op.kind, f"{op.kind}: new attempt {attempt}, waiting for savepoint {name}", attempt
    )


def _report_ready(ctx: _Ctx) -> None:
    if _is_ready(ctx.observed, ctx.status.workload_hash):
        ctx.cond("Ready", "True", "JobRunning", f"image {ctx.status.image} is running")
    else:
        ctx.cond(
            "Ready",
            "False",
            "JobNotReady",
            _not_ready_detail(ctx.observed, ctx.status.workload_hash),
        )


# ---- an operation waits for its workload


def _deploying(ctx: _Ctx, op: Operation) -> None:
    st = ctx.status
    obs = ctx.observed
    spec = _target_spec(st, op)
    if op.kind == "suspend":
        _suspending(ctx, op)
        return
    if obs.deployment is None or obs.deployment.workload_hash != op.target_spec_hash:
        ctx.apply(spec, op.restore_path, 1)  # not there yet (or lost): apply again
    if _is_ready(obs, op.target_spec_hash):
        _deployed(ctx, op, spec)
        return
    timeout = parse_duration(spec.rollback.readiness_timeout)
    waited = ctx.now - (op.deployed_at or ctx.now)
    crash = _crash_reason(obs, op.target_spec_hash, ctx.policy)
    detail = crash or _not_ready_detail(obs, op.target_spec_hash)
    ctx.cond("Ready", "False", "JobNotReady", detail)
    if crash is None and waited < timeout:
        ctx.cond(
            "Progressing",
            "True",
            "Deploying",
            f"waiting for image {spec.image} to be ready: {detail}",
        )
        return
    why = crash or f"not ready within {spec.rollback.readiness_timeout}: {detail}"
    stable = st.last_stable_spec
    can_roll_back = (
        op.kind in ("upgrade", "redeploy")
        and ctx.app.spec.rollback.enabled
        and stable is not None
        and workload_hash(ctx.name, stable, op.restore_path, ctx.policy.engine_service_account)
        != op.target_spec_hash
    )
    if can_roll_back and stable is not None:
        message = (
            f"image {spec.image} {why}; rolling back to image {stable.image} "
            f"{_describe_restore(op.restore_path)}"
        )
        ctx.event("Warning", "RollingBack", message)
        st.rolled_back_generation = op.generation
        digest = ctx.apply(stable, op.restore_path, 1)
        st.operation = op.model_copy(
            update={
                "kind": "rollback",
                "target_spec_hash": digest,
                "deployed_at": ctx.now,
                "message": message,
            }
        )
        st.last_reconciled_spec = stable
        st.workload_hash = digest
        ctx.phase("RollingBack")
        ctx.cond("Progressing", "True", "RollingBack", message)
        ctx.cond("Degraded", "True", "UpgradeFailed", message)
        return
    message = f"image {spec.image} {why}"
    if op.kind == "rollback":
        message = f"the rollback to image {spec.image} is not ready either: {why}"
    if st.phase != "Failed":
        ctx.event("Warning", "DeployFailed", message + "; still waiting for it")
    ctx.phase("Failed")
    ctx.cond("Progressing", "False", "DeployFailed", message)
    ctx.cond("Degraded", "True", "DeployFailed", message)


def _target_spec(st: StreamAppStatus, op: Operation) -> StreamAppSpec:
    if op.kind == "rollback" and st.last_stable_spec is not None:
        return st.last_stable_spec
    return _running_spec(st)


def _deployed(ctx: _Ctx, op: Operation, spec: StreamAppSpec) -> None:
    st = ctx.status
    st.operation = None
    st.image = spec.image
    st.restored_from = _restore_ref(ctx, op)
    ctx.phase("Running")
    ctx.cond("Ready", "True", "JobRunning", f"image {spec.image} is running")
    if op.kind == "rollback":
        message = op.message or f"rolled back to image {spec.image}"
        ctx.event(
            "Normal",
            "RolledBack",
            f"rollback complete: image {spec.image} is running "
            f"{_describe_restore(op.restore_path)}",
        )
        ctx.cond("Progressing", "False", "RolledBack", message)
        ctx.cond("Degraded", "True", "RolledBack", message)
        return
    st.last_stable_spec = spec
    st.rolled_back_generation = None
    verb = {"upgrade": "UpgradeSucceeded", "resume": "Resumed", "redeploy": "Redeployed"}.get(
        op.kind, "Deployed"
    )
    ctx.event("Normal", verb, f"image {spec.image} is ready, {_describe_restore(op.restore_path)}")
    ctx.cond("Progressing", "False", "Idle", "the spec is reconciled")
    ctx.cond("Degraded", "False", "Healthy", "the job is ready")
    if st.last_periodic_savepoint_at is None:
        st.last_periodic_savepoint_at = ctx.now


def _restore_ref(ctx: _Ctx, op: Operation) -> SavepointRef | None:
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


def _suspending(ctx: _Ctx, op: Operation) -> None:
    st = ctx.status
    obs = ctx.observed
    if obs.deployment is None or obs.deployment.replicas != 0:
        running = _running_spec(st)
        restore = st.restored_from.path if st.restored_from else None
        ctx.apply(running, restore, 0)
    if obs.deployment is not None and obs.deployment.replicas == 0 and not obs.pods:
        st.operation = None
        st.last_reconciled_spec = ctx.app.spec
        ctx.phase("Suspended")
        ctx.cond(
            "Ready",
            "False",
            "Suspended",
            "suspended" + (f" with savepoint {op.savepoint}" if op.savepoint else ""),
        )
        ctx.cond("Progressing", "False", "Idle", "suspended")
        ctx.event(
            "Normal",
            "Suspended",
            "the engine is stopped"
            + (f"; it resumes from savepoint {op.savepoint}" if op.savepoint else ""),
        )
        return
    ctx.phase("Suspending")
    ctx.cond("Progressing", "True", "ScalingDown", "waiting for the engine pod to stop")


# ---- periodic savepoints and retention


def _periodic(ctx: _Ctx) -> None:
    spec = ctx.app.spec
    st = ctx.status
    interval_text = spec.snapshots.savepoint_interval
    if interval_text is None or spec.state != "running" or st.phase != "Running":
        return
    if not _is_ready(ctx.observed, st.workload_hash):
        return
    mine = [s for s in _app_savepoints(ctx.name, ctx.observed) if s.reason == "periodic"]
    if any(s.phase in ("Pending", "InProgress") for s in mine):
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
    name = savepoint_name(ctx.name, ctx.uid, "periodic", serial)
    ctx.create_savepoint(name, "periodic", stop=False, dispose=True)
    st.last_periodic_savepoint_at = ctx.now
    ctx.event("Normal", "PeriodicSavepoint", f"requested periodic savepoint {name}")


def retention_victims(
    savepoints: list[SavepointObs],
    *,
    count: int | None,
    max_age: timedelta | None,
    protected: set[str],
    now: datetime,
) -> list[str]:
    """Names of periodic savepoints that retention deletes (oldest first).

    Only `periodic` savepoints in a final phase are candidates; `protected` (the one the
    app restored from, the newest) never are. Failed/Abandoned ones go once a newer
    periodic savepoint completed."""
    periodic = [s for s in savepoints if s.reason == "periodic" and not s.deleting]
    completed = sorted(
        (s for s in periodic if s.phase == "Completed"),
        key=lambda s: (s.completed_at or s.created_at, s.name),
        reverse=True,
    )
    victims: set[str] = set()
    if count is not None:
        victims |= {s.name for s in completed[count:]}
    if max_age is not None:
        victims |= {s.name for s in completed if now - (s.completed_at or s.created_at) > max_age}
    if completed:
        newest = completed[0].completed_at or completed[0].created_at
        victims |= {
            s.name for s in periodic if s.phase in ("Failed", "Abandoned") and s.created_at < newest
        }
        protected = protected | {completed[0].name}
    ordered = sorted(periodic, key=lambda s: (s.created_at, s.name))
    return [s.name for s in ordered if s.name in victims and s.name not in protected]


def _retention(ctx: _Ctx) -> None:
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
        _app_savepoints(ctx.name, ctx.observed),
        count=retain.count,
        max_age=parse_duration(retain.max_age) if retain.max_age else None,
        protected=protected,
        now=ctx.now,
    )
    for name in victims:
        ctx.actions.append(DeleteSavepoint(name))
    if victims:
        ctx.event(
            "Normal", "RetentionApplied", f"deleting periodic savepoints {', '.join(victims)}"
        )


# ---- deletion


def _decide_delete(ctx: _Ctx) -> Decision:
    spec = ctx.app.spec
    st = ctx.status
    ctx.phase("Deleting")
    if not spec.savepoint_on_delete or st.last_reconciled_spec is None:
        return Decision(tuple(ctx.actions), st, finalize=True)
    name = savepoint_name(ctx.name, ctx.uid, "delete", "final")
    sp = _find(ctx.observed, name)
    if sp is None:
        if not _current_ready(ctx):
            ctx.event(
                "Warning",
                "NoFinalSavepoint",
                "the job is not running: deleting without a "
                "final savepoint; earlier savepoints and checkpoints are kept",
            )
            return Decision(tuple(ctx.actions), st, finalize=True)
        ctx.create_savepoint(name, "delete", stop=True)
        ctx.event("Normal", "FinalSavepoint", f"taking final savepoint {name} before deletion")
        ctx.cond("Progressing", "True", "FinalSavepoint", f"waiting for final savepoint {name}")
        return Decision(tuple(ctx.actions), st)
    if sp.phase in ("Pending", "InProgress"):
        ctx.cond(
            "Progressing",
            "True",
            "FinalSavepoint",
            f"waiting for final savepoint {name} ({sp.phase})",
        )
        return Decision(tuple(ctx.actions), st)
    if sp.phase == "Completed":
        ctx.event(
            "Normal",
            "FinalSavepointCompleted",
            f"final savepoint {name} at {sp.path}; the app is deleted",
        )
    else:
        ctx.event(
            "Warning",
            "FinalSavepointFailed",
            f"final savepoint {name} {sp.phase.lower()}: {sp.error}; "
            "deleting anyway (earlier savepoints and checkpoints are kept)",
        )
    return Decision(tuple(ctx.actions), st, finalize=True)
