"""Starts and stops the cluster's processes, each as the leader of its own process group.

A pid file holds `<pid> <start-time>` (the start time from /proc, in clock ticks), so a
recycled pid is never mistaken for one of ours. Stopping sends SIGTERM to the whole
group, waits, then SIGKILLs it; and because a process may start children in their own
sessions (the kubelet's pods), `stop` first records every descendant and kills the ones
that outlive their parent. What must stay true: after `stop_all`, no process that one of
ours started is alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dev.plane.layout import State


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int
    """Start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""


def read_stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, start time, state) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


def alive(p: Proc) -> bool:
    st = read_stat(p.pid)
    return st is not None and st[1] == p.start and st[2] != "Z"


def read_pidfile(path: Path) -> Proc | None:
    try:
        pid, start = path.read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    return Proc(int(pid), int(start))


def running(state: State, name: str) -> Proc | None:
    """The live process recorded for `name`, or None."""
    p = read_pidfile(state.run / f"{name}.pid")
    return p if p is not None and alive(p) else None


def start(
    state: State, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
) -> Proc:
    """Starts `argv` in a new session with its output appended to logs/<name>.log."""
    state.logs.mkdir(parents=True, exist_ok=True)
    state.run.mkdir(parents=True, exist_ok=True)
    log = (state.logs / f"{name}.log").open("ab")
    log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
    log.flush()
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,  # own process group: `down` signals the group
    )
    log.close()
    st = read_stat(child.pid)
    proc = Proc(child.pid, st[1] if st else 0)
    (state.run / f"{name}.pid").write_text(f"{proc.pid} {proc.start}\n")
    return proc


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = read_stat(int(entry.name))
            if st:
                kids.setdefault(st[0], []).append(int(entry.name))
    return kids


def descendants(root: Proc) -> list[Proc]:
    """Every live process below `root` (not `root` itself)."""
    kids = _children_map()
    out: list[Proc] = []
    todo = list(kids.get(root.pid, []))
    while todo:
        pid = todo.pop()
        st = read_stat(pid)
        if st:
            out.append(Proc(pid, st[1]))
            todo += kids.get(pid, [])
    return out


def _signal(procs: Iterable[Proc], sig: signal.Signals) -> None:
    for p in procs:
        if alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)


def _wait_gone(procs: list[Proc], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in procs):
            return True
        time.sleep(0.1)
    return not any(alive(p) for p in procs)


def stop(state: State, name: str, grace: float) -> bool:
    """Stops `name` and everything it started; returns whether it was running."""
    pidfile = state.run / f"{name}.pid"
    root = read_pidfile(pidfile)
    if root is None or not alive(root):
        pidfile.unlink(missing_ok=True)
        return False
    tree = [root, *descendants(root)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(root.pid, signal.SIGTERM)
    # The leader alone first: a kubelet that terminates its pods itself does it best.
    # Its descendants are recorded while it lives, since orphans lose their parent link.
    deadline = time.monotonic() + grace
    while alive(root) and time.monotonic() < deadline:
        tree += [d for d in descendants(root) if d not in tree]
        time.sleep(0.1)
    if alive(root):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(root.pid, signal.SIGKILL)
    # Anything it started in other groups and left behind (or could not stop in time).
    _signal(tree, signal.SIGTERM)
    if not _wait_gone(tree, 5):
        _signal(tree, signal.SIGKILL)
        _wait_gone(tree, 5)
    pidfile.unlink(missing_ok=True)
    return True


def kill_trees(roots: list[Proc], grace: float) -> None:
    """SIGTERM `roots` and all their descendants, SIGKILL whatever is left after `grace`."""
    tree = list(roots)
    for r in roots:
        tree += [d for d in descendants(r) if d not in tree]
    _signal(tree, signal.SIGTERM)
    if not _wait_gone(tree, grace):
        _signal(tree, signal.SIGKILL)
        _wait_gone(tree, 5)
