"""Testing helpers: run a flow in-process, stop it at an exact record, read sink output.

`Gate` is a fake monotonic clock for `GeneratorSource(rate=..., monotonic=gate)`: records
flow only as far as the test lets time advance, so a test (or a notebook) can take a
savepoint at an exact record count with no wall-clock dependence. `run_and_savepoint`
turns "stop here, restore, compare with an uninterrupted run" into a few lines.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .dataflow import Dataflow
from .runtime.coordinator import SnapshotRequest
from .runtime.job import Job
from .settings import Settings


def free_port() -> int:
    """A free TCP port on the loopback address (for a control API or a private broker)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_committed(
    servers: str, topic: str, want: int, *, timeout: float = 120.0
) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every committed record of `topic` (isolation read_committed),
    read to the end of every partition once at least `want` have arrived, so that
    duplicates beyond `want` are seen too. Raises AssertionError naming how many were
    read if that takes longer than `timeout`."""
    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415 - Kafka tests only

    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"rewind-check-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = list(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[tuple[bytes | None, bytes | None]] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(records) < want or len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"read {len(records)} of {want} records from {topic}")
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == err._PARTITION_EOF:
                        at_end.add(msg.partition() or 0)
                    continue
                at_end.discard(msg.partition() or 0)
                records.append((msg.key(), msg.value()))
        return records
    finally:
        consumer.close()


def read_committed_json(servers: str, topic: str, want: int) -> list[Any]:
    """The values of `read_committed(servers, topic, want)`, decoded from JSON."""
    return [json.loads(value or b"null") for _key, value in read_committed(servers, topic, want)]


class Gate:
    """A monotonic clock that only moves when told (`open(seconds)`)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def open(self, seconds: float = 1e9) -> None:
        self.t = seconds


def make_settings(tmp: Path, **kw: Any) -> Settings:
    s = Settings()
    s.snapshots.location = f"file://{tmp}/snapshots"
    s.snapshots.checkpoint_interval_s = kw.pop("interval", None)
    s.parallelism.parallelism = kw.pop("parallelism", 1)
    s.parallelism.max_parallelism = kw.pop("max_parallelism", 128)
    s.snapshots.restore = kw.pop("restore", None)
    s.snapshots.allow_non_restored_state = kw.pop("allow", False)
    s.runtime.idle_sleep_s = 0.0005
    if "clock" in kw:
        s.runtime.clock = kw.pop("clock")
    if "batch_size" in kw:
        s.runtime.batch_size = kw.pop("batch_size")
    assert not kw, kw
    return s


def run_job(flow: Dataflow, settings: Settings) -> Job:
    job = Job(flow, settings)
    asyncio.run(job.run())
    return job


async def _until(cond: Callable[[], bool], job: Job) -> None:
    while not cond():
        if job.state in ("FAILED", "FINISHED", "CANCELED"):
            raise AssertionError(f"job ended ({job.state}: {job.error}) before the condition held")
        await asyncio.sleep(0.001)


def run_and_savepoint(
    flow: Dataflow,
    settings: Settings,
    *,
    when: Callable[[Job], bool],
    start: Callable[[], None] = lambda: None,
    then: Callable[[], None] = lambda: None,
    stop: bool = True,
    drain: bool = False,
    target: str | None = None,
) -> tuple[Job, SnapshotRequest]:
    """Run `flow`; call `start()` once it is ready (open a Gate here: a generator paces
    itself from the clock reading at open time); once `when(job)` holds, take a savepoint
    (stop-with-savepoint by default); call `then()` after it is triggered; run to the end."""

    async def main() -> tuple[Job, SnapshotRequest]:
        job = Job(flow, settings)
        runner = asyncio.create_task(job.run())
        await _until(lambda: job.ready, job)
        start()
        await _until(lambda: when(job), job)
        req = job.trigger_savepoint(target, stop=stop, drain=drain)
        then()
        await runner
        return job, req

    return asyncio.run(main())


def source_position(job: Job, uid: str) -> int:
    """How far a source step read, summed over its splits (the `/status` figure)."""
    tasks = [t for t in job.sources if t.uid == uid]
    return sum(int(p) for t in tasks for p in t.positions(for_status=True).values())


def read_jsonl(folder: Path) -> list[Any]:
    """Every record of the committed files in `folder` (not .pending)."""
    out: list[Any] = []
    for path in sorted(folder.glob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out
