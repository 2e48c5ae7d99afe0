"""A hung store or engine costs one app a bounded wait, never another app anything:
lanes with deadlines, the operator's storage and engine timeouts, and the words the
conditions use for what does not answer."""

from __future__ import annotations

import contextvars
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from rewind_engine import snapshots
from rewind_engine.snapshots.s3_storage import S3Timeouts
from rewind_engine.snapshots.storage import current_settings
from rewind_operator import engine_client, observe, settings, storage, workload
from rewind_operator.decide_savepoint import decide_savepoint
from rewind_operator.lanes import DeadlineExceeded, Lane, LaneBusy, Lanes
from rewind_operator.observed import SavepointObserved, TriggerObs
from rewind_operator.settings import StorageSettings

from .test_decide_savepoint import POLICY, T0, in_progress, make_sp, running

ENDPOINT = "http://127.0.0.1:9"
SECRET = "s3cr3t-value"
ENV = {
    "AWS_ENDPOINT_URL": ENDPOINT,
    "AWS_ACCESS_KEY_ID": "key-id",
    "AWS_SECRET_ACCESS_KEY": SECRET,
}


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of each test, so no call abandoned by a test outlives it."""
    event = threading.Event()
    yield event
    event.set()


# --------------------------------------------------------------------------- lanes


def test_a_call_answers_within_its_deadline_or_is_abandoned(release: threading.Event) -> None:
    lane = Lane("t", 2)
    assert lane.call(lambda: 42, deadline=5) == 42
    with pytest.raises(DeadlineExceeded, match=r"0\.05s"):
        lane.call(release.wait, deadline=0.05)
    assert lane.in_flight == 1, "the abandoned call still holds its thread"
    release.set()
    lane.executor.submit(lambda: None).result()  # the abandoned call has returned
    assert lane.call(lambda: "free again", deadline=5) == "free again"


def test_a_full_lane_refuses_at_once_and_other_lanes_are_untouched(
    release: threading.Event,
) -> None:
    lanes = Lanes("storage", 1)
    hung = lanes.get("ns/a")
    with pytest.raises(DeadlineExceeded):
        hung.call(release.wait, deadline=0.01)
    with pytest.raises(LaneBusy, match="1 earlier call"):
        hung.call(lambda: "never runs", deadline=60)
    assert lanes.get("ns/b").call(lambda: "b answers", deadline=60) == "b answers"
    assert lanes.get("ns/a") is hung


def test_errors_and_context_go_through_the_lane() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("v", default="unset")
    var.set("the caller's")
    lane = Lane("t", 1)
    assert lane.call(var.get, deadline=5) == "the caller's"

    def boom() -> None:
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        lane.call(boom, deadline=5)
    assert lane.in_flight == 0


# --------------------------------------------------------------------------- storage


def test_the_operator_overlays_its_own_short_timeouts() -> None:
    limits = settings.from_env(
        {"REWIND_STORAGE_READ_TIMEOUT_SECONDS": "3", "REWIND_STORAGE_MAX_ATTEMPTS": "1"}
    ).storage
    assert limits.overlay() == {
        "REWIND_S3_CONNECT_TIMEOUT_SECONDS": "2",
        "REWIND_S3_READ_TIMEOUT_SECONDS": "3",
        "AWS_MAX_ATTEMPTS": "1",
    }
    defaults = StorageSettings()
    engine = S3Timeouts()
    assert defaults.read_timeout_s < engine.read_s and defaults.connect_timeout_s < engine.connect_s


@pytest.mark.parametrize(
    "env",
    [
        {"REWIND_STORAGE_DEADLINE_SECONDS": "0"},
        {"REWIND_STORAGE_CALLS_PER_APP": "0"},
        {"REWIND_STORAGE_MAX_ATTEMPTS": "two"},
        {"REWIND_APP_THREADS": "-1"},
        {"REWIND_ENGINE_CONNECT_TIMEOUT_SECONDS": "-2"},
    ],
)
def test_bad_timeouts_are_refused_naming_the_variable(env: dict[str, str]) -> None:
    [name] = env
    with pytest.raises(ValueError, match=name):
        settings.from_env(env)


def test_the_store_is_named_by_its_endpoint_never_its_secret() -> None:
    assert storage.store_name("s3://b/x", ENV, {}) == f"the object store at {ENDPOINT}"
    assert storage.store_name("s3://b/x", None, {"AWS_ENDPOINT_URL_S3": "http://s3:1"}) == (
        "the object store at http://s3:1"
    )
    assert storage.store_name("s3://b/x", {}, {"AWS_REGION": "eu-west-1"}) == (
        "the object store of AWS S3 (eu-west-1)"
    )
    assert storage.store_name("file:///data/x", ENV, {}) == "the file system at file:///data/x"


def test_a_hung_store_fails_the_call_by_its_deadline_naming_the_endpoint(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    seen: list[dict[str, str]] = []

    def hang(uri: str) -> Any:
        seen.append(current_settings())
        release.wait()
        raise snapshots.NotFoundError(uri)

    monkeypatch.setattr(snapshots, "read_manifest", hang)
    limits = StorageSettings(deadline_s=0.05, calls_per_app=1)
    monkeypatch.setattr(storage, "_lanes", Lanes("storage", 1))
    access = storage.Access("ns/a", ENV, limits)
    uri = "s3://bucket/a/savepoints/ns/sp1/"
    with pytest.raises(storage.StorageProblem) as first:
        storage.manifest_at(uri, access)
    message = str(first.value)
    assert message == f"reading {uri}: the object store at {ENDPOINT} did not answer within 0.05s"
    assert SECRET not in message
    assert seen[0]["REWIND_S3_READ_TIMEOUT_SECONDS"] == "5"  # the operator's own timeouts
    assert seen[0]["AWS_SECRET_ACCESS_KEY"] == SECRET  # the app's credentials, in the call only
    with pytest.raises(storage.StorageProblem, match=r"does not answer \(1 earlier call"):
        storage.manifest_at(uri, access)  # refused at once: the lane is still taken

    monkeypatch.setattr(snapshots, "read_manifest", lambda uri: (_ for _ in ()).throw(
        snapshots.NotFoundError(uri)
    ))  # fmt: skip
    other = storage.Access("ns/b", ENV, limits)
    assert storage.manifest_at(uri, other) is None, "another app's lane answers"


# --------------------------------------------------------------------------- engine calls


def test_an_engine_that_accepts_but_never_answers_fails_by_the_read_timeout() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # the kernel accepts the connection; nobody ever answers
        address = f"127.0.0.1:{server.getsockname()[1]}"
        timeouts = engine_client.Timeouts(connect_s=1, read_s=0.1)
        with pytest.raises(engine_client.EngineError, match=f"GET http://{address}/status"):
            engine_client.status(address, timeouts)


def test_engine_timeouts_come_from_the_settings() -> None:
    s = settings.from_env(
        {"REWIND_ENGINE_CONNECT_TIMEOUT_SECONDS": "1.5", "REWIND_ENGINE_TIMEOUT_SECONDS": "4"}
    )
    assert engine_client.engine_timeouts(s) == engine_client.Timeouts(connect_s=1.5, read_s=4)


# --------------------------------------------------------------------------- conditions


def test_a_timed_out_savepoint_names_the_store_that_does_not_answer() -> None:
    stalled = (
        f"reading s3://bucket/apps/pa/savepoints/ns/sp1/: the object store at {ENDPOINT} "
        "did not answer within 15s"
    )
    observed: SavepointObserved = running(trigger=TriggerObs("IN_PROGRESS"), storage_error=stalled)
    d = decide_savepoint(make_sp(in_progress()), observed, T0 + timedelta(seconds=61), POLICY)
    assert d.status.phase == "Pending" and d.status.failures == 1
    assert d.status.error == f"timed out after 60s; {stalled}"
    quiet = decide_savepoint(
        make_sp(in_progress()),
        running(trigger=TriggerObs("IN_PROGRESS")),
        T0 + timedelta(seconds=61),
    )
    assert quiet.status.error == "timed out after 60s"


def test_a_crash_is_quoted_from_the_termination_message() -> None:
    def pod(message: str) -> dict[str, Any]:
        return {
            "metadata": {"name": "pa-engine-x"},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "restartCount": 1,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {
                            "terminated": {"exitCode": 1, "reason": "Error", "message": message}
                        },
                    }
                ],
            },
        }

    own = "RuntimeError: post_analytics v3 crashes at start"
    assert observe.pod_obs(pod(own + "\n")).message == own
    tail = "\n".join(['{"event": "starting"}', "Traceback (most recent call last):", own])
    joined = f'{{"event": "starting"}} | Traceback (most recent call last): | {own}'
    assert observe.pod_obs(pod(tail)).message == joined
    long_tail = "\n".join(f"line {i}" for i in range(200)) + "\n" + own
    quoted = observe.pod_obs(pod(long_tail)).message or ""
    assert quoted.endswith(own) and quoted.startswith("...") and len(quoted) == 300
    assert observe.pod_obs(pod("")).message == "Error, exit code 1"


def test_the_engine_container_falls_back_to_its_log() -> None:
    from .test_parts import _spec  # noqa: PLC0415 - one spec builder for the operator tests

    dep = workload.deployment("pa", _spec(), None, 1, "rewind-engine")
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_a_dropped_lane_finishes_its_work_and_a_new_one_takes_over() -> None:
    lanes = Lanes("app", 1)
    old = lanes.get("ns/a")
    started, go = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        go.wait()
        return "done"

    running_call = old.executor.submit(slow)
    started.wait()
    lanes.drop("ns/a")
    go.set()
    assert running_call.result() == "done"
    assert lanes.get("ns/a") is not old
