"""The post-analytics flows on Kafka, run as real `rewind run` processes.

Events are `post_event(seq)` written into a Kafka topic (examples/post_analytics/
post_events.py); the flows read them with KafkaSource (`REWIND_EVENTS_TOPIC`) and write
their counts with an exactly-once KafkaSink (`REWIND_OUT_TOPICS`). Every output row is
(post, kind, running count), one per event, so "exactly once" has a sharp meaning: a
read_committed consumer must see, for every key with n events, the counts 1..n each
exactly once — a duplicate or a gap anywhere fails the test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rewind_engine.testing import free_port, read_committed_json

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "post_analytics"
REWIND = str(Path(sys.executable).parent / "rewind")
sys.path.insert(0, str(EXAMPLE))
from post_events import post_event  # noqa: E402

POSTS = 30
Key = tuple[int, str]


class Topics:
    """The events topic and the output topics of one test, deleted afterwards."""

    def __init__(self, servers: str, events_partitions: int) -> None:
        self.servers = servers
        self.admin = AdminClient({"bootstrap.servers": servers})
        run = uuid.uuid4().hex[:8]
        self.events = f"post-events-{run}"
        self.created: list[str] = []
        self.create(self.events, events_partitions)
        self.produced = 0

    def create(self, name: str, partitions: int) -> None:
        for future in self.admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result()
        self.created.append(name)

    def outputs(self, prefix: str, *names: str) -> str:
        """Create "<prefix>.<name>" output topics (3 partitions) and return the prefix."""
        for name in names:
            self.create(f"{prefix}.{name}", 3)
        return prefix

    def produce(self, n: int, pace: float = 0.0) -> None:
        """Append events produced .. produced+n-1 (with their event time), optionally paced."""
        producer = Producer({"bootstrap.servers": self.servers, "linger.ms": 5})
        for seq in range(self.produced, self.produced + n):
            event = post_event(seq, POSTS)
            key = str(event["post_id"]).encode()
            producer.produce(self.events, json.dumps(event).encode(), key, timestamp=event["ts"])
            if pace and seq % 100 == 0:
                producer.poll(0)
                time.sleep(pace)
        assert producer.flush(60) == 0
        self.produced += n

    def delete(self) -> None:
        for future in self.admin.delete_topics(self.created).values():
            future.result()


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Callable[[int], Topics]]:
    made: list[Topics] = []

    def make(partitions: int) -> Topics:
        t = Topics(kafka_bootstrap, partitions)
        made.append(t)
        return t

    yield make
    for t in made:
        t.delete()


class Engine:
    """One `rewind run` process of a post-analytics flow on Kafka."""

    def __init__(
        self,
        version: str,
        topics: Topics,
        out_prefix: str,
        snapshots: str,
        log: Path,
        *,
        parallelism: int = 1,
        restore: str | None = None,
        interval: float = 0.5,
        app: str | None = None,
    ) -> None:
        self.control = f"127.0.0.1:{free_port()}"
        # One app per output: the runs that write one output are one app's history.
        self.app = app or out_prefix
        argv = [
            REWIND, "run", str(EXAMPLE / version / "flow.py"), "--app", self.app,
            "--snapshots", snapshots, "--control", self.control,
            "--parallelism", str(parallelism), "--checkpoint-interval", str(interval),
        ]  # fmt: skip
        if restore:
            argv += ["--restore", restore]
        env = {
            **os.environ,
            "REWIND_EVENTS_TOPIC": topics.events,
            "REWIND_OUT_TOPICS": out_prefix,
            "REWIND_KAFKA_BOOTSTRAP": topics.servers,
        }
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.log = log

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.control}{path}", timeout=10) as resp:
            return json.loads(resp.read())

    def wait(self, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + 300
        while True:
            assert self.proc.poll() is None, f"the job exited: {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            try:
                status: dict[str, Any] = self._get("/status")
                if condition(status):
                    return status
            except (urllib.error.URLError, OSError):
                pass  # not serving yet
            time.sleep(0.1)

    def wait_ready(self) -> None:
        """Until /readyz answers 200: state restored, sources open, processing."""
        deadline = time.monotonic() + 300
        while True:
            assert self.proc.poll() is None, f"the job exited: {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "timed out waiting for readiness"
            try:
                with urllib.request.urlopen(f"http://{self.control}/readyz", timeout=10):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)

    def wait_read(self, n: int) -> dict[str, Any]:
        """Until the source positions add up to n and a checkpoint completed after that."""
        status = self.wait(lambda s: positions_total(s) >= n, f"{n} events read")
        seen = (status.get("last_checkpoint") or {}).get("id")
        return self.wait(
            lambda s: (s.get("last_checkpoint") or {}).get("id") not in (None, seen),
            "a checkpoint after the input",
        )

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [REWIND, *args, "--control", self.control],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def stop(self) -> str:
        """Stop with a savepoint; its URI."""
        uri = self.cli("stop")
        assert self.proc.wait(timeout=120) == 0, self.log.read_text()[-3000:]
        return uri

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def group_offsets(t: Topics, group: str) -> int:
    """Sum of the offsets `group` committed for the events topic."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t.events, p) for p in range(6)])
    result = t.admin.list_consumer_group_offsets([request])[group].result()
    return sum(max(tp.offset, 0) for tp in result.topic_partitions)


