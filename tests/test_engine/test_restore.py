"""Savepoints and restore in-process: rescaling, uid matching, event time across restore."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rewind_engine import (
    BoundedOutOfOrderness,
    CollectSink,
    Dataflow,
    GeneratorSource,
    KeyedContext,
    KeyedProcess,
    TumblingWindows,
    skewed,
)
from rewind_engine.runtime.job import Job
from rewind_engine.testing import (
    Gate,
    make_settings,
    run_and_savepoint,
    run_job,
    source_position,
)

TOTAL = 6000


def event(seq: int) -> dict[str, Any]:
    return {"seq": seq, "k": f"key-{skewed(seq, 40, 2.0)}", "ts": seq * 10 - (seq % 7) * 15}


class FirstAndTimer(KeyedProcess):
    """Per key, buffers timestamps in list state and at an event-time timer at the end of
    each second emits how many fell in that second (deterministic whatever the batching
    or the interleaving of splits, as event-time results must be)."""

    def process(self, key: Any, record: Any, ctx: KeyedContext) -> Any:
        ts = ctx.timestamp
        assert ts is not None
        ctx.list("ts").add(ts)
        ctx.register_event_timer(ts - ts % 1000 + 999)
        return None

    def on_timer(self, key: Any, timestamp: int, ctx: KeyedContext) -> Any:
        buffered = ctx.list("ts")
        due = [t for t in buffered.get() if t <= timestamp]
        buffered.update(t for t in buffered.get() if t > timestamp)
        return [("timer", key, timestamp, len(due))]


def build(
    gate: Gate | None, *, with_count: bool = True, with_windows: bool = False
) -> tuple[Dataflow, dict[str, CollectSink]]:
    sinks = {"counts": CollectSink(), "windows": CollectSink(), "timers": CollectSink()}
    f = Dataflow("restore-test")
    gen = GeneratorSource(
        event, total=TOTAL, splits=2, rate=2.0 if gate else None, monotonic=gate or (lambda: 0.0)
    )
    wm = BoundedOutOfOrderness(100, timestamp="ts")
    src = f.source("src", gen, watermarks=wm)
    keyed = src.key_by("by-key", "k")
    if with_count:
        keyed.count("count").sink("counts-out", sinks["counts"])
    if with_windows:
        keyed.window("win", TumblingWindows(1000), "count").sink("win-out", sinks["windows"])
        keyed.process("timers", FirstAndTimer()).sink("timers-out", sinks["timers"])
    return f, sinks


def final_counts(records: list[Any]) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for key, n in records:
        out[key] = max(out.get(key, 0), n)
    return out


def savepoint_at(
    tmp: Path, cut: int, parallelism: int, **kw: Any
) -> tuple[str, dict[str, CollectSink]]:
    gate = Gate()
    flow, sinks = build(gate, **kw)
    job, req = run_and_savepoint(
        flow,
        make_settings(tmp, parallelism=parallelism),
        # rate 2/s over 2 splits: each split may produce cut/2 records
        start=lambda: gate.open(cut / 2),
        when=lambda j: source_position(j, "src") >= cut,
    )
    assert job.state == "FINISHED", job.error
    assert req.status == "COMPLETED", req.error
    return req.target, sinks


def test_rescale_from_2_to_1_and_3_gives_the_same_counts(tmp_path: Path) -> None:
    flow, sinks = build(None)
    run_job(flow, make_settings(tmp_path / "plain"))
    expected = sinks["counts"].committed
    assert len(expected) == TOTAL
    uri, before = savepoint_at(tmp_path / "a", 2500, parallelism=2)
    assert len(before["counts"].committed) == 2500
    for p in (1, 3):
        flow2, after = build(None)
        job = run_job(flow2, make_settings(tmp_path / f"p{p}", parallelism=p, restore=uri))
        assert job.state == "FINISHED", job.error
        both = before["counts"].committed + after["counts"].committed
        assert Counter(both) == Counter(expected), f"parallelism {p}"
        assert final_counts(both) == final_counts(expected)


def test_windows_and_timers_are_identical_across_savepoint_and_restore(tmp_path: Path) -> None:
    flow, plain = build(None, with_windows=True)
    run_job(flow, make_settings(tmp_path / "plain", parallelism=2))
    assert plain["windows"].committed and plain["timers"].committed
    uri, before = savepoint_at(tmp_path / "a", 3000, parallelism=2, with_windows=True)
    flow2, after = build(None, with_windows=True)
    job = run_job(flow2, make_settings(tmp_path / "b", parallelism=3, restore=uri))
    assert job.state == "FINISHED", job.error
    for name in ("windows", "timers", "counts"):
        got = before[name].committed + after[name].committed
        key = repr
        assert sorted(got, key=key) == sorted(plain[name].committed, key=key), name


def test_state_of_a_removed_step_is_an_error_naming_the_uid(tmp_path: Path) -> None:
    uri, _ = savepoint_at(tmp_path / "a", 1000, parallelism=1)
    flow, _ = build(None, with_count=False)
    job = run_job(flow, make_settings(tmp_path / "b", restore=uri))
    assert job.state == "FAILED"
    assert "count" in (job.error or "") and "--allow-non-restored-state" in (job.error or "")
    flow, _ = build(None, with_count=False)
    job = run_job(flow, make_settings(tmp_path / "c", restore=uri, allow=True))
    assert job.state == "FINISHED", job.error


def test_a_uid_that_changed_kind_is_an_error(tmp_path: Path) -> None:
    uri, _ = savepoint_at(tmp_path / "a", 1000, parallelism=1)
    f = Dataflow("changed")
    src = f.source("src", GeneratorSource(event, total=TOTAL, splits=2))
    src.key_by("by-key", "k").reduce("count", lambda a, b: a).sink("counts-out", CollectSink())
    job = run_job(f, make_settings(tmp_path / "b", restore=uri))
    assert job.state == "FINISHED", "same kind (aggregate): restores"
    g = Dataflow("changed-kind")
    src = g.source("src", GeneratorSource(event, total=TOTAL, splits=2))
    src.key_by("by-key", "k").process("count", FirstAndTimer()).sink("counts-out", CollectSink())
    job = run_job(g, make_settings(tmp_path / "c", restore=uri))
    assert job.state == "FAILED"
    assert "uid 'count' was a step of kind 'aggregate' and is now of kind 'process'" in (
        job.error or ""
    )


def test_a_count_refuses_state_that_is_not_counts_naming_the_uid(tmp_path: Path) -> None:
    gate = Gate()
    f = Dataflow("sums")
    gen = GeneratorSource(event, total=TOTAL, splits=2, rate=2.0, monotonic=gate)
    src = f.source("src", gen)
    src.key_by("by-key", "k").sum("count", lambda e: 0.5).sink("counts-out", CollectSink())
    job, req = run_and_savepoint(
        f,
        make_settings(tmp_path / "a", parallelism=1),
        start=lambda: gate.open(500),
        when=lambda j: source_position(j, "src") >= 1000,
    )
    assert req.status == "COMPLETED", req.error
    flow, _ = build(None)
    job = run_job(flow, make_settings(tmp_path / "b", restore=req.target))
    assert job.state == "FAILED"
    error = job.error or ""
    assert f"cannot restore from {req.target}: step 'count'" in error, error
    assert "a count must be an integer, got float" in error, error


def test_changed_max_parallelism_is_a_clear_error(tmp_path: Path) -> None:
    uri, _ = savepoint_at(tmp_path / "a", 1000, parallelism=1)
    flow, _ = build(None)
    job = run_job(flow, make_settings(tmp_path / "b", restore=uri, max_parallelism=64))
    assert job.state == "FAILED"
    assert "max_parallelism 128" in (job.error or "") and "64" in (job.error or "")


def test_drain_fires_every_window_before_the_savepoint(tmp_path: Path) -> None:
    gate = Gate()
    flow, sinks = build(gate, with_windows=True)
    _job, req = run_and_savepoint(
        flow,
        make_settings(tmp_path, parallelism=2),
        start=lambda: gate.open(500),
        when=lambda j: source_position(j, "src") >= 1000,
        drain=True,
    )
    assert req.status == "COMPLETED"
    ends = {r["end"] for r in sinks["windows"].committed}
    assert max(ends) >= max(event(s)["ts"] for s in range(1000))


def test_a_failed_savepoint_leaves_the_job_running(tmp_path: Path) -> None:
    gate = Gate()
    flow, sinks = build(gate)
    job, req = run_and_savepoint(
        flow,
        make_settings(tmp_path),
        start=lambda: gate.open(500),
        when=lambda j: source_position(j, "src") >= 1000,
        target="ftp://nowhere/sp",
        then=gate.open,
    )
    assert req.status == "FAILED"
    assert "ftp" in (req.error or "")
    assert job.state == "FINISHED"  # resumed after the failed stop, then ran to the end
    assert len(sinks["counts"].committed) == TOTAL


def test_savepoint_failing_in_the_background_resumes_a_stop(tmp_path: Path) -> None:
    gate = Gate()
    flow, sinks = build(gate)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the savepoint folder should go")

    async def main() -> tuple[Job, Any]:
        job = Job(flow, make_settings(tmp_path))
        task = asyncio.create_task(job.run())
        while not job.ready:
            await asyncio.sleep(0.001)
        gate.open(500)
        while source_position(job, "src") < 1000:
            await asyncio.sleep(0.001)
        req = job.trigger_savepoint(f"file://{blocker}/sp", stop=True)
        while req.status == "IN_PROGRESS":
            await asyncio.sleep(0.001)
        assert job.state == "RUNNING"
        gate.open()
        await task
        return job, req

    job, req = asyncio.run(main())
    assert req.status == "FAILED" and str(blocker) in (req.error or "")
    assert job.state == "FINISHED"
    assert len(sinks["counts"].committed) == TOTAL


@pytest.mark.parametrize("parallelism", [1, 2])
def test_checkpoints_are_pruned_to_the_retained_number(tmp_path: Path, parallelism: int) -> None:
    gate = Gate()
    flow, _ = build(gate)
    settings = make_settings(tmp_path, parallelism=parallelism, interval=0.001)
    settings.snapshots.checkpoints_retained = 2

    async def main() -> Job:
        job = Job(flow, settings)
        task = asyncio.create_task(job.run())
        while not (job.last_checkpoint and job.coordinator.next_checkpoint_id > 8):
            gate.t += 5
            await asyncio.sleep(0.002)
        gate.open()
        await task
        return job

    job = asyncio.run(main())
    folder = tmp_path / "snapshots" / "checkpoints" / job.job_id
    done = [p for p in folder.iterdir() if (p / "manifest.json").exists()]
    assert 1 <= len(done) <= 3  # 2 kept + possibly the last one before pruning ran
