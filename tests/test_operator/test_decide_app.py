"""`decide` for StreamApps: every phase with every observation, and whole stories.

The stories run `decide` against a small simulated world (Deployment, pods, Savepoints)
and round-trip the status through JSON at every step, as the API server would: the
status is the operator's only memory, so a fresh `decide` on the stored status is the
same as an operator restarted at that point.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from rewind_operator.actions import (
    ApplyWorkload,
    CreateSavepoint,
    DeleteSavepoint,
)
from rewind_operator.changes import Change, classify
from rewind_operator.conditions import condition
from rewind_operator.decide import decide
from rewind_operator.models import StreamAppSpec, StreamAppStatus
from rewind_operator.observed import AppObserved
from rewind_operator.policy import savepoint_name
from rewind_operator.retention import retention_victims

from tests.test_operator.appworld import (
    OBSERVATIONS,
    POLICY,
    T0,
    UID,
    Story,
    cond,
    cond_of,
    events,
    make_app,
    of_type,
    roundtrip,
    running_story,
    sp_obs,
    spec,
)

# --------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, Change.IGNORE),
        ({"image": "post-analytics:v2"}, Change.UPGRADE),
        ({"parallelism": 2}, Change.UPGRADE),
        ({"args": ["--x"]}, Change.UPGRADE),
        ({"env": [{"name": "A", "value": "1"}]}, Change.UPGRADE),
        ({"restartNonce": 1}, Change.UPGRADE),
        ({"snapshots": {"checkpointInterval": "5s"}}, Change.UPGRADE),
        ({"snapshots": {"savepointInterval": "1h"}}, Change.NO_RESTART),
        ({"snapshots": {"retain": {"count": 3}}}, Change.NO_RESTART),
        ({"rollback": {"enabled": False}}, Change.NO_RESTART),
        ({"upgradeMode": "stateless"}, Change.IGNORE),
        ({"restore": {"savepoint": "x"}}, Change.IGNORE),
        ({"restore": {"redeployNonce": 2}}, Change.REDEPLOY),
        ({"restore": {"redeployNonce": 2}, "image": "v2"}, Change.REDEPLOY),
        ({"snapshots": {"savepointInterval": "1h"}, "image": "v2"}, Change.UPGRADE),
        ({"podTemplate": {"metadata": {"labels": {"a": "b"}}}}, Change.UPGRADE),
    ],
)
def test_classify(overrides: dict[str, Any], expected: Change) -> None:
    old = StreamAppSpec.model_validate(spec())
    new = StreamAppSpec.model_validate(spec(**overrides))
    assert classify(old, new) == expected


def test_classification_order() -> None:
    assert Change.IGNORE < Change.NO_RESTART < Change.UPGRADE < Change.REDEPLOY


# --------------------------------------------------------------------------- first deploy


def test_first_deploy_applies_workload_and_waits_for_ready() -> None:
    story = Story()
    d = story.step()
    [apply] = of_type(d, ApplyWorkload)
    assert apply.restore is None and apply.replicas == 1
    assert d.status.phase == "Deploying"
    assert d.status.operation is not None and d.status.operation.stage == "deploying"
    assert cond(d, "Progressing") == ("True", "Deploying")
    # the pod appears but is not ready yet: still deploying, nothing new applied
    story.world.pods = [replace(story.world.pods[0], ready=False)]
    d = story.step()
    assert d.status.phase == "Deploying"
    story.world.pods = [replace(story.world.pods[0], ready=True)]
    d = story.step()
    assert d.status.phase == "Running"
    assert cond(d, "Ready") == ("True", "JobRunning")
    assert d.status.last_stable_spec is not None
    assert d.status.image == "post-analytics:v1"
    assert ("Normal", "Deployed") in story.log


def test_first_deploy_from_named_savepoint_waits_until_it_completes() -> None:
    story = Story(spec_data=spec(restore={"savepoint": "other-sp"}))
    d = story.step(savepoints=False)
    assert d.status.phase == "Pending" and not of_type(d, ApplyWorkload)
    assert cond(d, "Ready") == ("False", "RestoreSavepointNotReady")
    story.world.savepoints["other-sp"] = sp_obs("other-sp", "InProgress", app="other")
    d = story.step(savepoints=False)
    assert not of_type(d, ApplyWorkload)
    story.world.savepoints["other-sp"] = sp_obs("other-sp", "Completed", app="other")
    d = story.step()
    [apply] = of_type(d, ApplyWorkload)
    assert apply.restore == "s3://bucket/apps/pa/savepoints/ns/other-sp/"


def test_first_deploy_from_failed_savepoint_is_refused() -> None:
    story = Story(spec_data=spec(restore={"savepoint": "bad"}))
    story.world.savepoints["bad"] = sp_obs("bad", "Failed")
    d = story.step(savepoints=False)
    assert not of_type(d, ApplyWorkload)
    assert "Failed" in (condition(d.status, "Ready") or pytest.fail()).message


def test_empty_state_guard_points_at_the_newest_state() -> None:
    story = Story()
    for name, age in [("pa-old", 9000), ("pa-newest", 60), ("pa-mid", 600)]:
        story.world.savepoints[name] = sp_obs(name, "Completed", reason="periodic", age=age)
    story.world.stored = (
        "s3://bucket/apps/pa/checkpoints/j1/chk-9",
        "s3://bucket/apps/pa/checkpoints/j1/chk-4",
    )
    ready = condition(story.step(savepoints=False).status, "Ready")
    assert ready is not None
    assert "spec.restore.savepoint: pa-newest" in ready.message
    assert "spec.restore.path: latest" in ready.message and "chk-9" in ready.message
    assert "pa-old" not in ready.message


def test_first_deploy_from_path() -> None:
    story = Story(spec_data=spec(restore={"path": "latest"}))
    [apply] = of_type(story.step(), ApplyWorkload)
    assert apply.restore == "latest"


@pytest.mark.parametrize("where", ["resources", "storage"])
def test_empty_state_guard_refuses_and_says_how_to_override(where: str) -> None:
    story = Story()
    if where == "resources":
        story.world.savepoints["pa-periodic-x"] = sp_obs(
            "pa-periodic-x", "Completed", reason="periodic"
        )
    else:
        story.world.stored = ("s3://bucket/apps/pa/checkpoints/j1/chk-4",)
    d = story.step(savepoints=False)
    assert not of_type(d, ApplyWorkload)
    assert d.status.phase == "Pending"
    ready = condition(d.status, "Ready")
    assert ready is not None and ready.reason == "EmptyStateRefused"
    assert "allowEmptyState" in ready.message and "restore.savepoint" in ready.message
    assert ("Warning", "EmptyStateRefused") in events(d)
    # the event is not repeated on every poll
    assert ("Warning", "EmptyStateRefused") not in events(story.step(savepoints=False))
    story.spec_data = spec(restore={"allowEmptyState": True})
    [apply] = of_type(story.step(), ApplyWorkload)
    assert apply.restore is None


def test_guard_blocks_when_storage_cannot_be_checked() -> None:
    app = make_app()
    d = decide(app, AppObserved(secret_exists=True, storage_error="connect timeout"), T0)
    assert not of_type(d, ApplyWorkload)
    assert cond(d, "Ready") == ("False", "EmptyStateRefused")


def test_stateless_app_skips_the_guard() -> None:
    app = make_app(spec(upgradeMode="stateless"))
    obs = AppObserved(secret_exists=True, stored_snapshots=("s3://x/y",))
    assert of_type(decide(app, obs, T0), ApplyWorkload)


def test_suspended_before_first_start_deploys_nothing() -> None:
    d = decide(make_app(spec(state="suspended")), AppObserved(), T0)
    assert d.status.phase == "Suspended" and not of_type(d, ApplyWorkload)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"restore": {"savepoint": "a", "path": "s3://b/c"}}, "mutually exclusive"),
        ({"parallelism": 8, "maxParallelism": 4}, "exceeds maxParallelism"),
        ({"restore": {"path": "/tmp/x"}}, "not an s3://"),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "duplicate"),
        ({"env": [{"name": "POD_IP", "value": "1"}]}, "POD_IP"),
        ({"snapshots": {"savepointTimeout": "0s"}}, "longer than zero"),
        ({"upgradeMode": "stateless", "restore": {"path": "latest"}}, "contradicts"),
    ],
)
def test_invalid_spec_deploys_nothing(overrides: dict[str, Any], words: str) -> None:
    d = decide(make_app(spec(**overrides)), AppObserved(secret_exists=True), T0)
    assert not of_type(d, ApplyWorkload) and not of_type(d, CreateSavepoint)
    ready = condition(d.status, "Ready")
    assert ready is not None and ready.reason == "InvalidSpec" and words in ready.message
    assert d.status.phase == "Failed"
    assert ("Warning", "InvalidSpec") in events(d)


def test_missing_credentials_secret_is_invalid() -> None:
    d = decide(make_app(), AppObserved(secret_exists=False), T0)
    assert cond(d, "Ready") == ("False", "InvalidSpec")
    assert not of_type(d, ApplyWorkload)


def test_invalid_update_leaves_running_version_alone() -> None:
    story = running_story()
    story.change(parallelism=8, maxParallelism=4)
    d = story.step()
    assert not of_type(d, ApplyWorkload) and not of_type(d, CreateSavepoint)
    assert cond(d, "Ready") == ("False", "InvalidSpec")
    assert d.status.phase == "Running"
    assert "left as it is" in (condition(d.status, "Ready") or pytest.fail()).message


def test_spec_made_invalid_during_stop_savepoint_restarts_the_old_version() -> None:
    story = running_story()
    story.change(image="v2")
    story.step(savepoints=False)  # stop-with-savepoint requested
    story.change(image="v2", parallelism=8, maxParallelism=4)  # now invalid
    story.world.run_savepoints(story.now)  # the job stopped with its savepoint
    d = story.step()
    [apply] = of_type(d, ApplyWorkload)
    assert apply.spec.image == "post-analytics:v1", "the accepted spec runs again"
    assert apply.restore is not None and "upgrade" in apply.restore
    assert cond(d, "Ready") == ("False", "InvalidSpec")


def test_max_parallelism_cannot_change_on_stateful_upgrade() -> None:
    story = running_story(maxParallelism=128)
    story.change(maxParallelism=256)
    d = story.step()
    assert cond(d, "Ready") == ("False", "InvalidSpec")
    assert not of_type(d, CreateSavepoint)


# --------------------------------------------------------------------------- upgrades


def test_upgrade_takes_savepoint_then_deploys_new_image_from_it() -> None:
    story = running_story()
    story.change(image="post-analytics:v2")
    d = story.step(savepoints=False)
    [create] = of_type(d, CreateSavepoint)
    assert create.stop and create.reason == "upgrade"
    assert create.name == savepoint_name("pa", UID, "upgrade", "g2")
    assert not of_type(d, ApplyWorkload), "the old version keeps running until the savepoint"
    assert d.status.phase == "Upgrading"
    assert cond(d, "Progressing") == ("True", "SavepointInProgress")
    d = story.step(savepoints=False)  # savepoint still pending: wait
    assert not of_type(d, ApplyWorkload) and not of_type(d, CreateSavepoint)
    story.world.run_savepoints(story.now)
    d = story.step()
    [apply] = of_type(d, ApplyWorkload)
    assert apply.spec.image == "post-analytics:v2"
    assert apply.restore == f"s3://bucket/apps/pa/savepoints/ns/{create.name}/"
    d = story.step()
    assert d.status.phase == "Running"
    assert d.status.image == "post-analytics:v2"
    assert d.status.last_stable_spec is not None
    assert d.status.last_stable_spec.image == "post-analytics:v2"
    assert d.status.restored_from is not None and d.status.restored_from.name == create.name
    assert ("Normal", "UpgradeSucceeded") in story.log
    assert story.world.created == [create.name]


def test_last_state_upgrade_restores_latest_checkpoint_without_savepoint() -> None:
    story = running_story(upgradeMode="last-state")
    story.change(image="v2")
    d = story.step()
    assert not of_type(d, CreateSavepoint)
    [apply] = of_type(d, ApplyWorkload)
    assert apply.restore == "latest"


def test_stateless_upgrade_starts_empty() -> None:
    story = running_story(upgradeMode="stateless")
    story.change(image="v2")
    [apply] = of_type(story.step(), ApplyWorkload)
    assert apply.restore is None


def test_no_restart_change_is_applied_without_touching_the_job() -> None:
    story = running_story()
    story.change(snapshots={"savepointInterval": "1h"})
    d = story.step()
    assert not of_type(d, ApplyWorkload) and not of_type(d, CreateSavepoint)
    assert d.status.last_reconciled_spec is not None
    assert d.status.last_reconciled_spec.snapshots.savepoint_interval == "1h"
    assert ("Normal", "SpecApplied") in events(d)
    assert d.status.phase == "Running"


def test_failed_upgrade_savepoint_keeps_old_version_and_retries_later() -> None:
    story = running_story()
    story.world.storage_down = True
    story.change(image="v2")
    story.step()  # creates the savepoint; the world fails it
    d = story.step()
    assert not of_type(d, ApplyWorkload)
    assert d.status.phase == "Running"
    progressing = condition(d.status, "Progressing")
    assert progressing is not None and progressing.status == "False"
    assert progressing.reason == "SavepointFailed" and "keeps running" in progressing.message
    assert cond(d, "Ready") == ("True", "JobRunning")
    assert d.status.operation is not None and d.status.operation.stage == "blocked"
    assert ("Warning", "SavepointFailed") in events(d)
    # before the retry delay nothing new is tried
    d = story.step(10)
    assert not of_type(d, CreateSavepoint)
    # storage is back; after the delay a new attempt with a new name, then the upgrade
    story.world.storage_down = False
    d = story.step(30)
    [create] = of_type(d, CreateSavepoint)
    assert create.name == savepoint_name("pa", UID, "upgrade", "g2", attempt=1)
    story.settle(3)
    assert story.status.phase == "Running" and story.status.image == "v2"
    assert [img for img, _ in story.world.images_started] == ["post-analytics:v1", "v2"]


def test_blocked_upgrade_is_cancelled_when_spec_is_reverted() -> None:
    story = running_story()
    story.world.storage_down = True
    story.change(image="v2")
    story.step()
    story.step()
    assert story.status.operation is not None and story.status.operation.stage == "blocked"
    story.change(image="post-analytics:v1")
    d = story.step()
    assert story.status.operation is None
    assert ("Normal", "OperationCancelled") in events(d)
    assert not of_type(d, CreateSavepoint) and not of_type(d, ApplyWorkload)


def test_new_version_not_ready_is_rolled_back_from_the_same_savepoint() -> None:
    story = running_story()
    story.change(image="v2")
    story.settle(3)
    assert story.status.image == "v2"
    story.world.broken_images.add("v3")
    story.change(image="v3")
    story.settle(4)
    started = story.world.images_started
    assert [img for img, _ in started] == ["post-analytics:v1", "v2", "v3", "v2"]
    assert started[-1][1] == started[-2][1], "rollback restores the savepoint v3 started from"
    st = story.status
    assert st.phase == "Running" and st.image == "v2"
    degraded = condition(st, "Degraded")
    assert degraded is not None and degraded.reason == "RolledBack" and "v3" in degraded.message
    assert ("Warning", "RollingBack") in story.log and ("Normal", "RolledBack") in story.log
    # the rolled back spec is not retried on its own...
    before = len(started)
    story.settle(3)
    assert len(story.world.images_started) == before
    assert len([n for n in story.world.created if "-g3-" in n]) == 1
    # ...but a new spec is
    story.change(image="v4")
    story.settle(3)
    assert story.status.image == "v4"
    assert condition(story.status, "Degraded") is not None
    assert cond_of(story.status, "Degraded") == ("False", "Healthy")


def test_slow_new_version_rolls_back_after_readiness_timeout() -> None:
    story = running_story()
    story.change(image="v2")
    story.step()  # savepoint
    d = story.step()  # deploy v2
    assert of_type(d, ApplyWorkload)
    story.world.pods = [replace(p, ready=False) for p in story.world.pods]  # slow, not crashing
    d = story.step(30)
    assert d.status.phase == "Upgrading" and not of_type(d, ApplyWorkload)
    d = story.step(31)
    [apply] = of_type(d, ApplyWorkload)
    assert apply.spec.image == "post-analytics:v1"
    assert d.status.phase == "RollingBack"


def test_a_first_crash_loop_back_off_waits_for_crash_restarts_before_rolling_back() -> None:
    """The kubelet backs off after the first crash; the chart's `crashRestarts` (3 by
    default) is what counts as crashing, so one restart is no reason to roll back yet."""
    story = running_story()
    story.change(image="v2")
    story.step()  # savepoint
    assert of_type(story.step(), ApplyWorkload)  # deploy v2
    once = [replace(p, ready=False, restarts=1, waiting_reason="CrashLoopBackOff") for p in
            story.world.pods]  # fmt: skip
    story.world.pods = once
    d = story.step(5)
    assert d.status.phase == "Upgrading" and not of_type(d, ApplyWorkload)
    story.world.pods = [replace(p, restarts=3) for p in once]
    d = story.step(5)
    [apply] = of_type(d, ApplyWorkload)
    assert apply.spec.image == "post-analytics:v1" and d.status.phase == "RollingBack"


def test_no_rollback_when_disabled_reports_failed() -> None:
    story = running_story(rollback={"enabled": False, "readinessTimeout": "60s"})
    story.world.broken_images.add("v3")
    story.change(image="v3")
    story.settle(3)
    assert story.status.phase == "Failed"
    assert cond_of(story.status, "Progressing") == ("False", "DeployFailed")
    assert [img for img, _ in story.world.images_started][-1] == "v3"
    assert story.log.count(("Warning", "DeployFailed")) == 1


def test_failed_rollback_reports_failed() -> None:
    story = running_story()
    story.change(image="v2")
    story.step()
    story.step()
    story.world.broken_images.update({"v2", "post-analytics:v1"})
    story.world.pods = [replace(p, ready=False, restarts=9) for p in story.world.pods]
    story.settle(3)
    assert story.status.phase == "Failed"
    assert "rollback" in (condition(story.status, "Progressing") or pytest.fail()).message


def test_upgrade_of_unready_app_uses_latest_checkpoint() -> None:
    story = running_story()
    story.world.pods = [replace(p, ready=False) for p in story.world.pods]
    story.change(image="v2")
    d = story.step()
    assert not of_type(d, CreateSavepoint)
    [apply] = of_type(d, ApplyWorkload)
    assert apply.restore == "latest"


def test_redeploy_nonce_restarts_from_named_savepoint_without_new_savepoint() -> None:
    story = running_story()
    story.world.savepoints["launch"] = sp_obs("launch", "Completed", reason="manual", age=3600)
    story.change(restore={"savepoint": "launch", "redeployNonce": 1})
    d = story.step()
    assert not of_type(d, CreateSavepoint)
    [apply] = of_type(d, ApplyWorkload)
    assert apply.restore == "s3://bucket/apps/pa/savepoints/ns/launch/"
    story.settle(2)
    assert story.status.restored_from is not None
    assert story.status.restored_from.name == "launch"
    assert ("Normal", "Redeployed") in story.log


def test_redeploy_nonce_without_any_savepoint_says_so() -> None:
    story = running_story()
    story.change(restore={"redeployNonce": 1})
    d = story.step()
    assert not of_type(d, ApplyWorkload)
    assert cond(d, "Progressing") == ("False", "NoSavepoint")


def test_restart_nonce_goes_through_a_savepoint() -> None:
    story = running_story()
    story.change(restartNonce=1)
    assert of_type(story.step(), CreateSavepoint)


# --------------------------------------------------------------------------- restarts


def test_operator_restarted_at_every_step_of_an_upgrade_takes_one_savepoint() -> None:
    """At each step the operator 'dies' after acting but before writing its status,
    then starts over from the last status it did write; the upgrade finishes once."""
    story = running_story()
    story.change(image="v2")
    for _ in range(12):
        app = make_app(story.spec_data, story.status, story.generation)
        story.now += timedelta(seconds=1)
        lost = decide(app, story.world.observed(), story.now, POLICY)
        story.world.apply(lost, story.now)  # acted, but the status write is lost
        story.world.run_savepoints(story.now)
        story.step()  # the restarted operator, from the old status
    assert story.status.phase == "Running" and story.status.image == "v2"
    assert len([n for n in story.world.created if "upgrade" in n]) == 1
    images = [img for img, _ in story.world.images_started]
    assert images == ["post-analytics:v1", "v2"]


@pytest.mark.parametrize("stage", ["savepoint-pending", "savepoint-done", "deploying", "ready"])
def test_operator_restarted_mid_upgrade_carries_on(stage: str) -> None:
    story = running_story()
    story.change(image="v2")
    story.step(savepoints=False)
    if stage != "savepoint-pending":
        story.world.run_savepoints(story.now)
    if stage in ("deploying", "ready"):
        story.step()
    if stage == "ready":
        story.world.pods = [replace(p, ready=True) for p in story.world.pods]
    # a new operator process: only the stored status and the world remain
    story.status = StreamAppStatus.model_validate(story.status.dump())
    story.settle(4)
    assert story.status.phase == "Running" and story.status.image == "v2"
    assert len([n for n in story.world.created if "upgrade" in n]) == 1
    assert [img for img, _ in story.world.images_started] == ["post-analytics:v1", "v2"]


# --------------------------------------------------------------------------- suspend


def test_suspend_takes_savepoint_scales_to_zero_and_resumes_from_it() -> None:
    story = running_story()
    story.change(state="suspended")
    d = story.step()
    [create] = of_type(d, CreateSavepoint)
    assert create.reason == "suspend" and create.stop
    d = story.step()
    [apply] = of_type(d, ApplyWorkload)
    assert apply.replicas == 0
    story.world.pods = []
    d = story.step()
    assert d.status.phase == "Suspended"
    assert cond(d, "Ready") == ("False", "Suspended")
    story.change(state="running")
    d = story.step()
    [apply] = of_type(d, ApplyWorkload)
    assert apply.replicas == 1
    assert apply.restore == f"s3://bucket/apps/pa/savepoints/ns/{create.name}/"
    story.settle(2)
    assert story.status.phase == "Running"
    assert ("Normal", "Resumed") in story.log


def test_suspend_with_failed_savepoint_keeps_running() -> None:
    story = running_story()
    story.world.storage_down = True
    story.change(state="suspended")
    story.settle(3)
    assert story.status.phase == "Running"
    assert cond_of(story.status, "Progressing") == ("False", "SavepointFailed")
    assert story.world.deployment is not None and story.world.deployment.replicas == 1


def test_stateless_suspend_scales_down_without_savepoint() -> None:
    story = running_story(upgradeMode="stateless")
    story.change(state="suspended")
    d = story.step()
    assert not of_type(d, CreateSavepoint)
    assert [a.replicas for a in of_type(d, ApplyWorkload)] == [0]


def test_changes_while_suspended_are_applied_at_resume() -> None:
    story = running_story()
    story.change(state="suspended")
    story.settle(4)
    story.world.pods = []
    story.settle(1)
    assert story.status.phase == "Suspended"
    story.change(image="v2")
    d = story.step()
    assert not of_type(d, ApplyWorkload) and d.status.phase == "Suspended"
    story.change(state="running")
    [apply] = of_type(story.step(), ApplyWorkload)
    assert apply.spec.image == "v2"


# --------------------------------------------------------------------------- periodic + retention


def test_periodic_savepoints_on_interval() -> None:
    story = running_story(snapshots={"savepointInterval": "60s"})
    assert not of_type(story.step(10), CreateSavepoint)
    [create] = of_type(story.step(60), CreateSavepoint)
    assert create.reason == "periodic" and not create.stop and create.dispose_on_delete
    assert not of_type(story.step(10), CreateSavepoint)
    assert of_type(story.step(60), CreateSavepoint)


def test_no_periodic_savepoint_while_one_is_in_progress() -> None:
    story = running_story(snapshots={"savepointInterval": "60s"})
    story.step(61, savepoints=False)
    assert not of_type(story.step(61, savepoints=False), CreateSavepoint)


def test_retention_by_count_never_deletes_the_restored_one() -> None:
    sps = [sp_obs(f"p{i}", "Completed", reason="periodic", age=100 * (10 - i)) for i in range(6)]
    victims = retention_victims(sps, count=2, max_age=None, protected={"p0"}, now=T0)
    assert victims == ["p1", "p2", "p3"]


def test_retention_by_age_and_failed_ones() -> None:
    sps = [
        sp_obs("old", "Completed", reason="periodic", age=7200),
        sp_obs("failed", "Failed", reason="periodic", age=3000),
        sp_obs("new", "Completed", reason="periodic", age=10),
        sp_obs("manual", "Completed", reason="manual", age=9999),
        sp_obs("upgrade", "Completed", reason="upgrade", age=9999),
    ]
    victims = retention_victims(
        sps, count=None, max_age=timedelta(hours=1), protected=set(), now=T0
    )
    assert victims == ["old", "failed"]


def test_retention_removes_failed_attempts_the_operator_made_once_a_newer_one_completed() -> None:
    sps = [
        sp_obs("up-try-1", "Failed", reason="upgrade", age=600),
        sp_obs("suspend-gone", "Abandoned", reason="suspend", age=500),
        sp_obs("mine", "Failed", reason="manual", age=400),
        sp_obs("up-try-2", "Completed", reason="upgrade", age=300),
        sp_obs("up-later", "Failed", reason="upgrade", age=100),  # newer than any success
    ]
    victims = retention_victims(sps, count=5, max_age=None, protected=set(), now=T0)
    assert victims == ["up-try-1", "suspend-gone"]


def test_retention_never_deletes_the_newest_even_if_old() -> None:
    sps = [sp_obs("only", "Completed", reason="periodic", age=99999)]
    assert (
        retention_victims(sps, count=None, max_age=timedelta(hours=1), protected=set(), now=T0)
        == []
    )


def test_retention_deletes_through_resources() -> None:
    story = running_story(snapshots={"retain": {"count": 1}})
    for i in range(3):
        name = f"pa-periodic-{i}"
        story.world.savepoints[name] = sp_obs(name, "Completed", reason="periodic", age=100 - i)
    d = story.step()
    assert sorted(a.name for a in of_type(d, DeleteSavepoint)) == ["pa-periodic-0", "pa-periodic-1"]
    assert ("Normal", "RetentionApplied") in events(d)


# --------------------------------------------------------------------------- delete


def test_delete_without_final_savepoint_finalizes_at_once() -> None:
    story = running_story()
    app = make_app(story.spec_data, story.status, story.generation, deleting=True)
    d = decide(app, story.world.observed(), story.now)
    assert d.finalize and not of_type(d, CreateSavepoint)


def test_delete_with_final_savepoint_waits_for_it() -> None:
    story = running_story(savepointOnDelete=True)
    app = make_app(story.spec_data, story.status, story.generation, deleting=True)
    d = decide(app, story.world.observed(), story.now)
    [create] = of_type(d, CreateSavepoint)
    assert create.reason == "delete" and create.stop and not d.finalize
    story.world.apply(d, story.now)
    d = decide(app, story.world.observed(), story.now)
    assert not d.finalize and not of_type(d, CreateSavepoint)
    story.world.run_savepoints(story.now)
    d = decide(app, story.world.observed(), story.now)
    assert d.finalize
    assert ("Normal", "FinalSavepointCompleted") in events(d)


def test_delete_with_failed_final_savepoint_still_deletes() -> None:
    story = running_story(savepointOnDelete=True)
    story.world.storage_down = True
    app = make_app(story.spec_data, story.status, story.generation, deleting=True)
    d = decide(app, story.world.observed(), story.now)
    story.world.apply(d, story.now)
    story.world.run_savepoints(story.now)
    d = decide(app, story.world.observed(), story.now)
    assert d.finalize and ("Warning", "FinalSavepointFailed") in events(d)


# --------------------------------------------------------------------------- phase x observation


def _status_in(phase: str) -> tuple[Story, StreamAppStatus]:
    story = running_story()
    if phase == "Upgrading":
        story.change(image="v2")
        story.step(savepoints=False)
    elif phase == "Deploying":
        story = Story()
        story.step()
        story.world.pods = [replace(p, ready=False) for p in story.world.pods]
    elif phase == "RollingBack":
        story.world.broken_images.add("v3")
        story.change(image="v3")
        story.step()
        story.step()
        story.step()
    elif phase == "Suspending":
        story.change(state="suspended")
        story.step(savepoints=False)
    elif phase == "Suspended":
        story.change(state="suspended")
        story.settle(3)
        story.world.pods = []
        story.step()
    elif phase == "Blocked":
        story.world.storage_down = True
        story.change(image="v2")
        story.step()
        story.step()
    assert story.status.phase == {"Blocked": "Running"}.get(phase, phase), story.status.phase
    return story, story.status


PHASES = ["Running", "Deploying", "Upgrading", "RollingBack", "Suspending", "Suspended", "Blocked"]


@pytest.mark.parametrize(("phase", "observation"), list(itertools.product(PHASES, OBSERVATIONS)))
def test_every_phase_with_every_observation(phase: str, observation: str) -> None:
    """Whatever is observed, decide returns a well-formed status, never loses its
    memory of the running spec, never deploys two workloads, and is idempotent."""
    story, status = _status_in(phase)
    world = OBSERVATIONS[observation](replace(story.world))
    app = make_app(story.spec_data, status, story.generation)
    now = story.now + timedelta(seconds=5)
    d1 = decide(app, world.observed(), now, POLICY)
    d2 = decide(app, world.observed(), now, POLICY)
    assert d1 == d2, "decide must be a pure function"
    st = roundtrip(d1.status)
    assert st.last_reconciled_spec is not None
    assert len(of_type(d1, ApplyWorkload)) <= 1
    assert {c.type for c in st.conditions} >= {"Progressing"}
    assert st.observed_generation == story.generation
    assert st.phase in {
        "Pending",
        "Deploying",
        "Running",
        "Upgrading",
        "RollingBack",
        "Suspending",
        "Suspended",
        "Failed",
    }
    if st.operation is not None:
        assert st.phase != "Suspended"
        if st.operation.stage == "savepoint":
            assert st.operation.savepoint is not None
    for apply in of_type(d1, ApplyWorkload):
        assert apply.replicas in (0, 1)
        if phase == "Suspended":
            assert apply.replicas == 0 or observation == "nothing"
    # a failed gating savepoint never takes the running version down
    if observation == "savepoints-failed" and phase in ("Upgrading", "Suspending"):
        assert not of_type(d1, ApplyWorkload)
        assert cond(d1, "Progressing") == ("False", "SavepointFailed")
    # applying the decision and deciding again converges (no flip-flopping workloads)
    world.apply(d1, now)
    d3 = decide(make_app(story.spec_data, st, story.generation), world.observed(), now, POLICY)
    hashes = {a.workload_hash for a in of_type(d1, ApplyWorkload)}
    assert all(a.workload_hash in hashes for a in of_type(d3, ApplyWorkload)) or not hashes


def test_secret_values_never_enter_the_decision() -> None:
    story = running_story()
    story.change(env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    story.settle(3)
    text = story.status.model_dump_json()
    assert "s3-creds" in text  # the secret's name is fine
    assert "AWS_SECRET_ACCESS_KEY=" not in text
