"""The process kubelet against the real control plane: pods scheduled by kube-scheduler,
managed by the real Deployment and Job controllers, run as local processes.

Every wait polls the real state with a generous limit that only guards against a hang;
no test asserts how long anything took.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dev import devcluster
from dev.devcluster import ClusterEnv
from dev.plane.layout import REPO, State

pytestmark = pytest.mark.integration

T = TypeVar("T")
Json = dict[str, Any]
LIMIT = 180.0
"""Fail-safe only: how long a wait may take before the test is declared hung."""


def wait_for(what: str, probe: Callable[[], T | None], limit: float = LIMIT) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + limit
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"gave up waiting for {what}; last observation: {last!r}")


def kubectl(*args: str, namespace: str | None = None, input: str | None = None) -> str:
    done = devcluster.kubectl(*args, namespace=namespace, input=input)
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def apply(namespace: str, *objects: Json) -> None:
    # A fresh namespace gets its `default` ServiceAccount from the controller manager a
    # moment later, and pods are refused until then.
    wait_for(
        "the default service account",
        lambda: devcluster.kubectl("get", "sa", "default", namespace=namespace).returncode == 0,
    )
    kubectl(
        "apply",
        "-f",
        "-",
        namespace=namespace,
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


def get(namespace: str, kind: str, name: str) -> Json | None:
    done = devcluster.kubectl("get", kind, name, "-o", "json", namespace=namespace)
    if done.returncode != 0:
        return None
    data: Json = json.loads(done.stdout)
    return data


def pods(namespace: str, selector: str) -> list[Json]:
    items: list[Json] = json.loads(
        kubectl("get", "pods", "-l", selector, "-o", "json", namespace=namespace)
    )["items"]
    return items


def http_json(url: str) -> Json | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: Json = json.loads(resp.read())
            return data
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    """The process runs (a zombie waiting for init to reap it has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def http_server(name: str, image: str = "rewind-dev/http-server:v1", **spec: Any) -> Json:
    """A container of the test HTTP server, with POD_IP/POD_NAME from the downward API."""
    return {
        "name": name,
        "image": image,
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        **spec,
    }


def pod(name: str, *containers: Json, **spec: Any) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": list(containers), "terminationGracePeriodSeconds": 10, **spec},
    }


def ready_pod_ip(namespace: str, name: str) -> str:
    def probe() -> str | None:
        p = get(namespace, "pod", name)
        conds = (p or {}).get("status", {}).get("conditions") or []
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
        return p["status"]["podIP"] if p and ready else None

    return wait_for(f"pod {name} to be Ready", probe)


def deployment(name: str, image: str) -> Json:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [http_server("web", image)],
                    "terminationGracePeriodSeconds": 10,
                },
            },
        },
    }


def available(namespace: str, name: str) -> bool:
    d = get(namespace, "deployment", name) or {}
    status = d.get("status", {})
    conds = status.get("conditions") or []
    return (
        status.get("observedGeneration") == d.get("metadata", {}).get("generation")
        and status.get("updatedReplicas")
        == status.get("replicas")
        == status.get("availableReplicas")
        == 1
        and any(c["type"] == "Available" and c["status"] == "True" for c in conds)
    )


def test_deployment_becomes_available_and_answers_at_its_pod_ip(
    cluster: ClusterEnv, namespace: str
) -> None:
    apply(namespace, deployment("web", "rewind-dev/http-server:v1"))
    wait_for("deployment web to be Available", lambda: available(namespace, "web"))
    [p] = pods(namespace, "app=web")
    ip = p["status"]["podIP"]
    assert ip.startswith("127.0.") and ip != "127.0.0.1"
    assert p["spec"]["nodeName"] == "rewind-dev-node"
    answer = http_json(f"http://{ip}:8080/")
    assert answer is not None
    assert answer["version"] == "v1"
    assert answer["pod"] == p["metadata"]["name"]
    assert answer["address"] == f"{ip}:8080"
    assert answer["cwd"] == str(REPO / "dev" / "testimages" / "http-server-v1")


