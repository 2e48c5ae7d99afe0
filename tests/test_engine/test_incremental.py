"""Incremental checkpoints: only changed key groups are written, the rest referenced.

A keyed count (the count's own fast path) and a keyed sum (compared block by block)
run on a generator whose first records create every key and whose later records each
touch one key group only, so every checkpoint after the first has unchanged key groups
to reference. What must hold: every checkpoint of the chain restores exactly the state
a full savepoint of the same moment restores (and the counts the records make); every
reference points at the file that wrote the block; retention keeps exactly the files
that kept manifests reference; savepoints are self-contained; a corrupt or escaping
reference is refused naming the file; an aborted checkpoint is never a base.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rewind_engine import CollectSink, Dataflow, GeneratorSource, Sink, SinkContext, SinkWriter
from rewind_engine.dataflow import AggregateSpec
from rewind_engine.keys import KeyGrouper, key_group_of
from rewind_engine.runtime.coordinator import IN_PROGRESS, SnapshotRequest
from rewind_engine.runtime.incremental import BlockHistory
from rewind_engine.runtime.job import Job
from rewind_engine.runtime.operators import AggregateOp
from rewind_engine.snapshots import (
    CorruptSnapshotError,
    SnapshotReader,
    describe,
    dispose,
    prune,
    read_manifest,
    render,
    verify,
)
from rewind_engine.snapshots.encoder import BlockRef, EncodedFile
from rewind_engine.testing import Gate, make_settings, source_position
from rewind_engine.windows import Count, aggregation

MAXP = 16
FIRST = 1600
"""Records that create every key (100 per key group)."""
STEP = 40
"""Records between two checkpoints of the chain, all in one key group."""
KEYS = {g: [k for k in range(20_000) if key_group_of(k, MAXP) == g][:100] for g in range(MAXP)}
CHANGING = [3, 11, 5, 3, 14]
"""The key group that the records of each step touch, in turn."""


def event(seq: int) -> dict[str, Any]:
    if seq < FIRST:
        return {"k": KEYS[seq % MAXP][seq // MAXP], "v": seq}
    group = CHANGING[(seq - FIRST) // STEP % len(CHANGING)]
    return {"k": KEYS[group][seq % 7], "v": 1}


def expected(upto: int) -> tuple[dict[int, int], dict[int, int]]:
    """(counts, sums) of the records before `upto`."""
    events = [event(seq) for seq in range(upto)]
    sums: Counter[int] = Counter()
    for e in events:
        sums[e["k"]] += e["v"]
    return dict(Counter(e["k"] for e in events)), dict(sums)


class FailOnce(Sink):
    """Discards records; its durability wait fails checkpoint `fail_at` (so that
    checkpoint has every data file written but never gets a manifest)."""

    def __init__(self, fail_at: int | None) -> None:
        self.fail_at = fail_at

    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        return _FailOnceWriter(self.fail_at)


class _FailOnceWriter(SinkWriter):
    def __init__(self, fail_at: int | None) -> None:
        self.fail_at = fail_at

    def write(self, records: list[Any]) -> None:
        pass

    def pre_commit(self, checkpoint_id: int) -> Any:
        return None

    def commit(self, checkpoint_id: int, committable: Any) -> None:
        pass

    def wait_durable(self, checkpoint_id: int) -> None:
        if checkpoint_id == self.fail_at:
            raise OSError(f"checkpoint {checkpoint_id} is made to fail")


def build(gate: Gate | None, total: int | None = None, fail_at: int | None = None) -> Dataflow:
    flow = Dataflow("incremental")
    src = flow.source(
        "src",
        GeneratorSource(
            event, total=total, rate=None if gate is None else 1.0, monotonic=gate or (lambda: 0.0)
        ),
    )
    keyed = src.key_by("by-key", "k")
    keyed.count("count", emit="batch").sink("counts-out", FailOnce(fail_at))
    keyed.sum("total", "v", emit="batch").sink("sums-out", CollectSink())
    return flow


async def _until(job: Job, cond: Any) -> None:
    while not cond():
        assert job.state not in ("FAILED", "FINISHED", "CANCELED"), job.error
        await asyncio.sleep(0.001)


async def _snapshot(job: Job, savepoint: bool, target: str | None = None) -> SnapshotRequest:
    if savepoint:
        request = job.trigger_savepoint(target)
    else:
        cid = job.coordinator.next_checkpoint_id
        job._trigger_checkpoint()
        request = job.coordinator.requests[f"chk-{cid}"]
    await _until(job, lambda: request.status != IN_PROGRESS)
    return request


def chain(
    tmp: Path,
    steps: int,
    *,
    parallelism: int = 2,
    full_every: int = 100,
    retained: int = 100,
    savepoints: bool = True,
    fail_at: int | None = None,
    location: str | None = None,
) -> tuple[Job, list[tuple[int, SnapshotRequest, SnapshotRequest | None]]]:
    """Run the flow; after FIRST + i * STEP records (i < steps) take a checkpoint and,
    with `savepoints`, a savepoint of the same state. Returns the job and per step
    (records before the cut, the checkpoint request, the savepoint request).
    `location`: the snapshots' location (default: a folder in `tmp`)."""
    gate = Gate()
    settings = make_settings(tmp, parallelism=parallelism, max_parallelism=MAXP)
    if location is not None:
        settings.snapshots.location = location
    settings.snapshots.full_checkpoint_every = full_every
    settings.snapshots.checkpoints_retained = retained
    assert settings.snapshots.incremental_checkpoints  # the default
    out: list[tuple[int, SnapshotRequest, SnapshotRequest | None]] = []

    async def main() -> Job:
        job = Job(build(gate, fail_at=fail_at), settings)
        runner = asyncio.create_task(job.run())
        await _until(job, lambda: job.ready)
        for i in range(steps):
            cut = FIRST + i * STEP
            gate.open(cut)
            await _until(job, lambda: source_position(job, "src") >= cut)  # noqa: B023
            chk = await _snapshot(job, savepoint=False)
            sp = await _snapshot(job, savepoint=True) if savepoints else None
            out.append((cut, chk, sp))
        job.cancel()
        await runner
        return job

    return asyncio.run(main()), out


