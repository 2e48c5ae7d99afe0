"""A user function that raises fails the job with a message naming the step uid and, for
stateless steps, the record it raised on (runtime/step_errors.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rewind_engine import CollectionSource, CollectSink, Dataflow
from rewind_engine.dataflow import FlowError
from rewind_engine.runtime.elements import Batch
from rewind_engine.runtime.operators import FlatMapOp, MapOp
from rewind_engine.runtime.step_errors import (
    RECORD_REPR_CHARS,
    StepError,
    split_failures,
    step_error,
)
from rewind_engine.testing import make_settings, run_job

EVENTS: list[dict[str, Any]] = [{"post": f"p{i}", "kind": "view"} for i in range(40)]
EVENTS[17] = {"post": "p17"}  # no "kind": the user's key function raises on it


def _failed_with(tmp_path: Path, f: Dataflow, parallelism: int = 1) -> str:
    job = run_job(f, make_settings(tmp_path, parallelism=parallelism))
    assert job.state == "FAILED"
    return job.error or ""


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_key_function_error_names_the_step_and_the_record(
    tmp_path: Path, parallelism: int
) -> None:
    f = Dataflow("errors")
    (
        f.source("events", CollectionSource(EVENTS, splits=2))
        .key_by("by-kind", lambda e: e["kind"])
        .count("per-kind")
        .sink("out", CollectSink())
    )
    error = _failed_with(tmp_path, f, parallelism)
    assert error == "step 'by-kind' failed on record {'post': 'p17'}: KeyError: 'kind'"


def test_a_flat_map_that_raises_while_iterating_names_its_record(tmp_path: Path) -> None:
    def words(e: dict[str, Any]) -> Any:
        yield e["post"]
        yield e["kind"]

    f = Dataflow("errors")
    f.source("events", CollectionSource(EVENTS)).flat_map("words", words).sink("out", CollectSink())
    assert "step 'words' failed on record {'post': 'p17'}: KeyError" in _failed_with(tmp_path, f)


def test_a_stateful_step_is_named_without_calling_its_function_again(tmp_path: Path) -> None:
    calls: list[Any] = []

    def add(acc: int, value: int) -> int:
        calls.append(value)
        if value == 3:
            raise ValueError("three is not allowed")
        return acc + value

    f = Dataflow("errors")
    (
        f.source("numbers", CollectionSource([1, 2, 3, 4]))
        .key_by("one-key", lambda n: 0)
        .reduce("total", add)
        .sink("out", CollectSink())
    )
    error = _failed_with(tmp_path, f)
    assert error == "step 'total' failed: ValueError: three is not allowed"
    assert calls.count(3) == 1  # the failing value was reduced once, not again


def test_the_record_is_named_only_when_the_function_fails_on_it_again() -> None:
    # A function that failed for a reason other than its input (here: the first call
    # only) does not get a record pinned on it.
    seen: list[int] = []

    def flaky(n: int) -> int:
        seen.append(n)
        if len(seen) == 1:
            raise TimeoutError("first call")
        return n

    with pytest.raises(TimeoutError) as raised:
        flaky(1)
    error = step_error("m", MapOp(flaky), [1, 2, 3], raised.value)
    assert seen == [1, 1, 2, 3]  # called again on each record, none of which raised
    assert str(error) == "step 'm' failed: TimeoutError: first call" and error.record is None


def test_long_and_unprintable_records_are_quoted_safely() -> None:
    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    def boom(record: Any) -> Any:
        raise ValueError("boom")

    long = "x" * 1000
    error = step_error("m", MapOp(boom), [long], ValueError("boom"))
    assert isinstance(error, StepError) and error.record == long
    assert f"'{'x' * (RECORD_REPR_CHARS - 1)}..." in str(error)
    assert "<unprintable Bad: RuntimeError>" in str(
        step_error("m", MapOp(boom), [Bad()], ValueError())
    )


# -- on_error="side": failed records become a stream of their own --------------------


@pytest.mark.parametrize("parallelism", [1, 2])
def test_failed_records_go_to_the_errors_stream_and_the_rest_goes_on(
    tmp_path: Path, parallelism: int
) -> None:
    kinds, counts, kind_errors, key_errors = (
        CollectSink(),
        CollectSink(),
        CollectSink(),
        CollectSink(),
    )
    f = Dataflow("errors")
    events = f.source("events", CollectionSource(EVENTS, splits=2))
    as_kind = events.map("kind-of", lambda e: e["kind"], on_error="side")
    as_kind.sink("kinds", kinds)
    as_kind.errors.sink("kind-errors", kind_errors)
    by_kind = events.key_by("by-kind", lambda e: e["kind"], on_error="side")
    by_kind.count("per-kind").sink("counts", counts)
    by_kind.errors.sink("key-errors", key_errors)  # an unkeyed edge out of a key_by
    job = run_job(f, make_settings(tmp_path, parallelism=parallelism))
    assert job.state == "FINISHED", job.error
    assert kinds.committed == ["view"] * 39
    assert max(c for _k, c in counts.committed) == 39
    error = {"error": "KeyError: 'kind'", "record": {"post": "p17"}}
    assert kind_errors.committed == [{"step": "kind-of", **error}]
    assert key_errors.committed == [{"step": "by-kind", **error}]


def test_split_failures_keeps_order_and_event_time() -> None:
    def items(n: int) -> Any:
        yield n
        if n % 3 == 0:
            raise ValueError(f"{n} is a multiple of three")
        yield -n

    batch = Batch([1, 2, 3, 4, 6], [10, 20, 30, 40, 60])
    good, failed = split_failures("pairs", FlatMapOp(items), batch)
    assert (good.records, good.timestamps) == ([1, 2, 4], [10, 20, 40])
    assert failed.timestamps == [30, 60]
    assert [e["error"] for e in failed.records] == [
        "ValueError: 3 is a multiple of three",
        "ValueError: 6 is a multiple of three",
    ]
    without_time = split_failures("pairs", FlatMapOp(items), Batch([3, 1]))
    assert without_time[0].timestamps is None and without_time[1].timestamps is None


def test_a_batch_that_fails_as_a_whole_still_fails_the_job(tmp_path: Path) -> None:
    # The function passes on every record alone, but not on the batch: nothing to set
    # aside, so the job fails instead of dropping records.
    state = {"calls": 0}

    def third_call_fails(e: Any) -> Any:
        state["calls"] += 1
        if state["calls"] == 3:
            raise RuntimeError("only the third call fails")
        return e

    f = Dataflow("errors")
    mapped = f.source("n", CollectionSource([1, 2, 3])).map("m", third_call_fails, on_error="side")
    mapped.sink("out", CollectSink())
    mapped.errors.sink("dead", CollectSink())
    error = _failed_with(tmp_path, f)
    assert error == "step 'm' failed: RuntimeError: only the third call fails"


def test_errors_streams_are_checked_when_the_flow_is_built() -> None:
    f = Dataflow("errors")
    events = f.source("events", CollectionSource(EVENTS))
    with pytest.raises(FlowError, match=r"pass on_error='side' to use \.errors"):
        _ = events.map("plain", lambda e: e).errors
    with pytest.raises(FlowError, match="on_error must be 'fail' or 'side'"):
        events.map("skip", lambda e: e, on_error="skip")  # type: ignore[arg-type]
    keyed = events.key_by("k", "kind", on_error="side")
    keyed.errors.key_by("by-step", "step").count("errors-per-step")  # keyed again: fine
    f.validate()
