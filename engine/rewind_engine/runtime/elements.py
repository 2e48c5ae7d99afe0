"""What travels through channels between subtasks: batches, watermarks, barriers.

Records always move in batches (a list plus optional parallel lists of event
timestamps and keys), so per-element overhead is paid once per ~1 K records.
What must stay true: in one channel, elements keep their order (FIFO); a barrier
separates the records before a snapshot from those after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Batch:
    """Records, with their event timestamps (ms) and keys when known (parallel lists)."""

    records: list[Any]
    timestamps: list[int] | None = None
    keys: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True, slots=True)
class Watermark:
    """No record with an event time <= ts follows on this channel.

    `idle`: the sender has nothing to read (a source subtask without splits); the
    receiver leaves this channel out of its minimum until it becomes active again.
    """

    ts: int
    idle: bool = False


@dataclass(frozen=True, slots=True)
class Barrier:
    """Checkpoint barrier n: everything before it belongs to snapshot n."""

    checkpoint_id: int


Element = Batch | Watermark | Barrier
