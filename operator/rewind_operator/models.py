"""The `StreamApp` and `Savepoint` resources (group `rewind.dev`, version `v1alpha1`).

These pydantic models are the one source of truth for the API: `crdgen` turns them into
the CRDs (field docstrings become `kubectl explain` text, `Field` bounds and `Literal`s
become schema bounds and enums), and the operator parses every object it reads through
them. Python names are snake_case; YAML names are camelCase through aliases.

What must stay true:
- every field has a docstring (a test checks the generated schema for descriptions);
- a field or enum value is never removed or renamed in v1alpha1 without a new version;
- the status models are the operator's memory: everything it needs to carry on after a
  restart (the operation in flight, the specs it deployed) is written here, and nothing
  secret ever is.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from rewind_operator.vocabulary import (
    APP_KIND,
    SAVEPOINT_KIND,
    AppPhase,
    ConditionStatus,
    Desired,
    JobState,
    OperationKind,
    OperationStage,
    Phase,
    SavepointPhase,
    SavepointReason,
    SpPhase,
    SpReason,
    UpgradeMode,
)

GROUP = "rewind.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        json_schema_extra={"example": "10m"},
    ),
]
"""A duration such as `30s`, `10m`, `1h30m` or `7d` (units ms, s, m, h, d)."""


def parse_duration(text: str) -> timedelta:
    """`"1h30m"` -> 90 minutes. Raises ValueError for text the schema would refuse."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 10m, 1h30m, 7d)")
    seconds = sum(
        float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text)
    )
    return timedelta(seconds=seconds)


