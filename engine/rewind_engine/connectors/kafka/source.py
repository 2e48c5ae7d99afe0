"""KafkaSource: topic partitions as resettable splits.

What flows through here: `discover_splits` lists the partitions of the named topics (or
of every topic matching a pattern) as split ids "topic:partition". The runtime opens a
`KafkaSplitReader` per assigned split with the offset recorded in the snapshot it
restores from. All readers of one source subtask share one librdkafka consumer (one set
of connections and fetch threads, not one per partition): the consumer is *assigned*
partitions at explicit offsets (never `subscribe`, so no group rebalance ever moves a
partition behind the runtime's back), and its fetched messages are sorted into one
buffer per split.

What must stay true:
- A split's position is the offset of the next record to read (last returned + 1), an
  int, known from the moment the reader opens: "latest", a timestamp or the group's
  committed offset are resolved to a concrete offset at open, so a snapshot taken
  before any record arrives still resumes at the same place.
- The snapshot is the only source of truth. Offsets are committed to the consumer group
  (`group_id`) after a checkpoint completes, for monitoring and lag only.
- A record that cannot be decoded fails the job (`on_error="fail"`) or goes, raw and
  with headers naming its origin, to a dead-letter topic (`on_error="dead-letter"`); the
  error always names topic, partition and offset.
- A snapshot never completes with a position past a dead letter the broker has not
  acknowledged: the reader's `durable()` hands the wait for the dead letters sent before
  the barrier to the snapshot thread (the job's loop goes on meanwhile). A dead letter
  the producer gave up on fails that snapshot, once, and is sent again, so a later
  snapshot covers it; a bounded split that ends waits for its dead letters itself.
- Partitions that appear while running are read from their earliest offset (everything
  in them was written after the job started); partitions present at the first
  discovery without a restored offset start where `start` says.
- With `stop_at` the source is bounded: each split's stop offset is resolved when its
  reader opens ("end": the partition's last committed offset then; a timestamp: the
  first offset at or after it), the split finishes once everything before it was read,
  its final position is the stop offset, and partitions are not discovered after the
  first listing. A restart resolves "end" again for the splits not finished yet.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any, Literal, cast

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from ..base import Source as SourceBase
from ..base import SourceBatch, SourceContext, SplitReader
from .config import (
    ConfigValue,
    KafkaUnavailableError,
    admin_config,
    bootstrap_servers,
    consumer_config,
    producer_config,
    with_retries,
)
from .serde import Decoder, Format, KafkaRecord, RecordDecodeError, decoder

log = logging.getLogger("rewind.kafka.source")

Start = Literal["earliest", "latest", "committed"] | int | datetime
"""Where a partition without a restored offset starts: its earliest or latest offset, the
first record at or after a timestamp (ms since the epoch, or a datetime), or the offset
the consumer group last committed."""

StopAt = Literal["end"] | int | datetime
"""Where a bounded source stops: at the end each partition has when its reader opens,
or before the first record at or after a timestamp (ms since the epoch, or a datetime)."""

OnError = Literal["fail", "dead-letter"]
Emit = Literal["value", "record"]


def _earliest() -> OffsetSpec:
    return OffsetSpec.earliest()  # type: ignore[no-untyped-call,no-any-return]


def _latest() -> OffsetSpec:
    return OffsetSpec.latest()  # type: ignore[no-untyped-call,no-any-return]


def _at_timestamp(at: int | datetime) -> OffsetSpec:
    ms = int(at.timestamp() * 1000) if isinstance(at, datetime) else int(at)
    return OffsetSpec.for_timestamp(ms)  # type: ignore[no-any-return]


def _coords(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a fetched message, which always has all three."""
    return cast(str, msg.topic()), cast(int, msg.partition()), cast(int, msg.offset())


def _header(h: tuple[str, str | bytes | None]) -> tuple[str, bytes | None]:
    value = h[1]
    return (h[0], value.encode() if isinstance(value, str) else value)


