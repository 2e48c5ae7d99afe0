"""Kafka identities come from the app, not from the step uid or a random job id.

Two apps run the same flow (same step uids) on the same topic and the same snapshot
location. Each must get its own consumer group and its own transactional ids (and so its
own commit-marker groups), each output must be exact, and a restarted app must reuse
its ids, restore its own history (not the other app's) and leave no new group behind.
The test uses a private broker (test_kafka_outage.Broker), so that every consumer group
on it is one of these apps'.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from rewind_engine.runtime.job import Job
from rewind_engine.settings import Settings, SnapshotSettings
from rewind_engine.testing import read_committed_json

from .test_kafka_outage import (
    Broker,
    assert_exactly_once,
    broker,  # noqa: F401 - the fixture (a private broker, started by the test)
    count_flow,
    make_topics,
    produce_events,
    records_read,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

EVENTS = "events"


def app_settings(tmp_path: Path, app: str, *, restore: str | None = None) -> Settings:
    snapshots = SnapshotSettings(
        location=f"file://{tmp_path}/snapshots",  # one location for both apps
        checkpoint_interval_s=0.5,
        restore=restore,
    )
    return Settings(app=app, snapshots=snapshots)


async def run_until_caught_up(jobs: list[Job], total: int) -> None:
    """Run the jobs until each read `total` events and completed two more checkpoints."""
    runs = [asyncio.create_task(job.run()) for job in jobs]
    for job, run in zip(jobs, runs, strict=True):
        await until(partial(read_all, job, total), run)
        await until(partial(checkpoint_after, job, checkpoint_of(job) + 1), run)
    for job in jobs:
        job.cancel()
    for job, run in zip(jobs, runs, strict=True):
        assert await run == "CANCELED", job.error


def checkpoint_of(job: Job) -> int:
    return (job.last_checkpoint.checkpoint_id or 0) if job.last_checkpoint else 0


def read_all(job: Job, total: int) -> bool:
    return records_read(job) >= total


def checkpoint_after(job: Job, checkpoint_id: int) -> bool:
    return checkpoint_of(job) > checkpoint_id


def groups(servers: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": servers})  # kept alive until the answer
    result = admin.list_consumer_groups(request_timeout=30).result()
    assert not result.errors, result.errors
    # read_committed's own consumers (rewind-check-*) are the test's, not the apps'.
    return {g.group_id for g in result.valid if not g.group_id.startswith("rewind-check-")}


def test_two_apps_keep_apart_and_a_restart_reuses_its_ids(
    broker: Broker,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    broker.start()
    broker.wait_ready()
    bs = broker.bootstrap
    make_topics(bs, (EVENTS, 2), ("counts-a", 2), ("counts-b", 2))
    expected = produce_events(bs, EVENTS, 2000, 10)

    jobs = [Job(count_flow(bs, EVENTS, f"counts-{app}"), app_settings(tmp_path, f"shop/{app}"))
            for app in ("a", "b")]  # fmt: skip
    asyncio.run(run_until_caught_up(jobs, 2000))

    # One monitoring group per app and source step, one marker group (= transactional
    # id) per app, sink step and subtask: nothing shared between the two apps.
    first = groups(bs)
    assert first == {
        "rewind.shop/a.events",
        "rewind.shop/b.events",
        "rewind-shop/a.counts.0",
        "rewind-shop/b.counts.0",
    }
    for app in ("a", "b"):
        assert_exactly_once(read_committed_json(bs, f"counts-{app}", 2000), expected)

    # App a restarts from "latest": its own checkpoint (b's are in the same location),
    # with the same ids, so no group is added.
    more = produce_events(bs, EVENTS, 1000, 10)
    again = Job(
        count_flow(bs, EVENTS, "counts-a"), app_settings(tmp_path, "shop/a", restore="latest")
    )
    asyncio.run(run_until_caught_up([again], 3000))
    assert again.restored_from is not None and f"/{jobs[0].job_id}/" in again.restored_from
    assert groups(bs) == first
    assert_exactly_once(read_committed_json(bs, "counts-a", 3000), expected + more)


def test_a_fork_from_a_running_apps_savepoint_leaves_that_apps_output_and_ids_alone(
    broker: Broker,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    # App a has no periodic checkpoints: all of its output so far is pending in the
    # savepoint. The fork restores that savepoint while a runs on. It must neither write
    # a's pending output (into its own topic) nor take over a's transactional id, which
    # would fence a at its next commit.
    broker.start()
    broker.wait_ready()
    bs = broker.bootstrap
    make_topics(bs, (EVENTS, 2), ("counts-a", 2), ("counts-fork", 2))
    before = produce_events(bs, EVENTS, 2000, 10)
    quiet = SnapshotSettings(location=f"file://{tmp_path}/snapshots", checkpoint_interval_s=0)
    original = Job(count_flow(bs, EVENTS, "counts-a"), Settings(app="shop/a", snapshots=quiet))
    fork_settings = app_settings(tmp_path, "shop/fork")

    async def savepoint(job: Job, run: asyncio.Task[str]) -> str:
        request = job.trigger_savepoint()
        await until(lambda: request.status != "IN_PROGRESS", run)
        assert request.status == "COMPLETED", request.error
        return request.target

    async def scenario() -> Counter[str]:
        run = asyncio.create_task(original.run())
        await until(partial(read_all, original, 2000), run)
        first = await savepoint(original, run)
        after = await asyncio.to_thread(produce_events, bs, EVENTS, 1000, 10)
        fork_settings.snapshots.restore = first
        fork = Job(count_flow(bs, EVENTS, "counts-fork"), fork_settings)
        forked = asyncio.create_task(fork.run())
        await until(partial(read_all, fork, 3000), forked)
        await until(partial(checkpoint_after, fork, checkpoint_of(fork) + 1), forked)
        await until(partial(read_all, original, 3000), run)
        second = await savepoint(original, run)  # a commits after the fork opened
        for job, task in ((original, run), (fork, forked)):
            job.cancel()
            assert await task == "CANCELED", job.error
        assert second != first
        return after

    after = asyncio.run(scenario())
    assert_exactly_once(read_committed_json(bs, "counts-a", 3000), before + after)
    fork_out = read_committed_json(bs, "counts-fork", 1000)
    seen = Counter((o["post"], o["count"]) for o in fork_out)
    # The fork's own output only: counts on from the savepoint's (200 per post), once.
    assert seen == Counter({(p, before[p] + i): 1 for p in after for i in range(1, after[p] + 1)})
