"""Writing and reading snapshots on file://: redistribution by key group, exact values,
ranged reads, and the operator/CLI helpers (dispose, list, latest, prune, describe)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rewind_engine.snapshots import (
    FORMAT_VERSION,
    SnapshotMeta,
    SnapshotReader,
    SnapshotWriter,
    checkpoint_uri,
    describe,
    dispose,
    latest,
    lineage,
    list_snapshots,
    open_storage,
    prune,
    read_manifest,
    render,
    verify,
)

MAXP = 16


def kg_range(subtask: int, parallelism: int) -> range:
    """Flink's contiguous assignment (the engine's own lives in rewind_engine.keys)."""
    return range(subtask * MAXP // parallelism, (subtask + 1) * MAXP // parallelism)


def keyed_state() -> dict[int, dict[Any, Any]]:
    """Per key group, {post id: count}, with awkward keys and values mixed in."""
    state: dict[int, dict[Any, Any]] = {}
    for post in range(200):
        state.setdefault(post % MAXP, {})[f"post-{post}"] = post * 3
    state[5][("user", 7)] = {"seen": {1, 2, 3}, "last": (1.5, None, b"\x00\xff")}
    state[9][42] = [True, False, "x" * 300]
    del state[12]  # a key group without state has no block
    return state


def write_snapshot(uri: str, parallelism: int = 2, app: str | None = None, **kwargs: Any) -> None:
    state = keyed_state()
    writer = SnapshotWriter(
        uri,
        kwargs.pop("kind", "savepoint"),
        kwargs.pop("snapshot_id", "sp-1"),
        SnapshotMeta(
            job_id=kwargs.pop("job_id", "job-1"),
            flow="flow.py",
            max_parallelism=MAXP,
            extra={"image": "posts:v1", "spec_hash": "abc", **({"app": app} if app else {})},
        ),
        **kwargs,
    )
    for subtask in range(parallelism):
        groups = kg_range(subtask, parallelism)
        writer.add_subtask(
            "count",
            subtask,
            parallelism,
            groups,
            {kg: state[kg] for kg in groups if kg in state},
            {"watermark": 1000 + subtask},
        )
    writer.add_subtask(
        "source",
        0,
        1,
        range(0, MAXP),
        {},
        {"part-0": 17, "part-1": 4},
        source_positions={"part-0": 17, "part-1": 4},
    )
    writer.finish()


@pytest.fixture
def snapshot(tmp_path: Path) -> str:
    uri = (tmp_path / "sp").as_uri()
    write_snapshot(uri)
    return uri


@pytest.mark.parametrize("new_parallelism", [1, 2, 3])
def test_parallelism_2_restores_at_1_2_and_3(snapshot: str, new_parallelism: int) -> None:
    expected = keyed_state()
    restored: dict[int, Any] = {}
    with SnapshotReader(snapshot, max_parallelism=MAXP) as reader:
        assert sorted(reader.uids()) == ["count", "source"]
        assert reader.parallelism("count") == 2
        for subtask in range(new_parallelism):
            groups = kg_range(subtask, new_parallelism)
            got = list(reader.keyed_state("count", groups))
            assert [kg for kg, _ in got] == [kg for kg in groups if kg in expected]
            restored.update(got)
        assert reader.operator_states("count") == [{"watermark": 1000}, {"watermark": 1001}]
        assert reader.operator_states("source") == [{"part-0": 17, "part-1": 4}]
        assert reader.operator_states("new-step") == []
        assert list(reader.keyed_state("new-step", range(MAXP))) == []
    assert restored == expected
    assert restored[5][("user", 7)] == {"seen": {1, 2, 3}, "last": (1.5, None, b"\x00\xff")}


def test_python_types_survive(tmp_path: Path) -> None:
    uri = (tmp_path / "t").as_uri()
    value = {
        "counter": Counter({"a": 2}),
        "np_int": np.int64(7),
        "np_float": np.float32(0.5),
        "array": np.arange(3),
        "frozen": frozenset({("k", 1)}),
        (1, "two"): [(), set()],
        "big": 2**63 - 1,
        "neg": -(2**63),
    }
    writer = SnapshotWriter(
        uri, "checkpoint", 1, {"job_id": "j", "flow": "f", "max_parallelism": 1}
    )
    writer.add_subtask("s", 0, 1, (0, 1), {0: value}, None)
    writer.finish()
    with SnapshotReader(uri) as reader:
        [(_, back)] = list(reader.keyed_state("s", [0]))
    assert back == {
        "counter": {"a": 2},
        "np_int": 7,
        "np_float": 0.5,
        "array": [0, 1, 2],
        "frozen": frozenset({("k", 1)}),
        (1, "two"): [(), set()],
        "big": 2**63 - 1,
        "neg": -(2**63),
    }
    assert type(back["counter"]) is dict and type(back["np_int"]) is int


def test_restore_reads_only_the_overlapping_files(snapshot: str, tmp_path: Path) -> None:
    # Subtask 1's file is gone: the key groups of subtask 0 still restore without it.
    (tmp_path / "sp" / "data" / "count" / "subtask-1.msgpack").unlink()
    with SnapshotReader(snapshot) as reader:
        assert [kg for kg, _ in reader.keyed_state("count", range(0, 8))] == list(range(8))
        with pytest.raises(Exception, match=r"no such file: .*count/subtask-1\.msgpack"):
            list(reader.keyed_state("count", range(8, 16)))


def test_restore_reads_only_the_wanted_ranges(snapshot: str, tmp_path: Path) -> None:
    """A byte altered in key group 3's block: the other key groups of that file still
    restore (ranged reads, each block checked on its own); key group 3 is refused."""
    manifest = read_manifest(snapshot)
    entry = manifest.steps["count"].subtasks[0]
    _, offset, length, digest = next(b for b in entry.blocks if b[0] == 3)
    path = tmp_path / "sp" / entry.file
    data = bytearray(path.read_bytes())
    data[offset + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with SnapshotReader(snapshot) as reader:
        assert [kg for kg, _ in reader.keyed_state("count", [0, 1, 2, 4, 5])] == [0, 1, 2, 4, 5]
        with pytest.raises(
            Exception,
            match=rf"checksum mismatch in {snapshot}/data/count/"
            rf"subtask-0\.msgpack \(key group 3\): expected sha256 {digest}, got",
        ):
            list(reader.keyed_state("count", [3]))
        with pytest.raises(Exception, match=r"subtask-0\.msgpack .*expected sha256"):
            list(reader.keyed_state("count", range(0, 8)))  # whole file: file checksum


def test_copied_folder_restores(snapshot: str, tmp_path: Path) -> None:
    shutil.copytree(tmp_path / "sp", tmp_path / "elsewhere" / "moved")
    dispose(snapshot)
    moved = (tmp_path / "elsewhere" / "moved").as_uri()
    verify(moved)
    with SnapshotReader(moved) as reader:
        assert dict(reader.keyed_state("count", range(MAXP))) == keyed_state()


def test_manifest_is_readable_json_with_relative_paths(snapshot: str, tmp_path: Path) -> None:
    raw = json.loads((tmp_path / "sp" / "manifest.json").read_text())
    assert raw["format_version"] == FORMAT_VERSION
    assert raw["kind"] == "savepoint" and raw["job_id"] == "job-1" and raw["flow"] == "flow.py"
    assert raw["max_parallelism"] == MAXP
    assert raw["meta"]["image"] == "posts:v1" and "engine_version" in raw["meta"]
    assert raw["sources"] == {"source": {"part-0": 17, "part-1": 4}}
    files = [e["file"] for s in raw["steps"].values() for e in s["subtasks"]]
    assert files == [
        "data/count/subtask-0.msgpack",
        "data/count/subtask-1.msgpack",
        "data/source/subtask-0.msgpack",
    ]
    assert raw["size_bytes"] == sum((tmp_path / "sp" / f).stat().st_size for f in files)
    first = raw["steps"]["count"]["subtasks"][0]
    assert first["key_group_range"] == [0, 8]
    assert [b[0] for b in first["blocks"]] == list(range(8))


def test_odd_uids_get_distinct_safe_file_names(tmp_path: Path) -> None:
    uri = (tmp_path / "u").as_uri()
    writer = SnapshotWriter(
        uri, "checkpoint", 1, {"job_id": "j", "flow": "f", "max_parallelism": 2}
    )
    for uid in ("a/b", "a b", "../x", "ünïcode"):
        writer.add_subtask(uid, 0, 1, (0, 2), {1: uid}, None)
    manifest = writer.finish()
    files = {e.file for s in manifest.steps.values() for e in s.subtasks}
    assert len(files) == 4 and all(f.startswith("data/") and ".." not in f for f in files)
    with SnapshotReader(uri) as reader:
        for uid in ("a/b", "a b", "../x", "ünïcode"):
            assert list(reader.keyed_state(uid, [0, 1])) == [(1, uid)]


def test_add_subtask_rejects_bad_calls(tmp_path: Path) -> None:
    writer = SnapshotWriter(
        (tmp_path / "w").as_uri(),
        "checkpoint",
        1,
        {"job_id": "j", "flow": "f", "max_parallelism": 8},
    )
    with writer:
        with pytest.raises(ValueError, match=r"key groups \[5\] are outside .*\[0, 4\)"):
            writer.add_subtask("s", 0, 2, (0, 4), {5: 1}, None)
        with pytest.raises(ValueError, match=r"outside \[0, 8\)"):
            writer.add_subtask("s", 0, 2, (0, 9), {}, None)
        writer.add_subtask("s", 0, 2, (0, 4), {}, None)
        with pytest.raises(ValueError, match="added twice"):
            writer.add_subtask("s", 0, 2, (0, 4), {}, None)
        with pytest.raises(ValueError, match="parallelism 3 differs from 2"):
            writer.add_subtask("s", 1, 3, (4, 8), {}, None)
    with pytest.raises(ValueError, match="lacks flow, max_parallelism"):
        SnapshotWriter((tmp_path / "x").as_uri(), "checkpoint", 1, {"job_id": "j"})


def test_empty_snapshot_is_valid(tmp_path: Path) -> None:
    uri = (tmp_path / "empty").as_uri()
    manifest = SnapshotWriter(
        uri, "savepoint", "e", {"job_id": "j", "flow": "f", "max_parallelism": 4}
    ).finish()
    assert manifest.steps == {} and manifest.size_bytes == 0
    assert read_manifest(uri).kind == "savepoint"


def test_progress_counts_files_and_bytes(tmp_path: Path) -> None:
    writer = SnapshotWriter(
        (tmp_path / "p").as_uri(),
        "checkpoint",
        1,
        {"job_id": "j", "flow": "f", "max_parallelism": 2},
    )
    writer.add_subtask("s", 0, 1, (0, 2), {0: "x" * 1000}, None)
    manifest = writer.finish()
    assert writer.progress() == {
        "files_done": 1,
        "files_total": 1,
        "bytes_written": manifest.size_bytes,
    }


# -- helpers for the operator and the CLI ---------------------------------------------


def test_dispose_deletes_manifest_first_and_is_idempotent(snapshot: str, tmp_path: Path) -> None:
    dispose(snapshot)
    assert not (tmp_path / "sp").exists()
    dispose(snapshot)  # again: nothing there, no error
    with pytest.raises(Exception, match=r"manifest\.json missing"):
        read_manifest(snapshot)


def test_list_and_latest(tmp_path: Path) -> None:
    location = tmp_path.as_uri()
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    write_snapshot(
        checkpoint_uri(location, "job-1", 1), kind="checkpoint", snapshot_id=1, created_at=t0
    )
    write_snapshot(
        checkpoint_uri(location, "job-1", 2),
        kind="checkpoint",
        snapshot_id=2,
        created_at=t0 + timedelta(minutes=1),
    )
    write_snapshot(
        f"{location}/savepoints/ns/sp-a",
        created_at=t0 + timedelta(minutes=2),
        snapshot_id="sp-a",
        job_id="job-2",
    )
    (tmp_path / "checkpoints" / "job-1" / "chk-3" / "data").mkdir(parents=True)  # no manifest
    found = list_snapshots(location)
    assert [(i.kind, i.snapshot_id) for i in found] == [
        ("savepoint", "sp-a"),
        ("checkpoint", 2),
        ("checkpoint", 1),
    ]
    assert found[0].uri == f"{location}/savepoints/ns/sp-a"
    assert found[0].created_at == t0 + timedelta(minutes=2) and found[0].size_bytes > 0
    assert [i.snapshot_id for i in list_snapshots(location, kind="checkpoint")] == [2, 1]
    assert [i.snapshot_id for i in list_snapshots(location, job_id="job-2")] == ["sp-a"]
    assert latest(location) == f"{location}/savepoints/ns/sp-a"
    assert latest(location, job_id="job-1") == checkpoint_uri(location, "job-1", 2)
    assert latest((tmp_path / "nothing-here").as_uri()) is None


def test_latest_sees_only_the_apps_own_lineage(tmp_path: Path) -> None:
    """A fork's location nested inside its original's (the old `rewind fork` default)
    and snapshots another app wrote into this location never count as this app's."""
    location = tmp_path.as_uri()
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    own = checkpoint_uri(location, "job-1", 1)
    write_snapshot(own, kind="checkpoint", snapshot_id=1, created_at=t0, app="ns/clicks")
    legacy = f"{location}/savepoints/ns/before-apps"  # written before apps were recorded
    write_snapshot(legacy, created_at=t0 - timedelta(days=1))
    fork = checkpoint_uri(f"{location}/forks/clicks-fork", "job-9", 98)
    write_snapshot(
        fork, kind="checkpoint", snapshot_id=98, created_at=t0 + timedelta(hours=1),
        app="ns/clicks-fork",
    )  # fmt: skip
    intruder = checkpoint_uri(location, "job-7", 5)
    write_snapshot(
        intruder, kind="checkpoint", snapshot_id=5, created_at=t0 + timedelta(hours=2),
        app="ns/other",
    )  # fmt: skip
    assert latest(location, app="ns/clicks") == own
    assert [i.uri for i in lineage(location, app="ns/clicks")] == [own, legacy]
    # Without an identity every snapshot in the location's own folders counts, and
    # still nothing below another app's nested location.
    assert [i.uri for i in lineage(location)] == [intruder, own, legacy]
    assert latest(f"{location}/forks/clicks-fork", app="ns/clicks-fork") == fork
    assert lineage(location, app="ns/clicks")[0].app == "ns/clicks"


