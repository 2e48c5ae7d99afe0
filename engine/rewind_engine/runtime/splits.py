"""Source splits: which source subtask reads which split, at start and while running.

Flows through here: the flow's source steps, the source subtasks of this process (all
of them, or one worker's share) and the restored split state in; `add_split` /
`park` / `unpark` calls on the subtasks out. The rules, step by step:

1. At start, every split the source lists plus every split restored as finished is
   sorted, and split k goes to subtask `k % p` (p: the step's parallelism). A process
   keeps the splits of its own subtasks, so every worker of a job assigns alike.
2. A restored position is never dropped: a split its source does not list right now
   is parked in subtask `j % p` (kept in every snapshot) and opened once discovered.
3. Discovered later: a split never seen before goes round robin in one process; with
   several workers to subtask `crc32(split) % p`, which every worker computes alike
   whenever it sees the split (placement.split_subtask). A split already assigned on
   any worker is never assigned again.
"""

from __future__ import annotations

import structlog

from ..dataflow import Dataflow, SourceSpec, Step
from .placement import split_subtask
from .restore import SourceRestore
from .tasks import SourceTask

log = structlog.get_logger("rewind.splits")


class Splits:
    def __init__(
        self, flow: Dataflow, sources: list[SourceTask], parallelism: int, distributed: bool
    ) -> None:
        self.flow = flow
        self.sources = sources
        self.parallelism = parallelism
        self.distributed = distributed
        self._rr: dict[str, int] = {}
        self._seen: dict[str, set[str]] = {}
        """Source uid -> every split assigned so far, on any worker."""

    def _steps(self) -> list[tuple[Step, SourceSpec, dict[int, SourceTask], int]]:
        out = []
        for step in self.flow.steps:
            if isinstance(step.spec, SourceSpec):
                mine = {t.index: t for t in self.sources if t.uid == step.uid}
                out.append((step, step.spec, mine, step.parallelism or self.parallelism))
        return out

    def assign(self, restored: dict[str, SourceRestore]) -> None:
        """Steps 1 and 2 (at setup)."""
        for step, spec, mine, p in self._steps():
            state = restored.get(step.uid)
            discovered = set(spec.source.discover_splits())
            known = discovered | (state.finished if state else set())
            for i, split in enumerate(sorted(known)):
                if (owner := mine.get(i % p)) is not None:
                    owner.add_split(
                        split,
                        state.positions.get(split) if state else None,
                        state.max_ts.get(split) if state else None,
                        bool(state and split in state.finished),
                    )
            self._rr[step.uid] = len(known)
            self._seen[step.uid] = known | (set(state.positions) if state else set())
            if state is None:
                continue
            for j, split in enumerate(sorted(set(state.positions) - known)):
                position = state.positions[split]
                if (owner := mine.get(j % p)) is not None:
                    owner.park(split, position, state.max_ts.get(split))
                log.warning(
                    "restored_split_not_discovered", uid=step.uid, split=split, position=position
                )

    def discover(self) -> None:
        """Step 3 (periodically), and open parked splits that reappeared."""
        for step, spec, mine, p in self._steps():
            subtasks = list(mine.values())
            known: set[str] = set().union(*(t.splits() for t in subtasks))
            discovered = set(spec.source.discover_splits())
            for task in subtasks:
                for split in sorted(discovered & set(task.parked)):
                    task.unpark(split)
                    log.info("restored_split_discovered", uid=step.uid, split=split)
            seen = self._seen.setdefault(step.uid, set())
            new = sorted(discovered - known - seen)
            seen.update(new)
            for split in new:
                if self.distributed:
                    owner = mine.get(split_subtask(split, p))
                else:
                    n = self._rr.get(step.uid, 0)
                    self._rr[step.uid] = n + 1
                    owner = subtasks[n % len(subtasks)]
                if owner is not None:
                    owner.add_split(split, None, None, False)
                    log.info("split_discovered", uid=step.uid, split=split)
