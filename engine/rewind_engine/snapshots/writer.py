"""SnapshotWriter: state captured at a barrier -> data files -> manifest.json (last).

The runtime captures each (step uid, subtask)'s state at the barrier, encodes it on its
own thread in slices between batches (runtime/snapshot_work.py) and hands the bytes over
with `add_encoded`, which only validates and queues the upload for a background thread
pool. Other callers hand over the state itself with `add_subtask`: encoding (msgpack)
and checksums then run in the pool too. The captured
objects are the caller's copy; the writer reads them and never mutates them.

How a snapshot commits, and what each step guarantees:

1. Preflight (background): the target folder must not already hold a manifest, so a
   snapshot is never overwritten.
2. Per subtask (background): encode every key group as one msgpack block, in ascending
   key-group order, then the operator-state block (encoder.py); sha256 of every block
   and of the file; upload the file with an atomic put (parallel multipart for large
   files). One file is encoded at a time, while earlier files upload.
3. `finish()` waits for every file. Any failure: the files written so far are deleted
   best-effort and one `SnapshotError` names the file and the cause. No manifest.
4. `finish()` checks that every step has all of its subtasks, then writes
   `manifest.json` LAST. Only now does the snapshot exist: a reader, `latest()` and
   `list_snapshots()` ignore a folder without a manifest.
5. The caller (the runtime) commits its sinks only after `finish()` returned.

An incremental checkpoint's encoded files also carry references to blocks of earlier
checkpoints (encoder.py, `refs` in the manifest). Before its manifest is written, every
referenced file is checked to still exist with at least the referenced bytes (one size
request per file), so that a checkpoint never commits a reference to a file that a
retention outside this job deleted meanwhile.

One worker of several calls `finish_part` instead of `finish`: steps 1-3 alike, the
completeness check of step 4 is left to the coordinator, and the worker's part file
(parts.py) is written last instead of manifest.json; the coordinator then writes the
manifest, and the worker commits its sinks only when told that it exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, get_args

from . import encoder
from .errors import SnapshotError
from .layout import parent_uri, split_ref
from .manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Kind,
    Manifest,
    StepState,
    SubtaskFile,
    format_time,
)
from .parts import WorkerPart, part_key
from .storage import open_storage

DEFAULT_WORKERS = 4
"""Background threads per snapshot: encoding holds the GIL, uploads do not, so a few
threads overlap the encoding of one file with the upload of the previous ones."""


@dataclass(frozen=True)
class SnapshotMeta:
    """What the manifest records about the job besides its state."""

    job_id: str
    flow: str
    """The flow's name or reference (e.g. `flow.py` or `module:attribute`)."""
    max_parallelism: int
    """Number of key groups; keyed state can only be restored with the same value."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Free-form, JSON-able: engine version, image, spec hash, parallelism..."""


def _coerce_meta(meta: SnapshotMeta | Mapping[str, Any]) -> SnapshotMeta:
    if isinstance(meta, SnapshotMeta):
        return meta
    known = {"job_id", "flow", "max_parallelism"}
    missing = sorted(known - set(meta))
    if missing:
        raise ValueError(f"snapshot meta lacks {', '.join(missing)}")
    extra = {k: v for k, v in meta.items() if k not in known}
    if isinstance(meta.get("extra"), Mapping):
        extra = {**{k: v for k, v in extra.items() if k != "extra"}, **meta["extra"]}
    return SnapshotMeta(
        job_id=str(meta["job_id"]),
        flow=str(meta["flow"]),
        max_parallelism=int(meta["max_parallelism"]),
        extra=extra,
    )


_SAFE_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def data_file_key(uid: str, subtask: int) -> str:
    """Relative path of a subtask's data file: readable when the uid is a plain name,
    and collision-free (a short hash is added) when the uid had to be rewritten."""
    folder = uid
    if not _SAFE_UID.fullmatch(uid):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", uid).strip("._-")[:48] or "step"
        folder = f"{slug}-{hashlib.sha256(uid.encode()).hexdigest()[:10]}"
    return f"data/{folder}/subtask-{subtask}.msgpack"


def _key_group_bounds(key_group_range: Any, max_parallelism: int) -> tuple[int, int]:
    if isinstance(key_group_range, range):
        if key_group_range.step != 1:
            raise ValueError(f"key_group_range must be contiguous, got {key_group_range}")
        start, end = key_group_range.start, key_group_range.stop
    else:
        start, end = (int(x) for x in key_group_range)
    if not 0 <= start <= end <= max_parallelism:
        raise ValueError(
            f"key_group_range [{start}, {end}) is outside [0, {max_parallelism}) "
            "(ranges are half-open: end is exclusive)"
        )
    return start, end


