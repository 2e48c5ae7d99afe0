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
from rewind_operator.models import Savepoint, StreamApp, parse_duration
from rewind_operator.observed import (
    AppObserved,
    DeploymentObs,
    EngineObs,
    PodObs,
    SavepointObs,
    SavepointObserved,
    TriggerObs,
)
from rewind_operator.policy import savepoint_target
from rewind_operator.settings import Settings
from rewind_operator.workload import (
    CONTROL_PORT,
    HASH_ANNOTATION,
    selector_labels,
    workload_name,
)

APP_LABEL = "rewind.dev/app"
APP_UID_LABEL = "rewind.dev/app-uid"


def _time(text: Any) -> datetime | None:
    if not text:
        return None
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


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
                last.get("message") or f"{last.get('reason')}, exit code {last.get('exitCode')}"
            )
        elif state.get("waiting"):
            message = state["waiting"].get("message")
    return PodObs(
        name=str(meta.get("name")),
        workload_hash=(meta.get("annotations") or {}).get(HASH_ANNOTATION),
        ip=status.get("podIP"),
        phase=str(status.get("phase") or "Pending"),
        ready=conditions.get("Ready") == "True",
        restarts=restarts,
        waiting_reason=waiting_reason,
        message=(message or "")[:300] or None,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def savepoint_obs(obj: Mapping[str, Any]) -> SavepointObs:
    """One Savepoint resource as `decide` sees it."""
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {}) or {}
    status = obj.get("status", {}) or {}
    created = _time(meta.get("creationTimestamp")) or datetime.now(UTC)
    return SavepointObs(
        name=str(meta.get("name")),
        app=str(spec.get("app", "")),
        reason=str(spec.get("reason", "manual")),
        phase=str(status.get("phase") or "Pending"),
        created_at=created,
        path=status.get("path"),
        completed_at=_time(status.get("completedAt")),
        error=status.get("error"),
        failures=int(status.get("failures") or 0),
        deleting=bool(meta.get("deletionTimestamp")),
        app_uid=(meta.get("labels") or {}).get(APP_UID_LABEL),
    )


def _engine(pod: PodObs, timeout: float) -> EngineObs:
    address = f"{pod.ip}:{CONTROL_PORT}"
    try:
        report = engine_client.status(address, timeout)
        is_ready = engine_client.ready(address, timeout)
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
    )


def _engine_pod(pods: list[PodObs], digest: str | None) -> PodObs | None:
    live = [p for p in pods if p.ip and p.phase == "Running" and not p.deleting]
    return next((p for p in live if p.workload_hash == digest), None)


def credentials(namespace: str, secret: str | None) -> dict[str, str] | None:
    """The storage credentials named by an app (None: none named, or the Secret is gone)."""
    if not secret:
        return None
    return k8s.secret_env(namespace, secret)


def observe_app(app: StreamApp, settings: Settings) -> AppObserved:
    """Everything about one StreamApp's world."""
    name = str(app.metadata["name"])
    namespace = str(app.metadata["namespace"])
    spec = app.spec
    dep = k8s.get_deployment(namespace, workload_name(name))
    deployment = None
    if dep is not None:
        deployment = DeploymentObs(
            workload_hash=(dep["metadata"].get("annotations") or {}).get(HASH_ANNOTATION),
            replicas=int(dep.get("spec", {}).get("replicas") or 0),
            ready_replicas=int((dep.get("status") or {}).get("readyReplicas") or 0),
        )
    pods = [pod_obs(p) for p in k8s.list_pods(namespace, selector_labels(name))]
    pod = _engine_pod(pods, app.status.workload_hash)
    engine = _engine(pod, settings.reconcile.engine_timeout_s) if pod else None
    savepoints = tuple(savepoint_obs(s) for s in k8s.list_objects(k8s.SAVEPOINTS, namespace))

    secret_name = spec.snapshots.credentials_secret
    env = credentials(namespace, secret_name)
    secret_exists = None if not secret_name else env is not None
    stored: tuple[str, ...] | None = None
    storage_error = None
    mode = spec.upgrade_mode or settings.reconcile.default_upgrade_mode
    needs_guard = (
        app.status.last_reconciled_spec is None
        and spec.restore.savepoint is None
        and spec.restore.path is None
        and not spec.restore.allow_empty_state
        and mode != "stateless"
        and spec.state == "running"
    )
    if needs_guard and secret_exists is not False:
        try:
            stored = tuple(storage.list_snapshot_uris(spec.snapshots.location, env))
        except storage.StorageProblem as exc:
            storage_error = str(exc)
    return AppObserved(
        deployment=deployment,
        pods=tuple(pods),
        engine=engine,
        savepoints=savepoints,
        secret_exists=secret_exists,
        stored_snapshots=stored,
        storage_error=storage_error,
    )


def observe_savepoint(sp: Savepoint, settings: Settings) -> SavepointObserved:
    """Everything about one Savepoint's world."""
    name = str(sp.metadata["name"])
    namespace = str(sp.metadata["namespace"])
    raw = k8s.get_object(k8s.APPS, namespace, sp.spec.app)
    app = StreamApp.model_validate(raw) if raw is not None else None
    status = sp.status
    final = status.phase in ("Completed", "Failed", "Abandoned")
    deleting = bool(sp.metadata.get("deletionTimestamp"))
    if app is None:
        manifest = None
        storage_error = None
        if sp.spec.path and not final and not deleting:
            env = credentials(namespace, status.credentials_secret)
            try:
                manifest = storage.manifest_at(sp.spec.path, env)
            except storage.StorageProblem as exc:
                storage_error = str(exc)
        return SavepointObserved(
            app_exists=False,
            app_credentials_secret=status.credentials_secret,
            manifest=manifest,
            storage_error=storage_error,
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
    timeout = settings.reconcile.engine_timeout_s
    pods = [pod_obs(p) for p in k8s.list_pods(namespace, selector_labels(sp.spec.app))]
    pod = _engine_pod(pods, app.status.workload_hash)
    if pod is not None and sp.spec.path is None:
        engine = _engine(pod, timeout)
        observed["engine_state"] = engine.state if engine.reachable else None
        if engine.reachable and engine.ready and engine.state == "RUNNING":
            observed["engine_address"] = f"{pod.ip}:{CONTROL_PORT}"
        if status.phase == "InProgress" and status.trigger_id:
            try:
                answer = engine_client.savepoint_status(
                    f"{pod.ip}:{CONTROL_PORT}", status.trigger_id, timeout
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
    elif status.phase == "InProgress":
        observed["trigger_error"] = "no running engine pod"
    where = sp.spec.path or (
        status.path
        if status.phase == "InProgress"
        else savepoint_target(app.spec.snapshots.location, namespace, name)
    )
    if where:
        env = credentials(namespace, secret)
        try:
            observed["manifest"] = storage.manifest_at(where, env)
        except storage.StorageProblem as exc:
            observed["storage_error"] = str(exc)
    return SavepointObserved(**observed)
