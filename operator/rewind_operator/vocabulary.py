"""Every word the operator writes or reads: phases, condition types and reasons, Event
reasons, operation kinds and stages, savepoint phases, upgrade modes, label keys.

Names flow from here into the models (the CRD enums are these `Literal`s), the state
machines (`decide`, `decide_savepoint`), `act`, `observe` and the handlers. What must
stay true:

- a word is spelt once, here; code uses the constant, so mypy catches a misspelt phase
  (each constant is `Final`, hence its own `Literal` type, and the fields it goes into
  are typed with the `Literal`s below);
- every constant class lists exactly the values of its `Literal` (a test checks), so
  adding a value to one without the other fails;
- condition and Event reasons are one CamelCase word (Kubernetes convention); removing
  or renaming one is an API change (users alert on them).

Plain `Final` constants rather than enums: the values are what the API server stores,
and pydantic, mypy and the CRD generator all see them as the strings they are.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

# --------------------------------------------------------------------------- kinds, labels

APP_KIND: Final = "StreamApp"
SAVEPOINT_KIND: Final = "Savepoint"

SAVEPOINT_APP_LABEL: Final = "rewind.dev/app"
"""On a Savepoint the operator made: the name of its StreamApp."""
SAVEPOINT_APP_UID_LABEL: Final = "rewind.dev/app-uid"
"""On a Savepoint the operator made: which incarnation of the app (its uid) made it."""
SAVEPOINT_REASON_LABEL: Final = "rewind.dev/reason"
"""On a Savepoint the operator made: its `spec.reason`, for `kubectl -l`."""
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "rewind-operator"

# --------------------------------------------------------------------------- StreamApp spec

UpgradeMode = Literal["savepoint", "last-state", "stateless"]
"""What a restart keeps; each mode's behaviour is one row of `strategy.STRATEGIES`."""


class Mode:
    """`spec.upgradeMode` values."""

    SAVEPOINT: Final = "savepoint"
    LAST_STATE: Final = "last-state"
    STATELESS: Final = "stateless"


UPGRADE_MODES: Final[tuple[UpgradeMode, ...]] = get_args(UpgradeMode)

LATEST: Final = "latest"
"""`restore.path: latest` (and the engine's `--restore latest`): the newest snapshot under
`snapshots.location`."""

JobState = Literal["running", "suspended"]


class Desired:
    """`spec.state` values: what the user wants the job to be."""

    RUNNING: Final = "running"
    SUSPENDED: Final = "suspended"


# --------------------------------------------------------------------------- StreamApp status

AppPhase = Literal[
    "Pending",
    "Deploying",
    "Running",
    "Upgrading",
    "RollingBack",
    "Suspending",
    "Suspended",
    "Failed",
    "Deleting",
]
"""`status.phase`; derived in one place, `lifecycle.phase_of`."""


class Phase:
    """`status.phase` values."""

    PENDING: Final = "Pending"
    DEPLOYING: Final = "Deploying"
    RUNNING: Final = "Running"
    UPGRADING: Final = "Upgrading"
    ROLLING_BACK: Final = "RollingBack"
    SUSPENDING: Final = "Suspending"
    SUSPENDED: Final = "Suspended"
    FAILED: Final = "Failed"
    DELETING: Final = "Deleting"


APP_PHASES: Final[tuple[AppPhase, ...]] = get_args(AppPhase)

OperationKind = Literal["deploy", "upgrade", "rollback", "suspend", "resume", "redeploy"]


class Kind:
    """`status.operation.kind` values."""

    DEPLOY: Final = "deploy"
    UPGRADE: Final = "upgrade"
    ROLLBACK: Final = "rollback"
    SUSPEND: Final = "suspend"
    RESUME: Final = "resume"
    REDEPLOY: Final = "redeploy"


OperationStage = Literal["preflight", "refused", "savepoint", "deploying", "blocked"]


class Stage:
    """`status.operation.stage` values."""

    PREFLIGHT: Final = "preflight"
    """An upgrade checks that the new version restores the app's state (a preflight pod)."""
    REFUSED: Final = "refused"
    """The preflight failed: the upgrade waits for a new spec, the old version runs on."""
    SAVEPOINT: Final = "savepoint"
    DEPLOYING: Final = "deploying"
    BLOCKED: Final = "blocked"


ConditionType = Literal["Ready", "Progressing", "Degraded"]