def test_rolling_update_replaces_the_pod_and_the_new_one_runs_v2(
    cluster: ClusterEnv, namespace: str
) -> None:
    apply(namespace, deployment("web", "rewind-dev/http-server:v1"))
    wait_for("deployment web to be Available", lambda: available(namespace, "web"))
    [old] = pods(namespace, "app=web")
    old_answer = http_json(f"http://{old['status']['podIP']}:8080/")
    assert old_answer is not None and old_answer["version"] == "v1"

    apply(namespace, deployment("web", "rewind-dev/http-server:v2"))

    def rolled() -> Json | None:
        current = pods(namespace, "app=web")
        if not available(namespace, "web") or len(current) != 1:
            return None
        return current[0] if current[0]["metadata"]["uid"] != old["metadata"]["uid"] else None

    new = wait_for("the rollout to v2 to finish", rolled)
    answer = http_json(f"http://{new['status']['podIP']}:8080/")
    assert answer is not None and answer["version"] == "v2"
    assert new["spec"]["containers"][0]["image"] == "rewind-dev/http-server:v2"
    wait_for("the v1 process to end", lambda: not pid_alive(old_answer["pid"]))


def test_job_completes_and_its_pod_succeeds(cluster: ClusterEnv, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "count"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": [
                        {"name": "prepare", "image": "rewind-dev/job:v1", "args": ["prepared"]}
                    ],
                    "containers": [
                        {
                            "name": "main",
                            "image": "rewind-dev/job:v1",
                            "args": ["hello", "$(WHO)"],
                            "env": [{"name": "WHO", "value": "world"}],
                        }
                    ],
                }
            },
        },
    }
    apply(namespace, job)

    def complete() -> bool:
        conds = (get(namespace, "job", "count") or {}).get("status", {}).get("conditions") or []
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conds)

    wait_for("job count to complete", complete)
    [p] = pods(namespace, "job-name=count")
    assert p["status"]["phase"] == "Succeeded"
    [main] = p["status"]["containerStatuses"]
    assert main["state"]["terminated"]["exitCode"] == 0
    assert main["state"]["terminated"]["reason"] == "Completed"
    [init] = p["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert (
        kubectl("logs", p["metadata"]["name"], "-c", "main", namespace=namespace)
        == "job done: hello world\n"
    )
    log_file = (
        State.default().root / "pods" / f"{namespace}_{p['metadata']['name']}" / "prepare.log"
    )
    assert log_file.read_text() == "job done: prepared\n"


def test_deleting_a_pod_ends_its_process_and_the_pod(cluster: ClusterEnv, namespace: str) -> None:
    apply(namespace, pod("victim", http_server("web")))
    ip = ready_pod_ip(namespace, "victim")
    answer = http_json(f"http://{ip}:8080/")
    assert answer is not None
    pid = answer["pid"]
    assert pid_alive(pid)
    kubectl("delete", "pod", "victim", "--wait=false", namespace=namespace)
    wait_for("the pod to leave the API", lambda: get(namespace, "pod", "victim") is None)
    assert not pid_alive(pid)
    assert http_json(f"http://{ip}:8080/") is None


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(
    cluster: ClusterEnv, namespace: str
) -> None:
    stubborn = {
        "name": "stubborn",
        "image": "rewind-dev/job:v1",
        "command": [
            "python",
            "-c",
            "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print(os.getpid(), flush=True); time.sleep(3600)",
        ],
    }
    apply(namespace, pod("stubborn", stubborn, terminationGracePeriodSeconds=1))
    ready_pod_ip(namespace, "stubborn")
    pid = int(
        wait_for("the pid in the log", lambda: kubectl("logs", "stubborn", namespace=namespace))
    )
    assert pid_alive(pid)
    kubectl("delete", "pod", "stubborn", "--wait=false", namespace=namespace)
    wait_for("the pod to leave the API", lambda: get(namespace, "pod", "stubborn") is None)
    assert not pid_alive(pid)


