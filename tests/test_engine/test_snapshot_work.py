"""Snapshot work in slices on the scheduler's thread: share, order, errors, and that the
sliced encoding and grouping give exactly the bytes of the one-go versions."""

from __future__ import annotations

from collections.abc import Generator

import pytest
import rewind_engine.runtime.aggregate_state as agg
from rewind_engine.keys import KeyGrouper
from rewind_engine.runtime import snapshot_work
from rewind_engine.runtime.aggregate_state import (
    AggregateCapture,
    KeyIndex,
    columns_by_key_group,
    columns_by_key_group_steps,
)
from rewind_engine.runtime.snapshot_work import SnapshotWork
from rewind_engine.snapshots import encoder


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def steps(clock: FakeClock, log: list[str], name: str, n: int, cost: float) -> Generator[None]:
    for i in range(n):
        clock.t += cost
        log.append(f"{name}{i}")
        yield


def test_busy_tasks_give_the_work_its_share_and_no_more() -> None:
    clock = FakeClock()
    work = SnapshotWork(share=0.2, clock=clock)
    log: list[str] = []
    work.add(steps(clock, log, "a", 1000, 0.001), pytest.fail)
    for _ in range(400):  # 400 rounds of 4 ms of task work each
        clock.t += 0.004
        work.run(tasks_idle=False)
    # 1.6 s of tasks earn 0.4 s of work at share 0.2 (ratio 1/4), one 1 ms step of slack.
    assert 399 <= len(log) <= 401


def test_idle_tasks_give_the_work_a_long_slice_and_items_run_in_order() -> None:
    clock = FakeClock()
    work = SnapshotWork(clock=clock)
    log: list[str] = []
    work.add(steps(clock, log, "a", 2, 0.001), pytest.fail)
    work.add(steps(clock, log, "b", 2, 0.001), pytest.fail)
    assert work.run(tasks_idle=True)
    assert log == ["a0", "a1", "b0", "b1"]
    assert not work.pending
    assert not work.run(tasks_idle=True)


def test_a_failing_item_reports_its_error_and_the_next_one_runs() -> None:
    clock = FakeClock()
    work = SnapshotWork(clock=clock)
    log: list[str] = []
    errors: list[BaseException] = []

    def bad() -> Generator[None]:
        yield
        raise ValueError("cannot encode")

    work.add(bad(), errors.append)
    work.add(steps(clock, log, "b", 1, 0.001), pytest.fail)
    work.run(tasks_idle=True)
    assert [str(e) for e in errors] == ["cannot encode"]
    assert log == ["b0"]


def test_a_slice_never_lasts_beyond_the_credit_cap() -> None:
    clock = FakeClock()
    work = SnapshotWork(share=0.5, clock=clock)
    log: list[str] = []
    work.add(steps(clock, log, "a", 1000, 0.001), pytest.fail)
    clock.t += 10.0  # a long round: credit is capped
    work.run(tasks_idle=False)
    # Steps start until the deadline: at most one step beyond the cap.
    assert len(log) <= round(snapshot_work.MAX_CREDIT_S / 0.001) + 1


def test_share_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="share must be in"):
        SnapshotWork(share=1.0)


def test_encode_steps_yields_and_gives_the_bytes_of_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder, "STEP_BYTES", 64)
    keyed = {kg: {f"key-{kg}-{i}": i for i in range(20)} for kg in range(8)}
    whole = encoder.encode("count", 0, keyed, {"wm": 3})
    gen = encoder.encode_steps("count", 0, keyed, {"wm": 3})
    yields = 0
    while True:
        try:
            next(gen)
            yields += 1
        except StopIteration as done:
            sliced = done.value
            break
    assert yields >= 7
    assert sliced == whole


def test_grouping_in_steps_equals_grouping_in_one_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agg, "LEARN_STEP", 100)
    keys = list(range(0, 10_000, 7))
    capture = AggregateCapture(keys, len(keys), list(range(len(keys))))
    grouper = KeyGrouper(128)
    one = columns_by_key_group(capture, KeyIndex(), grouper)
    gen = columns_by_key_group_steps(capture, KeyIndex(), grouper)
    yields = 0
    while True:
        try:
            next(gen)
            yields += 1
        except StopIteration as done:
            sliced = done.value
            break
    assert yields > len(keys) // 100
    assert sliced.keys() == one.keys()
    for kg, cols in one.items():
        assert list(sliced[kg].keys) == list(cols.keys)
        assert list(sliced[kg].values) == list(cols.values)
