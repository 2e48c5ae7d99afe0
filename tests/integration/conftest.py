"""Fixtures for tests against the real local cluster (dev/cluster).

`cluster` (session) brings the cluster up unless it runs, exports its variables into
this process's environment (so boto3, the Kubernetes client and child processes find
it) and stops it at the end only if it started it, and never under pytest-xdist (`make
test` runs the suite on several workers: one cannot know when the others are done).
`namespace` and `s3_bucket` give each test a fresh, uniquely named place that is
removed afterwards.

Three rules keep a long-lived local cluster (and its machine) healthy and the README's
order true:
- the demo's test runs first (`make demo`, then `make test`, on one cluster), and its
  operator release stays installed while the other tests run;
- no private broker of an earlier session outlives it: `leftover_brokers_swept` ends
  those whose session died by a signal before its teardown (dev/leftovers.py);
- no test namespace is left Terminating: apps are deleted with their namespace, and at
  the end of the session the finalizers of apps whose operator is gone are removed
  (a stuck namespace keeps kube-apiserver and etcd busy for good); the session fails if
  one of its own still remains. A session deletes only namespaces it made
  (`own_namespaces`): under pytest-xdist the others belong to running tests.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import yaml
from confluent_kafka.admin import AdminClient, NewTopic

from dev import devcluster, leftovers
from dev.devcluster import ClusterEnv

REPO = Path(__file__).resolve().parents[2]

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef


TEST_NAMESPACE_PREFIX = "t-"
REWIND_KINDS = ("streamapps.rewind.dev", "savepoints.rewind.dev")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The demo's test first: the README says `make demo`, then `make test`."""
    items.sort(key=lambda item: 0 if item.path.name == "test_demo.py" else 1)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterEnv]:
    started = not devcluster.is_up() and "PYTEST_XDIST_WORKER" not in os.environ
    env = devcluster.ensure_up()
    saved = {k: os.environ.get(k) for k in env.env()}
    os.environ.update(env.env())
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if started:
            devcluster.down()


@pytest.fixture(scope="session", autouse=True)
def leftover_brokers_swept() -> None:
    """Kill the private Kafka brokers (test_kafka_outage.Broker) that earlier sessions
    recorded and could not stop: their session is gone, they still run."""
    killed = leftovers.sweep(leftovers.folder())
    if killed:
        print(f"killed private brokers left by earlier sessions: pids {killed}")


def _unique(prefix: str, request: pytest.FixtureRequest, limit: int) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    suffix = uuid.uuid4().hex[:6]
    return f"{prefix}-{base[: limit - len(prefix) - len(suffix) - 2].strip('-')}-{suffix}"


@pytest.fixture(scope="session")
def own_namespaces() -> set[str]:
    """The test namespaces this session made (a fixture that makes one adds it)."""
    return set()


@pytest.fixture
def namespace(
    cluster: ClusterEnv, request: pytest.FixtureRequest, own_namespaces: set[str]
) -> Iterator[str]:
    name = _unique(TEST_NAMESPACE_PREFIX.rstrip("-"), request, 63)
    devcluster.kubectl("create", "namespace", name, check=True, env=cluster)
    own_namespaces.add(name)
    yield name
    # Apps first, while an operator that serves their finalizers may still run. Neither
    # is waited for: the namespace controller finishes the deletion in the background.
    for kind in REWIND_KINDS:
        devcluster.kubectl("delete", kind, "--all", "--wait=false", namespace=name, env=cluster)
    devcluster.kubectl("delete", "namespace", name, "--wait=false", env=cluster)


def _test_namespaces(cluster: ClusterEnv) -> dict[str, str]:
    """Test namespace -> its phase."""
    found = devcluster.kubectl("get", "namespaces", "-o", "json", env=cluster)
    if found.returncode != 0:
        return {}
    return {
        item["metadata"]["name"]: item.get("status", {}).get("phase", "")
        for item in json.loads(found.stdout)["items"]
        if item["metadata"]["name"].startswith(TEST_NAMESPACE_PREFIX)
    }


def release_orphaned_finalizers(cluster: ClusterEnv, namespace: str) -> None:
    """Removes the finalizers of Rewind objects in `namespace`: called once no operator
    serves them any more, so that the namespace can go."""
    for kind in REWIND_KINDS:
        names = devcluster.kubectl("get", kind, "-o", "name", namespace=namespace, env=cluster)
        for name in names.stdout.split():
            devcluster.kubectl(
                "patch", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                namespace=namespace, env=cluster,
            )  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def no_namespace_left_terminating(cluster: ClusterEnv, own_namespaces: set[str]) -> Iterator[None]:
    yield
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = _test_namespaces(cluster)
        for name, phase in found.items():
            if phase == "Terminating":  # anyone's: its test is over, its operator may be
                release_orphaned_finalizers(cluster, name)
            elif name in own_namespaces:  # a test that skipped the fixture's teardown
                devcluster.kubectl("delete", "namespace", name, "--wait=false", env=cluster)
        left = sorted(own_namespaces & set(found))
        if not left:
            return
        time.sleep(2)
    pytest.fail(f"test namespaces still not deleted after the session: {left}")


@pytest.fixture
def s3_bucket(cluster: ClusterEnv, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty bucket on MinIO; emptied and removed after the test."""
    s3 = boto3.client(
        "s3",
        endpoint_url=cluster.s3_endpoint,
        aws_access_key_id=cluster.aws_access_key_id,
        aws_secret_access_key=cluster.aws_secret_access_key,
        region_name=cluster.aws_region,
    )
    name = _unique("t", request, 63)
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys: list[ObjectIdentifierTypeDef] = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def kafka_bootstrap(cluster: ClusterEnv) -> str:
    """`host:port` of the single Kafka broker (KRaft, transactions enabled)."""
    return cluster.kafka_bootstrap


@pytest.fixture
def admin(kafka_bootstrap: str) -> AdminClient:
    """An admin client of the shared broker."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topic_factory(admin: AdminClient) -> Iterator[Any]:
    """make(partitions, name="t") creates a uniquely named topic; all are deleted after."""
    made: list[str] = []

    def make(partitions: int, name: str = "t") -> str:
        topic = f"{name}-{uuid.uuid4().hex[:8]}"
        for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
            future.result()
        made.append(topic)
        return topic

    yield make
    if made:
        for future in admin.delete_topics(made).values():
            future.result()


@pytest.fixture(scope="session")
def crds(cluster: ClusterEnv) -> None:
    """Rewind's generated CRDs installed (idempotent) and Established."""
    # Another worker's `helm install` may create them at the same moment: apply's create
    # then fails with AlreadyExists, and the next apply patches what it finds.
    for _ in range(3):
        result = devcluster.kubectl("apply", "-f", str(REPO / "crds"), env=cluster)
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stderr
    for name in ("streamapps.rewind.dev", "savepoints.rewind.dev"):
        devcluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s",
            env=cluster, check=True,
        )  # fmt: skip


@pytest.fixture
def s3_secret(cluster: ClusterEnv, namespace: str) -> str:
    """A Secret `s3-creds` in the test's namespace with MinIO's settings as AWS_* keys,
    for engine pods (the operator on the host reaches the same endpoint)."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-creds"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": cluster.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": cluster.aws_secret_access_key,
            # As the engine pods reach MinIO (the node IP on the real node).
            "AWS_ENDPOINT_URL": cluster.pod_s3_endpoint,
            "AWS_REGION": cluster.aws_region,
        },
    }
    result = devcluster.kubectl(
        "apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(body), env=cluster
    )
    assert result.returncode == 0, result.stderr
    return "s3-creds"
