"""The actions `decide` asks for, as plain frozen data; `act` carries them out.

What must stay true: every action is idempotent (deterministic names, create-if-absent,
apply-to-desired), so running a decision twice, or after a crash half-way, is harmless.
Actions carry names and references, never secret values.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewind_operator.models import StreamAppSpec
from rewind_operator.vocabulary import EventType, SavepointReason


@dataclass(frozen=True)
class ApplyWorkload:
    """Make the engine's ServiceAccount, Service and Deployment match `spec`."""

    spec: StreamAppSpec
    restore: str | None
    """What the engine restores from (`--restore`), None for empty state."""
    replicas: int
    """Pods: `spec.workers` while it runs, 0 when suspended."""
    workload_hash: str
    service_account: str


@dataclass(frozen=True)
class RunPreflight:
    """Create the restore preflight Job `name` for `spec` if it does not exist yet."""

    name: str
    spec: StreamAppSpec
    service_account: str


@dataclass(frozen=True)
class DeletePreflight:
    """Delete the preflight Job `name` (and its pod) if it exists."""

    name: str


@dataclass(frozen=True)
class CreateSavepoint:
    """Create a Savepoint resource if it does not exist yet."""

    name: str
    reason: SavepointReason
    stop: bool = False
    dispose_on_delete: bool = False


@dataclass(frozen=True)
class DeleteSavepoint:
    """Delete a Savepoint resource (its finalizer disposes of the data if asked)."""

    name: str


@dataclass(frozen=True)
class TriggerSavepoint:
    """POST /savepoints to the engine; the answer's id goes into the Savepoint status."""

    address: str
    target: str
    stop: bool
    drain: bool


@dataclass(frozen=True)
class DisposeData:
    """Delete a snapshot folder from object storage with the named credentials."""

    path: str
    credentials_secret: str | None


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes Event on the object being reconciled."""

    type: EventType
    reason: str
    message: str


Action = (
    ApplyWorkload
    | RunPreflight
    | DeletePreflight
    | CreateSavepoint
    | DeleteSavepoint
    | TriggerSavepoint
    | DisposeData
    | EmitEvent
)
