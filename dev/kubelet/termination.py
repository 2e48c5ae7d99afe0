"""Termination messages, as the kubelet puts them into a container's status.

Flows through: the file a container may write at its ``terminationMessagePath`` (the
kubelet binds a fresh file of the pod's ``run/`` folder there for each instance) and the
container's log; out comes ``state.terminated.message`` (``lastState`` after a restart).

The real kubelet's rules (``kuberuntime_container.go``), which this follows:

1. the file's content, at most ``FILE_LIMIT`` bytes, is the message;
2. when the file says nothing, the policy is ``FallbackToLogsOnError`` and the container
   failed (exit code not 0), the message is the log's last ``FALLBACK_LINES`` lines, at
   most ``FALLBACK_BYTES`` bytes (the end is kept);
3. otherwise there is no message.

Pure apart from reading the two files; unit-tested in tests/test_dev.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_PATH = "/dev/termination-log"
"""What the API server defaults ``terminationMessagePath`` to."""
FILE_LIMIT = 4096
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048
_TAIL_READ = 64 * 1024  # enough for 80 lines of any sane log, without reading it all


def message_file(run_dir: Path, container_id: str) -> Path:
    """The host file bound at one container instance's ``terminationMessagePath``."""
    return run_dir / f"{container_id.rpartition('/')[2]}.termination-log"


def _read_head(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def log_tail(log: Path, lines: int = FALLBACK_LINES, limit: int = FALLBACK_BYTES) -> str:
    """The last ``lines`` lines of ``log``, at most ``limit`` bytes of their end."""
    try:
        with log.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _TAIL_READ))
            data = f.read()
    except OSError:
        return ""
    kept = b"".join(data.splitlines(keepends=True)[-lines:])
    return kept[-limit:].decode(errors="replace")


def termination_message(
    message_path: Path | None, log: Path | None, policy: str | None, exit_code: int
) -> str | None:
    """The message for a container instance that ended with ``exit_code`` (rules 1-3)."""
    if message_path is not None:
        text = _read_head(message_path, FILE_LIMIT).decode(errors="replace")
        if text.strip():
            return text
    if policy == "FallbackToLogsOnError" and exit_code != 0 and log is not None:
        tail = log_tail(log)
        return tail or None
    return None
