"""Keyed count: the engine next to plain Python loops over the same records, in one run.

N post events ({"post": "p<k>", "kind": ...}, K posts, skewed) are made in memory once.
Every contender counts events per post over that same list:

  Counter loop     for r in records: c[r["post"]] += 1   (plain Python, the reference)
  Counter.update   c.update(map(itemgetter("post"), records))   (C speed: the ceiling)
  engine batch     CollectionSource -> key_by("post") -> count(emit="batch") -> sink,
                   checkpoints to file:// every --checkpoint-interval seconds
  engine each      the same with emit="each": one (post, count) record per input record
  engine batch p2  engine batch with parallelism 2 (hash routing by key group; still one
                   process, so this shows the routing cost, not a speed-up)

The engine runs everything in one process on one core; figures are records per second of
wall time (setup included) and per second of this process's CPU time. Target: engine
batch >= 400 K records/s per core.

    .venv/bin/python bench/bench_keyed_count.py [--events N] [--keys K] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import structlog
from rewind_engine import CollectionSource, Dataflow, Sink, SinkContext, SinkWriter, skewed
from rewind_engine.runtime.job import Job
from rewind_engine.settings import Settings


class CountingSink(Sink):
    """Discards records, remembering the last value per key (to check the result)."""

    def __init__(self) -> None:
        self.last: dict[Any, int] = {}
        self.records = 0

    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        return _Writer(self)


class _Writer(SinkWriter):
    def __init__(self, sink: CountingSink) -> None:
        self.sink = sink

    def write(self, records: list[Any]) -> None:
        self.sink.records += len(records)
        self.sink.last.update(records)

    def pre_commit(self, checkpoint_id: int) -> Any:
        return None

    def commit(self, checkpoint_id: int, committable: Any) -> None:
        pass


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def engine(
    records: list[dict[str, Any]], emit: str, interval: float, parallelism: int = 1
) -> tuple[dict[Any, int], Job]:
    sink = CountingSink()
    flow = Dataflow("bench-keyed-count")
    src = flow.source("events", CollectionSource(records))
    src.key_by("by-post", "post").count("count", emit=emit).sink("out", sink)  # type: ignore[arg-type]
    settings = Settings()
    settings.snapshots.location = f"file://{tempfile.mkdtemp(prefix='rewind-bench-')}"
    settings.snapshots.checkpoint_interval_s = interval
    settings.parallelism.parallelism = parallelism
    job = Job(flow, settings)
    asyncio.run(job.run())
    assert job.state == "FINISHED", job.error
    return sink.last, job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--checkpoint-interval", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    records = [
        {"post": f"p{skewed(i, args.keys, 1.5)}", "kind": "view" if i % 5 else "click"}
        for i in range(args.events)
    ]

    def counter_loop() -> Counter[str]:
        c: Counter[str] = Counter()
        for r in records:
            c[r["post"]] += 1
        return c

    def counter_update() -> Counter[str]:
        c: Counter[str] = Counter()
        c.update(map(itemgetter("post"), records))
        return c

    rows: list[dict[str, Any]] = []
    expected = None
    for name, fn in [
        ("Counter loop", counter_loop),
        ("Counter.update", counter_update),
        ("engine batch", lambda: engine(records, "batch", args.checkpoint_interval)),
        ("engine each", lambda: engine(records, "each", args.checkpoint_interval)),
        ("engine batch p2", lambda: engine(records, "batch", args.checkpoint_interval, 2)),
    ]:
        wall, cpu, result = timed(fn)
        counts = dict(result) if isinstance(result, Counter) else result[0]
        if expected is None:
            expected = counts
        assert counts == expected, f"{name} counted differently"
        row: dict[str, Any] = {
            "contender": name,
            "seconds": round(wall, 3),
            "records_per_s": round(args.events / wall),
            "records_per_cpu_s": round(args.events / cpu) if cpu else None,
        }
        if not isinstance(result, Counter):
            row["checkpoints"] = result[1].snapshot_stats.get("checkpoint", (0, 0, 0))[0]
        rows.append(row)
    if args.json:
        print(json.dumps({"events": args.events, "keys": args.keys, "results": rows}, indent=2))
        return
    print(f"keyed count of {args.events:,} events over {args.keys:,} keys (one process)")
    print(f"{'contender':<16} {'seconds':>8} {'records/s':>12} {'records/CPU s':>14}  checkpoints")
    for r in rows:
        print(
            f"{r['contender']:<16} {r['seconds']:>8.2f} {r['records_per_s']:>12,}"
            f" {r['records_per_cpu_s'] or 0:>14,}  {r.get('checkpoints', '')}"
        )


if __name__ == "__main__":
    main()
