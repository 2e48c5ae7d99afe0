"""Restored split positions are never dropped: a split its source does not list at start
is kept in the snapshot and opened from its restored position once it is listed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rewind_engine import CollectSink, Dataflow
from rewind_engine.connectors.base import Source, SourceBatch, SourceContext, SplitReader
from rewind_engine.runtime.coordinator import COMPLETED
from rewind_engine.runtime.job import Job
from rewind_engine.settings import Settings
from rewind_engine.testing import make_settings


class ListedSource(Source):
    """Unbounded splits of records; `listed` is what discover_splits returns right now."""

    def __init__(self, records: dict[str, int], listed: set[str]) -> None:
        self.records = records  # split -> how many records it has
        self.listed = listed

    def discover_splits(self) -> list[str]:
        return sorted(self.listed)

    def bounded(self) -> bool:
        return False

    def open_split(self, split: str, position: Any | None, ctx: SourceContext) -> SplitReader:
        return _Reader(self, split, int(position or 0))


class _Reader(SplitReader):
    def __init__(self, source: ListedSource, split: str, at: int) -> None:
        self.source, self.split, self.at = source, split, at

    def poll(self, max_records: int) -> SourceBatch | None:
        end = min(self.source.records[self.split], self.at + max_records)
        if end <= self.at:
            return None
        records = [{"split": self.split, "n": n} for n in range(self.at, end)]
        self.at = end
        return SourceBatch(records)

    def position(self) -> Any:
        return self.at


def flow(source: ListedSource, seen: list[tuple[str, int]]) -> Dataflow:
    def record(r: dict[str, Any]) -> dict[str, Any]:
        seen.append((r["split"], r["n"]))
        return r

    f = Dataflow("listed")
    f.source("src", source).map("seen", record).sink("out", CollectSink())
    return f


def settings(tmp: Path, restore: str | None = None) -> Settings:
    s = make_settings(tmp, restore=restore)
    s.runtime.split_discovery_interval_s = 0.005
    return s


async def until(job: Job, cond: Callable[[], bool]) -> None:
    while not cond():
        assert job.state in ("RUNNING", "STOPPING"), job.error
        await asyncio.sleep(0.001)


def positions(job: Job) -> dict[str, Any]:
    sources: dict[str, dict[str, Any]] = job.status()["sources"]
    return sources["src"]


async def run_until(
    job: Job, cond: Callable[[], bool], *, savepoint: bool
) -> tuple[str, str | None]:
    """Run `job` until `cond`, then stop it with a savepoint (or cancel it)."""
    runner = asyncio.create_task(job.run())
    await until(job, lambda: job.ready)
    await until(job, cond)
    if not savepoint:
        job.cancel()
        return await runner, None
    req = job.trigger_savepoint(stop=True)
    state = await runner
    assert req.status == COMPLETED, req.error
    return state, req.target


def first_savepoint(tmp: Path) -> str:
    """A savepoint holding a at 5 and b at 5."""
    seen: list[tuple[str, int]] = []
    source = ListedSource({"a": 5, "b": 5}, {"a", "b"})
    job = Job(flow(source, seen), settings(tmp))
    state, uri = asyncio.run(
        run_until(job, lambda: positions(job) == {"a": 5, "b": 5}, savepoint=True)
    )
    assert state == "FINISHED"
    assert sorted(seen) == [(s, n) for s in "ab" for n in range(5)]
    assert uri is not None
    return uri


def test_a_restored_split_missing_at_start_is_opened_from_its_position_once_listed(
    tmp_path: Path,
) -> None:
    uri = first_savepoint(tmp_path)
    seen: list[tuple[str, int]] = []
    source = ListedSource({"a": 8, "b": 8}, {"a"})  # b is missing from the listing
    job = Job(flow(source, seen), settings(tmp_path, restore=uri))

    async def main() -> None:
        runner = asyncio.create_task(job.run())
        await until(job, lambda: job.ready)
        await until(job, lambda: positions(job)["a"] == 8)
        # b is not read, but its restored position is still reported (and snapshotted).
        assert positions(job) == {"a": 8, "b": 5}
        assert sorted(seen) == [("a", n) for n in range(5, 8)]
        source.listed.add("b")
        await until(job, lambda: positions(job)["b"] == 8)
        job.cancel()
        await runner

    asyncio.run(main())
    # b resumed at its restored position: nothing lost, nothing read twice.
    assert sorted(seen) == [(s, n) for s in "ab" for n in range(5, 8)]


def test_a_parked_split_survives_a_savepoint_taken_while_it_is_missing(
    tmp_path: Path,
) -> None:
    uri = first_savepoint(tmp_path)
    seen: list[tuple[str, int]] = []
    source = ListedSource({"a": 8, "b": 8}, {"a"})
    job = Job(flow(source, seen), settings(tmp_path, restore=uri))
    state, second = asyncio.run(run_until(job, lambda: positions(job)["a"] == 8, savepoint=True))
    assert state == "FINISHED"
    assert second is not None
    assert sorted(seen) == [("a", n) for n in range(5, 8)]
    # Restored from the second savepoint with b listed again: b continues from 5.
    seen.clear()
    source = ListedSource({"a": 8, "b": 8}, {"a", "b"})
    job = Job(flow(source, seen), settings(tmp_path, restore=second))
    asyncio.run(run_until(job, lambda: positions(job) == {"a": 8, "b": 8}, savepoint=False))
    assert sorted(seen) == [("b", n) for n in range(5, 8)]
