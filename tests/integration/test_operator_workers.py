"""A StreamApp of several workers on the real local cluster: a StatefulSet of engine
pods (containers on the real node), Kafka between them, MinIO for the state.

v1 runs at 2 workers; v2 is applied at 3 workers: the operator takes the upgrade
savepoint through worker 0, stops every worker, and starts v2's three from it (a
stateful rescale). A suspend then takes a final savepoint, and the committed counts
must equal the exact counts of the events consumed (recorded in that savepoint), none
emitted twice: nothing lost or doubled across the rescale.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from rewind_operator.testing import OperatorProcess, wait_until

from dev import devcluster
from dev.devcluster import ClusterEnv

from .kube import POST_ANALYTICS_V1, POST_ANALYTICS_V2, apply, get, items, post_analytics, streamapp

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "post_analytics"))
from post_events import post_event  # noqa: E402

V1 = POST_ANALYTICS_V1
V2 = POST_ANALYTICS_V2


@pytest.fixture
def kafka_secret(cluster: ClusterEnv, namespace: str) -> str:
    """A Secret with the exchange's Kafka address (as `spec.exchange.credentialsSecret`)."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "kafka"},
        "stringData": {"REWIND_KAFKA_BOOTSTRAP": cluster.pod_kafka_bootstrap},
    }
    assert apply(namespace, body, cluster).returncode == 0
    return "kafka"


@pytest.fixture
def operator(
    cluster: ClusterEnv, crds: None, namespace: str, s3_secret: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    with OperatorProcess([namespace], tmp_path / "operator.log", env=cluster.env()) as proc:
        yield proc
    # Before the bucket is emptied: no worker may still be writing checkpoints to it.
    for kind in ("statefulsets", "deployments"):
        devcluster.kubectl("delete", kind, "--all", namespace=namespace, env=cluster)
    wait_until("the engine pods to stop", lambda: not items("pods", namespace, cluster))
    admin = AdminClient({"bootstrap.servers": cluster.kafka_bootstrap})
    mine = [t for t in admin.list_topics(timeout=30).topics if t.startswith(f"rewind-{namespace}.")]
    if mine:
        for future in admin.delete_topics(mine, request_timeout=60).values():
            future.result()


def app_body(
    out: Path, bucket: str, kafka_secret: str, *, workers: int, checkpoint_interval: str
) -> dict[str, Any]:
    """StreamApp pa running v1 on `workers` workers (one task each), its counts in `out`,
    its state under s3://`bucket`/pa and its exchange through `kafka_secret`."""
    example = post_analytics(
        "pa", bucket, out, checkpoint_interval=checkpoint_interval, savepoint_timeout="60s"
    )
    return streamapp(
        "pa",
        example
        | {
            "workers": workers,
            "parallelism": workers,
            "exchange": {"credentialsSecret": kafka_secret},
        },
    )


def app_status(namespace: str, cluster: ClusterEnv) -> dict[str, Any]:
    return dict(((get("sapp", "pa", namespace, cluster) or {}).get("status")) or {})


def ready(st: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])


def running(namespace: str, cluster: ClusterEnv, image: str, workers: int) -> dict[str, Any] | None:
    """pa's status if it runs `image` on `workers` ready workers that read records."""
    st = app_status(namespace, cluster)
    job = st.get("job") or {}
    if (
        st.get("phase") == "Running"
        and st.get("image") == image
        and not st.get("operation")
        and ready(st)
        and st.get("workers") == f"{workers}/{workers}"
        and len(job.get("workers") or []) == workers
        and job.get("recordsIn", 0) > 0
    ):
        return st
    return None


def wait_running(namespace: str, cluster: ClusterEnv, image: str, workers: int) -> dict[str, Any]:
    check = partial(running, namespace, cluster, image, workers)
    return wait_until(f"pa running {image} at {workers} workers", check)


