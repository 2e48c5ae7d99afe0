"""One subtask's captured state -> the bytes of its data file and its block index.

Runs on the job's scheduler thread, a few blocks at a time between batches
(`encode_steps`, driven by runtime/snapshot_work.py), or in the writer's background
threads for callers of `SnapshotWriter.add_subtask`. Encoding is the slow part of a snapshot in
Python: msgpack must visit every key and value object, and for a large state that is
bound by memory access (touching 1 M scattered keys and values once costs nearly as much
as encoding them). Encoding in a forked child was measured and rejected: the child's
reference-count writes copy every page of the state (copy-on-write), which doubled the
cost on our 2-core machines. See bench/bench_savepoint.py.

What must stay true: blocks are written in ascending key-group order, the operator
state (if any) last, and every block and the whole file get a sha256 of exactly the
bytes that will be stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import SnapshotError


@dataclass(frozen=True)
class EncodedFile:
    payload: bytes
    blocks: list[tuple[int, int, int, str]]
    """[key group, offset, length, sha256] per key group, ascending."""
    operator_state: tuple[int, int, str] | None
    """[offset, length, sha256] of the operator-state block, or None."""
    sha256: str
    """Of the whole payload; "" if the encoder was told to leave it to the uploader."""


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
) -> Generator[None, None, EncodedFile]:
    """`encode` in steps: yields between blocks once about `STEP_BYTES` were encoded
    since the last yield, so that the caller can do other work in between; returns the
    `EncodedFile`. The caller must not change `keyed` until it returns.
    `file_sha256=False` leaves the file's sha256 "" for the uploading thread to compute
    (one call that releases the GIL for the whole payload, off the task's thread)."""
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
        blocks.append((group, offset, len(data), hashlib.sha256(data).hexdigest()))
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
    return EncodedFile(b"".join(chunks), blocks, op_block, digest)
