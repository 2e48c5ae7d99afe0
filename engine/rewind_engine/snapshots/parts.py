"""Worker parts: how a snapshot taken by several worker processes becomes one snapshot.

Flows through here: each worker writes its subtasks' data files into the snapshot
folder and then `parts/worker-<w>.json` (a `WorkerPart`: its subtask entries, source
positions and exchange positions). The coordinator merges the parts into the one
`manifest.json`, which it writes LAST. The global commit, step by step:

1. Worker w writes its data files (`data/<uid>/subtask-<i>.msgpack`; subtask indices are
   global, so two workers never write the same file), then its part file.
2. The coordinator, once every worker reported its part, reads every part back from
   storage (the manifest is built from what is durable, not from messages).
3. `merge_parts` checks that there is exactly one part per worker 0..N-1, that the
   workers agree on each step's parallelism, and that every subtask of every step is
   written by exactly one worker; anything else is a `SnapshotError` naming it.
4. The merged `Manifest` lists every subtask (a reader needs nothing else, so restore at
   any parallelism or worker count works as for one process) plus `workers` (one entry
   per part) and `exchange` (every consumer's position). It is written LAST: before
   that, the folder is not a snapshot, exactly as for one process.

What must stay true: a part is never read as a snapshot (no manifest.json name); the
merged manifest equals what a single process would have written for the same subtask
files, plus the two informational fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import CorruptSnapshotError, SnapshotError
from .manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Kind,
    Manifest,
    StepState,
    SubtaskFile,
    WorkerEntry,
)
from .storage import Storage

PARTS = "parts"


def part_key(worker: int) -> str:
    return f"{PARTS}/worker-{worker}.json"


class WorkerPart(BaseModel):
    """What one worker wrote for a snapshot (parts/worker-<w>.json)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format_version: int
    worker: int
    workers: int
    snapshot_id: str | int
    created_at: str
    size_bytes: int
    steps: dict[str, StepState]
    """Only this worker's subtasks; `parallelism` is the step's, over all workers."""
    sources: dict[str, dict[str, Any]]
    exchange: dict[str, dict[str, int]]
    """Topic -> partition -> offset this worker's consumer had reached."""

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=1).encode()


def read_part(storage: Storage, worker: int) -> WorkerPart:
    key = part_key(worker)
    data = storage.get(key)
    try:
        return WorkerPart.model_validate_json(data)
    except ValidationError as exc:
        raise CorruptSnapshotError(f"malformed worker part {storage.uri}/{key}: {exc}") from exc


def merge_parts(
    parts: Sequence[WorkerPart],
    *,
    kind: Kind,
    snapshot_id: str | int,
    job_id: str,
    flow: str,
    max_parallelism: int,
    meta: Mapping[str, Any],
) -> Manifest:
    """The global manifest of a snapshot whose parts are `parts` (step 3)."""
    if not parts:
        raise SnapshotError("no worker parts to merge")
    workers = parts[0].workers
    seen = sorted(p.worker for p in parts)
    if seen != list(range(workers)):
        raise SnapshotError(
            f"snapshot {snapshot_id}: expected one part from each of workers 0..{workers - 1},"
            f" got parts from workers {seen}"
        )
    parallelism: dict[str, int] = {}
    files: dict[str, list[SubtaskFile]] = {}
    sources: dict[str, dict[str, Any]] = {}
    exchange: dict[str, dict[str, int]] = {}
    entries: list[WorkerEntry] = []
    for part in sorted(parts, key=lambda p: p.worker):
        for uid, step in part.steps.items():
            known = parallelism.setdefault(uid, step.parallelism)
            if known != step.parallelism:
                raise SnapshotError(
                    f"snapshot {snapshot_id}: step {uid!r} has parallelism {known} in one part"
                    f" and {step.parallelism} in worker {part.worker}'s"
                )
            files.setdefault(uid, []).extend(step.subtasks)
        for uid, positions in part.sources.items():
            sources.setdefault(uid, {}).update(positions)
        for topic, positions in part.exchange.items():
            exchange.setdefault(topic, {}).update(positions)
        entries.append(
            WorkerEntry(
                worker=part.worker,
                part=part_key(part.worker),
                size_bytes=part.size_bytes,
                subtasks={u: sorted(e.subtask for e in s.subtasks) for u, s in part.steps.items()},
            )
        )
    for uid, p in parallelism.items():
        indices = sorted(e.subtask for e in files[uid])
        if indices != list(range(p)):
            missing = sorted(set(range(p)) - set(indices))
            twice = sorted({i for i in indices if indices.count(i) > 1})
            raise SnapshotError(
                f"snapshot {snapshot_id}: step {uid!r} (parallelism {p}) lacks subtasks "
                f"{missing} and has subtasks {twice} more than once across the workers' parts"
            )
        files[uid].sort(key=lambda e: e.subtask)
    return Manifest(
        format_version=FORMAT_VERSION,
        kind=kind,
        snapshot_id=snapshot_id,
        job_id=job_id,
        flow=flow,
        created_at=min(p.created_at for p in parts),
        max_parallelism=max_parallelism,
        size_bytes=sum(p.size_bytes for p in parts),
        steps={u: StepState(parallelism=parallelism[u], subtasks=files[u]) for u in files},
        sources=sources,
        meta=dict(meta),
        workers=entries,
        exchange={
            t: dict(sorted(ps.items(), key=lambda kv: int(kv[0]))) for t, ps in exchange.items()
        },
    )


def commit_global(storage: Storage, workers: int, **header: Any) -> Manifest:
    """Steps 2-4: read every part at `storage`, merge, write manifest.json LAST."""
    if storage.exists(MANIFEST_NAME):
        raise SnapshotError(f"a snapshot already exists at {storage.uri}")
    parts = [read_part(storage, w) for w in range(workers)]
    manifest = merge_parts(parts, **header)
    storage.put(MANIFEST_NAME, manifest.to_json())
    return manifest
