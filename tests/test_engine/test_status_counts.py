"""`/status` counts: records_in counts every record read by the sources once, whatever the
parallelism and however many branches read it; records_out sums what the sinks got."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from rewind_engine import CollectionSource, CollectSink, Dataflow
from rewind_engine.connectors.base import Source, SourceBatch, SourceContext, SplitReader
from rewind_engine.runtime.job import Job
from rewind_engine.testing import make_settings, run_job, source_position


@pytest.mark.parametrize("parallelism", [1, 2])
def test_exact_counts_of_a_bounded_flow(tmp_path: Path, parallelism: int) -> None:
    events, evens, tens = CollectSink(), CollectSink(), CollectSink()
    f = Dataflow("counts")
    src = f.source("src", CollectionSource(list(range(100)), splits=3))
    src.sink("all-out", events)
    src.filter("even", lambda n: n % 2 == 0).sink("even-out", evens)
    (
        src.flat_map("twice", lambda n: [n, n] if n % 10 == 0 else [])
        .key_by("by", lambda n: n)
        .count("per-n")
        .sink("tens-out", tens)
    )
    job = run_job(f, make_settings(tmp_path, parallelism=parallelism))
    assert job.state == "FINISHED", job.error
    status = job.status()
    assert status["records_in"] == 100
    # Three sinks: 100 + 50 + 20 records written.
    assert (len(events.committed), len(evens.committed), len(tens.committed)) == (100, 50, 20)
    assert status["records_out"] == 170
    counts = {
        uid: {k: v for k, v in step.items() if not k.endswith("_per_s")}
        for uid, step in status["steps"].items()
    }
    assert counts == {
        "src": {"records_in": 0, "records_out": 100},
        "all-out": {"records_in": 100, "records_out": 0},
        "even": {"records_in": 100, "records_out": 50},
        "even-out": {"records_in": 50, "records_out": 0},
        "twice": {"records_in": 100, "records_out": 20},
        "by": {"records_in": 20, "records_out": 20},
        "per-n": {"records_in": 20, "records_out": 20},
        "tens-out": {"records_in": 20, "records_out": 0},
    }


class _SlowToMakeDurable(SplitReader):
    """A reader whose durable position would wait (a Kafka reader with dead letters
    pending while the broker is down): only a barrier may ask for it."""

    def __init__(self) -> None:
        self.read = 0

    def poll(self, max_records: int) -> SourceBatch | None:
        if self.read >= 30:
            return None
        self.read += 10
        return SourceBatch(list(range(self.read - 10, self.read)))

    def position(self) -> int:
        raise AssertionError("/status asked for the durable position")

    def progress(self) -> int:
        return self.read


class _OneSplit(Source):
    def discover_splits(self) -> list[str]:
        return ["only"]

    def open_split(self, split: str, position: Any | None, ctx: SourceContext) -> SplitReader:
        return _SlowToMakeDurable()


def test_status_reports_progress_without_asking_for_a_durable_position(tmp_path: Path) -> None:
    f = Dataflow("status")
    f.source("src", _OneSplit()).sink("out", CollectSink())
    job = Job(f, make_settings(tmp_path))

    async def scenario() -> dict[str, Any]:
        run = asyncio.create_task(job.run())
        while source_position(job, "src") < 30:
            assert not run.done(), job.error
            await asyncio.sleep(0.01)
        status = job.status()
        job.cancel()
        assert await run == "CANCELED", job.error
        return status

    assert asyncio.run(scenario())["sources"] == {"src": {"only": 30}}
