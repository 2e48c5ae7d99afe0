"""The manifest: `manifest.json`, the one file that makes a folder of data a snapshot.

It is written LAST (on S3 it is the commit marker) and describes everything needed to
restore or inspect the snapshot without running anything: which steps (by uid) have
state, at what parallelism, which data file holds each subtask's state, the byte range
and sha256 of every key group inside it, and the sources' positions. The layout is
documented in docs/snapshot-format.md; change it only together with FORMAT_VERSION.

What must stay true: every path is relative to the snapshot folder (a copied folder
restores); every file has a sha256; a reader refuses a newer format version with a
message naming both versions instead of misreading it. Since version 4 a checkpoint may
reference blocks of its sibling checkpoints (`refs`, `../chk-<m>/<file>` only: any other
path is refused as corrupt); a savepoint never does, so a copied savepoint restores
without the checkpoint history.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .errors import CorruptSnapshotError, IncompatibleSnapshotError, StorageError
from .layout import split_ref
from .storage import check_key

FORMAT_VERSION = 4
"""The snapshot format this engine writes, and the newest it reads."""
MANIFEST_NAME = "manifest.json"

Kind = Literal["checkpoint", "savepoint"]


class _Model(BaseModel):
    # extra="ignore": an older reader of the same major format skips fields it does
    # not know; incompatible changes bump FORMAT_VERSION instead.
    model_config = ConfigDict(frozen=True, extra="ignore")


class SubtaskFile(_Model):
    """The state of one subtask of one step: one data file."""

    subtask: int
    """Subtask index (0-based) in the step's parallelism at snapshot time."""
    file: str
    """Path of the data file, relative to the snapshot folder."""
    size: int
    """Size of the data file in bytes."""
    sha256: str
    """sha256 (hex) of the whole data file."""
    key_group_range: tuple[int, int]
    """Key groups this subtask owned: [start, end), end exclusive."""
    blocks: list[tuple[int, int, int, str]]
    """One block per non-empty key group, ascending: [key group, offset, length, sha256]."""
    operator_state: tuple[int, int, str] | None
    """[offset, length, sha256] of the operator-state block, or null when there is none."""
    refs: list[tuple[int, str, int, int, str]] = []
    """Since version 4, checkpoints only: one entry per non-empty key group whose block
    an earlier checkpoint of the same job wrote and this one did not (it had not
    changed), ascending: [key group, file, offset, length, sha256], `file` relative to
    this snapshot folder and always `../chk-<m>/...` (the file that holds the bytes,
    never another reference). A key group is in `blocks` or in `refs`, not both."""

    @field_validator("file")
    @classmethod
    def _relative(cls, value: str) -> str:
        try:
            return check_key(value)
        except StorageError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("refs")
    @classmethod
    def _siblings(
        cls, value: list[tuple[int, str, int, int, str]]
    ) -> list[tuple[int, str, int, int, str]]:
        for ref in value:
            try:
                split_ref(ref[1])
            except StorageError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @property
    def referenced_bytes(self) -> int:
        """Bytes of the blocks this entry references in earlier checkpoints."""
        return sum(ref[3] for ref in self.refs)


class StepState(_Model):
    """All subtasks of one step (matched to the new flow by uid on restore)."""

    parallelism: int
    subtasks: list[SubtaskFile]


class WorkerEntry(_Model):
    """One worker's part of a snapshot taken by several worker processes."""

    worker: int
    part: str
    """Path of the worker's part file (parts/worker-<w>.json), relative to the folder."""
    size_bytes: int
    """Size of the data files this worker wrote."""
    subtasks: dict[str, list[int]]
    """Step uid -> the subtasks whose state this worker wrote."""


class Manifest(_Model):
    """The contents of manifest.json."""

    format_version: int
    kind: Kind
    snapshot_id: str | int
    job_id: str
    flow: str
    created_at: str
    """UTC time, ISO 8601 with milliseconds and a Z suffix."""
    max_parallelism: int
    """Number of key groups; a restore must use the same value."""
    size_bytes: int
    """Total size of the data files in this folder (manifest excluded; the blocks it
    references in earlier checkpoints are not counted: `referenced_bytes`)."""
    steps: dict[str, StepState]
    sources: dict[str, dict[str, Any]]
    """Source uid -> split id -> position (the same data the sources restore from)."""
    meta: dict[str, Any]
    """Free-form: engine version, image, spec hash, anything the caller recorded."""
    workers: list[WorkerEntry] = []
    """Set when several worker processes took the snapshot: one entry per worker. A
    reader needs nothing from it (`steps` lists every subtask); it is for inspection."""
    exchange: dict[str, dict[str, int]] = {}
    """Exchange topic -> partition -> the offset its consumer had reached when the
    snapshot was taken: everything before it is never read again (purged)."""

    @model_validator(mode="after")
    def _self_contained(self) -> Manifest:
        if self.kind == "savepoint" and any(
            entry.refs for step in self.steps.values() for entry in step.subtasks
        ):
            raise ValueError("a savepoint references files of other snapshots (refs)")
        return self

    @property
    def referenced_bytes(self) -> int:
        """Bytes of the blocks this snapshot references in earlier checkpoints."""
        return sum(e.referenced_bytes for step in self.steps.values() for e in step.subtasks)

    def referenced_files(self) -> set[tuple[str, str]]:
        """(`chk-<m>`, key) of every file of another checkpoint this one references."""
        return {
            split_ref(ref[1])
            for step in self.steps.values()
            for entry in step.subtasks
            for ref in entry.refs
        }

    @property
    def created(self) -> datetime:
        return parse_time(self.created_at)

    def to_json(self) -> bytes:
        return (_dumps(self.model_dump(mode="json"), "") + "\n").encode()


def _dumps(value: Any, indent: str) -> str:
    """JSON for people: nested objects indented, arrays of scalars (a block's
    [key group, offset, length, sha256]) on one line, so the manifest reads as a table."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k))}: {_dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        items = [inner + _dumps(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(value, separators=(", ", ": "))


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Parse manifest.json found at `where` (a URI, for messages)."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptSnapshotError(f"malformed manifest {where}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise CorruptSnapshotError(f"malformed manifest {where}: not a JSON object")
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptSnapshotError(
            f"malformed manifest {where}: format_version is missing or not a positive integer"
        )
    if version > FORMAT_VERSION:
        raise IncompatibleSnapshotError(
            f"snapshot manifest {where} has format version {version}, but this Rewind "
            f"reads format versions up to {FORMAT_VERSION}: restore it with a newer Rewind"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise CorruptSnapshotError(f"malformed manifest {where}: {problems}") from exc
