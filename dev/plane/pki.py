"""Certificates, the service-account key pair and kubeconfigs, made with the openssl CLI.

One CA signs everything: the API server's serving certificate (127.0.0.1, localhost, the
in-cluster names, the `kubernetes` Service IP and the real node's IP), one client
certificate per identity (the admin in system:masters, the controller manager, the
scheduler, the node, the API server towards the kubelet) and a serving certificate for
the kubelet. The CA also signs CSRs through the controller manager. Files are made once
and kept, so a restarted cluster keeps its identity and existing kubeconfigs stay valid.
"""

from __future__ import annotations

import base64
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dev.node import net
from dev.plane.layout import State

DAYS = "3650"
NODE_NAME = "rewind-dev-node"
CLUSTER_NAME = "rewind-dev"

API_SERVER_NAMES = [
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
]


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate: file stem, common name (user) and organisation (group)."""

    stem: str
    cn: str
    org: str | None = None


ADMIN = ClientIdentity("admin", "rewind-dev-admin", "system:masters")
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")
NODE = ClientIdentity("kubelet", f"system:node:{NODE_NAME}", "system:nodes")
APISERVER_KUBELET_CLIENT = ClientIdentity(
    "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"
)
COREDNS = ClientIdentity("coredns", "rewind-dev-coredns")
"""The node's DNS: reads Services, EndpointSlices and Namespaces (dev/node/dns.py)."""
KUBECONFIG_USERS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, NODE, COREDNS)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _sign(pki: Path, stem: str, subject: str, extensions: str) -> None:
    """Issues STEM's key and certificate, again when SUBJECT or EXTENSIONS changed since
    (kept in STEM.ext beside it), so that a state folder made by an older version gets
    the names it now needs (e.g. a Service IP in another range)."""
    key, crt, wanted = pki / f"{stem}.key", pki / f"{stem}.crt", pki / f"{stem}.ext"
    request = f"{subject}\n{extensions}\n"
    if key.exists() and crt.exists() and wanted.exists() and wanted.read_text() == request:
        return
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text(f"[v3]\n{extensions}\n")
        _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
            "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", DAYS,
            "-extfile", str(ext), "-extensions", "v3", "-out", str(crt),
        )  # fmt: skip
    key.chmod(0o600)
    wanted.write_text(request)


def _node_names(node: net.NodeNet) -> list[str]:
    """The `kubernetes` Service IP and the node IP (where pods reach the API server
    through the gateway)."""
    return [f"IP:{node.kubernetes_service_ip}", f"IP:{node.gateway}"]


def ensure_pki(state: State) -> None:
    """Creates every key and certificate that is missing (idempotent)."""
    pki = state.pki
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "ca.crt").exists():
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"), "-days", DAYS,
            "-subj", "/CN=rewind-dev-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip
        (pki / "ca.key").chmod(0o600)
    server = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    _sign(
        pki, "apiserver", "/CN=kube-apiserver",
        server + "extendedKeyUsage=serverAuth\nsubjectAltName="
        + ",".join([*API_SERVER_NAMES, *_node_names(net.NodeNet.of(state))]),
    )  # fmt: skip
    _sign(
        pki, "kubelet-serving", f"/O=system:nodes/CN=system:node:{NODE_NAME}",
        server + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,"
        f"DNS:{NODE_NAME}",
    )  # fmt: skip
    for ident in (*KUBECONFIG_USERS, APISERVER_KUBELET_CLIENT):
        subject = (f"/O={ident.org}" if ident.org else "") + f"/CN={ident.cn}"
        _sign(pki, ident.stem, subject, server + "extendedKeyUsage=clientAuth")
    if not (pki / "sa.key").exists():
        # RSA: the algorithm every ServiceAccount token consumer accepts (RS256).
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", str(pki / "sa.key"))  # fmt: skip
        _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        (pki / "sa.key").chmod(0o600)


def _b64(p: Path) -> str:
    return base64.b64encode(p.read_bytes()).decode()


def write_kubeconfigs(state: State, server: str) -> None:
    """One kubeconfig per client identity, with embedded certificates (rewritten each up,
    because the API server's port is part of them)."""
    pki = state.pki
    for ident in KUBECONFIG_USERS:
        text = f"""apiVersion: v1
kind: Config
clusters:
- name: {CLUSTER_NAME}
  cluster:
    server: {server}
    certificate-authority-data: {_b64(pki / "ca.crt")}
users:
- name: {ident.cn}
  user:
    client-certificate-data: {_b64(pki / f"{ident.stem}.crt")}
    client-key-data: {_b64(pki / f"{ident.stem}.key")}
contexts:
- name: {CLUSTER_NAME}
  context:
    cluster: {CLUSTER_NAME}
    user: {ident.cn}
    namespace: default
current-context: {CLUSTER_NAME}
"""
        path = state.kubeconfig(ident.stem)
        path.write_text(text)
        path.chmod(0o600)