class Cond:
    """Condition types, in the order they are listed in a status."""

    READY: Final = "Ready"
    PROGRESSING: Final = "Progressing"
    DEGRADED: Final = "Degraded"


CONDITION_TYPES: Final[tuple[ConditionType, ...]] = get_args(ConditionType)

ConditionStatus = Literal["True", "False", "Unknown"]
TRUE: Final = "True"
FALSE: Final = "False"
UNKNOWN: Final = "Unknown"


class Reason:
    """Condition reasons."""

    JOB_RUNNING: Final = "JobRunning"
    JOB_NOT_READY: Final = "JobNotReady"
    JOB_CRASHING: Final = "JobCrashing"
    HEALTHY: Final = "Healthy"
    IDLE: Final = "Idle"
    DEPLOYING: Final = "Deploying"
    DEPLOY_FAILED: Final = "DeployFailed"
    PREFLIGHT_RUNNING: Final = "PreflightRunning"
    PREFLIGHT_FAILED: Final = "PreflightFailed"
    SAVEPOINT_IN_PROGRESS: Final = "SavepointInProgress"
    SAVEPOINT_FAILED: Final = "SavepointFailed"
    ROLLING_BACK: Final = "RollingBack"
    ROLLED_BACK: Final = "RolledBack"
    UPGRADE_FAILED: Final = "UpgradeFailed"
    SCALING_DOWN: Final = "ScalingDown"
    SUSPENDED: Final = "Suspended"
    INVALID_SPEC: Final = "InvalidSpec"
    RESTORE_SAVEPOINT_NOT_READY: Final = "RestoreSavepointNotReady"
    EMPTY_STATE_REFUSED: Final = "EmptyStateRefused"
    NO_SAVEPOINT: Final = "NoSavepoint"
    FINAL_SAVEPOINT: Final = "FinalSavepoint"


# --------------------------------------------------------------------------- Events

EventType = Literal["Normal", "Warning"]
NORMAL: Final = "Normal"
WARNING: Final = "Warning"


class EventReason:
    """Reasons of the Kubernetes Events the operator records (StreamApp and Savepoint)."""

    # StreamApp: starting, upgrading, rolling back
    DEPLOYING: Final = "Deploying"
    DEPLOYED: Final = "Deployed"
    DEPLOY_FAILED: Final = "DeployFailed"
    UPGRADE_STARTED: Final = "UpgradeStarted"
    PREFLIGHT_PASSED: Final = "PreflightPassed"
    PREFLIGHT_FAILED: Final = "PreflightFailed"
    PREFLIGHT_INCONCLUSIVE: Final = "PreflightInconclusive"
    UPGRADE_SUCCEEDED: Final = "UpgradeSucceeded"
    ROLLING_BACK: Final = "RollingBack"
    ROLLED_BACK: Final = "RolledBack"
    REDEPLOYED: Final = "Redeployed"
    OPERATION_CANCELLED: Final = "OperationCancelled"
    SPEC_APPLIED: Final = "SpecApplied"
    INVALID_SPEC: Final = "InvalidSpec"
    RESTORE_SAVEPOINT_NOT_READY: Final = "RestoreSavepointNotReady"
    EMPTY_STATE_REFUSED: Final = "EmptyStateRefused"
    NO_SAVEPOINT: Final = "NoSavepoint"
    WORKLOAD_RESTORED: Final = "WorkloadRestored"
    JOB_NOT_READY: Final = "JobNotReady"
    # StreamApp: suspend and resume
    SUSPENDING: Final = "Suspending"
    SUSPENDED: Final = "Suspended"
    RESUMED: Final = "Resumed"
    # StreamApp: its savepoints
    SAVEPOINT_REQUESTED: Final = "SavepointRequested"
    PERIODIC_SAVEPOINT: Final = "PeriodicSavepoint"
    RETENTION_APPLIED: Final = "RetentionApplied"
    # StreamApp: deletion
    FINAL_SAVEPOINT: Final = "FinalSavepoint"
    FINAL_SAVEPOINT_COMPLETED: Final = "FinalSavepointCompleted"
    FINAL_SAVEPOINT_FAILED: Final = "FinalSavepointFailed"
    NO_FINAL_SAVEPOINT: Final = "NoFinalSavepoint"
    # Savepoint (and a StreamApp's gating savepoint)
    SAVEPOINT_TRIGGERED: Final = "SavepointTriggered"
    SAVEPOINT_COMPLETED: Final = "SavepointCompleted"
    SAVEPOINT_ATTEMPT_FAILED: Final = "SavepointAttemptFailed"
    SAVEPOINT_FAILED: Final = "SavepointFailed"
    SAVEPOINT_ABANDONED: Final = "SavepointAbandoned"
    DISPOSING: Final = "Disposing"


