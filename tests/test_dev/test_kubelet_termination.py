"""Termination messages: the file a container wrote, else (FallbackToLogsOnError, on a
failure) its log's tail, as the real kubelet fills `state.terminated.message`."""

import os
import sys
import time
from pathlib import Path

from dev.kubelet.runtime import ContainerProcess, LaunchSpec, Mount, namespaces_supported
from dev.kubelet.termination import (
    FALLBACK_BYTES,
    FALLBACK_LINES,
    FILE_LIMIT,
    log_tail,
    message_file,
    termination_message,
)


def test_the_file_wins_and_is_cut_at_the_kubelets_limit(tmp_path: Path) -> None:
    msg, log = tmp_path / "msg", tmp_path / "c.log"
    log.write_text("a log line\n")
    msg.write_text("RuntimeError: boom")
    assert termination_message(msg, log, "FallbackToLogsOnError", 1) == "RuntimeError: boom"
    assert termination_message(msg, log, "File", 0) == "RuntimeError: boom"
    msg.write_text("x" * (FILE_LIMIT + 100))
    assert termination_message(msg, log, "File", 1) == "x" * FILE_LIMIT


def test_an_empty_file_falls_back_to_the_log_only_on_failure_and_when_asked(
    tmp_path: Path,
) -> None:
    msg, log = tmp_path / "msg", tmp_path / "c.log"
    msg.write_text("  \n")
    log.write_text("starting\nTraceback...\nValueError: bad\n")
    assert termination_message(msg, log, "FallbackToLogsOnError", 1) == log.read_text()
    assert termination_message(msg, log, "FallbackToLogsOnError", 0) is None
    assert termination_message(msg, log, "File", 1) is None
    assert termination_message(None, log, None, 1) is None
    missing, no_log = tmp_path / "missing", tmp_path / "no.log"
    assert termination_message(missing, no_log, "FallbackToLogsOnError", 1) is None


def test_the_log_tail_keeps_the_last_lines_and_bytes(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    tail = log_tail(log)
    assert tail.splitlines() == [f"line {i}" for i in range(200 - FALLBACK_LINES, 200)]
    log.write_text("y" * 5000 + "\nlast\n")
    tail = log_tail(log)
    assert len(tail.encode()) == FALLBACK_BYTES and tail.endswith("y\nlast\n")


def test_a_container_writes_its_message_through_the_bound_file(tmp_path: Path) -> None:
    """Through the shim: the kubelet's per-instance file bound at the container's path."""
    run = tmp_path / "run"
    run.mkdir()
    host_file = message_file(run, "rewind://abc123")
    host_file.write_bytes(b"")
    isolate = namespaces_supported()
    seen = tmp_path / "ctr" / "termination-log"  # where the container writes
    script = (
        "import sys; print('dying', flush=True); "
        f"open({str(seen if isolate else host_file)!r}, 'w').write('KeyError: the job broke'); "
        "sys.exit(3)"
    )
    spec = LaunchSpec(
        container_id="rewind://abc123", argv=[sys.executable, "-c", script],
        env={"PATH": os.environ["PATH"]}, cwd=str(tmp_path), log_path=tmp_path / "c.log",
        run_dir=run, mounts=(Mount(str(host_file), str(seen)),) if isolate else (),
        isolate=isolate,
    )  # fmt: skip
    proc = ContainerProcess.spawn(spec)
    while (status := proc.poll()) is None:
        time.sleep(0.05)
    assert status.exit_code == 3
    message = termination_message(host_file, tmp_path / "c.log", "FallbackToLogsOnError", 3)
    assert message == "KeyError: the job broke"
    if isolate:  # the container wrote through the bind mount: the file at its path is empty
        assert seen.read_text() == ""
