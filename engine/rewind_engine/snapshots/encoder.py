"""One subtask's captured state -> the bytes of its data file and its block index.

Runs on the job's scheduler thread, a few blocks at a time between batches
(`encode_steps`, driven by runtime/snapshot_work.py), or in the writer's background
threads for callers of `SnapshotWriter.add_subtask`. Encoding is the slow part of a snapshot in
Python: msgpack must visit every key and value object, and for a large state that is
bound by memory access (touching 1 M scattered keys and values once costs nearly as much
as encoding them). Encoding in a forked child was measured and rejected: the child's
reference-count writes copy every page of the state (copy-on-write), which doubled the
cost on our 2-core machines. See bench/bench_savepoint.py.

An incremental checkpoint passes `previous`, the blocks that the job's last completed
checkpoint holds for this subtask ({key group: `BlockRef`}, each pointing into the file
that wrote it): a key group whose newly encoded block has the same sha256 (and length)
as its previous block is not stored again but referenced (`EncodedFile.refs`), and the
key groups in `unchanged` (the step itself knows they did not change: count_state.py)
are referenced without being encoded at all.

What must stay true: blocks are written in ascending key-group order, the operator
state (if any) last, and every block and the whole file get a sha256 of exactly the
bytes that will be stored. A key group is written or referenced, never both, and a
reference is always one of `previous` as it was given (the original file, never a
reference to a reference).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import codec
from .errors import SnapshotError


class BlockRef(NamedTuple):
    """Where a key group's block of an earlier checkpoint lies: `file` relative to a
    checkpoint folder of the job (`../chk-<m>/data/...`, layout.ref_path)."""

    file: str
    offset: int
    length: int
    sha256: str


@dataclass(frozen=True)
class EncodedFile:
    payload: bytes
    blocks: list[tuple[int, int, int, str]]
    """[key group, offset, length, sha256] per key group, ascending."""
    operator_state: tuple[int, int, str] | None
    """[offset, length, sha256] of the operator-state block, or None."""
    sha256: str
    """Of the whole payload; "" if the encoder was told to leave it to the uploader."""
    refs: list[tuple[int, str, int, int, str]] = field(default_factory=list)
    """[key group, file, offset, length, sha256] per referenced key group, ascending."""

    @property
    def key_groups(self) -> list[int]:
        return [block[0] for block in self.blocks] + [ref[0] for ref in self.refs]


def encode(uid: str, subtask: int, keyed: Mapping[int, Any], operator_state: Any) -> EncodedFile:
    """Encode one subtask's state (`uid` and `subtask` only name it in errors)."""
    steps = encode_steps(uid, subtask, keyed, operator_state)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


STEP_BYTES = 256 * 1024
"""`encode_steps` yields after about this many encoded bytes (~0.1-1 ms of work)."""


def encode_steps(
    uid: str,
    subtask: int,
    keyed: Mapping[int, Any],
    operator_state: Any,
    *,
    file_sha256: bool = True,
    previous: Mapping[int, BlockRef] | None = None,
    unchanged: Collection[int] = (),
) -> Generator[None, None, EncodedFile]:
    """`encode` in steps: yields between blocks once about `STEP_BYTES` were encoded
    since the last yield, so that the caller can do other work in between; returns the
    `EncodedFile`. The caller must not change `keyed` until it returns.
    `file_sha256=False` leaves the file's sha256 "" for the uploading thread to compute
    (one call that releases the GIL for the whole payload, off the task's thread).
    `previous` and `unchanged`: see the module docstring (an incremental checkpoint)."""
    previous = previous or {}
    refs: list[tuple[int, str, int, int, str]] = []
    for group in sorted(unchanged):
        if group in keyed:
            raise SnapshotError(
                f"step {uid!r} subtask {subtask}: key group {group} is both changed and unchanged"
            )
        ref = previous.get(group)
        if ref is None:
            raise SnapshotError(
                f"step {uid!r} subtask {subtask}: key group {group} did not change, but the "
                "last checkpoint has no block for it"
            )
        refs.append((group, *ref))
    packer = codec.new_packer()
    key_packer = codec.new_key_packer()
    chunks: list[bytes] = []
    blocks: list[tuple[int, int, int, str]] = []
    whole = hashlib.sha256()
    offset = 0
    since_yield = 0
    for group in sorted(keyed):
        value = keyed[group]
        try:
            if isinstance(value, codec.Columns):
                data = codec.encode_columns(value, packer, key_packer)
            else:
                data = codec.encode(value, packer)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SnapshotError(
                f"cannot encode the state of step {uid!r} subtask {subtask} "
                f"key group {group}: {exc}"
            ) from exc
        digest = hashlib.sha256(data).hexdigest()
        ref = previous.get(group)
        if ref is not None and ref.sha256 == digest and ref.length == len(data):
            refs.append((group, *ref))  # the same bytes are stored already
        else:
            blocks.append((group, offset, len(data), digest))
            if file_sha256:
                whole.update(data)
            chunks.append(data)
            offset += len(data)
        since_yield += len(data)
        if since_yield >= STEP_BYTES:
            since_yield = 0
            yield
    op_block: tuple[int, int, str] | None = None
    if operator_state is not None:
        try:
            data = codec.encode(operator_state, packer)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SnapshotError(
                f"cannot encode the operator state of step {uid!r} subtask {subtask}: {exc}"
            ) from exc
        op_block = (offset, len(data), hashlib.sha256(data).hexdigest())
        if file_sha256:
            whole.update(data)
        chunks.append(data)
    digest = whole.hexdigest() if file_sha256 else ""
    refs.sort()
    return EncodedFile(b"".join(chunks), blocks, op_block, digest, refs)
