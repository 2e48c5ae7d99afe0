"""The one module of the kubelet that talks to the Kubernetes API.

Flows through: pods, nodes, leases, ConfigMaps, Secrets and TokenRequests, always as
plain JSON dicts (camelCase, exactly what the API sends), never as client model objects,
so the rest of the kubelet reads manifests the way users write them.

What must stay true: every call is safe to repeat (patches, delete with a uid
precondition, create-or-patch); "not found" is an answer (None), not an error; nothing
here decides anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from dev.kubelet.volumes import decode_secret

JsonDict = dict[str, Any]
log = logging.getLogger("kubelet.api")


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old: list again."""


@dataclass(frozen=True)
class Token:
    token: str
    expiration: str


def _json(resp: Any) -> JsonDict:
    data: JsonDict = json.loads(resp.data)
    return data


class Api:
    """A Kubernetes API client for the kubelet. Thread-safe (one urllib3 pool)."""

    def __init__(self, kubeconfig: str) -> None:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 64
        self._cfg = cfg
        self._client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self._client)
        self.coordination = client.CoordinationV1Api(self._client)
        self.version_api = client.VersionApi(self._client)

    def server_address(self) -> tuple[str, int]:
        """Host and port of the apiserver, for KUBERNETES_SERVICE_HOST/PORT."""
        url = urlparse(self._cfg.host)
        return url.hostname or "127.0.0.1", url.port or 443

    def server_version(self) -> str:
        info = self.version_api.get_code()
        return str(info.git_version)

    # pods

    def list_node_pods(self, node: str) -> tuple[list[JsonDict], str]:
        resp = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node}", _preload_content=False
        )
        data = _json(resp)
        return list(data.get("items") or []), str(data["metadata"]["resourceVersion"])

    def watch_node_pods(
        self, node: str, resource_version: str, timeout: int
    ) -> Iterator[tuple[str, JsonDict]]:
        """(type, pod) events; raises WatchExpiredError when the version is too old."""
        w = watch.Watch()
        try:
            for event in w.stream(
                self.core.list_pod_for_all_namespaces,
                field_selector=f"spec.nodeName={node}",
                resource_version=resource_version,
                timeout_seconds=timeout,
                allow_watch_bookmarks=True,
            ):
                raw: JsonDict = event["raw_object"]
                if event["type"] == "ERROR":
                    raise WatchExpiredError(str(raw.get("message")))
                yield str(event["type"]), raw
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpiredError(str(exc.reason)) from exc
            raise
        finally:
            w.stop()

    def get_pod(self, namespace: str, name: str) -> JsonDict | None:
        try:
            return _json(self.core.read_namespaced_pod(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_pod_status(self, namespace: str, name: str, status: JsonDict) -> JsonDict | None:
        """Strategic-merge-patch the pod's status; None when the pod is gone."""
        try:
            resp = self.core.patch_namespaced_pod_status(
                name, namespace, {"status": status}, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _json(resp)

    def delete_pod_final(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet's final deletion: grace period 0, only this very pod (uid)."""
        body = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
        )
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone already, or a new pod with that name
                raise

    def create_event(
        self, pod: JsonDict, reason: str, message: str, warning: bool, node: str
    ) -> None:
        """A best-effort Kubernetes Event about the pod (kubectl describe shows them)."""
        meta = pod["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "kind": "Pod",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": "v1",
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": "kubelet", "host": node},
            "reportingComponent": "kubelet",
            "reportingInstance": node,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False)
        except ApiException as exc:
            log.debug("event %s for %s not recorded: %s", reason, meta["name"], exc.reason)

    # objects pods refer to (the envbuild/volumes ObjectReader)

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            data = _json(
                self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(data.get("data") or {})

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            data = _json(self.core.read_namespaced_secret(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return decode_secret(data.get("data"))

    def request_token(
        self,
        namespace: str,
        service_account: str,
        audience: str | None,
        expiration: int,
        pod_name: str,
        pod_uid: str,
    ) -> Token:
        """A TokenRequest for the pod's service account, bound to the pod."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": max(expiration, 600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod_name,
                    "uid": pod_uid,
                },
            },
        }
        resp = self.core.create_namespaced_service_account_token(
            service_account, namespace, body, _preload_content=False
        )
        status = _json(resp)["status"]
        return Token(token=str(status["token"]), expiration=str(status["expirationTimestamp"]))

    # nodes and leases

    def get_node(self, name: str) -> JsonDict | None:
        try:
            return _json(self.core.read_node(name, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_node(self, body: JsonDict) -> None:
        self.core.create_node(body, _preload_content=False)

    def patch_node(self, name: str, body: JsonDict) -> JsonDict:
        return _json(self.core.patch_node(name, body, _preload_content=False))

    def patch_node_status(self, name: str, status: JsonDict) -> None:
        self.core.patch_node_status(name, {"status": status}, _preload_content=False)

    def renew_lease(self, body: JsonDict) -> None:
        """Create the node's Lease, or patch its spec."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            self.coordination.patch_namespaced_lease(
                name, ns, {"spec": body["spec"]}, _preload_content=False
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease(ns, body, _preload_content=False)
