"""The engine workload of a StreamApp, as Kubernetes manifests (pure functions).

(spec, restore, replicas) -> ServiceAccount, Service, Deployment dicts, plus the
workload hash that `decide` compares with what it observes.

What must stay true:
- names are deterministic (`<app>-engine`), so applying twice changes nothing;
- the hash covers everything in the pod template and nothing else, so a change that
  needs no restart never changes it, and one that does always does;
- the engine gets no Kubernetes API access (own ServiceAccount, no token mounted) and
  its object-store credentials only through `envFrom` of the named Secret;
- the engine binds only its pod IP (`--control $(POD_IP):8081`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rewind_operator.models import StreamAppSpec, parse_duration

CONTROL_PORT = 8081
HASH_ANNOTATION = "rewind.dev/workload-hash"
RESTORE_ANNOTATION = "rewind.dev/restore"
APP_LABEL = "app.kubernetes.io/instance"
CONTAINER = "engine"
ENGINE_SA = "rewind-engine"


def workload_name(app: str) -> str:
    """Name of the Deployment and Service of `app`."""
    return f"{app}-engine"


def selector_labels(app: str) -> dict[str, str]:
    """Labels that select the app's engine pods."""
    return {"app.kubernetes.io/name": "rewind-engine", APP_LABEL: app}


def labels(app: str) -> dict[str, str]:
    """Labels on every object of the app's workload."""
    return {
        **selector_labels(app),
        "app.kubernetes.io/component": "engine",
        "app.kubernetes.io/part-of": "rewind",
        "app.kubernetes.io/managed-by": "rewind-operator",
    }


def engine_args(spec: StreamAppSpec, restore: str | None) -> list[str]:
    """The `rewind run` arguments (see docs/CONTRACTS.md, engine pod command)."""
    args = [
        "run",
        spec.flow,
        "--snapshots",
        spec.snapshots.location,
        "--control",
        f"$(POD_IP):{CONTROL_PORT}",
        "--parallelism",
        str(spec.parallelism),
    ]
    if spec.max_parallelism is not None:
        args += ["--max-parallelism", str(spec.max_parallelism)]
    if spec.snapshots.checkpoint_interval is not None:
        seconds = parse_duration(spec.snapshots.checkpoint_interval).total_seconds()
        args += ["--checkpoint-interval", f"{seconds:g}"]
    if restore is not None:
        args += ["--restore", restore]
        if spec.restore.allow_non_restored_state:
            args.append("--allow-non-restored-state")
    return args + list(spec.args)


def _container(app: str, spec: StreamAppSpec, restore: str | None) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "REWIND_APP", "value": app},
    ]
    env += [var.model_dump(by_alias=True, exclude_none=True) for var in spec.env]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": ["rewind"],
        "args": engine_args(spec, restore),
        "env": env,
        "ports": [{"name": "control", "containerPort": CONTROL_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": CONTROL_PORT},
            "periodSeconds": 2,
            "failureThreshold": 1,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": CONTROL_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
    }
    if spec.snapshots.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.snapshots.credentials_secret}}]
    if spec.resources:
        container["resources"] = spec.resources
    return container


def pod_template(
    app: str, spec: StreamAppSpec, restore: str | None, service_account: str = ENGINE_SA
) -> dict[str, Any]:
    """The Deployment's pod template, without the hash annotation."""
    extra = spec.pod_template or {}
    extra_meta = extra.get("metadata") or {}
    extra_spec = dict(extra.get("spec") or {})
    sidecars = [c for c in extra_spec.pop("containers", []) if c.get("name") != CONTAINER]
    pod_spec: dict[str, Any] = {
        **extra_spec,
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": extra_spec.get("terminationGracePeriodSeconds", 60),
        "containers": [_container(app, spec, restore), *sidecars],
    }
    annotations = dict(extra_meta.get("annotations") or {})
    if restore is not None:
        annotations[RESTORE_ANNOTATION] = restore
    return {
        "metadata": {
            "labels": {**(extra_meta.get("labels") or {}), **labels(app)},
            "annotations": annotations,
        },
        "spec": pod_spec,
    }


def workload_hash(
    app: str, spec: StreamAppSpec, restore: str | None, service_account: str = ENGINE_SA
) -> str:
    """A short, stable digest of the pod template."""
    template = pod_template(app, spec, restore, service_account)
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def service_account(name: str = ENGINE_SA) -> dict[str, Any]:
    """The engine pods' ServiceAccount, shared by the apps of a namespace (the chart
    creates it too): no RoleBinding refers to it and no token is mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/part-of": "rewind",
                "app.kubernetes.io/component": "engine",
                "app.kubernetes.io/managed-by": "rewind-operator",
            },
        },
        "automountServiceAccountToken": False,
    }


def service(app: str) -> dict[str, Any]:
    """A Service for the engine's control port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": workload_name(app), "labels": labels(app)},
        "spec": {
            "selector": selector_labels(app),
            "ports": [{"name": "control", "port": CONTROL_PORT, "targetPort": CONTROL_PORT}],
        },
    }


def deployment(
    app: str,
    spec: StreamAppSpec,
    restore: str | None,
    replicas: int,
    service_account: str = ENGINE_SA,
) -> dict[str, Any]:
    """The engine Deployment: one replica, Recreate (never two jobs on one state)."""
    template = pod_template(app, spec, restore, service_account)
    digest = workload_hash(app, spec, restore, service_account)
    template["metadata"]["annotations"][HASH_ANNOTATION] = digest
    # Lets a restarted container continue from its own newest checkpoint instead of the
    # savepoint it was first started from (docs/CONTRACTS.md, "Restarts of the same
    # deployment"). Added after hashing: it is the hash.
    template["spec"]["containers"][0]["env"].append(
        {"name": "REWIND_DEPLOYMENT_ID", "value": digest}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": workload_name(app),
            "labels": labels(app),
            "annotations": {HASH_ANNOTATION: digest},
        },
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(app)},
            "template": template,
        },
    }


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """An owner reference to the StreamApp, so its deletion collects the workload."""
    return {
        "apiVersion": "rewind.dev/v1alpha1",
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
