"""Snapshots (checkpoints and savepoints): format, storage, writing, reading, managing.

Public for the runtime, the CLI and the operator (see docs/CONTRACTS.md and
docs/snapshot-format.md). State flows runtime -> `SnapshotWriter` -> data files +
manifest.json (last) -> `SnapshotReader` -> runtime; the helpers below work on
snapshots at rest, without a running job.
"""

from .describe import describe, human_size, render
from .errors import (
    CorruptSnapshotError,
    IncompatibleSnapshotError,
    NotFoundError,
    SnapshotError,
    StorageError,
)
from .layout import checkpoint_uri, default_savepoint_uri, new_savepoint_id
from .manage import (
    SnapshotInfo,
    dispose,
    last_checkpoint_number,
    latest,
    lineage,
    list_snapshots,
    prune,
    read_manifest,
    verify,
)
from .manifest import FORMAT_VERSION, MANIFEST_NAME, Kind, Manifest, StepState, SubtaskFile
from .parts import WorkerPart, commit_global, merge_parts
from .reader import SnapshotReader
from .storage import Storage, join_uri, open_storage, s3_settings
from .writer import SnapshotMeta, SnapshotWriter

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "CorruptSnapshotError",
    "IncompatibleSnapshotError",
    "Kind",
    "Manifest",
    "NotFoundError",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotMeta",
    "SnapshotReader",
    "SnapshotWriter",
    "StepState",
    "Storage",
    "StorageError",
    "SubtaskFile",
    "WorkerPart",
    "checkpoint_uri",
    "commit_global",
    "default_savepoint_uri",
    "describe",
    "dispose",
    "human_size",
    "join_uri",
    "last_checkpoint_number",
    "latest",
    "lineage",
    "list_snapshots",
    "merge_parts",
    "new_savepoint_id",
    "open_storage",
    "prune",
    "read_manifest",
    "render",
    "s3_settings",
    "verify",
]
