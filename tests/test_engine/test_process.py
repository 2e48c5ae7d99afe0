"""`rewind run` as a real process: crashes, stop-with-savepoint, upgrades, rescaling.

Every test runs the post-analytics example (examples/post_analytics) through the CLI
and compares committed file-sink output record for record. Timing only decides *where*
a job is interrupted; every assertion is on exact results.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rewind_engine.testing import free_port, read_jsonl

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "examples/post_analytics/v1/flow.py"
V2 = REPO / "examples/post_analytics/v2/flow.py"
V2B = REPO / "examples/post_analytics/v2b/flow.py"
V3 = REPO / "examples/post_analytics/v3-crash/flow.py"
REWIND = [sys.executable, "-m", "rewind_operator.cli"]  # the `rewind` console script


def start(flow: Path, tmp: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    with (tmp / f"run-{time.monotonic_ns()}.log").open("w") as log:  # the child keeps its fd
        return subprocess.Popen(
            [*REWIND, "run", str(flow), "--snapshots", f"file://{tmp}/snapshots", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=tmp,
        )


def run(flow: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REWIND, "run", str(flow), "--snapshots", f"file://{tmp}/snapshots", *args],
        capture_output=True,
        text=True,
        cwd=tmp,
        check=False,
    )


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REWIND, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def get(control: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{control}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def wait_running(control: str, proc: Any, min_records: int = 1) -> dict[str, Any]:
    while True:
        assert proc.poll() is None, "the job exited early"
        try:
            status = get(control, "/status")
            if status["records_out"] >= min_records:
                return status  # type: ignore[no-any-return]
        except OSError:
            pass
        time.sleep(0.05)


def finals(records: list[dict[str, Any]], *fields: str) -> dict[tuple[Any, ...], int]:
    out: dict[tuple[Any, ...], int] = {}
    for r in records:
        key = tuple(r[f] for f in fields)
        out[key] = max(out.get(key, 0), r["count"])
    return out


def as_multiset(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(r, sort_keys=True) for r in records)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, Any]]]:
    """The committed output of uninterrupted v1 runs, by total number of events."""
    out: dict[int, list[dict[str, Any]]] = {}
    for total in (30000, 20000):
        tmp = tmp_path_factory.mktemp(f"plain{total}")
        done = run(V1, tmp, "--", "--out", str(tmp / "out"), "--total", str(total))
        assert done.returncode == 0, done.stderr
        out[total] = read_jsonl(tmp / "out" / "counts")
        assert len(out[total]) == total
    return out


def test_sigkill_at_random_points_then_restore_latest_equals_an_uninterrupted_run(
    tmp_path: Path, uninterrupted: dict[int, list[dict[str, Any]]]
) -> None:
    rnd = random.Random(20240607)
    args = ["--restore", "latest", "--checkpoint-interval", "0.2", "--parallelism", "2"]
    flow_args = ["--", "--out", str(tmp_path / "out"), "--total", "20000", "--rate", "4000"]
    for _ in range(4):
        proc = start(V1, tmp_path, *args, *flow_args)
        time.sleep(rnd.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = start(V1, tmp_path, *args, *flow_args)
    assert proc.wait() == 0
    got = read_jsonl(tmp_path / "out" / "counts")
    assert as_multiset(got) == as_multiset(uninterrupted[20000])  # no loss, no duplicate


def stop_v1(tmp: Path, *run_args: str, total: int = 30000) -> tuple[str, int]:
    """Run v1, stop it with a savepoint; returns (URI, events consumed before the stop).

    The run has no end (no --total: the same events, never finished), so the stop can't
    race the end of input; later runs restore with --total to finish."""
    control = f"127.0.0.1:{free_port()}"
    proc = start(
        V1,
        tmp,
        "--control",
        control,
        "--checkpoint-interval",
        "0.3",
        *run_args,
        "--",
        "--out",
        str(tmp / "out-v1"),
        "--rate",
        "1000",
    )
    wait_running(control, proc, 500)
    stopped = cli("stop", "--control", control)
    assert stopped.returncode == 0, stopped.stderr
    uri = stopped.stdout.strip().splitlines()[-1]
    assert uri.startswith("file://") and "/savepoints/sp-" in uri
    assert proc.wait() == 0
    info = json.loads(cli("inspect", uri, "--json").stdout)
    consumed = sum(info["sources"]["post-events"].values())
    assert 0 < consumed < total
    return uri, consumed


def test_post_analytics_story_v1_to_v2(
    tmp_path: Path, uninterrupted: dict[int, list[dict[str, Any]]]
) -> None:
    uri, consumed = stop_v1(tmp_path, "--parallelism", "2")
    v1_out = read_jsonl(tmp_path / "out-v1" / "counts")
    assert len(v1_out) == consumed
    # v2 restores v1's savepoint: old counts continue, the new step starts empty.
    done = run(
        V2, tmp_path, "--restore", uri, "--", "--out", str(tmp_path / "out-v2"), "--total", "30000"
    )
    assert done.returncode == 0, done.stderr
    counts = v1_out + read_jsonl(tmp_path / "out-v2" / "counts")
    assert as_multiset(counts) == as_multiset(uninterrupted[30000])
    organic_paid = read_jsonl(tmp_path / "out-v2" / "organic_paid")
    assert len(organic_paid) == 30000 - consumed
    assert sum(finals(organic_paid, "post_id", "kind", "paid").values()) == 30000 - consumed
    # ...and the new counts started at 1: every key's first update is a 1.
    firsts: dict[tuple[Any, ...], int] = {}
    for r in organic_paid:
        firsts.setdefault((r["post_id"], r["kind"], r["paid"]), r["count"])
    assert set(firsts.values()) == {1}


def test_restoring_into_a_flow_without_a_step_fails_naming_its_uid(tmp_path: Path) -> None:
    uri, _ = stop_v1(tmp_path, total=30000)
    dropped = tmp_path / "dropped.py"
    dropped.write_text(
        V1.read_text()
        .replace("str(Path(__file__).resolve().parent.parent)", repr(str(V1.parent.parent)))
        .replace('.count("views-and-clicks")', '.map("no-count", lambda e: ((e, e), 0))')
    )
    flow_args = ["--", "--out", str(tmp_path / "out-dropped"), "--total", "30000"]
    refused = run(dropped, tmp_path, "--restore", uri, *flow_args)
    assert refused.returncode == 1
    assert "views-and-clicks" in refused.stderr
    assert "--allow-non-restored-state" in refused.stderr
    allowed = run(dropped, tmp_path, "--restore", uri, "--allow-non-restored-state", *flow_args)
    assert allowed.returncode == 0, allowed.stderr


def test_savepoint_at_parallelism_2_restores_at_1_and_3(
    tmp_path: Path, uninterrupted: dict[int, list[dict[str, Any]]]
) -> None:
    uri, _ = stop_v1(tmp_path, "--parallelism", "2")
    before = read_jsonl(tmp_path / "out-v1" / "counts")
    expected = finals(uninterrupted[30000], "post_id", "kind")
    for p in ("1", "3"):
        out = tmp_path / f"out-p{p}"
        done = run(
            V1,
            tmp_path,
            "--restore",
            uri,
            "--parallelism",
            p,
            "--",
            "--out",
            str(out),
            "--total",
            "30000",
        )
        assert done.returncode == 0, done.stderr
        after = read_jsonl(out / "counts")
        assert finals(before + after, "post_id", "kind") == expected, f"parallelism {p}"
        assert as_multiset(before + after) == as_multiset(uninterrupted[30000])


def test_a_savepoint_to_an_unreachable_s3_endpoint_fails_and_the_job_keeps_running(
    tmp_path: Path,
) -> None:
    control = f"127.0.0.1:{free_port()}"
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "2",
    }
    proc = start(
        V1,
        tmp_path,
        "--control",
        control,
        "--",
        "--out",
        str(tmp_path / "o"),
        "--rate",
        "500",
        env=env,
    )
    try:
        before = wait_running(control, proc, 1)["records_in"]
        failed = cli("savepoint", "--control", control, "--target", "s3://no-bucket/sp", env=env)
        assert failed.returncode == 1
        assert "savepoint" in failed.stderr and "failed" in failed.stderr
        assert "s3://no-bucket/sp" in failed.stderr
        status = get(control, "/status")
        assert status["state"] == "RUNNING"
        while get(control, "/status")["records_in"] <= before:
            assert proc.poll() is None
            time.sleep(0.05)
        ok = cli("savepoint", "--control", control, "--target", f"file://{tmp_path}/sp-ok")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip().splitlines()[-1] == f"file://{tmp_path}/sp-ok"
        assert (tmp_path / "sp-ok" / "manifest.json").exists()
        metrics = urllib.request.urlopen(f"http://{control}/metrics", timeout=10).read().decode()
        assert 'rewind_snapshots_failed_total{kind="savepoint"} 1.0' in metrics
        assert 'rewind_step_records_in_total{step="views-and-clicks"}' in metrics
    finally:
        cancelled = cli("cancel", "--control", control)
        assert cancelled.returncode == 0
        assert proc.wait() == 0


@pytest.fixture
def checkpoint(tmp_path: Path) -> str:
    done = run(
        V1,
        tmp_path,
        "--checkpoint-interval",
        "0",
        "--",
        "--out",
        str(tmp_path / "o"),
        "--total",
        "3000",
    )
    assert done.returncode == 0, done.stderr
    found = sorted((tmp_path / "snapshots" / "checkpoints").glob("*/chk-*/manifest.json"))
    assert found
    return str(found[-1].parent)


def restore_error(tmp: Path, uri: str) -> str:
    done = run(V1, tmp, "--restore", uri, "--", "--out", str(tmp / "o2"), "--total", "3000")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr.split("error:")[-1]
    return done.stderr.split("error:")[-1].strip()


def test_bad_snapshots_give_one_clear_error(tmp_path: Path, checkpoint: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy)
    data = sorted((copy / "data").rglob("*.msgpack"))[0]
    data.write_bytes(data.read_bytes()[:-3])
    msg = restore_error(tmp_path, f"file://{copy}")
    assert "truncated" in msg and data.name in msg

    newer = tmp_path / "newer"
    shutil.copytree(checkpoint, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["format_version"] = 99
    (newer / "manifest.json").write_text(json.dumps(manifest))
    msg = restore_error(tmp_path, f"file://{newer}")
    assert "99" in msg and str(newer) in msg

    missing = tmp_path / "missing"
    shutil.copytree(checkpoint, missing)
    (missing / "manifest.json").unlink()
    msg = restore_error(tmp_path, f"file://{missing}")
    assert "manifest.json missing" in msg and str(missing) in msg

    msg = restore_error(tmp_path, "ftp://somewhere/sp")
    assert "unsupported scheme" in msg


def test_a_copied_savepoint_restores_from_its_new_place(
    tmp_path: Path, uninterrupted: dict[int, list[dict[str, Any]]]
) -> None:
    uri, _ = stop_v1(tmp_path)
    moved = tmp_path / "elsewhere" / "sp"
    shutil.copytree(uri.removeprefix("file://"), moved)
    shutil.rmtree(uri.removeprefix("file://"))
    done = run(
        V1,
        tmp_path,
        "--restore",
        f"file://{moved}",
        "--",
        "--out",
        str(tmp_path / "o2"),
        "--total",
        "30000",
    )
    assert done.returncode == 0, done.stderr
    got = read_jsonl(tmp_path / "out-v1" / "counts") + read_jsonl(tmp_path / "o2" / "counts")
    assert as_multiset(got) == as_multiset(uninterrupted[30000])


def test_v2b_restores_v1_and_v3_fails_at_start(tmp_path: Path) -> None:
    uri, _consumed = stop_v1(tmp_path, total=30000)
    done = run(
        V2B, tmp_path, "--restore", uri, "--", "--out", str(tmp_path / "b"), "--total", "30000"
    )
    assert done.returncode == 0, done.stderr
    windows = read_jsonl(tmp_path / "b" / "paid_clicks_per_minute")
    assert windows and all(w["end"] - w["start"] == 60_000 for w in windows)
    crashed = run(V3, tmp_path, "--restore", uri)
    assert crashed.returncode == 1
    assert "crashes at start" in crashed.stderr
