"""The local cluster's own parts, against the real components: the API server enforces
CRD schemas, MinIO stores objects, Kafka returns what was produced (also in a
transaction), and every listener we started is on loopback or on the node IP (where
pods reach the kubelet, Kafka and the node gateway)."""

from __future__ import annotations

import ipaddress
import json
import uuid
from pathlib import Path

import boto3
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from dev import devcluster
from dev.devcluster import ClusterEnv
from dev.node import net
from dev.plane import procs
from dev.plane.layout import State

pytestmark = pytest.mark.integration

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.harness.rewind.dev"},
    "spec": {
        "group": "harness.rewind.dev",
        "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _gadget(size: object) -> str:
    return json.dumps(
        {
            "apiVersion": "harness.rewind.dev/v1",
            "kind": "Gadget",
            "metadata": {"name": "g"},
            "spec": {"size": size},
        }
    )


def test_server_dry_run_refuses_an_object_that_breaks_the_crd_schema(
    cluster: ClusterEnv, namespace: str
) -> None:
    devcluster.kubectl("apply", "-f", "-", input=json.dumps(CRD), check=True, env=cluster)
    devcluster.kubectl(
        "wait", "--for=condition=Established", "crd/gadgets.harness.rewind.dev",
        "--timeout=120s", check=True, env=cluster,
    )  # fmt: skip

    bad = devcluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", namespace=namespace, input=_gadget("big"),
        env=cluster,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "spec.size" in bad.stderr

    good = devcluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", namespace=namespace, input=_gadget(3),
        env=cluster,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    # A dry run stores nothing.
    got = devcluster.kubectl("get", "gadgets", "-o", "name", namespace=namespace, env=cluster)
    assert got.returncode == 0 and got.stdout.strip() == ""


def test_an_object_written_to_minio_reads_back(cluster: ClusterEnv, s3_bucket: str) -> None:
    s3 = boto3.client("s3")  # endpoint and credentials from the environment the fixture set
    body = uuid.uuid4().bytes * 1000
    s3.put_object(Bucket=s3_bucket, Key="dir/blob.bin", Body=body)
    assert s3.get_object(Bucket=s3_bucket, Key="dir/blob.bin")["Body"].read() == body
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/blob.bin"]


def _topic(bootstrap: str) -> str:
    name = f"harness-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    futures[name].result(timeout=60)
    return name


def _read_at(bootstrap: str, topic: str, offset: int, isolation: str) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"harness-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, offset)])
        values: list[bytes] = []
        while not values:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise AssertionError(str(err))
            value = msg.value()
            if err is None and value is not None:
                values.append(value)
        return values
    finally:
        consumer.close()


def test_a_message_produced_to_kafka_is_consumed_back_by_offset(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    offsets: list[int | None] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        offsets.append(msg.offset())

    for i in range(3):
        producer.produce(topic, value=f"m{i}".encode(), on_delivery=delivered)
    assert producer.flush(60) == 0
    assert offsets == [0, 1, 2]
    assert _read_at(kafka_bootstrap, topic, 1, "read_uncommitted")[0] == b"m1"


def test_a_kafka_transaction_commits(kafka_bootstrap: str) -> None:
    """Needs the transaction state log, which a one-broker cluster only gets when its
    replication factor and min ISR are 1."""
    topic = _topic(kafka_bootstrap)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"harness-{uuid.uuid4()}"}
    )
    producer.init_transactions(60)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(60)
    assert _read_at(kafka_bootstrap, topic, 0, "read_committed") == [b"committed"]


def _our_processes(state: State) -> list[procs.Proc]:
    roots = [p for f in sorted(state.run.glob("*.pid")) if (p := procs.read_pidfile(f))]
    return [q for r in roots if procs.alive(r) for q in (r, *procs.descendants(r))]


def _socket_inodes(pids: list[int]) -> set[str]:
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def _addr(hex_addr: str) -> str:
    """/proc/net/tcp{,6} address (host byte order, hex) -> printable IP."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _plain(ip: str) -> str:
    """An IPv4-mapped IPv6 address (a Java listener's) as the IPv4 address it is."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_loopback


def test_everything_we_started_listens_only_on_loopback_or_the_node_ip(cluster: ClusterEnv) -> None:
    state = State.default()
    ours = _our_processes(state)
    inodes = _socket_inodes([p.pid for p in ours])
    listening: list[tuple[str, int]] = []
    for table, listen_state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            local, st, inode = cols[1], cols[3], cols[9]
            if inode in inodes and st == listen_state:
                host, port = local.split(":")
                listening.append((_plain(_addr(host)), int(port, 16)))
    ports = {port for _, port in listening}
    # Every component's main port is among them, so the test really saw our listeners.
    for url in (cluster.s3_endpoint, cluster.kafka_bootstrap):
        assert int(url.rsplit(":", 1)[1]) in ports
    node = net.NodeNet.of(state).gateway
    wide = [(ip, port) for ip, port in listening if not _is_loopback(ip) and ip != node]
    assert wide == [], f"listening beyond loopback and the node IP: {wide}"
    # ... and on the node IP, the ports pods need.
    pod_ports = {int(cluster.pod_s3_endpoint.rsplit(":", 1)[1]),
                 int(cluster.pod_kafka_bootstrap.rsplit(":", 1)[1])}  # fmt: skip
    assert pod_ports <= {port for ip, port in listening if ip == node}
