"""What the operator saw, as plain frozen data: the input of `decide`.

`observe` builds these from the Kubernetes API, the engine's control API and object
storage; `decide` reads them and nothing else. What must stay true: everything here is
a fact observed at one moment (never something the operator merely intended), and no
secret value is ever stored here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rewind_operator.vocabulary import PodPhase, SavepointPhase


@dataclass(frozen=True)
class PodObs:
    """One engine pod of the app."""

    name: str
    workload_hash: str | None
    """The `rewind.dev/workload-hash` annotation: which workload the pod runs."""
    ip: str | None = None
    phase: str = PodPhase.PENDING
    """Pod phase: Pending, Running, Succeeded, Failed."""
    ready: bool = False
    """The Ready condition (the engine's /readyz probe passed)."""
    restarts: int = 0
    waiting_reason: str | None = None
    """e.g. CrashLoopBackOff, ErrImagePull."""
    message: str | None = None
    """The last termination or waiting message, for status."""
    deleting: bool = False
    worker: int | None = None
    """The worker index of a StatefulSet pod (its `apps.kubernetes.io/pod-index`
    label); None for the single engine's Deployment pod."""


@dataclass(frozen=True)
class PreflightObs:
    """The pod of one of the app's restore preflight Jobs."""

    name: str
    """The Job's name (`status.operation.preflightJob`)."""
    phase: str = PodPhase.PENDING
    """Pending or Running: not done; Succeeded: passed; Failed: refused."""
    message: str | None = None
    """The engine's report or error (termination message), or why it waits."""
    waiting_reason: str | None = None
    """e.g. ErrImageNeverPull: the pod will never start."""
    exit_code: int | None = None
    """The engine's exit code once it ended (3: it could not read the snapshot)."""


@dataclass(frozen=True)
class DeploymentObs:
    """The app's engine Deployment, or its StatefulSet of workers."""

    workload_hash: str | None
    replicas: int
    ready_replicas: int = 0


@dataclass(frozen=True)
class WorkerReport:
    """One worker as the coordinator (worker 0) reports it from its heartbeats."""

    index: int
    state: str | None = None
    records_in: int | None = None
    records_out: int | None = None
    lag: int | None = None


@dataclass(frozen=True)
class EngineObs:
    """The engine's control API, asked at the pod's address."""

    pod: str
    workload_hash: str | None
    reachable: bool
    ready: bool = False
    job_id: str | None = None
    state: str | None = None
    restored_from: str | None = None
    sources: dict[str, dict[str, Any]] | None = None
    records_in: int | None = None
    records_out: int | None = None
    last_checkpoint: str | None = None
    error: str | None = None
    workers: tuple[WorkerReport, ...] | None = None
    """A coordinator's report of every worker that sent a heartbeat (None: one process)."""


@dataclass(frozen=True)
class SavepointObs:
    """A Savepoint resource in the app's namespace (of any app)."""

    name: str
    app: str
    reason: str
    phase: SavepointPhase
    created_at: datetime
    path: str | None = None
    completed_at: datetime | None = None
    error: str | None = None
    failures: int = 0
    deleting: bool = False
    app_uid: str | None = None
    """The `rewind.dev/app-uid` label: which incarnation of the app created it."""


@dataclass(frozen=True)
class AppObserved:
    """Everything `decide` needs to know about one StreamApp's world."""

    deployment: DeploymentObs | None = None
    statefulset: DeploymentObs | None = None
    """The StatefulSet of workers (an app with `workers` above 1)."""
    pods: tuple[PodObs, ...] = ()
    engine: EngineObs | None = None
    savepoints: tuple[SavepointObs, ...] = ()
    secret_exists: bool | None = None
    """None when no credentials secret is named."""
    exchange_secret_exists: bool | None = None
    """Whether `exchange.credentialsSecret` exists; None when none is named."""
    stored_snapshots: tuple[str, ...] | None = None
    """Snapshot URIs found under `snapshots.location`; None when not looked at."""
    storage_error: str | None = None
    preflights: tuple[PreflightObs, ...] = ()
    """The pods of the app's restore preflight Jobs."""


@dataclass(frozen=True)
class TriggerObs:
    """The engine's answer to `GET /savepoints/{id}`."""

    status: str
    """IN_PROGRESS, COMPLETED or FAILED."""
    location: str | None = None
    error: str | None = None
    size_bytes: int | None = None
    sources: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True)
class ManifestObs:
    """A snapshot manifest found in storage."""

    size_bytes: int
    created_at: datetime | None = None
    sources: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True)
class SavepointObserved:
    """Everything `decide_savepoint` needs to know about one Savepoint's world."""

    app_exists: bool
    app_image: str | None = None
    app_location: str | None = None
    app_credentials_secret: str | None = None
    savepoint_timeout_s: float = 600.0
    engine_address: str | None = None
    """host:port of a ready engine of the app, if any."""
    engine_state: str | None = None
    trigger: TriggerObs | None = None
    trigger_error: str | None = None
    """Why the trigger could not be polled (engine unreachable, unknown id)."""
    manifest: ManifestObs | None = None
    """The manifest at the savepoint's target/path, if one is there (for a registered
    `spec.path`: only once every data file matched it)."""
    corrupt: str | None = None
    """Why a registered savepoint failed verification (names every bad file)."""
    storage_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
