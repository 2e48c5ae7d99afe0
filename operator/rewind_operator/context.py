"""One StreamApp reconcile in progress (`Ctx`), and the `Decision` it ends in.

The machine's steps (`decide`, `deletion`, `retention`) read the app and the observation
from the context and write the status and actions into it; nothing in it does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rewind_operator import lifecycle
from rewind_operator.actions import (
    Action,
    ApplyWorkload,
    CreateSavepoint,
    DeletePreflight,
    EmitEvent,
    RunPreflight,
)
from rewind_operator.conditions import condition, set_condition
from rewind_operator.lifecycle import Edge, On, State
from rewind_operator.models import (
    StreamApp,
    StreamAppSpec,
    StreamAppStatus,
)
from rewind_operator.observed import AppObserved
from rewind_operator.policy import Policy
from rewind_operator.queries import is_ready
from rewind_operator.strategy import Strategy, strategy_for
from rewind_operator.vocabulary import (
    ConditionStatus,
    ConditionType,
    EventType,
    SavepointReason,
    UpgradeMode,
)
from rewind_operator.workload import workload_hash

# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """What to do for a StreamApp, and the status to write afterwards."""

    actions: tuple[Action, ...]
    status: StreamAppStatus
    finalize: bool = False
    """Deletion only: the app may go (remove the finalizer) once the actions succeeded."""
    transitions: tuple[Edge, ...] = ()
    """The lifecycle edges this reconcile moved along, in order (for tests and logs)."""


def app_meta(app: StreamApp) -> tuple[str, str, str, int]:
    md = app.metadata
    return (
        str(md.get("name", "")),
        str(md.get("namespace", "")),
        str(md.get("uid", "")),
        int(md.get("generation") or 0),
    )


@dataclass
class Ctx:
    """One reconcile in progress: inputs, and the decision being built."""

    app: StreamApp
    observed: AppObserved
    now: datetime
    policy: Policy
    name: str
    namespace: str
    uid: str
    generation: int
    status: StreamAppStatus
    state: State
    """Where the app is in the lifecycle: where it started, then each edge's target."""
    actions: list[Action] = field(default_factory=list)
    transitions: list[Edge] = field(default_factory=list)

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type_, reason, message))

    def cond(
        self, type_: ConditionType, status: ConditionStatus, reason: str, message: str
    ) -> None:
        self.status.conditions = set_condition(
            self.status.conditions,
            type_,
            status,
            reason,
            message,
            now=self.now,
            generation=self.generation,
        )

    def reason_of(self, type_: ConditionType) -> str | None:
        found = condition(self.status, type_)
        return found.reason if found else None

    @property
    def mode(self) -> UpgradeMode:
        """The app's upgrade mode, or the operator's default."""
        return self.app.spec.upgrade_mode or self.policy.default_upgrade_mode

    @property
    def strategy(self) -> Strategy:
        """What the app's upgrade mode does (`strategy.STRATEGIES`)."""
        return strategy_for(self.mode)

    def go(self, on: On) -> Edge:
        """Move along the declared edge for what was observed; it sets the phase."""
        edge = lifecycle.step(self.state, on)
        self.status.phase = lifecycle.phase_of(self.state, on, self.status.phase)
        self.transitions.append(edge)
        self.state = edge.dst
        return edge

    def done(self, *, finalize: bool = False) -> Decision:
        """The decision, once the operation written matches where the lifecycle is."""
        lifecycle.check_reached(self.state, self.status.operation)
        return Decision(tuple(self.actions), self.status, finalize, tuple(self.transitions))

    def apply(self, spec: StreamAppSpec, restore: str | None, replicas: int) -> str:
        """Apply the workload of `spec`: running (`replicas` 1: one pod per worker) or
        scaled to zero (0)."""
        sa = self.policy.engine_service_account
        digest = workload_hash(self.name, spec, restore, sa)
        pods = spec.workers if replicas else 0
        self.actions.append(ApplyWorkload(spec, restore, pods, digest, sa))
        return digest

    def run_preflight(self, name: str, spec: StreamAppSpec) -> None:
        self.actions.append(RunPreflight(name, spec, self.policy.engine_service_account))

    def delete_preflight(self, name: str) -> None:
        self.actions.append(DeletePreflight(name))

    def create_savepoint(
        self, name: str, reason: SavepointReason, *, stop: bool, dispose: bool = False
    ) -> None:
        self.actions.append(CreateSavepoint(name, reason, stop=stop, dispose_on_delete=dispose))


def running_spec(st: StreamAppStatus) -> StreamAppSpec:
    assert st.last_reconciled_spec is not None, "only called once something was deployed"
    return st.last_reconciled_spec


def running_workers(ctx: Ctx) -> int:
    """The number of workers of the version that runs (or is about to)."""
    return (ctx.status.last_reconciled_spec or ctx.app.spec).workers


def current_ready(ctx: Ctx) -> bool:
    return is_ready(ctx.observed, ctx.status.workload_hash, running_workers(ctx))
