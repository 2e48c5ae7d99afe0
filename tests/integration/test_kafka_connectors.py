"""KafkaSource and KafkaSink against the real broker from dev/, without the runtime.

Each test drives the connector contract directly (discover, open, poll, position;
open, write, pre_commit, commit) the way the runtime does, and checks what a Kafka
client sees: offsets, timestamps, dead letters, and what a read_committed consumer reads.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from rewind_engine.connectors.base import SinkContext, SourceContext, SplitReader
from rewind_engine.connectors.kafka import (
    KafkaRecord,
    KafkaSink,
    KafkaSource,
    KafkaUnavailableError,
    RecordDecodeError,
)
from rewind_engine.connectors.kafka.sink import ExactlyOnceWriter
from rewind_engine.testing import read_committed

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


def produce(
    servers: str,
    topic: str,
    values: list[bytes],
    *,
    partition: int | None = None,
    timestamps: list[int] | None = None,
) -> None:
    producer = Producer({"bootstrap.servers": servers})
    for i, value in enumerate(values):
        kwargs: dict[str, Any] = {}
        if partition is not None:
            kwargs["partition"] = partition
        if timestamps is not None:
            kwargs["timestamp"] = timestamps[i]
        producer.produce(topic, value, key=str(i).encode(), **kwargs)
    assert producer.flush(30) == 0


def ctx(subtask: int = 0, parallelism: int = 1) -> SourceContext:
    return SourceContext("events", subtask, parallelism, "job-1")


def drain(readers: dict[str, SplitReader], want: int, limit: int = 10_000) -> list[Any]:
    """Poll round robin until `want` records came (fails after two minutes of nothing)."""
    got: list[Any] = []
    deadline = time.monotonic() + 120
    while len(got) < want:
        moved = False
        for reader in readers.values():
            batch = reader.poll(min(limit, want - len(got)) or 1)
            if batch is not None and batch.records:
                got.extend(batch.records)
                moved = True
            if len(got) >= want:
                break
        if not moved:
            assert time.monotonic() < deadline, f"only {len(got)} of {want} records arrived"
            time.sleep(0.02)
    return got


# -- source -------------------------------------------------------------------------


def test_positions_resume_exactly_at_another_parallelism(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = topic_factory(6)
    for p in range(6):
        produce(
            kafka_bootstrap,
            topic,
            [json.dumps({"p": p, "i": i}).encode() for i in range(50)],
            partition=p,
        )
    source = KafkaSource(topic, bootstrap_servers=kafka_bootstrap)
    splits = source.discover_splits()
    assert splits == [f"{topic}:{p}" for p in range(6)]
    # Parallelism 2: two subtasks share the splits round robin, as the runtime does.
    readers = {s: source.open_split(s, None, ctx(i % 2, 2)) for i, s in enumerate(splits)}
    first = drain(readers, 130, limit=7)
    positions = {s: r.position() for s, r in readers.items()}
    assert sum(positions.values()) == 130
    for r in readers.values():
        r.close()
    source.close()

    # Restore at parallelism 3 from the positions: the rest, each record once.
    again = KafkaSource(topic, bootstrap_servers=kafka_bootstrap)
    readers = {
        s: again.open_split(s, positions[s], ctx(i % 3, 3))
        for i, s in enumerate(again.discover_splits())
    }
    rest = drain(readers, 300 - 130)
    assert {s: r.position() for s, r in readers.items()} == {s: 50 for s in splits}
    seen = Counter((r["p"], r["i"]) for r in first + rest)
    assert seen == Counter({(p, i): 1 for p in range(6) for i in range(50)})
    again.close()


def test_start_at_latest_timestamp_or_committed(kafka_bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(1)
    split = f"{topic}:0"
    base = 1_700_000_000_000
    produce(kafka_bootstrap, topic, [b'"old"'] * 10, timestamps=[base + i for i in range(10)])

    latest = KafkaSource(topic, bootstrap_servers=kafka_bootstrap, start="latest")
    latest.discover_splits()
    reader = latest.open_split(split, None, ctx())
    assert reader.position() == 10  # resolved at open: a snapshot now resumes here
    latest.close()

    by_time = KafkaSource(topic, bootstrap_servers=kafka_bootstrap, start=base + 7)
    by_time.discover_splits()
    reader = by_time.open_split(split, None, ctx())
    assert reader.position() == 7
    batch = drain({split: reader}, 3)
    assert batch == ["old"] * 3
    by_time.close()

    group = f"g-{uuid.uuid4().hex[:6]}"
    first = KafkaSource(topic, bootstrap_servers=kafka_bootstrap, group_id=group)
    first.discover_splits()
    reader = first.open_split(split, 4, ctx())
    drain({split: reader}, 2)
    # Offsets go to the group only once a checkpoint completed (monitoring, lag).
    reader.notify_checkpoint_complete(1)  # type: ignore[attr-defined]
    first.close()  # closing the consumer flushes the asynchronous commit
    committed = KafkaSource(
        topic, bootstrap_servers=kafka_bootstrap, group_id=group, start="committed"
    )
    committed.discover_splits()
    assert committed.open_split(split, None, ctx()).position() == 6
    committed.close()


def test_new_partitions_are_discovered_and_read_from_their_start(
    kafka_bootstrap: str, topic_factory: Any, admin: AdminClient
) -> None:
    topic = topic_factory(2)
    source = KafkaSource(topic, bootstrap_servers=kafka_bootstrap, start="latest")
    assert len(source.discover_splits()) == 2
    for future in admin.create_partitions([NewPartitions(topic, 4)]).values():
        future.result()
    produce(kafka_bootstrap, topic, [b"1", b"2"], partition=3)
    deadline = time.monotonic() + 120
    while len(splits := source.discover_splits()) < 4:  # refreshed in the background
        assert time.monotonic() < deadline, splits
        time.sleep(0.2)
    assert splits == [f"{topic}:{p}" for p in range(4)]
    # Everything in a partition that appeared while running is new: read from offset 0,
    # although start="latest" applies to the partitions present at the start.
    reader = source.open_split(f"{topic}:3", None, ctx())
    assert drain({"3": reader}, 2) == [1, 2]
    source.close()


def test_pattern_subscription_and_record_timestamps(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    prefix = f"pat{uuid.uuid4().hex[:6]}"
    a, b = topic_factory(1, prefix + "-a"), topic_factory(2, prefix + "-b")
    topic_factory(1, "other")
    times = [1_700_000_000_000 + 1000 * i for i in range(5)]
    produce(kafka_bootstrap, a, [b'{"n": 1}'] * 5, timestamps=times)
    source = KafkaSource(pattern=rf"{prefix}-.*", bootstrap_servers=kafka_bootstrap, emit="record")
    splits = source.discover_splits()
    assert splits == [f"{a}:0", f"{b}:0", f"{b}:1"]
    reader = source.open_split(f"{a}:0", None, ctx())
    deadline = time.monotonic() + 120
    while (batch := reader.poll(100)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert batch.timestamps == times[: len(batch.records)]
    record = batch.records[0]
    assert isinstance(record, KafkaRecord)
    assert (record.topic, record.partition, record.offset, record.key, record.value) == (
        a,
        0,
        0,
        "0",
        {"n": 1},
    )
    source.close()


def test_bad_record_fails_with_its_coordinates(kafka_bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(1)
    produce(kafka_bootstrap, topic, [b'{"ok": 1}', b"{not json", b'{"ok": 2}'])
    source = KafkaSource(topic, bootstrap_servers=kafka_bootstrap)
    source.discover_splits()
    reader = source.open_split(f"{topic}:0", None, ctx())
    with pytest.raises(RecordDecodeError) as caught:
        drain({"r": reader}, 3)
    assert f"topic {topic!r} partition 0 offset 1" in str(caught.value)
    source.close()


def test_bad_record_goes_to_the_dead_letter_topic(kafka_bootstrap: str, topic_factory: Any) -> None:
    topic, dlq = topic_factory(1), topic_factory(1, "dlq")
    produce(kafka_bootstrap, topic, [b'{"ok": 1}', b"{not json", b'{"ok": 2}'])
    source = KafkaSource(
        topic, bootstrap_servers=kafka_bootstrap, on_error="dead-letter", dead_letter_topic=dlq
    )
    source.discover_splits()
    reader = source.open_split(f"{topic}:0", None, ctx())
    assert drain({"r": reader}, 2) == [{"ok": 1}, {"ok": 2}]
    assert reader.position() == 3  # at once: the job's loop does not wait for the broker
    wait = reader.durable()  # what a snapshot passing it waits for, on the snapshot thread
    assert wait is not None  # (sent a moment ago; acknowledged only once polled)
    wait()
    assert reader.durable() is None  # acknowledged: a later snapshot has nothing to wait for
    source.close()
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": "x", "auto.offset.reset": "earliest"}
    )
    consumer.assign([TopicPartition(dlq, 0, 0)])
    msg = None
    deadline = time.monotonic() + 60
    while msg is None or msg.error() is not None:
        assert time.monotonic() < deadline
        msg = consumer.poll(0.5)
    assert msg.value() == b"{not json"
    headers = dict(msg.headers() or [])
    assert headers["rewind.dlq.topic"] == topic.encode()
    assert headers["rewind.dlq.offset"] == b"1"
    assert b"offset 1" in (headers["rewind.dlq.error"] or b"")
    consumer.close()


def test_unreachable_broker_is_a_clear_error() -> None:
    # Nothing listens on port 9 of loopback (discard, never run here).
    source = KafkaSource("t", bootstrap_servers="127.0.0.1:9", connect_timeout_s=3)
    with pytest.raises(KafkaUnavailableError, match=r"127\.0\.0\.1:9"):
        source.discover_splits()
    source.close()


# -- sink ---------------------------------------------------------------------------


def sink_ctx(
    subtask: int = 0, parallelism: int = 1, job: str = "job-1", app: str = "shop/counts"
) -> SinkContext:
    """A writer's context as the runtime makes it: the app's identity is always set (the
    flow's name when no --app is given), and a restart of one app may have a new job id."""
    return SinkContext("counts", subtask, parallelism, job, uuid.uuid4().hex[:6], app)


def test_exactly_once_commit_and_restore_never_lose_or_double(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    out = topic_factory(3)
    sink = KafkaSink(
        out,
        bootstrap_servers=kafka_bootstrap,
        key=lambda r: r[0],
        value=lambda r: r[1],
        value_format="utf-8",
        headers=lambda r: {"origin": "test"},
    )
    first = sink.open(sink_ctx(), [])
    assert isinstance(first, ExactlyOnceWriter)
    first.write([("a", "1"), ("b", "2")])
    c1 = first.pre_commit(1)
    first.commit(1, c1)
    first.wait_committed()  # commits run on the writer's own thread
    first.write([("a", "3")])
    c2 = first.pre_commit(2)  # checkpoint 2's snapshot is written ...
    first.write([("c", "never")])  # ... output after it belongs to no snapshot
    first.close()  # ... and the process dies before commit(2)

    # A restore from checkpoint 2 commits its output once; a second crash and restore
    # (the same committable again) adds nothing; an older one (c1) adds nothing.
    for restored in ([c2], [c2], [c1, c2]):
        writer = sink.open(sink_ctx(), restored)
        writer.close()
    records = read_committed(kafka_bootstrap, out, 3)
    assert sorted(records) == [(b"a", b"1"), (b"a", b"3"), (b"b", b"2")]


def test_exactly_once_epochs_of_failed_checkpoints_roll_forward(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    out = topic_factory(1)
    sink = KafkaSink(out, bootstrap_servers=kafka_bootstrap, value_format="utf-8")
    writer = sink.open(sink_ctx(), [])
    assert isinstance(writer, ExactlyOnceWriter)
    writer.write(["1"])
    writer.pre_commit(1)  # checkpoint 1 fails: never committed
    writer.write(["2"])
    c2 = writer.pre_commit(2)
    assert [e[0] for e in c2["epochs"]] == [1, 2]  # its output is in the next committable
    writer.write(["3"])
    c3 = writer.pre_commit(3)
    writer.commit(2, c2)  # commits 1 and 2
    writer.wait_committed()
    writer.close()  # crash before commit(3): restore from 3 commits only 3
    sink.open(sink_ctx(), [c3]).close()
    assert sorted(v for _k, v in read_committed(kafka_bootstrap, out, 3)) == [b"1", b"2", b"3"]


def test_restored_output_goes_to_the_topic_its_writer_had(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    # v2 of the app writes to another topic; output pending in v1's last snapshot is
    # v1's and goes where v1 wrote, once, with v1's marker (and so is not doubled by a
    # second restore of the same snapshot). A committable from before the topic was
    # recorded goes to the sink's topic, as it always did.
    old, new = topic_factory(1), topic_factory(1)
    v1 = KafkaSink(old, bootstrap_servers=kafka_bootstrap, value_format="utf-8")
    writer = v1.open(sink_ctx(), [])
    assert isinstance(writer, ExactlyOnceWriter)
    writer.write(["pending"])
    pending = writer.pre_commit(1)
    writer.close()  # crash before commit(1)
    assert pending["topic"] == old
    v2 = KafkaSink(new, bootstrap_servers=kafka_bootstrap, value_format="utf-8")
    v2.open(sink_ctx(), [pending]).close()
    v2.open(sink_ctx(), [pending]).close()  # a second restore of the same snapshot
    assert [v for _k, v in read_committed(kafka_bootstrap, old, 1)] == [b"pending"]
    assert read_committed(kafka_bootstrap, new, 0) == []

    legacy = {k: v for k, v in pending.items() if k != "topic"} | {"token": "legacy"}
    v2.open(sink_ctx(), [legacy]).close()
    assert [v for _k, v in read_committed(kafka_bootstrap, new, 1)] == [b"pending"]


def test_a_version_1_committable_is_still_restored(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    # Snapshots from before epochs were packed batches hold one row per record:
    # [topic, partition, key, value, headers]. They are committed as they always were.
    out = topic_factory(2)
    sink = KafkaSink(out, bootstrap_servers=kafka_bootstrap, value_format="utf-8")
    context = sink_ctx()
    rows = [[None, -1, b"k1", b"one", None], [None, 1, b"k2", b"two", [["h", b"x"]]]]
    legacy = {
        "v": 1,
        "writer": sink.writer_id(context),
        "topic": out,
        "token": "v1-run",
        "epochs": [[3, rows]],
    }
    sink.open(context, [legacy]).close()
    sink.open(sink_ctx(), [legacy]).close()  # its marker says it was committed
    assert sorted(read_committed(kafka_bootstrap, out, 2)) == [(b"k1", b"one"), (b"k2", b"two")]


def test_rescaled_restore_commits_every_old_writer_once(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    out = topic_factory(2)
    sink = KafkaSink(out, bootstrap_servers=kafka_bootstrap, value_format="utf-8")
    committables = []
    for subtask in range(3):
        writer = sink.open(sink_ctx(subtask, 3), [])
        assert isinstance(writer, ExactlyOnceWriter)
        writer.write([f"w{subtask}"])
        committables.append(writer.pre_commit(5))
        if subtask == 0:
            writer.commit(5, committables[-1])  # only subtask 0 got to commit
            writer.wait_committed()
        writer.close()
    # Restored at parallelism 2; the runtime deals committables round robin.
    for subtask in range(2):
        sink.open(sink_ctx(subtask, 2, job="job-2"), committables[subtask::2]).close()
    assert sorted(v for _k, v in read_committed(kafka_bootstrap, out, 3)) == [
        b"w0",
        b"w1",
        b"w2",
    ]


def test_a_restore_fences_the_old_writer(kafka_bootstrap: str, topic_factory: Any) -> None:
    out = topic_factory(1)
    sink = KafkaSink(out, bootstrap_servers=kafka_bootstrap, value_format="utf-8")
    zombie = sink.open(sink_ctx(), [])
    assert isinstance(zombie, ExactlyOnceWriter)
    zombie.write(["a"])
    zombie.commit(1, zombie.pre_commit(1))
    zombie.wait_committed()
    zombie.write(["b"])
    c2 = zombie.pre_commit(2)
    # A new attempt restores checkpoint 2 while the old process still runs.
    sink.open(sink_ctx(), [c2]).close()
    with pytest.raises(KafkaException, match=r"(?i)fenced"):
        zombie.commit(2, c2)
        zombie.wait_committed()
    assert sorted(v for _k, v in read_committed(kafka_bootstrap, out, 2)) == [b"a", b"b"]


def test_at_least_once_sink_keys_headers_and_partitions(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    out = topic_factory(4)
    sink = KafkaSink(
        out,
        bootstrap_servers=kafka_bootstrap,
        delivery="at-least-once",
        key=lambda r: r["post"],
        headers=lambda r: [("kind", r["kind"])],
    )
    writer = sink.open(sink_ctx(), [])
    records = [{"post": f"p{i % 5}", "kind": "view"} for i in range(100)]
    writer.write(records)
    assert writer.pre_commit(1) is None  # nothing to stage ...
    writer.wait_durable(1)  # ... and everything before barrier 1 is acknowledged
    writer.close()
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": "x", "auto.offset.reset": "earliest"}
    )
    consumer.assign([TopicPartition(out, p, 0) for p in range(4)])
    partitions_of: dict[bytes, set[int]] = {}
    got = 0
    deadline = time.monotonic() + 60
    while got < 100:
        assert time.monotonic() < deadline
        for msg in consumer.consume(100, 0.5):
            if msg.error():
                continue
            got += 1
            assert dict(msg.headers() or []) == {"kind": b"view"}
            key = msg.key()
            assert key is not None
            partitions_of.setdefault(key, set()).add(msg.partition() or 0)
    consumer.close()
    # Partitioning by key: every key in one partition.
    assert all(len(p) == 1 for p in partitions_of.values())
    assert set(partitions_of) == {f"p{i}".encode() for i in range(5)}
