"""The snapshot storage suite against the real MinIO from dev/ (s3://), plus the
S3-only failure cases: a missing bucket, rejected credentials, and a savepoint moved to
another bucket that still restores."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from pathlib import Path

import pytest
from rewind_engine.snapshots import (
    SnapshotError,
    SnapshotReader,
    SnapshotWriter,
    StorageError,
    checkpoint_uri,
    dispose,
    latest,
    list_snapshots,
    open_storage,
    prune,
    s3_settings,
    verify,
)

from dev.devcluster import ClusterEnv

pytestmark = pytest.mark.integration


def _load_suite() -> type:
    """The one storage suite lives with the unit tests; load it by path (test folders
    are not packages)."""
    name = "rewind_snapshot_storage_suite"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "test_engine" / "test_snapshots_storage.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    suite: type = sys.modules[name].StorageSuite
    return suite


class TestS3Storage(_load_suite()):  # type: ignore[misc]
    @pytest.fixture
    def root(self, s3_bucket: str) -> str:
        return f"s3://{s3_bucket}/store/root"


META = {"job_id": "job-1", "flow": "flow.py", "max_parallelism": 8}


def test_missing_bucket_is_one_clear_error(cluster: ClusterEnv) -> None:
    uri = "s3://rewind-no-such-bucket-4711/sp"
    with pytest.raises(StorageError) as caught:
        SnapshotReader(uri)
    assert "bucket 'rewind-no-such-bucket-4711' does not exist at " in str(caught.value)
    assert cluster.s3_endpoint.rstrip("/") in str(caught.value)
    writer = SnapshotWriter(uri, "savepoint", "sp", META)
    writer.add_subtask("count", 0, 1, (0, 8), {0: 1}, None)
    with pytest.raises(SnapshotError, match=r"bucket 'rewind-no-such-bucket-4711' does not exist"):
        writer.finish()


def test_rejected_credentials(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong")
    with pytest.raises(StorageError, match="rejected the credentials"):
        open_storage(f"s3://{s3_bucket}/x").put("k", b"v")


def test_s3_settings_apply_to_their_own_context_only(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's way to use one app's credentials: `s3_settings` over a wrong
    environment works, leaves os.environ alone, and a thread running at the same time
    without the block still sees the (wrong) environment."""
    right = os.environ["AWS_SECRET_ACCESS_KEY"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong")
    errors: list[str] = []
    inside = threading.Event()
    outside_done = threading.Event()

    def outside() -> None:
        inside.wait(timeout=30)
        try:
            open_storage(f"s3://{s3_bucket}/outside").put("k", b"v")
        except StorageError as exc:
            errors.append(str(exc))
        finally:
            outside_done.set()

    thread = threading.Thread(target=outside)
    thread.start()
    with s3_settings({"AWS_SECRET_ACCESS_KEY": right, "PATH": "ignored"}):
        storage = open_storage(f"s3://{s3_bucket}/inside")
        inside.set()
        outside_done.wait(timeout=30)
        storage.put("k", b"v")
        assert os.environ["AWS_SECRET_ACCESS_KEY"] == "definitely-wrong"
    thread.join(timeout=30)
    assert len(errors) == 1 and "rejected the credentials" in errors[0]
    assert right not in errors[0]
    # A storage object keeps the settings it was made with, in any thread.
    assert storage.get("k") == b"v"
    with pytest.raises(StorageError, match="rejected the credentials"):
        open_storage(f"s3://{s3_bucket}/inside").get("k")


def test_savepoint_copied_to_another_bucket_restores(
    s3_bucket: str, cluster: ClusterEnv, tmp_path: Path
) -> None:
    location = f"s3://{s3_bucket}/snapshots"
    for n in (1, 2, 3):
        writer = SnapshotWriter(checkpoint_uri(location, "job-1", n), "checkpoint", n, META)
        writer.add_subtask("count", 0, 2, (0, 4), {kg: {"n": n, "kg": kg} for kg in range(4)}, n)
        writer.add_subtask("count", 1, 2, (4, 8), {kg: {"n": n, "kg": kg} for kg in range(4, 8)}, n)
        writer.finish()
    newest = checkpoint_uri(location, "job-1", 3)
    assert latest(location) == newest
    assert [i.snapshot_id for i in list_snapshots(location)] == [3, 2, 1]
    assert prune(location, "job-1", keep=2) == [checkpoint_uri(location, "job-1", 1)]
    verify(newest)
    # Copy to a local folder (another "bucket") and restore from there at parallelism 3.
    source, target = open_storage(newest), open_storage((tmp_path / "copy").as_uri())
    for key in source.list():
        target.put(key, source.get(key))
    dispose(newest)
    assert [i.snapshot_id for i in list_snapshots(location)] == [2]
    with SnapshotReader(target.uri, max_parallelism=8) as reader:
        got = dict(reader.keyed_state("count", range(2, 6)))
        assert got == {kg: {"n": 3, "kg": kg} for kg in range(2, 6)}
        assert reader.operator_states("count") == [3, 3]
