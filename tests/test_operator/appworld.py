"""A simulated StreamApp world for `decide` tests: specs, observations, and a `Story`
that runs the operator loop against a fake cluster (Deployment, pods, Savepoints),
round-tripping the status through JSON at every step as the API server would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rewind_operator.actions import (
    ApplyWorkload,
    CreateSavepoint,
    DeletePreflight,
    DeleteSavepoint,
    EmitEvent,
    RunPreflight,
)
from rewind_operator.conditions import condition
from rewind_operator.context import Decision
from rewind_operator.decide import decide
from rewind_operator.models import StreamApp, StreamAppStatus
from rewind_operator.observed import (
    AppObserved,
    DeploymentObs,
    EngineObs,
    PodObs,
    PreflightObs,
    SavepointObs,
    WorkerReport,
)
from rewind_operator.settings import DEFAULT_POLICY

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
UID = "0123456789abcdef"
POLICY = replace(DEFAULT_POLICY, upgrade_retry_delay=timedelta(seconds=30))


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "image": "post-analytics:v1",
        "flow": "flow.py",
        "snapshots": {"location": "s3://bucket/apps/pa", "credentialsSecret": "s3-creds"},
        "rollback": {"readinessTimeout": "60s"},
        # The restore preflight has its own tests (test_preflight.py, and the lifecycle
        # grid turns it on); the rest of the machine is tested as it runs without it.
        "preflight": {"enabled": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def make_app(
    spec_data: dict[str, Any] | None = None,
    status: StreamAppStatus | None = None,
    generation: int = 1,
    deleting: bool = False,
) -> StreamApp:
    meta: dict[str, Any] = {
        "name": "pa",
        "namespace": "ns",
        "uid": UID,
        "generation": generation,
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    return StreamApp.model_validate(
        {
            "metadata": meta,
            "spec": spec_data or spec(),
            "status": (status or StreamAppStatus()).dump(),
        }
    )


def roundtrip(status: StreamAppStatus) -> StreamAppStatus:
    """What the API server gives back: JSON, camelCase, no Python objects."""
    return StreamAppStatus.model_validate(status.dump())


def events(decision: Decision) -> list[tuple[str, str]]:
    return [(a.type, a.reason) for a in decision.actions if isinstance(a, EmitEvent)]


def of_type(decision: Decision, kind: type) -> list[Any]:
    return [a for a in decision.actions if isinstance(a, kind)]


def cond(decision: Decision, type_: str) -> tuple[str, str]:
    c = condition(decision.status, type_)
    assert c is not None, f"no {type_} condition"
    return c.status, c.reason


def ready_pod(digest: str, name: str = "pa-engine-1") -> PodObs:
    return PodObs(name=name, workload_hash=digest, ip="127.0.1.2", phase="Running", ready=True)


def sp_obs(
    name: str, phase: str, *, reason: str = "upgrade", age: float = 0, **kw: Any
) -> SavepointObs:
    created = T0 - timedelta(seconds=age)
    done = created + timedelta(seconds=1) if phase == "Completed" else None
    path = kw.pop("path", f"s3://bucket/apps/pa/savepoints/ns/{name}/")
    return SavepointObs(
        name=name,
        app=kw.pop("app", "pa"),
        reason=reason,
        phase=phase,
        created_at=created,
        completed_at=done,
        path=path if phase in ("Completed", "InProgress") else None,
        error=kw.pop("error", "boom" if phase in ("Failed", "Abandoned") else None),
        app_uid=UID,
        **kw,
    )


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """A simulated cluster: what `act` would have done, as `observe` would see it."""

    deployment: DeploymentObs | None = None
    statefulset: DeploymentObs | None = None
    """The StatefulSet of workers; its pods carry their worker index, and worker 0's
    engine reports every ready worker running (`engine`)."""
    restore: str | None = None
    pods: list[PodObs] = field(default_factory=list)
    savepoints: dict[str, SavepointObs] = field(default_factory=dict)
    broken_images: set[str] = field(default_factory=set)
    storage_down: bool = False
    stored: tuple[str, ...] = ()
    created: list[str] = field(default_factory=list)
    images_started: list[tuple[str, str | None]] = field(default_factory=list)
    preflights: dict[str, PreflightObs] = field(default_factory=dict)
    incompatible_images: set[str] = field(default_factory=set)
    """Images whose preflight fails (they cannot read the state)."""
    preflights_started: list[tuple[str, str]] = field(default_factory=list)
    """(pod, image) of every preflight pod created."""

    def engine(self) -> EngineObs | None:
        """Worker 0's control API, for a StatefulSet: every ready worker is RUNNING."""
        leader = next((p for p in self.pods if p.worker == 0 and not p.deleting), None)
        if self.statefulset is None or leader is None:
            return None
        reports = tuple(
            WorkerReport(p.worker, "RUNNING", 10, 10, 0)
            for p in self.pods
            if p.worker is not None and p.ready
        )
        return EngineObs(
            pod=leader.name,
            workload_hash=leader.workload_hash,
            reachable=True,
            ready=leader.ready,
            state="RUNNING",
            workers=reports,
        )

    def observed(self) -> AppObserved:
        return AppObserved(
            deployment=self.deployment,
            statefulset=self.statefulset,
            engine=self.engine(),
            pods=tuple(self.pods),
            savepoints=tuple(self.savepoints.values()),
            secret_exists=True,
            stored_snapshots=self.stored,
            preflights=tuple(self.preflights.values()),
        )

    def apply(self, decision: Decision, now: datetime) -> None:
        for action in decision.actions:
            if isinstance(action, ApplyWorkload):
                self._apply_workload(action)
            elif isinstance(action, CreateSavepoint):
                if action.name not in self.savepoints:
                    self.created.append(action.name)
                    self.savepoints[action.name] = sp_obs(
                        action.name, "Pending", reason=action.reason
                    )
                    self.savepoints[action.name] = replace(
                        self.savepoints[action.name], created_at=now
                    )
            elif isinstance(action, DeleteSavepoint):
                self.savepoints.pop(action.name, None)
            elif isinstance(action, RunPreflight):
                if action.name not in self.preflights:
                    self.preflights[action.name] = PreflightObs(action.name)
                    self.preflights_started.append((action.name, action.spec.image))
            elif isinstance(action, DeletePreflight):
                self.preflights.pop(action.name, None)

    def run_preflights(self) -> None:
        """The kubelet and the engine of every preflight pod, in one step."""
        images = dict(self.preflights_started)
        for name, pod in list(self.preflights.items()):
            if pod.phase not in ("Pending", "Running") or pod.waiting_reason:
                continue
            if images[name] in self.incompatible_images:
                message = "preflight failed: snapshot s3://x/chk-3 holds state for uid(s) count"
                self.preflights[name] = replace(pod, phase="Failed", message=message)
            else:
                message = "restores s3://x/chk-3"
                self.preflights[name] = replace(pod, phase="Succeeded", message=message)

    def _apply_workload(self, action: ApplyWorkload) -> None:
        several = action.spec.workers > 1
        current = self.statefulset if several else self.deployment
        changed = (
            current is None
            or current.workload_hash != action.workload_hash
            or current.replicas != action.replicas
        )
        obj = DeploymentObs(action.workload_hash, action.replicas)
        # act deletes the other kind (a rescale across one worker)
        self.statefulset, self.deployment = (obj, None) if several else (None, obj)
        if not changed:
            return
        self.pods = []
        if not action.replicas:
            return
        self.images_started.append((action.spec.image, action.restore))
        broken = action.spec.image in self.broken_images
        n = len(self.images_started)
        indexes: list[int | None] = list(range(action.replicas)) if several else [None]
        self.pods = [
            PodObs(
                name=f"pa-engine-{n}" if index is None else f"pa-engine-{index}",
                workload_hash=action.workload_hash,
                ip=f"127.0.{n}.{(index or 0) + 1}",
                phase="Running",
                ready=not broken,
                restarts=5 if broken else 0,
                waiting_reason="CrashLoopBackOff" if broken else None,
                worker=index,
            )
            for index in indexes
        ]

    def run_savepoints(self, now: datetime) -> None:
        """The Savepoint controller and the engine, in one step."""
        for name, sp in list(self.savepoints.items()):
            if sp.phase in ("Pending", "InProgress"):
                if self.storage_down:
                    self.savepoints[name] = replace(sp, phase="Failed", error="S3 unreachable")
                else:
                    self.savepoints[name] = replace(
                        sp,
                        phase="Completed",
                        path=f"s3://bucket/apps/pa/savepoints/ns/{name}/",
                        completed_at=now,
                    )
                    if sp.reason in ("upgrade", "suspend", "delete"):  # stop-with-savepoint
                        self.pods = [replace(p, ready=False) for p in self.pods]


