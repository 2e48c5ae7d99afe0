"""`rewind state read` gives the counts the flow produced: on post-analytics v1's final
checkpoint, the (post, kind) -> count rows equal the last count the flow wrote for each
key, and add up to the events read."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from rewind_engine import snapshots
from rewind_engine.testing import read_jsonl

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "examples/post_analytics/v1/flow.py"
REWIND = [sys.executable, "-m", "rewind_operator.cli"]
TOTAL = 3000


def rewind(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REWIND, *args], capture_output=True, text=True, check=False)


def test_state_read_gives_the_counts_the_flow_wrote(tmp_path: Path) -> None:
    location = f"file://{tmp_path}/snap"
    done = rewind(
        "run", str(V1), "--snapshots", location, "--control", "none", "--parallelism", "2",
        "--", "--out", str(tmp_path / "out"), "--total", str(TOTAL),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    final = snapshots.latest(location)
    assert final is not None
    last: dict[tuple[int, str], int] = {}
    for row in read_jsonl(tmp_path / "out" / "counts"):
        last[(row["post_id"], row["kind"])] = row["count"]

    read = rewind("state", "read", final, "--uid", "views-and-clicks")
    assert read.returncode == 0, read.stderr
    rows = [json.loads(line) for line in read.stdout.splitlines()]
    counts = {tuple(r["key"]): r["value"] for r in rows}
    assert counts == last
    assert sum(counts.values()) == TOTAL

    as_csv = rewind("state", "read", final, "--uid", "views-and-clicks", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert sum(int(r["value"]) for r in table) == TOTAL

    positions = rewind("state", "read", final, "--uid", "post-events")
    splits = [json.loads(line) for line in positions.stdout.splitlines()]
    assert {s["split"] for s in splits} and all("position" in s for s in splits)

    wrong = rewind("state", "read", final, "--uid", "no-such-step")
    assert wrong.returncode == 1
    assert "views-and-clicks" in wrong.stderr and "no-such-step" in wrong.stderr
