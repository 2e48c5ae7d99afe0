"""The engine workload of a StreamApp, as Kubernetes manifests (pure functions).

(spec, restore, replicas) -> ServiceAccount, Service, Deployment or StatefulSet dicts,
plus the workload hash that `decide` compares with what it observes.

One worker (`spec.workers: 1`) is a Deployment of one pod (Recreate: never two jobs on
one state). Several workers are a StatefulSet `<app>-engine` of `workers` pods
(`<app>-engine-0` .. `-N-1`) with a headless Service `<app>-engine-workers`: the
StatefulSet gives each pod a stable identity, its ordinal, which the engine reads as its
worker index (`REWIND_WORKER_INDEX` from the `apps.kubernetes.io/pod-index` label
through the downward API). It is `podManagementPolicy: Parallel` (all workers start at
once: worker 0 waits for every one of them anyway) and `updateStrategy: OnDelete`: the
operator deletes the pods of the old version itself once it applied the new one, so an
upgrade or a rescale replaces every worker at once, as the Deployment's Recreate does,
and a broken version never leaves the StatefulSet's rolling update stuck half-way.

What must stay true:
- names are deterministic (`<app>-engine`), so applying twice changes nothing;
- the hash covers everything in the pod template and nothing else, so a change that
  needs no restart never changes it, and one that does always does;
- the engine gets no Kubernetes API access (own ServiceAccount, no token mounted) and
  its object-store credentials only through `envFrom` of the named Secret;
- the engine binds only its pod IP (`--control $(POD_IP):8081`);
- the engine knows its app's identity (`REWIND_APP` = `<namespace>/<name>`, see
  `app_identity`): it records it in every snapshot and names its Kafka ids with it;
- the workers of one version share one job id (`<namespace>.<app>.<workload hash>`):
  it names the job's exchange and control topics and its checkpoints folder, is the
  same across restarts of that version (a restarted worker finds its job's topics and
  checkpoints) and differs between versions (the new one never writes into the old
  one's checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from rewind_operator.models import StreamAppSpec, parse_duration
from rewind_operator.vocabulary import KAFKA_BOOTSTRAP_ENV, LATEST, POD_INDEX_LABEL

CONTROL_PORT = 8081
HASH_ANNOTATION = "rewind.dev/workload-hash"
PREFLIGHT_LABEL = "rewind.dev/preflight"
"""On a preflight Job's pod: the Job's name (what `status.operation.preflightPod` names)."""
RESTORE_ANNOTATION = "rewind.dev/restore"
APP_LABEL = "app.kubernetes.io/instance"
CONTAINER = "engine"
ENGINE_SA = "rewind-engine"
DEPLOYMENT_ID_ENV = "REWIND_DEPLOYMENT_ID"
RESERVED_ENV = (
    "POD_IP",
    "POD_NAME",
    "POD_NAMESPACE",
    "REWIND_APP",
    "REWIND_WORKERS",
    "REWIND_WORKER_INDEX",
)
"""Variables the operator sets in the engine container; `spec.env` may not."""
WORKER_APP_NAME_MAX = 45
"""Longest app name with workers above 1: the StatefulSet `<app>-engine` labels each pod
with `controller-revision-hash: <statefulset>-<10 characters>`, a label value (at most
63 characters)."""


def app_identity(namespace: str, app: str) -> str:
    """The identity of a StreamApp as the engine knows it: unique in the cluster, the same
    for every version and restart of the app. `--restore latest` and the empty-state
    guard count only snapshots that carry it (or none)."""
    return f"{namespace}/{app}"


def workload_name(app: str) -> str:
    """Name of the Deployment and Service of `app`."""
    return f"{app}-engine"


def workers_service_name(app: str) -> str:
    """Name of the headless Service that governs the app's StatefulSet of workers."""
    return f"{app}-engine-workers"


def job_id(app: str) -> str:
    """The job id every worker of one version is given (`$(...)` expanded by Kubernetes)."""
    return f"$(POD_NAMESPACE).{app}.$({DEPLOYMENT_ID_ENV})"


def older_jobs(app: str) -> str:
    """What `job_id` is for any version of the app (a regular expression over job ids):
    worker 0 of a new version deletes the exchange topics of the others once its first
    snapshot is committed (`rewind run --retire-exchange-of`). The deployment id is a
    hex digest, so no other app's ids match, whatever dots or dashes its name holds."""
    return rf"$(POD_NAMESPACE)\.{re.escape(app)}\.[0-9a-f]+"


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


