"""The post-analytics upgrade story on the local cluster, told in plain words (`make demo`).

    python -m dev.demo            # tell the story, then leave the cluster running
    python -m dev.demo --json     # the same, with the report as one JSON object on stdout

What flows through: `dev/cluster up` (builds what is missing) -> `helm install` (or
`helm upgrade`) of helm/rewind, watching only the demo's namespace -> a bucket and a
credentials Secret -> `kubectl apply` of examples/streamapp-v1.yaml -> wait until v1 runs
and counts -> `kubectl apply` of examples/streamapp-v2.yaml -> watch the operator take the
upgrade savepoint and start v2 from it -> a report of what was observed.

What must stay true: the demo does only what a user could do with helm, kubectl and the
engine's control API, and it reports only what it observed (resource status, engine
`/status`), never what it expected to happen. Running it again starts the story over:
the previous run's apps, savepoints and snapshot data in the demo's namespace and prefix
are removed first (the operator refuses to start an app from empty state over existing
snapshots, so a stale prefix would otherwise stop v1 from starting).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
import yaml
from rewind_engine import snapshots
from rewind_engine.snapshots import SnapshotReader

from dev import devcluster
from dev.devcluster import ClusterEnv

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "rewind"
V1 = REPO / "examples" / "streamapp-v1.yaml"
V2 = REPO / "examples" / "streamapp-v2.yaml"
RELEASE = "rewind"
OPERATOR_NAMESPACE = "rewind-system"
NAMESPACE = "rewind-demo"
SECRET = "rewind-s3"
CONTROL_PORT = 8081
COUNTS_UID = "views-and-clicks"
"""The step of examples/post_analytics (v1 and v2) that counts events per (post, kind)."""
SPLIT_UID = "organic-and-paid"
"""The step v2 adds: counts per (post, kind, paid), empty at the upgrade."""
POLL_S = 0.5
"""How often the upgrade is watched: fine enough to measure the pause to about a second."""
PAUSE_TARGET_S = 10
"""What an upgrade's pause should stay under on the local cluster (the report says)."""
PREFLIGHT_TARGET_S = 5
"""What the restore preflight (before v1 stops) should add to an upgrade here."""

T = TypeVar("T")


class DemoError(RuntimeError):
    """A step of the story did not happen; the message says which and where to look."""


@dataclass
class Report:
    """What the demo observed; printed in words and, with --json, as JSON."""

    ok: bool = False
    namespace: str = NAMESPACE
    app: str = ""
    chart: str = ""
    """`installed` or `upgraded`."""
    v1_image: str = ""
    v2_image: str = ""
    v1_records_in: int | None = None
    """Records v1 had read at its last observation before it stopped."""
    v1_sources: dict[str, Any] = field(default_factory=dict)
    savepoint: dict[str, Any] = field(default_factory=dict)
    """name, reason, path, size_bytes, triggered_at, completed_at, sources."""
    v2_restored_from: str | None = None
    """What v2's engine says it restored from (its /status `restored_from`)."""
    restored_from_savepoint: bool = False
    v2_records_in: int | None = None
    v2_sources: dict[str, Any] = field(default_factory=dict)
    records_since_savepoint: int | None = None
    """Sum over source splits of (v2 position - savepoint position)."""
    counts_continued: bool = False
    """Every source position of v2 is at or after the savepoint's: v2 went on from the
    savepoint instead of starting over, and it read each record after it exactly once
    when `records_since_savepoint` equals `v2_records_in`."""
    counted_at_savepoint: int | None = None
    """Sum of the per-post counts in the savepoint's state (step `views-and-clicks`)."""
    events_at_savepoint: int | None = None
    """Events the source had produced at the savepoint (sum of its positions)."""
    v2_checkpoint: str | None = None
    """A checkpoint v2 completed after the upgrade, read for the counts after."""
    counted_after: int | None = None
    events_after: int | None = None
    split_counted_after: int | None = None
    """Sum of v2's new organic/paid counts (step `organic-and-paid`) at that checkpoint."""
    top_post: dict[str, Any] = field(default_factory=dict)
    """The busiest (post, kind): its count at the savepoint and at v2's checkpoint."""
    counts_exact: bool = False
    """In both snapshots the counts add up to exactly the events read (nothing lost or
    doubled), no count went down across the upgrade, and v2's new step counted exactly
    the events since the savepoint."""
    paused_seconds: float | None = None
    """How long the app did not process: from the moment v1 wrote its upgrade savepoint
    (the manifest's `created_at`) to the moment v2 had restored it and began to read
    (`running_since` in v2's /status). Both are the engines' own clocks; target
    PAUSE_TARGET_S."""
    paused_seconds_polled: float | None = None
    """The same pause as seen by this script polling both engines (coarser)."""
    preflight_seconds: float | None = None
    """How long v2's restore preflight took (`status.lastPreflight`: Job created -> its
    result seen), while v1 kept running; it comes before the pause."""
    preflight: str | None = None
    """The preflight's report: which snapshot v2 restored, which uids."""
    error: str | None = None


