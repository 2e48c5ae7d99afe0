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

    .venv/bin/python bench/bench_checkpoint.py [--keys 100000 1000000] [--seconds S] [--json]
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

import structlog
from rewind_engine import Dataflow, GeneratorSource, Sink, SinkContext, SinkWriter
from rewind_engine.runtime.job import Job
from rewind_engine.settings import Settings

TARGET_MS = {100_000: 300.0, 1_000_000: 1000.0}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
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
