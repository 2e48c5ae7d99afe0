"""One container: sets up its private mounts, runs its command, records how it ended.

Run by the kubelet as ``python shim.py SPEC.json`` in a new session (so the container is
one process group: the shim and everything it starts), with stdout and stderr already
pointing at the container's log file. Stand-alone on purpose (standard library only, no
package imports): it must start from any working folder and outlive the kubelet.

Steps:
1. In a private mount namespace (and UTS namespace, for the pod's hostname), bind each
   volume folder onto its ``mountPath``, read-only when asked, creating the mount point
   when it does not exist. The mounts are invisible outside; the empty mount point is not.
2. Start the command with the given cwd and environment (PATH lookup uses that env).
3. Ignore SIGTERM/SIGINT/SIGHUP itself (the container's processes receive them through
   the process group), wait for the command, and write ``{"exitCode", "finishedAt",
   "signal", "reason", "message"}`` to the exit file, atomically, so that a restarted
   kubelet learns the exit code of a container it did not start.
4. Exit with the command's exit code (128 + signal when it was killed).

With ``--check`` it only tells (exit 0) whether step 1 is possible here.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc: Any, source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    _check(libc.mount(src, target.encode(), None, flags, None), f"mount {source} -> {target}")


def _under(path: str, top: str) -> bool:
    return path != top and path.startswith(top.rstrip("/") + "/")


def isolate(mounts: list[dict[str, Any]], hostname: str | None, keep: list[str]) -> None:
    """Step 1: a private mount namespace with the pod's volumes at their mount paths.

    A volume mounted over a folder that holds host paths the container still needs (an
    emptyDir at /tmp while the repository, its .venv or the pod's state live under /tmp)
    would hide them. So every source and every path in ``keep`` is opened before the first
    mount, mounts are made from those handles, and each kept path that a mount covered is
    bound back at its own place inside it.
    """
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(libc, None, "/", MS_REC | MS_PRIVATE)
    if hostname and libc.unshare(CLONE_NEWUTS) == 0:
        # Only a nicety: the pod's hostname, as in a container. Not fatal when refused.
        with contextlib.suppress(OSError):
            socket.sethostname(hostname)
    kept = sorted({os.path.realpath(k) for k in keep if os.path.isdir(k)})
    # Outermost kept paths only: binding a folder back brings everything below it.
    kept = [k for k in kept if not any(_under(k, other) for other in kept)]
    handles = {k: os.open(k, os.O_PATH) for k in kept}
    ordered = sorted(mounts, key=lambda m: len(m["target"].rstrip("/").split("/")))
    sources = {id(m): os.open(m["source"], os.O_PATH) for m in ordered}
    for m in ordered:
        source, target = m["source"], m["target"]
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.exists(target):
                with open(target, "a"):
                    pass
        _mount(libc, f"/proc/self/fd/{sources[id(m)]}", target, MS_BIND | MS_REC)
        if m.get("readOnly"):
            _mount(libc, None, target, MS_BIND | MS_REMOUNT | MS_RDONLY)
        for k, fd in handles.items():
            if _under(k, os.path.realpath(target)):
                os.makedirs(k, exist_ok=True)
                _mount(libc, f"/proc/self/fd/{fd}", k, MS_BIND | MS_REC)
    for fd in [*handles.values(), *sources.values()]:
        os.close(fd)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_exit(path: str, status: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


def run(spec: dict[str, Any]) -> int:
    """Steps 1 to 4 for one container spec; returns the exit code."""
    exit_file: str = spec["exitFile"]
    if spec.get("isolate", True):
        try:
            keep = [
                os.path.dirname(os.path.abspath(exit_file)),  # the pod's state folder
                str(spec.get("cwd") or "/"),
                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                sys.prefix,
                *spec.get("keep", []),
            ]
            isolate(spec.get("mounts", []), spec.get("hostname"), keep)
        except OSError as exc:
            print(f"rewind-dev shim: cannot set up mounts: {exc}", file=sys.stderr, flush=True)
            _write_exit(
                exit_file,
                {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": str(exc),
                    "finishedAt": _now(),
                },
            )
            return 128
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        # A Python handler, not SIG_IGN: exec resets handlers, so the command gets defaults.
        signal.signal(sig, lambda *_: None)
    try:
        child = subprocess.Popen(
            spec["argv"], cwd=spec["cwd"], env=spec["env"], stdin=subprocess.DEVNULL
        )
    except OSError as exc:
        message = f"failed to start {spec['argv'][0]!r}: {exc}"
        print(f"rewind-dev shim: {message}", file=sys.stderr, flush=True)
        _write_exit(
            exit_file,
            {"exitCode": 128, "reason": "StartError", "message": message, "finishedAt": _now()},
        )
        return 128
    code = child.wait()
    status: dict[str, Any] = {"finishedAt": _now()}
    if code < 0:
        status.update(exitCode=128 - code, signal=-code, reason="Error")
    else:
        status.update(exitCode=code, reason="Completed" if code == 0 else "Error")
    _write_exit(exit_file, status)
    return int(status["exitCode"])


def check() -> int:
    """Exit 0 when a private mount namespace can be made here."""
    try:
        libc = _libc()
        _check(libc.unshare(CLONE_NEWNS), "unshare")
        _mount(libc, None, "/", MS_REC | MS_PRIVATE)
    except OSError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        return check()
    with open(argv[1]) as f:
        spec = json.load(f)
    return run(spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
