"""Sink commits off the job's loop: the Committer, and a job that waits for it.

A sink whose commit blocks (a stalled broker) must not stall the job's loop: /status
keeps answering with the reason, the job finishes only once the commit is done, and a
commit that fails fails the job on its own thread. Likewise a source reader's wait for
what its position passes (`durable()`, Kafka's dead letters) runs on the snapshot
thread, and one that fails fails that snapshot, not the job.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from rewind_engine import Dataflow, GeneratorSource
from rewind_engine.connectors.base import (
    Sink,
    SinkContext,
    SinkWriter,
    SourceBatch,
    SourceContext,
    SplitReader,
)
from rewind_engine.connectors.kafka.committer import Committer
from rewind_engine.connectors.memory import CollectSink
from rewind_engine.runtime.job import Job
from rewind_engine.settings import Settings, SnapshotSettings


def test_committer_coalesces_requests_and_runs_them_in_order() -> None:
    gate = threading.Event()
    seen: list[int] = []

    def commit(n: int) -> None:
        gate.wait()
        seen.append(n)

    c = Committer("t", commit, "committing")
    c.request(1)
    while c.committing() != "committing for checkpoint 1":
        pass  # the thread has picked up 1 (it reports the id it works on)
    for n in (2, 3, 4):
        c.request(n)
    gate.set()
    assert c.wait(60)
    c.request(2)  # already covered by 4: nothing to do
    assert c.wait(60)
    c.close()
    assert seen == [1, 4]
    assert c.done == 4 and c.committing() is None


def test_committer_reports_a_slow_commit_with_the_time_it_started() -> None:
    gate = threading.Event()
    c = Committer("t", lambda n: gate.wait() and None, "committing transaction to Kafka")
    c.request(7)
    while "broker not answering since" not in (c.committing() or ""):
        threading.Event().wait(0.05)
    reason = c.committing() or ""
    assert reason.startswith("committing transaction to Kafka for checkpoint 7, broker not")
    assert "+00:00" in reason  # an absolute UTC time a reader can compare with logs
    gate.set()
    assert c.wait(60)
    c.close()


def test_committer_raises_a_failed_commit_on_the_callers_thread() -> None:
    def commit(n: int) -> None:
        raise RuntimeError(f"broker said no to {n}")

    c = Committer("t", commit, "committing")
    c.request(3)
    assert c.wait(60)  # a failed commit is not "due" any more
    with pytest.raises(RuntimeError, match="broker said no to 3"):
        c.committing()
    with pytest.raises(RuntimeError, match="broker said no to 3"):
        c.request(4)
    c.close()


def test_committer_prepares_first_and_is_busy_meanwhile() -> None:
    gate = threading.Event()
    order: list[str] = []

    def prepare() -> None:
        gate.wait()
        order.append("prepared")

    c = Committer(
        "t",
        lambda n: order.append(f"commit {n}"),
        "committing",
        prepare=prepare,
        preparing="initialising transactions",
    )
    # No commit asked for yet, but a job must not finish (and close) under `prepare`.
    assert c.busy and c.committing() == "initialising transactions"
    assert not c.wait(0.01)
    c.request(1)
    assert c.committing() == "committing for checkpoint 1"  # what waits for prepare
    gate.set()
    assert c.wait(60)
    c.close()
    assert order == ["prepared", "commit 1"] and c.committing() is None


def test_a_failed_prepare_is_logged_and_left_to_the_commits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def prepare() -> None:
        raise RuntimeError("no transaction coordinator yet")

    seen: list[int] = []
    c = Committer("t", seen.append, "committing", prepare=prepare, preparing="warming up")
    c.request(1)  # the commit does the work itself (and would fail the job if it failed)
    assert c.wait(60)
    c.close()
    assert seen == [1] and c.committing() is None
    assert "warming up failed (the first commit tries again): no transaction" in caplog.text


class _StalledSink(Sink):
    """Commits on a Committer thread that waits for `gate`; records what it committed."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.fail = fail
        self.committed: list[Any] = []

    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        return _StalledWriter(self)


