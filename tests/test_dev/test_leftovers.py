"""dev/leftovers.py: a recorded process whose owner died is ended by the next sweep, and
nothing else is.

Each case is real: a dummy process stands for the broker (its arguments carry the same
markers a broker's do), and an owner process that records it and is then SIGKILLed
stands for a test session killed before its teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev import leftovers
from dev.plane.procs import Proc, alive, read_stat

REPO = Path(__file__).resolve().parents[2]
OWNER = """
import subprocess, sys, time
from pathlib import Path
from dev import leftovers
where, markers, argv = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3:]
dummy = subprocess.Popen(argv)
leftovers.record(where, dummy.pid, markers)
print(dummy.pid, flush=True)
time.sleep(3600)
"""
"""An owner: starts `argv`, records it with `markers`, says its pid, waits to be killed."""


def sleeper(*markers: str) -> list[str]:
    """A dummy's command line: it sleeps, carrying `markers` as arguments."""
    return [sys.executable, "-c", "import time; time.sleep(3600)", *markers]


def proc(pid: int) -> Proc:
    st = read_stat(pid)
    assert st is not None, f"process {pid} is not running"
    return Proc(pid, st[1])


@pytest.fixture
def survivors() -> Iterator[list[Proc]]:
    """Dummies a case expects to outlive the sweep: killed after the case."""
    procs: list[Proc] = []
    yield procs
    for p in procs:
        if alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)


def orphan(where: Path, markers: list[str], argv: list[str]) -> Proc:
    """A dummy recorded by an owner that was then killed by a signal; the dummy runs on."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(where), ",".join(markers), *argv],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert owner.stdout is not None
    with owner.stdout:
        pid = int(owner.stdout.readline())
    dummy = proc(pid)
    owner.send_signal(signal.SIGKILL)
    assert owner.wait() == -signal.SIGKILL
    return dummy


def test_a_recorded_broker_whose_owner_was_killed_is_ended(tmp_path: Path) -> None:
    markers = ["kafka.Kafka", str(tmp_path / "server.properties")]
    dummy = orphan(tmp_path, markers, sleeper(*markers))
    assert alive(dummy), "the owner's death left the dummy running"
    assert leftovers.sweep(tmp_path) == [dummy.pid]
    assert not alive(dummy)
    assert list(tmp_path.glob("*.json")) == [], "the record goes with its process"
    assert leftovers.sweep(tmp_path) == []


def test_a_process_whose_owner_runs_is_left_alone(tmp_path: Path, survivors: list[Proc]) -> None:
    # This test process is the owner: a session beside the sweeping one.
    markers = ["kafka.Kafka", str(tmp_path / "server.properties")]
    dummy = subprocess.Popen(sleeper(*markers))
    survivors.append(proc(dummy.pid))
    path = leftovers.record(tmp_path, dummy.pid, markers)
    assert leftovers.sweep(tmp_path) == []
    assert dummy.poll() is None and path.exists()
    dummy.kill()
    dummy.wait()
    leftovers.forget(path)


def test_a_process_that_does_not_match_its_record_gets_no_signal(
    tmp_path: Path, survivors: list[Proc]
) -> None:
    # Recorded as a broker, but its command line is another's (as when the record is
    # wrong, or the process exec'd something else): not killed, the record dropped.
    other = orphan(tmp_path, ["kafka.Kafka", "/elsewhere/server.properties"], sleeper())
    survivors.append(other)
    assert leftovers.sweep(tmp_path) == []
    assert alive(other)
    assert list(tmp_path.glob("*.json")) == []


def test_a_record_whose_process_is_gone_is_removed(tmp_path: Path) -> None:
    markers = ["kafka.Kafka", str(tmp_path / "server.properties")]
    dummy = orphan(tmp_path, markers, sleeper(*markers))
    os.kill(dummy.pid, signal.SIGKILL)
    while alive(dummy):  # an orphan is reaped by init, soon
        time.sleep(0.01)
    assert leftovers.sweep(tmp_path) == []
    assert list(tmp_path.glob("*.json")) == []


def test_a_record_needs_markers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="markers"):
        leftovers.record(tmp_path, os.getpid(), [])
