"""Kafka-to-Kafka keyed count through the engine, next to bare client loops, in one run.

Input: N JSON post events ({"post": "p<k>", "kind": "view"|"click"}, K distinct posts,
keyed by post) in a topic of P partitions on the broker from dev/ (REWIND_KAFKA_BOOTSTRAP,
else `dev/cluster env`). Every contender reads all N and writes one (post, count) JSON
record per input record to its own output topic, with the SAME librdkafka settings (the
connector's consumer_config/producer_config) and the same batch size:

  copy loop      consume a batch -> produce each message's key and value unchanged; the
                 client's own ceiling (no decoding, no state)
  count loop     consume a batch -> json.loads -> dict count per post -> json encode ->
                 produce: the same work as the flow without the engine, written as a
                 user writes it with the standard library (the ceiling the targets
                 are measured against, as in the issue that set them)
  count loop, connector codecs
                 the same with the connector's own JSON codecs (serde.py: the C scanner
                 and encoder called directly, ~2.5x faster per record): the engine's
                 overhead alone; printed beside, so a faster codec cannot hide it
  engine a-l-o   KafkaSource(stop_at="end") -> key_by -> count ->
                 KafkaSink(delivery="at-least-once"), checkpoints every
                 --checkpoint-interval seconds
  engine e-o     the same with delivery="exactly-once" (transactions; output leaves at
                 each checkpoint)

The engine's source is bounded (stop_at="end"): like the bare loops, the job reads the N
records and ends, and its final checkpoint (taken as soon as the input is exhausted)
commits the last output. An unbounded source would make the exactly-once run wait, after
its last record, for the next periodic checkpoint: up to --checkpoint-interval seconds
of an idle job that measure the timer, not the engine's work (until 2026-12 the bench
did so, which cost exactly-once ~3 s of a ~15 s run at 600 K events).

Time runs from the start (the engine's includes setup) until every output record is
acknowledged by the broker (the output topic's end offsets sum to N, read committed).
Targets: engine at-least-once >= 80% of the count loop, exactly-once >= 70%.

CPU seconds (the whole process: Python and librdkafka's threads) are printed beside the
wall time: on a machine shared with other work the wall times of contenders run one
after the other drift with the neighbours' load, their CPU time much less. `--rounds R`
runs the count loop and the engine modes R times, interleaved, and reports medians.

    .venv/bin/python bench/bench_kafka.py [--events N] [--partitions P] [--rounds R] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]
from rewind_engine import Dataflow
from rewind_engine.connectors.kafka import KafkaSink, KafkaSource, serde
from rewind_engine.connectors.kafka.config import consumer_config, producer_config
from rewind_engine.runtime.job import Job
from rewind_engine.settings import RuntimeSettings, Settings, SnapshotSettings

REPO = Path(__file__).resolve().parents[1]
BATCH = RuntimeSettings().batch_size


def bootstrap() -> str:
    if os.environ.get("REWIND_KAFKA_BOOTSTRAP"):
        return os.environ["REWIND_KAFKA_BOOTSTRAP"]
    out = subprocess.run(
        [str(REPO / "dev" / "cluster"), "env"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if "REWIND_KAFKA_BOOTSTRAP=" in line:
            return line.split("=", 1)[1].strip().strip("'\"")
    sys.exit("no Kafka: run `dev/cluster up` first")


def create_topics(admin: AdminClient, names: list[str], partitions: int) -> None:
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result()


def fill(servers: str, topic: str, events: int, posts: int) -> None:
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 20, "batch.size": 1_000_000})
    kinds = ("view", "view", "view", "click")
    for i in range(events):
        post = f"p{(i * 7919) % posts}"
        value = json.dumps({"post": post, "kind": kinds[i % 4]}).encode()
        while True:
            try:
                producer.produce(topic, value, post.encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()


def end_offsets(admin: AdminClient, topic: str, partitions: int) -> int:
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    tps = {TopicPartition(topic, p): latest for p in range(partitions)}
    futures = admin.list_offsets(tps, isolation_level=IsolationLevel.READ_COMMITTED)
    return sum(f.result().offset for f in futures.values())


_NOT_READY = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}
"""What a topic created a moment ago answers until its partitions have leaders."""


class Watch:
    """Polls the output topic's end offsets until they reach the expected total.

    A topic created a moment ago may answer "not leader" for a while: retriable errors
    are polled through; any other ends the watch with `error` set, which the waiting
    contender raises (a dead watch thread would otherwise leave it waiting forever)."""

    def __init__(self, admin: AdminClient, topic: str, partitions: int, expected: int):
        self.done = threading.Event()
        self.finished_at = 0.0
        self.error: BaseException | None = None
        self._args = (admin, topic, partitions, expected)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        admin, topic, partitions, expected = self._args
        try:
            while self._reached(admin, topic, partitions) < expected:
                time.sleep(0.05)
        except BaseException as exc:  # handed to the waiting thread
            self.error = exc
        self.finished_at = time.perf_counter()
        self.done.set()

    @staticmethod
    def _reached(admin: AdminClient, topic: str, partitions: int) -> int:
        try:
            return end_offsets(admin, topic, partitions)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is not None and (err.retriable() or err.code() in _NOT_READY):
                return -1
            raise

    def result(self) -> float:
        """When the last record was acknowledged (raises what stopped the watch)."""
        if self.error is not None:
            raise RuntimeError(f"watching the output topic failed: {self.error}")
        return self.finished_at


def bare_loop(
    servers: str,
    source: str,
    sink: str,
    partitions: int,
    events: int,
    transform: Callable[[Any], tuple[bytes | None, bytes | None]] | None,
) -> float:
    consumer = Consumer(consumer_config(servers, f"bench-{uuid.uuid4().hex[:6]}", {}))
    consumer.assign([TopicPartition(source, p, 0) for p in range(partitions)])
    producer = Producer(producer_config(servers, {}))
    produce = producer.produce
    start = time.perf_counter()
    seen = 0
    while seen < events:
        for msg in consumer.consume(BATCH, 0.1):
            if msg.error():
                continue
            seen += 1
            if transform is None:
                key, value = msg.key(), msg.value()
            else:
                key, value = transform(msg.value())
            while True:
                try:
                    produce(sink, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    producer.flush()
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def count_transform(
    codecs: str = "stdlib",
) -> Callable[[Any], tuple[bytes | None, bytes | None]]:
    counts: dict[str, int] = {}
    loads: Callable[[bytes], Any] = serde.decoder("json")
    dumps: Callable[[Any], bytes | None] = serde.encoder("json")
    if codecs == "stdlib":
        loads = json.loads
        dump = json.JSONEncoder(separators=(",", ":")).encode
        dumps = lambda value: dump(value).encode()  # noqa: E731

    def transform(value: bytes) -> tuple[bytes | None, bytes | None]:
        post = loads(value)["post"]
        n = counts.get(post, 0) + 1
        counts[post] = n
        return post.encode(), dumps({"post": post, "count": n})

    return transform


def engine(
    servers: str,
    source: str,
    sink: str,
    partitions: int,
    events: int,
    delivery: str,
    interval: float,
    admin: AdminClient,
    snaps: str,
) -> float:
    flow = Dataflow("bench-kafka")
    (
        flow.source("events", KafkaSource(source, bootstrap_servers=servers, stop_at="end"))
        .key_by("by-post", lambda e: e["post"])
        .count("count")
        .sink(
            "counts",
            KafkaSink(
                sink,
                bootstrap_servers=servers,
                delivery=delivery,  # type: ignore[arg-type]
                key=lambda r: r[0],
                value=lambda r: {"post": r[0], "count": r[1]},
            ),
        )
    )
    settings = Settings(snapshots=SnapshotSettings(location=snaps, checkpoint_interval_s=interval))
    job = Job(flow, settings)

    async def run() -> float:
        start = time.perf_counter()
        watch = Watch(admin, sink, partitions, events)
        task = asyncio.create_task(job.run())
        while not watch.done.is_set():
            if task.done() and job.state != "FINISHED":
                raise RuntimeError(f"the job ended early: {job.state} {job.error}")
            await asyncio.sleep(0.05)
        if not task.done():
            job.cancel()
        await task
        return watch.result() - start

    return asyncio.run(run())


TARGETS = {"engine at-least-once": 0.8, "engine exactly-once": 0.7}
"""Share of the count loop's rate each engine mode must reach."""
STRICT = "count loop, connector codecs"