class _StalledWriter(SinkWriter):
    def __init__(self, sink: _StalledSink) -> None:
        self.sink = sink
        self.staged: list[Any] = []
        self.pending: dict[int, list[Any]] = {}
        self.committer = Committer("stalled", self._commit, "committing to the stalled sink")

    def write(self, records: list[Any]) -> None:
        self.staged.extend(records)

    def pre_commit(self, checkpoint_id: int) -> Any:
        self.pending[checkpoint_id], self.staged = self.staged, []
        return {"records": len(self.pending[checkpoint_id])}  # None would skip the commit

    def commit(self, checkpoint_id: int, committable: Any) -> None:
        self.committer.request(checkpoint_id)

    def _commit(self, n: int) -> None:
        self.sink.gate.wait()
        if self.sink.fail:
            raise RuntimeError("the stalled sink gave up")
        for cid in sorted(c for c in list(self.pending) if c <= n):
            self.sink.committed.extend(self.pending.pop(cid))

    def committing(self) -> str | None:
        return self.committer.committing()

    def close(self) -> None:
        self.committer.close()


def _job(tmp_path: Path, sink: _StalledSink) -> Job:
    flow = Dataflow("stalled")
    flow.source("gen", GeneratorSource(total=50)).sink("out", sink)
    settings = Settings(snapshots=SnapshotSettings(location=f"file://{tmp_path}/snaps"))
    return Job(flow, settings)


def test_a_job_answers_and_finishes_only_once_its_sink_has_committed(tmp_path: Path) -> None:
    sink = _StalledSink()
    job = _job(tmp_path, sink)

    async def scenario() -> tuple[str, list[str | None]]:
        run = asyncio.create_task(job.run())
        reasons: list[str | None] = []
        # The final checkpoint completes; its commit hangs. The loop still answers.
        while not (reason := job.status()["reason"]) or "not answering" not in reason:
            assert not run.done(), job.error
            await asyncio.sleep(0.05)
        reasons.append(reason)
        assert not run.done()
        assert job.status()["state"] == "FINISHED"  # the snapshot is complete ...
        assert sink.committed == []  # ... its output is not visible yet
        sink.gate.set()
        state = await run
        reasons.append(job.status()["reason"])
        return state, reasons

    state, reasons = asyncio.run(scenario())
    assert state == "FINISHED", job.error
    assert reasons[0] is not None and reasons[0].startswith(
        "out[0]: committing to the stalled sink for checkpoint 1, broker not answering since"
    )
    assert reasons[1] is None
    assert sink.committed == list(range(50))


def test_a_failed_background_commit_fails_the_job(tmp_path: Path) -> None:
    sink = _StalledSink(fail=True)
    sink.gate.set()
    job = _job(tmp_path, sink)
    assert asyncio.run(job.run()) == "FAILED"
    assert job.error is not None and "the stalled sink gave up" in job.error


class _DurableSource(GeneratorSource):
    """An unbounded generator whose readers' `durable()` waits note the thread they ran
    on; the first one fails."""

    def __init__(self) -> None:
        super().__init__(rate=2000.0)
        self.ran_on: list[str] = []

    def open_split(self, split: str, position: Any | None, ctx: SourceContext) -> SplitReader:
        return _DurableReader(self, super().open_split(split, position, ctx))


class _DurableReader(SplitReader):
    def __init__(self, source: _DurableSource, inner: SplitReader) -> None:
        self.source, self.inner = source, inner

    def poll(self, max_records: int) -> SourceBatch | None:
        return self.inner.poll(max_records)

    def position(self) -> Any:
        return self.inner.position()

    def durable(self) -> Any:
        def wait() -> None:
            self.source.ran_on.append(threading.current_thread().name)
            if len(self.source.ran_on) == 1:
                raise RuntimeError("the dead letters did not arrive")

        return wait


def test_a_source_readers_durable_wait_runs_off_the_loop_and_fails_only_its_snapshot(
    tmp_path: Path,
) -> None:
    source = _DurableSource()
    flow = Dataflow("durable")
    flow.source("gen", source).sink("out", CollectSink())
    # Savepoints only (no periodic checkpoint takes the failing first wait).
    snapshots = SnapshotSettings(location=f"file://{tmp_path}/snaps", checkpoint_interval_s=0)
    job = Job(flow, Settings(snapshots=snapshots))

    async def scenario() -> list[str]:
        run = asyncio.create_task(job.run())
        while not job.ready:
            await asyncio.sleep(0.01)
        statuses = []
        for _ in range(2):
            request = job.trigger_savepoint()
            while request.status == "IN_PROGRESS":
                assert not run.done(), job.error
                await asyncio.sleep(0.01)
            statuses.append(request.status)
        job.cancel()
        assert await run == "CANCELED", job.error
        return statuses

    assert asyncio.run(scenario()) == ["FAILED", "COMPLETED"]
    assert len(source.ran_on) == 2
    assert threading.main_thread().name not in source.ran_on
