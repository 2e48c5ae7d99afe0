"""Watermark idleness: a split with no traffic stops holding event time back, on the
injected clock, and counts again once it produces (Flink's withIdleness)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rewind_engine import (
    BoundedOutOfOrderness,
    CollectSink,
    Dataflow,
    ManualClock,
    TumblingWindows,
)
from rewind_engine.connectors.base import Source, SourceBatch, SourceContext, SplitReader
from rewind_engine.eventtime import MIN_TS
from rewind_engine.runtime.job import Job
from rewind_engine.testing import make_settings


class FeedSource(Source):
    """Unbounded splits fed by the test: `feed[split]` is what the split has not yet read."""

    def __init__(self, splits: list[str]) -> None:
        self.feed: dict[str, list[Any]] = {s: [] for s in splits}

    def discover_splits(self) -> list[str]:
        return sorted(self.feed)

    def bounded(self) -> bool:
        return False

    def open_split(self, split: str, position: Any | None, ctx: SourceContext) -> SplitReader:
        return _FeedReader(self.feed.setdefault(split, []), int(position or 0))


class _FeedReader(SplitReader):
    def __init__(self, pending: list[Any], read: int) -> None:
        self.pending, self.read = pending, read

    def poll(self, max_records: int) -> SourceBatch | None:
        if not self.pending:
            return None
        records = self.pending[:max_records]
        del self.pending[:max_records]
        self.read += len(records)
        return SourceBatch(records)

    def position(self) -> Any:
        return self.read


async def until(job: Job, cond: Callable[[], bool]) -> None:
    while not cond():
        assert job.state == "RUNNING", job.error
        await asyncio.sleep(0.001)


def watermark(job: Job, uid: str) -> int:
    return min(t.watermark for t in job.tasks if t.uid == uid)


def records_in(job: Job, uid: str) -> int:
    return job.step_metrics()[uid][0]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_idle_split_does_not_hold_windows_back(tmp_path: Path, parallelism: int) -> None:
    """Splits a and b; b is silent. At parallelism 1 both are in one source subtask (the
    per-split minimum); at 2 each has its own subtask (b's subtask goes idle downstream)."""
    source = FeedSource(["a", "b"])
    clock = ManualClock(0)
    fired: list[tuple[int, int]] = []

    def seen(r: dict[str, Any]) -> dict[str, Any]:
        fired.append((r["start"], r["value"]))
        return r

    f = Dataflow("idle")
    strategy = BoundedOutOfOrderness(0, timestamp="ts").with_idleness(1000)
    (
        f.source("src", source, watermarks=strategy)
        .key_by("by", lambda r: "all")
        .window("win", TumblingWindows(1000), "count")
        .map("seen", seen)
        .sink("out", CollectSink())
    )
    settings = make_settings(tmp_path, parallelism=parallelism, clock=clock)

    async def main() -> None:
        job = Job(f, settings)
        runner = asyncio.create_task(job.run())
        await until(job, lambda: job.ready)
        # b is silent but not yet idle: it holds the watermark at its start.
        source.feed["a"] += [{"ts": 100}, {"ts": 1200}]
        await until(job, lambda: records_in(job, "win") == 2)
        assert watermark(job, "src") == MIN_TS
        assert watermark(job, "win") == MIN_TS
        assert fired == []
        # 1100 ms of processing time without a record from b: b is idle, a is not.
        clock.advance(1100)
        source.feed["a"].append({"ts": 1300})
        await until(job, lambda: len(fired) == 1)
        assert fired == [(0, 1)]
        assert watermark(job, "win") == 1299
        # b produces again and counts again: it now holds the watermark at 1500 - 1.
        source.feed["b"].append({"ts": 1500})
        await until(job, lambda: records_in(job, "win") == 4)
        source.feed["a"].append({"ts": 2500})
        await until(job, lambda: watermark(job, "win") >= 1499)
        assert watermark(job, "win") == 1499
        assert fired == [(0, 1)]
        source.feed["b"].append({"ts": 2600})
        await until(job, lambda: len(fired) == 2)
        assert fired == [(0, 1), (1000, 3)]
        job.cancel()
        assert await runner == "CANCELED"

    asyncio.run(main())


def test_idleness_settings() -> None:
    base = BoundedOutOfOrderness(200, timestamp="ts")
    assert base.idle_timeout_ms is None
    idle = base.with_idleness(5000)
    assert (idle.idle_timeout_ms, idle.max_out_of_orderness_ms, idle.timestamp) == (
        5000,
        200,
        "ts",
    )
    with pytest.raises(ValueError, match="idle_timeout_ms"):
        base.with_idleness(0)
