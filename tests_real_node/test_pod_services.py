"""Pods on the real node reach the cluster's services as a user's pods would.

MinIO, Kafka and the kube-apiserver listen on the host's loopback; pods reach them at
the node IP (dev/node/gateway.py, Kafka's POD listener, the `kubernetes` Service through
kube-proxy). Shown here with the project's images:
- an engine pod (the post-analytics v1 image) checkpoints and takes a savepoint to
  s3://, seen from the test with boto3, and another pod reads that savepoint back;
- a pod produces to Kafka and another consumes what it produced;
- the Helm chart's operator, the `rewind/operator` image, talks to the API server with
  the normal in-cluster configuration and brings the example StreamApp to Running and a
  Savepoint to Completed, its data in MinIO.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
from rewind_operator.vocabulary import Phase, PodPhase, SpPhase

from dev import devcluster
from dev.devcluster import ClusterEnv
from dev.node.net import NodeNet
from dev.plane.layout import State

from .kube import Json, kubectl, pod, run_to_end, s3_client, start, wait_for

REPO = Path(__file__).resolve().parents[1]
APP_IMAGE = "rewind-examples/post-analytics:v1"
OUT = "/tmp/out"  # noqa: S108 (in the pod: the image's /app is read-only for its user)
POD_IP = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def s3_env(env: ClusterEnv) -> list[Json]:
    """What a pod needs for MinIO: the pod-facing endpoint and the credentials."""
    values = {
        "AWS_ENDPOINT_URL": env.pod_s3_endpoint,
        "AWS_ACCESS_KEY_ID": env.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": env.aws_secret_access_key,
        "AWS_REGION": env.aws_region,
    }
    return [{"name": k, "value": v} for k, v in values.items()]


def test_the_pod_endpoints_are_at_the_node_ip(real_node: ClusterEnv) -> None:
    node = NodeNet.of(State.default()).gateway
    assert real_node.pod_s3_endpoint.startswith(f"http://{node}:")
    assert real_node.pod_kafka_bootstrap.startswith(f"{node}:")
    assert "127.0.0.1" in real_node.s3_endpoint and "127.0.0.1" in real_node.kafka_bootstrap


def test_an_engine_pod_checkpoints_and_saves_to_minio(
    real_node: ClusterEnv, namespace: str, bucket: str
) -> None:
    location = f"s3://{bucket}/pa"
    args = [
        "run", "flow.py", "--snapshots", location, "--control", "$(POD_IP):8081",
        "--checkpoint-interval", "1", "--", "--rate", "200", "--out", OUT,
    ]  # fmt: skip
    manifest = pod("engine", APP_IMAGE, [], env=[POD_IP, *s3_env(real_node)])
    manifest["spec"]["containers"][0].pop("command")
    manifest["spec"]["containers"][0]["args"] = args
    ip = start(namespace, manifest)["status"]["podIP"]
    s3 = s3_client(real_node)

    def checkpoint() -> list[str] | None:
        found = s3.list_objects_v2(Bucket=bucket, Prefix="pa/checkpoints/").get("Contents", [])
        return [o["Key"] for o in found if o["Key"].endswith("manifest.json")] or None

    wait_for("a checkpoint in MinIO", checkpoint)
    # The savepoint is asked for from the host (the engine's control API at the pod IP);
    # the engine in the pod writes it.
    saved = subprocess.run(
        [str(REPO / ".venv" / "bin" / "rewind"), "savepoint", "--control", f"{ip}:8081"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    uri = saved.stdout.strip().splitlines()[-1]
    assert uri.startswith(f"{location}/savepoints/"), uri
    key = uri.removeprefix(f"s3://{bucket}/").rstrip("/") + "/manifest.json"
    manifest_json = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert manifest_json, "the savepoint's manifest is empty"

    # Another pod reads it back from MinIO.
    reader = pod("inspect", APP_IMAGE, ["rewind", "inspect", uri], env=s3_env(real_node))
    phase, logs = run_to_end(namespace, reader)
    assert phase == PodPhase.SUCCEEDED, logs
    assert "views-and-clicks" in logs


CONSUME = """
import os, sys
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": os.environ["REWIND_KAFKA_BOOTSTRAP"], "group.id": "rn",
              "auto.offset.reset": "earliest"})
c.subscribe([sys.argv[1]])
seen = set()
while len(seen) < int(sys.argv[2]):
    m = c.poll(1.0)
    if m is not None and m.error() is None:
        seen.add(m.offset())