def test_a_crashing_container_is_restarted_with_a_growing_restart_count(
    cluster: ClusterEnv, namespace: str
) -> None:
    apply(namespace, pod("crash", {"name": "c", "image": "rewind-dev/crasher:v1"}))

    def status() -> Json:
        p = get(namespace, "pod", "crash") or {}
        [s] = p.get("status", {}).get("containerStatuses") or [{}]
        return dict(s)

    def reason() -> str | None:
        return ((status().get("state") or {}).get("waiting") or {}).get("reason")

    wait_for("a CrashLoopBackOff wait", lambda: reason() == "CrashLoopBackOff")
    counts = [wait_for("a first restart", lambda: status().get("restartCount", 0))]
    counts.append(
        wait_for("a later restart", lambda: max(status().get("restartCount", 0) - counts[0], 0))
        + counts[0]
    )
    assert counts[1] > counts[0] >= 1
    p = get(namespace, "pod", "crash")
    assert p is not None
    [last] = p["status"]["containerStatuses"]
    assert last["lastState"]["terminated"]["exitCode"] == 3
    assert last["lastState"]["terminated"]["reason"] == "Error"
    assert p["status"]["phase"] == "Running"


def test_a_failing_liveness_probe_restarts_the_container(
    cluster: ClusterEnv, namespace: str
) -> None:
    live = http_server(
        "web",
        livenessProbe={
            "httpGet": {"path": "/healthz", "port": 8080},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    )
    apply(namespace, pod("live", live))
    ip = ready_pod_ip(namespace, "live")
    first = http_json(f"http://{ip}:8080/")
    assert first is not None
    urllib.request.urlopen(
        urllib.request.Request(f"http://{ip}:8080/break", method="POST"), timeout=5
    ).close()

    def restarted() -> Json | None:
        p = get(namespace, "pod", "live") or {}
        [status] = p.get("status", {}).get("containerStatuses") or [{}]
        return status if status.get("restartCount", 0) >= 1 and status.get("ready") else None

    wait_for("a restart after the liveness failure", restarted)
    second = http_json(f"http://{ip}:8080/")
    assert second is not None and second["pid"] != first["pid"]
    assert not pid_alive(first["pid"])


def test_downward_api_secret_and_config_map_reach_the_process(
    cluster: ClusterEnv, namespace: str
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {"password": "hunter2"},
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"MODE": "fast", "app.ini": "x=1\n"},
    }
    web = http_server(
        "web",
        envFrom=[{"configMapRef": {"name": "settings"}}],
        volumeMounts=[
            {"name": "cfg", "mountPath": "/etc/rewind-harness", "readOnly": True},
            {"name": "creds", "mountPath": "/var/run/rewind-harness-creds"},
        ],
    )
    web["env"] += [
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "ADDRESS", "value": "$(POD_IP):8080/$(MODE)"},
    ]
    apply(namespace, secret, config, pod("envy", web, volumes=[
        {"name": "cfg", "configMap": {"name": "settings"}},
        {"name": "creds", "secret": {"secretName": "creds"}},
    ]))  # fmt: skip
    ip = ready_pod_ip(namespace, "envy")
    env = http_json(f"http://{ip}:8080/env")
    assert env is not None
    assert env["POD_IP"] == ip
    assert env["POD_NAME"] == "envy"
    assert env["NS"] == namespace
    assert env["NODE"] == "rewind-dev-node"
    assert env["PASSWORD"] == "hunter2"
    assert env["MODE"] == "fast"
    assert env["ADDRESS"] == f"{ip}:8080/fast"
    assert env["PATH"].split(":")[0] == str(REPO / ".venv" / "bin")
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "KUBECONFIG" not in env and "AWS_SECRET_ACCESS_KEY" not in env

    def file(path: str) -> bytes:
        with urllib.request.urlopen(f"http://{ip}:8080/file?path={path}", timeout=5) as resp:
            return bytes(resp.read())

    assert file("/etc/rewind-harness/app.ini") == b"x=1\n"
    assert file("/var/run/rewind-harness-creds/password") == b"hunter2"
    assert file("/var/run/secrets/kubernetes.io/serviceaccount/namespace") == namespace.encode()


def test_a_service_account_token_lets_a_pod_call_the_api(
    cluster: ClusterEnv, namespace: str
) -> None:
    whoami = {"name": "c", "image": "rewind-dev/job:v1", "command": ["python", "whoami.py"]}
    apply(namespace, pod("whoami", whoami, restartPolicy="Never"))

    def finished() -> str | None:
        phase = (get(namespace, "pod", "whoami") or {}).get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for("the whoami pod to finish", finished)
    logs = kubectl("logs", "whoami", namespace=namespace)
    assert phase == "Succeeded", logs
    assert logs == f"username: system:serviceaccount:{namespace}:default\n"


