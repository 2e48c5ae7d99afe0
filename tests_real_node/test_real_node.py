"""The real node runs the project's images as a user's cluster would (dev/node/).

Each test starts pods from the images built from Dockerfile.engine, Dockerfile.operator
and examples/post_analytics/Dockerfile, and checks what only a real container runtime
gives: the user and read-only root file system, cgroup limits, `kubectl exec`/`logs`, a
ClusterIP Service routed by kube-proxy and resolved by the node's DNS, and a missing
image reported as such.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.request

import pytest

from dev import devcluster
from dev.node.net import NodeNet
from dev.plane.layout import State

from .kube import SLEEP, apply_pod, exec_, kubectl, pod, start, wait_for

CHART_SECURITY = {
    # What helm/rewind/templates gives the operator's container.
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def test_operator_image_runs_as_non_root_with_a_read_only_root(namespace: str) -> None:
    start(namespace, pod("op", "rewind/operator:0.1.0", SLEEP, securityContext=CHART_SECURITY))
    assert exec_(namespace, "op", "id", "-u").stdout.strip() == "10001"
    write = exec_(namespace, "op", "python", "-c", "open('/probe', 'w')")
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr


def test_engine_pod_limits_are_its_cgroup(namespace: str) -> None:
    limits = {"cpu": "250m", "memory": "200Mi"}
    start(namespace, pod("eng", "rewind/engine:0.1.0", SLEEP, resources={"limits": limits}))
    memory = exec_(namespace, "eng", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    quota = exec_(namespace, "eng", "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    period = exec_(namespace, "eng", "cat", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    assert int(memory.stdout) == 200 * 2**20
    assert int(quota.stdout) / int(period.stdout) == pytest.approx(0.25)


def test_exec_and_logs_of_an_app_image(namespace: str) -> None:
    start(namespace, pod("app", "rewind-examples/post-analytics:v2", SLEEP))
    listing = exec_(namespace, "app", "ls", "/app")
    assert listing.returncode == 0 and "flow.py" in listing.stdout.split()
    assert exec_(namespace, "app", "rewind", "--help").returncode == 0
    wait_for("the pod's log", lambda: "up" in kubectl("logs", "app", namespace=namespace))


def test_pods_get_addresses_of_this_clusters_test_range(namespace: str) -> None:
    status = start(namespace, pod("ip", "rewind/engine:0.1.0", SLEEP))["status"]
    net = NodeNet.of(State.default())
    assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(net.pod_cidr)


def cluster_ip_service(namespace: str, name: str, app: str) -> str:
    """A Service `name` on port 80 in front of the pods labelled `app` (port 8081);
    returns its ClusterIP."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8081}]},
    }
    kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(service))
    return str(
        json.loads(kubectl("get", "svc", name, "-o", "json", namespace=namespace))["spec"][
            "clusterIP"
        ]
    )


def test_a_cluster_ip_service_answers_through_kube_proxy(namespace: str) -> None:
    server = ["python", "-m", "http.server", "8081", "--directory", "/opt/rewind"]
    start(namespace, pod("web", "rewind/engine:0.1.0", server))
    ip = cluster_ip_service(namespace, "web", app="web")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(
        NodeNet.of(State.default()).service_cidr
    )

    def answer() -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://{ip}/", timeout=3) as r:
                return bytes(r.read())
        except OSError:
            return None

    assert b"bin/" in wait_for(f"an answer from {ip}:80", answer)


RESOLVE = "import socket, sys; print(socket.gethostbyname(sys.argv[1]))"


def test_pods_resolve_services_by_name_and_no_other_name(namespace: str) -> None:
    start(namespace, pod("asker", "rewind/engine:0.1.0", SLEEP))
    ip = cluster_ip_service(namespace, "named", app="asker")
    node = NodeNet.of(State.default()).gateway
    resolv = exec_(namespace, "asker", "cat", "/etc/resolv.conf").stdout
    assert f"nameserver {node}" in resolv and f"search {namespace}.svc.cluster.local" in resolv
    for name in ("named", f"named.{namespace}", f"named.{namespace}.svc.cluster.local"):
        assert exec_(namespace, "asker", "python", "-c", RESOLVE, name).stdout.strip() == ip, name
    api = exec_(namespace, "asker", "python", "-c", RESOLVE, "kubernetes.default").stdout.strip()
    assert api == NodeNet.of(State.default()).kubernetes_service_ip
    # Nothing is forwarded: a name outside the cluster is not resolved (no query leaves).
    outside = exec_(namespace, "asker", "python", "-c", RESOLVE, "pypi.org")
    assert outside.returncode != 0 and "gaierror" in outside.stderr, outside.stdout


def test_an_image_that_does_not_exist_is_reported(namespace: str) -> None:
    wait_for(
        "the default service account",
        lambda: devcluster.kubectl("get", "sa", "default", namespace=namespace).returncode == 0,
    )
    manifest = pod("nope", "rewind-examples/post-analytics:does-not-exist", SLEEP)
    kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(manifest))

    def reason() -> str | None:
        got = json.loads(kubectl("get", "pod", "nope", "-o", "json", namespace=namespace))
        for c in got["status"].get("containerStatuses") or []:
            waiting = c.get("state", {}).get("waiting") or {}
            if waiting.get("reason") in ("ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull"):
                return str(waiting["reason"])
        return None

    assert wait_for("the pod's image error", reason) == "ErrImageNeverPull"


@pytest.mark.parametrize(
    "image", ["rewind-examples/post-analytics:does-not-exist", "registry.example/x/y:z"]
)
def test_a_missing_image_is_pulled_from_nowhere(namespace: str, image: str) -> None:
    """With `IfNotPresent`, containerd tries to pull: every registry name leads to a
    closed loopback port (dev/node/runtime.py), so no name is ever looked up."""
    manifest = pod("pull", image, SLEEP, imagePullPolicy="IfNotPresent")
    apply_pod(namespace, manifest)

    def message() -> str | None:
        got = json.loads(kubectl("get", "pod", "pull", "-o", "json", namespace=namespace))
        for c in got["status"].get("containerStatuses") or []:
            waiting = c.get("state", {}).get("waiting") or {}
            if waiting.get("reason") in ("ImagePullBackOff", "ErrImagePull"):
                return str(waiting.get("message", ""))
        return None

    said = wait_for("the pod's pull error", message)
    events = kubectl("get", "events", "-o", "json", namespace=namespace)
    pulls = [e["message"] for e in json.loads(events)["items"] if "Failed to pull" in e["message"]]
    assert pulls, said
    for text in pulls:
        assert "127.0.0.1:9" in text and "lookup" not in text, text