class SnapshotWriter:
    """Writes one checkpoint or savepoint to a folder URI. See the module docstring."""

    def __init__(
        self,
        storage_uri: str,
        kind: Kind,
        snapshot_id: str | int,
        meta: SnapshotMeta | Mapping[str, Any],
        *,
        max_workers: int = DEFAULT_WORKERS,
        created_at: datetime | None = None,
    ) -> None:
        if kind not in get_args(Kind):
            raise ValueError(f"kind must be 'checkpoint' or 'savepoint', got {kind!r}")
        self.kind: Kind = kind
        self.snapshot_id = snapshot_id
        self.meta = _coerce_meta(meta)
        if self.meta.max_parallelism < 1:
            raise ValueError(f"max_parallelism must be >= 1, got {self.meta.max_parallelism}")
        self._storage = open_storage(storage_uri)  # a bad URI fails here, synchronously
        self.uri = self._storage.uri
        self._created_at = created_at or datetime.now(UTC)  # the barrier's time
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="rewind-snapshot")
        self._lock = threading.Lock()
        # Encoding holds the GIL, so encoding files in parallel only interleaves them and
        # they all finish late. One at a time, each file is ready as early as possible
        # and uploads (which release the GIL) overlap with the encoding of the next.
        self._encode_lock = threading.Lock()
        self._steps: dict[str, int] = {}
        self._tasks: dict[tuple[str, int], tuple[str, Future[SubtaskFile]]] = {}
        self._sources: dict[str, dict[str, Any]] = {}
        self._written: list[str] = []
        self._bytes_written = 0
        self._state = "open"
        # Submitted first (the pool is FIFO); it runs while the first file encodes, and
        # every upload waits for it.
        self._preflight = self._pool.submit(self._check_target)

    # -- the caller's side ----------------------------------------------------------

    def add_subtask(  # noqa: PLR0917 - positional order fixed by docs/CONTRACTS.md
        self,
        uid: str,
        subtask: int,
        parallelism: int,
        key_group_range: tuple[int, int] | range,
        keyed: Mapping[int, Any],
        operator_state: Any,
        *,
        source_positions: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one subtask's state; returns at once (validation only).

        `key_group_range` is half-open [start, end); every key of `keyed` must lie in it.
        `source_positions` (split id -> position), given by source subtasks, is copied
        into the manifest's `sources` summary for `rewind inspect` and `/status`.
        """
        with self._lock:
            bounds = self._register(uid, subtask, parallelism, key_group_range, keyed)
            if source_positions:
                self._sources.setdefault(uid, {}).update(source_positions)
            key = data_file_key(uid, subtask)
            future = self._pool.submit(
                self._write_subtask, key, uid, subtask, bounds, keyed, operator_state
            )
            self._tasks[(uid, subtask)] = (key, future)

    def add_encoded(
        self,
        uid: str,
        subtask: int,
        parallelism: int,
        key_group_range: tuple[int, int] | range,
        encoded: encoder.EncodedFile,
        *,
        source_positions: Mapping[str, Any] | None = None,
    ) -> None:
        """Like `add_subtask`, for state the caller encoded already (`encoder.encode` or
        `encoder.encode_steps`, e.g. on its own thread in slices): only the upload runs
        in the background. Returns at once."""
        groups = encoded.key_groups
        if encoded.refs and self.kind != "checkpoint":
            raise ValueError(f"a {self.kind} is self-contained: it cannot reference other files")
        with self._lock:
            bounds = self._register(uid, subtask, parallelism, key_group_range, groups)
            if source_positions:
                self._sources.setdefault(uid, {}).update(source_positions)
            key = data_file_key(uid, subtask)
            future = self._pool.submit(self._upload, key, subtask, bounds, encoded)
            self._tasks[(uid, subtask)] = (key, future)

    def _register(
        self,
        uid: str,
        subtask: int,
        parallelism: int,
        key_group_range: tuple[int, int] | range,
        groups: Iterable[int],
    ) -> tuple[int, int]:
        """Validate one subtask's identity and key groups; record its step (the caller
        holds `self._lock`)."""
        if self._state != "open":
            raise SnapshotError(f"cannot add state to a snapshot that is {self._state}")
        if not isinstance(uid, str) or not uid:
            raise ValueError(f"step uid must be a non-empty string, got {uid!r}")
        if not 0 <= subtask < parallelism:
            raise ValueError(f"subtask {subtask} outside parallelism {parallelism} ({uid!r})")
        bounds = _key_group_bounds(key_group_range, self.meta.max_parallelism)
        outside = [kg for kg in groups if not bounds[0] <= kg < bounds[1]]
        if outside:
            raise ValueError(
                f"step {uid!r} subtask {subtask}: key groups {sorted(outside)[:5]} are outside "
                f"its key_group_range [{bounds[0]}, {bounds[1]})"
            )
        known = self._steps.setdefault(uid, parallelism)
        if known != parallelism:
            raise ValueError(
                f"step {uid!r}: parallelism {parallelism} differs from {known} given before"
            )
        if (uid, subtask) in self._tasks:
            raise ValueError(f"step {uid!r} subtask {subtask} was added twice")
        return bounds

    def progress(self) -> dict[str, int]:
        """Files done / queued and bytes uploaded so far (for status and ETAs)."""
        with self._lock:
            done = sum(1 for _, future in self._tasks.values() if future.done())
            return {
                "files_done": done,
                "files_total": len(self._tasks),
                "bytes_written": self._bytes_written,
            }

    def finish(self) -> Manifest:
        """Wait for every file, then write manifest.json last; return the manifest.

        Raises one `SnapshotError` naming the file and the cause if anything failed;
        then no manifest exists and the files written so far are removed best-effort.
        """
        label = f"{self.kind} {self.snapshot_id} at {self.uri} failed (no manifest written)"
        with self._finishing(label):
            files = self._collect(label, complete=True)
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                kind=self.kind,
                snapshot_id=self.snapshot_id,
                job_id=self.meta.job_id,
                flow=self.meta.flow,
                created_at=format_time(self._created_at),
                max_parallelism=self.meta.max_parallelism,
                size_bytes=sum(e.size for entries in files.values() for e in entries),
                steps={
                    uid: StepState(parallelism=self._steps[uid], subtasks=files[uid])
                    for uid in self._steps
                },
                sources=self._sources,
                meta={"engine_version": _engine_version(), **self.meta.extra},
            )
            self._put_last(MANIFEST_NAME, manifest.to_json(), label)
            return manifest

    def finish_part(self, worker: int, workers: int, exchange: Mapping[str, Any]) -> WorkerPart:
        """Like `finish`, for one worker of several: wait for this worker's files, then
        write `parts/worker-<w>.json` (its subtasks, source positions and exchange
        positions) instead of manifest.json. The coordinator writes the manifest once
        every worker's part exists (parts.py)."""
        label = f"{self.kind} {self.snapshot_id} at {self.uri}: worker {worker}'s part failed"
        with self._finishing(label):
            files = self._collect(label, complete=False)
            part = WorkerPart(
                format_version=FORMAT_VERSION,
                worker=worker,
                workers=workers,
                snapshot_id=self.snapshot_id,
                created_at=format_time(self._created_at),
                size_bytes=sum(e.size for entries in files.values() for e in entries),
                steps={
                    uid: StepState(parallelism=self._steps[uid], subtasks=files[uid])
                    for uid in self._steps
                },
                sources=self._sources,
                exchange={t: {str(p): int(o) for p, o in ps.items()} for t, ps in exchange.items()},
            )
            self._put_last(part_key(worker), part.to_json(), label)
            return part

    @contextlib.contextmanager
    def _finishing(self, label: str) -> Iterator[None]:
        if self._state != "open":
            raise SnapshotError(f"cannot finish a snapshot that is {self._state}")
        self._state = "finishing"
        try:
            yield
            self._state = "finished"
        except BaseException:
            self._state = "failed"
            raise
        finally:
            self._pool.shutdown(wait=False)

    def _collect(self, label: str, *, complete: bool) -> dict[str, list[SubtaskFile]]:
        """Every file's entry by uid (steps 3-4); `complete`: every subtask is here."""
        try:
            self._preflight.result()
        except Exception as exc:
            raise SnapshotError(f"{label}: {exc}") from exc
        files: dict[str, list[SubtaskFile]] = {uid: [] for uid in self._steps}
        failures: list[tuple[str, BaseException]] = []
        for (uid, _subtask), (key, future) in sorted(self._tasks.items()):
            try:
                files[uid].append(future.result())
            except Exception as exc:
                failures.append((key, exc))
        if failures:
            key, cause = failures[0]
            more = f" (and {len(failures) - 1} more files)" if len(failures) > 1 else ""
            self._remove_written()
            raise SnapshotError(f"{label}: {key}: {cause}{more}") from cause
        for uid, parallelism in self._steps.items():
            have = {entry.subtask for entry in files[uid]}
            lacking = sorted(set(range(parallelism)) - have)
            if lacking and complete:
                self._remove_written()
                raise SnapshotError(
                    f"{label}: step {uid!r} has parallelism {parallelism} but subtasks "
                    f"{lacking} were never added"
                )
        self._check_refs(label, files)
        return files

    def _check_refs(self, label: str, files: Mapping[str, list[SubtaskFile]]) -> None:
        """Every referenced file exists and holds the referenced bytes (see above)."""
        ends: dict[str, int] = {}
        for entries in files.values():
            for entry in entries:
                for _group, path, offset, length, _digest in entry.refs:
                    ends[path] = max(ends.get(path, 0), offset + length)
        if not ends:
            return
        parent = open_storage(parent_uri(self.uri))
        for path, end in sorted(ends.items()):
            folder, key = split_ref(path)
            try:
                size = parent.size(f"{folder}/{key}")
            except Exception as exc:
                self._remove_written()
                raise SnapshotError(f"{label}: referenced file {path}: {exc}") from exc
            if size < end:
                self._remove_written()
                raise SnapshotError(
                    f"{label}: referenced file {path} has {size} bytes, {end} are referenced"
                )

    def _put_last(self, key: str, data: bytes, label: str) -> None:
        try:
            self._storage.put(key, data)
        except Exception as exc:
            # The PUT may have landed although the client saw an error (a timeout on
            # the response): remove the manifest before its data, never the reverse.
            with contextlib.suppress(Exception):
                self._storage.delete(key)
            self._remove_written()
            raise SnapshotError(f"{label}: {key}: {exc}") from exc

    def abort(self) -> None:
        """Give up: stop queued work, wait for running uploads, delete what was written.

        Best-effort and idempotent; never raises for storage problems."""
        if self._state in ("finished", "aborted"):
            return
        self._state = "aborted"
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._remove_written()

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or self._state == "open":
            self.abort()

    # -- background work ------------------------------------------------------------

    def _check_target(self) -> None:
        if self._storage.exists(MANIFEST_NAME):
            raise SnapshotError(
                f"a snapshot already exists at {self.uri} (it has a {MANIFEST_NAME}); "
                "choose another target or dispose of it first"
            )

    def _write_subtask(  # noqa: PLR0917 - internal, mirrors add_subtask
        self,
        key: str,
        uid: str,
        subtask: int,
        bounds: tuple[int, int],
        keyed: Mapping[int, Any],
        operator_state: Any,
    ) -> SubtaskFile:
        with self._encode_lock:
            encoded = encoder.encode(uid, subtask, keyed, operator_state)
        return self._upload(key, subtask, bounds, encoded)

    def _upload(
        self, key: str, subtask: int, bounds: tuple[int, int], encoded: encoder.EncodedFile
    ) -> SubtaskFile:
        self._preflight.result()  # never write into a folder that holds a snapshot
        if self._state == "aborted":
            raise SnapshotError("aborted")
        # Encoded on the task's thread without the file's digest: hashed here, in one
        # call that releases the GIL (encoder.encode_steps).
        digest = encoded.sha256 or hashlib.sha256(encoded.payload).hexdigest()
        self._storage.put(key, encoded.payload)
        size = len(encoded.payload)
        with self._lock:
            self._written.append(key)
            self._bytes_written += size
        return SubtaskFile(
            subtask=subtask,
            file=key,
            size=size,
            sha256=digest,
            key_group_range=bounds,
            blocks=encoded.blocks,
            operator_state=encoded.operator_state,
            refs=encoded.refs,
        )

    def _remove_written(self) -> None:
        # Wait for uploads still running, or a file could appear after the cleanup.
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            written, self._written = self._written, []
        for key in written:
            try:
                self._storage.delete(key)
            except Exception:  # noqa: S112 - best-effort cleanup; the snapshot has no manifest
                continue


def _engine_version() -> str:
    try:
        return version("rewind")
    except PackageNotFoundError:
        return "unknown"
