"""Build the typed snapshots `decide` reads: the API server, the engine, object storage.

StreamApp/Savepoint -> AppObserved / SavepointObserved. What must stay true: observing
changes nothing; a part that cannot be reached is reported as such (an error string, a
None) rather than raising, so `decide` can say what is wrong; secret values are used
for storage calls and dropped, never stored in an observation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rewind_operator import engine_client, k8s, storage
from rewind_operator.lanes import app_key
from rewind_operator.models import Savepoint, StreamApp, parse_duration
from rewind_operator.observed import (
    AppObserved,
    DeploymentObs,
    EngineObs,
    PodObs,
    PreflightObs,
    SavepointObs,
    SavepointObserved,
    TriggerObs,
    WorkerReport,
)
from rewind_operator.policy import savepoint_target
from rewind_operator.settings import Settings
from rewind_operator.strategy import strategy_for
from rewind_operator.vocabulary import (
    POD_INDEX_LABEL,
    SAVEPOINT_APP_UID_LABEL,
    SAVEPOINT_TERMINAL,
    Desired,
    EngineState,
    PodPhase,
    SpPhase,
    SpReason,
    savepoint_phase,
)
from rewind_operator.workload import (
    CONTROL_PORT,
    HASH_ANNOTATION,
    PREFLIGHT_LABEL,
    app_identity,
    preflight_selector,
    selector_labels,
    workload_name,
)


def _time(text: Any) -> datetime | None:
    if not text:
        return None
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


MESSAGE_LIMIT = 300
"""Characters of a pod's message that reach a condition."""


def last_words(message: str | None, limit: int = MESSAGE_LIMIT) -> str | None:
    """A termination message made fit for a condition: one line kept from its start (the
    engine's own message: the error first), several lines (a log's tail, under
    FallbackToLogsOnError) from their end, where the error is."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    if not lines:
        return None
    if len(lines) == 1:
        return lines[0] if len(lines[0]) <= limit else lines[0][: limit - 3] + "..."
    text = " | ".join(lines)
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def pod_obs(pod: Mapping[str, Any]) -> PodObs:
    """One pod as `decide` sees it."""
    meta = pod.get("metadata", {})
    status = pod.get("status", {}) or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    containers = status.get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    waiting_reason = None
    message = None
    for c in containers:
        state = c.get("state") or {}
        last = (c.get("lastState") or {}).get("terminated") or {}
        if state.get("waiting"):
            waiting_reason = state["waiting"].get("reason")
        if last:  # why it died says more than "back-off restarting failed container"
            message = (
                last_words(last.get("message"))
                or f"{last.get('reason')}, exit code {last.get('exitCode')}"
            )
        elif state.get("waiting"):
            message = state["waiting"].get("message")
    return PodObs(
        name=str(meta.get("name")),
        workload_hash=(meta.get("annotations") or {}).get(HASH_ANNOTATION),
        ip=status.get("podIP"),
        phase=str(status.get("phase") or PodPhase.PENDING),
        ready=conditions.get("Ready") == "True",
        restarts=restarts,
        waiting_reason=waiting_reason,
        message=(message or "")[:MESSAGE_LIMIT] or None,
        deleting=bool(meta.get("deletionTimestamp")),
        worker=_int((meta.get("labels") or {}).get(POD_INDEX_LABEL)),
    )


def preflight_obs(pod: Mapping[str, Any]) -> PreflightObs:
    """The preflight pod: its phase, and the engine's report or error (its termination
    message: the engine writes it on success as on failure), or why it waits."""
    status = pod.get("status", {}) or {}
    message = waiting = exit_code = None
    for c in status.get("containerStatuses") or []:
        state = c.get("state") or {}
        if state.get("terminated"):
            done = state["terminated"]
            exit_code = done.get("exitCode")
            message = last_words(done.get("message"), limit=1000) or (
                f"{done.get('reason')}, exit code {done.get('exitCode')}"
            )
        elif state.get("waiting"):
            waiting = state["waiting"].get("reason")
            message = state["waiting"].get("message") or waiting
    return PreflightObs(
        name=str((pod.get("metadata", {}).get("labels") or {}).get(PREFLIGHT_LABEL)),
        phase=str(status.get("phase") or PodPhase.PENDING),
        message=message,
        waiting_reason=waiting,
        exit_code=int(exit_code) if exit_code is not None else None,
    )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _workers(report: Mapping[str, Any]) -> tuple[WorkerReport, ...] | None:
    found = report.get("worker_status")
    if not isinstance(found, Mapping):
        return None
    reports = []
    for index, item in found.items():
        number = _int(index)
        if number is None or not isinstance(item, Mapping):
            continue
        reports.append(
            WorkerReport(
                index=number,
                state=item.get("state"),
                records_in=_int(item.get("records_in")),
                records_out=_int(item.get("records_out")),
                lag=_int(item.get("lag")),
            )
        )
    return tuple(sorted(reports, key=lambda r: r.index))


def savepoint_obs(obj: Mapping[str, Any]) -> SavepointObs:
    """One Savepoint resource as `decide` sees it."""
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {}) or {}
    status = obj.get("status", {}) or {}
    created = _time(meta.get("creationTimestamp")) or datetime.now(UTC)
    return SavepointObs(
        name=str(meta.get("name")),
        app=str(spec.get("app", "")),
        reason=str(spec.get("reason", SpReason.MANUAL)),
        phase=savepoint_phase(status.get("phase")),
        created_at=created,
        path=status.get("path"),
        completed_at=_time(status.get("completedAt")),
        error=status.get("error"),
        failures=int(status.get("failures") or 0),
        deleting=bool(meta.get("deletionTimestamp")),
        app_uid=(meta.get("labels") or {}).get(SAVEPOINT_APP_UID_LABEL),
    )


def _engine(pod: PodObs, timeouts: engine_client.Timeouts) -> EngineObs:
    address = f"{pod.ip}:{CONTROL_PORT}"
    try:
        report = engine_client.status(address, timeouts)
        is_ready = engine_client.ready(address, timeouts)
    except engine_client.EngineError as exc:
        return EngineObs(
            pod=pod.name, workload_hash=pod.workload_hash, reachable=False, error=str(exc)
        )
    checkpoint = report.get("last_checkpoint") or {}
    return EngineObs(
        pod=pod.name,
        workload_hash=pod.workload_hash,
        reachable=True,
        ready=is_ready,
        job_id=report.get("job_id"),
        state=report.get("state"),
        restored_from=report.get("restored_from"),
        sources=report.get("sources"),
        records_in=report.get("records_in"),
        records_out=report.get("records_out"),
        last_checkpoint=checkpoint.get("location") if isinstance(checkpoint, dict) else None,
        error=report.get("error"),
        workers=_workers(report),
    )


def _engine_pod(pods: list[PodObs], digest: str | None) -> PodObs | None:
    """The pod that serves the job's control API: the engine's, or worker 0's."""
    live = [p for p in pods if p.ip and p.phase == PodPhase.RUNNING and not p.deleting]
    return next((p for p in live if p.workload_hash == digest and p.worker in (None, 0)), None)


