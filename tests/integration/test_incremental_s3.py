"""Incremental checkpoints on the real MinIO from dev/ (s3://): a chain restores the
counts its records make, the referenced blocks are read with ranged GETs from the
earlier checkpoints' objects, retention keeps exactly what kept checkpoints reference,
and a savepoint copied to a local folder restores without the checkpoint history."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from rewind_engine.snapshots import open_storage, prune, read_manifest, verify

from dev.devcluster import ClusterEnv

pytestmark = pytest.mark.integration


def _load_incremental() -> ModuleType:
    """The chain and its expected state live with the unit tests; load them by path
    (test folders are not packages)."""
    name = "rewind_incremental_suite"
    if name not in sys.modules:
        path = Path(__file__).parents[1] / "test_engine" / "test_incremental.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def test_an_incremental_chain_on_s3_restores_and_prunes_what_nothing_references(
    s3_bucket: str, cluster: ClusterEnv, tmp_path: Path
) -> None:
    inc = _load_incremental()
    location = f"s3://{s3_bucket}/snapshots"
    job, steps = inc.chain(tmp_path, 8, retained=2, full_every=5, location=location)
    for _, chk, sp in steps:
        assert chk.status == "COMPLETED", chk.error
        assert sp is not None and sp.status == "COMPLETED", sp.error
    cut, chk, sp = steps[-1]
    manifest = read_manifest(chk.target)
    assert manifest.referenced_bytes > 0
    counts, sums = inc.expected(cut)
    assert inc.state(chk.target, "count") == counts
    assert inc.state(chk.target, "total") == sums
    verify(chk.target)
    # Retention: exactly the kept checkpoints' objects and what they reference remain.
    prune(location, job.job_id, keep=2)
    base = open_storage(f"{location}/checkpoints/{job.job_id}")
    keys = set(base.list())
    kept = sorted({k.partition("/")[0] for k in keys if k.endswith("/manifest.json")})
    assert len(kept) == 2
    wanted = {k for k in keys if k.partition("/")[0] in kept}
    for folder in kept:
        wanted |= {f"{f}/{k}" for f, k in read_manifest(f"{base.uri}/{folder}").referenced_files()}
        verify(f"{base.uri}/{folder}")
    assert keys == wanted
    assert any(k.partition("/")[0] not in kept for k in keys)  # a pruned one still referenced
    # A savepoint copied to a local folder restores with no checkpoint at hand.
    source, target = open_storage(sp.target), open_storage((tmp_path / "copy").as_uri())
    for key in source.list():
        target.put(key, source.get(key))
    base.delete_prefix("")
    assert inc.state(target.uri, "count") == counts
    assert inc.state(target.uri, "total") == sums
