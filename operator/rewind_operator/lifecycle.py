"""The StreamApp lifecycle, declared: where an app can be, and every allowed move.

An app is at rest (no operation in flight) or in one stage of one operation: the pair
(`status.operation.kind`, `.stage`) is its `State`. Each reconcile, `decide` looks at
the observation, names what it saw as an `On`, and moves along the one edge declared for
(state, on); the edge says where the app goes and which phase it shows. The upgrade
path in savepoint mode:

    rest --UPGRADE_WITH_PREFLIGHT--> upgrade/preflight --PREFLIGHT_FAILED--> upgrade/refused
                                        |  PREFLIGHT_PASSED                      (until the
                                        v                                         spec changes)
    rest --UPGRADE_WITH_SAVEPOINT--> upgrade/savepoint --SAVEPOINT_COMPLETED--> upgrade/deploying
                                        |  SAVEPOINT_FAILED                         |  READY -> rest
                                        v                                           |  ROLLING_BACK
                                     upgrade/blocked --RETRY_DUE--> upgrade/savepoint   v
                                                                               rollback/deploying

The preflight (`spec.preflight`, modes that keep state) runs the new image in a pod that
restores the app's newest snapshot and exits; only if it passes is the running version
stopped.

What must stay true:
1. `EDGES` is the whole machine: `step` refuses an undeclared (state, on), and `decide`
   checks that the operation it wrote is the edge's target, so code and table cannot
   drift apart (tests walk every edge, and a grid of observations finds no other).
2. The phase is chosen in one place, `phase_of`, from the edge; `None` in the table
   means the phase stays what it was (readiness is the Ready condition's business: a
   running job that stops being ready is still `Running`, a failed one stays `Failed`
   until it is ready or rolled back).
3. A failed gating savepoint never leaves the upgrade or suspend path with the job
   stopped: its only edges go to `blocked` with the phase `Running`.
4. A failed preflight never touches the running version: its only edge goes to
   `refused` with the phase `Running`, which only a new spec (generation) leaves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from rewind_operator.models import Operation
from rewind_operator.vocabulary import (
    AppPhase,
    Kind,
    OperationKind,
    OperationStage,
    Phase,
    SavepointReason,
    SpReason,
    Stage,
)


@dataclass(frozen=True)
class State:
    """Where an app is: at rest (both None) or in `stage` of operation `kind`."""

    kind: OperationKind | None = None
    stage: OperationStage | None = None

    def __str__(self) -> str:
        return "rest" if self.kind is None else f"{self.kind}/{self.stage}"


def state_of(op: Operation | None) -> State:
    """The state an app whose `status.operation` is `op` is in."""
    return REST if op is None else State(op.kind, op.stage)


REST = State()
DEPLOY = State(Kind.DEPLOY, Stage.DEPLOYING)
UPGRADE_PREFLIGHT = State(Kind.UPGRADE, Stage.PREFLIGHT)
UPGRADE_REFUSED = State(Kind.UPGRADE, Stage.REFUSED)
UPGRADE_SAVEPOINT = State(Kind.UPGRADE, Stage.SAVEPOINT)
UPGRADE_BLOCKED = State(Kind.UPGRADE, Stage.BLOCKED)
UPGRADE_DEPLOYING = State(Kind.UPGRADE, Stage.DEPLOYING)
ROLLBACK = State(Kind.ROLLBACK, Stage.DEPLOYING)
SUSPEND_SAVEPOINT = State(Kind.SUSPEND, Stage.SAVEPOINT)
SUSPEND_BLOCKED = State(Kind.SUSPEND, Stage.BLOCKED)
SUSPEND_STOPPING = State(Kind.SUSPEND, Stage.DEPLOYING)
RESUME = State(Kind.RESUME, Stage.DEPLOYING)
REDEPLOY = State(Kind.REDEPLOY, Stage.DEPLOYING)

STATES = (
    REST,
    DEPLOY,
    UPGRADE_PREFLIGHT,
    UPGRADE_REFUSED,
    UPGRADE_SAVEPOINT,
    UPGRADE_BLOCKED,
    UPGRADE_DEPLOYING,
    ROLLBACK,
    SUSPEND_SAVEPOINT,
    SUSPEND_BLOCKED,
    SUSPEND_STOPPING,
    RESUME,
    REDEPLOY,
)

GATE_REASON: dict[OperationKind, SavepointReason] = {
    Kind.UPGRADE: SpReason.UPGRADE,
    Kind.SUSPEND: SpReason.SUSPEND,
}
"""Operations that can wait for a stop-with-savepoint, and the reason of that savepoint."""


class On(enum.StrEnum):
    """What the observation says, as far as the lifecycle cares."""

    # at rest: what the spec asks for, compared with what runs
    FIRST_START = "first start"
    RESTORE_NOT_READY = "the savepoint to restore from is not ready"
    EMPTY_STATE_REFUSED = "state exists but none is named"
    SUSPENDED_BEFORE_START = "suspended before the first start"
    UPGRADE_WITH_PREFLIGHT = "an upgrade that keeps state, checked by a preflight first"
    UPGRADE_WITH_SAVEPOINT = "an upgrade, the job can take a savepoint"
    UPGRADE_WITHOUT_SAVEPOINT = "an upgrade that restarts from a checkpoint or empty"
    SUSPEND_WITH_SAVEPOINT = "a suspend, the job can take a savepoint"
    SUSPEND_WITHOUT_SAVEPOINT = "a suspend without savepoint"
    STILL_SUSPENDED = "suspended, and wanted so"
    RESUME_WANTED = "a resume"
    REDEPLOY_WANTED = "a redeploy from a chosen savepoint"
    READY = "the workload is ready"
    NOT_READY = "the workload is not ready"
    # waiting for the preflight pod, and refused after it failed
    PREFLIGHT_PENDING = "the preflight pod has not finished yet"
    PREFLIGHT_PASSED = "the new version restores the state; the job can take a savepoint"
    PREFLIGHT_PASSED_NO_SAVEPOINT = "the new version restores the state; no savepoint first"
    PREFLIGHT_FAILED = "the new version cannot restore the state (or did not start)"
    PREFLIGHT_INCONCLUSIVE = "the preflight could not check (storage, time); savepoint first"
    PREFLIGHT_INCONCLUSIVE_NO_SAVEPOINT = "the preflight could not check; no savepoint first"
    STILL_REFUSED = "the spec is still the one the preflight refused"
    SPEC_CHANGED = "the spec changed since the operation began"
    # waiting for the gating savepoint
    SAVEPOINT_PENDING = "the savepoint is not done yet"
    SAVEPOINT_COMPLETED = "the savepoint completed"
    SAVEPOINT_FAILED = "the savepoint failed or was abandoned"
    # blocked after a failed gating savepoint
    RETRY_NOT_DUE = "the retry is not due yet"
    RETRY_DUE = "the retry is due"
    NOT_WANTED = "the spec no longer asks for the operation"
    # waiting for a new workload to be ready
    WAITING = "not ready yet, within the readiness timeout"
    ROLLING_BACK = "crashed or timed out, and a stable spec to roll back to"
    FAILED = "crashed or timed out, nothing to roll back to"
    # waiting for the engine to stop (suspend)
    STOPPING = "the engine is still running"
    STOPPED = "the engine is stopped"
    # at any time
    INVALID_SPEC = "the spec is invalid, a version is deployed"
    INVALID_SPEC_NOTHING_DEPLOYED = "the spec is invalid, nothing deployed"
    DELETING = "the app is being deleted"


class Edge(NamedTuple):
    """One allowed move: from `src`, on `on`, to `dst`, showing `phase` (None: unchanged)."""

    src: State
    on: On
    dst: State
    phase: AppPhase | None


_P = Phase
EDGES: tuple[Edge, ...] = (
    # ---- upgrade, first the restore preflight (a pod of the new version, nothing stops)
    Edge(REST, On.UPGRADE_WITH_PREFLIGHT, UPGRADE_PREFLIGHT, _P.UPGRADING),
    Edge(UPGRADE_PREFLIGHT, On.PREFLIGHT_PENDING, UPGRADE_PREFLIGHT, _P.UPGRADING),
    Edge(UPGRADE_PREFLIGHT, On.PREFLIGHT_PASSED, UPGRADE_SAVEPOINT, _P.UPGRADING),
    Edge(UPGRADE_PREFLIGHT, On.PREFLIGHT_PASSED_NO_SAVEPOINT, UPGRADE_DEPLOYING, _P.UPGRADING),
    Edge(UPGRADE_PREFLIGHT, On.PREFLIGHT_FAILED, UPGRADE_REFUSED, _P.RUNNING),
    # storage down or hanging, or no answer in time: no verdict, the upgrade goes on as
    # without a preflight (a failing savepoint still leaves the running version running)
    Edge(UPGRADE_PREFLIGHT, On.PREFLIGHT_INCONCLUSIVE, UPGRADE_SAVEPOINT, _P.UPGRADING),
    Edge(
        UPGRADE_PREFLIGHT, On.PREFLIGHT_INCONCLUSIVE_NO_SAVEPOINT, UPGRADE_DEPLOYING, _P.UPGRADING
    ),
    Edge(UPGRADE_PREFLIGHT, On.SPEC_CHANGED, REST, None),
    Edge(UPGRADE_REFUSED, On.STILL_REFUSED, UPGRADE_REFUSED, _P.RUNNING),
    Edge(UPGRADE_REFUSED, On.SPEC_CHANGED, REST, None),
    # ---- upgrade (savepoint mode: stop with a savepoint, start the new version from it)
    Edge(REST, On.UPGRADE_WITH_SAVEPOINT, UPGRADE_SAVEPOINT, _P.UPGRADING),
    Edge(REST, On.UPGRADE_WITHOUT_SAVEPOINT, UPGRADE_DEPLOYING, _P.UPGRADING),
    Edge(UPGRADE_SAVEPOINT, On.SAVEPOINT_PENDING, UPGRADE_SAVEPOINT, _P.UPGRADING),
    Edge(UPGRADE_SAVEPOINT, On.SAVEPOINT_COMPLETED, UPGRADE_DEPLOYING, _P.UPGRADING),
    Edge(UPGRADE_SAVEPOINT, On.SAVEPOINT_FAILED, UPGRADE_BLOCKED, _P.RUNNING),
    Edge(UPGRADE_BLOCKED, On.RETRY_NOT_DUE, UPGRADE_BLOCKED, _P.RUNNING),
    Edge(UPGRADE_BLOCKED, On.RETRY_DUE, UPGRADE_SAVEPOINT, _P.UPGRADING),
    Edge(UPGRADE_BLOCKED, On.NOT_WANTED, REST, None),
    Edge(UPGRADE_DEPLOYING, On.READY, REST, _P.RUNNING),
    Edge(UPGRADE_DEPLOYING, On.WAITING, UPGRADE_DEPLOYING, None),
    Edge(UPGRADE_DEPLOYING, On.ROLLING_BACK, ROLLBACK, _P.ROLLING_BACK),
    Edge(UPGRADE_DEPLOYING, On.FAILED, UPGRADE_DEPLOYING, _P.FAILED),
    # ---- rollback (to the last stable spec, from the savepoint the upgrade used)
    Edge(ROLLBACK, On.READY, REST, _P.RUNNING),
    Edge(ROLLBACK, On.WAITING, ROLLBACK, None),
    Edge(ROLLBACK, On.FAILED, ROLLBACK, _P.FAILED),
    # ---- first start
    Edge(REST, On.FIRST_START, DEPLOY, _P.DEPLOYING),
    Edge(REST, On.RESTORE_NOT_READY, REST, _P.PENDING),
    Edge(REST, On.EMPTY_STATE_REFUSED, REST, _P.PENDING),
    Edge(REST, On.SUSPENDED_BEFORE_START, REST, _P.SUSPENDED),
    Edge(DEPLOY, On.READY, REST, _P.RUNNING),
    Edge(DEPLOY, On.WAITING, DEPLOY, None),
    Edge(DEPLOY, On.FAILED, DEPLOY, _P.FAILED),
    # ---- at rest
    Edge(REST, On.READY, REST, _P.RUNNING),
    Edge(REST, On.NOT_READY, REST, None),
    # ---- suspend (savepoint mode: stop with a savepoint, then scale to zero) and resume
    Edge(REST, On.SUSPEND_WITH_SAVEPOINT, SUSPEND_SAVEPOINT, _P.SUSPENDING),
    Edge(REST, On.SUSPEND_WITHOUT_SAVEPOINT, SUSPEND_STOPPING, _P.SUSPENDING),
    Edge(SUSPEND_SAVEPOINT, On.SAVEPOINT_PENDING, SUSPEND_SAVEPOINT, _P.SUSPENDING),
    Edge(SUSPEND_SAVEPOINT, On.SAVEPOINT_COMPLETED, SUSPEND_STOPPING, _P.SUSPENDING),
    Edge(SUSPEND_SAVEPOINT, On.SAVEPOINT_FAILED, SUSPEND_BLOCKED, _P.RUNNING),
    Edge(SUSPEND_BLOCKED, On.RETRY_NOT_DUE, SUSPEND_BLOCKED, _P.RUNNING),
    Edge(SUSPEND_BLOCKED, On.RETRY_DUE, SUSPEND_SAVEPOINT, _P.SUSPENDING),
    Edge(SUSPEND_BLOCKED, On.NOT_WANTED, REST, None),
    Edge(SUSPEND_STOPPING, On.STOPPING, SUSPEND_STOPPING, _P.SUSPENDING),
    Edge(SUSPEND_STOPPING, On.STOPPED, REST, _P.SUSPENDED),
    Edge(REST, On.STILL_SUSPENDED, REST, _P.SUSPENDED),
    Edge(REST, On.RESUME_WANTED, RESUME, _P.DEPLOYING),
    Edge(RESUME, On.READY, REST, _P.RUNNING),
    Edge(RESUME, On.WAITING, RESUME, None),
    Edge(RESUME, On.FAILED, RESUME, _P.FAILED),
    # ---- redeploy (restore.redeployNonce: restart from a chosen savepoint)
    Edge(REST, On.REDEPLOY_WANTED, REDEPLOY, _P.DEPLOYING),
    Edge(REDEPLOY, On.READY, REST, _P.RUNNING),
    Edge(REDEPLOY, On.WAITING, REDEPLOY, None),
    Edge(REDEPLOY, On.ROLLING_BACK, ROLLBACK, _P.ROLLING_BACK),
    Edge(REDEPLOY, On.FAILED, REDEPLOY, _P.FAILED),
    # ---- an invalid spec: nothing moves (what was in flight went first); deletion
    Edge(REST, On.INVALID_SPEC_NOTHING_DEPLOYED, REST, _P.FAILED),
    *(Edge(state, On.INVALID_SPEC, state, None) for state in STATES),
    *(Edge(state, On.DELETING, state, _P.DELETING) for state in STATES),
)

_TABLE: dict[tuple[State, On], Edge] = {(edge.src, edge.on): edge for edge in EDGES}
assert len(_TABLE) == len(EDGES), "two edges for one (state, on)"


class UndeclaredTransition(RuntimeError):
    """`decide` tried a move the lifecycle does not declare (a bug in the operator)."""


def step(state: State, on: On) -> Edge:
    """The declared edge from `state` on `on`; raises UndeclaredTransition if none."""
    edge = _TABLE.get((state, on))
    if edge is None:
        raise UndeclaredTransition(f"no edge from {state} on {on.name} ({on.value})")
    return edge


def phase_of(state: State, on: On, previous: AppPhase) -> AppPhase:
    """The phase an app shows after moving from `state` on `on` (the only place a
    phase is chosen)."""
    phase = step(state, on).phase
    return previous if phase is None else phase


def check_reached(expected: State, op: Operation | None) -> None:
    """The operation `decide` wrote is the state the last edge led to."""
    found = state_of(op)
    if found != expected:
        raise UndeclaredTransition(f"the lifecycle is at {expected}, the operation says {found}")
