"""A bounded Kafka read (`KafkaSource(stop_at=...)`) on the shared local broker.

The reprocessing story: a live app is stopped with a savepoint; a version reading
`stop_at="end"` restores it, reads what was written since, up to the end the topic had
when it started (even if records keep arriving, and even if the end of a partition is a
transaction marker, which is never returned as a record), and ends FINISHED with a
final checkpoint. Its output continues the savepoint's counts exactly.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec
from rewind_engine import CollectSink, Dataflow
from rewind_engine.connectors.base import SourceContext
from rewind_engine.connectors.kafka import KafkaSource
from rewind_engine.connectors.kafka.source import StopAt
from rewind_engine.runtime.job import Job
from rewind_engine.testing import (
    make_settings,
    read_committed,
    run_and_savepoint,
    source_position,
)
from rewind_operator.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

POSTS = 10


def post_events(servers: str, topic: str, first: int, n: int, *, transactional: bool) -> None:
    """Events {"post": "p<i % POSTS>"} for i in [first, first + n), keyed by post."""
    conf: dict[str, Any] = {"bootstrap.servers": servers, "linger.ms": 5}
    if transactional:
        conf["transactional.id"] = f"stop-at-test-{topic}"
    producer = Producer(conf)
    if transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    for i in range(first, first + n):
        post = f"p{i % POSTS}"
        producer.produce(topic, json.dumps({"post": post}).encode(), post.encode())
    if transactional:
        producer.commit_transaction(30)  # each partition now ends with a commit marker
    assert producer.flush(30) == 0


def expected_counts(n: int) -> Counter[str]:
    return Counter(f"p{i % POSTS}" for i in range(n))


def counting(servers: str, topic: str, out: CollectSink, stop_at: StopAt | None) -> Dataflow:
    f = Dataflow("reprocess")
    (
        f.source("events", KafkaSource(topic, bootstrap_servers=servers, stop_at=stop_at))
        .key_by("by-post", lambda e: e["post"])
        .count("per-post")
        .sink("counts", out)
    )
    return f


def end_offsets(admin: AdminClient, topic: str, partitions: int) -> dict[str, int]:
    """The end of each partition once no transaction is open in it: the broker writes
    commit markers a moment after `commit_transaction` returns, and until then the last
    stable offset (what read_committed readers see) stays before the transaction."""

    def ends(isolation: IsolationLevel) -> dict[str, int]:
        specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}  # type: ignore[no-untyped-call]
        found = admin.list_offsets(specs, isolation_level=isolation)
        return {f"{tp.topic}:{tp.partition}": f.result().offset for tp, f in found.items()}

    def settled() -> dict[str, int] | None:
        stable = ends(IsolationLevel.READ_COMMITTED)
        return stable if stable == ends(IsolationLevel.READ_UNCOMMITTED) else None

    return wait_until("the transaction markers", settled, timeout=60, every=0.2)


def test_reprocessing_from_a_savepoint_to_the_end_then_finished(
    kafka_bootstrap: str,
    admin: AdminClient,
    topic_factory: Any,
    tmp_path: Path,
) -> None:
    bs = kafka_bootstrap
    topic = topic_factory(3)
    post_events(bs, topic, 0, 2000, transactional=False)
    live, savepoint = run_and_savepoint(
        counting(bs, topic, CollectSink(), None),
        make_settings(tmp_path),
        when=lambda job: source_position(job, "events") >= 2000,
    )
    assert live.state == "FINISHED", live.error
    assert savepoint.status == "COMPLETED", savepoint.error

    post_events(bs, topic, 2000, 1000, transactional=True)
    ends = end_offsets(admin, topic, 3)
    out = CollectSink()
    job = Job(counting(bs, topic, out, "end"), make_settings(tmp_path, restore=savepoint.target))

    async def reprocess() -> str:
        run = asyncio.create_task(job.run())
        while not job.ready:
            assert not run.done(), job.error
            await asyncio.sleep(0.05)
        # Written after the readers opened: past the end this run reads to.
        await asyncio.to_thread(post_events, bs, topic, 3000, 500, transactional=False)
        return await run

    assert asyncio.run(reprocess()) == "FINISHED", job.error
    assert job.last_checkpoint is not None and job.last_checkpoint.final
    assert job.last_checkpoint.sources == {"events": ends}
    # Each post's counts go on from the savepoint's, one by one, to its total at the end.
    before, total = expected_counts(2000), expected_counts(3000)
    got: dict[str, list[int]] = {}
    for post, count in out.committed:
        got.setdefault(post, []).append(count)
    assert got == {p: list(range(before[p] + 1, total[p] + 1)) for p in total}


def test_stop_at_a_timestamp_reads_the_records_before_it(
    kafka_bootstrap: str,
    topic_factory: Any,
) -> None:
    topic = topic_factory(1)
    t0 = 1_700_000_000_000
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(100):
        producer.produce(topic, json.dumps({"i": i}).encode(), partition=0, timestamp=t0 + i)
    assert producer.flush(30) == 0
    source = KafkaSource(topic, bootstrap_servers=kafka_bootstrap, stop_at=t0 + 60)
    assert source.bounded()
    [split] = source.discover_splits()
    reader = source.open_split(split, 10, SourceContext("events", 0, 1, "job-1"))
    got: list[Any] = []
    deadline = time.monotonic() + 120
    while True:
        batch = reader.poll(7)
        if batch is not None:
            got.extend(batch.records)
            if batch.finished:
                break
        assert time.monotonic() < deadline, f"the split did not finish; read {len(got)} records"
        time.sleep(0.01)
    reader.close()
    source.close()
    assert [r["i"] for r in got] == list(range(10, 60))
    assert reader.position() == 60


def test_stop_at_is_checked() -> None:
    with pytest.raises(ValueError, match="stop_at must be"):
        KafkaSource("t", stop_at="latest")  # type: ignore[arg-type]
    assert not KafkaSource("t").bounded()


def test_a_bounded_read_ends_with_its_dead_letters_written(
    kafka_bootstrap: str,
    topic_factory: Any,
    tmp_path: Path,
) -> None:
    # The split's last record cannot be decoded: it is dead-lettered as the split ends.
    # The closed reader is not asked for `durable()` at the final barrier, so the split
    # waits for its dead letters as it finishes; the finished job has them written.
    topic, dlq = topic_factory(1), topic_factory(1, "dlq")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for value in (b'{"post": "p1"}', b'{"post": "p2"}', b"{not json"):
        producer.produce(topic, value, partition=0)
    assert producer.flush(30) == 0
    source = KafkaSource(
        topic,
        bootstrap_servers=kafka_bootstrap,
        stop_at="end",
        on_error="dead-letter",
        dead_letter_topic=dlq,
    )
    out = CollectSink()
    flow = Dataflow("dead-letters")
    flow.source("events", source).sink("out", out)
    job = Job(flow, make_settings(tmp_path))
    assert asyncio.run(job.run()) == "FINISHED", job.error
    assert [e["post"] for e in out.committed] == ["p1", "p2"]
    assert [v for _k, v in read_committed(kafka_bootstrap, dlq, 1)] == [b"{not json"]
