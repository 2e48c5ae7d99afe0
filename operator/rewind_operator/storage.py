"""Object-storage calls on behalf of one app, with that app's credentials.

The engine's snapshot helpers (`rewind_engine.snapshots`) take S3 settings from the
process environment, as the engine pod does. The operator serves many apps with
different credentials, so each call here runs inside `snapshots.s3_settings(...)`,
which lays the app's Secret values over the environment for that call's context only
(a context variable: concurrent calls for other apps see their own).

What must stay true: the credentials never reach `os.environ` and are never logged;
every failure becomes a `StorageProblem` with a message that names the URI but no
secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from rewind_engine import snapshots

from rewind_operator.observed import ManifestObs

T = TypeVar("T")


class StorageProblem(Exception):
    """Object storage could not be read or written."""


def _run(env: Mapping[str, str] | None, what: str, fn: Callable[[], T]) -> T:
    with snapshots.s3_settings(env):
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