def state(uri: str, uid: str) -> dict[Any, Any]:
    agg = Count() if uid == "count" else aggregation("sum")
    op = AggregateOp(AggregateSpec(agg, None if uid == "count" else "v", "batch"))
    with SnapshotReader(uri, max_parallelism=MAXP) as reader:
        op.restore(reader.keyed_state(uid, range(MAXP), arrays=True), [])
    return dict(op.state)


def manifest_json(uri: str) -> dict[str, Any]:
    return json.loads(Path(uri.removeprefix("file://"), "manifest.json").read_text())  # type: ignore[no-any-return]


def test_a_chain_of_20_incremental_checkpoints_restores_like_full_savepoints(
    tmp_path: Path,
) -> None:
    job, steps = chain(tmp_path, 20)
    for cut, chk, sp in steps:
        assert chk.status == "COMPLETED", chk.error
        assert sp is not None and sp.status == "COMPLETED", sp.error
        counts, sums = expected(cut)
        for uri in (chk.target, sp.target):
            assert state(uri, "count") == counts, (cut, uri)
            assert state(uri, "total") == sums, (cut, uri)
        assert read_manifest(sp.target).referenced_bytes == 0  # savepoints: always full
    first, *rest = [read_manifest(chk.target) for _, chk, _ in steps]
    assert first.referenced_bytes == 0  # the job's first checkpoint is full
    for (_, chk, sp), manifest in zip(steps[1:], rest, strict=True):
        assert sp is not None
        full = read_manifest(sp.target)
        # One key group of 16 changed per step: the others (both steps) are referenced.
        groups = {
            uid: sum(len(e.refs) for e in manifest.steps[uid].subtasks)
            for uid in ("count", "total")
        }
        assert groups == {"count": MAXP - 1, "total": MAXP - 1}, (chk.target, groups)
        assert manifest.size_bytes < full.size_bytes / 4
        assert manifest.size_bytes + manifest.referenced_bytes >= full.size_bytes * 0.9
        verify(chk.target)
    # Every reference is the block as its writer wrote it: never a reference to one.
    location = Path(steps[0][1].target.removeprefix("file://")).parent
    for _, chk, _ in steps[1:]:
        for uid, step in manifest_json(chk.target)["steps"].items():
            for entry in step["subtasks"]:
                for group, path, offset, length, digest in entry["refs"]:
                    folder, _, key = path.removeprefix("../").partition("/")
                    origin = manifest_json(f"file://{location / folder}")["steps"][uid]
                    written = [e for e in origin["subtasks"] if e["file"] == key]
                    assert [group, offset, length, digest] in written[0]["blocks"], (path, group)
                    data = (location / folder / key).read_bytes()[offset : offset + length]
                    assert hashlib.sha256(data).hexdigest() == digest
    # describe tells new bytes from referenced ones.
    last = describe(steps[-1][1].target, check=True)
    assert last["referenced_bytes"] == read_manifest(steps[-1][1].target).referenced_bytes > 0
    assert last["references"] and all(f.startswith("chk-") for f in last["references"])
    assert "referenced in chk-" in render(last)
    assert job.state == "CANCELED"