# ---------------------------------------------------------------------------- plumbing


class Demo:
    def __init__(self, env: ClusterEnv, say: Callable[[str], None], timeout_s: float) -> None:
        self.env = env
        self.say = say
        self.timeout_s = timeout_s
        self.child_env = {**os.environ, **env.env()}

    def run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, input=stdin, text=True, capture_output=True, env=self.child_env, check=False
        )

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.env.binary("kubectl")), *args], stdin)

    def must(self, result: subprocess.CompletedProcess[str], what: str) -> str:
        if result.returncode != 0:
            raise DemoError(f"{what} failed:\n{result.stdout}{result.stderr}".rstrip())
        return result.stdout

    def get(self, *args: str) -> Any:
        """`kubectl get ... -o json`, or None when the object does not exist."""
        result = self.kubectl("get", *args, "-o", "json")
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise DemoError(f"kubectl get {' '.join(args)}: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.env.binary("helm")), *args])

    def wait(self, what: str, probe: Callable[[], T | None], timeout_s: float | None = None) -> T:
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                raise DemoError(f"gave up waiting for {what}")
            time.sleep(POLL_S)

    # ------------------------------------------------------------------------ the chart

    def install_chart(self) -> str:
        values = [
            "--set", "image.tag=dev",  # rewind/operator:dev: this repo's operator, on either node
            "--set", f"watchNamespaces={{{NAMESPACE}}}",
            "--set", "operator.logFormat=console",
            # Pods on the local cluster have loopback IPs, which Endpoints refuse: a metrics
            # Service would only collect warnings there.
            "--set", "metrics.service=false",
        ]  # fmt: skip
        self.must(
            self.kubectl("apply", "-f", "-", stdin=_namespace(NAMESPACE)), "creating namespace"
        )
        installed = self.helm("status", RELEASE, "-n", OPERATOR_NAMESPACE).returncode == 0
        if installed:
            # Helm installs crds/ once and never upgrades them; a newer chart's CRDs are
            # applied the way its README says.
            self.must(
                self.kubectl(
                    "apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds")
                ),
                "updating the CRDs",
            )
            verb = "upgrade"
        else:
            verb = "install"
        self.say(f"helm {verb} {RELEASE} helm/rewind --namespace {OPERATOR_NAMESPACE}")
        argv = [verb, RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE]
        argv += ["--create-namespace", *values, "--wait", "--timeout", f"{int(self.timeout_s)}s"]
        logs = f"kubectl -n {OPERATOR_NAMESPACE} logs deployment/{RELEASE}"
        self.must(self.helm(*argv), f"helm {verb} (operator logs: {logs})")
        self.say(f"  the operator runs in namespace {OPERATOR_NAMESPACE}, watching {NAMESPACE}")
        return "upgraded" if installed else "installed"

    # ------------------------------------------------------------------------ a clean slate

    def reset(self, app: str, location: str) -> None:
        """Removes the previous run's app, savepoints and snapshot data, if any."""
        leftovers = [
            kind
            for kind in ("streamapps.rewind.dev", "savepoints.rewind.dev")
            if self.must(self.kubectl("get", kind, "-n", NAMESPACE, "-o", "name"), "listing")
        ]
        if leftovers:
            self.say(f"removing the previous demo run from namespace {NAMESPACE}")
            unblock = '{"metadata":{"finalizers":null}}'
            for kind in leftovers:
                deleted = self.kubectl("delete", kind, "--all", "-n", NAMESPACE, "--timeout=120s")
                if deleted.returncode != 0:  # an operator that is gone cannot finalize
                    names = self.kubectl("get", kind, "-n", NAMESPACE, "-o", "name").stdout.split()
                    for obj in names:
                        self.kubectl("patch", obj, "-n", NAMESPACE, "--type=merge", "-p", unblock)
            selector = f"app.kubernetes.io/instance={app}"
            self.kubectl("delete", "deployment", "-n", NAMESPACE, "-l", selector, "--timeout=120s")
        bucket, prefix = _split_s3(location)
        s3 = self.s3()
        if _bucket_exists(s3, bucket):
            removed = _delete_prefix(s3, bucket, prefix)
            if removed:
                self.say(f"removed {removed} objects of the previous run under {location}")

    # ------------------------------------------------------------------------ storage

    def s3(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.env.s3_endpoint,
            aws_access_key_id=self.env.aws_access_key_id,
            aws_secret_access_key=self.env.aws_secret_access_key,
            region_name=self.env.aws_region,
        )

    def storage(self, location: str) -> None:
        bucket, _ = _split_s3(location)
        s3 = self.s3()
        if not _bucket_exists(s3, bucket):
            s3.create_bucket(Bucket=bucket)
            self.say(f"created bucket {bucket} on MinIO ({self.env.s3_endpoint})")
        # The engine pods read it: MinIO's address as a pod reaches it.
        env = self.env.env() | {"AWS_ENDPOINT_URL": self.env.pod_s3_endpoint}
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "type": "Opaque",
            "stringData": {k: env[k] for k in keys},
        }
        self.must(self.kubectl("apply", "-f", "-", stdin=json.dumps(secret)), "creating the Secret")
        self.say(f"Secret {SECRET} holds the MinIO credentials (spec.snapshots.credentialsSecret)")

    # ------------------------------------------------------------------------ the app

    def app(self, name: str) -> dict[str, Any]:
        found = self.get("streamapp", name, "-n", NAMESPACE)
        if found is None:
            raise DemoError(f"StreamApp {name} disappeared")
        return dict(found)

    def engines(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """(image, engine /status) of every engine pod of the app that answers."""
        pods = self.get("pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={name}")
        found = []
        for pod in (pods or {}).get("items", []):
            ip = pod.get("status", {}).get("podIP")
            image = pod["spec"]["containers"][0]["image"]
            status = _engine_status(ip) if ip else None
            if status is not None:
                found.append((image, status))
        return found

    def running(self, name: str, image: str) -> dict[str, Any] | None:
        """The app's status once it runs `image` and its engine is ready, else None."""
        status = self.app(name).get("status", {})
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions", [])
        )
        if status.get("phase") == "Running" and status.get("image") == image and ready:
            return dict(status)
        if status.get("phase") == "Failed":
            raise DemoError(f"{name} failed: {_conditions(status)}")
        return None

    def progress(self, name: str, image: str) -> dict[str, Any] | None:
        """The engine's /status once it has read records, else None."""
        for pod_image, status in self.engines(name):
            if pod_image == image and (status.get("records_in") or 0) > 0:
                return status
        return None


