"""The node's DNS: CoreDNS (dev/coredns) answering for the cluster's Services.

What flows through here: `spec` gives the process of CoreDNS on the node IP, port 53
(UDP and TCP), whose Corefile serves only the zone `cluster.local` from the API server
(Services, EndpointSlices, Namespaces, read with its own identity and a ClusterRole
that allows only that). The kubelet names the node IP as the pods' DNS server
(`clusterDNS`), so a pod resolves `web`, `web.<namespace>` or
`web.<namespace>.svc.cluster.local` to the Service's ClusterIP.

What must stay true: nothing is forwarded (no `forward` plugin is built in), so a name
outside cluster.local is refused and no query leaves the node; health and readiness
listen on loopback only.
"""

from __future__ import annotations

import json
import subprocess

from dev.node.net import NodeNet
from dev.plane import pins
from dev.plane.components import HOST, Spec, _base_env, http_get
from dev.plane.layout import State
from dev.plane.pki import COREDNS

CLUSTER_DOMAIN = "cluster.local"
PORT = 53

COREFILE = """\
# Written by dev/node/dns.py: the cluster's own names, nothing forwarded.
{domain}:{port} {{
    bind {node}
    errors
    health {host}:{health}
    ready {host}:{ready}
    kubernetes {domain} {{
        kubeconfig {kubeconfig}
    }}
}}
"""


def rbac() -> list[dict[str, object]]:
    """What CoreDNS's kubernetes plugin reads, and nothing more."""
    name = "rewind-dev:coredns"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [""], "resources": ["services", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": COREDNS.cn}],
        },
    ]  # fmt: skip


def spec(state: State, p: dict[str, int]) -> Spec:
    node = NodeNet.of(state).gateway
    corefile = state.data("coredns") / "Corefile"

    def prepare() -> None:
        corefile.parent.mkdir(parents=True, exist_ok=True)
        corefile.write_text(
            COREFILE.format(
                domain=CLUSTER_DOMAIN, port=PORT, node=node, host=HOST,
                health=p["coredns-health"], ready=p["coredns-ready"],
                kubeconfig=state.kubeconfig(COREDNS.stem),
            )
        )  # fmt: skip
        objects = json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac()})
        done = subprocess.run(
            [str(pins.KUBERNETES.binary("kubectl")), f"--kubeconfig={state.kubeconfig('admin')}",
             "apply", "-f", "-"],
            input=objects, text=True, capture_output=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"cannot grant CoreDNS its reads: {done.stderr.strip()}")

    argv = [str(pins.COREDNS.binary("coredns")), "-conf", str(corefile)]
    ready = f"http://{HOST}:{p['coredns-ready']}/ready"
    return Spec("coredns", argv, lambda: http_get(ready) is not None, _base_env(state),
                grace=5, prepare=prepare)  # fmt: skip