def test_every_nth_checkpoint_is_full(tmp_path: Path) -> None:
    _, steps = chain(tmp_path, 8, parallelism=1, full_every=3, savepoints=False)
    incremental = [read_manifest(chk.target).referenced_bytes > 0 for _, chk, _ in steps]
    assert incremental == [False, True, True, False, True, True, False, True]


@pytest.mark.parametrize("parallelism", [1, 3])
def test_restore_at_another_parallelism_from_an_incremental_checkpoint(
    tmp_path: Path, parallelism: int
) -> None:
    _, steps = chain(tmp_path, 6, savepoints=False)
    cut, chk, _ = steps[-1]
    assert read_manifest(chk.target).referenced_bytes > 0
    total = cut + 3 * STEP
    settings = make_settings(
        tmp_path / "again", parallelism=parallelism, max_parallelism=MAXP, restore=chk.target
    )
    settings.job_id = "again"
    restored = Job(build(None, total=total), settings)
    asyncio.run(restored.run())
    assert restored.state == "FINISHED", restored.error
    assert restored.last_checkpoint is not None
    final = restored.last_checkpoint.target  # the final checkpoint: all records counted
    counts, sums = expected(total)
    assert state(final, "count") == counts
    assert state(final, "total") == sums
    assert read_manifest(final).referenced_bytes == 0  # the first after a restore is full


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_retention_keeps_every_referenced_file_and_deletes_the_rest(tmp_path: Path) -> None:
    job, steps = chain(tmp_path, 12, retained=2, full_every=6, savepoints=False)
    assert all(chk.status == "COMPLETED" for _, chk, _ in steps)
    location = make_settings(tmp_path).snapshots.location
    folder = tmp_path / "snapshots" / "checkpoints" / job.job_id
    prune(location, job.job_id, keep=2)  # settle: the job's own pruning runs in the background
    kept = sorted(p.name for p in folder.iterdir() if (p / "manifest.json").exists())
    assert kept == [f"chk-{n}" for n in (11, 12)]
    referenced = set()
    for name in kept:
        manifest = read_manifest(f"file://{folder / name}")
        referenced |= {f"{f}/{k}" for f, k in manifest.referenced_files()}
        verify(f"file://{folder / name}")  # every block of a kept checkpoint is there
        assert (
            state(f"file://{folder / name}", "count")
            == expected(FIRST + (int(name[4:]) - 1) * STEP)[0]
        )
    own = {f"{name}/{key}" for name in kept for key in _files(folder / name)}
    # Exactly the kept folders and what they reference; nothing else is left.
    assert _files(folder) == own | referenced
    # Pruned checkpoints whose blocks are still referenced keep those files only; chk-7
    # was full (full_every=6): nothing before it can be referenced any more.
    pruned = {r.partition("/")[0] for r in referenced} - {"chk-11", "chk-12"}
    assert pruned and pruned <= {f"chk-{n}" for n in range(7, 11)}
    for name in pruned:
        assert not (folder / name / "manifest.json").exists()
        assert {f"{name}/{k}" for k in _files(folder / name)} <= referenced
    assert not any((folder / f"chk-{n}").exists() for n in range(1, 7))


