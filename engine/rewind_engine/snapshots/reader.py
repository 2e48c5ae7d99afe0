"""SnapshotReader: manifest.json -> the state of the steps, by uid and key group.

A restore at another parallelism asks for the key groups its new subtask owns; the
reader fetches only the data files whose key-group range overlaps, and from each only
the byte ranges of the wanted blocks (contiguous blocks are merged into one ranged read).
Fetches run in parallel in a small thread pool, from the moment `keyed_state` is called;
decoding happens in the caller's thread, as it iterates.

An incremental checkpoint's entry also lists `refs`: key groups whose block lies in a
file of an earlier checkpoint of the same job (`../chk-<m>/...`, read through the
storage of the folder that holds the job's checkpoints). They are read like the wanted
blocks of a partly wanted file: one ranged read per run of adjacent blocks, each block
checked against its sha256. Blocks come out in ascending key-group order per subtask,
wherever they are stored.

What must stay true: every byte handed out was checked against the manifest: a whole
file against its sha256 and size, a ranged read block by block against the block's
sha256. A mismatch raises `CorruptSnapshotError` naming the file, the expected and the
actual checksum; nothing unverified is ever decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import CorruptSnapshotError, IncompatibleSnapshotError, NotFoundError
from .layout import parent_uri, split_ref
from .manifest import MANIFEST_NAME, Manifest, SubtaskFile, parse_manifest
from .storage import Storage, join_uri, open_storage

READ_WORKERS = 4
"""Parallel fetches per reader: enough to overlap network latency with decoding."""

Block = tuple[int, int, int, str]
"""[key group, offset, length, sha256]."""


@dataclass
class _Fetch:
    """A read under way: one file (`where`, for messages), its wanted blocks, the read,
    the offset where it starts, and whether it is the whole file (checked as a whole)."""

    where: str
    blocks: list[Block]
    future: Future[bytes]
    base: int
    whole: bool


def load_manifest(storage: Storage) -> Manifest:
    """Read and validate manifest.json at the root of `storage`."""
    try:
        data = storage.get(MANIFEST_NAME)
    except NotFoundError as exc:
        raise NotFoundError(
            f"no snapshot at {storage.uri}: {MANIFEST_NAME} missing (a snapshot without a "
            "manifest is incomplete or was never written)"
        ) from exc
    return parse_manifest(data, f"{storage.uri}/{MANIFEST_NAME}")


def _checksum_error(where: str, what: str, expected: str, actual: str) -> CorruptSnapshotError:
    return CorruptSnapshotError(
        f"checksum mismatch in {where} ({what}): expected sha256 {expected}, got {actual}; "
        "the file was altered or truncated after the snapshot was written"
    )


class SnapshotReader:
    """Reads one snapshot (validated on construction). Close it, or use `with`."""

    def __init__(
        self, uri: str, *, max_parallelism: int | None = None, max_workers: int = READ_WORKERS
    ) -> None:
        self._storage = open_storage(uri)
        self.uri = self._storage.uri
        self.manifest = load_manifest(self._storage)
        if max_parallelism is not None and max_parallelism != self.manifest.max_parallelism:
            raise IncompatibleSnapshotError(
                f"snapshot {self.uri} was taken with max_parallelism "
                f"{self.manifest.max_parallelism}, but the job has max_parallelism "
                f"{max_parallelism}: keyed state cannot be redistributed across a different "
                f"number of key groups; run with --max-parallelism "
                f"{self.manifest.max_parallelism}"
            )
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="rewind-restore")
        self._parent: Storage | None = None
        """The folder of the job's checkpoints (for `refs`), opened when first needed."""

    def uids(self) -> list[str]:
        """The uids of the steps that have state in this snapshot."""
        return list(self.manifest.steps)

    def parallelism(self, uid: str) -> int:
        return self.manifest.steps[uid].parallelism

    def keyed_state(
        self, uid: str, key_groups: Iterable[int], *, arrays: bool = False
    ) -> Iterator[tuple[int, Any]]:
        """(key group, state) for every wanted key group that has state, ascending.
        `arrays`: int64 / float64 columns as numpy arrays (codec.decode).

        The reads start when this is called, not when the iterator is first advanced:
        a caller restoring several subtasks asks for all their iterators first, and the
        downloads of the later ones overlap the decoding of the first (restore.py).
        A uid without state in the snapshot (a new step) yields nothing."""
        step = self.manifest.steps.get(uid)
        wanted = set(key_groups)
        if step is None or not wanted:
            return iter(())
        # Start every fetch first (parallel), then decode in order as they arrive.
        pending: list[list[_Fetch]] = []  # per subtask
        for entry in step.subtasks:
            start, end = entry.key_group_range
            if not any(start <= group < end for group in wanted):
                continue
            fetches = self._fetch_own(entry, [b for b in entry.blocks if b[0] in wanted])
            by_file: dict[str, list[Block]] = {}
            for group, path, offset, length, digest in entry.refs:
                if group in wanted:
                    by_file.setdefault(path, []).append((group, offset, length, digest))
            for path, blocks in by_file.items():
                fetches += self._fetch_runs(path, blocks, self._read_ref)
            if fetches:
                pending.append(fetches)
        return self._decode_blocks(pending, arrays)

    def _fetch_own(self, entry: SubtaskFile, chosen: list[Block]) -> list[_Fetch]:
        if not chosen:
            return []
        if len(chosen) == len(entry.blocks):
            # The whole file is needed: one read, checked against the file's sha256.
            future = self._pool.submit(self._read_whole, entry)
            return [_Fetch(f"{self.uri}/{entry.file}", chosen, future, 0, True)]

        def read(_path: str, offset: int, length: int) -> bytes:
            return self._read_range(entry, offset, length)

        return self._fetch_runs(entry.file, chosen, read)

    def _fetch_runs(self, path: str, chosen: list[Block], read: Any) -> list[_Fetch]:
        """One ranged read per run of adjacent blocks of the file at `path`."""
        where = ref_uri(self.uri, path) if path.startswith("../") else f"{self.uri}/{path}"
        fetches = []
        for run in contiguous_runs(chosen):
            base = run[0][1]
            length = run[-1][1] + run[-1][2] - base
            future = self._pool.submit(read, path, base, length)
            fetches.append(_Fetch(where, run, future, base, False))
        return fetches

    def _decode_blocks(
        self, pending: list[list[_Fetch]], arrays: bool
    ) -> Iterator[tuple[int, Any]]:
        for fetches in pending:
            # Ascending key groups over the subtask's own file and its referenced ones;
            # a read is let go once its last block is decoded.
            order = sorted(
                (block[0], i, block) for i, fetch in enumerate(fetches) for block in fetch.blocks
            )
            left = [len(fetch.blocks) for fetch in fetches]
            data: dict[int, memoryview] = {}
            for group, i, (_, offset, length, digest) in order:
                fetch = fetches[i]
                if i not in data:
                    data[i] = memoryview(fetch.future.result())
                block = data[i][offset - fetch.base : offset - fetch.base + length]
                if not fetch.whole:
                    actual = hashlib.sha256(block).hexdigest()
                    if actual != digest:
                        raise _checksum_error(fetch.where, f"key group {group}", digest, actual)
                yield group, self._decode(fetch.where, block, f"key group {group}", arrays=arrays)
                left[i] -= 1
                if not left[i]:
                    del data[i]

    def operator_states(self, uid: str) -> list[Any]:
        """The operator state of every subtask of `uid` at snapshot time, in subtask
        order (None where a subtask had none); [] for a uid without state."""
        step = self.manifest.steps.get(uid)
        if step is None:
            return []
        futures: list[tuple[SubtaskFile, Future[bytes] | None]] = []
        for entry in sorted(step.subtasks, key=lambda e: e.subtask):
            if entry.operator_state is None:
                futures.append((entry, None))
                continue
            offset, length, _ = entry.operator_state
            futures.append((entry, self._pool.submit(self._read_range, entry, offset, length)))
        states: list[Any] = []
        for entry, future in futures:
            if future is None or entry.operator_state is None:
                states.append(None)
                continue
            data = future.result()
            expected = entry.operator_state[2]
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise _checksum_error(
                    f"{self.uri}/{entry.file}", "operator state", expected, actual
                )
            states.append(self._decode(f"{self.uri}/{entry.file}", data, "operator state"))
        return states

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- fetching -------------------------------------------------------------------

    def _read_whole(self, entry: SubtaskFile) -> bytes:
        return read_verified(self._storage, entry)

    def _read_range(self, entry: SubtaskFile, offset: int, length: int) -> bytes:
        data = self._storage.get_range(entry.file, offset, length)
        if len(data) != length:
            raise CorruptSnapshotError(
                f"{self.uri}/{entry.file} is truncated: the manifest says it has "
                f"{entry.size} bytes, but bytes {offset}..{offset + length - 1} could not "
                f"all be read (got {len(data)} of {length})"
            )
        return data

    def _read_ref(self, path: str, offset: int, length: int) -> bytes:
        if self._parent is None:
            self._parent = open_storage(parent_uri(self.uri))
        return read_ref(self._parent, self.uri, path, offset, length)

    def _decode(
        self, where: str, data: bytes | memoryview, what: str, *, arrays: bool = False
    ) -> Any:
        try:
            return codec.decode(data, arrays=arrays)
        except Exception as exc:
            raise CorruptSnapshotError(f"cannot decode {what} in {where}: {exc}") from exc


