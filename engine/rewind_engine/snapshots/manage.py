"""Snapshots as things: read, verify, list, find the latest, dispose, prune.

These work straight on storage, without a running job, so the operator and the CLI
can manage savepoints (retention, `--restore latest`, `disposeOnDelete`) on their own.

Incremental checkpoints reference blocks in files of earlier checkpoints of the same
job (`refs`, `../chk-<m>/...`). A checkpoint that `prune` or `dispose` removes loses
its manifest first (it is no longer a snapshot); of its files, those that no remaining
manifest of the job references are deleted at once, the others stay (a folder without a
manifest, holding only referenced files) until no remaining manifest references them,
which a later `prune` finds by walking the manifests again.

What must stay true:
- `dispose` deletes manifest.json FIRST: a half-deleted snapshot never looks complete.
- `prune` deletes only checkpoints of the given job, never a savepoint, never the
  newest `keep` checkpoints, and never a folder that may be a checkpoint in progress.
- neither ever deletes a file that a remaining manifest of the job references; if a
  remaining manifest cannot be read, no file of a removed checkpoint is deleted.
- a folder without a manifest is not a snapshot: it is never listed or restored.
- `latest` and `lineage` see only one app's own history: the `checkpoints/` and
  `savepoints/` folders right under its location (never another app's location nested
  below it, such as an old fork's), and, when the app's identity is known, only
  snapshots it wrote (`meta.app`) or that name no app (written before apps were
  recorded).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import structlog

from .errors import CorruptSnapshotError, IncompatibleSnapshotError, SnapshotError
from .layout import CHECKPOINTS, SAVEPOINTS, checkpoint_number, parent_uri
from .manifest import MANIFEST_NAME, Manifest, SubtaskFile, parse_manifest, parse_time
from .reader import contiguous_runs, load_manifest, read_ref, read_verified, ref_uri
from .storage import Storage, join_uri, open_storage

log = structlog.get_logger(__name__)

_LIST_WORKERS = 8


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot found under a location."""

    uri: str
    kind: str
    snapshot_id: str | int
    job_id: str
    created_at: datetime
    size_bytes: int
    format_version: int
    problem: str | None = None
    """Why this engine cannot restore it (a newer format), else None."""
    deployment_id: str | None = None
    """`meta.deployment_id` of the writer (REWIND_DEPLOYMENT_ID under the operator)."""
    app: str | None = None
    """`meta.app` of the writer: the app's identity (`--app`, REWIND_APP), if recorded."""

    def belongs_to(self, app: str | None) -> bool:
        """Whether this snapshot is part of `app`'s history (None: any app's)."""
        return app is None or self.app is None or self.app == app


def read_manifest(uri: str) -> Manifest:
    """The validated manifest of the snapshot at `uri` (checks the format version)."""
    return load_manifest(open_storage(uri))


def verify(uri: str) -> Manifest:
    """Check every data file of the snapshot against the manifest (size and sha256), and
    every block it references in an earlier checkpoint against the block's sha256.

    Returns the manifest; raises one `CorruptSnapshotError` listing every bad file."""
    storage = open_storage(uri)
    manifest = load_manifest(storage)
    entries = [entry for step in manifest.steps.values() for entry in step.subtasks]
    checks: list[tuple[SubtaskFile, str | None]] = [(entry, None) for entry in entries]
    checks += [(e, path) for e in entries for path in sorted({ref[1] for ref in e.refs})]
    parent = open_storage(parent_uri(storage.uri)) if len(checks) > len(entries) else None
    problems: list[str] = []

    def check(index: int) -> None:
        entry, path = checks[index]
        try:
            if path is None:
                read_verified(storage, entry)
            else:
                assert parent is not None
                _verify_refs(parent, storage.uri, entry, path)
        except SnapshotError as exc:
            problems.append(str(exc))

    with ThreadPoolExecutor(_LIST_WORKERS, thread_name_prefix="rewind-verify") as pool:
        list(pool.map(check, range(len(checks))))
    if problems:
        raise CorruptSnapshotError(
            f"snapshot {storage.uri} failed verification ({len(problems)} of {len(checks)} "
            f"files): " + "; ".join(sorted(problems))
        )
    return manifest


def _verify_refs(parent: Storage, uri: str, entry: SubtaskFile, path: str) -> None:
    """Check the blocks that `entry` references in the file `path` (`../chk-<m>/...`)."""
    blocks = [
        (g, offset, length, digest) for g, p, offset, length, digest in entry.refs if p == path
    ]
    for run in contiguous_runs(blocks):
        base = run[0][1]
        data = read_ref(parent, uri, path, base, run[-1][1] + run[-1][2] - base)
        for group, offset, length, digest in run:
            actual = hashlib.sha256(data[offset - base : offset - base + length]).hexdigest()
            if actual != digest:
                raise CorruptSnapshotError(
                    f"checksum mismatch in {ref_uri(uri, path)} (key group {group}, referenced "
                    f"by subtask {entry.subtask}): expected sha256 {digest}, got {actual}"
                )