def suspend(body: dict[str, Any], namespace: str, cluster: ClusterEnv) -> dict[str, Any]:
    """Apply `body` suspended, wait for pa to be Suspended; return its final savepoint."""
    body["spec"]["state"] = "suspended"
    assert apply(namespace, body, cluster).returncode == 0
    wait_until("pa suspended", lambda: app_status(namespace, cluster).get("phase") == "Suspended")
    [final] = [
        s
        for s in items("sp", namespace, cluster)
        if s["spec"]["reason"] == "suspend" and s["status"].get("phase") == "Completed"
    ]
    return final


def check_counts(out: Path, sources: dict[str, Any]) -> None:
    """Committed counts equal the exact counts of the events consumed; none twice."""
    expected: collections.Counter[tuple[int, str]] = collections.Counter()
    for split, produced in sources["post-events"].items():
        index = int(split.removeprefix("gen-"))
        for k in range(int(produced)):
            event = post_event(index + 2 * k)
            expected[(event["post_id"], event["kind"])] += 1
    emitted: dict[tuple[int, str], list[int]] = collections.defaultdict(list)
    for part in sorted((out / "counts").glob("*.jsonl")):
        for line in part.read_text().splitlines():
            row = json.loads(line)
            emitted[(row["post_id"], row["kind"])].append(row["count"])
    assert sum(expected.values()) > 0
    final = {key: max(values) for key, values in emitted.items()}
    wrong = {k: (expected[k], final.get(k)) for k in expected if final.get(k) != expected[k]}
    assert not wrong, f"counts differ (expected, committed): {wrong}"
    doubled = {k: v for k, v in emitted.items() if len(v) != len(set(v))}
    assert not doubled, f"counts emitted twice: {list(doubled)[:5]}"


def test_two_workers_upgraded_to_v2_at_three_workers_through_a_savepoint(
    cluster: ClusterEnv,
    operator: OperatorProcess,
    namespace: str,
    s3_bucket: str,
    kafka_secret: str,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    body = app_body(out, s3_bucket, kafka_secret, workers=2, checkpoint_interval="2s")
    body["spec"]["rollback"] = {"enabled": True, "readinessTimeout": "180s"}
    assert apply(namespace, body, cluster).returncode == 0
    st = wait_running(namespace, cluster, V1, 2)
    assert [w["index"] for w in st["job"]["workers"]] == [0, 1]
    assert all(w["state"] == "RUNNING" for w in st["job"]["workers"])
    sts = get("statefulset", "pa-engine", namespace, cluster)
    assert sts is not None and sts["spec"]["replicas"] == 2
    assert get("deployment", "pa-engine", namespace, cluster) is None
    pods = sorted(p["metadata"]["name"] for p in items("pods", namespace, cluster))
    assert pods == ["pa-engine-0", "pa-engine-1"]
    assert cluster.kafka_bootstrap not in json.dumps(st), "the Secret's value stays out"
    admin = AdminClient({"bootstrap.servers": cluster.kafka_bootstrap})

    def topics_of(workload_hash: str) -> list[str]:
        prefix = f"rewind-{namespace}.pa.{workload_hash}-"
        return [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix)]

    v1_hash = st["workloadHash"]
    assert topics_of(v1_hash), "v1's exchange and control topics"

    # v1 at 2 workers -> v2 at 3 workers: worker 0's stop-with-savepoint, then v2 from it.
    body["spec"].update(image=V2, workers=3, parallelism=3)
    assert apply(namespace, body, cluster).returncode == 0
    st = wait_running(namespace, cluster, V2, 3)
    [upgrade] = [s for s in items("sp", namespace, cluster) if s["spec"]["reason"] == "upgrade"]
    assert upgrade["status"]["phase"] == "Completed"
    assert st["restoredFrom"]["name"] == upgrade["metadata"]["name"]
    assert st["job"]["restoredFrom"], "worker 0 reports what the job restored"
    pods = sorted(p["metadata"]["name"] for p in items("pods", namespace, cluster))
    assert pods == ["pa-engine-0", "pa-engine-1", "pa-engine-2"]
    hashes = {
        (p["metadata"].get("annotations") or {}).get("rewind.dev/workload-hash")
        for p in items("pods", namespace, cluster)
    }
    assert hashes == {st["workloadHash"]}, "every worker runs the new version"
    # v2's first checkpoint retires v1's topics (--retire-exchange-of), not its own.
    wait_until("v1's exchange topics to be deleted", lambda: not topics_of(v1_hash))
    assert topics_of(st["workloadHash"]), "v2 keeps its own topics"

    # A final savepoint (suspend): the counts are exact across the rescale.
    final = suspend(body, namespace, cluster)
    consumed = sum(final["status"]["sources"]["post-events"].values())
    at_upgrade = sum(upgrade["status"]["sources"]["post-events"].values())
    assert consumed > at_upgrade > 0, "v2 went on reading after the savepoint"
    check_counts(out, final["status"]["sources"])
    assert list((out / "organic_paid").glob("*.jsonl")), "v2's new step wrote output"


