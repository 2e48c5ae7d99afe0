"""The pure parts of running one job as several workers: placement, the exchange's
wire format, the remote channel's batching, and merging worker parts into a manifest."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from rewind_engine.keys import key_group_range
from rewind_engine.runtime import control_bus as bus
from rewind_engine.runtime import exchange_codec
from rewind_engine.runtime.coordinator import SnapshotRequest
from rewind_engine.runtime.elements import Barrier, Batch, Watermark
from rewind_engine.runtime.exchange import RemoteChannel
from rewind_engine.runtime.global_checkpoint import GlobalCoordinator
from rewind_engine.runtime.placement import (
    Placement,
    control_topic,
    edge_topic,
    of_retired_job,
    partition_of,
    split_subtask,
)
from rewind_engine.snapshots import (
    SnapshotError,
    StepState,
    SubtaskFile,
    WorkerPart,
    codec,
    merge_parts,
)


@pytest.mark.parametrize(("workers", "parallelism"), [(1, 1), (2, 2), (2, 5), (3, 8), (3, 128)])
def test_every_subtask_has_one_worker_and_each_worker_a_contiguous_key_group_range(
    workers: int, parallelism: int
) -> None:
    places = [Placement(w, workers) for w in range(workers)]
    owned = [p.subtasks(parallelism) for p in places]
    assert sorted(i for o in owned for i in o) == list(range(parallelism))
    ranges = [p.key_groups(parallelism, 128) for p in places]
    assert ranges[0].start == 0 and ranges[-1].stop == 128
    for a, b in itertools.pairwise(ranges):
        assert a.stop == b.start  # contiguous, no gap, no overlap
    for w, subtasks in enumerate(owned):
        assert subtasks == list(range(subtasks[0], subtasks[-1] + 1)), f"worker {w}"


def test_one_worker_places_everything_on_itself() -> None:
    assert Placement().subtasks(7) == list(range(7))
    assert not Placement().distributed


def test_bad_worker_indices_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        Placement(2, 2)
    with pytest.raises(ValueError, match="at least 1"):
        Placement(0, 0)


@pytest.mark.parametrize("parallelism", [1, 2, 3, 7, 128])
def test_each_downstream_subtask_has_its_own_partition_its_first_key_group(
    parallelism: int,
) -> None:
    parts = [partition_of(d, parallelism, 128) for d in range(parallelism)]
    assert len(set(parts)) == parallelism
    assert parts == [key_group_range(d, parallelism, 128).start for d in range(parallelism)]
    assert all(0 <= p < 128 for p in parts)


def test_topic_names_are_valid_kafka_names_and_stable() -> None:
    name = edge_topic("my job/1", "by-post", "count", 0)
    assert name == "rewind-my_job_1-by-post-count-0"
    long = edge_topic("j" * 300, "a", "b", 1)
    assert len(long) <= 249 and long == edge_topic("j" * 300, "a", "b", 1)
    assert split_subtask("gen-3", 4) == split_subtask("gen-3", 4)


def test_only_the_topics_of_older_versions_of_the_same_app_are_retired() -> None:
    # The operator's job ids: <namespace>.<app>.<hex deployment id>; apps may hold dots
    # and dashes, and hex-looking words, so the pattern must not reach another app.
    older = re.compile(r"ns\.a\.[0-9a-f]+")
    own = "ns.a.2c3d"
    for job in ("ns.a.0a1b", "ns.a.ffff0000"):
        assert of_retired_job(edge_topic(job, "by-post", "count", 0), older, own)
        assert of_retired_job(control_topic(job), older, own)
    for job in (own, "ns.a.b.0a1b", "ns.a-1.0a1b", "ns.ab.0a1b", "nsx.a.0a1b", "ns.a.0a1g"):
        assert not of_retired_job(edge_topic(job, "by-post", "count", 0), older, own), job
        assert not of_retired_job(control_topic(job), older, own), job
    assert not of_retired_job("orders", older, own)
    assert not of_retired_job("rewind-ns.a.0a1b", older, own), "not a topic of ours"


def test_the_exchange_codec_round_trips_every_element_in_order() -> None:
    elements: list[Any] = [
        Batch([{"a": (1, 2), "s": {3}}, [1, 2]], [10, 11], [(1, "view"), ((2, 3), "x")]),
        Watermark(5),
        Batch(["no timestamps, no keys"]),
        Watermark(7, idle=True),
        Barrier(3),
    ]
    attempt, source, back = exchange_codec.decode(exchange_codec.encode("att", 4, elements))
    assert (attempt, source) == ("att", 4)
    assert back == elements
    assert isinstance(back[0].keys[1][0], tuple)  # a composite key stays a tuple


def test_a_keys_only_batch_crosses_as_its_keys_once_and_comes_back_keys_only() -> None:
    keys = [(1, "view"), (2, "click"), (1, "view")]
    keys_only = Batch(keys, [1, 2, 3], keys)
    records = Batch([{"k": k} for k in keys], [1, 2, 3], keys)
    small = exchange_codec.encode("att", 0, [keys_only])
    full = exchange_codec.encode("att", 0, [Batch(list(keys), [1, 2, 3], keys)])
    assert len(small) < len(full)  # the keys are not sent a second time as records
    _, _, [back] = exchange_codec.decode(small)
    assert back == keys_only and back.records is back.keys
    _, _, [back] = exchange_codec.decode(exchange_codec.encode("att", 0, [records]))
    assert back == records and back.records is not back.keys


def test_a_remote_channel_keeps_keys_only_batches_apart_from_batches_of_records() -> None:
    out = _Out()
    out.max_records = 100
    ch = RemoteChannel(out, "t", 0, 0)  # type: ignore[arg-type]
    a, b = ["a", "b"], ["c"]
    ch.push(Batch(a, None, a))
    ch.push(Batch(b, None, b))
    ch.push(Batch([{"r": 1}], None, ["d"]))
    ch.push(Barrier(1))
    assert a == ["a", "b"]  # the caller's list was not extended
    _, _, elements = exchange_codec.decode(out.sent[0][2])
    assert elements == [
        Batch(["a", "b", "c"], None, ["a", "b", "c"]),
        Batch([{"r": 1}], None, ["d"]),
        Barrier(1),
    ]
    assert elements[0].records is elements[0].keys
    assert elements[1].records is not elements[1].keys


def test_only_the_edge_into_a_keyed_count_without_a_value_carries_keys_only() -> None:
    from rewind_engine import Dataflow, GeneratorSource  # noqa: PLC0415
    from rewind_engine.runtime.graph import reads_keys_only  # noqa: PLC0415

    f = Dataflow("f")
    keyed = f.source("s", GeneratorSource(lambda n: {"k": n % 3, "v": n}, total=9)).key_by(
        "by-k", lambda e: e["k"]
    )
    keyed.count("count")
    keyed.sum("sum", lambda e: e["v"])
    keyed.reduce("last", lambda a, e: e)
    kinds = {s.uid: reads_keys_only(s.spec) for s in f.steps}
    assert kinds == {"s": False, "by-k": False, "count": True, "sum": False, "last": False}


def test_a_message_of_another_format_is_refused_with_a_clear_error() -> None:
    with pytest.raises(exchange_codec.ExchangeCodecError, match="same Rewind version"):
        exchange_codec.decode(codec.encode([99, "a", 0, []]))


class _Out:
    """Stands in for the exchange: records what would be produced."""

    attempt = "att"
    max_records = 5

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes]] = []

    def produce(self, topic: str, partition: int, value: bytes) -> None:
        self.sent.append((topic, partition, value))

    def has_space(self) -> bool:
        return True


def test_a_remote_channel_merges_batches_keeps_order_and_flushes_at_barriers() -> None:
    out = _Out()
    ch = RemoteChannel(out, "t", 3, 1)  # type: ignore[arg-type]
    shared = Batch([1, 2], [1, 2], ["a", "b"])
    ch.push(shared)
    ch.push(Batch([3], [3], ["c"]))
    ch.push(Watermark(2))
    ch.push(Watermark(3))  # replaces the watermark just before it
    ch.push(Batch([4], [4], ["d"]))
    assert out.sent == []
    ch.push(Barrier(9))
    assert shared.records == [1, 2]  # the caller's batch was not extended
    ((topic, partition, value),) = out.sent
    assert (topic, partition) == ("t", 3)
    _, source, elements = exchange_codec.decode(value)
    assert source == 1
    assert elements == [
        Batch([1, 2, 3], [1, 2, 3], ["a", "b", "c"]),
        Watermark(3),
        Batch([4], [4], ["d"]),
        Barrier(9),
    ]
    ch.push(Batch(list(range(6))))  # max_records reached: sent at once
    assert len(out.sent) == 2


def _part(worker: int, workers: int, subtasks: list[int], parallelism: int = 2) -> WorkerPart:
    files = [
        SubtaskFile(
            subtask=i,
            file=f"data/count/subtask-{i}.msgpack",
            size=10,
            sha256="0" * 64,
            key_group_range=(i * 128 // parallelism, (i + 1) * 128 // parallelism),
            blocks=[],
            operator_state=None,
        )
        for i in subtasks
    ]
    return WorkerPart(
        format_version=3,
        worker=worker,
        workers=workers,
        snapshot_id=4,
        created_at=f"2026-01-01T00:00:0{worker}.000Z",
        size_bytes=10 * len(files),
        steps={"count": StepState(parallelism=parallelism, subtasks=files)},
        sources={"src": {f"split-{worker}": worker * 100}},
        exchange={"topic": {str(64 * worker): 17 + worker}},
    )


HEADER: dict[str, Any] = {
    "kind": "checkpoint",
    "snapshot_id": 4,
    "job_id": "j",
    "flow": "f",
    "max_parallelism": 128,
    "meta": {"checkpoint_id": 4},
}


def test_merging_parts_gives_one_manifest_listing_every_subtask_worker_and_position() -> None:
    manifest = merge_parts([_part(1, 2, [1]), _part(0, 2, [0])], **HEADER)
    assert [e.subtask for e in manifest.steps["count"].subtasks] == [0, 1]
    assert manifest.size_bytes == 20
    assert manifest.sources == {"src": {"split-0": 0, "split-1": 100}}
    assert manifest.exchange == {"topic": {"0": 17, "64": 18}}
    assert [(w.worker, w.part, w.subtasks) for w in manifest.workers] == [
        (0, "parts/worker-0.json", {"count": [0]}),
        (1, "parts/worker-1.json", {"count": [1]}),
    ]
    assert manifest.created_at == "2026-01-01T00:00:00.000Z"


def test_merging_refuses_a_missing_worker_a_missing_or_doubled_subtask() -> None:
    with pytest.raises(SnapshotError, match=r"workers 0..2, got parts from workers \[0, 1\]"):
        merge_parts([_part(0, 3, [0]), _part(1, 3, [1])], **HEADER)
    with pytest.raises(SnapshotError, match=r"lacks subtasks \[1\]"):
        merge_parts([_part(0, 2, [0]), _part(1, 2, [])], **HEADER)
    with pytest.raises(SnapshotError, match=r"subtasks \[0\] more than once"):
        merge_parts([_part(0, 2, [0, 1]), _part(1, 2, [0])], **HEADER)
    with pytest.raises(SnapshotError, match="parallelism"):
        merge_parts([_part(0, 2, [0]), _part(1, 2, [1], parallelism=3)], **HEADER)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _leader(clock: _Clock, sent: list[tuple[str, dict[str, Any]]]) -> GlobalCoordinator:
    return GlobalCoordinator(
        workers=2,
        send=lambda kind, fields: sent.append((kind, fields)),
        meta=lambda: {"job_id": "j", "flow": "f", "max_parallelism": 128},
        first_checkpoint_id=5,
        heartbeat_s=0.5,
        worker_timeout_s=3.0,
        start_timeout_s=10.0,
        snapshot_timeout_s=60.0,
        on_committed=lambda request, manifest: None,
        now=clock,
    )


def _msg(leader: GlobalCoordinator, kind: str, worker: int, **fields: Any) -> dict[str, Any]:
    return {"k": kind, "a": leader.attempt, "w": worker, **fields}


def test_the_coordinator_starts_only_when_every_worker_said_hello() -> None:
    clock, sent = _Clock(), []
    leader = _leader(clock, sent)
    leader.tick()
    assert sent[-1][0] == bus.ANNOUNCE
    leader.on_message(_msg(leader, bus.HELLO, 0))
    leader.on_message({"k": bus.HELLO, "a": "an-old-attempt", "w": 1})  # a zombie: ignored
    leader.tick()
    assert not leader.started
    leader.on_message(_msg(leader, bus.HELLO, 1))
    leader.tick()
    assert leader.started and sent[-1][0] == bus.GO


def _started(clock: _Clock, sent: list[tuple[str, dict[str, Any]]]) -> GlobalCoordinator:
    leader = _leader(clock, sent)
    for w in (0, 1):
        leader.on_message(_msg(leader, bus.HELLO, w))
    leader.tick()
    return leader


def test_a_part_that_failed_aborts_the_snapshot_everywhere_and_the_next_one_starts() -> None:
    clock, sent = _Clock(), []
    leader = _started(clock, sent)
    first = leader.trigger(SnapshotRequest("sp-1", "savepoint", "file:///nowhere/sp-1"))
    second = leader.trigger(SnapshotRequest("chk-6", "checkpoint", "file:///nowhere/chk-6"))
    kind, fields = sent[-1]
    assert (kind, fields["n"], fields["id"]) == (bus.TRIGGER, 5, "sp-1")
    leader.on_message(_msg(leader, bus.PART, 0, n=5, ok=True))
    leader.on_message(_msg(leader, bus.PART, 1, n=5, ok=False, error="disk full"))
    assert first.status == "FAILED" and first.error == "worker 1: disk full"
    aborts = [f for k, f in sent if k == bus.ABORT]
    assert aborts == [{"n": 5, "error": "worker 1: disk full"}]
    assert sent[-1][0] == bus.TRIGGER and sent[-1][1]["n"] == 6
    assert second.checkpoint_id == 6


def test_a_silent_worker_fails_the_job_naming_it() -> None:
    clock, sent = _Clock(), []
    leader = _started(clock, sent)
    clock.t = 2.0
    leader.on_message(_msg(leader, bus.HB, 0, finished=False))
    clock.t = 3.5
    leader.tick()
    assert leader.failure is not None and leader.failure.startswith("worker 1 sent nothing")
    assert sent[-1] == (bus.FAIL, {"reason": leader.failure})


def test_the_job_ends_once_every_worker_has_exhausted_its_sources() -> None:
    clock, sent = _Clock(), []
    leader = _started(clock, sent)
    leader.on_message(_msg(leader, bus.HB, 0, finished=True))
    assert not leader.sources_finished()
    leader.on_message(_msg(leader, bus.HB, 1, finished=True))
    assert leader.sources_finished()
    request = leader.trigger(SnapshotRequest("chk-5", "checkpoint", "file:///nowhere/chk-5"))
    assert request.final and sent[-1][1]["final"] is True
