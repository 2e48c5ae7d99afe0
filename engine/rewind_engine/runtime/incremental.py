"""What the job's last completed checkpoint holds: the base of an incremental checkpoint.

Flows through here: for every checkpoint the coordinator asks `begin` whether it is
incremental; while its captures are encoded, `base` gives each subtask the blocks of the
last completed checkpoint ({key group: `BlockRef`}, each pointing into the file that
wrote it) and the memo its operator left (a count's counts, aggregate_state.py), and
`record` notes what this checkpoint wrote or referenced; `completed` makes that the new
base once the manifest exists, `failed` forgets it.

Rules (Flink's: checkpoints may share files, savepoints never do):
- a base is only ever a checkpoint whose manifest exists: what an in-flight checkpoint
  wrote becomes the base in `completed` (one process: after `finish`; several workers:
  when the coordinator says the global manifest exists), and is dropped by `failed`
  (an aborted, failed or timed-out checkpoint is never referenced);
- a job starts without a base, so its first checkpoint (also the first after a restore)
  is full; savepoints are always full and never become a base;
- every `full_every`-th checkpoint of a chain is full again, so that the oldest folder a
  checkpoint can reference is at most `full_every - 1` checkpoints older than it (what
  retention keeps alive beyond `checkpoints_retained`);
- a recorded reference is the original block (a `BlockRef` from the base as it was),
  never a reference to a reference: a restore reads every block directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..snapshots.encoder import BlockRef, EncodedFile
from ..snapshots.layout import ref_path

SubtaskId = tuple[str, int, int]
"""(step uid, subtask index, parallelism)."""


@dataclass(frozen=True)
class Base:
    """One subtask's part of the last completed checkpoint."""

    blocks: dict[int, BlockRef]
    memo: Any


@dataclass
class _Pending:
    incremental: bool
    subtasks: dict[SubtaskId, Base] = field(default_factory=dict)


class BlockHistory:
    """See the module docstring. Used from the scheduler's thread only."""

    def __init__(self, *, enabled: bool, full_every: int) -> None:
        if full_every < 1:
            raise ValueError(f"full_every must be >= 1, got {full_every}")
        self.enabled = enabled
        self.full_every = full_every
        self._base: dict[SubtaskId, Base] = {}
        self._base_id: int | None = None
        self._chain = 0
        """Completed checkpoints since (and including) the base's last full one."""
        self._pending: dict[int, _Pending] = {}

    @property
    def base_id(self) -> int | None:
        """The id of the last completed checkpoint (the base), if any."""
        return self._base_id

    def begin(self, checkpoint_id: int, kind: str) -> bool:
        """Note that snapshot `checkpoint_id` starts; True if it is incremental."""
        if not self.enabled or kind != "checkpoint":
            return False  # a savepoint is self-contained and never a base
        incremental = self._base_id is not None and self._chain < self.full_every
        self._pending[checkpoint_id] = _Pending(incremental)
        return incremental

    def base(self, checkpoint_id: int, subtask: SubtaskId) -> Base | None:
        """What the base holds for `subtask`, if `checkpoint_id` is incremental."""
        pending = self._pending.get(checkpoint_id)
        if pending is None or not pending.incremental:
            return None
        return self._base.get(subtask)

    def record(
        self, checkpoint_id: int, subtask: SubtaskId, key: str, encoded: EncodedFile, memo: Any
    ) -> None:
        """What checkpoint `checkpoint_id` holds for `subtask`: the blocks it wrote into
        its file `key`, the blocks it referenced, and its operator's memo."""
        pending = self._pending.get(checkpoint_id)
        if pending is None:
            return
        blocks = {
            group: BlockRef(ref_path(checkpoint_id, key), offset, length, digest)
            for group, offset, length, digest in encoded.blocks
        }
        for group, path, offset, length, digest in encoded.refs:
            blocks[group] = BlockRef(path, offset, length, digest)
        pending.subtasks[subtask] = Base(blocks, memo)

    def completed(self, checkpoint_id: int) -> None:
        """The manifest of `checkpoint_id` exists: it is the new base."""
        pending = self._pending.pop(checkpoint_id, None)
        if pending is None:
            return  # a savepoint, or incremental checkpoints are off
        for older in [n for n in self._pending if n < checkpoint_id]:
            del self._pending[older]
        self._base = pending.subtasks
        self._base_id = checkpoint_id
        self._chain = self._chain + 1 if pending.incremental else 1

    def failed(self, checkpoint_id: int) -> None:
        """`checkpoint_id` will never have a manifest: forget what it wrote."""
        self._pending.pop(checkpoint_id, None)
