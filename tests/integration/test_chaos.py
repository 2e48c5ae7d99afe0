"""Chaos on the real local cluster: what a production user meets, with exact counts after.

- MinIO paused (SIGSTOP: what a network partition or a stuck load balancer looks like,
  connections accepted and never answered) during an upgrade of app A, while app B, whose
  snapshots live on the file system, takes periodic savepoints: B's savepoints go on
  completing while the store hangs, A's attempt fails by its own `savepointTimeout` with
  a condition that names the store's endpoint, and once MinIO resumes the upgrade
  completes, from exactly one Completed upgrade savepoint, nothing lost or doubled.
- A version that crashes at start: the condition quotes the job's own error (the
  engine's termination message), not only "Error, exit code 1".
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rewind_operator.testing import wait_until

from dev.devcluster import ClusterEnv
from dev.plane import procs
from dev.plane.layout import State

from .kube import apply, condition, get, host_folders, items
from .test_operator_story import (
    V1,
    V2,
    V3_CRASH,
    app_body,
    app_status,
    check_counts,
    events,
    operator,  # noqa: F401 - the fixture (the operator with its default storage timeouts)
    wait_running,
)

pytestmark = pytest.mark.integration

SAVEPOINT_TIMEOUT = "20s"


@pytest.fixture
def minio_pid(cluster: ClusterEnv) -> Iterator[int]:
    """MinIO's pid (from dev/.state/run/minio.pid); whatever the test does, MinIO runs
    (SIGCONT) afterwards."""
    running = procs.running(State.default(), "minio")
    assert running is not None, "MinIO is not running (dev/.state/run/minio.pid)"
    try:
        yield running.pid
    finally:
        os.kill(running.pid, signal.SIGCONT)


def app_savepoints(namespace: str, app: str, cluster: ClusterEnv) -> list[dict[str, Any]]:
    return [s for s in items("sp", namespace, cluster) if s["spec"]["app"] == app]


def when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def suspend_app(name: str, namespace: str, cluster: ClusterEnv, body: dict[str, Any]) -> Any:
    """Suspend one app of several; returns its suspend savepoint (the final positions)."""
    body["spec"]["state"] = "suspended"
    assert apply(namespace, body, cluster).returncode == 0
    wait_until(
        f"{name} suspended",
        lambda: app_status(name, namespace, cluster).get("phase") == "Suspended",
    )
    done = [
        s
        for s in app_savepoints(namespace, name, cluster)
        if s["spec"]["reason"] == "suspend" and s["status"].get("phase") == "Completed"
    ]
    return max(done, key=lambda s: s["status"]["completedAt"])


@pytest.mark.usefixtures("operator")
def test_a_paused_store_stalls_only_its_own_app_and_the_upgrade_completes_after(
    cluster: ClusterEnv,
    namespace: str,
    s3_bucket: str,
    tmp_path: Path,
    minio_pid: int,
) -> None:
    out_a, out_b = tmp_path / "out-a", tmp_path / "out-b"
    body_a = app_body("a", s3_bucket, out_a)
    body_a["spec"]["snapshots"]["savepointTimeout"] = SAVEPOINT_TIMEOUT
    body_b = app_body("b", s3_bucket, out_b)
    body_b["spec"]["snapshots"] = {
        "location": f"file://{tmp_path}/b-snapshots",  # B does not need MinIO at all
        "checkpointInterval": "2s",
        "savepointInterval": "4s",
        "savepointTimeout": "30s",
    }
    body_b["spec"]["podTemplate"] = host_folders(out_b, tmp_path / "b-snapshots")
    for body in (body_a, body_b):
        assert apply(namespace, body, cluster).returncode == 0
    wait_running("a", namespace, cluster, V1)
    wait_running("b", namespace, cluster, V1)

    os.kill(minio_pid, signal.SIGSTOP)
    paused_at = datetime.now(UTC)
    try:
        body_a["spec"]["image"] = V2
        assert apply(namespace, body_a, cluster).returncode == 0

        def a_timed_out() -> dict[str, Any] | None:
            ups = [
                s
                for s in app_savepoints(namespace, "a", cluster)
                if s["spec"]["reason"] == "upgrade"
            ]
            failed = [s for s in ups if (s.get("status") or {}).get("failures")]
            return failed[0] if failed else None

        upgrade = wait_until("A's upgrade savepoint to fail by its timeout", a_timed_out)
        error = upgrade["status"]["error"]
        assert error.startswith(f"timed out after {SAVEPOINT_TIMEOUT[:-1]}s"), error
        assert cluster.pod_s3_endpoint in error, f"the store is named: {error}"
        assert cluster.aws_secret_access_key not in error

        def a_progressing() -> dict[str, Any] | None:
            progressing = condition(get("sapp", "a", namespace, cluster), "Progressing")
            named = cluster.pod_s3_endpoint in progressing.get("message", "")
            return progressing if named else None

        progressing = wait_until("A's condition to name the endpoint", a_progressing)
        assert "timed out" in progressing["message"]
        status_a = app_status("a", namespace, cluster)
        assert status_a["image"] == V1, "the old version keeps running"

        def b_kept_its_cadence() -> list[dict[str, Any]] | None:
            done = [
                s
                for s in app_savepoints(namespace, "b", cluster)
                if s["spec"]["reason"] == "periodic"
                and s["status"].get("phase") == "Completed"
                and (when(s["status"].get("triggeredAt")) or paused_at) > paused_at
            ]
            return done if len(done) >= 2 else None

        b_done = wait_until("B's periodic savepoints while MinIO hangs", b_kept_its_cadence)
        resumed_at = datetime.now(UTC)
        for sp in b_done:
            assert sp["status"]["failures"] == 0, sp["status"]
            completed = when(sp["status"]["completedAt"])
            assert completed is not None and paused_at < completed < resumed_at
        assert procs.read_stat(minio_pid)[2] == "T", "MinIO was paused all along"  # type: ignore[index]
    finally:
        os.kill(minio_pid, signal.SIGCONT)

    # MinIO is back: the upgrade completes, from one Completed upgrade savepoint.
    st = wait_running("a", namespace, cluster, V2)
    ups = [s for s in app_savepoints(namespace, "a", cluster) if s["spec"]["reason"] == "upgrade"]
    completed_ups = [s for s in ups if s["status"].get("phase") == "Completed"]
    assert len(completed_ups) == 1, [(s["metadata"]["name"], s["status"]) for s in ups]
    assert st["restoredFrom"]["name"] == completed_ups[0]["metadata"]["name"]
    assert wait_running("b", namespace, cluster, V1)["image"] == V1

    final_a = suspend_app("a", namespace, cluster, body_a)
    final_b = suspend_app("b", namespace, cluster, body_b)
    check_counts(out_a, final_a["status"]["sources"])
    check_counts(out_b, final_b["status"]["sources"])


@pytest.mark.usefixtures("operator")
def test_a_crashing_version_is_rolled_back_and_the_condition_quotes_its_error(
    cluster: ClusterEnv, namespace: str, s3_bucket: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    body = app_body("pa", s3_bucket, out)
    assert apply(namespace, body, cluster).returncode == 0
    wait_running("pa", namespace, cluster, V1)
    body["spec"]["image"] = V3_CRASH  # v1 -> v3 straight: the upgrade savepoint, then a crash
    assert apply(namespace, body, cluster).returncode == 0

    the_error = "RuntimeError: post_analytics v3 crashes at start"

    def quoted() -> dict[str, Any] | None:
        obj = get("sapp", "pa", namespace, cluster)
        st = (obj or {}).get("status") or {}
        back = condition(obj, "Degraded").get("reason") == "RolledBack"
        return st if back and condition(obj, "Ready").get("status") == "True" else None

    st = wait_until("the rollback to v1", quoted)
    assert st["image"] == V1
    for type_ in ("Degraded", "Progressing"):
        message = condition({"status": st}, type_)["message"]
        assert the_error in message and V3_CRASH in message, (type_, message)
        assert "exit code" not in message, "the job's own words, not only its exit code"
    rolling = [
        e["message"] for e in events(namespace, "pa", cluster) if e["reason"] == "RollingBack"
    ]
    assert len(rolling) == 1 and the_error in rolling[0]
    [upgrade] = [
        s for s in app_savepoints(namespace, "pa", cluster) if s["spec"]["reason"] == "upgrade"
    ]
    assert st["restoredFrom"]["path"] == upgrade["status"]["path"]
    final = suspend_app("pa", namespace, cluster, body)
    check_counts(out, final["status"]["sources"])
