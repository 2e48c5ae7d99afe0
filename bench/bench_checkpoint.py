"""Periodic checkpoints on a busy task: do they keep their interval, and what do they cost?

A keyed count of int keys runs flat out (GeneratorSource -> key_by -> count(emit="batch")
-> a sink that discards), with a checkpoint every --interval seconds to file://, for
--seconds seconds, then is cancelled. Key i of record seq is `(seq * 7919) % keys`, so
the first `keys` records create every key once and the state stays at `keys` counts.
Printed per state size, each next to its target (issue 15), from the engine's own
snapshot requests (`job.requests`: duration from trigger to manifest, as
`snapshot_completed` logs it):

  checkpoint ms    median and max duration of the periodic checkpoints completed after
                   the state reached its size (target: 100 k <= 300 ms, 1 M <= 1 s)
  completed        checkpoints completed / checkpoints the interval asked for over the
                   same span (target >= 80 %)
  rec/s steady     records/s read by the source outside checkpoints
  rec/s during     records/s inside checkpoints, and its share of steady (target >= 80 %)

Throughput is sampled every 10 ms by a coroutine on the job's own event loop (the job
yields to it between scheduler rounds), so the sampler takes no GIL from the job.
Figures depend on the machine and its load; run it a few times.

`--incremental KEYS` measures incremental checkpoints instead (issue 15's case: 10 M
keys of which 100 k change per second, a 1 s interval): the source first creates every
key as fast as it can, then produces `--changes` records per second (paced), each a
different key of the second's changing set. Every checkpoint after the state reached
its size is printed with its duration and bytes written next to the targets (<= 300 ms,
<= 10 MB), marked full or incremental (every `full_checkpoint_every`-th is full: the
full-checkpoint figures of the same run). Two spreads of the changing keys:

  local     each second's keys lie in 2 of the 128 key groups (hot keys of a few
            groups): what key-group granularity can save
  uniform   each second's keys are spread over all key groups (hashed keys at random):
            every key group changes, so an incremental checkpoint costs a full one

    .venv/bin/python bench/bench_checkpoint.py [--keys 100000 1000000] [--seconds S] [--json]
    .venv/bin/python bench/bench_checkpoint.py --incremental 10000000 [--spread local uniform]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
from datetime import datetime
from typing import Any

import numpy as np
import structlog
from rewind_engine import Dataflow, GeneratorSource, Sink, SinkContext, SinkWriter
from rewind_engine.key_columns import key_groups_of_ints
from rewind_engine.runtime.job import Job
from rewind_engine.settings import Settings
from rewind_engine.snapshots import read_manifest

TARGET_MS = {100_000: 300.0, 1_000_000: 1000.0}
INCREMENTAL_TARGET_MS = 300.0
INCREMENTAL_TARGET_BYTES = 10 * 1000 * 1000


class NullSink(Sink):
    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        return _Null()


class _Null(SinkWriter):
    def write(self, records: list[Any]) -> None:
        pass

    def pre_commit(self, checkpoint_id: int) -> Any:
        return None

    def commit(self, checkpoint_id: int, committable: Any) -> None:
        pass


def run(keys: int, seconds: float, interval: float) -> dict[str, Any]:
    flow = Dataflow("bench-checkpoint")
    source = GeneratorSource(lambda seq: (seq * 7919) % keys)
    flow.source("gen", source).key_by("by-key", lambda r: r).count("count").sink("out", NullSink())
    settings = Settings()
    settings.snapshots.location = f"file://{tempfile.mkdtemp(prefix='rewind-bench-chk-')}"
    settings.snapshots.checkpoint_interval_s = interval
    settings.snapshots.checkpoints_retained = 2
    job = Job(flow, settings)
    samples: list[tuple[float, int]] = []  # (wall time, records read so far)

    async def sample() -> None:
        while not job.ready:
            await asyncio.sleep(0.01)
        end = time.time() + seconds
        while time.time() < end:
            samples.append((time.time(), sum(s.records_out for s in job.sources)))
            await asyncio.sleep(0.01)
        job.cancel()

    async def main() -> None:
        await asyncio.gather(job.run(), sample())

    asyncio.run(main())
    full = next((t for t, n in samples if n >= keys), samples[-1][0])  # state at its size
    spans: list[tuple[float, float]] = []
    for req in job.requests.values():
        if req.kind != "checkpoint" or req.status != "COMPLETED" or req.completed_at is None:
            continue
        end = datetime.fromisoformat(req.completed_at).timestamp()
        start = end - (req.duration_s or 0.0)
        if start >= full:
            spans.append((start, end))
    span_s = samples[-1][0] - full
    asked = int(span_s // interval)

    def inside(t: float) -> bool:
        return any(a <= t < b for a, b in spans)

    during = steady = 0.0
    during_n = steady_n = 0
    for (t0, n0), (t1, n1) in itertools.pairwise(samples):
        if t0 < full:
            continue
        if inside(t0):
            during += t1 - t0
            during_n += n1 - n0
        else:
            steady += t1 - t0
            steady_n += n1 - n0
    durations = [(b - a) * 1000 for a, b in spans]
    rate_steady = steady_n / steady if steady else 0.0
    rate_during = during_n / during if during else 0.0
    return {
        "keys": keys,
        "checkpoints_completed": len(spans),
        "checkpoints_asked": asked,
        "median_ms": round(statistics.median(durations), 1) if durations else None,
        "max_ms": round(max(durations), 1) if durations else None,
        "target_ms": TARGET_MS.get(keys),
        "records_per_s_steady": round(rate_steady),
        "records_per_s_during": round(rate_during),
        "during_share": round(rate_during / rate_steady, 3) if rate_steady else None,
        "size_bytes": job.snapshot_stats.get("checkpoint", (0, 0.0, 0))[2],
    }


class ChangingKeys:
    """make(seq): key i for the first `keys` records, then `changes` records per second
    (paced by `clock`), second s's records each a different key of second s's set."""

    def __init__(self, keys: int, changes: int, spread: str, max_parallelism: int) -> None:
        self.keys, self.changes, self.spread = keys, changes, spread
        groups = key_groups_of_ints(np.arange(keys, dtype=np.int64), max_parallelism)
        order = np.argsort(groups, kind="stable")
        starts = np.concatenate(([0], np.cumsum(np.bincount(groups, minlength=max_parallelism))))
        self.by_group = [order[starts[g] : starts[g + 1]] for g in range(max_parallelism)]
        self._second = -1
        self._set: list[int] = []
        self.head = 0.0
        """Seconds added to the clock once the job runs: the first `keys` records are
        allowed at once, the rest at `changes` per second."""

    def clock(self) -> float:
        return time.monotonic() + self.head

    def __call__(self, seq: int) -> int:
        if seq < self.keys:
            return (seq * 7919) % self.keys
        second, i = divmod(seq - self.keys, self.changes)
        if second != self._second:
            self._second, self._set = second, self._keys_of(second)
        return self._set[i % len(self._set)]

    def _keys_of(self, second: int) -> list[int]:
        if self.spread == "uniform":
            rng = np.random.default_rng(second)
            return rng.choice(self.keys, self.changes, replace=False).tolist()  # type: ignore[no-any-return]
        n = len(self.by_group)
        hot = np.concatenate([self.by_group[(2 * second + j) % n] for j in (0, 1)])
        return hot[: self.changes].tolist()  # type: ignore[no-any-return]


def run_incremental(
    keys: int, changes: int, spread: str, seconds: float, interval: float
) -> dict[str, Any]:
    settings = Settings()
    settings.snapshots.location = f"file://{tempfile.mkdtemp(prefix='rewind-bench-inc-')}"
    settings.snapshots.checkpoint_interval_s = interval
    settings.snapshots.checkpoints_retained = 2
    make = ChangingKeys(keys, changes, spread, settings.parallelism.max_parallelism)
    flow = Dataflow("bench-incremental")
    source = GeneratorSource(make, rate=changes, monotonic=make.clock)
    flow.source("gen", source).key_by("by-key", lambda r: r).count("count").sink("out", NullSink())
    job = Job(flow, settings)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()

    async def watch() -> None:
        while not job.ready:
            await asyncio.sleep(0.01)
        make.head = keys / changes  # the sources opened: create every key at once
        sized: float | None = None  # when the state reached its size
        end: float | None = None
        while end is None or time.monotonic() < end:
            if sized is None and sum(s.records_out for s in job.sources) >= keys:
                sized = time.monotonic()
            for req in list(job.requests.values()):
                if req.status != "COMPLETED" or req.id in seen or req.kind != "checkpoint":
                    continue
                seen.add(req.id)
                started = time.monotonic() - (req.duration_s or 0.0)
                measured = sized is not None and started >= sized
                if measured and end is None:
                    end = time.monotonic() + seconds  # the first checkpoint of every key
                manifest = read_manifest(req.target)  # the file:// folder, still there
                rows.append(
                    {
                        "checkpoint": req.checkpoint_id,
                        "full": not req.incremental,
                        "ms": round((req.duration_s or 0.0) * 1000, 1),
                        "bytes": manifest.size_bytes,
                        "referenced_bytes": manifest.referenced_bytes,
                        "measured": measured,
                    }
                )
            await asyncio.sleep(0.01)
        job.cancel()

    async def main() -> None:
        await asyncio.gather(job.run(), watch())

    asyncio.run(main())
    return {"keys": keys, "changes_per_s": changes, "spread": spread, "checkpoints": rows}


def print_incremental(result: dict[str, Any], interval: float) -> None:
    print(
        f"\nincremental checkpoints every {interval:g} s: {result['keys']:,} keys, "
        f"{result['changes_per_s']:,} changed per second, spread {result['spread']}, file://"
    )
    print(
        f"{'chk':>5} {'kind':>11} {'ms':>8} {'target':>7} {'MB written':>11} {'target':>7}"
        f" {'MB referenced':>14}"
    )
    for row in result["checkpoints"]:
        kind = "full" if row["full"] else "incremental"
        print(
            f"{row['checkpoint']:>5} {kind:>11} {row['ms']:>8.1f} {INCREMENTAL_TARGET_MS:>7.0f}"
            f" {row['bytes'] / 1e6:>11.2f} {INCREMENTAL_TARGET_BYTES / 1e6:>7.0f}"
            f" {row['referenced_bytes'] / 1e6:>14.2f}" + ("" if row["measured"] else "  (warm-up)")
        )
    inc = [r for r in result["checkpoints"] if r["measured"] and not r["full"]]
    if inc:
        ms = [r["ms"] for r in inc]
        mb = [r["bytes"] / 1e6 for r in inc]
        print(
            f"incremental: {len(inc)} checkpoints, median {statistics.median(ms):.1f} ms"
            f" (max {max(ms):.1f}), median {statistics.median(mb):.2f} MB (max {max(mb):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--incremental", type=int, metavar="KEYS", default=None)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--spread", nargs="+", default=["local", "uniform"])
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    if args.incremental:
        results = [
            run_incremental(args.incremental, args.changes, spread, args.seconds, args.interval)
            for spread in args.spread
        ]
        if args.json:
            print(json.dumps({"interval_s": args.interval, "results": results}, indent=2))
            return
        for result in results:
            print_incremental(result, args.interval)
        return
    rows = [run(k, args.seconds, args.interval) for k in args.keys]
    if args.json:
        print(json.dumps({"interval_s": args.interval, "results": rows}, indent=2))
        return
    print(
        f"periodic checkpoints every {args.interval:g} s on a busy keyed count, file://, "
        f"{args.seconds:g} s per size"
    )
    print(
        f"{'keys':>10} {'ckpt ms med':>11} {'max':>7} {'target':>7} {'completed':>10}"
        f" {'rec/s steady':>13} {'rec/s during':>13} {'share':>6} (targets: >=80 %)"
    )
    for r in rows:
        done = f"{r['checkpoints_completed']}/{r['checkpoints_asked']}"
        share = r["during_share"]
        print(
            f"{r['keys']:>10,} {r['median_ms'] or 0:>11.1f} {r['max_ms'] or 0:>7.1f}"
            f" {r['target_ms'] or 0:>7.0f} {done:>10} {r['records_per_s_steady']:>13,}"
            f" {r['records_per_s_during']:>13,} {(share or 0) * 100:>5.0f}%"
        )


if __name__ == "__main__":
    main()
