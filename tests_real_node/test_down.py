"""`dev/cluster down` leaves nothing behind: no process, mount, netns, cgroup, bridge or
iptables chain; `up` then brings the same cluster back, stored objects included (runs
last: it stops the shared cluster, and stops it again at its end)."""

from __future__ import annotations

import json
from pathlib import Path

from dev import devcluster
from dev.devcluster import ClusterEnv
from dev.node import runtime
from dev.plane import components
from dev.plane.layout import State

from .kube import wait_for


def _marked(state: State) -> list[int]:
    needle = f"{components.MARKER}={state.root}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(b"\0"):
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def _exists(namespace: str, kind: str, name: str) -> bool:
    return devcluster.kubectl("get", kind, name, namespace=namespace).returncode == 0


def _phase(namespace: str, pod: str) -> str | None:
    got = devcluster.kubectl("get", "pod", pod, "-o", "json", namespace=namespace)
    return json.loads(got.stdout)["status"].get("phase") if got.returncode == 0 else None


def test_down_leaves_nothing_behind_and_up_restores_the_cluster(real_node: ClusterEnv) -> None:
    state = State.default()
    ns = "rn-down"
    devcluster.kubectl("create", "namespace", ns, env=real_node)
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "left"},
        "spec": {"containers": [{"name": "main", "image": "rewind/engine:0.1.0",
                                 "imagePullPolicy": "Never",
                                 "command": ["python", "-c", "import time; time.sleep(3600)"]}]},
    }  # fmt: skip
    wait_for("the default service account", lambda: _exists(ns, "sa", "default"))
    devcluster.kubectl("apply", "-f", "-", namespace=ns, input=json.dumps(manifest), check=True)
    kept = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"},
            "data": {"k": "v"}}  # fmt: skip
    devcluster.kubectl("apply", "-f", "-", namespace=ns, input=json.dumps(kept), check=True)
    wait_for("the pod to run", lambda: _phase(ns, "left") == "Running")
    nets = runtime.netns_paths(state)
    assert nets, "a running pod has a network namespace"
    assert runtime.leftovers(state, nets), "while up, the node holds mounts, a bridge, ..."

    devcluster.down()

    assert runtime.leftovers(state, nets) == []
    assert _marked(state) == []
    assert not devcluster.is_up()

    again = devcluster.ensure_up()
    assert again == real_node, "the same addresses after a restart"
    got = devcluster.kubectl("get", "configmap", "kept", "-o", "jsonpath={.data.k}", namespace=ns)
    assert got.stdout == "v", got.stderr
    nets = runtime.netns_paths(state)  # the pod may be running again, in a new sandbox
    devcluster.down()
    assert runtime.leftovers(state, nets) == []
    assert _marked(state) == []