# ---------------------------------------------------------------------------- the story


def tell(env: ClusterEnv, say: Callable[[str], None], timeout_s: float) -> Report:
    report = Report()
    demo = Demo(env, say, timeout_s)
    v1 = yaml.safe_load(V1.read_text())
    v2 = yaml.safe_load(V2.read_text())
    name = v1["metadata"]["name"]
    location = v1["spec"]["snapshots"]["location"]
    report.app, report.v1_image, report.v2_image = name, v1["spec"]["image"], v2["spec"]["image"]

    say("\n== 1. The operator, installed with Helm")
    report.chart = demo.install_chart()

    say("\n== 2. Somewhere to keep savepoints")
    demo.reset(name, location)
    demo.storage(location)

    say(f"\n== 3. Version 1: kubectl apply -f {V1.relative_to(REPO)}")
    demo.must(demo.kubectl("apply", "-n", NAMESPACE, "-f", str(V1)), "kubectl apply v1")
    demo.wait(f"{name} v1 to run", lambda: demo.running(name, report.v1_image))
    first = demo.wait("v1 to count", lambda: demo.progress(name, report.v1_image))
    # Let it count for a while, so that the savepoint holds real state.
    later = demo.wait(
        "v1 to keep counting",
        lambda: _grown(demo.progress(name, report.v1_image), first, by=max(1, first["records_in"])),
    )
    say(f"v1 runs and counts: {later['records_in']:,} events read so far")

    say(f"\n== 4. Version 2: kubectl apply -f {V2.relative_to(REPO)}")
    before = {s["metadata"]["name"] for s in _savepoints(demo, name)}
    demo.must(demo.kubectl("apply", "-n", NAMESPACE, "-f", str(V2)), "kubectl apply v2")
    watch = _watch_upgrade(demo, name, report, before)
    say(f"v2 runs: it restored from {report.v2_restored_from}")

    _counts(report, watch)
    say("\n== 5. The counts, read from the savepoint and from a later checkpoint of v2")
    _state_counts(demo, name, report)
    report.ok = bool(
        report.restored_from_savepoint and report.counts_continued and report.counts_exact
    )
    return report


