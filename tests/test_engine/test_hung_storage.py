"""Every S3 request is bounded (connect and read timeouts, attempts), and a store that
accepts connections but never answers fails with the endpoint named; a failed run leaves
its reason in the termination message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rewind_engine import snapshots, termination
from rewind_engine.snapshots import StorageError, open_storage
from rewind_engine.snapshots.s3_storage import S3Timeouts, s3_client

REPO = Path(__file__).resolve().parents[2]
REWIND = [sys.executable, "-m", "rewind_operator.cli"]


def test_timeouts_default_and_come_from_the_settings() -> None:
    assert S3Timeouts.from_settings({}) == S3Timeouts(connect_s=5.0, read_s=30.0, max_attempts=3)
    assert S3Timeouts.from_settings(
        {
            "REWIND_S3_CONNECT_TIMEOUT_SECONDS": "1.5",
            "REWIND_S3_READ_TIMEOUT_SECONDS": "7",
            "AWS_MAX_ATTEMPTS": "1",
        }
    ) == S3Timeouts(connect_s=1.5, read_s=7.0, max_attempts=1)


@pytest.mark.parametrize(
    "settings",
    [
        {"REWIND_S3_READ_TIMEOUT_SECONDS": "0"},
        {"REWIND_S3_CONNECT_TIMEOUT_SECONDS": "soon"},
        {"AWS_MAX_ATTEMPTS": "2.5"},
    ],
)
def test_bad_timeouts_name_the_variable(settings: dict[str, str]) -> None:
    [name] = settings
    with pytest.raises(StorageError, match=name):
        S3Timeouts.from_settings(settings)


def test_the_client_is_built_with_the_timeouts_in_effect() -> None:
    base = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_REGION": "us-east-1"}
    with snapshots.s3_settings({**base, "REWIND_S3_READ_TIMEOUT_SECONDS": "4"}):
        config = s3_client().meta.config
    assert (config.connect_timeout, config.read_timeout) == (5.0, 4.0)
    assert config.retries == {"total_max_attempts": 3, "mode": "standard"}
    with snapshots.s3_settings({**base, "AWS_MAX_ATTEMPTS": "1"}):
        other = s3_client().meta.config
    assert other.retries == {"total_max_attempts": 1, "mode": "standard"}, "another client"


def test_a_store_that_never_answers_fails_by_the_read_timeout_naming_it() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # what a paused MinIO looks like: connections accepted, no answer
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        settings = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_REGION": "us-east-1",
            "REWIND_S3_READ_TIMEOUT_SECONDS": "0.2",
            "AWS_MAX_ATTEMPTS": "1",
        }
        with snapshots.s3_settings(settings):
            storage = open_storage("s3://bucket/prefix")
            with pytest.raises(StorageError, match=f"cannot reach the S3 endpoint {endpoint}"):
                storage.get("manifest.json")


# --------------------------------------------------------------------------- last words


def test_the_default_path_is_written_only_when_the_runtime_made_it(tmp_path: Path) -> None:
    if Path(termination.DEFAULT_PATH).is_file():  # under a kubelet: the file is ours
        assert termination.target({}) == Path(termination.DEFAULT_PATH)
    else:
        assert termination.target({}) is None
    assert termination.target({"REWIND_TERMINATION_LOG": ""}) is None
    assert termination.target({"REWIND_TERMINATION_LOG": str(tmp_path / "no" / "f")}) is None
    chosen = tmp_path / "termination-log"
    env = {"REWIND_TERMINATION_LOG": str(chosen)}
    assert termination.record("  ValueError: bad  \n", env) == chosen
    assert chosen.read_text() == "ValueError: bad"


def test_long_messages_are_cut_to_the_kubelets_limit(tmp_path: Path) -> None:
    chosen = tmp_path / "termination-log"
    termination.record("é" * 5000, {"REWIND_TERMINATION_LOG": str(chosen)})
    data = chosen.read_bytes()
    assert len(data) <= termination.LIMIT and data.decode().endswith("...")
    assert termination.describe(RuntimeError("boom")) == "RuntimeError: boom"
    assert termination.describe(KeyError()) == "KeyError"


@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        (
            REPO / "examples/post_analytics/v3-crash/flow.py",
            "cannot start the job: RuntimeError: step 'counts-out' could not open:"
            " RuntimeError: post_analytics v3 crashes at start",
        ),
        (REPO / "examples/no-such-flow.py", "cannot load flow"),
    ],
)
def test_a_failed_run_leaves_its_reason_in_the_termination_message(
    tmp_path: Path, flow: Path, expected: str
) -> None:
    log = tmp_path / "termination-log"
    done = subprocess.run(
        [*REWIND, "run", str(flow), "--snapshots", f"file://{tmp_path}/snapshots"],
        env={**os.environ, "REWIND_TERMINATION_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert log.read_text().startswith(expected), done.stderr
