"""Dataflow building: mandatory unique uids, errors before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from rewind_engine import (
    CollectionSource,
    CollectSink,
    Dataflow,
    FlowError,
    KeyedProcess,
    TumblingWindows,
)
from rewind_engine.runtime.job import Job
from rewind_engine.testing import make_settings


def test_missing_uid_is_rejected() -> None:
    f = Dataflow("x")
    with pytest.raises(FlowError, match="needs a uid"):
        f.source("", CollectionSource([1]))
    src = f.source("src", CollectionSource([1]))
    with pytest.raises(FlowError, match="needs a uid"):
        src.map(None, lambda r: r)  # type: ignore[arg-type]


def test_duplicate_uid_names_both_places() -> None:
    f = Dataflow("x")
    src = f.source("src", CollectionSource([1]))
    src.map("double", lambda r: r * 2)
    with pytest.raises(
        FlowError, match=r"duplicate uid 'double', already used by .*test_dataflow.py"
    ):
        src.map("double", lambda r: r)


def test_malformed_uid_is_rejected() -> None:
    f = Dataflow("x")
    with pytest.raises(FlowError, match="not valid"):
        f.source("has space", CollectionSource([1]))


def test_window_without_event_time_fails_validation_before_running(tmp_path: Path) -> None:
    f = Dataflow("x")
    f.source("src", CollectionSource([1])).key_by("k", lambda r: r).window(
        "w", TumblingWindows(10)
    ).sink("out", CollectSink())
    with pytest.raises(FlowError, match="window 'w' needs event time"):
        Job(f, make_settings(tmp_path))


def test_flow_without_source_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match="no source"):
        Job(Dataflow("empty"), make_settings(tmp_path))


def test_process_needs_a_keyed_process() -> None:
    f = Dataflow("x")
    keyed = f.source("src", CollectionSource([1])).key_by("k", lambda r: r)
    with pytest.raises(FlowError, match="KeyedProcess"):
        keyed.process("p", lambda k, r, c: None)
    keyed.process("p", KeyedProcess())


def test_parallelism_above_max_parallelism_fails_before_running(tmp_path: Path) -> None:
    f = Dataflow("x")
    f.source("src", CollectionSource([1])).sink("out", CollectSink())
    with pytest.raises(ValueError, match=r"step 'src'.*max_parallelism"):
        Job(f, make_settings(tmp_path, parallelism=8, max_parallelism=4))