def split_id(topic: str, partition: int) -> str:
    """Kafka topic names cannot contain ':', so "topic:partition" is unambiguous."""
    return f"{topic}:{partition}"


def parse_split(split: str) -> tuple[str, int]:
    topic, sep, partition = split.rpartition(":")
    if not sep or not topic or not partition.isdigit():
        raise ValueError(f"not a Kafka split id (topic:partition): {split!r}")
    return topic, int(partition)


class KafkaSource(SourceBase):
    """Reads Kafka topics; every partition is a split whose offset is snapshotted.

    `topics` or `pattern` (a regular expression matched against whole topic names;
    internal topics starting with "__" are skipped) says what to read. `config` is passed
    to librdkafka as is (`security.protocol`, `sasl.*`, `ssl.*`, fetch sizes, ...).
    """

    def __init__(
        self,
        topics: str | Iterable[str] | None = None,
        *,
        pattern: str | None = None,
        bootstrap_servers: str | None = None,
        config: Mapping[str, ConfigValue] | None = None,
        start: Start = "earliest",
        committed_fallback: Literal["earliest", "latest"] = "earliest",
        group_id: str | None = None,
        commit_offsets: bool = True,
        value_format: Format | Decoder = "json",
        key_format: Format | Decoder = "utf-8",
        emit: Emit = "value",
        on_error: OnError = "fail",
        dead_letter_topic: str | None = None,
        connect_timeout_s: float = 60.0,
        stop_at: StopAt | None = None,
    ) -> None:
        if (topics is None) == (pattern is None):
            raise ValueError("KafkaSource needs exactly one of topics=... or pattern=...")
        self.topics: tuple[str, ...] = (
            () if topics is None else (topics,) if isinstance(topics, str) else tuple(topics)
        )
        if topics is not None and not self.topics:
            raise ValueError("KafkaSource: topics is empty")
        self.pattern = re.compile(pattern) if pattern is not None else None
        if isinstance(start, str) and start not in ("earliest", "latest", "committed"):
            raise ValueError(f"start must be earliest, latest, committed or a timestamp: {start!r}")
        if committed_fallback not in ("earliest", "latest"):
            raise ValueError(
                f"committed_fallback must be earliest or latest: {committed_fallback!r}"
            )
        if isinstance(stop_at, str) and stop_at != "end":
            raise ValueError(f'stop_at must be "end", a timestamp or None: {stop_at!r}')
        if on_error == "dead-letter" and not dead_letter_topic:
            raise ValueError('on_error="dead-letter" needs dead_letter_topic=...')
        if on_error not in ("fail", "dead-letter"):
            raise ValueError(f"on_error must be 'fail' or 'dead-letter': {on_error!r}")
        if emit not in ("value", "record"):
            raise ValueError(f"emit must be 'value' or 'record': {emit!r}")
        self.servers = bootstrap_servers
        self.config: dict[str, ConfigValue] = dict(config or {})
        self.start: Start = start
        self.committed_fallback = committed_fallback
        self.group_id = group_id
        self.commit_offsets = commit_offsets
        self.decode_value = decoder(value_format)
        self.decode_key = decoder(key_format)
        self.emit: Emit = emit
        self.on_error: OnError = on_error
        self.dead_letter_topic = dead_letter_topic
        self.connect_timeout_s = connect_timeout_s
        self.stop_at: StopAt | None = stop_at
        self._admin: AdminClient | None = None
        self._initial: set[str] | None = None
        self._known: list[str] = []
        self._consumers: dict[int, _SharedConsumer] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._refresh: Future[list[str]] | None = None

    # -- discovery -------------------------------------------------------------------

    @property
    def _bootstrap(self) -> str:
        return bootstrap_servers(self.servers)

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(admin_config(self._bootstrap, self.config))
        return self._admin

    def _list_splits(self, timeout_s: float) -> list[str]:
        metadata = self._admin_client().list_topics(timeout=timeout_s)
        found: list[str] = []
        missing: list[str] = []
        if self.pattern is not None:
            names = [
                t
                for t in metadata.topics
                if not t.startswith("__") and self.pattern.fullmatch(t) is not None
            ]
        else:
            names = list(self.topics)
        for name in names:
            meta = metadata.topics.get(name)
            if meta is None or meta.error is not None:
                missing.append(name)
                continue
            found.extend(split_id(name, p) for p in meta.partitions)
        if missing and self.pattern is None:
            # Retriable: at start the topic may be created a moment after the app.
            raise KafkaException(
                KafkaError(
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    f"topics {missing} do not exist",
                    retriable=True,
                )
            )
        return sorted(found, key=parse_split)

    def discover_splits(self) -> list[str]:
        """Partitions of the topics, as "topic:partition" ids.

        The first call waits (retrying with backoff) up to `connect_timeout_s` for the
        brokers and fails with a clear error after that. Later calls never wait: they
        return what the previous background refresh found and start the next one, and
        keep the last known list while the brokers do not answer.
        """
        if self._initial is not None and self.stop_at is not None:
            return list(self._known)  # bounded: the partitions of the first listing
        if self._initial is None:
            try:
                splits = with_retries(
                    "listing Kafka partitions",
                    self._bootstrap,
                    lambda: self._list_splits(timeout_s=min(10.0, self.connect_timeout_s)),
                    deadline_s=self.connect_timeout_s,
                )
            except KafkaException as exc:
                raise KafkaUnavailableError(
                    f"cannot list the partitions of {self._what()} at {self._bootstrap}: "
                    f"{exc.args[0] if exc.args else exc}"
                ) from exc
            self._initial = set(splits)
            self._known = splits
            return list(splits)
        # While running, the metadata request runs in the background: the runtime calls
        # this from its scheduler loop, which must not wait on an unreachable broker.
        future = self._refresh
        if future is None or future.done():
            if future is not None:
                try:
                    self._merge(future.result())
                except KafkaException as exc:
                    log.warning(
                        "partition discovery failed, keeping %d known: %s", len(self._known), exc
                    )
            self._refresh = self._discovery().submit(self._list_splits, 10.0)
        return list(self._known)

    def bounded(self) -> bool:
        return self.stop_at is not None

    def _merge(self, splits: list[str]) -> None:
        new = sorted(set(splits) - set(self._known), key=parse_split)
        if new:
            log.info("new Kafka partitions discovered: %s", new)
        # Never forget a split: a transient metadata gap must not close a reader.
        self._known = sorted(set(self._known) | set(splits), key=parse_split)

    def _discovery(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="rewind-kafka-discovery")
        return self._executor

    def _what(self) -> str:
        if self.pattern is not None:
            return f"topics matching {self.pattern.pattern!r}"
        return f"topics {list(self.topics)}"

    # -- readers ---------------------------------------------------------------------

    def open_split(self, split: str, position: Any | None, ctx: SourceContext) -> SplitReader:
        topic, partition = parse_split(split)
        if position is None:
            offset = self._start_offset(split, topic, partition, ctx)
        elif isinstance(position, int) and position >= 0:
            offset = position
        else:
            raise ValueError(f"split {split}: a Kafka position is an offset >= 0, got {position!r}")
        stop = None if self.stop_at is None else self._stop_offset(split, topic, partition)
        with self._lock:
            shared = self._consumers.get(ctx.subtask)
            if shared is None:
                shared = _SharedConsumer(self, ctx)
                self._consumers[ctx.subtask] = shared
        if stop is None:
            log.info("reading %s from offset %d (subtask %d)", split, offset, ctx.subtask)
        else:
            log.info(
                "reading %s from offset %d up to %d (subtask %d)", split, offset, stop, ctx.subtask
            )
        return shared.open(topic, partition, offset, stop)

    def _start_offset(self, split: str, topic: str, partition: int, ctx: SourceContext) -> int:
        tp = TopicPartition(topic, partition)
        start: Start = self.start
        if self._initial is not None and split not in self._initial:
            start = "earliest"  # a partition added while running: all of it is new
        if start == "committed":
            committed = self._committed(tp, ctx)
            if committed is not None:
                return committed
            start = self.committed_fallback
        if start == "earliest":
            spec = _earliest()
        elif start == "latest":
            spec = _latest()
        else:
            assert not isinstance(start, str)
            spec = _at_timestamp(start)
        return self._resolve(split, tp, spec, "start")

    def _stop_offset(self, split: str, topic: str, partition: int) -> int:
        stop = self.stop_at
        assert stop is not None
        spec = _latest() if isinstance(stop, str) else _at_timestamp(stop)  # str: "end"
        return self._resolve(split, TopicPartition(topic, partition), spec, "stop")

    def _resolve(self, split: str, tp: TopicPartition, spec: OffsetSpec, what: str) -> int:
        """The offset `spec` names in `tp` (read_committed: "latest" is the last stable
        offset); a timestamp after the last record names the end, like Kafka does."""
        admin = self._admin_client()

        def ask(spec: OffsetSpec) -> int:
            futures = admin.list_offsets(
                {tp: spec}, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=10
            )
            return int(futures[tp].result().offset)

        offset = with_retries(
            f"resolving the {what} offset of {split}",
            self._bootstrap,
            lambda: ask(spec),
            deadline_s=self.connect_timeout_s,
        )
        if offset < 0:
            offset = with_retries(
                f"resolving the end offset of {split}",
                self._bootstrap,
                lambda: ask(_latest()),
                deadline_s=self.connect_timeout_s,
            )
        return offset

    def _committed(self, tp: TopicPartition, ctx: SourceContext) -> int | None:
        group = self.monitoring_group(ctx)
        admin = self._admin_client()

        def ask() -> int:
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, [tp])], request_timeout=10
            )
            result = futures[group].result()
            return int(result.topic_partitions[0].offset)

        offset = with_retries(
            f"reading the committed offset of {tp.topic}:{tp.partition} for group {group}",
            self._bootstrap,
            ask,
            deadline_s=self.connect_timeout_s,
        )
        return None if offset < 0 or offset == OFFSET_INVALID else offset

    def monitoring_group(self, ctx: SourceContext) -> str:
        """The consumer group that offsets are committed to (and read for "committed"):
        `group_id`, else "rewind.{app}.{step uid}", one per app and source step. The
        app's identity keeps apps that share a step uid (v2 and its fork, or unrelated
        apps) out of each other's offsets and lag."""
        if self.group_id:
            return self.group_id
        return f"rewind.{ctx.app or ctx.job_id}.{ctx.step_uid}"

    def _forget(self, subtask: int) -> None:
        with self._lock:
            self._consumers.pop(subtask, None)

    def close(self) -> None:
        with self._lock:
            shared = list(self._consumers.values())
            self._consumers.clear()
        for s in shared:
            s.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._admin = None


