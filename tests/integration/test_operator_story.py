"""The operator with real engine pods (containers on the real node) and MinIO: the
post-analytics story, failures on the way, and the operator itself dying mid-upgrade.

Every test runs the post-analytics example (examples/post_analytics, the images
dev/node/images.py builds from its Dockerfile) writing its counts to a folder of the
test. "Nothing lost or doubled" is checked against the source positions recorded in the
final savepoint: the events are a pure function of their sequence number, so the exact
expected counts are known.
"""

from __future__ import annotations

import collections
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from rewind_operator.testing import OperatorProcess, wait_until

from dev import devcluster
from dev.devcluster import ClusterEnv
from dev.plane import procs
from dev.plane.layout import State

from .kube import (
    POST_ANALYTICS_V1,
    POST_ANALYTICS_V2,
    apply,
    condition,
    get,
    items,
    post_analytics,
    streamapp,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "post_analytics"))
from post_events import post_event  # noqa: E402

V1 = POST_ANALYTICS_V1
V2 = POST_ANALYTICS_V2
V3_CRASH = "rewind-examples/post-analytics:v3-crash"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def operator(
    cluster: ClusterEnv,
    crds: None,
    namespace: str,
    s3_secret: str,
    s3_bucket: str,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    with OperatorProcess([namespace], tmp_path / "operator.log", env=cluster.env()) as proc:
        yield proc
    # Before the bucket is emptied: no engine may still be writing checkpoints to it.
    devcluster.kubectl("delete", "deployments", "--all", namespace=namespace, env=cluster)
    wait_until("the engine pods to stop", lambda: not items("pods", namespace, cluster))


@pytest.fixture
def minio_back(cluster: ClusterEnv) -> Iterator[None]:
    """Whatever a test does to MinIO, it runs again afterwards."""
    yield
    devcluster.ensure_up()


# --------------------------------------------------------------------------- helpers


def events(namespace: str, name: str, cluster: ClusterEnv) -> list[dict[str, Any]]:
    result = devcluster.kubectl(
        "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json",
        namespace=namespace, env=cluster,
    )  # fmt: skip
    return list(json.loads(result.stdout)["items"])


def app_body(name: str, bucket: str, out: Path, image: str = V1, **spec: Any) -> dict[str, Any]:
    example = post_analytics(
        name, bucket, out, image, checkpoint_interval="2s", savepoint_timeout="30s"
    )
    return streamapp(
        name,
        example
        | {"parallelism": 2, "rollback": {"enabled": True, "readinessTimeout": "90s"}}
        | spec,
    )


def app_status(name: str, namespace: str, cluster: ClusterEnv) -> dict[str, Any]:
    return dict(((get("sapp", name, namespace, cluster) or {}).get("status")) or {})


def wait_running(name: str, namespace: str, cluster: ClusterEnv, image: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = app_status(name, namespace, cluster)
        obj = {"status": st}
        if (
            st.get("phase") == "Running"
            and st.get("image") == image
            and not st.get("operation")
            and condition(obj, "Ready").get("status") == "True"
            and (st.get("job") or {}).get("recordsIn", 0) > 0
        ):
            return st
        return None

    return wait_until(f"{name} running {image}", check)


def savepoints(
    namespace: str, cluster: ClusterEnv, reason: str | None = None
) -> list[dict[str, Any]]:
    return [
        s
        for s in items("sp", namespace, cluster)
        if reason is None or s["spec"]["reason"] == reason
    ]


def completed_savepoint(name: str, namespace: str, cluster: ClusterEnv) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        sp = get("sp", name, namespace, cluster)
        phase = ((sp or {}).get("status") or {}).get("phase")
        assert phase not in ("Failed", "Abandoned"), sp
        return sp if phase == "Completed" else None

    return wait_until(f"savepoint {name} completed", check)


def s3_keys(uri: str) -> list[str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def suspend(name: str, namespace: str, cluster: ClusterEnv, body: dict[str, Any]) -> dict[str, Any]:
    """Suspend the app; returns the suspend savepoint (the job's final positions)."""
    body["spec"]["state"] = "suspended"
    assert apply(namespace, body, cluster).returncode == 0
    wait_until(
        f"{name} suspended",
        lambda: app_status(name, namespace, cluster).get("phase") == "Suspended",
    )
    [sp] = [
        s
        for s in savepoints(namespace, cluster, "suspend")
        if s["status"].get("phase") == "Completed"
    ][-1:]
    return sp


def check_counts(out: Path, sources: dict[str, Any], folder: str = "counts") -> None:
    """Committed counts equal the exact counts of the events consumed, and no count
    was emitted twice (a replay after a restore would repeat values)."""
    expected: collections.Counter[tuple[int, str]] = collections.Counter()
    for split, produced in sources["post-events"].items():
        index = int(split.removeprefix("gen-"))
        for k in range(int(produced)):
            event = post_event(index + 2 * k)
            expected[(event["post_id"], event["kind"])] += 1
    emitted: dict[tuple[int, str], list[int]] = collections.defaultdict(list)
    for part in sorted((out / folder).glob("*.jsonl")):
        for line in part.read_text().splitlines():
            row = json.loads(line)
            emitted[(row["post_id"], row["kind"])].append(row["count"])
    assert sum(expected.values()) > 0
    final = {key: max(values) for key, values in emitted.items()}
    lost_or_extra = {
        k: (expected[k], final.get(k)) for k in expected if final.get(k) != expected[k]
    }
    assert not lost_or_extra, f"counts differ (expected, committed): {lost_or_extra}"
    doubled = {k: v for k, v in emitted.items() if len(v) != len(set(v))}
    assert not doubled, f"counts emitted twice: {list(doubled)[:5]}"


# --------------------------------------------------------------------------- the story


def test_post_analytics_upgrade_story(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    body = app_body("pa", s3_bucket, out)
    assert apply(namespace, body, cluster).returncode == 0
    wait_running("pa", namespace, cluster, V1)

    # A savepoint by hand, with kubectl: Completed, and its files in MinIO.
    manual = {
        "apiVersion": "rewind.dev/v1alpha1",
        "kind": "Savepoint",
        "metadata": {"name": "by-hand"},
        "spec": {"app": "pa"},
    }
    assert apply(namespace, manual, cluster).returncode == 0
    sp = completed_savepoint("by-hand", namespace, cluster)
    path = sp["status"]["path"]
    assert path == f"s3://{s3_bucket}/pa/savepoints/{namespace}/by-hand/"
    keys = s3_keys(path)
    assert any(k.endswith("manifest.json") for k in keys) and len(keys) > 1
    assert sp["status"]["sizeBytes"] > 0 and sp["status"]["sources"]["post-events"]

    # v1 -> v2: savepoint, then v2 restored from it.
    body["spec"]["image"] = V2
    assert apply(namespace, body, cluster).returncode == 0
    st = wait_running("pa", namespace, cluster, V2)
    [upgrade] = savepoints(namespace, cluster, "upgrade")
    assert upgrade["status"]["phase"] == "Completed"
    assert st["restoredFrom"]["name"] == upgrade["metadata"]["name"]
    assert st["lastStableSpec"]["image"] == V2
    assert st["job"]["restoredFrom"], "the engine reports what it restored"
    reasons = [e["reason"] for e in events(namespace, "pa", cluster)]
    assert "UpgradeStarted" in reasons and "UpgradeSucceeded" in reasons

    # Suspend: a final savepoint, nothing running; counts exact, nothing doubled.
    final = suspend("pa", namespace, cluster, body)
    assert items("pods", namespace, cluster) == [] or all(
        p["metadata"].get("deletionTimestamp") for p in items("pods", namespace, cluster)
    )
    check_counts(out, final["status"]["sources"])
    assert list((out / "organic_paid").glob("*.jsonl")), "v2's new step wrote output"

    # Resume from the suspend savepoint.
    body["spec"]["state"] = "running"
    assert apply(namespace, body, cluster).returncode == 0
    st = wait_running("pa", namespace, cluster, V2)
    assert st["restoredFrom"]["name"] == final["metadata"]["name"]
    again = suspend("pa", namespace, cluster, body)
    check_counts(out, again["status"]["sources"])


def test_minio_down_during_upgrade_keeps_v1_until_it_is_back(
    cluster: ClusterEnv,
    operator: OperatorProcess,
    namespace: str,
    s3_bucket: str,
    tmp_path: Path,
    minio_back: None,
) -> None:
    out = tmp_path / "out"
    body = app_body("pa", s3_bucket, out)
    assert apply(namespace, body, cluster).returncode == 0
    wait_running("pa", namespace, cluster, V1)
    assert procs.stop(State.default(), "minio", grace=10)
    body["spec"]["image"] = V2
    assert apply(namespace, body, cluster).returncode == 0

    def blocked() -> dict[str, Any] | None:
        obj = get("sapp", "pa", namespace, cluster)
        progressing = condition(obj, "Progressing")
        return progressing if progressing.get("reason") == "SavepointFailed" else None

    progressing = wait_until("the upgrade to be blocked", blocked)
    assert progressing["status"] == "False"
    assert "keeps running" in progressing["message"] and V1 in progressing["message"]
    st = app_status("pa", namespace, cluster)
    assert st["image"] == V1 and st["phase"] == "Running"
    pods = items("pods", namespace, cluster)
    assert [p["spec"]["containers"][0]["image"] for p in pods] == [V1]
    assert any(e["reason"] == "SavepointFailed" for e in events(namespace, "pa", cluster))

    devcluster.ensure_up()  # MinIO is back
    wait_running("pa", namespace, cluster, V2)
    final = suspend("pa", namespace, cluster, body)
    check_counts(out, final["status"]["sources"])


def test_crashing_v3_is_rolled_back_to_v2_from_the_same_savepoint(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    body = app_body("pa", s3_bucket, out, image=V2)
    body["spec"]["restore"] = {"allowEmptyState": True}
    assert apply(namespace, body, cluster).returncode == 0
    wait_running("pa", namespace, cluster, V2)
    body["spec"]["image"] = V3_CRASH
    assert apply(namespace, body, cluster).returncode == 0

    def rolled_back() -> dict[str, Any] | None:
        obj = get("sapp", "pa", namespace, cluster)
        degraded = condition(obj, "Degraded")
        st = (obj or {}).get("status") or {}
        ok = degraded.get("reason") == "RolledBack" and st.get("phase") == "Running"
        return st if ok and condition(obj, "Ready").get("status") == "True" else None

    st = wait_until("the rollback to v2", rolled_back)
    assert st["image"] == V2
    degraded = condition({"status": st}, "Degraded")
    assert V3_CRASH in degraded["message"] and V2 in degraded["message"]
    [upgrade] = savepoints(namespace, cluster, "upgrade")
    assert st["restoredFrom"]["path"] == upgrade["status"]["path"]
    dep = get("deployment", "pa-engine", namespace, cluster)
    assert dep is not None
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == V2
    assert container["args"][container["args"].index("--restore") + 1] == upgrade["status"]["path"]
    reasons = [e["reason"] for e in events(namespace, "pa", cluster)]
    assert "RollingBack" in reasons and "RolledBack" in reasons
    final = suspend("pa", namespace, cluster, body)
    check_counts(out, final["status"]["sources"])


def test_operator_killed_mid_upgrade_finishes_once(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    body = app_body("pa", s3_bucket, out)
    assert apply(namespace, body, cluster).returncode == 0
    wait_running("pa", namespace, cluster, V1)
    body["spec"]["image"] = V2
    assert apply(namespace, body, cluster).returncode == 0
    wait_until("the upgrade savepoint", lambda: savepoints(namespace, cluster, "upgrade"))
    operator.kill()
    operator.start()
    wait_running("pa", namespace, cluster, V2)
    ups = savepoints(namespace, cluster, "upgrade")
    assert len(ups) == 1, [s["metadata"]["name"] for s in ups]
    final = suspend("pa", namespace, cluster, body)
    check_counts(out, final["status"]["sources"])


def test_retention_keeps_the_restored_savepoint_and_dispose_on_delete(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    body = app_body("pa", s3_bucket, out)
    body["spec"]["snapshots"]["savepointInterval"] = "4s"
    assert apply(namespace, body, cluster).returncode == 0
    wait_running("pa", namespace, cluster, V1)

    def first_periodic() -> dict[str, Any] | None:
        done = [
            s for s in savepoints(namespace, cluster, "periodic")
            if (s.get("status") or {}).get("phase") == "Completed"
        ]  # fmt: skip
        return done[0] if done else None

    restored = first_periodic_sp = wait_until("a periodic savepoint", first_periodic)
    name = first_periodic_sp["metadata"]["name"]
    # Redeploy from it: it becomes the savepoint the app last restored from.
    body["spec"]["restore"] = {"savepoint": name, "redeployNonce": 1}
    body["spec"]["snapshots"]["retain"] = {"count": 1}
    assert apply(namespace, body, cluster).returncode == 0
    wait_until(
        "the redeploy",
        lambda: (
            (app_status("pa", namespace, cluster).get("restoredFrom") or {}).get("name") == name
        ),
    )

    def pruned() -> list[str] | None:
        done = [
            s["metadata"]["name"] for s in savepoints(namespace, cluster, "periodic")
            if (s.get("status") or {}).get("phase") == "Completed"
        ]  # fmt: skip
        created = [e for e in events(namespace, "pa", cluster) if e["reason"] == "RetentionApplied"]
        return done if created and len(done) <= 2 else None

    kept = wait_until("retention to delete old periodic savepoints", pruned)
    assert name in kept, "the savepoint the app restored from is never deleted"
    deleted_events = [
        e["message"] for e in events(namespace, "pa", cluster) if e["reason"] == "RetentionApplied"
    ]
    victim = deleted_events[0].split("savepoints ", 1)[1].split(",")[0].strip()
    assert victim != name
    victim_path = f"s3://{s3_bucket}/pa/savepoints/{namespace}/{victim}/"
    wait_until("the victim's data to be gone", lambda: s3_keys(victim_path) == [])
    assert s3_keys(restored["status"]["path"]), "the restored savepoint's data stays"

    # A savepoint taken by hand with disposeOnDelete: deleting it deletes its data.
    manual = {
        "apiVersion": "rewind.dev/v1alpha1",
        "kind": "Savepoint",
        "metadata": {"name": "throwaway"},
        "spec": {"app": "pa", "disposeOnDelete": True},
    }
    assert apply(namespace, manual, cluster).returncode == 0
    sp = completed_savepoint("throwaway", namespace, cluster)
    assert s3_keys(sp["status"]["path"])
    result = devcluster.kubectl(
        "delete", "sp", "throwaway", "--timeout=120s", namespace=namespace, env=cluster
    )
    assert result.returncode == 0, result.stderr
    assert s3_keys(sp["status"]["path"]) == []


def test_a_last_state_upgrade_restores_the_apps_own_lineage_not_its_forks(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, tmp_path: Path
) -> None:
    """A fork whose location is nested inside its original's (what `rewind fork` used to
    default to) checkpoints there while the original upgrades in last-state mode: the
    original restores its own newest checkpoint, never the fork's, and stays exact."""
    out = tmp_path / "out"
    body = app_body("clicks", s3_bucket, out, upgradeMode="last-state")
    assert apply(namespace, body, cluster).returncode == 0
    wait_running("clicks", namespace, cluster, V1)
    manual = {
        "apiVersion": "rewind.dev/v1alpha1",
        "kind": "Savepoint",
        "metadata": {"name": "launch"},
        "spec": {"app": "clicks"},
    }
    assert apply(namespace, manual, cluster).returncode == 0
    completed_savepoint("launch", namespace, cluster)
    fork = app_body(
        "clicks-fork", s3_bucket, tmp_path / "fork-out", restore={"savepoint": "launch"}
    )
    nested = f"s3://{s3_bucket}/clicks/forks/clicks-fork"
    fork["spec"]["snapshots"]["location"] = nested
    assert apply(namespace, fork, cluster).returncode == 0
    wait_running("clicks-fork", namespace, cluster, V1)
    wait_until("a checkpoint of the fork", lambda: s3_keys(f"{nested}/checkpoints/"))

    body["spec"]["image"] = V2
    assert apply(namespace, body, cluster).returncode == 0
    st = wait_running("clicks", namespace, cluster, V2)
    restored = str(st["job"]["restoredFrom"])
    assert restored.startswith(f"s3://{s3_bucket}/clicks/checkpoints/"), restored
    assert "/forks/" not in restored
    # A suspend in savepoint mode ends with the job's exact final positions.
    body["spec"]["upgradeMode"] = "savepoint"
    final = suspend("clicks", namespace, cluster, body)
    check_counts(out, final["status"]["sources"])


V4_RENAMED = "rewind-examples/post-analytics:v4-renamed-uid"


def test_a_preflight_refuses_an_upgrade_that_cannot_restore_while_v1_runs_on(
    cluster: ClusterEnv, operator: OperatorProcess, namespace: str, s3_bucket: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    body = app_body("pa", s3_bucket, out)
    assert apply(namespace, body, cluster).returncode == 0
    wait_running("pa", namespace, cluster, V1)
    wait_until(
        "a first checkpoint of v1",
        lambda: (app_status("pa", namespace, cluster).get("job") or {}).get("lastCheckpoint"),
    )
    [engine_pod] = [p["metadata"]["name"] for p in items("pods", namespace, cluster)]
    job_id = app_status("pa", namespace, cluster)["job"]["id"]

    # v4 renamed the count's uid: its preflight cannot restore v1's count state.
    body["spec"]["image"] = V4_RENAMED
    assert apply(namespace, body, cluster).returncode == 0

    def refused() -> dict[str, Any] | None:
        st = app_status("pa", namespace, cluster)
        return st if (st.get("operation") or {}).get("stage") == "refused" else None

    st = refused_status = wait_until("the upgrade to be refused", refused)
    progressing = condition({"status": st}, "Progressing")
    assert progressing["reason"] == "PreflightFailed"
    assert "views-and-clicks" in progressing["message"], progressing["message"]
    assert V4_RENAMED in progressing["message"]
    assert st["phase"] == "Running" and st["image"] == V1
    assert st["lastPreflight"]["passed"] is False
    assert not savepoints(namespace, cluster, "upgrade"), "v1 was stopped for a refused upgrade"
    reasons = [e["reason"] for e in events(namespace, "pa", cluster)]
    assert "PreflightFailed" in reasons
    # v1 never stopped: the same pod, the same job, and it keeps counting.
    before = refused_status["job"]["recordsIn"]
    wait_until(
        "v1 to keep counting",
        lambda: app_status("pa", namespace, cluster)["job"]["recordsIn"] > before,
    )
    running = [
        p["metadata"]["name"]
        for p in items("pods", namespace, cluster)
        if p["metadata"]["labels"].get("app.kubernetes.io/name") == "rewind-engine"
    ]
    assert running == [engine_pod]
    assert app_status("pa", namespace, cluster)["job"]["id"] == job_id

    # Allowing the dropped state is a new spec: a new preflight passes, the upgrade runs.
    body["spec"]["restore"] = {"allowNonRestoredState": True}
    assert apply(namespace, body, cluster).returncode == 0
    st = wait_running("pa", namespace, cluster, V4_RENAMED)
    preflight = st["lastPreflight"]
    assert preflight["passed"] is True and preflight["image"] == V4_RENAMED
    assert "views-and-clicks" in preflight["message"]
    took = _seconds(preflight["finishedAt"]) - _seconds(preflight["startedAt"])
    print(f"the passing preflight took {took:.1f} s (target on the local cluster: under 5 s)")
    [upgrade] = savepoints(namespace, cluster, "upgrade")
    assert st["restoredFrom"]["name"] == upgrade["metadata"]["name"]
    wait_until("the preflight jobs to be deleted", lambda: not items("jobs", namespace, cluster))


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