def positions_total(status: dict[str, Any]) -> int:
    return sum(sum(splits.values()) for splits in status.get("sources", {}).values())


def count_rows(rows: list[dict[str, Any]]) -> Counter[tuple[int, str, int]]:
    return Counter((r["post_id"], r["kind"], r["count"]) for r in rows)


def exactly(counts: Counter[Key], base: Counter[Key] | None = None) -> Counter[Any]:
    """The rows of running counts from base+1 to base+n per key, each once."""
    base = base or Counter()
    rows: Counter[Any] = Counter()
    for (post, kind), n in counts.items():
        start = base[(post, kind)]
        rows.update((post, kind, i) for i in range(start + 1, start + n + 1))
    return rows


def event_counts(seqs: range) -> Counter[Key]:
    return Counter((e["post_id"], e["kind"]) for e in map(lambda s: post_event(s, POSTS), seqs))


def describe(rows: Counter[Any], want: Counter[Any]) -> str:
    extra, missing = rows - want, want - rows
    return f"duplicates/extra {list(extra.elements())[:5]}, missing {list(missing.elements())[:5]}"


def test_sigkill_at_random_points_then_restore_is_exactly_once(
    topics: Callable[[int], Topics], tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")
    t = topics(6)
    prefix = t.outputs(f"out-{uuid.uuid4().hex[:6]}", "counts")
    snapshots = f"file://{tmp_path}/snapshots"
    total = 12_000
    # Events keep arriving while the job is killed and restarted.
    feeder = threading.Thread(target=t.produce, args=(total, 0.02))
    feeder.start()
    kills = 0
    while feeder.is_alive() or kills < 3:
        engine = Engine("v1", t, prefix, snapshots, tmp_path / "engine.log",
                        restore="latest", interval=0.3)  # fmt: skip
        engine.wait_ready()
        time.sleep(rng.uniform(0.2, 2.0))
        engine.kill()
        kills += 1
    feeder.join()
    engine = Engine("v1", t, prefix, snapshots, tmp_path / "engine.log", restore="latest")
    engine.wait_read(total)
    engine.stop()
    rows = count_rows(read_committed_json(t.servers, f"{prefix}.counts", total))
    want = exactly(event_counts(range(total)))
    assert rows == want, f"after {kills} kills (seed {seed}): {describe(rows, want)}"


def test_stop_at_parallelism_2_restore_at_3_equals_an_uninterrupted_run(
    topics: Callable[[int], Topics], tmp_path: Path
) -> None:
    t = topics(6)
    half = 4_000
    interrupted = t.outputs(f"int-{uuid.uuid4().hex[:6]}", "counts")
    straight = t.outputs(f"str-{uuid.uuid4().hex[:6]}", "counts")
    snapshots = f"file://{tmp_path}/snapshots"
    log = tmp_path / "engine.log"

    t.produce(half)
    first = Engine("v1", t, interrupted, snapshots, log, parallelism=2)
    first.wait_read(half)
    savepoint = first.stop()
    t.produce(half)
    second = Engine("v1", t, interrupted, snapshots, log, parallelism=3, restore=savepoint)
    status = second.wait_read(2 * half)
    assert status["parallelism"] == 3
    second.stop()
    # Offsets went to the consumer group too, after checkpoints completed (monitoring).
    assert group_offsets(t, f"rewind.{interrupted}.post-events") == 2 * half

    whole = Engine("v1", t, straight, snapshots, log, parallelism=2)
    whole.wait_read(2 * half)
    whole.stop()

    rows = count_rows(read_committed_json(t.servers, f"{interrupted}.counts", 2 * half))
    reference = count_rows(read_committed_json(t.servers, f"{straight}.counts", 2 * half))
    assert rows == reference, describe(rows, reference)
    assert rows == exactly(event_counts(range(2 * half)))


def test_reprocessing_from_an_older_savepoint_rereads_its_offsets(
    topics: Callable[[int], Topics], tmp_path: Path
) -> None:
    t = topics(6)
    v1_out = t.outputs(f"v1-{uuid.uuid4().hex[:6]}", "counts")
    v2_out = t.outputs(f"v2-{uuid.uuid4().hex[:6]}", "counts", "organic_paid")
    snapshots = f"file://{tmp_path}/snapshots"
    log = tmp_path / "engine.log"
    n = 3_000

    t.produce(n)
    v1 = Engine("v1", t, v1_out, snapshots, log, parallelism=2)
    v1.wait_read(n)
    older = v1.cli("savepoint")  # "the savepoint taken when the paid feature launched"
    t.produce(n)
    v1.wait_read(2 * n)
    v1.stop()

    # What the older savepoint recorded, as `rewind inspect` prints it.
    inspected = subprocess.run(
        [REWIND, "inspect", older, "--json"], capture_output=True, text=True, check=True
    )
    offsets: dict[str, int] = json.loads(inspected.stdout)["sources"]["post-events"]
    assert sum(offsets.values()) == n
    assert sorted(offsets) == [f"{t.events}:{p}" for p in range(6)]

    # Which events lie before and after those offsets, read straight from the topic.
    before, after = split_events(t.servers, t.events, offsets)
    assert len(before) == n and len(after) == n

    v2 = Engine("v2", t, v2_out, snapshots, log, parallelism=3, restore=older)
    v2.wait_read(2 * n)
    v2.stop()
    # The kept counts continue from the savepoint's state over exactly the events after its
    # offsets; the new step (new uid, empty state) counts exactly those events.
    counts = count_rows(read_committed_json(t.servers, f"{v2_out}.counts", n))
    base = Counter((e["post_id"], e["kind"]) for e in before)
    assert counts == exactly(Counter((e["post_id"], e["kind"]) for e in after), base)
    paid = Counter(
        (r["post_id"], r["kind"], r["paid"], r["count"])
        for r in read_committed_json(t.servers, f"{v2_out}.organic_paid", n)
    )
    want = Counter(
        {
            (p, k, paid_, i): 1
            for (p, k, paid_), m in Counter(
                (e["post_id"], e["kind"], e["paid"]) for e in after
            ).items()
            for i in range(1, m + 1)
        }
    )
    assert paid == want, describe(paid, want)


def split_events(
    servers: str, topic: str, offsets: dict[str, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events of `topic` before and at-or-after the given offsets, per partition."""
    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": "split", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, int(s.rpartition(":")[2]), 0) for s in offsets])
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    eof: set[int] = set()
    deadline = time.monotonic() + 120
    while len(eof) < len(offsets):
        assert time.monotonic() < deadline
        for msg in consumer.consume(1000, 0.2):
            err = msg.error()
            part = msg.partition() or 0
            if err is not None:
                if err.code() == err._PARTITION_EOF:
                    eof.add(part)
                continue
            event = json.loads(msg.value() or b"null")
            offset = msg.offset() or 0
            (before if offset < offsets[f"{topic}:{part}"] else after).append(event)
    consumer.close()
    return before, after