class _SharedConsumer:
    """One consumer per source subtask; sorts fetched messages into per-split buffers.

    Readers of one subtask may be polled from one thread or several: a lock guards the
    consumer, and each reader only touches its own buffer between polls.
    """

    # A buffer above HIGH pauses its partition, so that a reader that is polled rarely
    # cannot make the others' fetched records pile up in memory; below LOW it resumes.
    HIGH = 50_000
    LOW = 10_000

    def __init__(self, source: KafkaSource, ctx: SourceContext) -> None:
        self.source = source
        self.ctx = ctx
        servers = source._bootstrap
        self.group = source.monitoring_group(ctx)
        conf = consumer_config(servers, self.group, source.config)
        if source.stop_at is not None:
            # The end of a partition is an event: it is how a split whose last offsets are
            # transaction markers (never returned as records) knows it read everything.
            conf["enable.partition.eof"] = True
        self.consumer = Consumer(conf)
        self.buffers: dict[tuple[str, int], list[Message]] = {}
        self.eof: dict[tuple[str, int], int] = {}
        """Partition -> the offset at which the consumer last reached its end."""
        self.paused: set[tuple[str, int]] = set()
        self.lock = threading.Lock()
        self.dead_letters: _DeadLetters | None = None

    def open(
        self, topic: str, partition: int, offset: int, stop: int | None = None
    ) -> KafkaSplitReader:
        key = (topic, partition)
        with self.lock:
            if key in self.buffers:
                raise RuntimeError(f"split {topic}:{partition} is already open in this subtask")
            self.buffers[key] = []
            self.consumer.incremental_assign([TopicPartition(topic, partition, offset)])
        return KafkaSplitReader(self, topic, partition, offset, stop)

    def release(self, topic: str, partition: int) -> None:
        key = (topic, partition)
        with self.lock:
            self.buffers.pop(key, None)
            self.eof.pop(key, None)
            self.paused.discard(key)
            try:
                self.consumer.incremental_unassign([TopicPartition(topic, partition)])
            except (KafkaException, RuntimeError) as exc:  # RuntimeError: already closed
                log.warning("unassigning %s:%d failed: %s", topic, partition, exc)
            last = not self.buffers
        if last:
            self.source._forget(self.ctx.subtask)
            self.close()

    def fill(self, want: int) -> None:
        """Fetch what librdkafka already has locally (never waits on the network)."""
        with self.lock:
            messages = self.consumer.consume(num_messages=max(want, 1000), timeout=0)
            if not messages:
                return
            # Keyed by what Message returns (typed Optional, never None for a record).
            buffers: dict[Any, list[Message]] = self.buffers
            current_key: tuple[str | None, int | None] | None = None
            current: list[Message] | None = None
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self.eof[(msg.topic(), msg.partition())] = msg.offset()  # type: ignore[index,assignment]
                        current_key = None  # the next message may be of this partition
                        continue
                    self._consumer_error(err)
                    continue
                key = (msg.topic(), msg.partition())
                # Messages arrive in runs from one partition: look the buffer up per run.
                if key != current_key:
                    current_key = key
                    current = buffers.get(key)
                if current is not None:
                    current.append(msg)
            full = [
                TopicPartition(t, p)
                for (t, p), buf in self.buffers.items()
                if len(buf) > self.HIGH and (t, p) not in self.paused
            ]
            if full:
                self.consumer.pause(full)
                self.paused.update((tp.topic, tp.partition) for tp in full)

    def maybe_resume(self, key: tuple[str, int], buffered: int) -> None:
        if key in self.paused and buffered < self.LOW:
            with self.lock:
                self.paused.discard(key)
                self.consumer.resume([TopicPartition(*key)])

    def _consumer_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise KafkaException(err)
        # Broker gone, leader moving, ...: librdkafka reconnects and refetches by itself.
        log.warning("Kafka consumer: %s", err)

    def dead_letter(self, msg: Message, error: RecordDecodeError) -> None:
        topic = self.source.dead_letter_topic
        assert topic is not None
        if self.dead_letters is None:
            self.dead_letters = _DeadLetters(
                Producer(
                    producer_config(self.source._bootstrap, self.source.config)
                    | {"delivery.report.only.error": False}
                ),
                topic,
            )
        original = msg.headers() or []
        headers: list[tuple[str, str | bytes | None]] = list(
            original.items() if isinstance(original, dict) else original
        )
        headers += [
            ("rewind.dlq.topic", error.topic.encode()),
            ("rewind.dlq.partition", str(error.partition).encode()),
            ("rewind.dlq.offset", str(error.offset).encode()),
            ("rewind.dlq.error", str(error).encode()),
        ]
        self.dead_letters.send(msg.value(), msg.key(), headers)
        log.warning("record sent to dead-letter topic %s: %s", topic, error)

    def dead_letters_durable(self) -> Callable[[], None] | None:
        """At a barrier: None if every dead letter is acknowledged, else the wait for
        those sent so far (for the snapshot thread)."""
        letters = self.dead_letters
        if letters is None or letters.settled():
            return None
        return partial(letters.wait, letters.sent)

    def commit(self, offsets: list[TopicPartition]) -> None:
        with self.lock:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:
                log.info("committing offsets for monitoring failed: %s", exc)

    def close(self) -> None:
        with self.lock:
            with contextlib.suppress(RuntimeError):  # already closed
                self.consumer.close()
            if self.dead_letters is not None:
                self.dead_letters.producer.flush(10)


