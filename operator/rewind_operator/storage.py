"""Object-storage calls on behalf of one app, with that app's credentials.

The engine's snapshot helpers (`rewind_engine.snapshots`) take S3 settings only from
the process environment, as the engine pod does. The operator serves many apps with
different credentials, so each call here runs with the app's Secret values laid over
the environment, under one lock, and the environment is put back afterwards.

What must stay true: the credentials are in `os.environ` only for the duration of one
call and never logged; every failure becomes a `StorageProblem` with a message that
names the URI but no secret.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

from rewind_engine import snapshots

from rewind_operator.observed import ManifestObs

T = TypeVar("T")

_env_lock = threading.Lock()
_AWS_PREFIX = "AWS_"


class StorageProblem(Exception):
    """Object storage could not be read or written."""


@contextmanager
def _credentials(env: Mapping[str, str] | None) -> Iterator[None]:
    with _env_lock:
        saved = {k: v for k, v in os.environ.items() if k.startswith(_AWS_PREFIX)}
        try:
            if env:
                for key, value in env.items():
                    if key.startswith(_AWS_PREFIX):
                        os.environ[key] = value
            yield
        finally:
            for key in [k for k in os.environ if k.startswith(_AWS_PREFIX)]:
                if key not in saved:
                    del os.environ[key]
            os.environ.update(saved)


def _run(env: Mapping[str, str] | None, what: str, fn: Callable[[], T]) -> T:
    with _credentials(env):
        try:
            return fn()
        except snapshots.SnapshotError as exc:
            raise StorageProblem(f"{what}: {exc}") from exc
        except OSError as exc:
            raise StorageProblem(f"{what}: {exc}") from exc


def list_snapshot_uris(location: str, env: Mapping[str, str] | None) -> list[str]:
    """URIs of every complete snapshot under `location`, newest first."""
    found = _run(env, f"listing {location}", lambda: snapshots.list_snapshots(location))
    return [info.uri for info in found]


def manifest_at(uri: str, env: Mapping[str, str] | None) -> ManifestObs | None:
    """The manifest at `uri` if the snapshot there is complete, else None."""

    def read() -> ManifestObs | None:
        try:
            manifest = snapshots.read_manifest(uri)
        except snapshots.NotFoundError:
            return None
        return ManifestObs(
            size_bytes=manifest.size_bytes,
            created_at=manifest.created,
            sources=dict(manifest.sources),
        )

    return _run(env, f"reading {uri}", read)


def dispose(uri: str, env: Mapping[str, str] | None) -> None:
    """Delete the snapshot folder at `uri` (idempotent)."""
    _run(env, f"disposing of {uri}", lambda: snapshots.dispose(uri))