c.close()
print("consumed", len(seen), flush=True)
"""


def test_pods_produce_to_and_consume_from_kafka(real_node: ClusterEnv, namespace: str) -> None:
    topic = f"rn-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": real_node.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result()
    try:
        kafka = [{"name": "REWIND_KAFKA_BOOTSTRAP", "value": real_node.pod_kafka_bootstrap}]
        produce = ["python", "post_events.py", "produce", "--topic", topic, "--total", "100"]
        phase, logs = run_to_end(namespace, pod("produce", APP_IMAGE, produce, env=kafka))
        assert phase == PodPhase.SUCCEEDED, logs
        # What the pod produced is there, for a consumer on the host ...
        consumer = Consumer(
            {
                "bootstrap.servers": real_node.kafka_bootstrap,
                "group.id": f"host-{topic}",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([topic])
        events: list[Any] = []

        def all_events() -> bool:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                events.append(json.loads(m.value()))
            return len(events) == 100

        wait_for("the produced events on the host", all_events)
        consumer.close()
        assert sorted(e["seq"] for e in events) == list(range(100))
        # ... and for a consumer in another pod.
        consume = ["python", "-c", CONSUME, topic, "100"]
        phase, logs = run_to_end(namespace, pod("consume", APP_IMAGE, consume, env=kafka))
        assert phase == PodPhase.SUCCEEDED, logs
        assert "consumed 100" in logs
    finally:
        for future in admin.delete_topics([topic]).values():
            future.result()


IN_CLUSTER = """
from kubernetes import client, config
config.load_incluster_config()
print("server", client.Configuration.get_default_copy().host, flush=True)
print("version", client.VersionApi().get_code().git_version, flush=True)
"""


def test_a_pod_reaches_the_api_server_with_the_in_cluster_config(
    real_node: ClusterEnv, namespace: str
) -> None:
    # The default service account's token is mounted; /version needs no rights.
    manifest = pod("incluster", "rewind/operator:dev", ["python", "-c", IN_CLUSTER])
    phase, logs = run_to_end(namespace, manifest)
    assert phase == PodPhase.SUCCEEDED, logs
    service_ip = NodeNet.of(State.default()).kubernetes_service_ip
    assert f"server https://{service_ip}:443" in logs
    version = json.loads(kubectl("get", "--raw", "/version", namespace=namespace))
    assert f"version {version['gitVersion']}" in logs


# ---- the operator from the chart, in-cluster ---------------------------------------------


def helm(env: ClusterEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env.binary("helm")), *args],
        text=True, capture_output=True, check=False, env=os.environ | env.env(),
    )  # fmt: skip


def get(kind: str, name: str, namespace: str) -> Json:
    return dict(json.loads(kubectl("get", kind, name, "-o", "json", namespace=namespace)))


def test_the_charts_operator_runs_the_example_and_saves_it(
    real_node: ClusterEnv, namespace: str, bucket: str
) -> None:
    kubectl("apply", "-f", str(REPO / "crds"), namespace=namespace)
    installed = helm(
        real_node, "install", "rewind", str(REPO / "helm" / "rewind"), "--namespace", namespace,
        "--set", "image.tag=dev", "--set", f"watchNamespaces={{{namespace}}}",
        "--set", "operator.logFormat=console",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    try:
        wait_for(
            "the operator Deployment to be available",
            lambda: (get("deployment", "rewind", namespace).get("status") or {}).get(
                "availableReplicas"
            ),
        )
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "rewind-s3"},
            "stringData": {e["name"]: e["value"] for e in s3_env(real_node)},
        }
        kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(secret))
        app = yaml.safe_load((REPO / "examples" / "streamapp-v1.yaml").read_text())
        app["spec"]["snapshots"]["location"] = f"s3://{bucket}/post-analytics"
        kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(app))

        def running() -> Json | None:
            status = get("streamapp", "post-analytics", namespace).get("status") or {}
            return status if status.get("phase") == Phase.RUNNING else None

        status = wait_for("the example StreamApp to be Running", running)
        assert status["image"] == APP_IMAGE

        savepoint = {
            "apiVersion": "rewind.dev/v1alpha1",
            "kind": "Savepoint",
            "metadata": {"name": "on-the-real-node"},
            "spec": {"app": "post-analytics"},
        }
        kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(savepoint))

        def completed() -> Json | None:
            status = get("savepoint", "on-the-real-node", namespace).get("status") or {}
            assert status.get("phase") not in (SpPhase.FAILED, SpPhase.ABANDONED), status
            return status if status.get("phase") == SpPhase.COMPLETED else None

        path = str(wait_for("the Savepoint to complete", completed)["path"])
        assert path.startswith(f"s3://{bucket}/post-analytics/savepoints/{namespace}/")
        key = path.removeprefix(f"s3://{bucket}/").rstrip("/") + "/manifest.json"
        body = s3_client(real_node).get_object(Bucket=bucket, Key=key)["Body"].read()
        assert json.loads(body), "the savepoint's manifest is empty"
        # The operator ran in a pod, in-cluster: its API server is the `kubernetes` Service.
        selector = "app.kubernetes.io/name=rewind"
        pods = kubectl("get", "pods", "-l", selector, "-o", "json", namespace=namespace)
        op = json.loads(pods)["items"][0]
        assert op["spec"]["containers"][0]["image"] == "rewind/operator:dev"
    finally:
        # While the operator runs, so that it serves the app's finalizer.
        devcluster.kubectl("delete", "streamapp", "--all", "--wait=true", "--timeout=120s",
                           namespace=namespace)  # fmt: skip
        helm(real_node, "uninstall", "rewind", "-n", namespace, "--wait")
