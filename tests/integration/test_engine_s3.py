"""The engine with s3:// snapshots on the real MinIO from dev/: checkpoints, a
stop-with-savepoint to s3://, a restore from it (into v2, at another parallelism),
`rewind inspect` of the s3:// savepoint, and `--restore latest` from s3://."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rewind_engine.testing import read_jsonl

from dev.devcluster import ClusterEnv

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "examples/post_analytics/v1/flow.py"
V2 = REPO / "examples/post_analytics/v2/flow.py"
REWIND = [sys.executable, "-m", "rewind_operator.cli"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(control: str) -> Any:
    with urllib.request.urlopen(f"http://{control}/status", timeout=10) as resp:
        return json.loads(resp.read())


def _stop_with_savepoint(
    proc: subprocess.Popen[bytes], control: str, location: str, env: dict[str, str], log: Path
) -> str:
    """Wait for the job's first checkpoint, `rewind stop` it; the savepoint's URI."""
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            status = _status(control)
            if status["last_checkpoint"] and status["records_out"] > 500:
                assert status["last_checkpoint"]["location"].startswith(location)
                break
        except OSError:
            pass
        time.sleep(0.1)
    stopped = subprocess.run(
        [*REWIND, "stop", "--control", control],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert stopped.returncode == 0, f"{stopped.stderr}\n{log.read_text()}"
    uri = stopped.stdout.strip().splitlines()[-1]
    assert uri.startswith(f"{location}/savepoints/sp-")
    return uri


def test_savepoint_to_minio_restores_into_v2(
    cluster: ClusterEnv, s3_bucket: str, tmp_path: Path
) -> None:
    env = {**os.environ, **cluster.env()}
    location = f"s3://{s3_bucket}/rewind"
    control = f"127.0.0.1:{_port()}"
    out = tmp_path / "out"
    # 500 events/s: the job is still running (20 s of input) when it is stopped, after
    # its first checkpoint, however slow this machine is today.
    with (tmp_path / "v1.log").open("w") as log:
        proc = subprocess.Popen(
            [*REWIND, "run", str(V1), "--snapshots", location, "--control", control,
             "--checkpoint-interval", "0.5", "--parallelism", "2",
             "--", "--out", str(out), "--total", "10000", "--rate", "500"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        uri = _stop_with_savepoint(proc, control, location, env, tmp_path / "v1.log")
    except BaseException:
        proc.kill()  # a failed assertion must not leave the job running
        raise
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0, (tmp_path / "v1.log").read_text()
    inspected = subprocess.run(
        [*REWIND, "inspect", uri, "--json", "--verify"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    consumed = sum(info["sources"]["post-events"].values())
    assert "views-and-clicks" in json.dumps(info)
    restored = subprocess.run(
        [*REWIND, "run", str(V2), "--snapshots", location, "--restore", uri,
         "--parallelism", "3", "--", "--out", str(out), "--total", "10000"],
        check=False, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    counts = read_jsonl(out / "counts")
    assert len(counts) == 10000  # one update per event across v1 and v2: none lost or doubled
    assert len(read_jsonl(out / "organic_paid")) == 10000 - consumed
    # --restore latest finds v2's final checkpoint on s3:// (all input consumed): no output.
    again = subprocess.run(
        [*REWIND, "run", str(V2), "--snapshots", location, "--restore", "latest",
         "--", "--out", str(tmp_path / "again"), "--total", "10000"],
        check=False, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    picked = [json.loads(line) for line in again.stderr.splitlines() if "restore_latest" in line]
    assert picked and picked[0]["uri"].startswith(f"{location}/checkpoints/")
    assert read_jsonl(tmp_path / "again" / "counts") == []
