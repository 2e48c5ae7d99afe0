"""`rewind state write`: read -> write -> restore gives the same job results, and a
savepoint written with `--drop` restores into a flow without those steps with no
`--allow-non-restored-state`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from rewind_engine import snapshots
from rewind_engine.testing import free_port, read_jsonl

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "examples/post_analytics/v1/flow.py"
REWIND = [sys.executable, "-m", "rewind_operator.cli"]

ONLY_EVENTS = f"""
import sys
import time
sys.path.insert(0, {str(REPO / "examples/post_analytics")!r})
from post_events import WATERMARKS, Params, output, post_events_source
from rewind_engine import Dataflow


def flow(argv):
    params = Params.parse(argv)
    f = Dataflow("events_only")
    events = f.source("post-events", post_events_source(params), watermarks=WATERMARKS)
    events.sink("events-out", output(params, "events"))
    return f
"""


def rewind(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REWIND, *args], capture_output=True, text=True, check=False)


def run_v1(tmp: Path, name: str, *args: str, total: int) -> list[dict[str, object]]:
    done = rewind(
        "run", str(V1), "--snapshots", f"file://{tmp}/{name}", "--control", "none", *args,
        "--", "--out", str(tmp / name / "out"), "--total", str(total),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return read_jsonl(tmp / name / "out" / "counts")


def rows(uri: str, uid: str) -> Counter[str]:
    read = rewind("state", "read", uri, "--uid", uid)
    assert read.returncode == 0, read.stderr
    return Counter(read.stdout.splitlines())


def savepoint_mid_stream(tmp: Path) -> str:
    """v1 unbounded, stopped with a savepoint after some output: its URI."""
    control = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [*REWIND, "run", str(V1), "--snapshots", f"file://{tmp}/first", "--control", control,
         "--", "--out", str(tmp / "first-out"), "--rate", "2000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while True:
            done = rewind("status", "--control", control)
            if done.returncode == 0 and json.loads(done.stdout)["records_out"] > 300:
                break
            assert proc.poll() is None
            time.sleep(0.1)
        stopped = rewind("stop", "--control", control)
        assert stopped.returncode == 0, stopped.stderr
        assert proc.wait() == 0
        return stopped.stdout.strip().splitlines()[-1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_read_write_restore_gives_the_same_results(tmp_path: Path) -> None:
    src = savepoint_mid_stream(tmp_path)
    dst = f"file://{tmp_path}/rewritten"
    wrote = rewind("state", "write", src, "--to", dst)
    assert wrote.returncode == 0, wrote.stderr
    assert wrote.stdout.strip().splitlines()[-1] == dst
    verified = json.loads(rewind("inspect", dst, "--verify", "--json").stdout)
    assert verified["kind"] == "savepoint" and verified["meta"]["written_from"] == src
    for uid in ("views-and-clicks", "post-events"):
        assert rows(dst, uid) == rows(src, uid)
    # Bounded continuations from the two savepoints: the same output, record for record.
    from_src = run_v1(tmp_path, "a", "--restore", src, total=20000)
    from_dst = run_v1(tmp_path, "b", "--restore", dst, total=20000)
    assert from_src  # the restored runs did continue
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert Counter(map(key, from_dst)) == Counter(map(key, from_src))


def test_a_dropped_step_needs_no_allow_non_restored_state(tmp_path: Path) -> None:
    run_v1(tmp_path, "first", total=1000)
    src = snapshots.latest(f"file://{tmp_path}/first")
    assert src is not None
    flow = tmp_path / "events_only.py"
    flow.write_text(ONLY_EVENTS)
    args = ["--control", "none", "--snapshots", f"file://{tmp_path}/e"]
    refused = rewind("run", str(flow), *args, "--restore", src, "--", "--total", "2000",
                     "--out", str(tmp_path / "out0"))  # fmt: skip
    assert refused.returncode == 1 and "cannot restore from" in refused.stderr
    dst = f"file://{tmp_path}/dropped"
    uids = [u for u in snapshots.SnapshotReader(src).uids() if u != "post-events"]
    drops = [a for u in uids for a in ("--drop", u)]
    wrote = rewind("state", "write", src, "--to", dst, *drops)
    assert wrote.returncode == 0, wrote.stderr
    assert snapshots.SnapshotReader(dst).uids() == ["post-events"]
    done = rewind("run", str(flow), *args, "--restore", dst, "--", "--total", "2000",
                  "--out", str(tmp_path / "out1"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    unknown = rewind("state", "write", src, "--to", f"file://{tmp_path}/x", "--drop", "nope")
    assert unknown.returncode == 1 and "no state for uid(s) nope" in unknown.stderr
