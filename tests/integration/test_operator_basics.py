"""The operator on the real local control plane: schema, validation, workload shape,
the empty-state guard, registered savepoints with disposeOnDelete, and secrets.

These need no running engine: what they check happens before a job runs or beside it.
The operator runs as a real process (`python -m rewind_operator`) watching the test's
namespace; MinIO is the object store.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from rewind_engine.snapshots import SnapshotWriter
from rewind_operator.testing import OperatorProcess, wait_until
from rewind_operator.vocabulary import IMAGE_PROBLEMS

from dev import devcluster
from dev.devcluster import ClusterEnv

from .kube import apply, condition, get, streamapp

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def operator(
    cluster: ClusterEnv, crds: None, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    with OperatorProcess([namespace], tmp_path / "operator.log", env=cluster.env()) as proc:
        yield proc


def app_body(name: str, bucket: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "image": "rewind/engine:dev",
        "flow": "flow.py",
        "snapshots": {"location": f"s3://{bucket}/{name}", "credentialsSecret": "s3-creds"},
    }
    return streamapp(name, base | spec)


def write_snapshot(uri: str) -> int:
    """A real (small) savepoint written by the engine's own writer; returns its size."""
    writer = SnapshotWriter(
        uri, "savepoint", "sp-test", {"job_id": "j1", "flow": "flow.py", "max_parallelism": 8}
    )
    writer.add_subtask("count", 0, 1, (0, 8), {3: {"post-1": 7}}, None)
    return writer.finish().size_bytes


def s3_keys(bucket: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3")
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def events(namespace: str, name: str, cluster: ClusterEnv) -> list[dict[str, Any]]:
    result = devcluster.kubectl(
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
        namespace=namespace,
        env=cluster,
    )
    return list(json.loads(result.stdout)["items"]) if result.returncode == 0 else []


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"upgradeMode": "yolo"}, "upgradeMode"),
        ({"parallelism": 0}, "parallelism"),
        ({"snapshots": {"location": "http://not-storage"}}, "location"),
        (
            {"snapshots": {"location": "s3://b/x", "savepointInterval": "10 minutes"}},
            "savepointInterval",
        ),
        ({"state": "paused"}, "state"),
    ],
)
def test_api_server_refuses_invalid_specs(
    cluster: ClusterEnv, crds: None, namespace: str, spec: dict[str, Any], words: str
) -> None:
    body = app_body("bad", "bucket", **spec)
    result = apply(namespace, body, cluster)
    assert result.returncode != 0
    assert words in result.stderr
    assert get("sapp", "bad", namespace, cluster) is None


def test_kubectl_explain_teaches_the_fields(cluster: ClusterEnv, crds: None) -> None:
    result = devcluster.kubectl("explain", "streamapp.spec.upgradeMode", env=cluster, check=True)
    assert "stop with a savepoint" in " ".join(result.stdout.split())


# --------------------------------------------------------------------------- operator


def test_invalid_spec_is_reported_and_nothing_is_deployed(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, s3_secret: str
) -> None:
    body = app_body("inv", s3_bucket, parallelism=8, maxParallelism=4)
    assert apply(namespace, body, cluster).returncode == 0
    ready = wait_until(
        "InvalidSpec",
        lambda: (
            (c := condition(get("sapp", "inv", namespace, cluster), "Ready")).get("reason")
            == "InvalidSpec"
            and c
        ),
    )
    assert "exceeds maxParallelism" in ready["message"]
    assert get("deployment", "inv-engine", namespace, cluster) is None
    assert any(e["reason"] == "InvalidSpec" for e in events(namespace, "inv", cluster))


def test_an_image_that_does_not_exist_is_reported_on_the_app(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, s3_secret: str
) -> None:
    image = "rewind-examples/post-analytics:does-not-exist"
    assert apply(namespace, app_body("noimage", s3_bucket, image=image), cluster).returncode == 0

    def image_problem() -> dict[str, Any] | None:
        ready = condition(get("sapp", "noimage", namespace, cluster), "Ready")
        said = ready.get("message", "")
        return ready if any(reason in said for reason in IMAGE_PROBLEMS) else None

    ready = wait_until("the app to say its image is missing", image_problem)
    assert ready["status"] == "False"
    assert image in ready["message"], "the message names the image"
    app = get("sapp", "noimage", namespace, cluster)
    assert app is not None and app["status"]["phase"] != "Running"


