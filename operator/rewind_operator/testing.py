"""Helpers to run the real operator in tests and demos (like `kopf.testing`).

`OperatorProcess` starts `python -m rewind_operator` as a child process watching the
given namespaces, with its JSON log in a file, and stops it (SIGTERM, then SIGKILL) when
the block ends; `kill()` stops it abruptly, to test an operator that dies mid-upgrade.
`wait_until` polls a condition with a generous bound, so a stuck test fails with a
message instead of hanging (it is not a speed assertion).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from rewind_engine.testing import free_port

__all__ = ["OperatorProcess", "free_port", "wait_until"]

T = TypeVar("T")


def wait_until(
    what: str, check: Callable[[], T | None], *, timeout: float = 300.0, every: float = 1.0
) -> T:
    """Poll `check` until it returns something truthy; raise naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:g}s (last: {last!r})")
        time.sleep(every)


class OperatorProcess:
    """The operator as a child process."""

    def __init__(
        self,
        namespaces: list[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.namespaces = namespaces
        self.log_path = log_path
        self.health_port = free_port()
        self.env = {
            **os.environ,
            **(env or {}),
            "REWIND_WATCH_NAMESPACES": ",".join(namespaces),
            "REWIND_HEALTH_HOST": "127.0.0.1",
            "REWIND_HEALTH_PORT": str(self.health_port),
            "REWIND_METRICS_HOST": "127.0.0.1",
            "REWIND_METRICS_PORT": str(free_port()),
            "REWIND_RESYNC_INTERVAL_SECONDS": "3",
            "REWIND_BUSY_INTERVAL_SECONDS": "1",
            "REWIND_SAVEPOINT_POLL_SECONDS": "1",
            "REWIND_UPGRADE_RETRY_SECONDS": "5",
            "REWIND_SAVEPOINT_BACKOFF_SECONDS": "1",
            "REWIND_SAVEPOINT_BACKOFF_MAX_SECONDS": "4",
            **(settings or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        """Start it (again)."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rewind_operator"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        return self

    def kill(self) -> None:
        """Stop it at once, as a crash would (SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Stop it gracefully."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        """Everything it logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
