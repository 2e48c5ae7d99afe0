"""Fixtures for the tests of the real node (`make test-real-node`; dev/README.md).

`real_node` (session) runs `dev/cluster up --node real` (building what is missing: the
node's Debian packages, kubelet, kube-proxy and the images) and exports the cluster's
variables. These tests live outside tests/, so `pytest tests` never collects them: they
need root, containerd and runc, and they stop the cluster at the end (the last test is
`dev/cluster down` leaving nothing behind).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from dev import devcluster
from dev.devcluster import CLUSTER, ClusterEnv
from dev.plane.layout import State


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`down` last: it stops the cluster the other tests share."""
    items.sort(key=lambda item: 1 if item.path.name == "test_down.py" else 0)


@pytest.fixture(scope="session")
def real_node() -> Iterator[ClusterEnv]:
    state = State.default()
    state.logs.mkdir(parents=True, exist_ok=True)
    log = state.logs / "up-real-node.log"
    with log.open("w") as f:
        done = subprocess.run(
            [str(CLUSTER), "up", "--node", "real"], stdout=f, stderr=f, check=False
        )
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"dev/cluster up --node real failed; end of {log}:\n{tail}")
    env = devcluster.current()
    os.environ.update(env.env())
    yield env


@pytest.fixture
def namespace(real_node: ClusterEnv) -> Iterator[str]:
    name = f"rn-{uuid.uuid4().hex[:8]}"
    devcluster.kubectl("create", "namespace", name, check=True, env=real_node)
    yield name
    devcluster.kubectl("delete", "namespace", name, "--wait=false", env=real_node)
