"""The kopf glue, and the only module that imports kopf.

kopf event or timer -> fresh object from the API -> observe -> decide -> act -> status.
Handlers are thin and return nothing (kopf would store return values in the status);
the status is written explicitly from the pydantic model, and only when it changed.

What must stay true:
- kopf's event loop never blocks, and apps never share threads: every handler awaits its
  reconcile in the app's own lane (`lanes`; a Savepoint's in the lane of its app), so one
  app whose storage or engine hangs delays no other app;
- one reconcile per object at a time (a lock per object: an object's change handlers
  and timers may run concurrently in its app's lane);
- every reconcile starts from the object as the API server has it now, never from a
  cached body, so a status written a moment ago is never overwritten by an older one;
- a failing reconcile raises, kopf retries it, and nothing is written half-way.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import structlog

from rewind_operator import act, k8s, logs, metrics, observe
from rewind_operator.actions import TriggerSavepoint
from rewind_operator.decide import decide
from rewind_operator.decide_savepoint import decide_savepoint, fold_trigger
from rewind_operator.lanes import Lanes, app_key
from rewind_operator.models import GROUP, VERSION, Savepoint, StreamApp
from rewind_operator.settings import Settings, from_env
from rewind_operator.vocabulary import (
    APP_KIND,
    SAVEPOINT_KIND,
    SAVEPOINT_TERMINAL,
    TRUE,
    Cond,
    Phase,
)

SETTINGS: Settings = from_env()
POLICY = SETTINGS.policy()
FINALIZER = "rewind.dev/finalizer"

log = structlog.get_logger("rewind_operator.handlers")

_locks: dict[tuple[str, str, str], threading.Lock] = {}
_locks_guard = threading.Lock()
_last_full: dict[tuple[str, str], float] = {}
_app_lanes = Lanes("app", SETTINGS.reconcile.app_threads)


def _lock(kind: str, namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((kind, namespace, name), threading.Lock())


def _key(kwargs: Mapping[str, Any]) -> tuple[str, str]:
    return str(kwargs["namespace"]), str(kwargs["name"])


def _now() -> datetime:
    return datetime.now(UTC)


async def _in_lane(namespace: str, app: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in the app's lane and await it (kopf's context variables go along)."""
    lane = _app_lanes.get(app_key(namespace, app))
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(lane.executor, call)


def _app_of(kwargs: Mapping[str, Any]) -> str:
    """The StreamApp a Savepoint belongs to (its lane)."""
    return str((kwargs["body"].get("spec") or {}).get("app") or "")


# --------------------------------------------------------------------------- StreamApp


def reconcile_app(namespace: str, name: str) -> bool:
    """One observe -> decide -> act -> status round; True when the app may be finalized."""
    logs.bind(app=name, namespace=namespace)
    with _lock("app", namespace, name):
        raw = k8s.get_object(k8s.APPS, namespace, name)
        if raw is None:
            metrics.set_phase(namespace, name, None)
            return True
        app = StreamApp.model_validate(raw)
        observed = observe.observe_app(app, SETTINGS)
        decision = decide(app, observed, _now(), POLICY)
        act.execute(APP_KIND, app.metadata, decision.actions, SETTINGS, name)
        new_status = decision.status.model_dump(by_alias=True, mode="json")
        if new_status != app.status.model_dump(by_alias=True, mode="json"):
            try:
                k8s.patch_status(k8s.APPS, namespace, name, new_status)
            except k8s.NotFound:
                return True
        metrics.set_phase(namespace, name, decision.status.phase)
        metrics.RECONCILES.labels(kind=APP_KIND, result="ok").inc()
        _last_full[(namespace, name)] = time.monotonic()
        return decision.finalize


def _busy(body: Mapping[str, Any]) -> bool:
    status = body.get("status") or {}
    if status.get("operation"):
        return True
    if status.get("phase") not in (Phase.RUNNING, Phase.SUSPENDED):
        return True
    ready: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == Cond.READY), {}
    )
    return status.get("phase") == Phase.RUNNING and ready.get("status") != TRUE


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf's own bookkeeping in annotations (our status is ours), and the servers."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="rewind.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="rewind.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events tell the story
    settings.execution.max_workers = 8
    metrics.serve(SETTINGS.server.metrics_host, SETTINGS.server.metrics_port)
    log.info(
        "operator_started",
        watch_namespaces=list(SETTINGS.watch_namespaces) or "all",
        resync_interval_s=SETTINGS.reconcile.resync_interval_s,
    )


@kopf.on.resume(GROUP, VERSION, "streamapps")
@kopf.on.create(GROUP, VERSION, "streamapps")
@kopf.on.update(GROUP, VERSION, "streamapps", field="spec")
async def app_changed(**kwargs: Any) -> None:
    """A StreamApp appeared, changed its spec, or the operator (re)started."""
    namespace, name = _key(kwargs)
    await _in_lane(namespace, name, reconcile_app, namespace, name)


@kopf.timer(GROUP, VERSION, "streamapps", interval=SETTINGS.reconcile.busy_interval_s)
async def app_timer(**kwargs: Any) -> None:
    """Poll: often while something is in flight, every resync interval otherwise."""
    namespace, name = _key(kwargs)
    body: Mapping[str, Any] = kwargs["body"]
    last = _last_full.get((namespace, name), 0.0)
    idle_for = time.monotonic() - last
    if not _busy(body) and idle_for < SETTINGS.reconcile.resync_interval_s:
        return
    await _in_lane(namespace, name, reconcile_app, namespace, name)


