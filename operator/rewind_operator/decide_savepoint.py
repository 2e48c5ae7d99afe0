"""The Savepoint state machine: pure, from (Savepoint, observation, now) to a decision.

    decide_savepoint(sp, observed, now)   -> SavepointDecision(actions, status, finalize)

Pending -> InProgress (triggered through the engine's control API) -> Completed | Failed,
with retries and back-off up to a limit; Abandoned when its app is gone before it ran.
As in `decide`, state advances only on what was observed (the engine or the storage says
the savepoint completed), and no secret value enters a status, an Event or an action.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rewind_operator.actions import Action, DisposeData, EmitEvent, TriggerSavepoint
from rewind_operator.models import Savepoint, SavepointStatus
from rewind_operator.observed import SavepointObserved
from rewind_operator.policy import Policy, savepoint_target
from rewind_operator.settings import DEFAULT_POLICY
from rewind_operator.vocabulary import (
    NORMAL,
    SAVEPOINT_TERMINAL,
    WARNING,
    EngineState,
    EventReason,
    EventType,
    SpPhase,
    TriggerStatus,
)


@dataclass(frozen=True)
class SavepointDecision:
    """What to do for a Savepoint, and the status to write afterwards."""

    actions: tuple[Action, ...]
    status: SavepointStatus
    finalize: bool = False


def _iso(when: datetime | None) -> str:
    return when.isoformat() if when else "?"


def _backoff(failures: int, policy: Policy) -> timedelta:
    delay: timedelta = policy.savepoint_backoff * (2 ** max(failures - 1, 0))
    return min(delay, policy.savepoint_backoff_max)


def _fail(
    st: SavepointStatus, error: str, now: datetime, limit: int, policy: Policy
) -> SavepointStatus:
    """One more failed attempt: Pending with a back-off, or Failed past `limit` retries."""
    failures = st.failures + 1
    final = failures > limit
    return st.model_copy(
        update={
            "phase": SpPhase.FAILED if final else SpPhase.PENDING,
            "error": error,
            "failures": failures,
            "trigger_id": None,
            "next_attempt_at": None if final else now + _backoff(failures, policy),
        }
    )


def _sp_meta(sp: Savepoint) -> tuple[str, str, int]:
    md = sp.metadata
    return str(md.get("name", "")), str(md.get("namespace", "")), int(md.get("generation") or 0)


def decide_savepoint(
    sp: Savepoint, observed: SavepointObserved, now: datetime, policy: Policy = DEFAULT_POLICY
) -> SavepointDecision:
    """The next step for one Savepoint: trigger, poll, retry, complete, dispose."""
    name, namespace, generation = _sp_meta(sp)
    st = sp.status.model_copy(deep=True)
    st.observed_generation = generation
    spec = sp.spec
    events: list[Action] = []

    def event(type_: EventType, reason: str, message: str) -> None:
        events.append(EmitEvent(type_, reason, message))

    if sp.metadata.get("deletionTimestamp"):
        data = spec.path or st.path
        if spec.dispose_on_delete and data:
            secret = observed.app_credentials_secret or st.credentials_secret
            event(NORMAL, EventReason.DISPOSING, f"deleting the savepoint data at {data}")
            return SavepointDecision((*events, DisposeData(data, secret)), st, finalize=True)
        return SavepointDecision((), st, finalize=True)

    if st.phase in SAVEPOINT_TERMINAL:
        return SavepointDecision((), st)

    if observed.app_image and st.image is None:
        st.image = observed.app_image
    if observed.app_credentials_secret and st.credentials_secret is None:
        st.credentials_secret = observed.app_credentials_secret

    def completed(path: str, size: int | None, sources: dict[str, Any] | None) -> SavepointDecision:
        done = st.model_copy(
            update={
                "phase": SpPhase.COMPLETED,
                "path": path,
                "completed_at": now,
                "size_bytes": size,
                "sources": sources,
                "error": None,
                "next_attempt_at": None,
            }
        )
        event(
            NORMAL, EventReason.SAVEPOINT_COMPLETED, f"savepoint of {spec.app} completed at {path}"
        )
        return SavepointDecision(tuple(events), done)

    def failed(error: str) -> SavepointDecision:
        new = _fail(st, error, now, spec.backoff_limit, policy)
        if new.phase == SpPhase.FAILED:
            event(
                WARNING,
                EventReason.SAVEPOINT_FAILED,
                f"{error}; giving up after {new.failures} attempt(s)",
            )
        else:
            event(
                WARNING,
                EventReason.SAVEPOINT_ATTEMPT_FAILED,
                f"{error}; attempt {new.failures} of "
                f"{spec.backoff_limit + 1}, next at {_iso(new.next_attempt_at)}",
            )
        return SavepointDecision(tuple(events), new)

    if spec.path is not None:  # register an existing savepoint
        if observed.corrupt is not None:  # a corrupt copy does not heal: no retries
            error = f"savepoint at {spec.path} is corrupt: {observed.corrupt}"
            event(WARNING, EventReason.SAVEPOINT_FAILED, f"{error}; not retried")
            return SavepointDecision(tuple(events), _fail(st, error, now, 0, policy))
        if observed.manifest is not None:
            m = observed.manifest
            return completed(spec.path, m.size_bytes, m.sources)
        if st.next_attempt_at is not None and now < st.next_attempt_at:
            return SavepointDecision((), st)
        return failed(
            f"no readable savepoint at {spec.path}: {observed.storage_error or 'no manifest.json'}"
        )

    target = (
        savepoint_target(observed.app_location, namespace, name) if observed.app_location else None
    )

    if st.phase == SpPhase.PENDING:
        if observed.manifest is not None and target is not None:
            # Written by an attempt whose answer we never recorded (operator restart):
            # it is complete (the manifest is written last), so adopt it, do not retake it.
            m = observed.manifest
            return completed(target, m.size_bytes, m.sources)
        if not observed.app_exists or target is None:
            st.phase = SpPhase.ABANDONED
            st.error = f"StreamApp {spec.app!r} not found in {namespace}"
            event(WARNING, EventReason.SAVEPOINT_ABANDONED, st.error)
            return SavepointDecision(tuple(events), st)
        if st.next_attempt_at is not None and now < st.next_attempt_at:
            return SavepointDecision((), st)
        if spec.stop and observed.engine_state == EngineState.STOPPING:
            return SavepointDecision((), st)  # a stop we triggered before a restart: wait
        if observed.engine_address is None:
            return failed(f"StreamApp {spec.app!r} has no ready job to take a savepoint of")
        st.phase = SpPhase.IN_PROGRESS
        st.path = target
        st.triggered_at = now
        st.trigger_id = None
        st.next_attempt_at = None
        event(
            NORMAL,
            EventReason.SAVEPOINT_TRIGGERED,
            f"savepoint of {spec.app} triggered, writing to {target}",
        )
        trigger = TriggerSavepoint(observed.engine_address, target, spec.stop, spec.drain)
        return SavepointDecision((*events, trigger), st)

    # InProgress
    if observed.manifest is not None and st.path:
        m = observed.manifest
        return completed(st.path, m.size_bytes, m.sources)
    trig = observed.trigger
    if trig is not None and trig.status == TriggerStatus.COMPLETED:
        return completed(trig.location or st.path or "", trig.size_bytes, trig.sources)
    if trig is not None and trig.status == TriggerStatus.FAILED:
        return failed(f"the engine reported: {trig.error or 'savepoint failed'}")
    timeout = timedelta(seconds=observed.savepoint_timeout_s)
    if st.triggered_at is not None and now - st.triggered_at > timeout:
        stalled = f"; {observed.storage_error}" if observed.storage_error else ""
        return failed(f"timed out after {timeout.total_seconds():g}s{stalled}")
    if st.trigger_id is None:
        return failed("the trigger was not acknowledged by the engine")
    if trig is None and observed.trigger_error is not None and observed.engine_state is None:
        # engine gone (restarted or stopped) and no manifest: the attempt is lost
        return failed(f"lost contact with the engine: {observed.trigger_error}")
    return SavepointDecision((), st)


def fold_trigger(
    st: SavepointStatus,
    trigger_id: str | None,
    error: str | None,
    *,
    now: datetime,
    limit: int,
    policy: Policy = DEFAULT_POLICY,
) -> SavepointStatus:
    """Fold the engine's answer to a trigger into the status `decide_savepoint` wrote."""
    if trigger_id is not None:
        return st.model_copy(update={"trigger_id": trigger_id})
    return _fail(st, f"trigger refused: {error or 'no answer'}", now, limit, policy)
