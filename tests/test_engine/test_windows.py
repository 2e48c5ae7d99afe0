"""Event-time windows and timers: assignment, lateness, side outputs, timers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewind_engine import (
    BoundedOutOfOrderness,
    CollectionSource,
    CollectSink,
    Dataflow,
    KeyedContext,
    KeyedProcess,
    ManualClock,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
)
from rewind_engine.testing import make_settings, run_job


def test_assigners() -> None:
    assert TumblingWindows(1000).assign(1999) == [(1000, 2000)]
    assert TumblingWindows(1000).assign(-1) == [(-1000, 0)]
    assert sorted(SlidingWindows(2000, 1000).assign(2500)) == [(1000, 3000), (2000, 4000)]
    assert SessionWindows(500).assign(10) == [(10, 510)]


def windowed(
    tmp: Path, records: list[dict[str, Any]], assigner: Any, **kw: Any
) -> tuple[list[Any], list[Any]]:
    out, late = CollectSink(), CollectSink()
    f = Dataflow("w")
    src = f.source(
        "src",
        CollectionSource(records),
        watermarks=BoundedOutOfOrderness(0, timestamp="ts"),
    )
    w = src.key_by("by", "k").window("win", assigner, "count", **kw)
    w.sink("out", out)
    if kw.get("late") == "side":
        w.late.sink("late", late)
    job = run_job(f, make_settings(tmp, batch_size=1))
    assert job.state == "FINISHED", job.error
    return out.committed, late.committed


def test_tumbling_with_allowed_lateness_and_side_output(tmp_path: Path) -> None:
    ts = [1000, 1500, 2100, 1800, 2600, 1900]
    recs = [{"k": "a", "ts": t} for t in ts]
    results, late = windowed(
        tmp_path, recs, TumblingWindows(1000), allowed_lateness_ms=500, late="side"
    )
    assert [(r["start"], r["value"]) for r in results] == [(1000, 2), (1000, 3), (2000, 2)]
    assert late == [{"k": "a", "ts": 1900}]


def test_late_records_are_dropped_by_default(tmp_path: Path) -> None:
    recs = [{"k": "a", "ts": t} for t in (1000, 2500, 1200)]
    results, _ = windowed(tmp_path, recs, TumblingWindows(1000))
    assert [(r["start"], r["value"]) for r in results] == [(1000, 1), (2000, 1)]


def test_sliding_windows(tmp_path: Path) -> None:
    recs = [{"k": "a", "ts": t} for t in (500, 1500, 2500)]
    results, _ = windowed(tmp_path, recs, SlidingWindows(2000, 1000))
    got = sorted((r["start"], r["value"]) for r in results)
    assert got == [(-1000, 1), (0, 2), (1000, 2), (2000, 1)]


def test_session_windows_merge(tmp_path: Path) -> None:
    recs = [
        {"k": k, "ts": t} for k, t in [("a", 0), ("b", 100), ("a", 300), ("a", 700), ("a", 2000)]
    ]
    results, _ = windowed(tmp_path, recs, SessionWindows(500))
    got = sorted((r["key"], r["start"], r["end"], r["value"]) for r in results)
    assert got == [("a", 0, 1200, 3), ("a", 2000, 2500, 1), ("b", 100, 600, 1)]


class Timeouts(KeyedProcess):
    """Counts per key; an event-time timer 1 s after the first record emits the count, a
    processing-time timer emits ("tick", key)."""

    def process(self, key: Any, record: Any, ctx: KeyedContext) -> Any:
        n = ctx.value("n", 0)
        if n.get() == 0:
            assert ctx.timestamp is not None
            ctx.register_event_timer(ctx.timestamp + 1000)
            ctx.register_processing_timer(ctx.now() + 50)
        n.set(n.get() + 1)
        return None

    def on_timer(self, key: Any, timestamp: int, ctx: KeyedContext) -> Any:
        if ctx.time_domain == "processing":
            return [("tick", key)]
        out = [(key, timestamp, ctx.value("n", 0).get())]
        ctx.value("n").clear()
        return out


def test_event_and_processing_time_timers(tmp_path: Path) -> None:
    clock = ManualClock(0)
    pairs = [("a", 0), ("a", 500), ("b", 600), ("a", 1200), ("b", 3000), ("a", 3100)]
    recs = [{"k": k, "ts": t} for k, t in pairs]
    out = CollectSink()
    f = Dataflow("t")
    src = f.source("src", CollectionSource(recs), watermarks=BoundedOutOfOrderness(0, "ts"))
    src.key_by("by", "k").process("timeouts", Timeouts()).sink("out", out)
    job = run_job(f, make_settings(tmp_path, batch_size=1, clock=clock))
    assert job.state == "FINISHED"
    # A timer fires when the watermark passes it; the watermark follows the batch (of one
    # record here), so a@1200 is counted before a's timer at 1000 fires (as in Flink).
    assert [r for r in out.committed if r[0] != "tick"] == [
        ("a", 1000, 3),
        ("b", 1600, 2),
        ("a", 4100, 1),
    ]
    assert not [r for r in out.committed if r[0] == "tick"], "the clock never moved"
    # Processing time: the same job with a clock that moves fires the ticks.
    clock2 = ManualClock(0)

    class Moving(Timeouts):
        def process(self, key: Any, record: Any, ctx: KeyedContext) -> Any:
            super().process(key, record, ctx)
            clock2.advance(100)

    out2 = CollectSink()
    f2 = Dataflow("t2")
    src2 = f2.source("src", CollectionSource(recs), watermarks=BoundedOutOfOrderness(0, "ts"))
    src2.key_by("by", "k").process("timeouts", Moving()).sink("out", out2)
    run_job(f2, make_settings(tmp_path / "2", batch_size=1, clock=clock2))
    assert sorted(r for r in out2.committed if r[0] == "tick") == [
        ("tick", "a"),
        ("tick", "a"),
        ("tick", "b"),
    ]
