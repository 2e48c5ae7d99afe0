"""The `Storage` contract, one suite for every backend.

`StorageSuite` holds the tests; each backend subclasses it with a `root` fixture giving
a fresh root URI. Here: `file://` on tmp_path. tests/integration/test_snapshots_s3.py
runs the same suite against the real MinIO from dev/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rewind_engine.snapshots import (
    NotFoundError,
    SnapshotReader,
    SnapshotWriter,
    StorageError,
    open_storage,
)
from rewind_engine.snapshots.s3_storage import MULTIPART_THRESHOLD, PART_SIZE


class StorageSuite:
    """Backend-independent behaviour; subclasses provide the `root` fixture."""

    def test_put_get_roundtrip_and_overwrite(self, root: str) -> None:
        storage = open_storage(root)
        storage.put("a/b/c.bin", b"first")
        assert storage.get("a/b/c.bin") == b"first"
        storage.put("a/b/c.bin", bytearray(b"second"))
        assert storage.get("a/b/c.bin") == b"second"
        assert storage.size("a/b/c.bin") == 6
        assert storage.exists("a/b/c.bin")
        assert not storage.exists("a/b/other.bin")

    def test_missing_file_is_not_found_naming_it(self, root: str) -> None:
        storage = open_storage(root)
        with pytest.raises(NotFoundError, match=r"no such file: .*missing\.bin"):
            storage.get("x/missing.bin")
        with pytest.raises(NotFoundError, match=r"missing\.bin"):
            storage.size("x/missing.bin")

    def test_get_range(self, root: str) -> None:
        storage = open_storage(root)
        data = bytes(range(256)) * 4
        storage.put("r.bin", data)
        assert storage.get_range("r.bin", 10, 20) == data[10:30]
        assert storage.get_range("r.bin", 0, len(data)) == data
        assert storage.get_range("r.bin", 1000, 100) == data[1000:]  # short at the end
        assert storage.get_range("r.bin", 5000, 10) == b""  # past the end
        assert storage.get_range("r.bin", 3, 0) == b""

    def test_list_is_recursive_sorted_and_folder_scoped(self, root: str) -> None:
        storage = open_storage(root)
        for key in ("b/2", "a/1", "a/sub/3", "ab/4", "top"):
            storage.put(key, key.encode())
        assert storage.list() == ["a/1", "a/sub/3", "ab/4", "b/2", "top"]
        assert storage.list("a") == ["a/1", "a/sub/3"]  # not "ab/4"
        assert storage.list("a/") == ["a/1", "a/sub/3"]
        assert storage.list("nothing") == []

    def test_delete_and_delete_prefix(self, root: str) -> None:
        storage = open_storage(root)
        for key in ("a/1", "a/sub/2", "ab/3", "c"):
            storage.put(key, b"x")
        storage.delete("c")
        storage.delete("c")  # idempotent
        assert not storage.exists("c")
        storage.delete_prefix("a")
        assert storage.list() == ["ab/3"]
        storage.delete_prefix("")
        assert storage.list() == []
        storage.delete_prefix("")  # nothing left: still fine

    def test_large_file_roundtrip(self, root: str) -> None:
        # Above the multipart threshold, and not a multiple of the part size, so that
        # S3 takes the parallel multipart upload and the parallel ranged GETs.
        size = MULTIPART_THRESHOLD + PART_SIZE // 2 + 7
        data = os.urandom(1024) * (size // 1024) + b"tail!!!"
        storage = open_storage(root)
        storage.put("big/file.bin", memoryview(data))
        assert storage.size("big/file.bin") == len(data)
        assert storage.get("big/file.bin") == data
        start = PART_SIZE - 100
        assert (
            storage.get_range("big/file.bin", start, MULTIPART_THRESHOLD + 50)
            == data[start : start + MULTIPART_THRESHOLD + 50]
        )

    def test_keys_cannot_escape_the_root(self, root: str) -> None:
        storage = open_storage(root)
        for bad in ("../outside", "a/../../b", "/abs", "a//b", ""):
            with pytest.raises(StorageError, match="invalid file key"):
                storage.put(bad, b"x")

    def test_uri_is_stable(self, root: str) -> None:
        storage = open_storage(root)
        assert open_storage(storage.uri + "/").uri == storage.uri

    def test_snapshot_roundtrip_and_copied_folder(self, root: str) -> None:
        """A savepoint written here, copied key by key to another folder, restores."""
        original = root.rstrip("/") + "/sp"
        writer = SnapshotWriter(
            original, "savepoint", "sp-1", {"job_id": "j", "flow": "f", "max_parallelism": 4}
        )
        writer.add_subtask("count", 0, 2, range(0, 2), {0: {"a": 1}, 1: {"b": 2}}, {"wm": 7})
        writer.add_subtask("count", 1, 2, range(2, 4), {3: {"c": 3}}, None)
        writer.finish()
        source, target = open_storage(original), open_storage(root.rstrip("/") + "/copy/of/sp")
        for key in source.list():
            target.put(key, source.get(key))
        for uri in (original, target.uri):
            with SnapshotReader(uri) as reader:
                assert dict(reader.keyed_state("count", range(4))) == {
                    0: {"a": 1},
                    1: {"b": 2},
                    3: {"c": 3},
                }
                assert reader.operator_states("count") == [{"wm": 7}, None]


class TestFileStorage(StorageSuite):
    @pytest.fixture
    def root(self, tmp_path: Path) -> str:
        return (tmp_path / "store").as_uri()

    def test_plain_path_means_file(self, tmp_path: Path) -> None:
        storage = open_storage(str(tmp_path / "plain"))
        storage.put("k", b"v")
        assert (tmp_path / "plain" / "k").read_bytes() == b"v"
        assert storage.uri == f"file://{tmp_path / 'plain'}"

    def test_relative_file_uri_is_made_absolute(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        storage = open_storage("file://./rewind-snapshots")  # the engine's default location
        storage.put("checkpoints/k", b"v")
        assert storage.uri == f"file://{tmp_path / 'rewind-snapshots'}"
        assert (tmp_path / "rewind-snapshots" / "checkpoints" / "k").read_bytes() == b"v"

    def test_no_temp_files_left_and_none_listed(self, tmp_path: Path) -> None:
        storage = open_storage(tmp_path.as_uri())
        storage.put("d/k", b"v")
        (tmp_path / "d" / ".k.tmp-crashed").write_bytes(b"half")  # a crash mid-put
        assert storage.list() == ["d/k"]
        assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [".k.tmp-crashed", "k"]

    def test_write_failure_names_the_file(self, tmp_path: Path) -> None:
        (tmp_path / "blocker").write_bytes(b"a file where a folder should be")
        storage = open_storage((tmp_path / "blocker" / "sub").as_uri())
        with pytest.raises(StorageError, match=r"cannot write file://.*blocker/sub/k"):
            storage.put("k", b"v")


def test_unsupported_scheme_is_one_clear_error() -> None:
    with pytest.raises(
        StorageError, match=r"unsupported scheme 'gs' in 'gs://b/p', use file:// or s3://"
    ):
        open_storage("gs://b/p")
    with pytest.raises(StorageError, match="no bucket"):
        open_storage("s3:///prefix")


def test_unreachable_s3_endpoint_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 1 on loopback refuses at once: the real botocore path, no server needed.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    storage = open_storage("s3://bucket/prefix")
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:1"):
        storage.put("k", b"v")
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:1"):
        SnapshotReader("s3://bucket/prefix")