@dataclass
class Story:
    """Runs the operator loop: decide on the stored status, act, let the world move."""

    world: World = field(default_factory=World)
    spec_data: dict[str, Any] = field(default_factory=spec)
    generation: int = 1
    status: StreamAppStatus = field(default_factory=StreamAppStatus)
    now: datetime = T0
    log: list[tuple[str, str]] = field(default_factory=list)

    def change(self, **overrides: Any) -> None:
        self.spec_data = spec(**{**self._overrides, **overrides})
        self._overrides = {**self._overrides, **overrides}
        self.generation += 1

    _overrides: dict[str, Any] = field(default_factory=dict)

    def step(
        self, seconds: float = 1, *, savepoints: bool = True, preflights: bool = True
    ) -> Decision:
        self.now += timedelta(seconds=seconds)
        app = make_app(self.spec_data, self.status, self.generation)
        decision = decide(app, self.world.observed(), self.now, POLICY)
        self.world.apply(decision, self.now)
        self.status = roundtrip(decision.status)
        self.log += events(decision)
        if savepoints:
            self.world.run_savepoints(self.now)
        if preflights:
            self.world.run_preflights()
        return decision

    def settle(self, steps: int = 8, seconds: float = 1) -> Decision:
        decision = self.step(seconds)
        for _ in range(steps):
            decision = self.step(seconds)
        return decision