def engine_args(
    spec: StreamAppSpec, restore: str | None, job: str | None = None, retire: str | None = None
) -> list[str]:
    """The `rewind run` arguments (see docs/CONTRACTS.md, engine pod command); `job` is
    the shared job id of a job of several workers, `retire` its older versions' ids."""
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
    if job is not None:
        args += ["--job-id", job]
    if retire is not None:
        args += ["--retire-exchange-of", retire]
    if restore is not None:
        args += ["--restore", restore]
        if spec.restore.allow_non_restored_state:
            args.append("--allow-non-restored-state")
    return args + list(spec.args)


def _worker_env(spec: StreamAppSpec) -> list[dict[str, Any]]:
    """What a worker of several needs besides a single engine's variables."""
    index = {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}
    env: list[dict[str, Any]] = [
        {"name": "REWIND_WORKERS", "value": str(spec.workers)},
        {"name": "REWIND_WORKER_INDEX", "valueFrom": index},
    ]
    if spec.exchange is not None and spec.exchange.bootstrap_servers:
        env.append({"name": KAFKA_BOOTSTRAP_ENV, "value": spec.exchange.bootstrap_servers})
    return env


def _container(app: str, spec: StreamAppSpec, restore: str | None) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        # Kubernetes expands $(POD_NAMESPACE), defined just above.
        {"name": "REWIND_APP", "value": app_identity("$(POD_NAMESPACE)", app)},
    ]
    several = spec.workers > 1
    if several:
        env += _worker_env(spec)
    env += [var.model_dump(by_alias=True, exclude_none=True) for var in spec.env]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": ["rewind"],
        # Every worker serves the control API on its own pod IP (its probes, and a
        # stopped worker waits there to be terminated); the operator uses worker 0's.
        "args": (
            engine_args(spec, restore, job_id(app), older_jobs(app))
            if several
            else engine_args(spec, restore)
        ),
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
        # The engine writes its fatal error there (rewind_engine.termination); without it,
        # the kubelet quotes the log's tail. Either way `lastState.terminated.message`
        # says why, and the crash and rollback conditions quote it.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    env_from = [
        {"secretRef": {"name": secret}}
        for secret in (
            spec.snapshots.credentials_secret,
            spec.exchange.credentials_secret if several and spec.exchange else None,
        )
        if secret
    ]
    if env_from:
        container["envFrom"] = env_from
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
    containers = extra_spec.pop("containers", [])
    sidecars = [c for c in containers if c.get("name") != CONTAINER]
    engine = _container(app, spec, restore)
    # Of a container named `engine` only its volumeMounts count: they mount the pod's
    # volumes (podTemplate.spec.volumes) into the engine; everything else is ours.
    mounts = [
        m for c in containers if c.get("name") == CONTAINER for m in c.get("volumeMounts") or []
    ]
    if mounts:
        engine["volumeMounts"] = mounts
    pod_spec: dict[str, Any] = {
        **extra_spec,
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": extra_spec.get("terminationGracePeriodSeconds", 60),
        "containers": [engine, *sidecars],
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


def service(app: str, workers: int = 1) -> dict[str, Any]:
    """A Service for the job's control API: the engine's port, or worker 0's."""
    selector = selector_labels(app)
    if workers > 1:
        selector[POD_INDEX_LABEL] = "0"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": workload_name(app), "labels": labels(app)},
        "spec": {
            "selector": selector,
            "ports": [{"name": "control", "port": CONTROL_PORT, "targetPort": CONTROL_PORT}],
        },
    }


