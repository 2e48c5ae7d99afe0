"""How each process of the local cluster is started and how its health is judged.

Every listener is bound to 127.0.0.1, except on the real node, where pods reach the
host's services at the node IP 198.18.N.1 (dev/node/net.py): Kafka gets a second
listener there, advertised as such; MinIO and the API server stay on loopback and the
node gateway (dev/node/gateway.py) forwards their ports from the node IP; the API server
advertises the node IP, so the `kubernetes` Service routes (through kube-proxy) to that
gateway. Ports are chosen once (fixed defaults in an
uncommon range, or a free port when the default is taken) and kept in
`dev/.state/ports.json`, so kubeconfigs and the Kafka log stay valid across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from dev.node import net
from dev.plane import pins
from dev.plane.layout import State

HOST = "127.0.0.1"
MINIO_USER = "rewind-dev"
MINIO_PASSWORD = "rewind-dev-secret"
AWS_REGION = "us-east-1"
MARKER = "REWIND_DEV_CLUSTER"
"""Set in the environment of every process we start, holding the state folder."""

DEFAULT_PORTS = {
    "etcd": 22379,
    "etcd-peer": 22380,
    "apiserver": 26443,
    "kubelet": 26250,
    "controller-manager": 26257,
    "scheduler": 26259,
    "minio": 29000,
    "kafka": 29092,
    "kafka-controller": 29093,
    # Kafka's listener on the node IP, for pods.
    "kafka-pod": 29094,
    # The node's own (dev/node/runtime.py).
    "kubelet-healthz": 26248,
    "kube-proxy-healthz": 26256,
    "kube-proxy-metrics": 26249,
    "coredns-health": 26252,
    "coredns-ready": 26253,
}


def service_cidr(state: State) -> str:
    """The state folder's own 198.19.N.0/24, which kube-proxy routes on the node."""
    return net.NodeNet.of(state).service_cidr


def _free(port: int) -> bool:
    with socket.socket() as s:
        # As servers bind: a port whose last connection lingers in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def ports(state: State, running: Callable[[], bool]) -> dict[str, int]:
    """The ports of this cluster: those recorded, re-chosen for any taken by another
    program while the cluster is down (`running()` says whether ours is up)."""
    recorded: dict[str, int] = {}
    if state.ports_file.exists():
        recorded = json.loads(state.ports_file.read_text())
    out: dict[str, int] = {}
    up = running()
    for name, default in DEFAULT_PORTS.items():
        port = recorded.get(name, default)
        if not up and not _free(port):
            port = default if name not in recorded and _free(default) else _any_free_port()
        out[name] = port
    if out != recorded:
        state.root.mkdir(parents=True, exist_ok=True)
        state.ports_file.write_text(json.dumps(out, indent=2) + "\n")
    return out


def unverified_ctx() -> ssl.SSLContext:
    """For loopback health checks of components that serve self-signed certificates."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def admin_ctx(state: State) -> ssl.SSLContext:
    """Verifies the API server against our CA and presents the admin certificate."""
    ctx = ssl.create_default_context(cafile=str(state.pki / "ca.crt"))
    ctx.load_cert_chain(str(state.pki / "admin.crt"), str(state.pki / "admin.key"))
    return ctx


def http_get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 3) -> bytes | None:
    """The body of a 200 answer, or None for any failure (the caller retries)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return bytes(r.read()) if r.status == 200 else None
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return None


def api_get_raw(state: State, port: int, path: str) -> bytes | None:
    return http_get(f"https://{HOST}:{port}{path}", admin_ctx(state))


def api_get(state: State, port: int, path: str) -> Any | None:
    """GET on the API server as the admin; parsed JSON or None."""
    body = api_get_raw(state, port, path)
    return json.loads(body) if body is not None else None


@dataclass(frozen=True)
class Spec:
    """One process: how to start it and when it is healthy."""

    name: str
    argv: list[str]
    healthy: Callable[[], bool]
    env: dict[str, str]
    grace: float = 10.0
    """Seconds between SIGTERM and SIGKILL."""
    ready_timeout: float = 180.0
    cwd: Path | None = None
    prepare: Callable[[], None] | None = None
    """Run once before the first start (formats Kafka's storage)."""


def _base_env(state: State) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
    env[MARKER] = str(state.root)
    return env


def _bin(c: pins.Component, name: str) -> str:
    return str(c.binary(name))


def etcd(state: State, p: dict[str, int]) -> Spec:
    client, peer = f"http://{HOST}:{p['etcd']}", f"http://{HOST}:{p['etcd-peer']}"
    argv = [
        _bin(pins.ETCD, "etcd"), "--name=rewind-dev", f"--data-dir={state.data('etcd')}",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=rewind-dev={peer}",
        # A dev cluster is disposable: no fsync makes every write (and each test) faster.
        "--unsafe-no-fsync=true", "--log-level=warn",
    ]  # fmt: skip

    def healthy() -> bool:
        body = http_get(f"{client}/health")
        return body is not None and json.loads(body).get("health") == "true"

    return Spec("etcd", argv, healthy, _base_env(state), ready_timeout=60)


def _apiserver_endpoints(state: State) -> list[str]:
    """Where the `kubernetes` Service points: the node IP (the gateway forwards it to the
    API server, which binds loopback only), kept current by the API server's own lease."""
    gateway = net.NodeNet.of(state).gateway
    return [f"--advertise-address={gateway}", "--endpoint-reconciler-type=lease"]


