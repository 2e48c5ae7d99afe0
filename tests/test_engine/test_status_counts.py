"""`/status` counts: records_in counts every record read by the sources once, whatever the
parallelism and however many branches read it; records_out sums what the sinks got."""

from __future__ import annotations

from pathlib import Path

import pytest
from rewind_engine import CollectionSource, CollectSink, Dataflow
from rewind_engine.testing import make_settings, run_job


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
