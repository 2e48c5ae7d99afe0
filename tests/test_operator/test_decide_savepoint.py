"""The Savepoint state machine: every phase with every observation."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rewind_operator.actions import DisposeData, EmitEvent, TriggerSavepoint
from rewind_operator.decide_savepoint import decide_savepoint, fold_trigger
from rewind_operator.models import Savepoint, SavepointStatus
from rewind_operator.observed import ManifestObs, SavepointObserved, TriggerObs
from rewind_operator.policy import savepoint_target
from rewind_operator.settings import DEFAULT_POLICY

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = replace(
    DEFAULT_POLICY,
    savepoint_backoff=timedelta(seconds=2),
    savepoint_backoff_max=timedelta(seconds=10),
)
LOCATION = "s3://bucket/apps/pa"
TARGET = savepoint_target(LOCATION, "ns", "sp1")


def make_sp(
    status: SavepointStatus | None = None, deleting: bool = False, **spec: Any
) -> Savepoint:
    meta: dict[str, Any] = {"name": "sp1", "namespace": "ns", "generation": 1}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    return Savepoint.model_validate(
        {
            "metadata": meta,
            "spec": {"app": "pa", **spec},
            "status": (status or SavepointStatus()).dump(),
        }
    )


def running(**kw: Any) -> SavepointObserved:
    base: dict[str, Any] = {
        "app_exists": True,
        "app_image": "pa:v1",
        "app_location": LOCATION,
        "app_credentials_secret": "s3-creds",
        "savepoint_timeout_s": 60.0,
        "engine_address": "127.0.1.2:8081",
        "engine_state": "RUNNING",
    }
    return SavepointObserved(**{**base, **kw})


def reasons(actions: tuple[Any, ...]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, EmitEvent)]


def in_progress(at: datetime = T0, trigger: str | None = "t1") -> SavepointStatus:
    return SavepointStatus(phase="InProgress", path=TARGET, trigger_id=trigger, triggered_at=at)


def test_target_follows_the_contract() -> None:
    assert TARGET == "s3://bucket/apps/pa/savepoints/ns/sp1/"


def test_pending_triggers_the_engine() -> None:
    d = decide_savepoint(make_sp(stop=True), running(), T0, POLICY)
    [trigger] = [a for a in d.actions if isinstance(a, TriggerSavepoint)]
    assert trigger == TriggerSavepoint("127.0.1.2:8081", TARGET, True, False)
    assert d.status.phase == "InProgress" and d.status.path == TARGET
    assert d.status.triggered_at == T0 and d.status.image == "pa:v1"
    st = fold_trigger(d.status, "abc", None, now=T0, limit=3)
    assert st.trigger_id == "abc" and st.phase == "InProgress"


def test_refused_trigger_counts_as_failure() -> None:
    d = decide_savepoint(make_sp(), running(), T0, POLICY)
    st = fold_trigger(d.status, None, "409 busy", now=T0, limit=3, policy=POLICY)
    assert st.phase == "Pending" and st.failures == 1 and "409 busy" in (st.error or "")
    assert st.next_attempt_at == T0 + timedelta(seconds=2)


def test_poll_until_completed() -> None:
    sp = make_sp(in_progress())
    d = decide_savepoint(
        sp, running(trigger=TriggerObs("IN_PROGRESS")), T0 + timedelta(seconds=5), POLICY
    )
    assert d.status.phase == "InProgress" and not d.actions
    done = TriggerObs("COMPLETED", location=TARGET, size_bytes=1234, sources={"src": {"0": 42}})
    d = decide_savepoint(sp, running(trigger=done), T0 + timedelta(seconds=6), POLICY)
    assert d.status.phase == "Completed"
    assert d.status.size_bytes == 1234 and d.status.sources == {"src": {"0": 42}}
    assert d.status.completed_at == T0 + timedelta(seconds=6)
    assert "SavepointCompleted" in reasons(d.actions)


def test_retries_with_exponential_backoff_then_fails() -> None:
    sp = make_sp(in_progress(), backoffLimit=2)
    now = T0
    delays = []
    for attempt in range(3):
        d = decide_savepoint(
            sp, running(trigger=TriggerObs("FAILED", error="S3 down")), now, POLICY
        )
        if attempt < 2:
            assert d.status.phase == "Pending"
            assert d.status.next_attempt_at is not None
            delays.append((d.status.next_attempt_at - now).total_seconds())
            # nothing happens before the backoff is over
            early = decide_savepoint(make_sp(d.status, backoffLimit=2), running(), now, POLICY)
            assert not early.actions and early.status.phase == "Pending"
            now = d.status.next_attempt_at
            retried = decide_savepoint(make_sp(d.status, backoffLimit=2), running(), now, POLICY)
            assert any(isinstance(a, TriggerSavepoint) for a in retried.actions)
            sp = make_sp(fold_trigger(retried.status, "t", None, now=now, limit=2), backoffLimit=2)
        else:
            assert d.status.phase == "Failed" and d.status.failures == 3
            assert "S3 down" in (d.status.error or "")
            assert "SavepointFailed" in reasons(d.actions)
    assert delays == [2.0, 4.0]


def test_timeout_counts_as_failure() -> None:
    sp = make_sp(in_progress(), backoffLimit=0)
    d = decide_savepoint(
        sp, running(trigger=TriggerObs("IN_PROGRESS")), T0 + timedelta(seconds=61), POLICY
    )
    assert d.status.phase == "Failed" and "timed out" in (d.status.error or "")


def test_app_missing_is_abandoned() -> None:
    d = decide_savepoint(make_sp(), SavepointObserved(app_exists=False), T0, POLICY)
    assert d.status.phase == "Abandoned" and "not found" in (d.status.error or "")


def test_app_without_ready_job_fails_after_retries() -> None:
    d = decide_savepoint(make_sp(backoffLimit=0), running(engine_address=None), T0, POLICY)
    assert d.status.phase == "Failed" and "no ready job" in (d.status.error or "")


def test_manifest_at_target_is_adopted_instead_of_retaken() -> None:
    """An operator that died between POST and status write finds the finished savepoint."""
    d = decide_savepoint(make_sp(), running(manifest=ManifestObs(size_bytes=99)), T0, POLICY)
    assert d.status.phase == "Completed" and d.status.path == TARGET and d.status.size_bytes == 99
    assert not any(isinstance(a, TriggerSavepoint) for a in d.actions)


def test_engine_restart_loses_in_progress_attempt() -> None:
    sp = make_sp(in_progress())
    obs = running(engine_state=None, engine_address=None, trigger_error="connection refused")
    d = decide_savepoint(sp, obs, T0 + timedelta(seconds=3), POLICY)
    assert d.status.phase == "Pending" and d.status.failures == 1


def test_stop_in_progress_after_restart_is_waited_for() -> None:
    d = decide_savepoint(
        make_sp(stop=True), running(engine_state="STOPPING", engine_address=None), T0, POLICY
    )
    assert d.status.phase == "Pending" and not d.actions


def test_register_existing_path() -> None:
    path = "s3://bucket/old/sp-1/"
    d = decide_savepoint(
        make_sp(path=path), SavepointObserved(app_exists=False, manifest=ManifestObs(5)), T0
    )
    assert d.status.phase == "Completed" and d.status.path == path
    d = decide_savepoint(
        make_sp(path=path, backoffLimit=0),
        SavepointObserved(app_exists=False, storage_error="NoSuchKey"),
        T0,
    )
    assert d.status.phase == "Failed" and "NoSuchKey" in (d.status.error or "")


@pytest.mark.parametrize("app_exists", [True, False])
def test_a_corrupt_registered_savepoint_fails_at_once_naming_the_file(app_exists: bool) -> None:
    path = "s3://bucket/copied/sp-1"
    bad = f"{path}/count-0.msgpack has sha256 abc, expected def"
    d = decide_savepoint(
        make_sp(path=path, backoffLimit=3),
        SavepointObserved(app_exists=app_exists, corrupt=bad),
        T0,
    )
    assert d.status.phase == "Failed" and d.status.failures == 1
    assert d.status.error is not None and "count-0.msgpack" in d.status.error
    [event] = [a for a in d.actions if isinstance(a, EmitEvent)]
    assert event.reason == "SavepointFailed" and "count-0.msgpack" in event.message


@pytest.mark.parametrize("app_exists", [True, False])
def test_dispose_on_delete_removes_data_even_without_the_app(app_exists: bool) -> None:
    st = SavepointStatus(phase="Completed", path=TARGET)
    obs = (
        running()
        if app_exists
        else SavepointObserved(app_exists=False, app_credentials_secret="s3-creds")
    )
    d = decide_savepoint(make_sp(st, deleting=True, disposeOnDelete=True), obs, T0)
    assert d.finalize
    assert [a for a in d.actions if isinstance(a, DisposeData)] == [DisposeData(TARGET, "s3-creds")]


def test_delete_without_dispose_keeps_data() -> None:
    st = SavepointStatus(phase="Completed", path=TARGET)
    d = decide_savepoint(make_sp(st, deleting=True), running(), T0)
    assert d.finalize and not any(isinstance(a, DisposeData) for a in d.actions)


PHASES = ["Pending", "InProgress", "Completed", "Failed", "Abandoned"]
OBSERVATIONS: dict[str, SavepointObserved] = {
    "running": running(),
    "app-gone": SavepointObserved(app_exists=False),
    "no-engine": running(engine_address=None, engine_state=None, trigger_error="refused"),
    "stopping": running(engine_state="STOPPING", engine_address=None),
    "trigger-in-progress": running(trigger=TriggerObs("IN_PROGRESS")),
    "trigger-completed": running(trigger=TriggerObs("COMPLETED", location=TARGET, size_bytes=1)),
    "trigger-failed": running(trigger=TriggerObs("FAILED", error="x")),
    "manifest-present": running(manifest=ManifestObs(size_bytes=7)),
    "storage-error": running(storage_error="unreachable"),
}


@pytest.mark.parametrize(
    ("phase", "observation", "deleting"),
    list(itertools.product(PHASES, OBSERVATIONS, [False, True])),
)
def test_every_phase_with_every_observation(phase: str, observation: str, deleting: bool) -> None:
    status = SavepointStatus(phase=phase)  # type: ignore[arg-type]
    if phase == "InProgress":
        status = in_progress()
    if phase == "Completed":
        status = SavepointStatus(phase="Completed", path=TARGET, completed_at=T0)
    sp = make_sp(status, deleting=deleting, disposeOnDelete=True)
    now = T0 + timedelta(seconds=10)
    d = decide_savepoint(sp, OBSERVATIONS[observation], now, POLICY)
    assert d == decide_savepoint(sp, OBSERVATIONS[observation], now, POLICY)
    new = SavepointStatus.model_validate(d.status.dump())
    if deleting:
        assert d.finalize
        return
    assert not d.finalize
    if phase in ("Completed", "Failed", "Abandoned"):
        assert new == status.model_copy(update={"observed_generation": 1}), (
            "final phases stay final"
        )
        assert not d.actions
    allowed = {
        "Pending": {"Pending", "InProgress", "Completed", "Failed", "Abandoned"},
        "InProgress": {"InProgress", "Completed", "Pending", "Failed"},
    }.get(phase, {phase})
    assert new.phase in allowed
    triggers = [a for a in d.actions if isinstance(a, TriggerSavepoint)]
    if triggers:
        assert phase == "Pending" and new.phase == "InProgress"
    if new.phase == "Completed":
        assert new.path and new.completed_at is not None