def apiserver(state: State, p: dict[str, int]) -> Spec:
    pki = state.pki
    argv = [
        _bin(pins.KUBERNETES, "kube-apiserver"),
        f"--etcd-servers=http://{HOST}:{p['etcd']}",
        f"--bind-address={HOST}", *_apiserver_endpoints(state),
        f"--secure-port={p['apiserver']}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        f"--service-cluster-ip-range={service_cidr(state)}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        # The controller manager and scheduler read this CA from a ConfigMap to trust an
        # aggregating proxy; none is in use, and the name below matches no certificate.
        f"--requestheader-client-ca-file={pki / 'ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--allow-privileged=true", "--profiling=false", "--v=1",
    ]  # fmt: skip

    def healthy() -> bool:
        return api_get_raw(state, p["apiserver"], "/readyz") == b"ok"

    return Spec("apiserver", argv, healthy, _base_env(state), grace=15)


def _delegating(state: State, kubeconfig: Path, port: int) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={port}",
        f"--cert-dir={state.data('serving-certs')}",
        # One instance each: leader election would only delay a restart by a lease period.
        "--leader-elect=false",
        "--v=1",
    ]


def _healthz(port: int) -> Callable[[], bool]:
    return lambda: http_get(f"https://{HOST}:{port}/healthz", unverified_ctx()) == b"ok"


def controller_manager(state: State, p: dict[str, int]) -> Spec:
    pki = state.pki
    argv = [
        _bin(pins.KUBERNETES, "kube-controller-manager"),
        *_delegating(state, state.kubeconfig("controller-manager"), p["controller-manager"]),
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={service_cidr(state)}",
        "--controllers=*",
    ]
    return Spec("controller-manager", argv, _healthz(p["controller-manager"]), _base_env(state))


def scheduler(state: State, p: dict[str, int]) -> Spec:
    argv = [
        _bin(pins.KUBERNETES, "kube-scheduler"),
        *_delegating(state, state.kubeconfig("scheduler"), p["scheduler"]),
    ]
    return Spec("scheduler", argv, _healthz(p["scheduler"]), _base_env(state))


def minio(state: State, p: dict[str, int]) -> Spec:
    env = _base_env(state) | {
        "MINIO_ROOT_USER": MINIO_USER,
        "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
        "MINIO_BROWSER": "off",  # no console, so no second listener
        "MINIO_UPDATE": "off",
        "MINIO_CALLHOME_ENABLE": "off",
    }
    argv = [_bin(pins.MINIO, "minio"), "server", "--quiet", "--address",
            f"{HOST}:{p['minio']}", str(state.data("minio"))]  # fmt: skip
    url = f"http://{HOST}:{p['minio']}/minio/health/ready"
    return Spec("minio", argv, lambda: http_get(url) is not None, env, ready_timeout=90)


LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


def kafka_cluster_id() -> str:
    """A new KRaft cluster id, as Kafka's own `Uuid.randomUuid` makes them: url-safe
    base64 of 16 random bytes that does not start with "-", which StorageTool would
    take for an option (it refused one in 64 ids, at random)."""
    while (cid := urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cid


def kafka_listeners(state: State, p: dict[str, int]) -> dict[str, str]:
    """Kafka's client listeners by name: PLAINTEXT on loopback and POD on the node IP,
    each advertised as itself (a client is sent back to the address of the listener it
    dialled, so a pod never gets 127.0.0.1)."""
    return {
        "PLAINTEXT": f"{HOST}:{p['kafka']}",
        "POD": f"{net.NodeNet.of(state).gateway}:{p['kafka-pod']}",
    }


def kafka(state: State, p: dict[str, int]) -> Spec:
    home = state.data("kafka")
    props = home / "server.properties"
    ctl = f"{HOST}:{p['kafka-controller']}"
    java = shutil.which("java") or "java"
    classpath = str(pins.KAFKA.cache_dir / "libs" / "*")
    jvm = [
        java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={state.logs}", "-cp", classpath,
    ]  # fmt: skip

    clients = kafka_listeners(state, p)
    listeners = ",".join(f"{name}://{addr}" for name, addr in clients.items())
    protocols = ",".join(f"{name}:PLAINTEXT" for name in ["CONTROLLER", *clients])

    def prepare() -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "log4j2.properties").write_text(LOG4J2.format(log=state.logs / "kafka-server.log"))
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{ctl}",
                    f"listeners={listeners},CONTROLLER://{ctl}",
                    f"advertised.listeners={listeners}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"listener.security.protocol.map={protocols}",
                    f"log.dirs={home / 'data'}",
                    "num.partitions=1",
                    "auto.create.topics.enable=true",
                    # Test data is stamped with event times of the past (the examples'
                    # post events start in 2023): time-based retention would delete it
                    # at the broker's next check (every 5 min), under a test that reads
                    # it later. Nothing here is kept for long anyway.
                    "log.retention.ms=-1",
                    # One broker: every internal topic has one replica, so transactions
                    # and consumer groups work.
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        if not (home / "data" / "meta.properties").exists():
            cluster_id = kafka_cluster_id()
            subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
                check=True,
                capture_output=True,
            )

    bootstrap = f"{HOST}:{p['kafka']}"
    argv = [*jvm, "kafka.Kafka", str(props)]
    return Spec("kafka", argv, lambda: kafka_ready(bootstrap), _base_env(state),
                grace=30, prepare=prepare)  # fmt: skip


def kafka_ready(bootstrap: str) -> bool:
    """True when the broker answers a metadata request and names itself."""
    quiet = logging.getLogger("rewind-dev.kafka-probe")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    admin = AdminClient({"bootstrap.servers": bootstrap}, logger=quiet)
    try:
        md = admin.list_topics(timeout=3)
    except Exception:  # any failure means "not yet"
        return False
    return bool(md.brokers)