@kopf.on.delete(GROUP, VERSION, "streamapps", field="spec.savepointOnDelete", value=True)
async def app_deleted(**kwargs: Any) -> None:
    """Hold the deletion until the final savepoint is done (kopf's finalizer)."""
    namespace, name = _key(kwargs)
    if not await _in_lane(namespace, name, reconcile_app, namespace, name):
        raise kopf.TemporaryError(
            "waiting for the final savepoint", delay=SETTINGS.reconcile.busy_interval_s
        )
    metrics.set_phase(namespace, name, None)


@kopf.on.delete(GROUP, VERSION, "streamapps", optional=True)
def app_gone(**kwargs: Any) -> None:
    """Any app deleted (no finalizer for this one): drop it from the phase gauge."""
    namespace, name = _key(kwargs)
    metrics.set_phase(namespace, name, None)
    _app_lanes.drop(app_key(namespace, name))


# --------------------------------------------------------------------------- Savepoint


def reconcile_savepoint(namespace: str, name: str) -> bool:
    """One round for a Savepoint; True when it may be finalized."""
    logs.bind(namespace=namespace, savepoint=name)
    with _lock("savepoint", namespace, name):
        raw = k8s.get_object(k8s.SAVEPOINTS, namespace, name)
        if raw is None:
            return True
        sp = Savepoint.model_validate(raw)
        logs.bind(namespace=namespace, savepoint=name, app=sp.spec.app)
        observed = observe.observe_savepoint(sp, SETTINGS)
        now = _now()
        decision = decide_savepoint(sp, observed, now, POLICY)
        outcome = act.execute(SAVEPOINT_KIND, sp.metadata, decision.actions, SETTINGS, sp.spec.app)
        status = decision.status
        if any(isinstance(a, TriggerSavepoint) for a in decision.actions):
            status = fold_trigger(
                status,
                outcome.trigger_id,
                outcome.trigger_error,
                now=now,
                limit=sp.spec.backoff_limit,
                policy=POLICY,
            )
        before = sp.status.phase
        new_status = status.model_dump(by_alias=True, mode="json")
        if new_status != sp.status.model_dump(by_alias=True, mode="json") and not decision.finalize:
            try:
                k8s.patch_status(k8s.SAVEPOINTS, namespace, name, new_status)
            except k8s.NotFound:
                return True
        metrics.RECONCILES.labels(kind=SAVEPOINT_KIND, result="ok").inc()
        if status.phase != before and status.phase in SAVEPOINT_TERMINAL:
            metrics.savepoint_finished(
                sp.spec.reason, status.phase.lower(), status.triggered_at, status.completed_at
            )
            _nudge(lambda: reconcile_app(namespace, sp.spec.app))
        return decision.finalize


def _nudge(fn: Callable[[], Any]) -> None:
    """Let the app react to its savepoint now rather than at its next poll."""
    try:
        fn()
    except Exception as exc:  # the app's own timer will retry; this was only a shortcut
        log.warning("app_nudge_failed", error=str(exc))


@kopf.on.resume(GROUP, VERSION, "savepoints")
@kopf.on.create(GROUP, VERSION, "savepoints")
async def savepoint_created(**kwargs: Any) -> None:
    """A Savepoint was created (or the operator restarted): start working on it."""
    namespace, name = _key(kwargs)
    await _in_lane(namespace, _app_of(kwargs), reconcile_savepoint, namespace, name)


def _savepoint_open(**kwargs: Any) -> bool:
    phase = (kwargs.get("status") or {}).get("phase")
    return phase not in SAVEPOINT_TERMINAL


@kopf.timer(
    GROUP,
    VERSION,
    "savepoints",
    interval=SETTINGS.reconcile.savepoint_poll_s,
    when=_savepoint_open,
)
async def savepoint_timer(**kwargs: Any) -> None:
    """Poll a savepoint until it reaches a final phase."""
    namespace, name = _key(kwargs)
    body: Mapping[str, Any] = kwargs["body"]
    phase = (body.get("status") or {}).get("phase")
    if phase in SAVEPOINT_TERMINAL:
        return
    await _in_lane(namespace, _app_of(kwargs), reconcile_savepoint, namespace, name)


@kopf.on.delete(GROUP, VERSION, "savepoints", field="spec.disposeOnDelete", value=True)
async def savepoint_deleted(**kwargs: Any) -> None:
    """Dispose of the data before the resource goes (kopf's finalizer)."""
    namespace, name = _key(kwargs)
    try:
        done = await _in_lane(namespace, _app_of(kwargs), reconcile_savepoint, namespace, name)
    except Exception as exc:
        raise kopf.TemporaryError(f"could not dispose of the data: {exc}", delay=10) from exc
    if not done:
        raise kopf.TemporaryError("not ready to dispose yet", delay=5)


# --------------------------------------------------------------------------- run


def run() -> None:
    """Run the operator until it is stopped (SIGTERM/SIGINT)."""
    server = SETTINGS.server
    liveness = (
        f"http://{server.health_host}:{server.health_port}/healthz" if server.health_port else None
    )
    namespaces = list(SETTINGS.watch_namespaces)
    if namespaces:
        kopf.run(standalone=True, namespaces=namespaces, liveness_endpoint=liveness)
    else:
        kopf.run(standalone=True, clusterwide=True, liveness_endpoint=liveness)
