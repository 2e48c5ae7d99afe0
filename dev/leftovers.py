"""Processes a test starts beside the cluster (private Kafka brokers), recorded so that a
later test run ends those whose test died before its teardown.

A test process killed by a signal (SIGKILL, a CI job's timeout) runs no teardown, and a
JVM it started runs on, holding memory and ports. So each such process gets a record in
a folder that outlives the test run, `<state>/test-processes/` (next to the cluster's
own pid files in `run/`, which `dev/cluster down` stops: these are not its business):
the process (pid and start time, so that a recycled pid is never taken for it), the
test process that owns it (likewise), and arguments its command line must hold.

`sweep` ends a recorded process only when its owner is gone and it still is the process
recorded (same start time, every marker among its arguments); a record whose process is
gone, or is no longer what was recorded, is removed without a signal; one whose owner
still runs (a test session beside this one, or this one) is left alone. What must stay
true: `sweep` signals nothing but recorded processes that match their record.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from dev.plane.layout import State
from dev.plane.procs import Proc, alive, read_stat

GONE_WAIT_S = 10.0
"""How long `sweep` waits for a killed process to be gone before it keeps its record for
the next sweep (SIGKILL is immediate; this only covers a slow reap)."""


def folder(state: State | None = None) -> Path:
    """The records' folder under the cluster's state folder (`REWIND_DEV_STATE` or
    dev/.state): the same for every test run of this checkout."""
    return (state or State.default()).root / "test-processes"


def _proc(pid: int) -> Proc | None:
    st = read_stat(pid)
    return Proc(pid, st[1]) if st else None


def record(where: Path, pid: int, markers: Sequence[str]) -> Path:
    """Record live process `pid`, owned by this process, whose command line holds every
    argument in `markers`; returns the record's path (for `forget`)."""
    if not markers:
        raise ValueError("a record needs markers: without them any process could match")
    proc, owner = _proc(pid), _proc(os.getpid())
    if proc is None or owner is None:
        raise ProcessLookupError(f"process {pid} is not running")
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{proc.pid}-{proc.start}.json"
    body = {
        "pid": proc.pid,
        "start": proc.start,
        "owner": owner.pid,
        "owner_start": owner.start,
        "markers": list(markers),
    }
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(body))
    partial.replace(path)  # a sweep never reads half a record
    return path


def forget(path: Path) -> None:
    """Remove a record once its process has been stopped by its owner."""
    path.unlink(missing_ok=True)


def _arguments(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _is_recorded(proc: Proc, markers: Sequence[str]) -> bool:
    """`proc` is still the process recorded: alive with its start time, every marker
    among its arguments."""
    return alive(proc) and set(markers) <= set(_arguments(proc.pid))


def sweep(where: Path) -> list[int]:
    """End the recorded processes whose owner is gone; returns the pids killed."""
    killed = []
    for path in sorted(where.glob("*.json")):
        try:
            body = json.loads(path.read_text())
            proc = Proc(int(body["pid"]), int(body["start"]))
            owner = Proc(int(body["owner"]), int(body["owner_start"]))
            markers = [str(m) for m in body["markers"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a record of ours: leave it as it is
        if alive(owner):
            continue
        if not markers or not _is_recorded(proc, markers):
            forget(path)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)  # also ends a stopped (SIGSTOP) process
        killed.append(proc.pid)
        deadline = time.monotonic() + GONE_WAIT_S
        while alive(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive(proc):
            forget(path)
    return killed
