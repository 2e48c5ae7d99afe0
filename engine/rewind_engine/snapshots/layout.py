"""Where snapshots live under a location (fixed by docs/CONTRACTS.md).

    LOCATION/checkpoints/<job-id>/chk-<n>/      periodic checkpoints (pruned)
    LOCATION/savepoints/sp-<timestamp>-<id>/    the engine's default savepoint target
    LOCATION/savepoints/<namespace>/<name>/     the operator's savepoints

Each snapshot folder holds manifest.json (written last) and data files. An incremental
checkpoint also references blocks in files of its sibling checkpoints of the same job,
by a path relative to its own folder: `../chk-<m>/<file>` (`ref_path`, `split_ref`).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from .errors import StorageError
from .storage import check_key, join_uri

CHECKPOINTS = "checkpoints"
SAVEPOINTS = "savepoints"
_CHECKPOINT_DIR = re.compile(r"chk-(\d+)")
_REF = re.compile(r"\.\./(chk-\d+)/(.+)")


def checkpoint_uri(location: str, job_id: str, checkpoint_id: int) -> str:
    return join_uri(location, CHECKPOINTS, job_id, f"chk-{checkpoint_id}")


def new_savepoint_id(now: datetime | None = None) -> str:
    """`sp-<UTC yyyymmdd-hhmmss>-<6 hex>`: sorts by time, unique without coordination."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"sp-{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def default_savepoint_uri(location: str, savepoint_id: str) -> str:
    return join_uri(location, SAVEPOINTS, savepoint_id)


def checkpoint_number(folder_name: str) -> int | None:
    """n for a folder named `chk-<n>`, else None."""
    match = _CHECKPOINT_DIR.fullmatch(folder_name)
    return int(match.group(1)) if match else None


def ref_path(checkpoint_id: int, key: str) -> str:
    """The path of file `key` of sibling checkpoint `checkpoint_id`, relative to any
    checkpoint folder of the same job: `../chk-<n>/<key>`."""
    return f"../chk-{checkpoint_id}/{check_key(key)}"


def split_ref(path: str) -> tuple[str, str]:
    """(`chk-<m>`, key inside it) of a referenced path; `StorageError` unless it is
    exactly `../chk-<m>/<safe relative key>` (a manifest is untrusted input: a reference
    may only point into a sibling checkpoint folder, never anywhere else)."""
    match = _REF.fullmatch(path)
    try:
        if match is None:
            raise StorageError("not of that form")
        return match.group(1), check_key(match.group(2))
    except StorageError as exc:
        raise StorageError(
            f"invalid referenced file {path!r}: a reference must be ../chk-<n>/<file>, "
            f"a file of a sibling checkpoint of the same job ({exc})"
        ) from exc


def parent_uri(uri: str) -> str:
    """The URI of the folder that holds the folder `uri` (a job's checkpoints folder for
    a checkpoint)."""
    head, sep, _ = uri.rstrip("/").rpartition("/")
    if not sep or head.endswith(":/"):
        raise StorageError(f"{uri} has no parent folder to hold the checkpoints it references")
    return head
