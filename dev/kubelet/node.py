"""The Node: registration, status heartbeats and the Lease that keep it Ready.

Flows through: the node name, its capacity, the kubelet endpoint port; out go a Node
object, its status every ``status_period`` seconds and its Lease in ``kube-node-lease``
every ``lease_period`` seconds.

What must stay true: the node controller marks a node NotReady (and then evicts its
pods) when the Lease is not renewed within its grace period (40-50 s), so renewals run
on their own thread and a failed renewal is retried at the next period, never fatal.
The node has no taints and one address, ``InternalIP 127.0.0.1``: the apiserver reaches
the kubelet's log endpoint there (a Hostname address would make it try DNS first).
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dev.kubelet.api import Api
from dev.kubelet.podstatus import now_rfc3339

JsonDict = dict[str, Any]
log = logging.getLogger("kubelet.node")
HOST_IP = "127.0.0.1"


@dataclass(frozen=True)
class NodeSettings:
    name: str
    cpu: str = "2"
    memory: str = ""
    pods: str = "110"
    kubelet_port: int = 10250
    lease_seconds: int = 40
    lease_period: float = 10.0
    status_period: float = 10.0
    taints: tuple[str, ...] = ()
    """``key=value:Effect`` taints set when the node is first registered (none by default)."""

    def capacity(self) -> dict[str, str]:
        memory = self.memory or _machine_memory()
        return {"cpu": self.cpu, "memory": memory, "pods": self.pods, "ephemeral-storage": "20Gi"}


def _machine_memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1])}Ki"
    return "4Gi"


def _read(path: str, default: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_status(settings: NodeSettings, kubelet_version: str) -> JsonDict:
    """The Node's status: Ready, no pressure, capacity, the loopback address."""
    now = now_rfc3339()

    def cond(ctype: str, status: str, reason: str, message: str) -> JsonDict:
        return {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
        }

    capacity = settings.capacity()
    return {
        "conditions": [
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            cond(
                "DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "rewind-dev process kubelet is posting ready status",
            ),
        ],
        "addresses": [{"type": "InternalIP", "address": HOST_IP}],
        "capacity": capacity,
        "allocatable": capacity,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": settings.kubelet_port}},
        "nodeInfo": {
            "machineID": _read("/etc/machine-id", "rewind-dev"),
            "systemUUID": _read("/sys/class/dmi/id/product_uuid", "rewind-dev"),
            "bootID": _read("/proc/sys/kernel/random/boot_id", "rewind-dev"),
            "kernelVersion": platform.release(),
            "osImage": "rewind-dev process kubelet",
            "containerRuntimeVersion": "rewind-process://0.1.0",
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                platform.machine(), platform.machine()
            ),
        },
    }


def node_object(settings: NodeSettings) -> JsonDict:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": settings.name,
            "labels": {
                "kubernetes.io/hostname": settings.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch,
                "rewind.dev/process-kubelet": "true",
            },
        },
        "spec": {"taints": [parse_taint(t) for t in settings.taints]} if settings.taints else {},
    }


def parse_taint(text: str) -> JsonDict:
    """``key=value:Effect`` or ``key:Effect`` as a Node taint."""
    kv, _, effect = text.rpartition(":")
    key, _, value = kv.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"not a taint (key=value:Effect): {text!r}")
    return (
        {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}
    )


class NodeAgent:
    """Registers the node, then renews its Lease and status on a daemon thread."""

    def __init__(self, api: Api, settings: NodeSettings) -> None:
        self._api = api
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="node-heartbeat", daemon=True)
        self._version = "v0.0.0"
        self._node_uid = ""

    @property
    def allocatable(self) -> dict[str, str]:
        return self._settings.capacity()

    def register(self) -> None:
        """Create the Node (or take over an existing one) and post a first status."""
        version = self._api.server_version()
        # A build without version stamps says "v0.0.0-master+$Format:%H$"; keep it semver.
        self._version = version if "$" not in version else "v0.0.0-rewind-dev"
        existing = self._api.get_node(self._settings.name)
        body = node_object(self._settings)
        if existing is None:
            self._api.create_node(body)
            log.info("registered node %s", self._settings.name)
        else:
            # A taint left by the node controller while we were away is lifted by it once
            # the node is Ready again; ours are none.
            self._api.patch_node(
                self._settings.name, {"metadata": {"labels": body["metadata"]["labels"]}}
            )
            log.info("node %s already registered; taking it over", self._settings.name)
        node = self._api.get_node(self._settings.name)
        self._node_uid = str((node or {}).get("metadata", {}).get("uid", ""))
        self._post_status()
        self._renew_lease()

    def _post_status(self) -> None:
        self._api.patch_node_status(self._settings.name, node_status(self._settings, self._version))

    def _renew_lease(self) -> None:
        owner = []
        if self._node_uid:
            owner = [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "name": self._settings.name,
                    "uid": self._node_uid,
                }
            ]
        self._api.renew_lease(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self._settings.name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": owner,
                },
                "spec": {
                    "holderIdentity": self._settings.name,
                    "leaseDurationSeconds": self._settings.lease_seconds,
                    "renewTime": _micro_now(),
                },
            }
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        last_status = time.monotonic()
        while not self._stop.wait(self._settings.lease_period):
            try:
                self._renew_lease()
                if time.monotonic() - last_status >= self._settings.status_period:
                    self._post_status()
                    last_status = time.monotonic()
            except Exception:
                # A heartbeat must survive any API hiccup; the next period retries.
                log.exception(
                    "node heartbeat failed; retrying in %.0fs", self._settings.lease_period
                )