def test_dispose_of_a_referenced_checkpoint_keeps_what_others_reference(tmp_path: Path) -> None:
    job, steps = chain(tmp_path, 3, parallelism=1, savepoints=False)
    first, second, third = (chk.target for _, chk, _ in steps)
    assert {f for f, _ in read_manifest(third).referenced_files()} == {"chk-1", "chk-2"}
    dispose(first)
    folder = Path(first.removeprefix("file://"))
    assert not (folder / "manifest.json").exists()  # no longer a snapshot
    left = {f"chk-1/{k}" for k in _files(folder)}
    wanted = {f"{f}/{k}" for m in (second, third) for f, k in read_manifest(m).referenced_files()}
    assert left == {r for r in wanted if r.startswith("chk-1/")} and left
    verify(third)
    dispose(second)
    dispose(third)  # nothing references chk-1 any more: the next prune or dispose removes it
    dispose(first)
    assert not folder.exists()
    assert job.state == "CANCELED"


def test_a_savepoint_copied_elsewhere_restores_without_the_checkpoint_history(
    tmp_path: Path,
) -> None:
    _, steps = chain(tmp_path, 5)
    cut, chk, sp = steps[-1]
    assert sp is not None and read_manifest(chk.target).referenced_bytes > 0
    copy = tmp_path / "elsewhere" / "sp"
    shutil.copytree(sp.target.removeprefix("file://"), copy)
    shutil.rmtree(tmp_path / "snapshots")  # the checkpoint history is gone
    counts, sums = expected(cut)
    assert state(copy.as_uri(), "count") == counts
    assert state(copy.as_uri(), "total") == sums
    verify(copy.as_uri())


def test_a_corrupt_referenced_block_is_refused_naming_the_file(tmp_path: Path) -> None:
    _, steps = chain(tmp_path, 3, parallelism=1, savepoints=False)
    last = steps[-1][1].target
    manifest = manifest_json(last)
    entry = manifest["steps"]["count"]["subtasks"][0]
    group, path, offset, length, _ = entry["refs"][0]
    target = Path(last.removeprefix("file://"), path).resolve()
    data = bytearray(target.read_bytes())
    data[offset + length // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    named = str(target.relative_to(tmp_path / "snapshots" / "checkpoints"))  # job/chk-m/data/...
    with pytest.raises(CorruptSnapshotError, match="checksum mismatch") as caught:
        state(last, "count")
    assert named in str(caught.value) and f"key group {group}" in str(caught.value)
    with pytest.raises(CorruptSnapshotError) as caught:
        verify(last)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    "path",
    [
        "../../elsewhere/data/x.msgpack",
        "../chk-1/../../x",
        "/etc/passwd",
        "../savepoints/x",
        "data/x",
    ],
)
def test_a_reference_outside_the_sibling_checkpoints_is_refused_as_corrupt(
    tmp_path: Path, path: str
) -> None:
    _, steps = chain(tmp_path, 2, parallelism=1, savepoints=False)
    last = steps[-1][1].target
    raw = manifest_json(last)
    raw["steps"]["count"]["subtasks"][0]["refs"][0][1] = path
    manifest = Path(last.removeprefix("file://"), "manifest.json")
    manifest.write_text(json.dumps(raw))
    with pytest.raises(CorruptSnapshotError, match="malformed manifest") as caught:
        SnapshotReader(last)
    assert str(manifest.parent) in str(caught.value) and repr(path) in str(caught.value)


def test_an_aborted_checkpoint_is_never_referenced(tmp_path: Path) -> None:
    # Checkpoint 3 fails after writing its data files (before its manifest).
    job, steps = chain(tmp_path, 6, parallelism=1, savepoints=False, fail_at=3)
    statuses = [chk.status for _, chk, _ in steps]
    assert statuses == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED", "COMPLETED", "COMPLETED"]
    folder = tmp_path / "snapshots" / "checkpoints" / job.job_id
    for cut, chk, _ in steps:
        if chk.status != "COMPLETED":
            continue
        refs = {f for f, _ in read_manifest(chk.target).referenced_files()}
        assert "chk-3" not in refs
        assert all((folder / f / "manifest.json").exists() for f in refs)
        assert state(chk.target, "count") == expected(cut)[0]
    # The checkpoint after the failed one references checkpoint 2, its last completed one.
    assert {f for f, _ in read_manifest(steps[3][1].target).referenced_files()} <= {
        "chk-1",
        "chk-2",
    }


