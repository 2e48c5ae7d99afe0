"""`dev/cluster down` leaves no process behind, and `up` brings the same cluster back.

The test restarts the shared cluster, so it ends by starting it again: tests after it
find the cluster up, with the same addresses and the same stored objects."""

from __future__ import annotations

import json

import pytest

from dev import devcluster
from dev.devcluster import ClusterEnv
from dev.plane import procs
from dev.plane.layout import State

pytestmark = pytest.mark.integration


def test_down_leaves_no_process_and_up_restores_the_cluster(
    cluster: ClusterEnv, namespace: str
) -> None:
    state = State.default()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"},
          "data": {"k": "v"}}  # fmt: skip
    devcluster.kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(cm),
                       check=True, env=cluster)  # fmt: skip
    roots = [p for f in state.run.glob("*.pid") if (p := procs.read_pidfile(f))]
    before = [q for r in roots for q in (r, *procs.descendants(r))]
    assert len(roots) >= 6 and all(procs.alive(p) for p in roots)

    devcluster.down()

    assert [p for p in before if procs.alive(p)] == []
    assert list(state.run.glob("*.pid")) == []
    assert not devcluster.is_up()

    again = devcluster.ensure_up()
    assert again == cluster
    got = devcluster.kubectl("get", "configmap", "kept", "-o", "jsonpath={.data.k}",
                             namespace=namespace, env=cluster)  # fmt: skip
    assert got.stdout == "v", got.stderr
