"""The node's DNS as configured (no cluster needed): CoreDNS binds the node IP only,
serves cluster.local only and forwards nothing; the kubelet points pods at it; its
identity may read Services, EndpointSlices and Namespaces, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from dev.node import dns, runtime
from dev.node.net import NodeNet
from dev.plane import components
from dev.plane.layout import State
from dev.plane.pki import COREDNS


@pytest.fixture
def state(tmp_path: Path) -> State:
    s = State(tmp_path / "state")
    s.root.mkdir()
    return s


def test_the_corefile_serves_only_the_cluster_zone_on_the_node_ip(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = components.ports(state, lambda: True)
    spec = dns.spec(state, ports)
    monkeypatch.setattr(dns.subprocess, "run", lambda *a, **k: _Done())  # no API server here
    assert spec.prepare is not None
    spec.prepare()
    corefile = (state.data("coredns") / "Corefile").read_text()
    node = NodeNet.of(state).gateway
    assert corefile.splitlines()[1] == "cluster.local:53 {"
    assert f"bind {node}" in corefile
    assert f"health 127.0.0.1:{ports['coredns-health']}" in corefile
    assert f"ready 127.0.0.1:{ports['coredns-ready']}" in corefile
    directives = [line.split()[0] for line in corefile.splitlines() if line.strip()]
    assert "forward" not in directives and ".:53" not in directives
    assert str(state.kubeconfig(COREDNS.stem)) in corefile


def test_the_kubelet_names_the_node_ip_as_the_pods_dns(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prepare() also makes the bridge and the cgroup root; only its config is wanted here.
    monkeypatch.setattr(runtime, "ensure_bridge", lambda state: None)
    monkeypatch.setattr(runtime, "ensure_cgroup_root", lambda net: None)
    spec = runtime.kubelet(state, components.ports(state, lambda: True))
    assert spec.prepare is not None
    spec.prepare()
    cfg = next(a for a in spec.argv if a.startswith("--config=")).removeprefix("--config=")
    text = Path(cfg).read_text()
    assert f"clusterDNS: [{NodeNet.of(state).gateway}]" in text
    assert "clusterDomain: cluster.local" in text and 'resolvConf: ""' in text


def test_coredns_may_only_list_and_watch_what_it_serves() -> None:
    role, binding = dns.rbac()
    granted = {
        (group, resource, verb)
        for rule in role["rules"]  # type: ignore[attr-defined]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        (g, r, v)
        for g, r in (("", "services"), ("", "namespaces"), ("discovery.k8s.io", "endpointslices"))
        for v in ("list", "watch")
    }
    assert binding["subjects"] == [  # type: ignore[comparison-overlap]
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS.cn}
    ]


class _Done:
    returncode = 0
    stderr = ""
