"""The exchange: channels between subtasks on different workers, carried by Kafka.

Flows through here: a subtask's router pushes elements into a `RemoteChannel` exactly
as into a local one; the channel packs them (exchange_codec.py) into messages on the
edge's topic, in the partition of the downstream subtask (placement.py). On the
receiving worker, `Exchange.poll` consumes every partition its subtasks read, drops
messages of other attempts, and pushes each element into the local input channel of
(downstream subtask, upstream subtask), so the receiving `Task` reads, aligns barriers
and combines watermarks exactly as in one process.

Why this is exactly-once without Kafka transactions (epoch-tagged records):

1. Barriers are aligned (tasks.py): when subtask d captures its state for checkpoint
   n it has processed everything every upstream sent before barrier n, and nothing
   after. So no exchange record is ever part of a snapshot's state: the cut is empty.
2. Every message carries the attempt (one random token per start of the whole job,
   chosen by the coordinator). A restored job replays from the sources' positions and
   regenerates every record after the cut under a new attempt.
3. Consumers start each partition at its end offset, read before the coordinator lets
   any worker produce (worker.py, the start handshake), and drop any message of
   another attempt (a zombie worker of an old run). So no record reaches a step twice.
4. A record is visible to the next worker as soon as its message is written (a few ms),
   not one checkpoint later as with transactions committed at the checkpoint; the
   price, replay from the sources after a failure, is paid anyway by an aligned
   snapshot. Transactions would add a commit per producer per checkpoint and hold
   every record back by a checkpoint interval.
5. The snapshot records each consumer's position at its barrier (`positions`); once the
   checkpoint is complete nothing before it is read again, so the coordinator deletes
   it (`delete_records`, global_checkpoint.py).

Order: one producer per worker writes all of (u -> d)'s messages to one partition, with
idempotence on, so they arrive in order. Backpressure: a remote channel has space while
the producer's queue is short; a receiving partition is paused while the channels it
feeds hold many elements, except while its subtask aligns a barrier (pausing then
could hold back the barrier that ends the alignment).
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.admin._listoffsets import OffsetSpec

from ..connectors.kafka.config import admin_config, consumer_config, producer_config
from . import exchange_codec
from .channels import LocalChannel
from .elements import Barrier, Batch, Element, Watermark
from .placement import of_retired_job
from .tasks import Task

log = structlog.get_logger("rewind.exchange")

RETIRE_WAIT_S = 30.0
"""How long closing waits for older jobs' topics to be deleted (one list, one delete)."""

TP = tuple[str, int]


class ExchangeError(RuntimeError):
    """The exchange cannot carry data (a broker refused, a topic vanished)."""