def _workload_obs(obj: Mapping[str, Any] | None) -> DeploymentObs | None:
    if obj is None:
        return None
    return DeploymentObs(
        workload_hash=(obj["metadata"].get("annotations") or {}).get(HASH_ANNOTATION),
        replicas=int(obj.get("spec", {}).get("replicas") or 0),
        ready_replicas=int((obj.get("status") or {}).get("readyReplicas") or 0),
    )


def observe_app(app: StreamApp, settings: Settings) -> AppObserved:
    """Everything about one StreamApp's world."""
    name = str(app.metadata["name"])
    namespace = str(app.metadata["namespace"])
    spec = app.spec
    deployment = _workload_obs(k8s.get_deployment(namespace, workload_name(name)))
    statefulset = _workload_obs(k8s.get_statefulset(namespace, workload_name(name)))
    pods = [pod_obs(p) for p in k8s.list_pods(namespace, selector_labels(name))]
    pod = _engine_pod(pods, app.status.workload_hash)
    engine = _engine(pod, engine_client.engine_timeouts(settings)) if pod else None
    savepoints = tuple(savepoint_obs(s) for s in k8s.list_objects(k8s.SAVEPOINTS, namespace))

    secret_name = spec.snapshots.credentials_secret
    env = k8s.credentials(namespace, secret_name)
    secret_exists = None if not secret_name else env is not None
    exchange_secret = spec.exchange.credentials_secret if spec.exchange else None
    exchange_secret_exists = (
        None
        if not exchange_secret or spec.workers == 1
        else k8s.secret_env(namespace, exchange_secret) is not None
    )
    stored: tuple[str, ...] | None = None
    storage_error = None
    mode = spec.upgrade_mode or settings.reconcile.default_upgrade_mode
    needs_guard = (
        app.status.last_reconciled_spec is None
        and spec.restore.savepoint is None
        and spec.restore.path is None
        and not spec.restore.allow_empty_state
        and strategy_for(mode).keeps_state
        and spec.state == Desired.RUNNING
    )
    if needs_guard and secret_exists is not False:
        try:
            stored = tuple(
                storage.list_snapshot_uris(
                    spec.snapshots.location,
                    storage.Access(app_key(namespace, name), env, settings.storage),
                    app_identity(namespace, name),
                )
            )
        except storage.StorageProblem as exc:
            storage_error = str(exc)
    preflights = tuple(preflight_obs(p) for p in k8s.list_pods(namespace, preflight_selector(name)))
    return AppObserved(
        deployment=deployment,
        statefulset=statefulset,
        pods=tuple(pods),
        engine=engine,
        savepoints=savepoints,
        secret_exists=secret_exists,
        exchange_secret_exists=exchange_secret_exists,
        stored_snapshots=stored,
        storage_error=storage_error,
        preflights=preflights,
    )


