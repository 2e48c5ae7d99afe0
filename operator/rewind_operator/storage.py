"""Object-storage calls on behalf of one app, with that app's credentials and a deadline.

The engine's snapshot helpers (`rewind_engine.snapshots`) take S3 settings from the
process environment, as the engine pod does. The operator serves many apps with
different credentials, so each call here runs inside `snapshots.s3_settings(...)`,
which lays the app's Secret values, and the operator's own shorter timeouts
(`StorageSettings.overlay`), over the environment for that call's context only.

Each call runs in the app's own call lane (`lanes`) with `StorageSettings.deadline_s`:
a store that hangs costs that app a few seconds per reconcile and a bounded number of
abandoned threads, and no other app anything; the reconcile carries on and says which
store does not answer.

What must stay true: the credentials never reach `os.environ` and are never logged;
every failure (a deadline included) becomes a `StorageProblem` with a message that names
the URI and the store (its endpoint, never a secret).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from rewind_engine import snapshots

from rewind_operator.lanes import DeadlineExceeded, LaneBusy, Lanes
from rewind_operator.observed import ManifestObs
from rewind_operator.settings import StorageSettings

T = TypeVar("T")

_lanes: Lanes | None = None


class StorageProblem(Exception):
    """Object storage could not be read or written."""


class CorruptSnapshot(Exception):
    """A snapshot's files do not match its manifest; the message names every bad file."""


def lanes(limits: StorageSettings) -> Lanes:
    """The per-app call lanes (made on first use, `calls_per_app` threads each)."""
    global _lanes  # noqa: PLW0603 - one registry per process, like the S3 client cache
    if _lanes is None:
        _lanes = Lanes("storage", limits.calls_per_app)
    return _lanes


def store_name(uri: str, env: Mapping[str, str] | None, environ: Mapping[str, str]) -> str:
    """Which store holds `uri`, in words for a condition: its endpoint, never a secret
    (`env`: the app's settings, laid over the operator's `environ` as for the call)."""
    if not uri.startswith("s3://"):
        return f"the file system at {uri}"
    merged = {**environ, **(env or {})}
    endpoint = merged.get("AWS_ENDPOINT_URL_S3") or merged.get("AWS_ENDPOINT_URL")
    if endpoint:
        return f"the object store at {endpoint}"
    region = merged.get("AWS_REGION") or merged.get("AWS_DEFAULT_REGION") or "us-east-1"
    return f"the object store of AWS S3 ({region})"


@dataclass(frozen=True)
class Access:
    """Whose call it is: the app (`lanes.app_key`: its lane), its storage settings (the
    Secret's variables, or None), and the operator's limits."""

    owner: str
    env: Mapping[str, str] | None
    limits: StorageSettings


def _run(access: Access, uri: str, what: str, fn: Callable[[], T]) -> T:
    limits = access.limits
    settings = {**(access.env or {}), **limits.overlay()}

    def work() -> T:
        with snapshots.s3_settings(settings):
            try:
                return fn()
            except snapshots.SnapshotError as exc:
                raise StorageProblem(f"{what}: {exc}") from exc
            except OSError as exc:
                raise StorageProblem(f"{what}: {exc}") from exc

    try:
        return lanes(limits).get(access.owner).call(work, limits.deadline_s)
    except DeadlineExceeded:
        store = store_name(uri, access.env, os.environ)
        raise StorageProblem(
            f"{what}: {store} did not answer within {limits.deadline_s:g}s"
        ) from None
    except LaneBusy as exc:
        store = store_name(uri, access.env, os.environ)
        raise StorageProblem(f"{what}: {store} does not answer ({exc})") from None


def list_snapshot_uris(location: str, access: Access, app: str) -> list[str]:
    """URIs of the complete snapshots of `app`'s own history at `location`, newest first
    (`snapshots.lineage`: never another app's, such as a fork nested below)."""
    found = _run(
        access, location, f"listing {location}", lambda: snapshots.lineage(location, app=app)
    )
    return [info.uri for info in found]


def manifest_at(uri: str, access: Access) -> ManifestObs | None:
    """The manifest at `uri` if the snapshot there is complete, else None."""

    def read() -> ManifestObs | None:
        try:
            manifest = snapshots.read_manifest(uri)
        except snapshots.NotFoundError:
            return None
        return _manifest_obs(manifest)

    return _run(access, uri, f"reading {uri}", read)


def _manifest_obs(manifest: snapshots.Manifest) -> ManifestObs:
    return ManifestObs(
        size_bytes=manifest.size_bytes,
        created_at=manifest.created,
        sources=dict(manifest.sources),
    )


def verified_manifest_at(uri: str, access: Access) -> ManifestObs | None:
    """Like `manifest_at`, after checking every data file against the manifest's size and
    sha256 (what registering an existing savepoint must do: it was written elsewhere).
    Raises `CorruptSnapshot` naming the bad files."""

    def read() -> ManifestObs | None:
        try:
            manifest = snapshots.verify(uri)
        except snapshots.NotFoundError:
            return None
        except snapshots.CorruptSnapshotError as exc:
            raise CorruptSnapshot(str(exc)) from exc
        return _manifest_obs(manifest)

    return _run(access, uri, f"verifying {uri}", read)


def dispose(uri: str, access: Access) -> None:
    """Delete the snapshot folder at `uri` (idempotent)."""
    _run(access, uri, f"disposing of {uri}", lambda: snapshots.dispose(uri))
