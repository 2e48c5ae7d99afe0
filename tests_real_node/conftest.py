"""Fixtures for the tests of the real node (`make test-real-node`; dev/README.md).

`real_node` (session) runs `dev/cluster up` (building what is missing: the node's
Debian packages, kubelet, kube-proxy and the images) and exports the cluster's
variables. `namespace` and `bucket` give a test its own namespace and MinIO bucket
(made from the host; pods reach MinIO at `real_node.pod_s3_endpoint`). These tests live
outside tests/, so `pytest tests` never collects them: they need root, containerd and
runc, and they stop the cluster at the end (the last test is `dev/cluster down` leaving
nothing behind).
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

from .kube import s3_client


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`down` last: it stops the cluster the other tests share."""
    items.sort(key=lambda item: 1 if item.path.name == "test_down.py" else 0)


@pytest.fixture(scope="session")
def real_node() -> Iterator[ClusterEnv]:
    state = State.default()
    state.logs.mkdir(parents=True, exist_ok=True)
    log = state.logs / "up-real-node.log"
    with log.open("w") as f:
        done = subprocess.run([str(CLUSTER), "up"], stdout=f, stderr=f, check=False)
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"dev/cluster up failed; end of {log}:\n{tail}")
    env = devcluster.current()
    os.environ.update(env.env())
    yield env


@pytest.fixture
def namespace(real_node: ClusterEnv) -> Iterator[str]:
    name = f"rn-{uuid.uuid4().hex[:8]}"
    devcluster.kubectl("create", "namespace", name, check=True, env=real_node)
    yield name
    for kind in ("streamapps.rewind.dev", "savepoints.rewind.dev"):
        devcluster.kubectl("delete", kind, "--all", "--wait=false", namespace=name, env=real_node)
    devcluster.kubectl("delete", "namespace", name, "--wait=false", env=real_node)


@pytest.fixture
def bucket(real_node: ClusterEnv) -> Iterator[str]:
    """A new bucket on MinIO; emptied and removed after the test."""
    s3 = s3_client(real_node)
    name = f"rn-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=name)
