"""Every bad input gives ONE clear error that says what went wrong and where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rewind_engine.snapshots import (
    FORMAT_VERSION,
    CorruptSnapshotError,
    IncompatibleSnapshotError,
    NotFoundError,
    SnapshotError,
    SnapshotReader,
    SnapshotWriter,
    StorageError,
    list_snapshots,
    read_manifest,
    verify,
)

META = {"job_id": "job-1", "flow": "flow.py", "max_parallelism": 8}


@pytest.fixture
def snapshot(tmp_path: Path) -> str:
    uri = (tmp_path / "sp").as_uri()
    writer = SnapshotWriter(uri, "savepoint", "sp-1", META)
    writer.add_subtask("count", 0, 2, (0, 4), {kg: {f"k{kg}": kg} for kg in range(4)}, {"w": 1})
    writer.add_subtask("count", 1, 2, (4, 8), {kg: {f"k{kg}": kg} for kg in range(4, 8)}, None)
    writer.finish()
    return uri


def data_file(tmp_path: Path, subtask: int = 0) -> Path:
    return tmp_path / "sp" / "data" / "count" / f"subtask-{subtask}.msgpack"


def test_missing_manifest(tmp_path: Path) -> None:
    uri = (tmp_path / "nothing").as_uri()
    message = (
        f"no snapshot at {uri}: manifest.json missing (a snapshot without a manifest is "
        "incomplete or was never written)"
    )
    with pytest.raises(NotFoundError) as caught:
        SnapshotReader(uri)
    assert str(caught.value) == message
    with pytest.raises(NotFoundError, match=r"manifest\.json missing"):
        read_manifest(uri)


def test_newer_format_version_names_both(snapshot: str, tmp_path: Path) -> None:
    path = tmp_path / "sp" / "manifest.json"
    raw = json.loads(path.read_text())
    raw["format_version"] = FORMAT_VERSION + 1
    raw["something_new"] = {"we": "cannot read"}
    path.write_text(json.dumps(raw))
    with pytest.raises(IncompatibleSnapshotError) as caught:
        SnapshotReader(snapshot)
    assert f"format version {FORMAT_VERSION + 1}" in str(caught.value)
    assert f"up to {FORMAT_VERSION}" in str(caught.value)
    assert f"{snapshot}/manifest.json" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"format_version": "1"}', "format_version is missing"),
        (b'{"format_version": 1, "kind": "savepoint"}', "snapshot_id: Field required"),
    ],
)
def test_malformed_manifest_names_the_file(
    snapshot: str, tmp_path: Path, content: bytes, says: str
) -> None:
    (tmp_path / "sp" / "manifest.json").write_bytes(content)
    with pytest.raises(CorruptSnapshotError, match=f"malformed manifest {snapshot}/manifest.json"):
        read_manifest(snapshot)
    with pytest.raises(CorruptSnapshotError, match=says):
        read_manifest(snapshot)


def test_manifest_with_escaping_path_is_refused(snapshot: str, tmp_path: Path) -> None:
    path = tmp_path / "sp" / "manifest.json"
    raw = json.loads(path.read_text())
    raw["steps"]["count"]["subtasks"][0]["file"] = "../../etc/passwd"
    path.write_text(json.dumps(raw))
    with pytest.raises(CorruptSnapshotError, match=r"malformed manifest .*invalid file key"):
        read_manifest(snapshot)


def test_truncated_data_file(snapshot: str, tmp_path: Path) -> None:
    path = data_file(tmp_path)
    manifest = read_manifest(snapshot)
    entry = manifest.steps["count"].subtasks[0]
    path.write_bytes(path.read_bytes()[:-5])
    # Whole-file read: size and checksum, expected and actual.
    with SnapshotReader(snapshot) as reader, pytest.raises(CorruptSnapshotError) as caught:
        list(reader.keyed_state("count", range(8)))
    message = str(caught.value)
    assert f"{snapshot}/data/count/subtask-0.msgpack is truncated or altered" in message
    assert f"expected {entry.size} bytes with sha256 {entry.sha256}" in message
    assert f"found {entry.size - 5} bytes" in message
    # Ranged read of the last block (now cut short).
    with SnapshotReader(snapshot) as reader, pytest.raises(CorruptSnapshotError) as caught:
        reader.operator_states("count")
    assert "subtask-0.msgpack is truncated" in str(caught.value)
    with pytest.raises(CorruptSnapshotError, match=r"failed verification \(1 of 2 files\)"):
        verify(snapshot)


def test_altered_data_file(snapshot: str, tmp_path: Path) -> None:
    path = data_file(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.write_bytes(bytes(data))
    entry = read_manifest(snapshot).steps["count"].subtasks[1]
    with SnapshotReader(snapshot) as reader, pytest.raises(CorruptSnapshotError) as caught:
        list(reader.keyed_state("count", range(4, 8)))
    assert str(caught.value).startswith(
        f"checksum mismatch in {snapshot}/data/count/subtask-1.msgpack (whole file): "
        f"expected sha256 {entry.sha256}, got "
    )
    with pytest.raises(CorruptSnapshotError, match=r"subtask-1\.msgpack"):
        verify(snapshot)
    verify_ok = read_manifest(snapshot)  # the manifest itself is fine
    assert verify_ok.snapshot_id == "sp-1"


def test_max_parallelism_change_is_refused(snapshot: str) -> None:
    with pytest.raises(IncompatibleSnapshotError) as caught:
        SnapshotReader(snapshot, max_parallelism=16)
    assert "max_parallelism 8, but the job has max_parallelism 16" in str(caught.value)
    assert "--max-parallelism 8" in str(caught.value)


def test_existing_snapshot_is_never_overwritten(snapshot: str, tmp_path: Path) -> None:
    before = data_file(tmp_path).read_bytes()
    writer = SnapshotWriter(snapshot, "savepoint", "sp-2", META)
    writer.add_subtask("count", 0, 1, (0, 8), {0: "other"}, None)
    with pytest.raises(SnapshotError, match=rf"a snapshot already exists at {snapshot}"):
        writer.finish()
    assert data_file(tmp_path).read_bytes() == before
    assert read_manifest(snapshot).snapshot_id == "sp-1"
    verify(snapshot)


def test_unencodable_state_fails_finish_without_manifest(tmp_path: Path) -> None:
    uri = (tmp_path / "bad").as_uri()
    writer = SnapshotWriter(uri, "checkpoint", 3, META)
    writer.add_subtask("good", 0, 1, (0, 8), {0: {"a": 1}}, None)
    writer.add_subtask("bad", 0, 1, (0, 8), {2: {"when": object()}}, None)
    with pytest.raises(SnapshotError) as caught:
        writer.finish()
    message = str(caught.value)
    assert f"checkpoint 3 at {uri} failed (no manifest written)" in message
    assert "data/bad/subtask-0.msgpack" in message
    assert "step 'bad' subtask 0 key group 2" in message
    assert "builtins.object" in message
    assert not (tmp_path / "bad" / "manifest.json").exists()
    assert not (tmp_path / "bad" / "data" / "good" / "subtask-0.msgpack").exists()  # cleaned up


def test_upload_failure_names_file_and_cause(tmp_path: Path) -> None:
    # A regular file where the snapshot folder should be: every write fails for real.
    (tmp_path / "blocked").write_bytes(b"")
    uri = (tmp_path / "blocked" / "sp").as_uri()
    writer = SnapshotWriter(uri, "savepoint", "sp-9", META)
    writer.add_subtask("count", 0, 1, (0, 8), {0: 1}, None)
    with pytest.raises(SnapshotError) as caught:
        writer.finish()
    message = str(caught.value)
    assert f"savepoint sp-9 at {uri} failed (no manifest written)" in message
    assert "data/count/subtask-0.msgpack" in message
    assert "Not a directory" in message


def test_missing_subtask_fails_finish(tmp_path: Path) -> None:
    uri = (tmp_path / "inc").as_uri()
    writer = SnapshotWriter(uri, "checkpoint", 1, META)
    writer.add_subtask("count", 1, 3, (2, 5), {}, None)
    with pytest.raises(SnapshotError, match=r"parallelism 3 but subtasks \[0, 2\] were never"):
        writer.finish()
    assert list_snapshots(tmp_path.as_uri()) == []


def test_abort_removes_files_and_writer_is_closed(tmp_path: Path) -> None:
    uri = (tmp_path / "ab").as_uri()
    writer = SnapshotWriter(uri, "checkpoint", 1, META)
    writer.add_subtask("count", 0, 1, (0, 8), {0: "x" * 10_000}, None)
    writer.abort()
    writer.abort()  # idempotent
    assert [p for p in (tmp_path / "ab").rglob("*") if p.is_file()] == []
    with pytest.raises(SnapshotError, match="aborted"):
        writer.add_subtask("count", 0, 1, (0, 8), {}, None)
    with pytest.raises(SnapshotError, match="aborted"):
        writer.finish()


def test_exception_inside_with_block_aborts(tmp_path: Path) -> None:
    uri = (tmp_path / "w").as_uri()
    with (
        pytest.raises(RuntimeError, match="job failed"),
        SnapshotWriter(uri, "checkpoint", 1, META) as writer,
    ):
        writer.add_subtask("count", 0, 1, (0, 8), {0: 1}, None)
        raise RuntimeError("job failed")
    assert [p for p in (tmp_path / "w").rglob("*") if p.is_file()] == []


def test_wrong_uri_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unsupported scheme 'ftp' in 'ftp://host/x'"):
        SnapshotWriter("ftp://host/x", "savepoint", 1, META)
    with pytest.raises(StorageError, match="unsupported scheme 'hdfs'"):
        SnapshotReader("hdfs://nn/x")
    with pytest.raises(ValueError, match="kind must be"):
        SnapshotWriter(tmp_path.as_uri(), "backup", 1, META)  # type: ignore[arg-type]


def test_manifest_write_failure_leaves_no_data(tmp_path: Path) -> None:
    # A folder named manifest.json: every data file lands, the manifest cannot.
    (tmp_path / "m" / "manifest.json").mkdir(parents=True)
    uri = (tmp_path / "m").as_uri()
    writer = SnapshotWriter(uri, "checkpoint", 5, META)
    writer.add_subtask("count", 0, 1, (0, 8), {0: {"a": 1}}, None)
    with pytest.raises(SnapshotError) as caught:
        writer.finish()
    assert f"checkpoint 5 at {uri} failed (no manifest written): manifest.json:" in str(
        caught.value
    )
    assert not (tmp_path / "m" / "data" / "count" / "subtask-0.msgpack").exists()