@dataclass
class _Watch:
    last_v1: dict[str, Any] | None = None
    last_v1_progress_at: float | None = None
    first_v2: dict[str, Any] | None = None
    first_v2_progress_at: float | None = None
    savepoint: dict[str, Any] | None = None


def _watch_upgrade(demo: Demo, name: str, report: Report, before: set[str]) -> _Watch:
    """Polls the engines and the Savepoints until v2 runs; records what it sees."""
    w = _Watch()
    deadline = time.monotonic() + demo.timeout_s
    announced: set[str] = set()
    while True:
        now = time.monotonic()
        for image, status in demo.engines(name):
            if image == report.v1_image:
                if w.last_v1 is None or status["records_in"] > w.last_v1["records_in"]:
                    w.last_v1, w.last_v1_progress_at = status, now
            elif image == report.v2_image and w.first_v2 is None and status.get("records_in"):
                w.first_v2, w.first_v2_progress_at = status, now
        for sp in _savepoints(demo, name):
            sp_name, phase = sp["metadata"]["name"], sp.get("status", {}).get("phase", "Pending")
            if sp_name in before or f"{sp_name}/{phase}" in announced:
                continue
            announced.add(f"{sp_name}/{phase}")
            demo.say(f"  savepoint {sp_name} ({sp['spec'].get('reason')}): {phase}")
            if phase == "Completed" and sp["spec"].get("reason") == "upgrade":
                w.savepoint = sp
        if (
            w.first_v2 is not None
            and w.savepoint is not None
            and demo.running(name, report.v2_image)
        ):
            break
        if now > deadline:
            status = demo.app(name).get("status", {})
            raise DemoError(
                f"the upgrade did not finish: phase {status.get('phase')}, {_conditions(status)}"
            )
        time.sleep(POLL_S)
    assert w.savepoint is not None and w.first_v2 is not None
    sp_status = w.savepoint.get("status", {})
    report.savepoint = {
        "name": w.savepoint["metadata"]["name"],
        "reason": w.savepoint["spec"].get("reason"),
        "path": sp_status.get("path"),
        "size_bytes": sp_status.get("sizeBytes"),
        "triggered_at": sp_status.get("triggeredAt"),
        "completed_at": sp_status.get("completedAt"),
        "sources": sp_status.get("sources") or {},
    }
    # The newest v2 status, for the counts after the upgrade.
    latest = demo.wait("v2 to keep counting", lambda: demo.progress(name, report.v2_image))
    report.v2_restored_from = latest.get("restored_from") or w.first_v2.get("restored_from")
    report.restored_from_savepoint = _same_location(
        report.v2_restored_from, report.savepoint["path"]
    )
    report.v2_records_in = latest.get("records_in")
    report.v2_sources = latest.get("sources") or {}
    if w.last_v1 is not None:
        report.v1_records_in = w.last_v1.get("records_in")
        report.v1_sources = w.last_v1.get("sources") or {}
    if w.last_v1_progress_at is not None and w.first_v2_progress_at is not None:
        report.paused_seconds_polled = round(w.first_v2_progress_at - w.last_v1_progress_at, 1)
    checked = (demo.app(name).get("status") or {}).get("lastPreflight") or {}
    if checked.get("startedAt") and checked.get("finishedAt"):
        took = _parse(checked["finishedAt"]) - _parse(checked["startedAt"])
        report.preflight_seconds = round(took.total_seconds(), 1)
        report.preflight = checked.get("message")
    running_since = latest.get("running_since") or w.first_v2.get("running_since")
    if report.savepoint["path"] and running_since:
        stopped = snapshots.read_manifest(report.savepoint["path"]).created
        started = datetime.fromisoformat(running_since)
        report.paused_seconds = round((started - stopped).total_seconds(), 1)
    return w


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _counts(report: Report, watch: _Watch) -> None:
    """Compares v2's source positions with the savepoint's."""
    saved, now = report.savepoint.get("sources") or {}, report.v2_sources
    if not saved:
        return
    continued, since = True, 0
    for uid, splits in saved.items():
        for split, position in splits.items():
            current = now.get(uid, {}).get(split)
            if not isinstance(position, int) or not isinstance(current, int):
                continue  # not a record count or offset (e.g. a file's byte offset)
            continued = continued and current >= position
            since += current - position
    report.counts_continued = continued
    report.records_since_savepoint = since