def running_story(**overrides: Any) -> Story:
    story = Story()
    if overrides:
        story.change(**overrides)
    story.settle(3)
    assert story.status.phase == "Running", story.status
    story.log.clear()
    return story


def cond_of(status: StreamAppStatus, type_: str) -> tuple[str, str]:
    c = condition(status, type_)
    assert c is not None
    return c.status, c.reason


# Observations a test can put in front of `decide`: the world as a story left it, changed.
OBSERVATIONS: dict[str, Callable[[World], World]] = {
    "nothing": lambda w: replace(w, deployment=None, pods=[], savepoints={}),
    "deployment-gone": lambda w: replace(w, deployment=None, pods=[]),
    "pods-gone": lambda w: replace(w, pods=[]),
    "pod-not-ready": lambda w: replace(w, pods=[replace(p, ready=False) for p in w.pods]),
    "pod-crashlooping": lambda w: replace(
        w,
        pods=[
            replace(p, ready=False, restarts=7, waiting_reason="CrashLoopBackOff") for p in w.pods
        ],
    ),
    "pod-deleting": lambda w: replace(
        w, pods=[replace(p, deleting=True, ready=False) for p in w.pods]
    ),
    "savepoints-failed": lambda w: replace(
        w, savepoints={k: replace(v, phase="Failed", error="x") for k, v in w.savepoints.items()}
    ),
    "savepoints-deleted": lambda w: replace(w, savepoints={}),
    "preflight-passed": lambda w: replace(
        w,
        preflights={
            k: replace(v, phase="Succeeded", message="restores s3://x/chk-3")
            for k, v in w.preflights.items()
        },
    ),
    "preflight-failed": lambda w: replace(
        w,
        preflights={
            k: replace(v, phase="Failed", message="uid count is gone")
            for k, v in w.preflights.items()
        },
    ),
    "preflight-unchecked": lambda w: replace(
        w,
        preflights={
            k: replace(v, phase="Failed", message="S3 read timeout", exit_code=3)
            for k, v in w.preflights.items()
        },
    ),
    "preflight-image-missing": lambda w: replace(
        w,
        preflights={
            k: replace(v, waiting_reason="ErrImageNeverPull", message="image not present")
            for k, v in w.preflights.items()
        },
    ),
    "preflight-gone": lambda w: replace(w, preflights={}),
    "as-before": lambda w: w,
}