def test_latest_refuses_to_skip_a_newer_format(tmp_path: Path) -> None:
    location = tmp_path.as_uri()
    write_snapshot(f"{location}/savepoints/old", created_at=datetime(2025, 1, 1, tzinfo=UTC))
    write_snapshot(f"{location}/savepoints/new", created_at=datetime(2025, 1, 2, tzinfo=UTC))
    path = tmp_path / "savepoints" / "new" / "manifest.json"
    raw = json.loads(path.read_text())
    raw["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(raw))
    [newest, _] = list_snapshots(location)
    assert newest.problem is not None and newest.format_version == FORMAT_VERSION + 1
    with pytest.raises(
        Exception,
        match=r"newest snapshot under .* cannot be restored.*"
        rf"format version {FORMAT_VERSION + 1}",
    ):
        latest(location)


def test_prune_keeps_newest_and_never_savepoints(tmp_path: Path) -> None:
    location = tmp_path.as_uri()
    for n in range(1, 6):
        write_snapshot(checkpoint_uri(location, "job-1", n), kind="checkpoint", snapshot_id=n)
    # chk-2 crashed before its manifest; chk-7 is in progress (no manifest yet);
    # chk-4 is really a savepoint stored among checkpoints; job-2 is someone else's.
    dispose_manifest = tmp_path / "checkpoints" / "job-1" / "chk-2" / "manifest.json"
    dispose_manifest.unlink()
    (tmp_path / "checkpoints" / "job-1" / "chk-7" / "data").mkdir(parents=True)
    (tmp_path / "checkpoints" / "job-1" / "chk-7" / "data" / "x").write_bytes(b"1")
    shutil.rmtree(tmp_path / "checkpoints" / "job-1" / "chk-4")
    write_snapshot(checkpoint_uri(location, "job-1", 4), kind="savepoint", snapshot_id=4)
    write_snapshot(checkpoint_uri(location, "job-2", 1), kind="checkpoint", snapshot_id=1)
    write_snapshot(f"{location}/savepoints/sp-x")

    deleted = prune(location, "job-1", keep=1)

    assert deleted == [checkpoint_uri(location, "job-1", n) for n in (1, 2, 3)]
    left = sorted(p.name for p in (tmp_path / "checkpoints" / "job-1").iterdir())
    assert left == ["chk-4", "chk-5", "chk-7"]
    assert read_manifest(checkpoint_uri(location, "job-2", 1)).kind == "checkpoint"
    assert read_manifest(f"{location}/savepoints/sp-x").kind == "savepoint"
    with pytest.raises(ValueError, match="keep must be >= 1"):
        prune(location, "job-1", keep=0)


def test_describe_and_render(snapshot: str) -> None:
    description = describe(snapshot, check=True)
    json.dumps(description)  # --json prints it as is
    assert description["uri"] == snapshot and description["verified"] is True
    assert description["steps"]["count"]["parallelism"] == 2
    assert [s["key_group_range"] for s in description["steps"]["count"]["subtasks"]] == [
        [0, 8],
        [8, 16],
    ]
    assert description["sources"] == {"source": {"part-0": 17, "part-1": 4}}
    text = render(description)
    for needle in (
        "savepoint sp-1",
        "count  parallelism 2",
        "subtask 1: key groups [8, 16)",
        "source positions:",
        "part-0: 17",
        "image:",
        "posts:v1",
        "all checksums verified",
        "max parallelism: 16 key groups",
    ):
        assert needle in text, needle


def test_open_storage_uri_of_snapshot_matches_listing(snapshot: str) -> None:
    assert open_storage(snapshot).uri == snapshot