def dispose(uri: str) -> None:
    """Delete the snapshot folder at `uri`: manifest.json first, then the data.

    A checkpoint folder (`chk-<n>`) keeps the files that a sibling checkpoint's manifest
    still references (see the module docstring); `prune` deletes them once unreferenced.
    Idempotent: disposing of a folder that is already gone is not an error."""
    storage = open_storage(uri)
    storage.delete(MANIFEST_NAME)
    folder = storage.uri.rstrip("/").rpartition("/")[2]
    if checkpoint_number(folder) is not None:
        parent = open_storage(parent_uri(storage.uri))
        siblings = {key.partition("/")[0] for key in parent.list() if _is_manifest(key)}
        referenced = _referenced(parent, siblings - {folder})
        if referenced is None or any(f == folder for f, _ in referenced):
            _collect(parent, folder, storage.list(), referenced)
            return
    storage.delete_prefix("")


def _is_manifest(key: str) -> bool:
    folder, _, rest = key.partition("/")
    return rest == MANIFEST_NAME and checkpoint_number(folder) is not None


def _referenced(storage: Storage, folders: Iterable[str]) -> set[tuple[str, str]] | None:
    """(folder, key) of every file that the manifests of `folders` (under `storage`, a
    job's checkpoints folder) reference; None if one of them cannot be read (then
    nothing may be deleted: what it references is unknown)."""
    found: set[tuple[str, str]] = set()
    for folder in sorted(folders):
        try:
            manifest = load_manifest(open_storage(join_uri(storage.uri, folder)))
        except SnapshotError as exc:
            log.warning("manifest_unreadable_nothing_collected", folder=folder, error=str(exc))
            return None
        found |= manifest.referenced_files()
    return found


def _collect(
    storage: Storage, folder: str, keys: Iterable[str], referenced: set[tuple[str, str]] | None
) -> bool:
    """Delete the files of `folder` (not a snapshot any more) that no remaining manifest
    references; the whole folder when none is. True if the folder is gone."""
    if referenced is None:
        return False
    if not any(f == folder for f, _ in referenced):
        storage.delete_prefix(folder)
        return True
    for key in keys:
        if key != MANIFEST_NAME and (folder, key) not in referenced:
            storage.delete(f"{folder}/{key}")
    return False


def list_snapshots(
    location: str, *, job_id: str | None = None, kind: str | None = None
) -> list[SnapshotInfo]:
    """Every complete snapshot (folder with a manifest) under `location`, newest first.

    A manifest from a newer Rewind is listed with `problem` set; a malformed one is
    skipped with a warning (it cannot be restored and its age is unknown)."""
    storage = open_storage(location)
    keys = [
        key for key in storage.list() if key == MANIFEST_NAME or key.endswith("/" + MANIFEST_NAME)
    ]

    def load(key: str) -> SnapshotInfo | None:
        folder_uri = join_uri(storage.uri, key[: -len(MANIFEST_NAME)])
        try:
            data = storage.get(key)
        except SnapshotError as exc:  # deleted between list and get (retention): not there
            log.debug("snapshot_unreadable", uri=folder_uri, error=str(exc))
            return None
        try:
            manifest = parse_manifest(data, f"{folder_uri}/{MANIFEST_NAME}")
        except IncompatibleSnapshotError as exc:
            return _info_from_newer(folder_uri, data, str(exc))
        except CorruptSnapshotError as exc:
            log.warning("snapshot_malformed", uri=folder_uri, error=str(exc))
            return None
        return SnapshotInfo(
            uri=folder_uri,
            kind=manifest.kind,
            snapshot_id=manifest.snapshot_id,
            job_id=manifest.job_id,
            created_at=manifest.created,
            size_bytes=manifest.size_bytes,
            format_version=manifest.format_version,
            deployment_id=_str_or_none(manifest.meta.get("deployment_id")),
            app=_str_or_none(manifest.meta.get("app")),
        )

    with ThreadPoolExecutor(_LIST_WORKERS, thread_name_prefix="rewind-list") as pool:
        found = [info for info in pool.map(load, keys) if info is not None]
    found = [
        info
        for info in found
        if (job_id is None or info.job_id == job_id) and (kind is None or info.kind == kind)
    ]
    return sorted(found, key=lambda info: (info.created_at, info.uri), reverse=True)


