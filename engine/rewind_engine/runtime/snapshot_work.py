"""Snapshot work on the scheduler's own thread, in slices between batches.

Flows through here: the coordinator queues one generator per captured subtask (group
into key groups, encode, hand the bytes to the writer); the job's loop calls `run`
once per scheduler round, and `run` advances the generators for as long as the round's
share allows.

Why not a background thread: the task loop is pure Python and holds the GIL; a thread
that wants it back after each GIL release (every numpy call on a large array, every
sha256 of more than 2 KB, every file write) waits for the loop's switch interval (5 ms)
each time. Measured on a busy keyed count (bench/bench_checkpoint.py): 20-40 ms of CPU
work took 1-4 s of wall time, and most periodic checkpoints never completed. Here the
work runs without waiting for anyone, and its share of the loop is chosen, not fought
for.

What must stay true:
- while work is queued and the tasks are busy, snapshot work gets about `SHARE` of the
  loop's time (the tasks keep the rest: throughput during a checkpoint stays near
  1 - SHARE of steady); when the tasks are idle it gets up to `IDLE_SLICE_S` per round;
- a slice never starts a step after its deadline, and no credit piles up beyond
  `MAX_CREDIT_S` (a step of work is the longest pause the tasks see);
- work items run in the order they were queued, each to its end; an exception ends
  that item and is handed to its `on_error`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass

SHARE = 0.15
"""Share of the loop's time that queued snapshot work gets while the tasks are busy."""
MAX_CREDIT_S = 0.010
"""Most time saved up for one slice."""
IDLE_SLICE_S = 0.050
"""Slice length when the tasks did nothing this round (the loop would sleep instead)."""


@dataclass
class _Item:
    steps: Generator[None, None, None]
    on_error: Callable[[BaseException], None]


class SnapshotWork:
    """A FIFO of generator work items, advanced in budgeted slices by `run`."""

    def __init__(
        self,
        share: float = SHARE,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not 0 < share < 1:
            raise ValueError(f"share must be in (0, 1), got {share}")
        self._ratio = share / (1 - share)
        self._clock = clock
        self._items: deque[_Item] = deque()
        self._credit = 0.0
        self._mark = clock()

    @property
    def pending(self) -> bool:
        return bool(self._items)

    def add(
        self, steps: Generator[None, None, None], on_error: Callable[[BaseException], None]
    ) -> None:
        if not self._items:
            self._credit = 0.0
            self._mark = self._clock()  # time before any work was queued earns nothing
        self._items.append(_Item(steps, on_error))

    def clear(self) -> None:
        for item in self._items:
            item.steps.close()
        self._items.clear()

    def run(self, tasks_idle: bool) -> bool:
        """Advance the queued work for this round's share; True if any step ran."""
        if not self._items:
            return False
        now = self._clock()
        self._credit = min(MAX_CREDIT_S, self._credit + (now - self._mark) * self._ratio)
        budget = IDLE_SLICE_S if tasks_idle else self._credit
        ran = False
        if budget > 0:
            deadline = now + budget
            while self._items and self._clock() < deadline:
                item = self._items[0]
                ran = True
                try:
                    next(item.steps)
                except StopIteration:
                    self._items.popleft()
                except Exception as exc:  # the item's failure, not the loop's
                    self._items.popleft()
                    item.on_error(exc)
            end = self._clock()
            if not tasks_idle:
                self._credit -= end - now
            now = end
        self._mark = now
        return ran