def test_workload_shape(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, s3_secret: str
) -> None:
    assert apply(namespace, app_body("shape", s3_bucket), cluster).returncode == 0
    dep = wait_until(
        "the engine Deployment", lambda: get("deployment", "shape-engine", namespace, cluster)
    )
    app = get("sapp", "shape", namespace, cluster)
    assert app is not None
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    [owner] = dep["metadata"]["ownerReferences"]
    assert owner["kind"] == "StreamApp" and owner["uid"] == app["metadata"]["uid"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "$(POD_IP):8081" in container["args"]
    sa = get("serviceaccount", pod["serviceAccountName"], namespace, cluster)
    assert sa is not None and sa.get("automountServiceAccountToken") is False
    bindings = devcluster.kubectl(
        "get", "rolebindings", "-o", "json", namespace=namespace, env=cluster
    )
    assert pod["serviceAccountName"] not in bindings.stdout, "the engine must have no API rights"
    svc = get("service", "shape-engine", namespace, cluster)
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 8081
    assert dep["metadata"]["labels"]["app.kubernetes.io/instance"] == "shape"


def test_empty_state_guard(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, s3_secret: str
) -> None:
    write_snapshot(f"s3://{s3_bucket}/guarded/checkpoints/old-job/chk-7")
    assert apply(namespace, app_body("guarded", s3_bucket), cluster).returncode == 0
    ready = wait_until(
        "EmptyStateRefused",
        lambda: (
            (c := condition(get("sapp", "guarded", namespace, cluster), "Ready")).get("reason")
            == "EmptyStateRefused"
            and c
        ),
    )
    assert "allowEmptyState" in ready["message"] and "chk-7" in ready["message"]
    assert get("deployment", "guarded-engine", namespace, cluster) is None
    assert any(e["reason"] == "EmptyStateRefused" for e in events(namespace, "guarded", cluster))
    body = app_body("guarded", s3_bucket, restore={"path": "latest"})
    assert apply(namespace, body, cluster).returncode == 0
    dep = wait_until(
        "the Deployment", lambda: get("deployment", "guarded-engine", namespace, cluster)
    )
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--restore") + 1] == "latest"


def test_registered_savepoint_and_dispose_on_delete_without_the_app(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str
) -> None:
    uri = f"s3://{s3_bucket}/elsewhere/sp-1"
    size = write_snapshot(uri)
    assert s3_keys(s3_bucket, "elsewhere/sp-1/")
    body = {
        "apiVersion": "rewind.dev/v1alpha1",
        "kind": "Savepoint",
        "metadata": {"name": "registered"},
        "spec": {"app": "no-such-app", "path": uri, "disposeOnDelete": True},
    }
    assert apply(namespace, body, cluster).returncode == 0
    sp = wait_until(
        "Completed",
        lambda: (
            (o := get("sp", "registered", namespace, cluster))
            and (o.get("status") or {}).get("phase") == "Completed"
            and o
        ),
    )
    assert sp["status"]["path"] == uri and sp["status"]["sizeBytes"] == size
    assert "rewind.dev/finalizer" in sp["metadata"]["finalizers"]
    result = devcluster.kubectl(
        "delete", "sp", "registered", "--timeout=120s", namespace=namespace, env=cluster
    )
    assert result.returncode == 0, result.stderr
    assert s3_keys(s3_bucket, "elsewhere/sp-1/") == []


def test_a_corrupt_registered_savepoint_is_failed_naming_the_file_and_nothing_is_deployed(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, s3_secret: str
) -> None:
    """A copy with one flipped byte: the registration verifies every file's checksum, so
    the Savepoint is Failed with the file named, and an app that restores from it waits
    with that reason instead of crash-looping on it."""
    uri = f"s3://{s3_bucket}/copied/sp-1"
    write_snapshot(uri)
    s3 = boto3.client("s3")
    [data_key] = [k for k in s3_keys(s3_bucket, "copied/sp-1/") if not k.endswith(".json")]
    blob = bytearray(s3.get_object(Bucket=s3_bucket, Key=data_key)["Body"].read())
    blob[len(blob) // 2] ^= 0xFF
    s3.put_object(Bucket=s3_bucket, Key=data_key, Body=bytes(blob))
    body = {
        "apiVersion": "rewind.dev/v1alpha1",
        "kind": "Savepoint",
        "metadata": {"name": "copied"},
        "spec": {"app": "restored", "path": uri},
    }
    assert apply(namespace, body, cluster).returncode == 0
    app = app_body("restored", s3_bucket, restore={"savepoint": "copied"})
    assert apply(namespace, app, cluster).returncode == 0
    sp = wait_until(
        "the copied savepoint to be Failed",
        lambda: (
            (o := get("sp", "copied", namespace, cluster))
            and (o.get("status") or {}).get("phase") in ("Failed", "Completed")
            and o
        ),
    )
    file_name = data_key.rsplit("/", 1)[-1]
    assert sp["status"]["phase"] == "Failed", sp["status"]
    assert file_name in sp["status"]["error"] and sp["status"]["failures"] == 1
    progressing = wait_until(
        "the app to name the failed savepoint",
        lambda: (
            (c := condition(get("sapp", "restored", namespace, cluster), "Progressing"))
            and "Failed" in c.get("message", "")
            and c
        ),
    )
    assert file_name in progressing["message"]
    assert get("deployment", "restored-engine", namespace, cluster) is None


def test_secret_values_never_leak(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, s3_secret: str
) -> None:
    write_snapshot(f"s3://{s3_bucket}/leak/checkpoints/j/chk-1")
    assert apply(namespace, app_body("leak", s3_bucket), cluster).returncode == 0
    wait_until(
        "the guard (which read the secret to list storage)",
        lambda: (
            condition(get("sapp", "leak", namespace, cluster), "Ready").get("reason")
            == "EmptyStateRefused"
        ),
    )
    secret = cluster.aws_secret_access_key
    assert len(secret) >= 8
    status = json.dumps(get("sapp", "leak", namespace, cluster))
    assert secret not in status
    assert secret not in json.dumps(events(namespace, "leak", cluster))
    log = operator.log()
    assert '"app": "leak"' in log, "the operator logged about the app"
    assert secret not in log


def rewind_cli(*args: str, cluster: ClusterEnv) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "rewind"), *args],
        text=True,
        capture_output=True,
        env={**os.environ, **cluster.env()},
        check=False,
    )


