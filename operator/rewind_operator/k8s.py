"""The one module that talks to the Kubernetes API (through the official client).

Calls in, plain JSON-shaped dicts out (camelCase, as `kubectl get -o json` shows them),
so the rest of the operator never sees the client's model classes. What must stay true:
- every write is idempotent: create-if-absent (409 is success), delete-if-present (404
  is success), replace-to-desired;
- Secret values are returned only by `secret_env`, for object-store calls; they are never
  logged and never written anywhere;
- the helm chart's RBAC (helm/rewind/templates/rbac.yaml) covers every call made here.
"""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from rewind_operator.models import GROUP, VERSION

APPS = "streamapps"
SAVEPOINTS = "savepoints"

_lock = threading.Lock()
_api: client.ApiClient | None = None


class NotFound(Exception):
    """The object does not exist."""


def api_client() -> client.ApiClient:
    """A shared client: in-cluster credentials if there are some, else the kubeconfig."""
    global _api  # noqa: PLW0603 - one client per process, built on first use
    with _lock:
        if _api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            _api = client.ApiClient()
        return _api


def _plain(obj: Any) -> dict[str, Any]:
    return cast(dict[str, Any], api_client().sanitize_for_serialization(obj))


def _ignore(status: int, exc: ApiException) -> None:
    if exc.status != status:
        raise exc


# --------------------------------------------------------------------------- custom objects


def _custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def get_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    """A StreamApp or Savepoint, or None."""
    try:
        return cast(
            dict[str, Any],
            _custom().get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name),
        )
    except ApiException as exc:
        _ignore(404, exc)
        return None


def list_objects(plural: str, namespace: str | None) -> list[dict[str, Any]]:
    """Every StreamApp or Savepoint in a namespace (None = all namespaces)."""
    if namespace is None:
        found = _custom().list_cluster_custom_object(GROUP, VERSION, plural)
    else:
        found = _custom().list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    return cast(list[dict[str, Any]], found.get("items", []))


def create_object(plural: str, namespace: str, body: dict[str, Any]) -> bool:
    """Create unless it exists; True if it was created now."""
    try:
        _custom().create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
        return True
    except ApiException as exc:
        _ignore(409, exc)
        return False


def delete_object(plural: str, namespace: str, name: str) -> None:
    """Delete if present."""
    try:
        _custom().delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except ApiException as exc:
        _ignore(404, exc)


