"""The flows bench_scale.py runs as `rewind run` processes (one per worker).

    --mode cpu       events -> map costing ~20 us per record -> key_by -> count -> discard
    --mode count     events -> key_by -> count -> discard (the exchange's own cost)
    --mode latency   events stamped with the wall clock -> key_by -> reduce (keeps the
                     record) -> a sink writing, for every record that crossed workers,
                     its latency to OUT/latency-<worker>-<subtask>.json at the end

Arguments: --mode M --total N [--rate R] [--out DIR] [--keys K].
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from rewind_engine import Dataflow, GeneratorSource
from rewind_engine.connectors.base import Sink, SinkContext, SinkWriter

WORKER = os.environ.get("REWIND_WORKER_INDEX", "0")


class _Discard(SinkWriter):
    def write(self, records: list[Any]) -> None:
        pass

    def pre_commit(self, checkpoint_id: int) -> Any:
        return None

    def commit(self, checkpoint_id: int, committable: Any) -> None:
        pass


class Discard(Sink):
    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        return _Discard()


class _Latency(_Discard):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lat: list[float] = []

    def write(self, records: list[Any]) -> None:
        now = time.time()
        for _key, record in records:
            if record["w"] != WORKER:  # only records that crossed to another worker
                self.lat.append(now - record["t0"])

    def close(self) -> None:
        self.path.write_text(json.dumps(self.lat))


class Latency(Sink):
    def __init__(self, out: Path) -> None:
        self.out = out

    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        self.out.mkdir(parents=True, exist_ok=True)
        return _Latency(self.out / f"latency-{WORKER}-{ctx.subtask}.json")


def burn(record: dict[str, Any]) -> dict[str, Any]:
    """About 20 us of pure-Python work, the cost of a modest user function."""
    end = time.perf_counter() + 20e-6
    while time.perf_counter() < end:
        pass
    return record


def flow(argv: list[str]) -> Dataflow:
    p = argparse.ArgumentParser(prog="scale_flow")
    p.add_argument("--mode", choices=["cpu", "count", "latency"], required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--rate", type=float, default=None)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--out", default="./out")
    a = p.parse_args(argv)
    keys = a.keys
    f = Dataflow(f"scale-{a.mode}")
    events = f.source(
        "events",
        GeneratorSource(lambda seq: {"k": seq % keys, "seq": seq}, total=a.total, rate=a.rate,
                        splits=4),
    )  # fmt: skip
    if a.mode == "cpu":
        events.map("burn", burn).key_by("by-k", lambda e: e["k"]).count("count").sink(
            "out", Discard()
        )
    elif a.mode == "count":
        events.key_by("by-k", lambda e: e["k"]).count("count").sink("out", Discard())
    else:
        stamped = events.map("stamp", lambda e: {**e, "t0": time.time(), "w": WORKER})
        stamped.key_by("by-k", lambda e: e["k"]).reduce("last", lambda acc, e: e).sink(
            "out", Latency(Path(a.out))
        )
    return f