def ref_uri(uri: str, path: str) -> str:
    """The URI of the file `path` (`../chk-<m>/...`) that the snapshot at `uri` references."""
    folder, key = split_ref(path)
    return join_uri(parent_uri(uri), folder, key)


def read_ref(parent: Storage, uri: str, path: str, offset: int, length: int) -> bytes:
    """`length` bytes at `offset` of the file `path` that the snapshot at `uri`
    references (`../chk-<m>/...`), through `parent`, the storage of the folder that holds
    the snapshot's folder. A missing or short file is a `CorruptSnapshotError` naming it."""
    folder, key = split_ref(path)
    where = ref_uri(uri, path)
    try:
        data = parent.get_range(f"{folder}/{key}", offset, length)
    except NotFoundError as exc:
        raise CorruptSnapshotError(
            f"{where} is missing: the snapshot references it (an earlier checkpoint's file "
            f"that was deleted): {exc}"
        ) from exc
    if len(data) != length:
        raise CorruptSnapshotError(
            f"{where} is truncated: bytes {offset}..{offset + length - 1} are referenced, "
            f"got {len(data)} of {length}"
        )
    return data


def read_verified(storage: Storage, entry: SubtaskFile) -> bytes:
    """The whole data file, checked against the manifest's size and sha256."""
    data = storage.get(entry.file)
    where = f"{storage.uri}/{entry.file}"
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.sha256:
        if len(data) != entry.size:
            raise CorruptSnapshotError(
                f"{where} is truncated or altered: expected {entry.size} bytes with sha256 "
                f"{entry.sha256}, found {len(data)} bytes with sha256 {actual}"
            )
        raise _checksum_error(where, "whole file", entry.sha256, actual)
    return data


def contiguous_runs(blocks: list[Block]) -> list[list[Block]]:
    """Group blocks (sorted by offset) into runs that are adjacent in the file."""
    runs: list[list[Block]] = []
    for block in sorted(blocks, key=lambda b: b[1]):
        if runs and runs[-1][-1][1] + runs[-1][-1][2] == block[1]:
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs
