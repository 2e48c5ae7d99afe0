"""The Helm chart against the real local cluster (helm and kubectl from REWIND_DEV_BIN).

What is shown here:
- `helm lint` is clean and `helm template` output is accepted by the API server
  (`kubectl apply --dry-run=server`), in both RBAC shapes;
- wrong values fail `helm install` with a message that names the value, and install
  nothing;
- `helm install` brings the operator up (the node runs the `rewind/operator:dev` image
  built from Dockerfile.operator), with least-privilege RBAC that the API server enforces, and
  the operator reconciles the example StreamApp;
- `helm uninstall` removes the operator and keeps the CRDs, the Savepoints and their data.

Each install is confined to the test's namespace (`watchNamespaces`), so it never
touches another test's apps.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from dev import devcluster
from dev.devcluster import ClusterEnv

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rewind"
WAIT_S = 600
"""Upper bound of every wait: long, because a shared 2-core machine can be slow; a test
only fails on it when something is really stuck."""


def helm(cluster: ClusterEnv, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.binary("helm")), *args],
        text=True,
        capture_output=True,
        check=check,
        env={**os.environ, **cluster.env()},
    )


def kubectl(
    cluster: ClusterEnv, *args: str, namespace: str | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return devcluster.kubectl(*args, namespace=namespace, input=input, env=cluster)


def kubectl_json(cluster: ClusterEnv, *args: str, namespace: str | None = None) -> Any:
    result = kubectl(cluster, *args, "-o", "json", namespace=namespace)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(what: str, probe: Any, timeout_s: float = WAIT_S) -> Any:
    """Polls `probe()` until it returns something truthy; fails naming `what`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what} (last seen: {last!r})")


def _install_args(release: str, namespace: str, *extra: str) -> list[str]:
    return [
        "install", release, str(CHART), "--namespace", namespace,
        "--set", "image.tag=dev",
        "--set", f"watchNamespaces={{{namespace}}}",
        "--set", "operator.logFormat=console",
        *extra,
    ]  # fmt: skip


# ---- no install ------------------------------------------------------------------------


def test_helm_lint_is_clean(cluster: ClusterEnv) -> None:
    for values in [
        [],
        ["--set", "watchNamespaces={a,b}", "--set", "metrics.serviceMonitor.enabled=true"],
    ]:
        result = helm(cluster, "lint", "--strict", str(CHART), *values)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize(
    "values",
    [[], ["--set", "watchNamespaces={NS}", "--set", "serviceAccount.name=op"]],
    ids=["cluster-wide", "one-namespace"],
)
def test_template_is_accepted_by_the_api_server(
    cluster: ClusterEnv, namespace: str, values: list[str]
) -> None:
    values = [v.replace("NS", namespace) for v in values]
    rendered = helm(
        cluster, "template", "r", str(CHART), "-n", namespace, "--include-crds", *values
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered.stdout) if doc}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount"} <= kinds
    assert ("Role" in kinds) == bool(values), kinds
    applied = kubectl(cluster, "apply", "--dry-run=server", "-f", "-", input=rendered.stdout)
    assert applied.returncode == 0, applied.stderr
    assert "(server dry run)" in applied.stdout


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("operator.defaultUpgradeMode=sometimes", "defaultUpgradeMode"),
        ("operator.resyncIntervalSeconds=-5", "resyncIntervalSeconds"),
        ("operator.logLevel=loud", "logLevel"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("replicaCount=2", "replicaCount"),
    ],
)
def test_wrong_values_fail_install_naming_the_value(
    cluster: ClusterEnv, namespace: str, setting: str, named: str
) -> None:
    result = helm(cluster, *_install_args("bad", namespace, "--set", setting))
    assert result.returncode != 0, f"helm install accepted {setting}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr, result.stderr
    listed = helm(cluster, "list", "-n", namespace, "-q", check=True)
    assert listed.stdout.strip() == "", "a failed install left a release behind"


# ---- install, reconcile, uninstall -------------------------------------------------------


@pytest.fixture
def release(cluster: ClusterEnv, namespace: str) -> Iterator[str]:
    """The chart installed into the test's namespace, watching only it."""
    name = "rewind"
    result = helm(cluster, *_install_args(name, namespace))
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield name
    finally:
        helm(cluster, "uninstall", name, "-n", namespace, "--wait")


@pytest.fixture
def other_namespace(cluster: ClusterEnv, namespace: str, own_namespaces: set[str]) -> Iterator[str]:
    """A second fresh namespace beside `namespace`, deleted after the test."""
    name = f"{namespace[:58].rstrip('-')}-b"
    created = kubectl(cluster, "create", "namespace", name)
    assert created.returncode == 0, created.stderr
    own_namespaces.add(name)
    yield name
    kubectl(cluster, "delete", "namespace", name, "--wait=false")


def _cluster_roles(cluster: ClusterEnv, release_namespace: str) -> set[str]:
    """Names of the ClusterRoles that the release in `release_namespace` owns."""
    roles = kubectl_json(cluster, "get", "clusterroles")["items"]
    return {
        role["metadata"]["name"]
        for role in roles
        if (role["metadata"].get("annotations") or {}).get("meta.helm.sh/release-namespace")
        == release_namespace
    }


def test_two_releases_of_one_name_install_side_by_side(
    cluster: ClusterEnv, namespace: str, other_namespace: str
) -> None:
    """The README's order (`make demo` leaves release `rewind` in rewind-system, then the
    tests install another `rewind`) and any cluster with two installs: cluster-scoped
    names carry the release's namespace, so neither release claims the other's."""
    first = helm(cluster, *_install_args("rewind", namespace))
    assert first.returncode == 0, first.stdout + first.stderr
    try:
        second = helm(cluster, *_install_args("rewind", other_namespace))
        assert second.returncode == 0, second.stdout + second.stderr
        try:
            mine = _cluster_roles(cluster, namespace)
            theirs = _cluster_roles(cluster, other_namespace)
            assert mine and theirs and not mine & theirs, (mine, theirs)
        finally:
            gone = helm(cluster, "uninstall", "rewind", "-n", other_namespace, "--wait")
            assert gone.returncode == 0, gone.stderr
        # Uninstalling one release leaves the other's rights in place.
        assert _cluster_roles(cluster, namespace) == mine
        assert not _cluster_roles(cluster, other_namespace)
        # The engine identity outlives the uninstall: engines may still run there.
        kept = kubectl(cluster, "get", "serviceaccount", "rewind-engine", namespace=other_namespace)
        assert kept.returncode == 0, kept.stderr
    finally:
        helm(cluster, "uninstall", "rewind", "-n", namespace, "--wait")


def _operator_ready(cluster: ClusterEnv, namespace: str) -> bool:
    deployment = kubectl_json(cluster, "get", "deployment", "rewind", namespace=namespace)
    return int(deployment.get("status", {}).get("availableReplicas") or 0) >= 1


def test_install_confines_rights_to_the_watched_namespace(
    cluster: ClusterEnv, namespace: str, release: str
) -> None:
    operator_sa = f"system:serviceaccount:{namespace}:rewind"
    engine_sa = f"system:serviceaccount:{namespace}:rewind-engine"

    def can(who: str, verb: str, resource: str, ns: str | None = namespace) -> bool:
        where = ["-n", ns] if ns else ["--all-namespaces"]
        result = kubectl(cluster, "auth", "can-i", verb, resource, "--as", who, *where)
        return result.stdout.strip() == "yes"

    assert can(operator_sa, "create", "deployments.apps")
    assert can(operator_sa, "patch", "streamapps.rewind.dev/status")
    assert can(operator_sa, "get", "secrets")
    assert can(operator_sa, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert not can(operator_sa, "list", "secrets"), "the operator reads named Secrets only"
    # Pods: listed, and deleted only to replace the old version's workers (a StatefulSet
    # with updateStrategy OnDelete); never created, never in another namespace.
    assert can(operator_sa, "delete", "pods")
    assert can(operator_sa, "update", "statefulsets.apps")
    assert not can(operator_sa, "create", "pods")
    assert not can(operator_sa, "delete", "pods", "kube-system")
    assert not can(operator_sa, "patch", "deployments.apps"), "replaced, never patched"
    assert not can(operator_sa, "create", "deployments.apps", "kube-system")
    assert not can(operator_sa, "create", "deployments.apps", None)
    # The engine's identity has no rights at all and no token.
    for verb, resource in [("get", "pods"), ("list", "streamapps.rewind.dev"), ("get", "secrets")]:
        assert not can(engine_sa, verb, resource)
    engine = kubectl_json(cluster, "get", "serviceaccount", "rewind-engine", namespace=namespace)
    assert engine["automountServiceAccountToken"] is False
    # The operator pod is locked down as values.yaml promises.
    pod = kubectl_json(cluster, "get", "deployment", "rewind", namespace=namespace)["spec"][
        "template"
    ]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["image"] == "rewind/operator:dev"


def _s3(cluster: ClusterEnv) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=cluster.s3_endpoint,
        aws_access_key_id=cluster.aws_access_key_id,
        aws_secret_access_key=cluster.aws_secret_access_key,
        region_name=cluster.aws_region,
    )


