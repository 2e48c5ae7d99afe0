"""What a spec change means: each field's kind of change, in one ordered table.

    classify(old spec, new spec) -> Change (IGNORE < NO_RESTART < UPGRADE < REDEPLOY)

The table (`SPEC_CHANGES`) sits next to the ordering it uses, as in the Flink operator.
What must stay true: a field missing from the table counts as UPGRADE (an unknown change
restarts safely rather than being ignored); only UPGRADE and REDEPLOY restart the job.
A new spec field needs one row here (a test fails for a field without one).
"""

from __future__ import annotations

import enum
import hashlib
import json
from typing import Any

from rewind_operator.models import (
    StreamAppSpec,
)

# --------------------------------------------------------------------------- spec changes


class Change(enum.IntEnum):
    """How much a spec change disturbs the running job (ordered)."""

    IGNORE = 0
    """Nothing to do now (read at the next start)."""
    NO_RESTART = 1
    """Operator-side settings: applied at once, the job keeps running."""
    UPGRADE = 2
    """Needs a new engine process: goes through `upgradeMode` (savepoint first)."""
    REDEPLOY = 3
    """`restore.redeployNonce`: restart from a chosen savepoint, no new savepoint."""


SPEC_CHANGES: dict[str, Change] = {
    "image": Change.UPGRADE,
    "flow": Change.UPGRADE,
    "args": Change.UPGRADE,
    "parallelism": Change.UPGRADE,
    "workers": Change.UPGRADE,  # a stateful rescale, through a savepoint
    "exchange": Change.UPGRADE,
    "maxParallelism": Change.UPGRADE,
    "upgradeMode": Change.IGNORE,
    "state": Change.IGNORE,  # suspend/resume has its own path
    "snapshots.location": Change.UPGRADE,
    "snapshots.credentialsSecret": Change.UPGRADE,
    "snapshots.checkpointInterval": Change.UPGRADE,
    "snapshots.savepointInterval": Change.NO_RESTART,
    "snapshots.savepointTimeout": Change.NO_RESTART,
    "snapshots.retain": Change.NO_RESTART,
    "restore.savepoint": Change.IGNORE,
    "restore.path": Change.IGNORE,
    "restore.allowNonRestoredState": Change.IGNORE,
    "restore.allowEmptyState": Change.IGNORE,
    "restore.redeployNonce": Change.REDEPLOY,
    "rollback": Change.NO_RESTART,
    "preflight": Change.IGNORE,  # read at the next upgrade
    "savepointOnDelete": Change.NO_RESTART,
    "restartNonce": Change.UPGRADE,
    "env": Change.UPGRADE,
    "resources": Change.UPGRADE,
    "podTemplate": Change.UPGRADE,
}
"""Spec field (camelCase path) -> the change it makes. A field missing here counts as
UPGRADE: an unknown change restarts safely rather than being silently ignored."""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: data}


def kind_of(path: str) -> Change:
    parts = path.split(".")
    for length in range(len(parts), 0, -1):
        kind = SPEC_CHANGES.get(".".join(parts[:length]))
        if kind is not None:
            return kind
    return Change.UPGRADE


def changed_fields(old: StreamAppSpec, new: StreamAppSpec) -> list[str]:
    """The camelCase paths that differ between two specs."""
    a = _flatten(old.model_dump(by_alias=True, mode="json"))
    b = _flatten(new.model_dump(by_alias=True, mode="json"))
    return sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))


def classify(old: StreamAppSpec, new: StreamAppSpec) -> Change:
    """The largest change kind among the fields that differ."""
    return max((kind_of(p) for p in changed_fields(old, new)), default=Change.IGNORE)


def restart_digest(spec: StreamAppSpec) -> str:
    """A digest of what a restart would be made of: every field but the operator-side
    settings (NO_RESTART). Equal digests: the same version would start; so a check made
    of one (the restore preflight) still holds for the other."""
    fields = _flatten(spec.model_dump(by_alias=True, mode="json"))
    kept = {p: v for p, v in sorted(fields.items()) if kind_of(p) != Change.NO_RESTART}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def spec_summary(old: StreamAppSpec | None, new: StreamAppSpec) -> str:
    if old is not None and old.image != new.image:
        return f"image {old.image} -> {new.image}"
    if old is None:
        return f"image {new.image}"
    fields = ", ".join(changed_fields(old, new)) or "no field"
    return f"changed {fields}"
