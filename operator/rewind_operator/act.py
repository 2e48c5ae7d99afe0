"""Carry out the actions of a Decision, in order, idempotently.

Decision.actions -> the Kubernetes API, the engine's control API, object storage.
What must stay true: every action can be repeated without harm (deterministic names,
create-if-absent, replace-to-desired, delete-if-present); owned objects carry an owner
reference to their StreamApp so deleting the app collects them; Savepoints are NOT owned
by the app (they outlive it, which is what protects state from a deleted app). An
action that fails raises, the status is then not written, and the next reconcile
repeats the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from rewind_operator import engine_client, k8s, metrics, storage, workload
from rewind_operator.actions import (
    Action,
    ApplyWorkload,
    CreateSavepoint,
    DeletePreflight,
    DeleteSavepoint,
    DisposeData,
    EmitEvent,
    RunPreflight,
    TriggerSavepoint,
)
from rewind_operator.lanes import app_key
from rewind_operator.models import API_VERSION
from rewind_operator.settings import Settings
from rewind_operator.vocabulary import (
    APP_KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SAVEPOINT_APP_LABEL,
    SAVEPOINT_APP_UID_LABEL,
    SAVEPOINT_KIND,
    SAVEPOINT_REASON_LABEL,
)

log = structlog.get_logger("rewind_operator.act")


@dataclass(frozen=True)
class Outcome:
    """What the actions learned that the status must record (the trigger's answer)."""

    trigger_id: str | None = None
    trigger_error: str | None = None


def _involved(kind: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "name": meta["name"], "uid": meta.get("uid")}


def execute(
    kind: str, meta: Mapping[str, Any], actions: Sequence[Action], settings: Settings, app: str
) -> Outcome:
    """Run `actions` for the object `meta` (a StreamApp's or a Savepoint's metadata) of
    the StreamApp `app` (whose lane its storage calls take)."""
    namespace = str(meta["namespace"])
    name = str(meta["name"])
    outcome = Outcome()
    for action in actions:
        if isinstance(action, ApplyWorkload):
            _apply_workload(namespace, name, str(meta["uid"]), action)
        elif isinstance(action, RunPreflight):
            _run_preflight(namespace, name, str(meta["uid"]), action)
        elif isinstance(action, DeletePreflight):
            k8s.delete_job(namespace, action.name)
            log.info("preflight_deleted", pod=action.name)
        elif isinstance(action, CreateSavepoint):
            _create_savepoint(namespace, name, str(meta.get("uid", "")), action)
        elif isinstance(action, DeleteSavepoint):
            k8s.delete_object(k8s.SAVEPOINTS, namespace, action.name)
            log.info("savepoint_deleted", deleted=action.name)
        elif isinstance(action, TriggerSavepoint):
            try:
                trigger = engine_client.trigger_savepoint(
                    action.address,
                    action.target,
                    stop=action.stop,
                    drain=action.drain,
                    timeouts=engine_client.engine_timeouts(settings),
                )
                outcome = Outcome(trigger_id=trigger)
                log.info("savepoint_triggered", trigger_id=trigger, target=action.target)
            except engine_client.EngineError as exc:
                outcome = Outcome(trigger_error=str(exc))
                log.warning("savepoint_trigger_failed", error=str(exc))
        elif isinstance(action, DisposeData):
            env = k8s.credentials(namespace, action.credentials_secret)
            access = storage.Access(app_key(namespace, app), env, settings.storage)
            storage.dispose(action.path, access)
            log.info("savepoint_data_disposed", path=action.path)
        elif isinstance(action, EmitEvent):
            _event(kind, meta, namespace, action)
    return outcome


def _event(kind: str, meta: Mapping[str, Any], namespace: str, action: EmitEvent) -> None:
    metrics.observe_event(kind, action.reason)
    log.info("event", event_type=action.type, reason=action.reason, message=action.message)
    try:
        k8s.create_event(
            namespace, _involved(kind, meta), action.type, action.reason, action.message
        )
    except Exception as exc:  # an Event is a report, never a reason to stop the reconcile
        log.warning("event_not_recorded", reason=action.reason, error=str(exc))


def _apply_workload(namespace: str, app: str, uid: str, action: ApplyWorkload) -> None:
    """One worker: the Deployment. Several: the StatefulSet, then the old version's pods
    go (OnDelete: the StatefulSet recreates them from the new template, all at once).
    Either way the other kind, left from before a rescale across 1, goes too."""
    owner = workload.owner_reference(APP_KIND, app, uid)
    spec = action.spec
    several = spec.workers > 1
    k8s.ensure_service_account(namespace, workload.service_account(action.service_account))
    services = [workload.service(app, spec.workers)]
    if several:
        services.append(workload.workers_service(app))
    for svc in services:
        svc["metadata"]["ownerReferences"] = [owner]
        k8s.apply_service(namespace, svc)
    make = workload.statefulset if several else workload.deployment
    body = make(app, spec, action.restore, action.replicas, action.service_account)
    if body["metadata"]["annotations"][workload.HASH_ANNOTATION] != action.workload_hash:
        raise RuntimeError("workload hash mismatch between decide and act (a bug)")
    body["metadata"]["ownerReferences"] = [owner]
    name = workload.workload_name(app)
    if several:
        k8s.delete_deployment(namespace, name)
        k8s.apply_statefulset(namespace, body)
        _delete_stale_pods(namespace, app, action.workload_hash)
    else:
        k8s.delete_statefulset(namespace, name)
        k8s.delete_service(namespace, workload.workers_service_name(app))
        k8s.apply_deployment(namespace, body)
    log.info(
        "workload_applied",
        image=spec.image,
        restore=action.restore,
        replicas=action.replicas,
        workers=spec.workers,
        workload_hash=action.workload_hash,
    )


def _run_preflight(namespace: str, app: str, uid: str, action: RunPreflight) -> None:
    k8s.ensure_service_account(namespace, workload.service_account(action.service_account))
    job = workload.preflight_job(app, action.name, action.spec, action.service_account)
    job["metadata"]["ownerReferences"] = [workload.owner_reference(APP_KIND, app, uid)]
    if k8s.create_job(namespace, job):
        log.info("preflight_started", pod=action.name, image=action.spec.image)


def _delete_stale_pods(namespace: str, app: str, digest: str) -> None:
    """Delete the app's engine pods of any other workload (the version before)."""
    for pod in k8s.list_pods(namespace, workload.selector_labels(app)):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        if (meta.get("annotations") or {}).get(workload.HASH_ANNOTATION) != digest:
            k8s.delete_pod(namespace, str(meta["name"]))
            log.info("stale_worker_deleted", pod=meta["name"])


def _create_savepoint(namespace: str, app: str, uid: str, action: CreateSavepoint) -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": SAVEPOINT_KIND,
        "metadata": {
            "name": action.name,
            "labels": {
                SAVEPOINT_APP_LABEL: app,
                SAVEPOINT_APP_UID_LABEL: uid,
                SAVEPOINT_REASON_LABEL: action.reason,
                MANAGED_BY_LABEL: MANAGED_BY,
            },
        },
        "spec": {
            "app": app,
            "reason": action.reason,
            "stop": action.stop,
            "disposeOnDelete": action.dispose_on_delete,
        },
    }
    if k8s.create_object(k8s.SAVEPOINTS, namespace, body):
        log.info("savepoint_created", created=action.name, reason=action.reason)