def _read_counts(uri: str, uid: str) -> tuple[dict[tuple[Any, ...], int], int]:
    """(count per key of the step `uid`, events read) in the snapshot at `uri`.

    A keyed count's state is, per key group, {"keys": [...], "values": [...]} (formats 2
    and 3; the reader turns format 3's typed columns into lists) or a list of
    [key, count] pairs (format 1; docs/snapshot-format.md); the events read are the sum
    of the source positions the snapshot recorded."""
    with SnapshotReader(uri) as reader:
        groups = range(reader.manifest.max_parallelism)
        counts = {
            tuple(key) if isinstance(key, list | tuple) else (key,): int(count)
            for _, block in reader.keyed_state(uid, groups)
            for key, count in (
                zip(block["keys"], block["values"], strict=True)
                if isinstance(block, dict)
                else block
            )
        }
        events = sum(
            int(position)
            for splits in reader.manifest.sources.values()
            for position in splits.values()
        )
    return counts, events


def _state_counts(demo: Demo, name: str, report: Report) -> None:
    saved_events = sum(
        int(p) for splits in report.savepoint["sources"].values() for p in splits.values()
    )

    def later_checkpoint() -> str | None:
        status = demo.progress(name, report.v2_image) or {}
        checkpoint = status.get("last_checkpoint") or {}
        location = checkpoint.get("location")
        if not location:
            return None
        positions = status.get("sources") or {}
        done = sum(int(p) for splits in positions.values() for p in splits.values())
        return str(location) if done > saved_events else None

    checkpoint = demo.wait("a checkpoint of v2", later_checkpoint)
    before, events_before = _read_counts(report.savepoint["path"], COUNTS_UID)
    after, events_after = _read_counts(checkpoint, COUNTS_UID)
    split, _ = _read_counts(checkpoint, SPLIT_UID)
    report.v2_checkpoint = checkpoint
    report.counted_at_savepoint, report.events_at_savepoint = sum(before.values()), events_before
    report.counted_after, report.events_after = sum(after.values()), events_after
    report.split_counted_after = sum(split.values())
    if before:
        top = max(before, key=lambda k: before[k])
        report.top_post = {"key": list(top), "before": before[top], "after": after.get(top, 0)}
    never_down = all(after.get(key, 0) >= n for key, n in before.items())
    report.counts_exact = (
        report.counted_at_savepoint == events_before
        and report.counted_after == events_after
        and report.split_counted_after == events_after - events_before
        and never_down
    )