def worker_processes(namespace: str, pod: str) -> list[int]:
    """The pids of pod `pod`'s container: processes of the host, in their own namespaces,
    that carry the pod's name and namespace in their environment."""
    wanted = {f"POD_NAME={pod}".encode(), f"POD_NAMESPACE={namespace}".encode()}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= env:
            pids.append(int(entry.name))
    return pids


def test_three_workers_with_a_random_worker_killed_three_times_count_exactly(
    cluster: ClusterEnv,
    operator: OperatorProcess,
    namespace: str,
    s3_bucket: str,
    kafka_secret: str,
    tmp_path: Path,
) -> None:
    # Each SIGKILL takes one worker down; the others stop hearing it and exit, every pod
    # restarts and the job restores its last completed global checkpoint (a full
    # restart). Whatever the timing, the committed counts must be exact at the end.
    out = tmp_path / "out"
    body = app_body(out, s3_bucket, kafka_secret, workers=3, checkpoint_interval="1s")
    assert apply(namespace, body, cluster).returncode == 0
    st = wait_running(namespace, cluster, V1, 3)
    rng = random.Random(int(time.time()))
    killed = []
    for _ in range(3):
        # A checkpoint of this run first, so that each restore starts from a checkpoint
        # taken after the previous restart: three different restores.
        run = st["job"].get("restoredFrom")
        newer = partial(checkpoint_since, st["job"].get("lastCheckpoint"), namespace, cluster)
        wait_until("a checkpoint of this run", newer)
        victim = rng.randrange(3)
        pids = worker_processes(namespace, f"pa-engine-{victim}")
        assert pids, f"no process of pa-engine-{victim}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed.append(victim)
        st = wait_until(
            f"pa running again after killing worker {victim}",
            partial(restored_again, run, namespace, cluster),
        )
    restarts = sum(
        int(c.get("restartCount") or 0)
        for p in items("pods", namespace, cluster)
        for c in p["status"].get("containerStatuses") or []
    )
    assert restarts >= 3, f"killed workers {killed}, but the pods restarted {restarts} times"

    final = suspend(body, namespace, cluster)
    check_counts(out, final["status"]["sources"])
    # The savepoint's own state agrees with the sink: the same count for every key.
    read = subprocess.run(
        [sys.executable, "-m", "rewind_operator.cli", "state", "read", final["status"]["path"],
         "--uid", "views-and-clicks"],
        capture_output=True, text=True, check=False, env=cluster.env(),
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    state = {tuple(row["key"]): row["value"] for row in map(json.loads, read.stdout.splitlines())}
    emitted: dict[tuple[int, str], int] = {}
    for part in sorted((out / "counts").glob("*.jsonl")):
        for line in part.read_text().splitlines():
            row = json.loads(line)
            key = (row["post_id"], row["kind"])
            emitted[key] = max(emitted.get(key, 0), row["count"])
    assert state == emitted


def checkpoint_since(last: str | None, namespace: str, cluster: ClusterEnv) -> bool:
    """The job reports a newest checkpoint other than `last`."""
    now = (app_status(namespace, cluster).get("job") or {}).get("lastCheckpoint")
    return now is not None and now != last


def restored_again(run: str | None, namespace: str, cluster: ClusterEnv) -> dict[str, Any] | None:
    """The status, once every worker runs a job restored from something else than `run`."""
    st = running(namespace, cluster, V1, 3)
    return st if st and st["job"].get("restoredFrom") not in (None, run) else None