def test_without_automount_there_is_no_token(cluster: ClusterEnv, namespace: str) -> None:
    apply(namespace, pod("bare", http_server("web"), automountServiceAccountToken=False))
    ip = ready_pod_ip(namespace, "bare")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(
            f"http://{ip}:8080/file?path=/var/run/secrets/kubernetes.io/serviceaccount/token",
            timeout=5,
        )


def test_an_unknown_image_waits_in_image_pull_backoff_naming_the_image_map(
    cluster: ClusterEnv, namespace: str
) -> None:
    apply(namespace, pod("ghost", {"name": "c", "image": "rewind-dev/no-such-image:v0"}))

    def waiting() -> Json | None:
        [status] = (get(namespace, "pod", "ghost") or {}).get("status", {}).get(
            "containerStatuses"
        ) or [{}]
        w = (status.get("state") or {}).get("waiting") or {}
        return w if w.get("reason") in ("ErrImagePull", "ImagePullBackOff") else None

    w = wait_for("ErrImagePull", waiting)
    assert "dev/images.yaml" in w["message"]
    assert "rewind-dev/no-such-image:v0" in w["message"]


def test_the_node_is_ready_with_a_lease(cluster: ClusterEnv) -> None:
    node = get("default", "node", "rewind-dev-node")
    assert node is not None
    conds = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conds["Ready"] == "True"
    assert node["status"]["addresses"] == [{"type": "InternalIP", "address": "127.0.0.1"}]
    assert not node["spec"].get("taints")
    lease = get("kube-node-lease", "lease", "rewind-dev-node")
    assert lease is not None and lease["spec"]["holderIdentity"] == "rewind-dev-node"


# A kubelet of our own, on a second node, to restart at will.


class OwnKubelet:
    def __init__(self, cluster: ClusterEnv, state: Path, node: str) -> None:
        self.argv = [
            sys.executable, "-m", "dev.kubelet", f"--kubeconfig={cluster.kubeconfig}",
            f"--state-dir={state}", f"--node-name={node}", "--port=0",
            "--register-with-taints=rewind.dev/harness-test=true:NoSchedule",
        ]  # fmt: skip
        self.log = state / "kubelet.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=out, stderr=out)

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)


@pytest.fixture
def own_kubelet(cluster: ClusterEnv, tmp_path: Path) -> Iterator[tuple[OwnKubelet, str]]:
    node = f"rewind-harness-{uuid.uuid4().hex[:6]}"
    kubelet = OwnKubelet(cluster, tmp_path / "state", node)
    kubelet.start()
    try:
        yield kubelet, node
    finally:
        kubelet.stop()
        devcluster.kubectl("delete", "node", node, "--wait=false")


def test_a_restarted_kubelet_adopts_its_running_pods(
    cluster: ClusterEnv, namespace: str, own_kubelet: tuple[OwnKubelet, str]
) -> None:
    kubelet, node = own_kubelet
    wait_for("the second node to be Ready", lambda: get("default", "node", node))
    apply(namespace, pod("kept", http_server("web"), nodeName=node))
    ip = ready_pod_ip(namespace, "kept")
    before = http_json(f"http://{ip}:8080/")
    assert before is not None

    kubelet.crash()
    assert http_json(f"http://{ip}:8080/") == before  # the pod outlives its kubelet
    kubelet.start()
    wait_for("the log line of the adoption", lambda: "adopted" in kubelet.log.read_text())
    ready_pod_ip(namespace, "kept")
    assert http_json(f"http://{ip}:8080/") == before  # same process, same address
    p = get(namespace, "pod", "kept")
    assert p is not None and p["status"]["containerStatuses"][0]["restartCount"] == 0

    kubectl("delete", "pod", "kept", "--wait=false", namespace=namespace)
    wait_for("the pod to leave the API", lambda: get(namespace, "pod", "kept") is None)
    assert not pid_alive(before["pid"])