# ---------------------------------------------------------------------------- helpers


def _namespace(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def _split_s3(location: str) -> tuple[str, str]:
    if not location.startswith("s3://"):
        raise DemoError(f"the demo keeps snapshots on MinIO; {location} is not an s3:// URI")
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    return bucket, prefix.rstrip("/") + "/"


def _bucket_exists(s3: Any, bucket: str) -> bool:
    return any(b["Name"] == bucket for b in s3.list_buckets().get("Buckets", []))


def _delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    removed = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            removed += len(keys)
    return removed


def _engine_status(ip: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{ip}:{CONTROL_PORT}/status", timeout=2) as resp:
            return dict(json.loads(resp.read()))
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _grown(status: dict[str, Any] | None, since: dict[str, Any], by: int) -> dict[str, Any] | None:
    if status and status.get("records_in", 0) >= since["records_in"] + by:
        return status
    return None


def _savepoints(demo: Demo, app: str) -> list[dict[str, Any]]:
    found = demo.get("savepoints.rewind.dev", "-n", NAMESPACE) or {"items": []}
    return [s for s in found["items"] if s.get("spec", {}).get("app") == app]


def _same_location(a: str | None, b: str | None) -> bool:
    return bool(a and b and a.rstrip("/") == b.rstrip("/"))


def _conditions(status: dict[str, Any]) -> str:
    parts = [
        f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
        for c in status.get("conditions", [])
    ]
    return "; ".join(parts) or "no conditions yet"


def _size(n: int | None) -> str:
    return "unknown size" if n is None else snapshots.human_size(n)


def _time(text: str | None) -> str:
    if not text:
        return "?"
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).strftime("%H:%M:%S")
    except ValueError:
        return text


# ---------------------------------------------------------------------------- the report


def summary(r: Report) -> str:
    sp = r.savepoint
    lines = ["", "== What happened", ""]
    lines.append(f"1. Helm {r.chart} the Rewind operator; it watches namespace {r.namespace}.")
    lines.append(
        f"2. StreamApp {r.app} ran version 1 ({r.v1_image}) and counted views and clicks per post."
    )
    v1_read = f"{r.v1_records_in:,}" if r.v1_records_in is not None else "an unknown number of"
    lines.append(
        f"3. You applied version 2 ({r.v2_image}). Before touching v1, the operator took "
        f"savepoint {sp.get('name')} (reason: {sp.get('reason')}), triggered at "
        f"{_time(sp.get('triggered_at'))} and completed at {_time(sp.get('completed_at'))}:"
    )
    lines.append(f"     path:  {sp.get('path')}")
    lines.append(f"     size:  {_size(sp.get('size_bytes'))}")
    for uid, splits in (sp.get("sources") or {}).items():
        lines.append(f"     source {uid}: positions {splits}")
    lines.append(f"   v1 had read {v1_read} events when it stopped with that savepoint.")
    if r.restored_from_savepoint:
        lines.append(
            "4. v2 started from that savepoint: its engine reports "
            f"restored_from = {r.v2_restored_from}."
        )
    else:
        lines.append(
            "4. v2 did NOT report restoring from that savepoint "
            f"(restored_from = {r.v2_restored_from})."
        )
    if r.counts_continued:
        lines.append(
            f"5. The counts went on where v1 stopped: every source of v2 is at or past the "
            f"savepoint's position, and v2 has read {r.records_since_savepoint:,} events since it "
            f"({r.v2_records_in:,} read by v2 itself: "
            + (
                "each exactly once)."
                if r.records_since_savepoint == r.v2_records_in
                else "see the positions above)."
            )
        )
    else:
        lines.append(
            f"5. The counts did NOT continue from the savepoint: v2's positions are {r.v2_sources}."
        )
    if r.counted_at_savepoint is not None:
        exact = "exactly" if r.counts_exact else "NOT exactly"
        lines.append(
            f"6. Counts before and after, read from the snapshots themselves: at the savepoint "
            f"the per-post counts add up to {r.counted_at_savepoint:,} for "
            f"{r.events_at_savepoint:,} events; at v2's checkpoint {r.v2_checkpoint} they add "
            f"up to {r.counted_after:,} for {r.events_after:,} events, and v2's new organic/paid "
            f"counts add up to {r.split_counted_after:,}, the events since the savepoint: "
            f"{exact} once each, nothing lost or doubled."
        )
        if r.top_post:
            post, kind = r.top_post["key"][0], r.top_post["key"][-1]
            lines.append(
                f"   The busiest post, number {post}, had {r.top_post['before']:,} {kind}s at "
                f"the savepoint and {r.top_post['after']:,} at v2's checkpoint."
            )
    if r.paused_seconds is not None:
        lines.append(
            f"7. The app was paused for {r.paused_seconds} s (target: under {PAUSE_TARGET_S} s):"
            " from v1 writing its upgrade savepoint to v2 reading again, by the engines' own"
            f" clocks (polling both engines, this script saw {r.paused_seconds_polled} s)."
        )
    if r.preflight_seconds is not None:
        lines.append(
            f"8. Before v1 was stopped, v2 proved in a preflight Job that it restores v1's state"
            f" ({r.preflight_seconds} s, target: under {PREFLIGHT_TARGET_S} s; v1 ran on"
            f" meanwhile): {r.preflight}"
        )
    lines += [
        "",
        "== Explore (the cluster keeps running)",
        "",
        '  eval "$(dev/cluster env)"     # KUBECONFIG, AWS_* for MinIO, REWIND_DEV_BIN',
        '  export PATH="$REWIND_DEV_BIN:$PWD/.venv/bin:$PATH"',
        f"  kubectl -n {r.namespace} get streamapps,savepoints",
        f"  kubectl -n {r.namespace} describe streamapp {r.app}",
        f"  rewind inspect {sp.get('path')}",
        f"  kubectl -n {OPERATOR_NAMESPACE} logs deployment/{RELEASE}",
        "",
        "  Stop the local cluster:   dev/cluster down",
        "  Run the story again:      make demo",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait for any one step"
    )
    args = parser.parse_args(argv)
    out = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    say("== 0. The local cluster (dev/cluster up; a first run builds Kubernetes, etcd, helm,")
    say("      MinIO and Kafka from source, which takes a while: see dev/.state/logs/)")
    report = Report()
    try:
        env = devcluster.ensure_up()
        os.environ.update(env.env())  # the snapshot reader finds MinIO through AWS_*
        say(f"the cluster is up; kubeconfig {env.kubeconfig}")
        report = tell(env, say, args.timeout)
        say(summary(report))
    except DemoError as exc:
        report.error = str(exc)
        say(f"\nThe demo stopped: {exc}")
    if args.json:
        print(json.dumps(asdict(report), sort_keys=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