def _info_from_newer(uri: str, data: bytes, problem: str) -> SnapshotInfo | None:
    try:
        raw = json.loads(data)
        return SnapshotInfo(
            uri=uri,
            kind=str(raw["kind"]),
            snapshot_id=raw["snapshot_id"],
            job_id=str(raw["job_id"]),
            created_at=parse_time(str(raw["created_at"])),
            size_bytes=int(raw.get("size_bytes", 0)),
            format_version=int(raw["format_version"]),
            problem=problem,
            deployment_id=_str_or_none((raw.get("meta") or {}).get("deployment_id")),
            app=_str_or_none((raw.get("meta") or {}).get("app")),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        log.warning("snapshot_malformed", uri=uri, error=problem)
        return None


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def lineage(location: str, *, app: str | None = None) -> list[SnapshotInfo]:
    """The snapshots of the app whose location is `location`, newest first: those in
    `LOCATION/checkpoints/` and `LOCATION/savepoints/`, and with `app` only those that
    `app` wrote (or that record no app). Folders elsewhere under the location, such as
    another app's location nested inside it, are never looked at."""
    found = [
        info
        for folder in (CHECKPOINTS, SAVEPOINTS)
        for info in list_snapshots(join_uri(location, folder))
        if info.belongs_to(app)
    ]
    return sorted(found, key=lambda info: (info.created_at, info.uri), reverse=True)


def latest(
    location: str,
    *,
    app: str | None = None,
    job_id: str | None = None,
    deployment_id: str | None = None,
) -> str | None:
    """URI of the newest complete checkpoint or savepoint of the app at `location` (for
    `--restore latest`; see `lineage`), or None when there is none. With
    `deployment_id` (or `job_id`), only snapshots whose `meta.deployment_id` (job id)
    equals it count (a restarted container of the same deployment resumes from its own
    newest snapshot).

    If the newest one was written by a newer Rewind this raises rather than silently
    restoring older state."""
    for info in lineage(location, app=app):
        if deployment_id is not None and info.deployment_id != deployment_id:
            continue
        if job_id is not None and info.job_id != job_id:
            continue
        if info.problem is not None:
            raise IncompatibleSnapshotError(
                f"the newest snapshot under {location} cannot be restored: {info.problem}"
            )
        return info.uri
    return None


def last_checkpoint_number(location: str, job_id: str) -> int:
    """The highest `chk-<n>` folder under `LOCATION/checkpoints/<job_id>/` (complete or
    not), 0 when there is none. A job that reuses its id (a restart of one deployment,
    or the same `--job-id`) numbers its checkpoints after it, so they join the same
    history and retention instead of colliding with the ones already there."""
    storage = open_storage(join_uri(location, CHECKPOINTS, job_id))
    numbers = [checkpoint_number(key.partition("/")[0]) for key in storage.list()]
    return max((n for n in numbers if n is not None), default=0)


def prune(location: str, job_id: str, keep: int) -> list[str]:
    """Delete all but the newest `keep` checkpoints of `job_id`; returns the URIs of the
    checkpoints it removed and of the folders it deleted entirely.

    Also removes abandoned checkpoint folders (no manifest, older than the newest
    complete checkpoint: a checkpoint in progress always has a higher number). Only
    `LOCATION/checkpoints/<job_id>/` is looked at, and a manifest whose kind is not
    `checkpoint` is kept: savepoints are never pruned. A removed checkpoint's files that
    a kept manifest references stay until none does (the module docstring)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the newest checkpoint is needed), got {keep}")
    base = join_uri(location, CHECKPOINTS, job_id)
    storage = open_storage(base)
    folders: dict[int, list[str]] = {}
    for key in storage.list():
        folder, _, rest = key.partition("/")
        number = checkpoint_number(folder)
        if number is not None:
            folders.setdefault(number, []).append(rest)
    done = sorted((n for n, keys in folders.items() if MANIFEST_NAME in keys), reverse=True)
    if not done:
        return []
    deleted: list[str] = []
    for number in sorted(done[keep:]):
        uri = join_uri(base, f"chk-{number}")
        kind: str
        try:
            kind = load_manifest(open_storage(uri)).kind
        except SnapshotError:
            kind = "unknown"
        if kind != "checkpoint":
            continue  # a savepoint (or something we cannot read) is never pruned
        storage.delete(f"chk-{number}/{MANIFEST_NAME}")  # first: no longer a snapshot
        folders[number].remove(MANIFEST_NAME)
        deleted.append(uri)
    kept = [n for n, keys in folders.items() if MANIFEST_NAME in keys]
    referenced = _referenced(storage, [f"chk-{n}" for n in kept])
    for number, keys in sorted(folders.items()):
        if number >= done[0] or MANIFEST_NAME in keys:
            continue  # a snapshot, or maybe a checkpoint in progress
        uri = join_uri(base, f"chk-{number}")
        if _collect(storage, f"chk-{number}", keys, referenced) and uri not in deleted:
            deleted.append(uri)
    return sorted(deleted, key=lambda u: checkpoint_number(u.rpartition("/")[2]) or 0)
