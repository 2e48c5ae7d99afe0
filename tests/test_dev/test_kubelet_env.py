"""Environment building: $(VAR) expansion, env/envFrom order, downward API, errors."""

from typing import Any

import pytest

from dev.kubelet.envbuild import (
    ConfigError,
    PodContext,
    container_env,
    expand_argv,
    pod_env,
)
from dev.kubelet.expansion import expand
from dev.kubelet.quantity import divide_round_up, parse_quantity

CTX = PodContext(pod_ip="127.0.3.4", host_ip="127.0.0.1", node_name="n1",
                 node_allocatable={"cpu": "2", "memory": "4Gi"})  # fmt: skip


class Reader:
    def __init__(self) -> None:
        self.config_maps = {("ns", "cm"): {"A": "from-cm", "bad key": "x", "B": "b"}}
        self.secrets = {("ns", "sec"): {"password": b"s3cret", "P": b"p"}}

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.config_maps.get((namespace, name))

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.secrets.get((namespace, name))


def pod(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-1", "namespace": "ns", "uid": "u-1", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [container]},
    }


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("$(A)", "1"),
        ("x$(A)y$(B)", "x1y2"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$A", "$A"),
        ("$(A", "$(A"),
        ("end$", "end$"),
        ("$()", "$()"),
    ],
)
def test_expansion_follows_kubernetes(text: str, out: str) -> None:
    assert expand(text, {"A": "1", "B": "2"}) == out


def test_env_values_expand_only_earlier_variables() -> None:
    c = {"name": "c", "env": [
        {"name": "LATER_REF", "value": "$(B)"},
        {"name": "B", "value": "b"},
        {"name": "C", "value": "$(B)-$(POD_IP)"},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]}  # fmt: skip
    env = pod_env(pod(c), c, Reader(), CTX, {})
    assert env["LATER_REF"] == "$(B)"
    assert env["C"] == "b-$(POD_IP)"
    assert env["POD_IP"] == "127.0.3.4"


def test_downward_api_fields() -> None:
    paths = {
        "N": "metadata.name", "NS": "metadata.namespace", "UID": "metadata.uid",
        "NODE": "spec.nodeName", "SA": "spec.serviceAccountName", "HOST": "status.hostIP",
        "APP": "metadata.labels['app']",
    }  # fmt: skip
    c = {"name": "c", "env": [
        {"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in paths.items()
    ]}  # fmt: skip
    env = pod_env(pod(c), c, Reader(), CTX, {})
    assert [env[k] for k in paths] == ["web-1", "ns", "u-1", "n1", "sa", "127.0.0.1", "web"]


def test_secret_and_config_map_keys() -> None:
    c = {"name": "c", "env": [
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "A"}}},
        {"name": "OPT",
         "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
    ]}  # fmt: skip
    env = pod_env(pod(c), c, Reader(), CTX, {})
    assert env["PW"] == "s3cret"
    assert env["A"] == "from-cm"
    assert "OPT" not in env


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"secretKeyRef": {"name": "nope", "key": "k"}}, 'secret "nope" not found'),
        ({"configMapKeyRef": {"name": "cm", "key": "Z"}}, "couldn't find key Z in ConfigMap ns/cm"),
    ],
)
def test_missing_references_are_config_errors(source: dict[str, Any], message: str) -> None:
    c = {"name": "c", "env": [{"name": "X", "valueFrom": source}]}
    with pytest.raises(ConfigError, match=message):
        pod_env(pod(c), c, Reader(), CTX, {})


def test_env_from_order_prefix_and_invalid_keys() -> None:
    c = {"name": "c",
         "envFrom": [{"configMapRef": {"name": "cm"}},
                     {"secretRef": {"name": "sec"}, "prefix": "S_"}],
         "env": [{"name": "B", "value": "override-$(A)"}]}  # fmt: skip
    env = pod_env(pod(c), c, Reader(), CTX, {"KUBERNETES_SERVICE_HOST": "127.0.0.1"})
    assert env["A"] == "from-cm"
    assert env["B"] == "override-from-cm"
    assert env["S_password"] == "s3cret"
    assert "bad key" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"


def test_pod_variables_override_image_and_base() -> None:
    env = container_env(
        {"PATH": "/venv/bin", "X": "base"}, {"X": "image", "Y": "image"}, {"Y": "pod"}
    )
    assert env == {"PATH": "/venv/bin", "X": "image", "Y": "pod"}


def test_argv_is_expanded_against_the_pod_variables() -> None:
    argv = expand_argv(["run", "--control", "$(POD_IP):8081", "$(UNSET)"], {"POD_IP": "127.0.9.9"})
    assert argv == ["run", "--control", "127.0.9.9:8081", "$(UNSET)"]


def test_resource_field_ref_rounds_up_and_falls_back_to_the_node() -> None:
    c = {"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}, "env": [
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "MEM",
         "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "REQ_MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
    ]}  # fmt: skip
    env = pod_env(pod(c), c, Reader(), CTX, {})
    assert (env["CPU"], env["MEM"], env["REQ_MEM"]) == ("1", "128", str(128 * 2**20))
    bare = {"name": "c", "env": [
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
    ]}  # fmt: skip
    assert pod_env(pod(bare), bare, Reader(), CTX, {})["CPU"] == "2"


def test_quantities() -> None:
    assert parse_quantity("100m") * 10 == 1
    assert parse_quantity("1Ki") == 1024
    assert parse_quantity("1e3") == 1000
    assert divide_round_up("1536Mi", "1Gi") == "2"
    with pytest.raises(ValueError):
        parse_quantity("lots")