def workers_service(app: str) -> dict[str, Any]:
    """The headless Service that governs the StatefulSet of workers (stable pod names)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": workers_service_name(app), "labels": labels(app)},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(app),
            "ports": [{"name": "control", "port": CONTROL_PORT, "targetPort": CONTROL_PORT}],
        },
    }


def _hashed_template(
    app: str, spec: StreamAppSpec, restore: str | None, service_account: str
) -> tuple[dict[str, Any], str]:
    template = pod_template(app, spec, restore, service_account)
    digest = workload_hash(app, spec, restore, service_account)
    template["metadata"]["annotations"][HASH_ANNOTATION] = digest
    # Lets a restarted container continue from its own newest checkpoint instead of the
    # savepoint it was first started from (docs/CONTRACTS.md, "Restarts of the same
    # deployment"). Added after hashing: it is the hash.
    template["spec"]["containers"][0]["env"].append({"name": DEPLOYMENT_ID_ENV, "value": digest})
    return template, digest


def _workload(
    kind: str,
    app: str,
    *,
    spec: StreamAppSpec,
    restore: str | None,
    replicas: int,
    service_account: str,
    policies: dict[str, Any],
) -> dict[str, Any]:
    """A Deployment or StatefulSet of the engine's hashed pod template; `policies` are
    what differ between the two (rollout, identity)."""
    template, digest = _hashed_template(app, spec, restore, service_account)
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": workload_name(app),
            "labels": labels(app),
            "annotations": {HASH_ANNOTATION: digest},
        },
        "spec": {
            "replicas": replicas,
            **policies,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(app)},
            "template": template,
        },
    }


def statefulset(
    app: str,
    spec: StreamAppSpec,
    restore: str | None,
    replicas: int,
    service_account: str = ENGINE_SA,
) -> dict[str, Any]:
    """The StatefulSet of `replicas` workers (see the module docstring for its policies)."""
    policies = {
        "serviceName": workers_service_name(app),
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "OnDelete"},
    }
    return _workload(
        "StatefulSet",
        app,
        spec=spec,
        restore=restore,
        replicas=replicas,
        service_account=service_account,
        policies=policies,
    )


def deployment(
    app: str,
    spec: StreamAppSpec,
    restore: str | None,
    replicas: int,
    service_account: str = ENGINE_SA,
) -> dict[str, Any]:
    """The engine Deployment: one replica, Recreate (never two jobs on one state)."""
    policies = {"strategy": {"type": "Recreate"}}
    return _workload(
        "Deployment",
        app,
        spec=spec,
        restore=restore,
        replicas=replicas,
        service_account=service_account,
        policies=policies,
    )


def preflight_name(app: str, generation: int) -> str:
    """The restore preflight pod of `app`'s spec generation `generation` (one per
    generation: creating it twice is harmless, a new spec gets a new one)."""
    return f"{app}-preflight-g{generation}"


def preflight_selector(app: str) -> dict[str, str]:
    """Labels that select the app's preflight pods (and no engine pod)."""
    return {"app.kubernetes.io/name": "rewind-preflight", APP_LABEL: app}


def preflight_job(
    app: str, name: str, spec: StreamAppSpec, service_account: str = ENGINE_SA
) -> dict[str, Any]:
    """A one-pod Job of the new version that only restores the app's newest snapshot and
    exits (`rewind run --preflight`, the same arguments as the real start otherwise):
    exit 0 with its report as termination message, or 1 with the error. Never retried
    (a failure is the answer). Its pod's labels do not match the engine's selector, so
    neither the Deployment nor the Service ever counts it."""
    template = pod_template(app, spec, LATEST, service_account)
    container = template["spec"]["containers"][0]
    args = container["args"]
    container["args"] = [*args[:2], "--preflight", *args[2:]]  # before the flow's own args
    for probe in ("readinessProbe", "livenessProbe", "ports"):
        container.pop(probe, None)
    # One process restores every subtask (`--preflight` runs as a single worker).
    container["env"] = [
        e for e in container["env"] if e["name"] not in ("REWIND_WORKERS", "REWIND_WORKER_INDEX")
    ]
    # Sidecars would keep the pod running after the engine exits: the engine alone.
    template["spec"]["containers"] = [container]
    template["spec"]["restartPolicy"] = "Never"
    template["spec"]["terminationGracePeriodSeconds"] = 5
    pod_labels = {
        **template["metadata"]["labels"],
        **preflight_selector(app),
        "app.kubernetes.io/component": "preflight",
        PREFLIGHT_LABEL: name,
    }
    template["metadata"]["labels"] = pod_labels
    timeout = parse_duration(spec.preflight.timeout).total_seconds()
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": pod_labels},
        "spec": {
            "backoffLimit": 0,
            # The operator refuses at the timeout; this only bounds a pod nobody watches.
            "activeDeadlineSeconds": int(timeout) + 60,
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