# --------------------------------------------------------------------------- Savepoint

SavepointReason = Literal["manual", "upgrade", "periodic", "suspend", "delete"]


class SpReason:
    """`Savepoint.spec.reason` values (who asked for it, and why)."""

    MANUAL: Final = "manual"
    UPGRADE: Final = "upgrade"
    PERIODIC: Final = "periodic"
    SUSPEND: Final = "suspend"
    DELETE: Final = "delete"


SavepointPhase = Literal["Pending", "InProgress", "Completed", "Failed", "Abandoned"]


class SpPhase:
    """`Savepoint.status.phase` values."""

    PENDING: Final = "Pending"
    IN_PROGRESS: Final = "InProgress"
    COMPLETED: Final = "Completed"
    FAILED: Final = "Failed"
    ABANDONED: Final = "Abandoned"


SAVEPOINT_PHASES: Final[tuple[SavepointPhase, ...]] = get_args(SavepointPhase)
SAVEPOINT_OPEN: Final[frozenset[SavepointPhase]] = frozenset({SpPhase.PENDING, SpPhase.IN_PROGRESS})
"""Still being worked on: the operator polls these."""
SAVEPOINT_TERMINAL: Final[frozenset[SavepointPhase]] = frozenset(
    {SpPhase.COMPLETED, SpPhase.FAILED, SpPhase.ABANDONED}
)
"""Final: nothing changes a Savepoint in these phases any more (but its deletion)."""
SAVEPOINT_UNUSABLE: Final[frozenset[SavepointPhase]] = frozenset(
    {SpPhase.FAILED, SpPhase.ABANDONED}
)
"""Final without data: nothing can be restored from these."""


def savepoint_phase(text: object) -> SavepointPhase:
    """A stored `status.phase` as the typed value (unset = Pending). The CRD's enum keeps
    any other value out of the API server, so anything else here is a bug, named."""
    value = str(text or SpPhase.PENDING)
    for phase in SAVEPOINT_PHASES:
        if phase == value:
            return phase
    raise ValueError(f"unknown Savepoint phase {value!r} (expected one of {SAVEPOINT_PHASES})")


# --------------------------------------------------------------------------- the outside world
# Words of Kubernetes and of the engine's control API (docs/CONTRACTS.md) that the
# operator reads; it never writes them.


POD_INDEX_LABEL: Final = "apps.kubernetes.io/pod-index"
"""The StatefulSet controller's label on each pod: its ordinal, i.e. the worker index."""

KAFKA_BOOTSTRAP_ENV: Final = "REWIND_KAFKA_BOOTSTRAP"
"""The engine's variable for the Kafka brokers of the exchange (and its connectors)."""


class PodPhase:
    """Kubernetes Pod phases."""

    PENDING: Final = "Pending"
    RUNNING: Final = "Running"
    SUCCEEDED: Final = "Succeeded"
    FAILED: Final = "Failed"


CRASH_LOOP_BACK_OFF: Final = "CrashLoopBackOff"
"""The kubelet's waiting reason for a container that keeps crashing."""
PREFLIGHT_UNCHECKED_EXIT: Final = 3
"""Exit code of the engine's `rewind run --preflight` that could not read the snapshot
(storage down or hanging): no verdict on the new version (docs/CONTRACTS.md)."""
IMAGE_PROBLEMS: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
)
"""Waiting reasons that say the image cannot be had: a pod waiting so will not start."""


class EngineState:
    """The engine's job states (`GET /status`, field `state`)."""

    RUNNING: Final = "RUNNING"
    STOPPING: Final = "STOPPING"
    FAILED: Final = "FAILED"


class TriggerStatus:
    """The engine's savepoint trigger states (`GET /savepoints/{id}`, field `status`)."""

    IN_PROGRESS: Final = "IN_PROGRESS"
    COMPLETED: Final = "COMPLETED"
    FAILED: Final = "FAILED"
