"""A container's environment, built from the pod spec as the kubelet builds it.

Flows through: the pod (JSON as the API returns it), one container of it, the ConfigMaps
and Secrets it refers to (through an ``ObjectReader``), the pod IP and the service
variables. Out comes the process environment and the expanded argv.

What must stay true (Kubernetes semantics users rely on):

- order: service variables, then ``envFrom`` in order, then ``env`` in order; later wins;
- ``env[].value`` is ``$(VAR)``-expanded against the variables defined before it;
  ``valueFrom`` values are taken literally;
- command and args are expanded against the complete pod environment;
- a missing ConfigMap/Secret or key is an error (the pod shows
  CreateContainerConfigError) unless the reference is ``optional``;
- the image's env (from the image map) and the base variables lie underneath: the pod's
  own variables override them, as a container runtime merges image ENV.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from dev.kubelet.expansion import expand
from dev.kubelet.quantity import divide_round_up

JsonDict = dict[str, Any]

# The C-identifier-ish rule envFrom applies to keys (Kubernetes skips invalid ones).
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ConfigError(Exception):
    """The container cannot be configured yet (CreateContainerConfigError)."""


class ObjectReader(Protocol):
    """Reads the objects an environment or volume may refer to. None: it does not exist."""

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None: ...

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...


@dataclass(frozen=True)
class PodContext:
    """What the downward API can report that is not in the pod object itself."""

    pod_ip: str
    host_ip: str
    node_name: str
    node_allocatable: Mapping[str, str]


def _label_ref(path: str, prefix: str) -> str | None:
    """``metadata.labels['app']`` -> ``app``; None when ``path`` is not of that form."""
    if path.startswith(prefix + "['") and path.endswith("']"):
        return path[len(prefix) + 2 : -2]
    if path.startswith(prefix + '["') and path.endswith('"]'):
        return path[len(prefix) + 2 : -2]
    return None


def _format_map(values: Mapping[str, str]) -> str:
    """How a downward-API volume writes all labels or annotations: ``key="value"`` lines."""
    return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))


def pod_field(pod: JsonDict, path: str, ctx: PodContext) -> str:
    """The value of a downward-API ``fieldRef.fieldPath``."""
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or ctx.node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": ctx.pod_ip,
        "status.podIPs": ctx.pod_ip,
        "status.hostIP": ctx.host_ip,
        "status.hostIPs": ctx.host_ip,
    }
    if path in simple:
        return str(simple[path])
    if path == "metadata.labels":
        return _format_map(meta.get("labels") or {})
    if path == "metadata.annotations":
        return _format_map(meta.get("annotations") or {})
    for prefix, field in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        key = _label_ref(path, prefix)
        if key is not None:
            return str((meta.get(field) or {}).get(key, ""))
    raise ConfigError(f"unsupported fieldRef.fieldPath {path!r}")


def resource_field(pod: JsonDict, ref: JsonDict, default_container: str, ctx: PodContext) -> str:
    """The value of a ``resourceFieldRef``; unset limits fall back to the node's allocatable."""
    name = ref.get("containerName") or default_container
    containers = [*pod["spec"].get("containers", []), *pod["spec"].get("initContainers", [])]
    container = next((c for c in containers if c.get("name") == name), None)
    if container is None:
        raise ConfigError(f"resourceFieldRef names an unknown container {name!r}")
    resource: str = ref["resource"]
    kind, _, what = resource.partition(".")
    declared = (container.get("resources") or {}).get(kind) or {}
    value = declared.get(what)
    if value is None and kind == "requests":
        value = ((container.get("resources") or {}).get("limits") or {}).get(what)
    if value is None:
        value = ctx.node_allocatable.get(what, "0")
    try:
        return divide_round_up(value, ref.get("divisor"))
    except ValueError as exc:
        raise ConfigError(f"resourceFieldRef {resource}: {exc}") from exc


def _decode(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _value_from(
    pod: JsonDict, container: JsonDict, source: JsonDict, reader: ObjectReader, ctx: PodContext
) -> str | None:
    """The value of one ``valueFrom``; None when an optional reference is missing."""
    namespace = pod["metadata"]["namespace"]
    if "fieldRef" in source:
        return pod_field(pod, source["fieldRef"]["fieldPath"], ctx)
    if "resourceFieldRef" in source:
        return resource_field(pod, source["resourceFieldRef"], container["name"], ctx)
    for kind, ref_key in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
        if ref_key not in source:
            continue
        ref = source[ref_key]
        optional = bool(ref.get("optional"))
        data: Mapping[str, str | bytes] | None = (
            reader.config_map(namespace, ref["name"])
            if kind == "configmap"
            else reader.secret(namespace, ref["name"])
        )
        if data is None:
            if optional:
                return None
            raise ConfigError(f'{kind} "{ref["name"]}" not found')
        if ref["key"] not in data:
            if optional:
                return None
            label = "ConfigMap" if kind == "configmap" else "Secret"
            raise ConfigError(
                f"couldn't find key {ref['key']} in {label} {namespace}/{ref['name']}"
            )
        value = data[ref["key"]]
        return _decode(value) if isinstance(value, bytes) else value
    raise ConfigError(f"unsupported valueFrom {sorted(source)}")


def pod_env(
    pod: JsonDict,
    container: JsonDict,
    reader: ObjectReader,
    ctx: PodContext,
    service_env: Mapping[str, str],
) -> dict[str, str]:
    """The variables the pod spec defines for ``container`` (service variables included)."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(service_env)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, kind = source["configMapRef"], "configmap"
            data: Mapping[str, str | bytes] | None = reader.config_map(namespace, ref["name"])
        elif "secretRef" in source:
            ref, kind = source["secretRef"], "secret"
            data = reader.secret(namespace, ref["name"])
        else:
            raise ConfigError(f"unsupported envFrom source {sorted(source)}")
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind} "{ref["name"]}" not found')
        for key, value in data.items():
            name = prefix + key
            if _ENV_NAME.match(name):
                env[name] = _decode(value) if isinstance(value, bytes) else value
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" in var:
            resolved = _value_from(pod, container, var["valueFrom"], reader, ctx)
            if resolved is None:
                continue
            env[name] = resolved
        else:
            env[name] = expand(var.get("value", ""), env)
    return env


def container_env(
    base_env: Mapping[str, str], image_env: Mapping[str, str], pod_vars: Mapping[str, str]
) -> dict[str, str]:
    """The process environment: base, then the image's ENV, then the pod's variables."""
    return {**base_env, **image_env, **pod_vars}


def expand_argv(argv: list[str], variables: Mapping[str, str]) -> list[str]:
    """Command and args expanded against the pod's variables."""
    return [expand(arg, variables) for arg in argv]