def _credentials_secret(cluster: ClusterEnv, namespace: str) -> None:
    env = cluster.env() | {"AWS_ENDPOINT_URL": cluster.pod_s3_endpoint}  # as pods reach it
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")
    pairs = [f"--from-literal={k}={env[k]}" for k in keys]
    created = kubectl(
        cluster, "create", "secret", "generic", "rewind-s3", *pairs, namespace=namespace
    )
    assert created.returncode == 0, created.stderr


def _example_app(bucket: str) -> str:
    app = yaml.safe_load((REPO / "examples" / "streamapp-v1.yaml").read_text())
    app["spec"]["snapshots"]["location"] = f"s3://{bucket}/post-analytics"
    return yaml.safe_dump(app)


def _release_finalizers(cluster: ClusterEnv, namespace: str) -> None:
    """Without an operator, kopf's finalizers would keep the namespace from going."""
    for kind in ["streamapps.rewind.dev", "savepoints.rewind.dev"]:
        names = kubectl(cluster, "get", kind, "-o", "name", namespace=namespace).stdout.split()
        for name in names:
            unblock = '{"metadata":{"finalizers":null}}'
            kubectl(cluster, "patch", name, "--type=merge", "-p", unblock, namespace=namespace)
            kubectl(cluster, "delete", name, "--wait=false", namespace=namespace)
    kubectl(
        cluster,
        "delete",
        "deployment",
        "--all",
        "--wait=true",
        "--timeout=120s",
        namespace=namespace,
    )


def test_install_reconciles_the_example_and_uninstall_keeps_crds_and_savepoints(
    cluster: ClusterEnv, namespace: str, s3_bucket: str, release: str
) -> None:
    wait_for("the operator Deployment to be available", lambda: _operator_ready(cluster, namespace))
    _credentials_secret(cluster, namespace)
    try:
        applied = kubectl(
            cluster, "apply", "-f", "-", input=_example_app(s3_bucket), namespace=namespace
        )
        assert applied.returncode == 0, applied.stderr

        def running() -> Any:
            app = kubectl_json(cluster, "get", "streamapp", "post-analytics", namespace=namespace)
            status = app.get("status", {})
            return status if status.get("phase") == "Running" else None

        status = wait_for("the example StreamApp to be Running", running)
        assert status["observedGeneration"] == 1
        assert status["image"] == "rewind-examples/post-analytics:v1"
        engine = kubectl_json(
            cluster, "get", "deployment", "post-analytics-engine", namespace=namespace
        )
        assert engine["spec"]["template"]["spec"]["serviceAccountName"] == "rewind-engine"

        # A manual savepoint, whose resource and data must outlive the operator.
        savepoint = {
            "apiVersion": "rewind.dev/v1alpha1",
            "kind": "Savepoint",
            "metadata": {"name": "before-uninstall"},
            "spec": {"app": "post-analytics"},
        }
        created = kubectl(
            cluster, "apply", "-f", "-", input=json.dumps(savepoint), namespace=namespace
        )
        assert created.returncode == 0, created.stderr

        def completed() -> Any:
            sp = kubectl_json(cluster, "get", "savepoint", "before-uninstall", namespace=namespace)
            status = sp.get("status", {})
            assert status.get("phase") not in ("Failed", "Abandoned"), status
            return status if status.get("phase") == "Completed" else None

        sp_status = wait_for("the manual savepoint to complete", completed)
        path: str = sp_status["path"]
        assert path.startswith(f"s3://{s3_bucket}/post-analytics/savepoints/{namespace}/")

        uninstalled = helm(cluster, "uninstall", release, "-n", namespace, "--wait")
        assert uninstalled.returncode == 0, uninstalled.stderr
        # The operator and its rights are gone ...
        gone = kubectl(cluster, "get", "deployment", "rewind", namespace=namespace)
        assert gone.returncode != 0 and "NotFound" in gone.stderr
        assert kubectl(cluster, "get", "role", "rewind", namespace=namespace).returncode != 0
        # ... the CRDs, the Savepoint resource and its data are not.
        for crd in ["streamapps.rewind.dev", "savepoints.rewind.dev"]:
            assert kubectl(cluster, "get", "crd", crd).returncode == 0, f"{crd} was deleted"
        kept = kubectl_json(cluster, "get", "savepoint", "before-uninstall", namespace=namespace)
        assert kept["status"]["path"] == path
        key = path.removeprefix(f"s3://{s3_bucket}/").rstrip("/") + "/manifest.json"
        manifest = json.loads(_s3(cluster).get_object(Bucket=s3_bucket, Key=key)["Body"].read())
        assert manifest, "the savepoint's manifest is empty"
    finally:
        _release_finalizers(cluster, namespace)