def patch_status(plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Merge-patch the status subresource (None values delete fields)."""
    try:
        _custom().patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": status}
        )
    except ApiException as exc:
        if exc.status == 404:
            raise NotFound(f"{plural}/{name} in {namespace}") from exc
        raise


def patch_object(plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
    """Merge-patch the object (metadata or spec)."""
    _custom().patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, patch)


# --------------------------------------------------------------------------- workload


def _apps() -> client.AppsV1Api:
    return client.AppsV1Api(api_client())


def get_deployment(namespace: str, name: str) -> dict[str, Any] | None:
    """A Deployment, or None."""
    try:
        return _plain(_apps().read_namespaced_deployment(name, namespace))
    except ApiException as exc:
        _ignore(404, exc)
        return None


def get_statefulset(namespace: str, name: str) -> dict[str, Any] | None:
    """A StatefulSet, or None."""
    try:
        return _plain(_apps().read_namespaced_stateful_set(name, namespace))
    except ApiException as exc:
        _ignore(404, exc)
        return None


def _apply_replacing(
    namespace: str,
    body: dict[str, Any],
    get: Any,
    create: Any,
    replace: Any,
) -> None:
    name = body["metadata"]["name"]
    for _ in range(5):
        current = get(namespace, name)
        if current is None:
            try:
                create(namespace, body)
                return
            except ApiException as exc:
                _ignore(409, exc)
                continue
        desired = dict(body)
        desired["metadata"] = {
            **body["metadata"],
            "resourceVersion": current["metadata"]["resourceVersion"],
        }
        try:
            replace(name, namespace, desired)
            return
        except ApiException as exc:
            _ignore(409, exc)  # changed meanwhile: read again
    raise RuntimeError(f"{body['kind']} {namespace}/{name} kept changing; will retry")


def apply_deployment(namespace: str, body: dict[str, Any]) -> None:
    """Create the Deployment, or replace its spec, labels and annotations with `body`'s.

    A replace (not a merge patch) so that a removed env var or argument really goes."""
    apps = _apps()
    _apply_replacing(
        namespace,
        body,
        get_deployment,
        apps.create_namespaced_deployment,
        apps.replace_namespaced_deployment,
    )


def apply_statefulset(namespace: str, body: dict[str, Any]) -> None:
    """Create the StatefulSet, or replace it with `body` (as `apply_deployment`)."""
    apps = _apps()
    _apply_replacing(
        namespace,
        body,
        get_statefulset,
        apps.create_namespaced_stateful_set,
        apps.replace_namespaced_stateful_set,
    )


_BACKGROUND = client.V1DeleteOptions(propagation_policy="Background")


def delete_deployment(namespace: str, name: str) -> None:
    """Delete if present (its ReplicaSets and pods are collected)."""
    try:
        _apps().delete_namespaced_deployment(name, namespace, body=_BACKGROUND)
    except ApiException as exc:
        _ignore(404, exc)


def delete_statefulset(namespace: str, name: str) -> None:
    """Delete if present (its pods are collected)."""
    try:
        _apps().delete_namespaced_stateful_set(name, namespace, body=_BACKGROUND)
    except ApiException as exc:
        _ignore(404, exc)


def delete_pod(namespace: str, name: str) -> None:
    """Delete if present (with the pod's own grace period)."""
    try:
        client.CoreV1Api(api_client()).delete_namespaced_pod(name, namespace)
    except ApiException as exc:
        _ignore(404, exc)


def apply_service(namespace: str, body: dict[str, Any]) -> None:
    """Create the Service, or merge-patch its ports and selector (a selector key that
    `body` lacks is removed, so the selector ends up exactly `body`'s)."""
    core = client.CoreV1Api(api_client())
    name = body["metadata"]["name"]
    try:
        core.create_namespaced_service(namespace, body)
    except ApiException as exc:
        _ignore(409, exc)
        current = _plain(core.read_namespaced_service(name, namespace))
        wanted = body["spec"].get("selector") or {}
        selector = {k: None for k in (current.get("spec") or {}).get("selector") or {}}
        patch = {**body, "spec": {**body["spec"], "selector": {**selector, **wanted}}}
        core.patch_namespaced_service(name, namespace, patch)


def delete_service(namespace: str, name: str) -> None:
    """Delete if present."""
    try:
        client.CoreV1Api(api_client()).delete_namespaced_service(name, namespace)
    except ApiException as exc:
        _ignore(404, exc)


def ensure_service_account(namespace: str, body: dict[str, Any]) -> None:
    """Create the ServiceAccount unless it exists (it may be the chart's: left alone)."""
    try:
        client.CoreV1Api(api_client()).create_namespaced_service_account(namespace, body)
    except ApiException as exc:
        _ignore(409, exc)


def list_pods(namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
    """Pods matching the labels."""
    text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    pods = client.CoreV1Api(api_client()).list_namespaced_pod(namespace, label_selector=text)
    return [_plain(p) for p in pods.items]


def create_job(namespace: str, body: dict[str, Any]) -> bool:
    """Create the Job unless one of its name exists; True if this call created it."""
    try:
        client.BatchV1Api(api_client()).create_namespaced_job(namespace, body)
        return True
    except ApiException as exc:
        _ignore(409, exc)
        return False


def delete_job(namespace: str, name: str) -> None:
    """Delete the Job and (in the background) its pods, if it exists."""
    try:
        client.BatchV1Api(api_client()).delete_namespaced_job(
            name, namespace, propagation_policy="Background"
        )
    except ApiException as exc:
        _ignore(404, exc)


# --------------------------------------------------------------------------- secrets, events


def credentials(namespace: str, secret: str | None) -> dict[str, str] | None:
    """The storage credentials named by an app (None: none named, or the Secret is gone)."""
    if not secret:
        return None
    return secret_env(namespace, secret)


def secret_env(namespace: str, name: str) -> dict[str, str] | None:
    """The Secret's keys and decoded values (environment variables), or None if absent."""
    try:
        secret = client.CoreV1Api(api_client()).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        _ignore(404, exc)
        return None
    data = secret.data or {}
    values = {k: base64.b64decode(v).decode() for k, v in data.items()}
    values.update(secret.string_data or {})
    return values


def create_event(
    namespace: str,
    involved: dict[str, Any],
    type_: str,
    reason: str,
    message: str,
) -> None:
    """A core/v1 Event about `involved` (apiVersion, kind, name, uid)."""
    now = datetime.now(UTC)
    name = f"{involved['name']}.{now.strftime('%Y%m%d%H%M%S%f')}"
    body = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        involved_object=client.V1ObjectReference(
            api_version=involved.get("apiVersion"),
            kind=involved.get("kind"),
            name=involved.get("name"),
            namespace=namespace,
            uid=involved.get("uid"),
        ),
        type=type_,
        reason=reason,
        message=message[:1024],
        first_timestamp=now,
        last_timestamp=now,
        count=1,
        source=client.V1EventSource(component="rewind-operator"),
        reporting_component="rewind-operator",
        reporting_instance="rewind-operator",
    )
    client.CoreV1Api(api_client()).create_namespaced_event(namespace, body)


def list_events(namespace: str, name: str) -> list[dict[str, Any]]:
    """Events about the object `name` (for the CLI and tests)."""
    found = client.CoreV1Api(api_client()).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return [_plain(e) for e in found.items]


def current_namespace() -> str:
    """The kubeconfig's current namespace (for the CLI), `default` if it names none."""
    try:
        _, context = config.list_kube_config_contexts()
        return str(context.get("context", {}).get("namespace") or "default")
    except (config.ConfigException, TypeError):
        return "default"