class _Model(BaseModel):
    """Shared configuration: camelCase aliases, docstrings as descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    def dump(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, JSON types, no unset noise."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


# --------------------------------------------------------------------------- StreamApp


class Retain(_Model):
    """Which periodic savepoints to keep. Retention never deletes the savepoint the app
    last restored from, nor savepoints taken for upgrades, suspends, deletes or by hand."""

    count: int | None = Field(default=None, ge=1, le=10000)
    """Keep at most this many completed periodic savepoints (the newest ones)."""

    max_age: Duration | None = None
    """Delete completed periodic savepoints older than this (e.g. `24h`, `7d`)."""


class Snapshots(_Model):
    """Where checkpoints and savepoints are written, and how often."""

    location: str = Field(pattern=r"^(s3|file)://.+", min_length=6)
    """Base URI for this app's snapshots (`s3://bucket/prefix` or `file:///path`).
    Checkpoints go to `LOCATION/checkpoints/`, the operator's savepoints to
    `LOCATION/savepoints/<namespace>/<savepoint-name>/`."""

    credentials_secret: str | None = Field(default=None, min_length=1, max_length=253)
    """Name of a Secret in the app's namespace whose keys are environment variables for
    the object store (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`,
    `AWS_REGION`). Given to the engine with `envFrom`; the operator uses it to dispose
    of savepoint data. Its values never appear in status, Events or logs."""

    checkpoint_interval: Duration | None = None
    """How often the engine takes a checkpoint (engine default when unset)."""

    savepoint_interval: Duration | None = None
    """Take a periodic savepoint this often while the app runs; unset = never.
    Changing it needs no restart."""

    savepoint_timeout: Duration | None = None
    """How long one savepoint attempt may take before it counts as failed. A failed or
    timed-out upgrade savepoint leaves the running version untouched. Unset: the
    operator's default (10m unless installed with another)."""

    retain: Retain | None = None
    """Retention of periodic savepoints (by count and age)."""


class Restore(_Model):
    """Where the app's state comes from when it (re)starts without an upgrade savepoint."""

    savepoint: str | None = Field(default=None, min_length=1, max_length=253)
    """Name of a completed Savepoint in this namespace to start from (it may belong to
    another app: that is how an app is forked). Used on the first start and on a
    redeploy through `redeployNonce`."""

    path: str | None = Field(default=None, min_length=1)
    """URI of a savepoint or checkpoint folder to start from, or `latest` for the newest
    snapshot under `snapshots.location`. Mutually exclusive with `savepoint`."""

    allow_non_restored_state: bool = False
    """Start even if the snapshot holds state for step uids the flow no longer has
    (that state is dropped). Passed to the engine as `--allow-non-restored-state`."""

    allow_empty_state: bool = False
    """Start from empty state although snapshots of this app exist. Without it the
    operator refuses to start an app with no restore named when it finds savepoints or
    checkpoints under `snapshots.location`, so a recreated app never silently loses its
    state."""

    redeploy_nonce: int | None = None
    """Change this number to redeploy the running app from `savepoint`/`path` when given,
    else from the app's newest completed savepoint (no new savepoint is taken)."""


class Rollback(_Model):
    """Automatic rollback of an upgrade whose new version does not become ready."""

    enabled: bool = True
    """Roll back to `status.lastStableSpec`, restored from the same savepoint the
    upgrade used, when the new version is not ready in time."""

    readiness_timeout: Duration = "5m"
    """How long a new version may take to become ready before it is rolled back."""


class Preflight(_Model):
    """The restore preflight of an upgrade: before the running version is stopped, a
    short-lived pod of the new version restores the app's newest snapshot (without
    reading sources or writing sinks) and checks that every uid maps and every state
    decodes. A failing preflight refuses the upgrade and the running version runs on."""

    enabled: bool = True
    """Run the preflight before every upgrade that keeps state (upgradeMode savepoint and
    last-state)."""

    timeout: Duration = "2m"
    """How long the preflight pod may take (image pull and restore); longer fails it."""


class EnvVar(_Model):
    """An environment variable for the engine container (as in a Pod spec)."""

    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Variable name."""

    value: str | None = None
    """Literal value (`$(VAR)` references are expanded by Kubernetes)."""

    value_from: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """A Kubernetes `EnvVarSource` (secretKeyRef, configMapKeyRef, fieldRef, ...)."""


class Exchange(_Model):
    """How the workers of a job reach Kafka, which carries the records between them
    (docs/scale.md). Only used when `workers` is above 1."""

    bootstrap_servers: str | None = Field(default=None, min_length=1)
    """Kafka bootstrap address (`host:port[,host:port...]`) for the job's exchange and
    control topics; given to every worker as `REWIND_KAFKA_BOOTSTRAP`. Not a secret: it
    is kept in `status.lastReconciledSpec` like the rest of the spec."""

    credentials_secret: str | None = Field(default=None, min_length=1, max_length=253)
    """Name of a Secret in the app's namespace whose keys are environment variables for
    the workers' Kafka clients: `REWIND_KAFKA_BOOTSTRAP` when the address itself is not
    to be shown, and any librdkafka property as `REWIND_KAFKA_<PROPERTY>` (upper case,
    `_` for `.`: `REWIND_KAFKA_SECURITY_PROTOCOL`, `REWIND_KAFKA_SASL_MECHANISM`,
    `REWIND_KAFKA_SASL_USERNAME`, `REWIND_KAFKA_SASL_PASSWORD`, ...). Given to every
    worker with `envFrom`; its values never appear in status, Events or logs."""


class StreamAppSpec(_Model):
    """The desired state of a streaming application."""

    image: str = Field(min_length=1)
    """Container image with the flow's code. Changing it is an upgrade."""

    flow: str = Field(min_length=1)
    """The flow to run: a file relative to the image's working folder (`flow.py`) or
    `module:attribute`."""

    args: list[str] = Field(default_factory=list)
    """Extra arguments passed to the flow after the engine's own."""

    parallelism: int = Field(default=1, ge=1, le=1024)
    """Subtasks per step. Changing it is an upgrade; state is redistributed by key group."""

    workers: int = Field(default=1, ge=1, le=256)
    """Worker processes (pods) the job runs on. 1: one pod, no Kafka needed. More: a
    StatefulSet of that many pods; worker 0 coordinates global checkpoints and serves
    the control API, and records cross workers through Kafka (`exchange`). `parallelism`
    must be at least `workers`. Changing it is an upgrade through a savepoint (a
    stateful rescale: key groups and splits are redistributed)."""

    exchange: Exchange | None = None
    """Kafka for the records between workers (needed when `workers` is above 1, unless
    `env` sets `REWIND_KAFKA_BOOTSTRAP`)."""

    max_parallelism: int | None = Field(default=None, ge=1, le=32768)
    """Number of key groups (the upper bound for parallelism). Fixed for the life of the
    state: a stateful upgrade that changes it is refused."""

    upgrade_mode: UpgradeMode | None = None
    """How a change that needs a restart is applied: `savepoint` (stop with a savepoint,
    start the new version from it), `last-state` (restart from the newest checkpoint),
    `stateless` (restart from empty state). Unset: the operator's default (`savepoint`
    unless the operator was installed with another)."""

    state: JobState = Desired.RUNNING
    """`running`, or `suspended`: take a savepoint and scale to zero; set back to
    `running` to resume from that savepoint."""

    snapshots: Snapshots
    """Snapshot storage and schedule."""

    restore: Restore = Field(default_factory=Restore)
    """Where the state comes from on the first start or a forced redeploy."""

    rollback: Rollback = Field(default_factory=Rollback)
    """Automatic rollback of upgrades that do not become ready."""

    preflight: Preflight = Field(default_factory=Preflight)
    """The restore check before an upgrade stops the running version."""

    savepoint_on_delete: bool = False
    """Take a final savepoint (reason `delete`) before the app is deleted. The Savepoint
    resource and its data outlive the app."""

    restart_nonce: int | None = None
    """Change this number to restart the job (through the upgrade path) without any
    other change."""

    env: list[EnvVar] = Field(default_factory=list)
    """Environment variables for the engine container."""

    resources: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """Kubernetes `ResourceRequirements` for the engine container (requests, limits)."""

    pod_template: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """Extra Pod template fields merged into the engine's: `metadata.labels`,
    `metadata.annotations` and `spec` fields (nodeSelector, tolerations, affinity,
    volumes, ...). The operator's own container, labels and service account win; of a
    container named `engine` only `volumeMounts` is taken, to mount the volumes into
    the engine."""


class Condition(_Model):
    """A Kubernetes-style condition."""

    type: str
    """`Ready`, `Progressing` or `Degraded`."""

    status: ConditionStatus
    """`True`, `False` or `Unknown`."""

    reason: str = ""
    """One CamelCase word that says why (e.g. `SavepointFailed`, `RolledBack`)."""

    message: str = ""
    """A sentence for humans."""

    last_transition_time: datetime | None = None
    """When `status` last changed."""

    observed_generation: int | None = None
    """The `metadata.generation` this condition was computed for."""


class SavepointRef(_Model):
    """A completed savepoint, as remembered in an app's status."""

    name: str | None = None
    """Savepoint resource name (none for a path given directly)."""

    path: str | None = None
    """URI of the savepoint folder."""

    completed_at: datetime | None = None
    """When it completed."""


class WorkerStatus(_Model):
    """One worker of a job of several, as its pod and the coordinator report it."""

    index: int
    """The worker's index (0 coordinates)."""

    pod: str | None = None
    """The pod it runs in."""

    ready: bool = False
    """The pod's Ready condition."""

    restarts: int = 0
    """Container restarts of that pod."""

    state: str | None = None
    """The worker's job state from its last heartbeat to the coordinator (`RUNNING`,
    `STOPPING`, `FINISHED`, ...); none before the job started on every worker."""

    records_in: int | None = None
    """Records its sources read since it started."""

    records_out: int | None = None
    """Records it handed to sinks since it started."""

    lag: int | None = None
    """Exchange records waiting for it (sum over the partitions it reads)."""


class JobStatus(_Model):
    """What the engine reported through its control API at the last poll."""

    id: str | None = None
    """Engine job id."""

    state: str | None = None
    """`RUNNING`, `STOPPING`, `FINISHED`, `FAILED` or `CANCELED`."""

    restored_from: str | None = None
    """The snapshot the job restored its state from (none = empty state)."""

    sources: dict[str, dict[str, Any]] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """Source positions per source uid and split."""

    records_in: int | None = None
    """Records read since the job started."""

    records_out: int | None = None
    """Records written since the job started."""

    last_checkpoint: str | None = None
    """Location of the newest completed checkpoint."""

    workers: list[WorkerStatus] | None = None
    """Per worker, for a job of several (`spec.workers` above 1)."""


class Operation(_Model):
    """The operation in flight. Written before each step that changes the world, so an
    operator restarted half-way carries on from here instead of starting over."""

    kind: OperationKind
    """What is being done."""

    stage: OperationStage
    """`preflight`: a pod of the new version checks that it restores the app's state;
    `refused`: it did not, the running version is untouched until the spec changes;
    `savepoint`: waiting for the gating savepoint; `deploying`: the workload for the
    target spec was applied, waiting for it to be ready; `blocked`: the savepoint failed,
    the running version is untouched, a new attempt follows after a delay."""

    generation: int | None = None
    """The app generation this operation moves to."""

    target_spec_hash: str | None = None
    """Hash of the workload being deployed."""

    savepoint: str | None = None
    """Name of the gating Savepoint (stop-with-savepoint), if any."""

    attempt: int = 0
    """Number of gating savepoints that failed before this one (part of its name)."""

    restore_path: str | None = None
    """What the new workload restores from (`latest` = newest checkpoint)."""

    started_at: datetime | None = None
    """When the operation began."""

    deployed_at: datetime | None = None
    """When the target workload was applied (start of the readiness timeout)."""

    retry_at: datetime | None = None
    """`blocked` only: when the next savepoint attempt is made."""

    message: str | None = None
    """Why the operation is blocked or refused, in words."""

    preflight_job: str | None = None
    """`preflight` and `refused` only: the preflight Job (`kubectl logs job/NAME`)."""

    preflight_spec: str | None = None
    """`preflight` and `refused` only: `changes.restart_digest` of the spec checked; a
    spec with another digest starts over."""


class PreflightResult(_Model):
    """The outcome of the last restore preflight."""

    job: str
    """The preflight Job (kept while the upgrade is refused, for `kubectl logs`)."""

    image: str
    """The image that was checked."""

    generation: int
    """The app generation whose spec was checked."""

    passed: bool
    """Whether the new version restores the app's state."""

    message: str = ""
    """The engine's report: the snapshot, the uids restored, new and dropped, or the error
    (uid, step, file)."""

    started_at: datetime | None = None
    """When the preflight Job was created."""

    finished_at: datetime | None = None
    """When the operator saw its result."""


class StreamAppStatus(_Model):
    """What the operator observed and remembers."""

    phase: AppPhase = Phase.PENDING
    """Lifecycle phase."""

    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """`Ready`, `Progressing` and `Degraded`."""

    observed_generation: int | None = None
    """The `metadata.generation` the operator last acted on."""

    image: str | None = None
    """The image that runs now."""

    last_savepoint: SavepointRef | None = None
    """The newest completed savepoint of this app."""

    restored_from: SavepointRef | None = None
    """The savepoint (or path) the running version restored from; retention keeps it."""

    last_reconciled_spec: StreamAppSpec | None = None
    """The spec the current workload was built from."""

    last_stable_spec: StreamAppSpec | None = None
    """The last spec that was seen ready: the target of a rollback."""

    workload_hash: str | None = None
    """Hash of the workload applied for `lastReconciledSpec`."""

    rolled_back_generation: int | None = None
    """A generation that was rolled back; it is not retried until the spec changes."""

    operation: Operation | None = None
    """The operation in flight, if any."""

    last_periodic_savepoint_at: datetime | None = None
    """When the last periodic savepoint was requested."""

    last_preflight: PreflightResult | None = None
    """The last restore preflight of an upgrade."""

    job: JobStatus | None = None
    """The engine's own report."""

    workers: str | None = None
    """Workers ready / workers wanted of the version that runs (`2/3`), as
    `kubectl get sapp` shows it."""


class StreamApp(_Model):
    """A stateful streaming application run by the Rewind engine."""

    api_version: str = API_VERSION
    kind: str = APP_KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: StreamAppSpec
    status: StreamAppStatus = Field(default_factory=StreamAppStatus)


# --------------------------------------------------------------------------- Savepoint


class SavepointSpec(_Model):
    """A savepoint of a StreamApp: taken on request, or registered from a path."""

    app: str = Field(min_length=1, max_length=253)
    """Name of the StreamApp (same namespace) to take the savepoint of."""

    reason: SavepointReason = SpReason.MANUAL
    """Why it exists: `manual` (a user), or set by the operator: `upgrade`, `periodic`,
    `suspend`, `delete`. Retention only ever deletes `periodic` savepoints."""

    stop: bool = False
    """Stop the job once the savepoint completes (stop-with-savepoint)."""

    drain: bool = False
    """With `stop`: let windows and timers fire before the final savepoint."""

    dispose_on_delete: bool = False
    """Delete the savepoint's data from object storage when this resource is deleted
    (also when the app no longer exists)."""

    path: str | None = Field(default=None, pattern=r"^(s3|file)://.+")
    """Register an existing savepoint at this URI instead of taking one."""

    backoff_limit: int = Field(default=3, ge=0, le=100)
    """How many failed attempts are retried (with exponential backoff) before `Failed`."""


class SavepointStatus(_Model):
    """Progress and result of a savepoint."""

    phase: SavepointPhase = SpPhase.PENDING
    """`Pending`, `InProgress`, `Completed`, `Failed` or `Abandoned` (could not be taken,
    e.g. the app does not exist)."""

    path: str | None = None
    """URI of the savepoint folder (where it is being written, then where it is)."""

    trigger_id: str | None = None
    """The engine's id for the current attempt."""

    triggered_at: datetime | None = None
    """When the current attempt was triggered."""

    completed_at: datetime | None = None
    """When it completed."""

    error: str | None = None
    """The last error, in words."""

    failures: int = 0
    """Failed attempts so far."""

    next_attempt_at: datetime | None = None
    """After a failure: when the next attempt is made."""

    size_bytes: int | None = None
    """Total size of the savepoint's files."""

    sources: dict[str, dict[str, Any]] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """Source positions recorded in the savepoint, per source uid and split."""

    image: str | None = None
    """The image of the job the savepoint was taken from."""

    credentials_secret: str | None = None
    """Name (never the values) of the Secret with the storage credentials, remembered so
    that `disposeOnDelete` still works after the app is gone."""

    observed_generation: int | None = None
    """The `metadata.generation` last acted on."""


class Savepoint(_Model):
    """A savepoint of a StreamApp, as a Kubernetes resource."""

    api_version: str = API_VERSION
    kind: str = SAVEPOINT_KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: SavepointSpec
    status: SavepointStatus = Field(default_factory=SavepointStatus)
