"""What pods dial, by node mode: with the process kubelet the host's own addresses, on the
real node the node IP (Kafka's POD listener, MinIO through the node gateway), and
`dev/cluster env` / `ClusterEnv` carry both (docs/CONTRACTS.md)."""

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


def test_with_the_process_kubelet_pods_dial_the_hosts_addresses(state: State) -> None:
    env = _env(state)
    assert env.pod_s3_endpoint == env.s3_endpoint == "http://127.0.0.1:29000"
    assert env.pod_kafka_bootstrap == env.kafka_bootstrap == "127.0.0.1:29092"
    assert components.kafka_listeners(state, {"kafka": 29092}) == {"PLAINTEXT": "127.0.0.1:29092"}


def test_on_the_real_node_pods_dial_the_node_ip(state: State) -> None:
    net.set_mode(state, True)
    node = net.NodeNet.of(state).gateway
    env = _env(state)
    assert env.s3_endpoint == "http://127.0.0.1:29000"
    assert env.kafka_bootstrap == "127.0.0.1:29092"
    assert env.pod_s3_endpoint == f"http://{node}:29000"
    assert env.pod_kafka_bootstrap == f"{node}:29094"
    assert env.env()["REWIND_DEV_POD_KAFKA_BOOTSTRAP"] == f"{node}:29094"
    listeners = components.kafka_listeners(state, {"kafka": 29092, "kafka-pod": 29094})
    assert listeners == {"PLAINTEXT": "127.0.0.1:29092", "POD": f"{node}:29094"}


@pytest.mark.parametrize("real", [False, True])
def test_the_api_server_advertises_the_node_ip_only_on_the_real_node(
    state: State, real: bool
) -> None:
    net.set_mode(state, real)
    ports = components.ports(state, lambda: True)
    argv = components.apiserver(state, ports).argv
    assert "--bind-address=127.0.0.1" in argv
    if real:
        node = net.NodeNet.of(state).gateway
        assert {f"--advertise-address={node}", "--endpoint-reconciler-type=lease"} <= set(argv)
    else:
        assert {"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"} <= set(argv)
