"""A user function that raises fails the job with a message naming the step uid and, for
stateless steps, the record it raised on (runtime/step_errors.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rewind_engine import CollectionSource, CollectSink, Dataflow
from rewind_engine.runtime.operators import MapOp
from rewind_engine.runtime.step_errors import RECORD_REPR_CHARS, StepError, step_error
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
