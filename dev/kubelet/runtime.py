"""Container processes: start them through the shim, signal them, adopt them after a restart.

Flows through: a ``LaunchSpec`` (argv, env, cwd, mounts, log file) in; a
``ContainerProcess`` out, which answers "has it ended, and how" and takes signals.

What must stay true:

- each container is its own session and process group (pgid == the shim's pid), so
  SIGTERM/SIGKILL reach everything it started, and never anything else;
- a pid is only trusted together with its start time (``/proc/<pid>/stat`` field 22),
  so a recycled pid is never signalled or mistaken for a live container;
- the exit code survives the kubelet: the shim writes it to an exit file, which is what
  an adopted process is judged by; a process that vanished without one counts as 137.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from dev.kubelet.podstatus import now_rfc3339

SHIM = Path(__file__).with_name("shim.py")


@dataclass(frozen=True)
class Mount:
    """A volume folder (or file) and where the container must see it."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one container instance."""

    container_id: str
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str
    log_path: Path
    run_dir: Path
    mounts: Sequence[Mount] = ()
    hostname: str | None = None
    isolate: bool = True


@dataclass(frozen=True)
class ExitStatus:
    """How a container process ended."""

    exit_code: int
    reason: str
    finished_at: str
    signal: int | None = None
    message: str | None = None


def proc_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks, or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # state; a zombie has ended, whoever reaps it
        return None
    return int(fields[19])  # field 22 of the whole line


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``.

    Why: when the shim dies by SIGKILL, the command it ran may outlive it for a moment
    (and a daemon it forked for longer); the container has ended only when they are all
    gone. Zombies do not count: reaping them is init's business, however slow it is.
    """
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@cache
def namespaces_supported() -> bool:
    """Whether this machine lets us give a container a private mount namespace."""
    done = subprocess.run([sys.executable, str(SHIM), "--check"], capture_output=True, check=False)
    return done.returncode == 0


def _read_exit_file(path: Path) -> ExitStatus | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return ExitStatus(
        exit_code=int(data["exitCode"]),
        reason=str(data.get("reason") or ("Completed" if data["exitCode"] == 0 else "Error")),
        finished_at=str(data.get("finishedAt") or now_rfc3339()),
        signal=data.get("signal"),
        message=data.get("message"),
    )


@dataclass
class ContainerProcess:
    """One running (or ended) container instance."""

    pid: int
    pid_start: int
    exit_file: Path
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _exit: ExitStatus | None = field(default=None, repr=False)

    @classmethod
    def spawn(cls, spec: LaunchSpec) -> ContainerProcess:
        """Start the shim for ``spec``; raises OSError when even that fails."""
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        stem = spec.container_id.rpartition("/")[2]
        exit_file = spec.run_dir / f"{stem}.exit"
        spec_file = spec.run_dir / f"{stem}.json"
        spec_file.write_text(
            json.dumps(
                {
                    "argv": list(spec.argv),
                    "env": dict(spec.env),
                    "cwd": spec.cwd,
                    "mounts": [
                        {"source": m.source, "target": m.target, "readOnly": m.read_only}
                        for m in spec.mounts
                    ],
                    "hostname": spec.hostname,
                    "exitFile": str(exit_file),
                    "isolate": spec.isolate,
                }
            )
        )
        spec_file.chmod(0o600)  # it holds the environment, secrets included
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, str(SHIM), str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
                start_new_session=True,
                close_fds=True,
            )
        start = proc_start_time(popen.pid)
        return cls(pid=popen.pid, pid_start=start or 0, exit_file=exit_file, _popen=popen)

    @classmethod
    def adopt(cls, pid: int, pid_start: int, exit_file: Path) -> ContainerProcess:
        """A container started by an earlier kubelet process."""
        return cls(pid=pid, pid_start=pid_start, exit_file=exit_file)

    def _alive(self) -> bool:
        """The shim runs, or something it started still runs in its process group."""
        if self._popen is not None:
            if self._popen.poll() is None:
                return True
        elif proc_start_time(self.pid) == self.pid_start:
            return True
        return bool(group_members(self.pid))

    def poll(self) -> ExitStatus | None:
        """None while it runs; how it ended once it has."""
        if self._exit is not None:
            return self._exit
        if self._alive():
            return None
        status = _read_exit_file(self.exit_file)
        if status is None and self._popen is not None and self._popen.returncode is not None:
            code = self._popen.returncode
            sig = -code if code < 0 else None
            status = ExitStatus(
                exit_code=128 + sig if sig else code,
                reason="Completed" if code == 0 else "Error",
                finished_at=now_rfc3339(),
                signal=sig,
            )
        if status is None:
            status = ExitStatus(
                exit_code=137,
                reason="Error",
                finished_at=now_rfc3339(),
                message="the container ended while no kubelet watched it; exit code unknown",
            )
        self._exit = status
        for leftover in (self.exit_file, self.exit_file.with_suffix(".json")):
            leftover.unlink(missing_ok=True)
        return status

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the container's process group (if it is still the same one)."""
        if self._exit is not None or not self._alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


def exec_in(
    process: ContainerProcess | None, argv: Sequence[str], cwd: str, isolate: bool
) -> list[str]:
    """The argv that runs ``argv`` inside the container's mount namespace (for exec probes)."""
    if process is None or not isolate:
        return list(argv)
    return ["nsenter", "-t", str(process.pid), "-m", f"--wd={cwd}", "--", *argv]