def _encoded(*groups: int) -> EncodedFile:
    return EncodedFile(b"", [(g, g * 10, 10, f"sha{g}") for g in groups], None, "")


def test_the_history_takes_a_base_only_when_its_manifest_exists() -> None:
    history = BlockHistory(enabled=True, full_every=10)
    sub = ("count", 0, 1)
    assert history.begin(1, "checkpoint") is False  # no base yet: full
    history.record(1, sub, "data/count/subtask-0.msgpack", _encoded(0, 1), "memo-1")
    assert history.base(1, sub) is None
    history.completed(1)
    assert history.begin(2, "checkpoint") is True
    base = history.base(2, sub)
    assert base is not None and base.memo == "memo-1"
    assert base.blocks[1] == BlockRef("../chk-1/data/count/subtask-0.msgpack", 10, 10, "sha1")
    history.record(2, sub, "data/count/subtask-0.msgpack", _encoded(1), "memo-2")
    history.failed(2)  # aborted: never a base
    assert history.begin(3, "savepoint") is False  # savepoints are full, never a base
    history.completed(3)
    assert history.begin(4, "checkpoint") is True
    base = history.base(4, sub)
    assert base is not None and base.memo == "memo-1" and set(base.blocks) == {0, 1}
    # A reference stays the original block: chk-4 referencing chk-1's block 0 records it.
    refs = EncodedFile(b"", [(1, 0, 10, "new")], None, "", [(0, *base.blocks[0])])
    history.record(4, sub, "data/count/subtask-0.msgpack", refs, "memo-4")
    history.completed(4)
    history.begin(5, "checkpoint")
    base = history.base(5, sub)
    assert base is not None
    assert base.blocks[0].file == "../chk-1/data/count/subtask-0.msgpack"
    assert base.blocks[1].file == "../chk-4/data/count/subtask-0.msgpack"
    off = BlockHistory(enabled=False, full_every=10)
    assert off.begin(1, "checkpoint") is False
    off.completed(1)
    assert off.begin(2, "checkpoint") is False


def _drain(steps: Any) -> Any:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def test_a_count_groups_only_the_key_groups_that_changed_since_its_memo() -> None:
    grouper = KeyGrouper(MAXP)
    op = AggregateOp(AggregateSpec(Count(), None, "batch"))
    counts = op.counts
    assert counts is not None
    counts.add_batch([k for g in range(MAXP) for k in KEYS[g][:10]])
    first, unchanged, memo = _drain(op.group_changes(op.capture(1).keyed, grouper, None))
    assert set(first) == set(range(MAXP)) and unchanged == set()
    counts.add_batch([KEYS[3][0], KEYS[3][1]])  # a count changes in group 3
    counts.add_batch([KEYS[9][50]])  # a new key in group 9
    groups, unchanged, memo2 = _drain(op.group_changes(op.capture(2).keyed, grouper, memo))
    assert set(groups) == {3, 9}
    assert unchanged == set(range(MAXP)) - {3, 9}
    assert sorted(groups[9].keys) == sorted([*KEYS[9][:10], KEYS[9][50]])
    assert dict(zip(groups[3].keys, groups[3].values, strict=True)) == {
        k: 2 if k in KEYS[3][:2] else 1 for k in KEYS[3][:10]
    }
    # Nothing changed since memo2: nothing to encode, every group unchanged.
    groups, unchanged, _ = _drain(op.group_changes(op.capture(3).keyed, grouper, memo2))
    assert groups == {} and unchanged == set(range(MAXP))
    # A memo of another state (not the same keys) is not trusted: everything is grouped.
    other = AggregateOp(AggregateSpec(Count(), None, "batch"))
    assert other.counts is not None
    other.counts.add_batch(list(range(200)))
    groups, unchanged, _ = _drain(other.group_changes(other.capture(1).keyed, grouper, memo2))
    assert unchanged == set() and sum(len(c.keys) for c in groups.values()) == 200
