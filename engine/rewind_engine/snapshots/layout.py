"""Where snapshots live under a location (fixed by docs/CONTRACTS.md).

    LOCATION/checkpoints/<job-id>/chk-<n>/      periodic checkpoints (pruned)
    LOCATION/savepoints/sp-<timestamp>-<id>/    the engine's default savepoint target
    LOCATION/savepoints/<namespace>/<name>/     the operator's savepoints

Each snapshot folder holds manifest.json (written last) and data files.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from .storage import join_uri

CHECKPOINTS = "checkpoints"
SAVEPOINTS = "savepoints"
_CHECKPOINT_DIR = re.compile(r"chk-(\d+)")


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