def observe_savepoint(sp: Savepoint, settings: Settings) -> SavepointObserved:
    """Everything about one Savepoint's world."""
    name = str(sp.metadata["name"])
    namespace = str(sp.metadata["namespace"])
    raw = k8s.get_object(k8s.APPS, namespace, sp.spec.app)
    app = StreamApp.model_validate(raw) if raw is not None else None
    status = sp.status
    final = status.phase in SAVEPOINT_TERMINAL
    deleting = bool(sp.metadata.get("deletionTimestamp"))
    owner = app_key(namespace, sp.spec.app)
    if app is None:
        found: dict[str, Any] = {}
        if sp.spec.path and not final and not deleting:
            env = k8s.credentials(namespace, status.credentials_secret)
            found = _registered(sp.spec.path, storage.Access(owner, env, settings.storage))
        return SavepointObserved(
            app_exists=False, app_credentials_secret=status.credentials_secret, **found
        )
    secret = app.spec.snapshots.credentials_secret
    observed: dict[str, Any] = {
        "app_exists": True,
        "app_image": app.status.image or app.spec.image,
        "app_location": app.spec.snapshots.location,
        "app_credentials_secret": secret,
        "savepoint_timeout_s": (
            parse_duration(app.spec.snapshots.savepoint_timeout).total_seconds()
            if app.spec.snapshots.savepoint_timeout
            else settings.reconcile.default_savepoint_timeout_s
        ),
    }
    if final or deleting:
        return SavepointObserved(**observed)
    timeouts = engine_client.engine_timeouts(settings)
    pods = [pod_obs(p) for p in k8s.list_pods(namespace, selector_labels(sp.spec.app))]
    pod = _engine_pod(pods, app.status.workload_hash)
    if pod is not None and sp.spec.path is None:
        engine = _engine(pod, timeouts)
        observed["engine_state"] = engine.state if engine.reachable else None
        if engine.reachable and engine.ready and engine.state == EngineState.RUNNING:
            observed["engine_address"] = f"{pod.ip}:{CONTROL_PORT}"
        if status.phase == SpPhase.IN_PROGRESS and status.trigger_id:
            try:
                answer = engine_client.savepoint_status(
                    f"{pod.ip}:{CONTROL_PORT}", status.trigger_id, timeouts
                )
                observed["trigger"] = TriggerObs(
                    status=str(answer.get("status")),
                    location=answer.get("location"),
                    error=answer.get("error"),
                    size_bytes=answer.get("size_bytes"),
                    sources=answer.get("sources"),
                )
            except engine_client.EngineError as exc:
                observed["trigger_error"] = str(exc)
    elif status.phase == SpPhase.IN_PROGRESS:
        observed["trigger_error"] = "no running engine pod"
    where = sp.spec.path or (
        status.path
        if status.phase == SpPhase.IN_PROGRESS
        else savepoint_target(app.spec.snapshots.location, namespace, name)
    )
    if sp.spec.path:
        env = k8s.credentials(namespace, secret)
        observed.update(_registered(sp.spec.path, storage.Access(owner, env, settings.storage)))
    elif where:
        env = k8s.credentials(namespace, secret)
        try:
            observed["manifest"] = storage.manifest_at(
                where, storage.Access(owner, env, settings.storage)
            )
        except storage.StorageProblem as exc:
            observed["storage_error"] = str(exc)
    return SavepointObserved(**observed)


def _registered(path: str, access: storage.Access) -> dict[str, Any]:
    """What storage says of a savepoint registered by `spec.path`: its manifest once every
    file matches it (it was written elsewhere and may have been copied badly), or why not."""
    try:
        return {"manifest": storage.verified_manifest_at(path, access)}
    except storage.CorruptSnapshot as exc:
        return {"corrupt": str(exc)}
    except storage.StorageProblem as exc:
        return {"storage_error": str(exc)}