Letter = tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]
"""A dead letter as it is produced: value, key, headers."""


class _DeadLetters:
    """A source subtask's dead-letter producer and the letters not yet acknowledged.

    Letters are numbered as they are sent (on the job's loop). A barrier notes the
    number sent so far; `wait(upto)` (on the snapshot thread) returns once every letter
    up to it is acknowledged. A letter whose delivery failed fails the wait that sees it,
    which reports it (the error is not kept), and is sent again: it is never lost, and
    the snapshot after the one that failed covers it once the broker takes it.
    """

    WAIT_S = 60.0
    """How long a snapshot waits for its dead letters before it fails (they stay in
    flight; a later snapshot waits for them again)."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.lock = threading.Lock()
        self.sent = 0
        self.unacked: dict[int, Letter] = {}
        """Letter number -> the letter, from its send until the broker acknowledged it."""
        self.failed: dict[int, str] = {}
        """Letter number -> why its delivery failed; it is sent again when reported."""

    def send(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
    ) -> None:
        with self.lock:
            self.sent += 1
            number = self.sent
            self.unacked[number] = (value, key, headers)
        self._produce(number)
        self.producer.poll(0)

    def _produce(self, number: int) -> None:
        value, key, headers = self.unacked[number]

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            with self.lock:
                if err is None:
                    self.unacked.pop(number, None)
                else:
                    self.failed[number] = str(err)

        self.producer.produce(
            self.topic, value=value, key=key, headers=headers, on_delivery=delivered
        )

    def settled(self) -> bool:
        """True when no letter waits for an acknowledgement (nor to be sent again)."""
        with self.lock:
            return not self.unacked and not self.failed

    def wait(self, upto: int) -> None:
        """Block until the letters numbered up to `upto` are acknowledged; raise
        `KafkaUnavailableError` for the ones that failed (sending them again) or after
        `WAIT_S`."""
        deadline = time.monotonic() + self.WAIT_S
        while True:
            with self.lock:
                failed = {n: e for n, e in self.failed.items() if n <= upto}
                for n in failed:
                    del self.failed[n]
                pending = sum(1 for n in self.unacked if n <= upto)
            if failed:
                self._send_again(failed)
                raise KafkaUnavailableError(
                    f"could not write {len(failed)} record(s) to dead-letter topic "
                    f"{self.topic} (sent again): {sorted(set(failed.values()))[:3]}"
                )
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise KafkaUnavailableError(
                    f"dead-letter topic {self.topic}: {pending} record(s) not acknowledged "
                    f"within {self.WAIT_S:.0f}s"
                )
            self.producer.poll(0.1)

    def _send_again(self, failed: dict[int, str]) -> None:
        for number, reason in failed.items():
            try:
                self._produce(number)
            except (BufferError, KafkaException) as exc:
                with self.lock:  # the next wait reports it and tries again
                    self.failed[number] = f"{reason}; sending again: {exc}"


class KafkaSplitReader(SplitReader):
    """Reads one partition through its subtask's shared consumer."""

    def __init__(
        self,
        shared: _SharedConsumer,
        topic: str,
        partition: int,
        offset: int,
        stop: int | None = None,
    ):
        self.shared = shared
        self.topic = topic
        self.partition = partition
        self.key = (topic, partition)
        self.next_offset = offset
        self.stop = stop
        """A bounded split ends here: every record before `stop` is read, none after."""
        self.buffer = shared.buffers[self.key]
        self.closed = False
        source = shared.source
        self.decode_value = source.decode_value
        self.decode_key = source.decode_key
        self.emit_records = source.emit == "record"
        self.dead_letter = source.on_error == "dead-letter"

    def poll(self, max_records: int) -> SourceBatch | None:
        buffer = self.buffer
        if self.stop is not None and self.next_offset >= self.stop:
            return self._finish([])
        if len(buffer) < max_records:
            self.shared.fill(max_records)
        if not buffer:
            if self.stop is not None and self.shared.eof.get(self.key, -1) >= self.stop:
                return self._finish([])  # what is left before the stop is no record
            return None
        if len(buffer) <= max_records:
            taken = buffer[:]
            buffer.clear()
        else:
            taken = buffer[:max_records]
            del buffer[:max_records]
        if self.stop is not None and _coords(taken[-1])[2] >= self.stop - 1:
            # The stop is within this batch (or right after it): cut there and end.
            kept = [m for m in taken if _coords(m)[2] < self.stop]
            buffer.clear()
            return self._finish(kept)
        self.shared.maybe_resume(self.key, len(buffer))
        return self._decode(taken)

    def _finish(self, messages: list[Message]) -> SourceBatch:
        batch = self._decode(messages) if messages else SourceBatch([])
        assert self.stop is not None
        # A finished split is closed at once and no barrier asks it for `durable()`:
        # its final position may pass only dead letters the broker has.
        wait = self.shared.dead_letters_durable()
        if wait is not None:
            wait()
        self.next_offset = max(self.next_offset, self.stop)
        batch.finished = True
        return batch

    def _decode(self, messages: list[Message]) -> SourceBatch:
        records: list[Any] = []
        timestamps: list[int] = []
        decode_value = self.decode_value
        known_time = True
        if not self.emit_records:
            for msg in messages:
                try:
                    value = decode_value(msg.value())
                except Exception as exc:
                    self._bad(msg, "value", exc)
                    continue
                records.append(value)
                ts = msg.timestamp()[1]
                known_time = known_time and ts >= 0
                timestamps.append(ts)
        else:
            for msg in messages:
                try:
                    value = decode_value(msg.value())
                except Exception as exc:
                    self._bad(msg, "value", exc)
                    continue
                try:
                    key = self.decode_key(msg.key())
                except Exception as exc:
                    self._bad(msg, "key", exc)
                    continue
                ts = msg.timestamp()[1]
                known_time = known_time and ts >= 0
                timestamps.append(ts)
                headers = msg.headers()
                if isinstance(headers, dict):
                    headers = list(headers.items())
                topic, partition, offset = _coords(msg)
                records.append(
                    KafkaRecord(
                        topic,
                        partition,
                        offset,
                        ts,
                        key,
                        value,
                        tuple(_header(h) for h in headers) if headers else (),
                    )
                )
        self.next_offset = _coords(messages[-1])[2] + 1
        return SourceBatch(records, timestamps if known_time else None)

    def _bad(self, msg: Message, part: str, exc: Exception) -> None:
        error = RecordDecodeError(*_coords(msg), part, exc)
        if not self.dead_letter:
            raise error from exc
        self.shared.dead_letter(msg, error)

    def position(self) -> int:
        # Never waits: the dead letters this position passes are `durable()`'s.
        return self.next_offset

    def durable(self) -> Callable[[], None] | None:
        """The wait for the dead letters sent before this barrier (all of the subtask's:
        its readers share one producer), run on the snapshot thread before the
        manifest; None when there is none."""
        return self.shared.dead_letters_durable()

    def progress(self) -> int:
        return self.next_offset

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Commit the offset to the consumer group, for monitoring (lag) only."""
        if self.shared.source.commit_offsets and not self.closed:
            self.shared.commit([TopicPartition(self.topic, self.partition, self.next_offset)])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.shared.release(self.topic, self.partition)
