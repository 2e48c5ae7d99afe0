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
    DeleteSavepoint,
    DisposeData,
    EmitEvent,
    TriggerSavepoint,
)
from rewind_operator.models import API_VERSION
from rewind_operator.observe import APP_LABEL, APP_UID_LABEL, credentials

log = structlog.get_logger("rewind_operator.act")


@dataclass(frozen=True)
class Outcome:
    """What the actions learned that the status must record (the trigger's answer)."""

    trigger_id: str | None = None
    trigger_error: str | None = None


def _involved(kind: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "name": meta["name"], "uid": meta.get("uid")}


def execute(
    kind: str, meta: Mapping[str, Any], actions: Sequence[Action], timeout: float
) -> Outcome:
    """Run `actions` for the object `meta` (a StreamApp's or a Savepoint's metadata)."""
    namespace = str(meta["namespace"])
    name = str(meta["name"])
    outcome = Outcome()
    for action in actions:
        if isinstance(action, ApplyWorkload):
            _apply_workload(namespace, name, str(meta["uid"]), action)
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
                    timeout=timeout,
                )
                outcome = Outcome(trigger_id=trigger)
                log.info("savepoint_triggered", trigger_id=trigger, target=action.target)
            except engine_client.EngineError as exc:
                outcome = Outcome(trigger_error=str(exc))
                log.warning("savepoint_trigger_failed", error=str(exc))
        elif isinstance(action, DisposeData):
            env = credentials(namespace, action.credentials_secret)
            storage.dispose(action.path, env)
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
    owner = workload.owner_reference("StreamApp", app, uid)
    k8s.ensure_service_account(namespace, workload.service_account(action.service_account))
    svc = workload.service(app)
    svc["metadata"]["ownerReferences"] = [owner]
    k8s.apply_service(namespace, svc)
    dep = workload.deployment(
        app, action.spec, action.restore, action.replicas, action.service_account
    )
    if dep["metadata"]["annotations"][workload.HASH_ANNOTATION] != action.workload_hash:
        raise RuntimeError("workload hash mismatch between decide and act (a bug)")
    dep["metadata"]["ownerReferences"] = [owner]
    k8s.apply_deployment(namespace, dep)
    log.info(
        "workload_applied",
        image=action.spec.image,
        restore=action.restore,
        replicas=action.replicas,
        workload_hash=action.workload_hash,
    )


def _create_savepoint(namespace: str, app: str, uid: str, action: CreateSavepoint) -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": "Savepoint",
        "metadata": {
            "name": action.name,
            "labels": {
                APP_LABEL: app,
                APP_UID_LABEL: uid,
                "rewind.dev/reason": action.reason,
                "app.kubernetes.io/managed-by": "rewind-operator",
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
