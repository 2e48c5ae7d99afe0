"""Post events for the post-analytics story, and the flows' parameters.

`post_event(seq)` is a pure function of the record number: every version of the flow,
every restart and every parallelism sees exactly the same events, which is what lets
the tests compare a restored run with an uninterrupted one record for record.

Parameters come from arguments (`--out DIR --rate N --total N --posts N`) or, when
absent, from the environment (`REWIND_OUT`, `REWIND_RATE`, `REWIND_TOTAL`,
`REWIND_POSTS`), so that tests and the operator (through the pod's env) can drive them.

Kafka instead of the generator and files: `--events-topic T` (`REWIND_EVENTS_TOPIC`)
reads the events as JSON from topic T, and `--out-topics P` (`REWIND_OUT_TOPICS`) writes
each output to topic "P.<name>" with Kafka transactions (exactly once); the broker is
`REWIND_KAFKA_BOOTSTRAP`. `python post_events.py produce --topic T --total N` writes
events 0..N-1 into T (keyed by post), so every run sees the same events again.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from rewind_engine import (
    BoundedOutOfOrderness,
    FileSink,
    GeneratorSource,
    Sink,
    Source,
    skewed,
    uniform,
)
from rewind_engine.connectors.kafka import KafkaSink, KafkaSource

BASE_TS = 1_700_000_000_000
"""Event time of event 0 (ms): a fixed date, so windows are reproducible."""
MS_PER_EVENT = 10


def post_event(seq: int, posts: int = 100) -> dict[str, Any]:
    """Event number `seq`: a view (80 %) or click (20 %) on a post, paid 30 % of the time.

    Popular posts get most events (skew 2); timestamps advance 10 ms per event with up to
    200 ms of disorder."""
    return {
        "seq": seq,
        "post_id": skewed(seq, posts, 2.0, salt=1),
        "kind": "click" if uniform(seq, 2) < 0.2 else "view",
        "paid": uniform(seq, 3) < 0.3,
        "ts": BASE_TS + seq * MS_PER_EVENT - int(uniform(seq, 4) * 200),
    }


@dataclass
class Params:
    out: Path
    rate: float | None
    total: int | None
    posts: int
    events_topic: str | None = None
    out_topics: str | None = None

    @classmethod
    def parse(cls, argv: list[str]) -> Params:
        env = os.environ
        p = argparse.ArgumentParser(prog="post_analytics")
        p.add_argument("--out", default=env.get("REWIND_OUT", "./out"))
        p.add_argument("--rate", type=float, default=_num(env.get("REWIND_RATE")))
        p.add_argument("--total", type=int, default=_int(env.get("REWIND_TOTAL")))
        p.add_argument("--posts", type=int, default=_int(env.get("REWIND_POSTS")) or 100)
        p.add_argument("--events-topic", default=env.get("REWIND_EVENTS_TOPIC") or None)
        p.add_argument("--out-topics", default=env.get("REWIND_OUT_TOPICS") or None)
        a = p.parse_args(argv)
        return cls(Path(a.out), a.rate or None, a.total, a.posts, a.events_topic, a.out_topics)


def _num(text: str | None) -> float | None:
    return float(text) if text else None


def _int(text: str | None) -> int | None:
    return int(text) if text else None


def post_events_source(params: Params) -> Source:
    """The resettable source of post events (2 splits, so parallelism 2 reads in parallel),
    or the Kafka topic `--events-topic` (one split per partition)."""
    if params.events_topic:
        return KafkaSource(params.events_topic, start="earliest")
    posts = params.posts
    return GeneratorSource(
        lambda seq: post_event(seq, posts), total=params.total, rate=params.rate, splits=2
    )


WATERMARKS = BoundedOutOfOrderness(max_out_of_orderness_ms=200, timestamp="ts")
"""Event time from the `ts` field; events arrive up to 200 ms out of order."""


def output(params: Params, name: str) -> Sink:
    """Where output `name` goes: files under OUT/<name>/, or the topic "<out-topics>.<name>"
    (keyed by post, exactly once through Kafka transactions)."""
    if params.out_topics:
        return KafkaSink(f"{params.out_topics}.{name}", key=lambda row: row["post_id"])
    return FileSink(params.out / name)


def produce(topic: str, total: int, posts: int) -> None:
    """Write events 0..total-1 into `topic`, keyed by post, with their event time."""
    servers = os.environ["REWIND_KAFKA_BOOTSTRAP"]
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 20})
    for seq in range(total):
        event = post_event(seq, posts)
        value = json.dumps(event).encode()
        while True:
            try:
                producer.produce(
                    topic, value, str(event["post_id"]).encode(), timestamp=event["ts"]
                )
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise SystemExit(f"could not write every event to {topic} at {servers}")


if __name__ == "__main__":
    cli = argparse.ArgumentParser(prog="post_events.py", description="post events to Kafka")
    sub = cli.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("produce", help="write events 0..N-1 into a topic")
    cmd.add_argument("--topic", required=True)
    cmd.add_argument("--total", type=int, required=True)
    cmd.add_argument("--posts", type=int, default=100)
    a = cli.parse_args()
    produce(a.topic, a.total, a.posts)
