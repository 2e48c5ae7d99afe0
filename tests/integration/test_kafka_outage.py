"""The Kafka connectors when the broker is unreachable: at start and in the middle of a run.

These tests need a broker they may stop, so each runs its own single-node KRaft broker
(the same jars `dev/cluster` uses, on free loopback ports) instead of the shared one.
"Unreachable" is a frozen broker (SIGSTOP): connections stay open and requests time out,
as with a network partition. Each broker is recorded (dev/leftovers.py) while it runs,
so that if this test process dies by a signal (no teardown), the next session's sweep
(conftest.py) ends the JVM. The job runs in this process (the runtime's `Job`) with an
exactly-once Kafka sink; afterwards a read_committed consumer must see every count
exactly once. While the broker is frozen, the job's control API must keep answering.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from rewind_engine import Dataflow, control
from rewind_engine.connectors.kafka import KafkaSink, KafkaSource
from rewind_engine.runtime.job import Job
from rewind_engine.settings import Settings, SnapshotSettings
from rewind_engine.testing import free_port, read_committed_json

from dev import leftovers
from dev.plane import components, pins

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


class Broker:
    """A private single-node Kafka broker (KRaft) on loopback; with `users` (name ->
    password) its one client listener takes SASL/PLAIN logins of those users only, and
    `client` holds the librdkafka properties of the first user."""

    def __init__(self, home: Path, users: dict[str, str] | None = None) -> None:
        libs = pins.KAFKA.cache_dir / "libs"
        if not libs.is_dir():
            pytest.fail(f"Kafka jars missing at {libs}: run `dev/cluster build`")
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.port, ctl = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        java = shutil.which("java") or "java"
        self.jvm = [java, "-Xms128m", "-Xmx512m", "-cp", f"{libs}/*"]
        props = home / "server.properties"
        listener, security = "PLAINTEXT", []
        self.client: dict[str, str] = {}
        if users:
            listener = "SASL_PLAINTEXT"
            logins = " ".join(f'user_{u}="{pw}"' for u, pw in {"broker": "b", **users}.items())
            security = [
                "sasl.enabled.mechanisms=PLAIN",
                "sasl.mechanism.inter.broker.protocol=PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="broker" password="b" {logins};',
            ]
            user, password = next(iter(users.items()))
            self.client = {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.username": user,
                "sasl.password": password,
            }
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{ctl}",
                    f"listeners={listener}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{ctl}",
                    f"advertised.listeners={listener}://127.0.0.1:{self.port}",
                    f"inter.broker.listener.name={listener}",
                    "controller.listener.names=CONTROLLER",
                    f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,{listener}:{listener}",
                    *security,
                    f"log.dirs={home / 'data'}",
                    "log.retention.ms=-1",  # as dev/'s broker: test data has old times
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        (home / "log4j2.properties").write_text(
            "rootLogger.level = WARN\nrootLogger.appenderRef.file.ref = file\n"
            "appender.file.type = File\nappender.file.name = file\n"
            f"appender.file.fileName = {home / 'server.log'}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        )
        self.jvm.insert(1, f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}")
        cluster_id = components.kafka_cluster_id()
        subprocess.run(
            [*self.jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
            check=True,
            capture_output=True,
        )
        self.props = props
        self.argv = [*self.jvm, "kafka.Kafka", str(props)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.record: Path | None = None

    def start(self) -> None:
        with (self.home / "stdout.log").open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        markers = ["kafka.Kafka", str(self.props)]
        self.record = leftovers.record(leftovers.folder(), self.proc.pid, markers)

    def wait_ready(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self.client})
        deadline = time.monotonic() + 180
        while True:
            assert self.proc is not None and self.proc.poll() is None, "the broker died"
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception:
                pass
            assert time.monotonic() < deadline, "the private broker did not start"
            time.sleep(0.5)

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
            self.proc.kill()
            self.proc.wait()
        if self.record is not None:
            leftovers.forget(self.record)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "kafka")
    try:
        yield b
    finally:
        b.stop()


def make_topics(servers: str, *specs: tuple[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": servers})
    for future in admin.create_topics([NewTopic(n, p, 1) for n, p in specs]).values():
        future.result()


def produce_events(servers: str, topic: str, n: int, posts: int) -> Counter[str]:
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 10})
    expected: Counter[str] = Counter()
    for i in range(n):
        post = f"p{i % posts}"
        expected[post] += 1
        producer.produce(topic, json.dumps({"post": post}).encode(), post.encode())
    assert producer.flush(60) == 0
    return expected


def count_flow(servers: str, events: str, counts: str) -> Dataflow:
    flow = Dataflow("outage")
    (
        flow.source("events", KafkaSource(events, bootstrap_servers=servers, connect_timeout_s=300))
        .key_by("by-post", lambda e: e["post"])
        .count("count")
        .sink(
            "counts",
            KafkaSink(
                counts,
                bootstrap_servers=servers,
                key=lambda r: r[0],
                value=lambda r: {"post": r[0], "count": r[1]},
            ),
        )
    )
    return flow


def assert_exactly_once(outputs: list[dict], expected: Counter[str]) -> None:
    seen = Counter((o["post"], o["count"]) for o in outputs)
    want = Counter({(post, i): 1 for post, n in expected.items() for i in range(1, n + 1)})
    assert seen == want, (
        f"duplicates: {[k for k, v in seen.items() if v > 1][:5]}, "
        f"missing: {list((want - seen).elements())[:5]}, "
        f"unexpected: {list((seen - want).elements())[:5]}"
    )


def test_broker_unreachable_at_start_and_mid_run(broker: Broker, tmp_path: Path) -> None:
    # The job starts while the broker is still down: discovery retries with backoff.
    events, counts = "events", "counts"
    settings = Settings(
        snapshots=SnapshotSettings(location=f"file://{tmp_path}/snaps", checkpoint_interval_s=0.5)
    )
    job = Job(count_flow(broker.bootstrap, events, counts), settings)
    phases: list[str] = []

    async def scenario() -> Counter[str]:
        run = asyncio.create_task(job.run())
        await asyncio.sleep(3)
        assert not run.done(), job.error  # still waiting for the broker, not failed
        broker.start()
        await asyncio.to_thread(broker.wait_ready)
        await asyncio.to_thread(make_topics, broker.bootstrap, (events, 4), (counts, 2))
        expected = await asyncio.to_thread(produce_events, broker.bootstrap, events, 3000, 20)
        phases.append("first batch")
        await until(lambda: job.ready and bool(job.last_checkpoint), run)
        # Mid-run the broker freezes for longer than a checkpoint interval. It is thawed
        # from another thread: the job's loop (this loop) may block in a Kafka call.
        thawed = threading.Event()

        def thaw() -> None:
            broker.thaw()
            thawed.set()

        broker.freeze()
        threading.Timer(8, thaw).start()
        await until(thawed.is_set, run)
        phases.append("thawed")
        expected += await asyncio.to_thread(produce_events, broker.bootstrap, events, 3000, 20)
        total = sum(expected.values())
        await until(lambda: records_read(job) >= total, run)
        done = (job.last_checkpoint.checkpoint_id or 0) if job.last_checkpoint else 0
        await until(lambda: (job.last_checkpoint.checkpoint_id or 0) > done + 1, run)
        job.cancel()
        assert await run == "CANCELED", job.error
        return expected

    expected = asyncio.run(scenario())
    assert phases == ["first batch", "thawed"]
    outputs = read_committed_json(broker.bootstrap, counts, sum(expected.values()))
    assert_exactly_once(outputs, expected)


def records_read(job: Job) -> int:
    return sum(sum(p.values()) for p in job.status()["sources"].values())


async def until(condition: object, run: asyncio.Task[str]) -> None:
    deadline = time.monotonic() + 240
    while not condition():  # type: ignore[operator]
        assert not run.done(), f"the job ended: {run.result()}"
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


def test_status_answers_while_the_broker_is_frozen(broker: Broker, tmp_path: Path) -> None:
    # The sink's transactions run on their own thread: with the broker frozen for 20 s,
    # the control API (on the job's loop) answers every call, says why the job waits,
    # and the output is exact once the broker is back.
    events, counts = "events", "counts"
    broker.start()
    broker.wait_ready()
    make_topics(broker.bootstrap, (events, 2), (counts, 2))
    expected = produce_events(broker.bootstrap, events, 2000, 20)
    settings = Settings(
        snapshots=SnapshotSettings(location=f"file://{tmp_path}/snaps", checkpoint_interval_s=0.5)
    )
    job = Job(count_flow(broker.bootstrap, events, counts), settings)
    address = f"127.0.0.1:{free_port()}"
    answers: list[str | None] = []  # each /status call's reason
    failures: list[str] = []

    def poll_status(until_thawed: threading.Event) -> None:
        while not until_thawed.is_set():
            try:
                with urllib.request.urlopen(f"http://{address}/status", timeout=1.0) as r:
                    answers.append(json.load(r)["reason"])
            except Exception as exc:  # a timeout is what this test is about
                failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.2)

    async def scenario() -> Counter[str]:
        runner = await control.start(job, address)
        run = asyncio.create_task(job.run())
        try:
            total = sum(expected.values())
            await until(lambda: records_read(job) >= total and bool(job.last_checkpoint), run)
            thawed = threading.Event()

            def thaw() -> None:
                broker.thaw()
                thawed.set()

            poller = threading.Thread(target=poll_status, args=(thawed,))
            broker.freeze()
            threading.Timer(20, thaw).start()
            poller.start()
            await until(thawed.is_set, run)
            await asyncio.to_thread(poller.join)
            more = await asyncio.to_thread(produce_events, broker.bootstrap, events, 1000, 20)
            total += sum(more.values())
            await until(lambda: records_read(job) >= total, run)
            done = (job.last_checkpoint.checkpoint_id or 0) if job.last_checkpoint else 0
            await until(lambda: (job.last_checkpoint.checkpoint_id or 0) > done + 1, run)
            job.cancel()
            assert await run == "CANCELED", job.error
            return expected + more
        finally:
            await runner.cleanup()

    everything = asyncio.run(scenario())
    assert failures == [], f"/status did not answer within 1 s: {failures[:3]}"
    assert len(answers) >= 20  # about one call every 0.2 s for the 20 s
    stalled = [a for a in answers if a and "broker not answering since" in a]
    assert stalled, f"no /status call said why the job waits: {answers[:5]}"
    assert stalled[0].startswith("counts[0]: committing transaction to Kafka for checkpoint")
    outputs = read_committed_json(broker.bootstrap, counts, sum(everything.values()))
    assert_exactly_once(outputs, everything)
