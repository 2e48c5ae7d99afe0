"""The engine's last words for Kubernetes: a fatal error in the termination message.

`rewind run` fails -> `record(message)` -> the termination-message file, which the kubelet
copies into the container's `state.terminated.message` (later `lastState.terminated`),
so `kubectl describe pod` shows it and the operator's crash and rollback conditions
quote it instead of only "Error, exit code 1".

The file is `REWIND_TERMINATION_LOG`, default `/dev/termination-log` (Kubernetes' default
`terminationMessagePath`). What must stay true:
- the default is written only when the file already exists, as Kubernetes creates it
  before the container starts: a run on a laptop never creates `/dev/termination-log`;
  a path set in `REWIND_TERMINATION_LOG` is written when its folder exists; an empty
  value turns the file off;
- at most `LIMIT` bytes (the kubelet keeps no more), cut at a character boundary;
- `record` never raises: failing to leave last words must not hide the error itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_PATH = "/dev/termination-log"
"""Kubernetes' default `terminationMessagePath`."""
LIMIT = 4096
"""Bytes the kubelet reads from the file (it ignores the rest)."""


def target(env: Mapping[str, str] | None = None) -> Path | None:
    """Where the message goes here, or None when no runtime prepared a place for it."""
    env = os.environ if env is None else env
    configured = env.get("REWIND_TERMINATION_LOG")
    if configured is None:
        default = Path(DEFAULT_PATH)
        return default if default.is_file() else None
    if not configured.strip():
        return None
    path = Path(configured)
    return path if path.parent.is_dir() else None


def clip(message: str, limit: int = LIMIT) -> str:
    """`message` cut to at most `limit` UTF-8 bytes, never inside a character."""
    data = message.encode()
    if len(data) <= limit:
        return message
    return data[: limit - 3].decode(errors="ignore") + "..."


def describe(exc: BaseException) -> str:
    """An uncaught exception as one line: `RuntimeError: what went wrong`."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def record(message: str, env: Mapping[str, str] | None = None) -> Path | None:
    """Write `message` as the termination message; the file written, or None."""
    path = target(env)
    if path is None:
        return None
    try:
        path.write_text(clip(message.strip()))
    except OSError:
        return None
    return path
