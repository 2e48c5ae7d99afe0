"""What pods dial: the node IP (Kafka's POD listener, MinIO through the node gateway),
while the host keeps loopback; `dev/cluster env` / `ClusterEnv` carry both
(docs/CONTRACTS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dev.devcluster import ClusterEnv
from dev.node import net
from dev.plane import cli, components
from dev.plane.layout import State


@pytest.fixture
def state(tmp_path: Path) -> State:
    s = State(tmp_path / "state")
    s.root.mkdir()
    s.ports_file.write_text('{"minio": 29000, "kafka": 29092, "kafka-pod": 29094}')
    return s


def _env(state: State) -> ClusterEnv:
    cli.write_env(state)
    return ClusterEnv.from_env_file(state.env_file)


def test_pods_dial_the_node_ip_and_the_host_loopback(state: State) -> None:
    node = net.NodeNet.of(state).gateway
    env = _env(state)
    assert env.s3_endpoint == "http://127.0.0.1:29000"
    assert env.kafka_bootstrap == "127.0.0.1:29092"
    assert env.pod_s3_endpoint == f"http://{node}:29000"
    assert env.pod_kafka_bootstrap == f"{node}:29094"
    assert env.env()["REWIND_DEV_POD_KAFKA_BOOTSTRAP"] == f"{node}:29094"
    listeners = components.kafka_listeners(state, {"kafka": 29092, "kafka-pod": 29094})
    assert listeners == {"PLAINTEXT": "127.0.0.1:29092", "POD": f"{node}:29094"}


def test_the_api_server_binds_loopback_and_advertises_the_node_ip(state: State) -> None:
    ports = components.ports(state, lambda: True)
    argv = components.apiserver(state, ports).argv
    assert "--bind-address=127.0.0.1" in argv
    node = net.NodeNet.of(state).gateway
    assert {f"--advertise-address={node}", "--endpoint-reconciler-type=lease"} <= set(argv)
    assert node.startswith("198.18.")  # the test range, never 10/8, 172.16/12, 192.168/16
