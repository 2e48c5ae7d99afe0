"""In-memory connectors for tests and benchmarks: a list as a source, a list as a sink.

`CollectionSource(records)` replays a list (position = index; resettable like any
source). `CollectSink()` keeps committed output in `.committed` with the same two-phase
protocol as the file sink, so in-process tests can check exactly-once behaviour.
"""

from __future__ import annotations

from typing import Any

from .base import Sink, SinkContext, SinkWriter, Source, SourceBatch, SourceContext, SplitReader


class CollectionSource(Source):
    """Replays `records` (optionally with event timestamps), split into `splits` slices."""

    def __init__(
        self,
        records: list[Any],
        *,
        timestamps: list[int] | None = None,
        splits: int = 1,
        bounded: bool = True,
    ) -> None:
        self.records = records
        self.timestamps = timestamps
        self.n_splits = splits
        self._bounded = bounded

    def discover_splits(self) -> list[str]:
        return [f"part-{i}" for i in range(self.n_splits)]

    def bounded(self) -> bool:
        return self._bounded

    def open_split(self, split: str, position: Any | None, ctx: SourceContext) -> SplitReader:
        i = int(split.removeprefix("part-"))
        n = len(self.records)
        lo, hi = i * n // self.n_splits, (i + 1) * n // self.n_splits
        return _SliceReader(self, lo, hi, lo + int(position or 0))


class _SliceReader(SplitReader):
    def __init__(self, source: CollectionSource, lo: int, hi: int, at: int) -> None:
        self.s, self.lo, self.hi, self.at = source, lo, hi, at

    def poll(self, max_records: int) -> SourceBatch | None:
        end = min(self.hi, self.at + max_records)
        if end <= self.at:
            return SourceBatch([], finished=True) if self.s._bounded else None
        records = self.s.records[self.at : end]
        ts = self.s.timestamps[self.at : end] if self.s.timestamps is not None else None
        self.at = end
        return SourceBatch(records, ts, self.s._bounded and end >= self.hi)

    def position(self) -> Any:
        return self.at - self.lo


class CollectSink(Sink):
    """Committed records land in `.committed` (a list shared by all subtasks)."""

    def __init__(self) -> None:
        self.committed: list[Any] = []
        self.staged: dict[str, list[Any]] = {}
        self._done: set[str] = set()

    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        writer = _CollectWriter(self, ctx)
        for committable in restored:
            writer.commit(-1, committable)
        return writer


class _CollectWriter(SinkWriter):
    def __init__(self, sink: CollectSink, ctx: SinkContext) -> None:
        self.sink, self.ctx = sink, ctx
        self.buffer: list[Any] = []

    def write(self, records: list[Any]) -> None:
        self.buffer.extend(records)

    def pre_commit(self, checkpoint_id: int) -> Any:
        if not self.buffer:
            return None
        name = f"{self.ctx.attempt}-{self.ctx.subtask}-{checkpoint_id}"
        self.sink.staged[name] = self.buffer
        self.buffer = []
        return name

    def commit(self, checkpoint_id: int, committable: Any) -> None:
        if committable in self.sink._done:
            return
        staged = self.sink.staged.pop(committable, None)
        if staged is None:
            return  # staged by another CollectSink (an earlier run), which committed it
        self.sink._done.add(committable)
        self.sink.committed.extend(staged)
