"""`rewind run --preflight`: the restore of a real start, checked without running the job.

Each test runs the post-analytics example through the CLI as a real process: v1 runs to
its end (a bounded run ends with a final checkpoint), then a preflight of some new code
is asked whether it restores from v1's newest snapshot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rewind_engine import snapshots
from rewind_engine.testing import free_port

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "examples/post_analytics/v1/flow.py"
V2 = REPO / "examples/post_analytics/v2/flow.py"
REWIND = [sys.executable, "-m", "rewind_operator.cli"]
APP = ["--app", "tests/post-analytics"]


def rewind_run(tmp: Path, flow: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REWIND, "run", str(flow), "--snapshots", f"file://{tmp}/snapshots", *APP, *args],
        capture_output=True,
        text=True,
        cwd=tmp,
        check=False,
    )


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def v1_ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose snapshots hold v1's final checkpoint."""
    tmp = tmp_path_factory.mktemp("v1")
    done = rewind_run(tmp, V1, "--", "--out", str(tmp / "out-v1"), "--total", "3000")
    assert done.returncode == 0, done.stderr
    return tmp


def without_a_count(tmp: Path) -> Path:
    """v1 with its stateful count replaced by a stateless map (uid views-and-clicks gone)."""
    flow = tmp / "dropped.py"
    flow.write_text(
        V1.read_text()
        .replace("str(Path(__file__).resolve().parent.parent)", repr(str(V1.parent.parent)))
        .replace('.count("views-and-clicks")', '.map("no-count", lambda e: ((e, e), 0))')
    )
    return flow


def test_a_compatible_version_passes_and_nothing_runs_or_is_written(v1_ran: Path) -> None:
    before = tree(v1_ran)
    out = v1_ran / "out-v2"
    done = rewind_run(
        v1_ran, V2, "--restore", "latest", "--parallelism", "3", "--preflight", "--",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["passed"] is True
    newest = snapshots.latest(f"file://{v1_ran}/snapshots", app="tests/post-analytics")
    assert report["snapshot"] == newest
    assert "views-and-clicks" in report["restored"]
    assert report["dropped"] == []
    assert tree(v1_ran) == before, "a preflight wrote files (output or snapshots)"
    assert not out.exists()


def test_a_version_without_a_stateful_step_fails_naming_the_uid_and_the_flag(
    v1_ran: Path, tmp_path: Path
) -> None:
    flow = without_a_count(tmp_path)
    refused = rewind_run(v1_ran, flow, "--restore", "latest", "--preflight")
    assert refused.returncode == 1
    assert "preflight failed" in refused.stderr
    assert "views-and-clicks" in refused.stderr
    assert "--allow-non-restored-state" in refused.stderr
    allowed = rewind_run(
        v1_ran, flow, "--restore", "latest", "--allow-non-restored-state", "--preflight"
    )
    assert allowed.returncode == 0, allowed.stderr
    report = json.loads(allowed.stdout.strip().splitlines()[-1])
    assert report["dropped"] == ["views-and-clicks"]


def test_a_corrupt_state_file_fails_naming_the_file(v1_ran: Path, tmp_path: Path) -> None:
    newest = snapshots.latest(f"file://{v1_ran}/snapshots", app="tests/post-analytics")
    assert newest is not None
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", newest.removeprefix("file://"), str(copy)], check=True)
    data = sorted(p for p in copy.rglob("*") if p.is_file() and p.name != "_manifest.json")
    victim = max(data, key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    refused = rewind_run(v1_ran, V2, "--restore", f"file://{copy}", "--preflight")
    assert refused.returncode == 1
    assert victim.name in refused.stderr, refused.stderr


def test_nothing_to_restore_passes(tmp_path: Path) -> None:
    done = rewind_run(tmp_path, V2, "--restore", "latest", "--preflight")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["snapshot"] is None
    assert "starts empty" in report["summary"]


def test_storage_that_does_not_answer_is_no_verdict_exit_3(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    done = subprocess.run(
        [
            *REWIND,
            "run",
            str(V2),
            "--snapshots",
            "s3://nowhere/app",
            *APP,
            "--restore",
            "latest",
            "--preflight",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "preflight could not read the snapshot" in done.stderr
