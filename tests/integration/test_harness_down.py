"""`dev/cluster down` leaves no process behind, pods included, and `up` brings the same
cluster back.

The test restarts the shared cluster, so it ends by starting it again: tests after it
find the cluster up, with the same addresses and the same stored objects."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from rewind_operator.testing import wait_until

from dev import devcluster
from dev.devcluster import ClusterEnv
from dev.plane import procs
from dev.plane.layout import State

pytestmark = pytest.mark.integration


def _with_token(token: str) -> list[procs.Proc]:
    """Live processes whose command line holds `token`."""
    found: list[procs.Proc] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        st = procs.read_stat(int(entry.name))
        if token.encode() in cmdline and st is not None:
            found.append(procs.Proc(int(entry.name), st[1]))
    return [p for p in found if procs.alive(p)]


def test_down_leaves_no_process_and_up_restores_the_cluster(
    cluster: ClusterEnv, namespace: str
) -> None:
    state = State.default()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"},
          "data": {"k": "v"}}  # fmt: skip
    devcluster.kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(cm),
                       check=True, env=cluster)  # fmt: skip
    # A running pod: its process must end with the cluster.
    token = f"rewind-down-test-{uuid.uuid4().hex}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": "rewind-dev/job:v1",
                    "command": ["python", "-c", "import time; time.sleep(3600)", token],
                }
            ],
        },
    }
    devcluster.kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(pod),
                       check=True, env=cluster)  # fmt: skip
    devcluster.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=180s",
                       namespace=namespace, check=True, env=cluster)  # fmt: skip
    # Ready means the container's shim started; the shim execs the command a moment later.
    pod_procs = wait_until("the pod's process", lambda: _with_token(token), timeout=60)

    roots = [p for f in state.run.glob("*.pid") if (p := procs.read_pidfile(f))]
    before = [q for r in roots for q in (r, *procs.descendants(r))] + pod_procs
    assert len(roots) >= 6 and all(procs.alive(p) for p in roots)

    devcluster.down()

    assert [p for p in before if procs.alive(p)] == []
    assert _with_token(token) == []
    assert list(state.run.glob("*.pid")) == []
    assert not devcluster.is_up()

    again = devcluster.ensure_up()
    assert again == cluster
    got = devcluster.kubectl("get", "configmap", "kept", "-o", "jsonpath={.data.k}",
                             namespace=namespace, env=cluster)  # fmt: skip
    assert got.stdout == "v", got.stderr
