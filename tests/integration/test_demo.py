"""`make demo`'s script end to end on the local cluster, judged by its JSON report.

The demo installs the chart, runs post-analytics v1, upgrades it to v2 with
`kubectl apply`, and reports what it observed. This test checks the report's claims:
v2 restored from the upgrade savepoint, and the counts went on from it. Afterwards the
demo's apps and savepoints are removed, but its operator release stays installed until
the end of the session, as on a user's cluster after `make demo`: the chart's own tests
then run beside it (conftest runs this module first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from dev import demo, devcluster
from dev.devcluster import ClusterEnv

pytestmark = pytest.mark.integration


def _remove_apps(cluster: ClusterEnv) -> None:
    """The demo's apps and savepoints, deleted while its operator still serves them."""
    ns = demo.NAMESPACE
    for kind in ["streamapps.rewind.dev", "savepoints.rewind.dev"]:
        deleted = devcluster.kubectl(
            "delete", kind, "--all", "-n", ns, "--timeout=120s", env=cluster
        )
        if deleted.returncode != 0:
            names = devcluster.kubectl("get", kind, "-n", ns, "-o", "name", env=cluster)
            for name in names.stdout.split():
                devcluster.kubectl(
                    "patch", name, "-n", ns, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', env=cluster,
                )  # fmt: skip


@pytest.fixture(scope="session")
def demo_release(cluster: ClusterEnv) -> Iterator[None]:
    """Uninstalls the demo's release and namespaces at the end of the session."""
    yield
    _remove_apps(cluster)
    subprocess.run(
        [str(cluster.binary("helm")), "uninstall", demo.RELEASE, "-n", demo.OPERATOR_NAMESPACE,
         "--wait"],
        env={**os.environ, **cluster.env()}, capture_output=True, check=False,
    )  # fmt: skip
    for namespace in [demo.NAMESPACE, demo.OPERATOR_NAMESPACE]:
        devcluster.kubectl("delete", "namespace", namespace, "--wait=false", env=cluster)


@pytest.fixture
def report(cluster: ClusterEnv, demo_release: None) -> Iterator[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "dev.demo", "--json"],
        cwd=demo.REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **cluster.env()},
    )
    try:
        lines = result.stdout.strip().splitlines()
        assert lines, f"the demo printed no report; its story:\n{result.stderr[-4000:]}"
        yield {"exit": result.returncode, "story": result.stderr, **json.loads(lines[-1])}
    finally:
        _remove_apps(cluster)


def test_demo_upgrades_v1_to_v2_through_a_savepoint(report: dict[str, Any]) -> None:
    story = report["story"][-4000:]
    assert report["error"] is None, f"{report['error']}\n{story}"
    assert report["ok"] is True and report["exit"] == 0, story
    sp = report["savepoint"]
    assert sp["reason"] == "upgrade"
    assert sp["path"].startswith(f"s3://rewind/post-analytics/savepoints/{demo.NAMESPACE}/")
    assert sp["size_bytes"] > 0
    assert sp["sources"], "the savepoint recorded no source positions"
    # v2 restored from exactly that savepoint ...
    assert report["restored_from_savepoint"] is True
    assert report["v2_restored_from"].rstrip("/") == sp["path"].rstrip("/")
    # ... and the counts continued from it: every source position at or past the
    # savepoint's, none back at the start.
    assert report["counts_continued"] is True
    assert report["v2_records_in"] > 0
    assert report["records_since_savepoint"] > 0
    assert report["v1_records_in"] > 0
    # The counts themselves, read from the savepoint and from a later checkpoint of v2:
    # they add up to exactly the events read, and v2's new step to the events since.
    assert report["counts_exact"] is True
    assert report["counted_at_savepoint"] == report["events_at_savepoint"] > 0
    assert report["counted_after"] == report["events_after"] > report["events_at_savepoint"]
    assert report["split_counted_after"] == report["events_after"] - report["events_at_savepoint"]
    assert report["top_post"]["after"] >= report["top_post"]["before"] > 0
    # The pause, by the engines' own clocks. Not a speed limit (the machine is shared):
    # below the old version's 60 s termination grace period it shows that the stopped v1
    # exited on its first SIGTERM; the figure itself is reported next to its target.
    assert report["paused_seconds"] is not None and 0 <= report["paused_seconds"] < 60
    assert report["paused_seconds_polled"] is not None
    assert report["preflight_seconds"] is not None and report["preflight_seconds"] >= 0
    # What it checked depends on whether v1 had completed a checkpoint by then.
    assert report["preflight"], "the preflight's report is quoted"
    # The story is told in words, with the facts of the report.
    assert sp["name"] in report["story"] and "What happened" in report["story"]