def test_cli_fork_and_list(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, s3_secret: str
) -> None:
    """`rewind fork` starts a new app from another app's savepoint, in its own location."""
    origin = app_body("origin", s3_bucket, state="suspended")
    assert apply(namespace, origin, cluster).returncode == 0
    uri = f"s3://{s3_bucket}/origin/savepoints/{namespace}/launch"
    write_snapshot(uri)
    sp = {
        "apiVersion": "rewind.dev/v1alpha1",
        "kind": "Savepoint",
        "metadata": {"name": "launch"},
        "spec": {"app": "origin", "path": uri},
    }
    assert apply(namespace, sp, cluster).returncode == 0
    wait_until(
        "the registered savepoint",
        lambda: (
            ((get("sp", "launch", namespace, cluster) or {}).get("status") or {}).get("phase")
            == "Completed"
        ),
    )
    listing = rewind_cli("savepoint", "list", "origin", "-n", namespace, cluster=cluster)
    assert listing.returncode == 0, listing.stderr
    assert "launch" in listing.stdout and "Completed" in listing.stdout and uri in listing.stdout
    fork = rewind_cli(
        "fork", "origin", "--from", "launch", "--name", "origin-b", "-n", namespace, cluster=cluster
    )
    assert fork.returncode == 0, fork.stderr
    forked = get("sapp", "origin-b", namespace, cluster)
    assert forked is not None
    assert forked["spec"]["restore"]["savepoint"] == "launch"
    assert forked["spec"]["state"] == "running"
    assert forked["spec"]["snapshots"]["location"] == f"s3://{s3_bucket}/origin-b"
    dep = wait_until(
        "the fork's Deployment", lambda: get("deployment", "origin-b-engine", namespace, cluster)
    )
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--restore") + 1] == uri
    missing = rewind_cli(
        "fork", "origin", "--from", "nope", "--name", "x", "-n", namespace, cluster=cluster
    )
    assert missing.returncode == 1 and "no Savepoint 'nope'" in missing.stderr
