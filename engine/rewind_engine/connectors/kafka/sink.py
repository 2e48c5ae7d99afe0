"""KafkaSink: exactly-once output with Kafka transactions, or at-least-once for speed.

What flows through here: every sink subtask gets a writer. `write` turns each batch of
records into a `Batch` of columns (key bytes, value bytes, and topic, partition and
headers when the sink has functions for them) through the user's extractors and
formats. At-least-once writers produce at once and flush at each barrier.
Exactly-once writers hold each checkpoint's output in the committable (so it is part of
the snapshot) and produce it inside one Kafka transaction when the snapshot is complete.

Why the exactly-once writer buffers instead of producing into an open transaction like
Flink: librdkafka (and so confluent-kafka) cannot resume another producer's prepared
transaction, so after a crash the transaction of a completed snapshot could be neither
committed nor reproduced, and its output would be lost. With the records in the
committable the transaction can always be replayed, and a marker committed atomically
with it tells a replay whether it already happened. The cost is latency (output leaves
at the checkpoint, which is when read_committed readers could see it anyway) and
snapshot size (one checkpoint interval of output).

The exactly-once protocol, step by step:

1. Identity. Each writer has a *writer id* W = "{prefix}.{step uid}.{subtask}" (prefix
   defaults to "rewind-{app}", the app's identity, which stays the same across restarts
   and versions of one app, so a restarted writer reuses its id and fences its zombies,
   and which differs between apps, so a fork never fences its original). W is the producer's
   `transactional.id` and the consumer group that holds W's commit marker. Each writer
   instance also draws a random *run token* t.
2. Fencing. Before a producer with transactional.id X is used, `init_transactions()`
   fences every older producer with id X and aborts (or finishes) its in-flight
   transaction, so from then on X's state on the brokers is settled; only then is X's
   marker read (stable offsets only: read_committed).
3. Restored committables. Each one names its owner W', token t', the topic W' wrote
   to (where its marker is) and epochs [(checkpoint id, records), ...]. An owner of
   another app (W' without this app's prefix: the original of a fork) is left alone:
   its output is its app's, and fencing W' would stop that app. In `open`, per owner
   of this app, a short-lived producer with
   transactional.id W' fences W''s zombies (step 2), and every epoch whose checkpoint
   id is above marker[t'] is produced in one transaction together with the new marker;
   epochs at or below it were committed before and are skipped. This happens before any
   new output (the sink contract). The writer's own producer (id W) is made on its
   committer thread once its own `open` has done this (so its first commit does not
   wait for `init_transactions`); no other writer restores W's committables (old subtask
   s's go to new subtask s % parallelism, which is W itself), so it fences no restore in
   progress.
4. `write(records)` encodes the records into a `Batch` and appends it, packed into one
   bytes object (msgpack), to the current epoch; nothing is sent. One bytes object per
   batch rather than a list per record: a checkpoint interval of output held as
   Python lists made every full garbage collection walk all of them (in the exactly-once
   run of `bench/bench_kafka.py --events 600000`, 1.9-2.6 s of full collections instead
   of 0.5 s), and the snapshot stores the bytes as they are. Committables of version 1
   (a row per record) are still restored.
5. `pre_commit(n)` closes the epoch as checkpoint n and returns
   {W, t, every epoch not yet committed}: an epoch whose checkpoint failed rolls into
   the next committable instead of being lost.
6. `commit(n)` (after manifest.json exists): one transaction produces every pending
   epoch with id <= n, in order, and commits W's marker {t: n, ...} through
   `send_offsets_to_transaction` (group W, offset n on partition 0 of the sink's topic,
   the token map as offset metadata). Records and marker become visible together or not
   at all. A commit for an epoch already committed does nothing (idempotent).
7. Errors. A retriable error retries the commit call; an error that requires an abort
   aborts and replays the whole transaction from the buffer (still in memory); a fatal
   error or `ProducerFenced` fails the job, which then restores and continues at step 2.
8. Why a token map and not one number: a restore from an *older* savepoint starts a
   new run token, so the marker of the old run still says how far that run got; the map
   keeps the last `MARKER_TOKENS` runs (offset metadata is limited to ~4 KB). A token
   that fell out of the map is treated as not committed (at-least-once, logged).

The at-least-once writer produces in `write` with an idempotent producer and, before a
snapshot's manifest is written (`wait_durable`, on the snapshot thread), waits until the
broker acknowledged everything sent before that snapshot's barrier, so a completed
snapshot never has output missing before it; after a crash the output since the
snapshot is sent again.

Neither writer blocks the job's loop on the broker: exactly-once transactions (step 6)
run on the writer's `Committer` thread, and `committing()` tells `/status` what they
wait for ("committing transaction to Kafka for checkpoint n, broker not answering
since ...").

What must stay true: partitioning by key uses murmur2 (the Java client's), so the same
key lands in the same partition as with Kafka Streams; headers and keys pass through.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import msgpack
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from ..base import Sink, SinkContext, SinkWriter
from .committer import Committer
from .config import (
    ConfigValue,
    KafkaUnavailableError,
    bootstrap_servers,
    consumer_config,
    is_retriable,
    producer_config,
    with_retries,
)
from .serde import Encoder, Format, RecordEncodeError, encoder

log = logging.getLogger("rewind.kafka.sink")

Delivery = Literal["exactly-once", "at-least-once"]
Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]

MARKER_TOKENS = 40
"""Run tokens kept in a writer's marker: 40 x ~25 bytes stays far below the broker's
offset metadata limit (offset.metadata.max.bytes, 4096 by default)."""

COMMITTABLE_VERSION = 2
"""2: an epoch is [checkpoint id, [packed `Batch`, ...]]; 1 (still restored): [checkpoint
id, [row, ...]] with one `Encoded` row per record."""

CALL_TIMEOUT_S = 30.0
"""Seconds one transactional call may block before it is retried (resumed)."""

# One encoded record: [topic or None (the sink's), partition (-1: by key), key, value,
# headers or None]. Plain lists, so the committable is msgpack data. How committables of
# version 1 held an epoch's records.
Encoded = list[Any]

Batch = list[Any]
"""One write's records as columns: [keys, values, topics, partitions, headers]. The last
three are None when the sink has no `topic_of`, `partition` or `headers` function (then
every record goes to the sink's topic, partitioned by key, without headers); a topic of
None is the sink's, a partition of -1 is by key. Columns instead of one list per record:
an exactly-once writer holds a checkpoint interval of output, and as one packed bytes
object per batch that output costs the garbage collector nothing (a list per record
made every full collection walk hundreds of thousands of them) and packs into the
snapshot as it is."""


class KafkaSink(Sink):
    """Writes records to Kafka: `topic`, or per record with `topic_of`.

    By default a record is the value and has no key. `key`, `value`, `headers`,
    `partition` and `topic_of` are functions of the record; `key_format` and
    `value_format` encode what they return. Records with a key are partitioned by the
    key's murmur2 hash (as the Java client does) unless `partition` says otherwise.
    `config` is passed to librdkafka (security, batching, ...).
    """

    def __init__(
        self,
        topic: str,
        *,
        bootstrap_servers: str | None = None,
        config: Mapping[str, ConfigValue] | None = None,
        delivery: Delivery = "exactly-once",
        key: Callable[[Any], Any] | None = None,
        value: Callable[[Any], Any] | None = None,
        headers: Callable[[Any], Headers | None] | None = None,
        partition: Callable[[Any], int | None] | None = None,
        topic_of: Callable[[Any], str] | None = None,
        key_format: Format | Encoder = "utf-8",
        value_format: Format | Encoder = "json",
        transactional_id_prefix: str | None = None,
        transaction_timeout_s: float = 300.0,
        commit_timeout_s: float = 600.0,
    ) -> None:
        if not topic:
            raise ValueError("KafkaSink needs a topic")
        if delivery not in ("exactly-once", "at-least-once"):
            raise ValueError(f"delivery must be exactly-once or at-least-once: {delivery!r}")
        self.topic = topic
        self.servers = bootstrap_servers
        self.config: dict[str, ConfigValue] = dict(config or {})
        self.delivery: Delivery = delivery
        self.key = key
        self.value = value
        self.headers = headers
        self.partition = partition
        self.topic_of = topic_of
        self.encode_key = encoder(key_format)
        self.encode_value = encoder(value_format)
        self.transactional_id_prefix = transactional_id_prefix
        self.transaction_timeout_s = transaction_timeout_s
        self.commit_timeout_s = commit_timeout_s

    def prefix(self, ctx: SinkContext) -> str:
        """What every writer id of this app's sinks starts with (step 1)."""
        return self.transactional_id_prefix or f"rewind-{ctx.app or ctx.job_id}"

    def writer_id(self, ctx: SinkContext, subtask: int | None = None) -> str:
        subtask = ctx.subtask if subtask is None else subtask
        return f"{self.prefix(ctx)}.{ctx.step_uid}.{subtask}"

    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        servers = bootstrap_servers(self.servers)
        if self.delivery == "at-least-once":
            # Committables of an earlier exactly-once run of this step still count.
            commit_restored(self, servers, restored, self.prefix(ctx))
            return AtLeastOnceWriter(self, servers)
        return ExactlyOnceWriter(self, ctx, servers, restored)

    # -- encoding, shared by both writers ---------------------------------------------

    def encode_batch(self, records: Sequence[Any]) -> Batch:
        """Records -> a `Batch` (columns); an error names the record that caused it."""
        key_of, value_of, headers_of = self.key, self.value, self.headers
        partition_of, topic_of = self.partition, self.topic_of
        encode_key, encode_value = self.encode_key, self.encode_value
        try:
            # One comprehension per column: no per-record row objects on the hot path.
            if key_of is None:
                keys: list[bytes | None] = [None] * len(records)
            else:
                keys = [encode_key(key_of(r)) for r in records]
            if value_of is None:
                values = [encode_value(r) for r in records]
            else:
                values = [encode_value(value_of(r)) for r in records]
            headers = None if headers_of is None else [_headers(headers_of(r)) for r in records]
            partitions = None
            if partition_of is not None:
                partitions = [-1 if p is None else p for p in map(partition_of, records)]
            topics = None if topic_of is None else [topic_of(r) for r in records]
        except Exception as exc:
            record, cause = self._bad_record(records) or ("(not found again)", exc)
            raise RecordEncodeError(
                f"cannot encode a record for Kafka topic {self.topic!r}: "
                f"{type(cause).__name__}: {cause}; record: {record!r:.200}"
            ) from cause
        return [keys, values, topics, partitions, headers]

    def _bad_record(self, records: Sequence[Any]) -> tuple[Any, Exception] | None:
        """The first record that cannot be encoded, and why (the error path)."""
        for record in records:
            try:
                self._encode_one(record)
            except Exception as exc:
                return record, exc
        return None

    def _encode_one(self, record: Any) -> None:
        if self.key is not None:
            self.encode_key(self.key(record))
        self.encode_value(self.value(record) if self.value is not None else record)
        if self.headers is not None:
            _headers(self.headers(record))
        if self.partition is not None:
            self.partition(record)
        if self.topic_of is not None:
            self.topic_of(record)

    def encode(self, records: Sequence[Any]) -> list[Encoded]:
        """Records -> rows [topic|None, partition, key, value, headers|None] (the
        committable format of version 1); errors name the record."""
        return _rows(self.encode_batch(records))


def _headers(headers: Headers | None) -> list[list[Any]] | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [[str(k), v.encode() if isinstance(v, str) else v] for k, v in items]


def _rows(batch: Batch) -> list[Encoded]:
    keys, values, topics, partitions, headers = batch
    n = len(keys)
    return [
        [
            None if topics is None else topics[i],
            -1 if partitions is None else partitions[i],
            keys[i],
            values[i],
            None if headers is None else headers[i],
        ]
        for i in range(n)
    ]


def _columns(rows: list[Encoded]) -> Batch:
    """Version-1 rows -> a `Batch`."""
    topics = [r[0] for r in rows]
    partitions = [r[1] for r in rows]
    headers = [r[4] for r in rows]
    return [
        [r[2] for r in rows],
        [r[3] for r in rows],
        None if all(t is None for t in topics) else topics,
        None if all(p == -1 for p in partitions) else partitions,
        None if all(h is None for h in headers) else headers,
    ]


def pack(batch: Batch) -> bytes:
    """A `Batch` as one msgpack bytes object: what an exactly-once epoch holds."""
    return msgpack.packb(batch, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Batch:
    batch: Batch = msgpack.unpackb(data, raw=False)
    return batch


def _produce_all(
    producer: Producer,
    default_topic: str,
    batch: Batch,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
) -> None:
    """Queue every record, waiting for queue space instead of failing when it is full."""
    produce = producer.produce
    keys, values, topics, partitions, headers = batch
    if topics is None and partitions is None and headers is None:
        # The common case (the sink's topic, partitioned by key, no headers).
        for key, value in zip(keys, values, strict=True):
            try:
                produce(default_topic, value, key, -1, on_delivery)
            except BufferError:
                _produce_when_room(
                    producer,
                    default_topic,
                    value=value,
                    key=key,
                    partition=-1,
                    on_delivery=on_delivery,
                    headers=None,
                )
    else:
        for i, (key, value) in enumerate(zip(keys, values, strict=True)):
            topic = (topics[i] if topics is not None else None) or default_topic
            partition = -1 if partitions is None else partitions[i]
            h = None if headers is None else headers[i]
            hs: list[tuple[str, str | bytes | None]] | None = (
                None if h is None else [(x[0], x[1]) for x in h]
            )
            try:
                if hs is None:
                    produce(topic, value, key, partition, on_delivery)
                else:
                    produce(topic, value, key, partition, on_delivery, headers=hs)
            except BufferError:
                _produce_when_room(
                    producer,
                    topic,
                    value=value,
                    key=key,
                    partition=partition,
                    on_delivery=on_delivery,
                    headers=hs,
                )
    producer.poll(0)


def _produce_when_room(
    producer: Producer,
    topic: str,
    *,
    value: bytes | None,
    key: bytes | None,
    partition: int,
    on_delivery: Callable[[KafkaError | None, Message], None] | None,
    headers: list[tuple[str, str | bytes | None]] | None,
) -> None:
    """librdkafka's local queue is full: serve delivery reports until it has room."""
    while True:
        producer.poll(0.05)
        try:
            if headers is None:
                producer.produce(topic, value, key, partition, on_delivery)
            else:
                producer.produce(topic, value, key, partition, on_delivery, headers=headers)
            return
        except BufferError:
            continue


class _Epoch:
    """The records an at-least-once writer sent between two barriers, and their acks."""

    __slots__ = ("errors", "lock", "unacked")

    def __init__(self, errors: list[str]) -> None:
        self.unacked = 0
        self.errors = errors
        self.lock = threading.Lock()

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        # Delivery reports are served by whichever thread polls (the job's loop after a
        # produce, the snapshot thread in wait_durable), hence the lock.
        with self.lock:
            self.unacked -= 1
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")


class AtLeastOnceWriter(SinkWriter):
    """Produces at once; a snapshot's manifest waits until the broker has everything
    written before its barrier (`wait_durable`, on the snapshot thread, so the job's
    loop goes on producing meanwhile)."""

    def __init__(self, sink: KafkaSink, servers: str) -> None:
        self.sink = sink
        self.errors: list[str] = []
        conf = producer_config(servers, sink.config)
        conf["error_cb"] = self._on_error
        # Every delivery must call back: an epoch is durable when its count of unacked
        # records reaches zero, and successful deliveries are what bring it there.
        conf["delivery.report.only.error"] = False
        self.producer = Producer(conf)
        self.servers = servers
        self.epoch = _Epoch(self.errors)
        self.closed: dict[int, _Epoch] = {}  # checkpoint id -> its epoch, until durable

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.errors.append(f"fatal: {err}")
        else:
            log.warning("Kafka producer: %s", err)

    def write(self, records: list[Any]) -> None:
        epoch = self.epoch
        batch = self.sink.encode_batch(records)
        with epoch.lock:
            epoch.unacked += len(batch[0])
        _produce_all(self.producer, self.sink.topic, batch, epoch.delivered)
        self._raise_errors()

    def _raise_errors(self) -> None:
        if self.errors:
            raise KafkaUnavailableError(
                f"Kafka at {self.servers} did not take {len(self.errors)} record(s): "
                f"{self.errors[:3]}"
            )

    def pre_commit(self, checkpoint_id: int) -> Any:
        self._raise_errors()
        self.closed[checkpoint_id] = self.epoch
        self.epoch = _Epoch(self.errors)
        return None

    def wait_durable(self, checkpoint_id: int) -> None:
        # librdkafka retries until message.timeout.ms; a record it gives up on fails
        # this snapshot (and the job, at its next write), which restores from the last
        # snapshot and sends it again.
        epochs = [e for cid, e in list(self.closed.items()) if cid <= checkpoint_id]
        while any(e.unacked > 0 for e in epochs):
            self.producer.poll(0.1)
            self._raise_errors()
        self._raise_errors()
        for cid in [c for c in list(self.closed) if c <= checkpoint_id]:
            self.closed.pop(cid, None)

    def commit(self, checkpoint_id: int, committable: Any) -> None:
        return None

    def close(self) -> None:
        self.producer.flush(10)


class _Marker:
    """A writer's commit marker: the last committed checkpoint id per run token."""

    def __init__(self, tokens: dict[str, int]) -> None:
        self.tokens = tokens

    @classmethod
    def parse(cls, metadata: str | None) -> _Marker:
        if not metadata:
            return cls({})
        try:
            data = json.loads(metadata)
            return cls({str(k): int(v) for k, v in data.get("t", {}).items()})
        except (ValueError, AttributeError, TypeError):
            log.warning("unreadable Kafka sink marker %r; treating it as empty", metadata)
            return cls({})

    def committed(self, token: str) -> int:
        return self.tokens.get(token, -1)

    def with_commit(self, token: str, checkpoint_id: int) -> _Marker:
        tokens = {k: v for k, v in self.tokens.items() if k != token}
        tokens[token] = checkpoint_id  # insertion order = recency; newest last
        while len(tokens) > MARKER_TOKENS:
            del tokens[next(iter(tokens))]
        return _Marker(tokens)

    def dump(self) -> str:
        return json.dumps({"v": 1, "t": self.tokens}, separators=(",", ":"))


def read_marker(sink: KafkaSink, servers: str, writer_id: str, topic: str) -> _Marker:
    """Writer `writer_id`'s commit marker: group `writer_id`'s committed offset metadata
    on partition 0 of `topic` (step 6). Reading it fences nobody.

    A consumer of that group reads it (`committed`, which never joins the group), not
    the admin client: librdkafka 2.x's admin client crashes the process when the
    broker answers an offset fetch with a retriable error (e.g. an offset that a
    transaction of the writer, still open, may change). The consumer, isolation
    read_committed, asks for stable offsets and retries such answers itself."""
    consumer = Consumer(consumer_config(servers, writer_id, sink.config))

    def ask() -> str | None:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        if tp.error is not None:
            raise KafkaException(tp.error)
        metadata: str | None = tp.metadata
        return metadata

    try:
        metadata = with_retries(
            f"reading the commit marker of {writer_id}",
            servers,
            ask,
            deadline_s=sink.commit_timeout_s,
        )
    finally:
        consumer.close()
    return _Marker.parse(metadata)


class _TxnProducer:
    """A transactional producer for one writer id, with its marker and group metadata."""

    def __init__(
        self, sink: KafkaSink, servers: str, writer_id: str, topic: str | None = None
    ) -> None:
        self.sink = sink
        self.servers = servers
        self.writer_id = writer_id
        self.topic = topic or sink.topic
        """The marker's topic, and where records without a topic of their own go: the
        sink's, or for restored output the topic its writer had (the committable's)."""
        conf = producer_config(servers, sink.config)
        conf["transactional.id"] = writer_id
        conf["transaction.timeout.ms"] = int(sink.transaction_timeout_s * 1000)
        self.producer = Producer(conf)
        # send_offsets_to_transaction needs the group's metadata; a consumer that never
        # joins the group gives the "simple group" metadata the coordinator accepts.
        self.group_consumer = Consumer(consumer_config(servers, writer_id, sink.config))
        self.marker_tp = TopicPartition(self.topic, 0)
        deadline = sink.commit_timeout_s
        # Step 2: fence older producers with this id and settle their transaction.
        with_retries(
            f"initialising Kafka transactions for {writer_id}",
            servers,
            lambda: self.producer.init_transactions(30),
            deadline_s=deadline,
        )
        self.marker = read_marker(sink, servers, writer_id, self.topic)
        self.dirty = False  # a transaction may be open on the producer

    def commit_epochs(self, token: str, epochs: list[list[Any]]) -> None:
        """Steps 6 and 7: produce epochs + marker in one transaction, retrying as needed."""
        epochs = [e for e in epochs if e[0] > self.marker.committed(token)]
        if not epochs:
            return
        last = max(e[0] for e in epochs)
        marker = self.marker.with_commit(token, last)
        offsets = [TopicPartition(self.marker_tp.topic, 0, max(last, 0), metadata=marker.dump())]
        self._run_transaction(epochs, offsets)
        self.marker = marker

    def _run_transaction(self, epochs: list[list[Any]], offsets: list[TopicPartition]) -> None:
        """Step 7 as a small state machine over librdkafka's resumable transaction calls.

        A call that timed out is called again (librdkafka resumes it: a commit that
        reached the coordinator completes instead of being redone); an error that needs
        an abort aborts and replays the whole transaction from the buffer. Produce is
        never repeated inside one transaction, so a replay cannot double a record.
        """
        producer = self.producer
        metadata = self.group_consumer.consumer_group_metadata()
        deadline = time.monotonic() + self.sink.commit_timeout_s
        backoff = 0.2
        # The producer may hold a transaction left by an earlier failed attempt.
        phase = "abort" if self.dirty else "begin"
        while True:
            try:
                if phase == "abort":
                    producer.abort_transaction(CALL_TIMEOUT_S)
                    self.dirty = False
                    phase = "begin"
                if phase == "begin":
                    producer.begin_transaction()
                    self.dirty = True
                    for _checkpoint_id, batches in epochs:
                        for data in batches:
                            _produce_all(producer, self.topic, unpack(data))
                    phase = "offsets"
                if phase == "offsets":
                    producer.send_offsets_to_transaction(offsets, metadata, CALL_TIMEOUT_S)
                    phase = "commit"
                producer.commit_transaction(CALL_TIMEOUT_S)
                self.dirty = False
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not isinstance(err, KafkaError) or err.fatal():
                    raise
                if time.monotonic() > deadline:
                    raise KafkaUnavailableError(
                        f"could not commit the Kafka transaction of {self.writer_id} within "
                        f"{self.sink.commit_timeout_s:.0f}s (at {phase}): {err}"
                    ) from exc
                if err.txn_requires_abort() or err.code() in (
                    KafkaError._STATE,
                    KafkaError._CONFLICT,
                ):
                    phase = "abort"
                elif not (is_retriable(exc) or err.code() == KafkaError._TIMED_OUT):
                    raise
                log.warning(
                    "Kafka transaction of %s: %s failed (%s); %s in %.1fs",
                    self.writer_id,
                    phase,
                    err,
                    "retrying" if phase != "abort" else "aborting and replaying",
                    backoff,
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def close(self) -> None:
        self.group_consumer.close()
        self.producer.flush(5)


def commit_restored(sink: KafkaSink, servers: str, restored: list[Any], prefix: str) -> None:
    """Step 3: commit what restored committables hold and their owners have not committed.

    Only this app's output is written: an owner whose id does not start with `prefix`
    (this app's, step 1) is another app's writer, e.g. the original of a fork restored
    from its savepoint. Its output is that app's own, to its own topic, and that app's
    own restore writes what it had not committed; taking over its transactional id would
    fence it while it runs. So a foreign owner's marker is only read, to say in the log
    whether something of it was left uncommitted.

    Committables are grouped by owner, so one owner's id is used by one producer at a
    time (two producers with one transactional.id would fence each other). The runtime
    opens writers one after another, and no writer's own producer exists yet (it is made
    at its first commit), so these short-lived producers never fence a live one.
    """
    by_owner: dict[tuple[str, str], dict[str, dict[int, list[bytes]]]] = {}
    for committable in restored:
        if committable is None:
            continue
        if not isinstance(committable, dict) or committable.get("v") not in (1, 2):
            raise ValueError(f"not a Kafka sink committable: {committable!r:.200}")
        version = committable["v"]
        # Committables written before "topic" was recorded went to the sink's topic.
        writer = (str(committable["writer"]), str(committable.get("topic") or sink.topic))
        tokens = by_owner.setdefault(writer, {})
        epochs = tokens.setdefault(str(committable["token"]), {})
        for cid, data in committable["epochs"]:
            # The same epoch can sit in several pending committables of one writer.
            epochs[int(cid)] = data if version == 2 else [pack(_columns(data))] if data else []
    for (owner, topic), tokens in by_owner.items():
        if not owner.startswith(prefix + "."):
            _report_foreign(sink, servers, owner, topic, tokens)
            continue
        txn = _TxnProducer(sink, servers, owner, topic)
        try:
            for token, epochs in tokens.items():
                ordered = [[cid, epochs[cid]] for cid in sorted(epochs)]
                done = txn.marker.committed(token)
                if token not in txn.marker.tokens and ordered:
                    log.warning(
                        "no commit marker for run %s of %s: committing its restored output",
                        token,
                        owner,
                    )
                log.info(
                    "restored Kafka sink output of %s (run %s): checkpoints %s, committed up "
                    "to %s; committing %s",
                    owner,
                    token,
                    sorted(epochs),
                    done,
                    [cid for cid in sorted(epochs) if cid > done],
                )
                txn.commit_epochs(token, ordered)
        finally:
            txn.close()


def _report_foreign(
    sink: KafkaSink,
    servers: str,
    owner: str,
    topic: str,
    tokens: dict[str, dict[int, list[bytes]]],
) -> None:
    """Step 3 for another app's writer: nothing is written, the log says what was left."""
    marker = read_marker(sink, servers, owner, topic)
    for token, epochs in tokens.items():
        left = [cid for cid in sorted(epochs) if cid > marker.committed(token)]
        if left:
            log.warning(
                "the snapshot holds output of %s (run %s, to topic %s) that its app had not"
                " committed when this job started (checkpoints %s); it belongs to that app,"
                " which commits it itself (or its own restore from this snapshot does):"
                " not written by this one",
                owner,
                token,
                topic,
                left,
            )
        else:
            log.info(
                "restored Kafka sink output of %s (run %s) is another app's and was"
                " committed by it; nothing to write",
                owner,
                token,
            )


class ExactlyOnceWriter(SinkWriter):
    """Buffers each checkpoint's output and produces it in a transaction on commit.

    The transactions run on the writer's `Committer` thread: the job's loop (and with
    it the control API) goes on while the broker is slow or stalled. `pending` is only
    replaced, never changed in place, so the committer reads a consistent list."""

    def __init__(
        self, sink: KafkaSink, ctx: SinkContext, servers: str, restored: list[Any]
    ) -> None:
        self.sink = sink
        self.ctx = ctx
        self.servers = servers
        self.writer_id = sink.writer_id(ctx)
        self.token = secrets.token_hex(6)
        self.current: list[bytes] = []  # this epoch's output, one packed Batch per write
        self.pending: list[list[Any]] = []  # [[checkpoint id, batches], ...], oldest first
        commit_restored(sink, servers, restored, sink.prefix(ctx))
        self.txn: _TxnProducer | None = None
        # The writer's own producer is made on the committer's thread as soon as this
        # writer's restore is done (above), so its first commit does not wait for
        # init_transactions and the marker (if that fails, the first commit makes it).
        # No other writer restores this writer's id (old subtask s's committables go to
        # new subtask s % parallelism, and a new subtask s is this writer), so it fences
        # no restore in progress.
        self.committer = Committer(
            f"rewind-kafka-commit-{self.writer_id}",
            self._commit_up_to,
            "committing transaction to Kafka",
            prepare=self._make_producer,
            preparing="initialising Kafka transactions",
        )

    def _make_producer(self) -> None:
        if self.txn is None:
            self.txn = _TxnProducer(self.sink, self.servers, self.writer_id)

    def write(self, records: list[Any]) -> None:
        self.current.append(pack(self.sink.encode_batch(records)))

    def _prune(self) -> None:
        done = self.committer.done
        if self.pending and self.pending[0][0] <= done:
            self.pending = [e for e in self.pending if e[0] > done]

    def pre_commit(self, checkpoint_id: int) -> Any:
        """Step 5."""
        self.committer.check()
        self._prune()
        self.pending = [*self.pending, [checkpoint_id, self.current]]
        self.current = []
        return {
            "v": COMMITTABLE_VERSION,
            "writer": self.writer_id,
            "topic": self.sink.topic,
            "token": self.token,
            "epochs": [[cid, records] for cid, records in self.pending],
        }

    def commit(self, checkpoint_id: int, committable: Any) -> None:
        """Step 6, handed to the committer thread; returns at once."""
        self._prune()
        self.committer.request(checkpoint_id)

    def _commit_up_to(self, checkpoint_id: int) -> None:
        """On the committer's thread: everything pending up to `checkpoint_id`, in one
        transaction."""
        due = [e for e in self.pending if e[0] <= checkpoint_id]
        if not due:
            return
        self._make_producer()
        assert self.txn is not None
        self.txn.commit_epochs(self.token, due)

    def committing(self) -> str | None:
        self._prune()
        return self.committer.committing()

    def wait_committed(self, timeout_s: float | None = None) -> None:
        """Block until every requested commit is done; raise the error one ended with.
        For callers that drive a writer by hand (tests, tools); the runtime never waits."""
        limit = self.sink.commit_timeout_s if timeout_s is None else timeout_s
        if not self.committer.wait(limit):
            raise KafkaUnavailableError(
                f"the Kafka transaction of {self.writer_id} did not commit within {limit:g}s"
            )
        self.committer.check()
        self._prune()

    def close(self) -> None:
        # A job that finished has waited for its commits (`committing`); one that was
        # cancelled or failed leaves the rest to the next run, which replays it from
        # the snapshot. Wait briefly, then leave the producer to the committer thread.
        self.committer.close()
        if self.committer.wait(5.0) and self.txn is not None:
            self.txn.close()