class Exchange:
    """One worker's Kafka clients: a producer, a consumer, an admin client."""

    def __init__(
        self,
        servers: str,
        group: str,
        *,
        linger_s: float,
        max_records: int,
        queue_limit: int,
        high_water: int,
    ) -> None:
        self.servers = servers
        self.linger_s = linger_s
        self.max_records = max_records
        self.queue_limit = queue_limit
        self.high_water = high_water
        self.attempt = ""
        self.error: str | None = None
        pconf = producer_config(servers, {"linger.ms": 1, "compression.type": "none"})
        pconf["error_cb"] = self._client_error
        pconf["on_delivery"] = self._delivery
        # Every report, not only errors: a control message's acknowledgement is how a
        # worker knows the broker answers (stalled_for). Messages carry whole batches,
        # so a report per message is cheap.
        pconf["delivery.report.only.error"] = False
        self.producer = Producer(pconf)
        cconf = consumer_config(
            servers, group, {"fetch.wait.max.ms": 5, "queued.max.messages.kbytes": 65536}
        )
        cconf["error_cb"] = self._client_error
        # No transactions here (see the module docstring): read what is written at once.
        cconf["isolation.level"] = "read_uncommitted"
        self.consumer = Consumer(cconf)
        self.admin = AdminClient(admin_config(servers, {}))
        self._retiring: threading.Thread | None = None
        self.channels: list[RemoteChannel] = []
        self.routes: dict[TP, dict[int, LocalChannel]] = {}
        self.readers: dict[TP, Task] = {}
        self.positions: dict[TP, int] = {}
        self._paused: set[TP] = set()
        self._control: set[TP] = set()
        self.dropped = 0
        self._control_acked_at = time.monotonic()
        """When the broker last acknowledged a control message of this worker's."""
        self._control_waiting = 0
        """Control messages sent and not acknowledged yet."""

    # -- callbacks from librdkafka (on poll) -------------------------------------------

    def _client_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.error = f"Kafka client failed: {err}"
        else:
            log.warning("exchange_kafka_trouble", error=str(err), servers=self.servers)

    def _delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.error = f"exchange message to {msg.topic()}[{msg.partition()}] failed: {err}"

    def _control_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self._control_waiting -= 1
        if err is None:
            self._control_acked_at = time.monotonic()
        else:
            self._delivery(err, msg)

    def stalled_for(self, now: float) -> float:
        """Seconds the broker has left a control message of this worker unacknowledged
        (0 when none waits). Heartbeats go out every fraction of a second, so while the
        broker answers this stays near 0; a broker that is down or frozen makes it grow
        for every worker at once, unlike one dead worker. Only control messages count:
        data to one broken partition (a deleted topic) is an error of its own, not an
        outage to wait out."""
        return now - self._control_acked_at if self._control_waiting > 0 else 0.0

    # -- topics ---------------------------------------------------------------------

    def ensure_topics(self, topics: dict[str, int], timeout_s: float = 30.0) -> None:
        """Create the topics that do not exist yet (name -> partitions); refuse one that
        exists with fewer partitions than the job needs."""
        if not topics:
            return
        new = [NewTopic(t, num_partitions=n, replication_factor=1) for t, n in topics.items()]
        existing: list[str] = []
        for topic, future in self.admin.create_topics(new, request_timeout=timeout_s).items():
            try:
                future.result()
                log.info("exchange_topic_created", topic=topic, partitions=topics[topic])
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ExchangeError(f"cannot create exchange topic {topic}: {exc}") from exc
                existing.append(topic)
        if existing:
            self._check_partitions({t: topics[t] for t in existing}, timeout_s)

    def _check_partitions(self, topics: dict[str, int], timeout_s: float) -> None:
        # A topic deleted under a running job is created again by the broker, with its
        # default partition count, as soon as a dying worker writes to it (Kafka's
        # auto.create.topics.enable); a restart would then wait forever for partitions
        # that do not exist. The exchange is always read from its end (every record is
        # tagged with its run's attempt), so deleting such a topic loses nothing.
        # A topic another worker created a moment ago may not be in the metadata yet (no
        # partitions, or an error): asked again until it is. KRaft applies a topic and
        # its partitions at once, so a known topic's count is final.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                metadata = self.admin.list_topics(timeout=timeout_s).topics
            except KafkaException as exc:
                raise ExchangeError(f"cannot describe the exchange topics: {exc}") from exc
            known = {
                t: len(m.partitions)
                for t, m in metadata.items()
                if t in topics and m.error is None and m.partitions
            }
            if len(known) == len(topics) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for topic, needed in sorted(topics.items()):
            have = known.get(topic, 0)
            if have < needed:
                raise ExchangeError(
                    f"exchange topic {topic} has {have} partition(s), but this job needs "
                    f"{needed}: it was probably deleted while the job ran and created "
                    "again by the broker (auto.create.topics.enable). Delete it "
                    f"(kafka-topics.sh --delete --topic {topic}) and start the job again; "
                    "the exchange is read from its end, so nothing is lost"
                )

    def end_offsets(self, tps: Iterable[TP], timeout_s: float = 60.0) -> dict[TP, int]:
        """The end offset of every partition; retried while new topics get leaders."""
        wanted = {TopicPartition(t, p): OffsetSpec.latest() for t, p in tps}  # type: ignore[no-untyped-call]
        if not wanted:
            return {}
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                out: dict[TP, int] = {}
                for tp, future in self.admin.list_offsets(wanted, request_timeout=10).items():
                    out[(tp.topic, tp.partition)] = future.result().offset
                return out
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise ExchangeError(
                        f"cannot read the end offsets of the exchange topics at {self.servers}"
                        f" within {timeout_s:g} s: {exc}"
                    ) from exc
                time.sleep(0.2)  # a topic created a moment ago may have no leader yet

    # -- sending --------------------------------------------------------------------

    def channel(self, topic: str, partition: int, source: int) -> RemoteChannel:
        ch = RemoteChannel(self, topic, partition, source)
        self.channels.append(ch)
        return ch

    def produce(self, topic: str, partition: int, value: bytes, *, control: bool = False) -> None:
        while True:
            try:
                if control:
                    self.producer.produce(
                        topic, value=value, partition=partition, on_delivery=self._control_delivery
                    )
                    self._control_waiting += 1
                else:
                    self.producer.produce(topic, value=value, partition=partition)
                return
            except BufferError:
                self.producer.poll(0.005)  # the local queue is full: let it drain
            except KafkaException as exc:  # e.g. a partition gone with its deleted topic
                raise ExchangeError(
                    f"exchange message to {topic}[{partition}] failed: {exc.args[0]}"
                ) from exc

    def has_space(self) -> bool:
        return len(self.producer) < self.queue_limit

    def flush_due(self, now: float) -> None:
        """Send what has waited `linger_s` (called every scheduler round)."""
        deadline = now - self.linger_s
        for ch in self.channels:
            if ch.waiting() and ch.since <= deadline:
                ch.flush()
        self.producer.poll(0)

    # -- receiving ------------------------------------------------------------------

    def route(self, topic: str, partition: int, source: int, channel: LocalChannel) -> None:
        self.routes.setdefault((topic, partition), {})[source] = channel

    def bind(self, topic: str, partition: int, task: Task) -> None:
        self.readers[(topic, partition)] = task

    def assign(self, control: Iterable[TP]) -> None:
        """Read every routed partition (and the control partitions) from its end."""
        self._control = set(control)
        tps = [*self.routes, *self._control]
        ends = self.end_offsets(tps)
        self.positions = {tp: ends[tp] for tp in self.routes}
        self.consumer.assign([TopicPartition(t, p, ends[(t, p)]) for t, p in tps])
        log.info("exchange_assigned", partitions=len(self.routes), control=len(self._control))

    def poll(self, on_control: Callable[[int, bytes], None], max_messages: int = 256) -> bool:
        """Consume what has arrived; True if anything did."""
        msgs = self.consumer.consume(num_messages=max_messages, timeout=0)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise ExchangeError(f"exchange consumer: {err}")
            tp = (msg.topic() or "", msg.partition() or 0)
            value = msg.value() or b""
            if tp in self._control:
                on_control(tp[1], value)
                continue
            self.positions[tp] = (msg.offset() or 0) + 1
            attempt, source, elements = exchange_codec.decode(value)
            if attempt != self.attempt:
                self.dropped += 1  # an older run's record: replay regenerates it
                continue
            channel = self.routes[tp][source]
            for element in elements:
                channel.push(element)
        self._backpressure()
        return bool(msgs)

    def _backpressure(self) -> None:
        for tp, chans in self.routes.items():
            queued = sum(len(ch) for ch in chans.values())
            task = self.readers.get(tp)
            aligning = task is not None and task.aligning is not None
            if tp not in self._paused and queued > self.high_water and not aligning:
                self.consumer.pause([TopicPartition(*tp)])
                self._paused.add(tp)
            elif tp in self._paused and (queued <= self.high_water // 2 or aligning):
                self.consumer.resume([TopicPartition(*tp)])
                self._paused.discard(tp)

    def lag(self) -> int:
        """Exchange records written for this worker and not consumed yet, from the high
        watermarks the consumer already knows (no request to the brokers)."""
        total = 0
        for tp, position in self.positions.items():
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            if high is not None and high >= 0:
                total += max(0, high - position)
        return total

    def snapshot_positions(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for (topic, partition), offset in self.positions.items():
            out.setdefault(topic, {})[partition] = offset
        return out

    def purge(self, positions: dict[str, dict[str, int]]) -> None:
        """Delete exchange records before `positions` (a completed checkpoint's)."""
        tps = [TopicPartition(t, int(p), o) for t, ps in positions.items() for p, o in ps.items()]
        tps = [tp for tp in tps if tp.offset > 0]
        if not tps:
            return
        for tp, future in self.admin.delete_records(tps).items():
            future.add_done_callback(functools.partial(_log_purge, tp=tp))

    def retire(self, jobs: re.Pattern[str], own_job: str) -> None:
        """Delete the exchange and control topics of older jobs (ids `jobs` matches in
        full, never `own_job`'s), on a thread of its own: housekeeping must never hold
        the job up, and a failure only leaves topics behind (logged)."""
        self._retiring = threading.Thread(
            target=self._retire, args=(jobs, own_job), name="exchange-retire", daemon=True
        )
        self._retiring.start()

    def _retire(self, jobs: re.Pattern[str], own_job: str) -> None:
        try:
            names = self.admin.list_topics(timeout=30).topics
        except KafkaException as exc:
            log.warning("exchange_retire_failed", error=str(exc))
            return
        doomed = sorted(t for t in names if of_retired_job(t, jobs, own_job))
        if not doomed:
            return
        for topic, future in self.admin.delete_topics(doomed, request_timeout=60).items():
            try:
                future.result()  # waited for here, so that closing waits for it too
                log.info("exchange_topic_retired", topic=topic)
            except KafkaException as exc:
                log.warning("exchange_retire_failed", topic=topic, error=str(exc))

    def close(self) -> None:
        try:
            for ch in self.channels:
                if ch.waiting():
                    ch.flush()
            self.producer.flush(5.0)
            if self._retiring is not None:  # a bounded job may end right after its start
                self._retiring.join(RETIRE_WAIT_S)
        finally:
            self.consumer.close()


def _log_purge(future: Future[Any], tp: TopicPartition) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("exchange_purge_failed", topic=tp.topic, partition=tp.partition, error=str(exc))


class RemoteChannel:
    """The sending end of (upstream subtask -> downstream subtask on another worker).

    Elements are collected into one message: consecutive batches are merged (into lists
    the channel owns: a batch may also have gone to another channel), consecutive
    watermarks keep only the newest, and a message leaves at a barrier, after
    `max_records` records, or once its first element waited `linger_s`."""

    __slots__ = ("_keys", "_recs", "_ts", "items", "out", "partition", "since", "source", "topic")

    def __init__(self, out: Exchange, topic: str, partition: int, source: int) -> None:
        self.out = out
        self.topic = topic
        self.partition = partition
        self.source = source
        self.items: list[Element] = []
        self.since = 0.0
        self._recs: list[Any] = []
        self._ts: list[int] | None = None
        self._keys: list[Any] | None = None

    def push(self, element: Element) -> None:
        if not self.items and not self._recs:
            self.since = time.monotonic()
        if type(element) is Batch:
            # Batches whose records are their keys (routing's keys_only) stay so when
            # merged: _recs is then _keys, one list, which the codec sends once.
            keys_only = element.keys is not None and element.records is element.keys
            if self._recs and (
                (self._ts is None) != (element.timestamps is None)
                or (self._keys is None) != (element.keys is None)
                or (self._recs is self._keys) != keys_only
            ):
                self._seal()
            if not self._recs:
                self._ts = [] if element.timestamps is not None else None
                self._keys = [] if element.keys is not None else None
                self._recs = self._keys if keys_only and self._keys is not None else []
            if not keys_only:
                self._recs.extend(element.records)
            if self._ts is not None and element.timestamps is not None:
                self._ts.extend(element.timestamps)
            if self._keys is not None and element.keys is not None:
                self._keys.extend(element.keys)
            if len(self._recs) >= self.out.max_records:
                self.flush()
            return
        self._seal()
        if type(element) is Watermark and self.items and type(self.items[-1]) is Watermark:
            self.items[-1] = element  # a newer watermark says all the older one did
        else:
            self.items.append(element)
        if type(element) is Barrier:
            self.flush()

    def waiting(self) -> bool:
        return bool(self.items or self._recs)

    def _seal(self) -> None:
        if self._recs:
            self.items.append(Batch(self._recs, self._ts, self._keys))
            self._recs, self._ts, self._keys = [], None, None

    def flush(self) -> None:
        self._seal()
        if not self.items:
            return
        value = exchange_codec.encode(self.out.attempt, self.source, self.items)
        self.items = []
        self.out.produce(self.topic, self.partition, value)

    def pop(self) -> Element | None:
        return None  # the receiving worker reads this channel's messages, never this end

    def has_space(self) -> bool:
        return self.out.has_space()

    def __len__(self) -> int:
        return 0