def timed(contender: Callable[[], float]) -> tuple[float, float]:
    """(wall seconds as the contender measured them, CPU seconds of this process)."""
    cpu = time.process_time()
    wall = contender()
    return wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--checkpoint-interval", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians)")
    parser.add_argument("--skip-exactly-once", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    servers = bootstrap()
    admin = AdminClient({"bootstrap.servers": servers})
    run = uuid.uuid4().hex[:6]
    source = f"bench-events-{run}"
    create_topics(admin, [source], args.partitions)
    print(f"filling {source}: {args.events} events, {args.partitions} partitions", file=sys.stderr)
    fill(servers, source, args.events, args.posts)
    snaps = f"file:///tmp/rewind-bench-kafka-{run}"
    n, p, interval = args.events, args.partitions, args.checkpoint_interval
    topics = [source]

    def out(name: str) -> str:
        topic = f"bench-{name}-{uuid.uuid4().hex[:6]}"
        create_topics(admin, [topic], p)
        topics.append(topic)
        return topic

    contenders: dict[str, Callable[[], float]] = {
        "count loop": lambda: bare_loop(servers, source, out("count"), p, n, count_transform()),
        STRICT: lambda: bare_loop(
            servers, source, out("count-codecs"), p, n, count_transform("connector")
        ),
        "engine at-least-once": lambda: engine(
            servers, source, out("alo"), p, n, "at-least-once", interval, admin, snaps
        ),
    }
    if not args.skip_exactly_once:
        contenders["engine exactly-once"] = lambda: engine(
            servers, source, out("eo"), p, n, "exactly-once", interval, admin, snaps
        )
    runs: dict[str, list[tuple[float, float]]] = {"copy loop": []}
    runs["copy loop"].append(timed(lambda: bare_loop(servers, source, out("copy"), p, n, None)))
    for _ in range(args.rounds):
        for name, contender in contenders.items():
            runs.setdefault(name, []).append(timed(contender))
    admin.delete_topics(topics)
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    rates = {k: n / v for k, v in wall.items()}
    ceiling = rates["count loop"]
    if args.json:
        print(json.dumps({"events": n, "partitions": p, "records_per_s": rates, "cpu_s": cpu}))
        return
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"\nKafka-to-Kafka keyed count, {n} events, {p} partitions, batch {BATCH}{rounds}")
    strict = rates[STRICT]
    print(
        f"{'contender':29} {'seconds':>8} {'records/s':>10} {'of count loop':>14}"
        f" {'of codecs loop':>15} {'cpu s':>6}"
    )
    for name, secs in wall.items():
        share, of_strict = rates[name] / ceiling, rates[name] / strict
        print(
            f"{name:29} {secs:8.2f} {rates[name]:10,.0f} {share:14.0%} {of_strict:15.0%}"
            f" {cpu[name]:6.2f}"
        )
    if args.rounds > 1:
        for name in contenders:
            shares = [wall["count loop"] / w for w, _ in runs[name]]
            each = ", ".join(f"{x:.0%}" for x in shares)
            print(f"  {name}: rounds at {each} of the median count loop")
    print()
    for name, target in TARGETS.items():
        if name in rates:
            ratio = rates[name] / ceiling
            verdict = "meets" if ratio >= target else "misses"
            print(f"{name} = {ratio:.0%} of the count loop: {verdict} the {target:.0%} target")


if __name__ == "__main__":
    main()
