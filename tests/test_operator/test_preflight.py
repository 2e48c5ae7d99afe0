"""The restore preflight of an upgrade: decide's stories against the simulated world, and
the preflight pod's manifest."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from rewind_operator.actions import (
    ApplyWorkload,
    CreateSavepoint,
    DeletePreflight,
    RunPreflight,
)
from rewind_operator.decide import decide
from rewind_operator.models import StreamAppSpec
from rewind_operator.vocabulary import PREFLIGHT_UNCHECKED_EXIT
from rewind_operator.workload import PREFLIGHT_LABEL, preflight_job, selector_labels

from tests.test_operator.appworld import (
    POLICY,
    Story,
    cond,
    cond_of,
    events,
    make_app,
    of_type,
    running_story,
    spec,
)

CHECKED: dict[str, Any] = {"preflight": {"enabled": True}}


def upgraded(image: str = "v2", **more: Any) -> Story:
    story = running_story(**{**CHECKED, **more})
    story.change(image=image)
    return story


def test_an_upgrade_begins_with_a_preflight_job_and_the_running_version_untouched() -> None:
    story = upgraded()
    d = story.step(preflights=False)
    runs = of_type(d, RunPreflight)
    assert [(r.name, r.spec.image) for r in runs] == [("pa-preflight-g3", "v2")]
    assert not of_type(d, CreateSavepoint) and not of_type(d, ApplyWorkload)
    assert d.status.phase == "Upgrading"
    assert d.status.operation is not None and d.status.operation.stage == "preflight"
    assert cond(d, "Progressing") == ("True", "PreflightRunning")
    assert cond(d, "Ready") == ("True", "JobRunning")


def test_a_passing_preflight_goes_on_to_the_savepoint_and_the_upgrade_finishes() -> None:
    story = upgraded()
    story.step()
    d = story.step()
    assert not of_type(d, DeletePreflight), "deleted before the pass is in the status"
    assert len(of_type(d, CreateSavepoint)) == 1
    assert ("Normal", "PreflightPassed") in events(d)
    assert story.status.last_preflight is not None and story.status.last_preflight.passed
    assert "chk-3" in story.status.last_preflight.message
    story.settle()
    assert story.status.phase == "Running" and story.status.image == "v2"
    assert not story.world.preflights, "the passed preflight pod was not deleted"
    restores = [restore for image, restore in story.world.images_started if image == "v2"]
    assert restores and "upgrade" in (restores[0] or "")


def test_a_failing_preflight_refuses_the_upgrade_and_v1_runs_on_until_the_spec_changes() -> None:
    story = upgraded("v4")
    story.world.incompatible_images.add("v4")
    story.settle(10)
    st = story.status
    assert st.phase == "Running" and st.image == "post-analytics:v1"
    assert st.operation is not None and st.operation.stage == "refused"
    assert cond_of(st, "Progressing") == ("False", "PreflightFailed")
    assert cond_of(st, "Degraded") == ("True", "PreflightFailed")
    assert cond_of(st, "Ready") == ("True", "JobRunning")
    message = next(c.message for c in st.conditions if c.type == "Progressing")
    assert "uid(s) count" in message and "kubectl logs job/pa-preflight-g3" in message
    assert [img for img, _ in story.world.images_started] == ["post-analytics:v1"]
    assert not story.world.created, "a savepoint was taken although the preflight failed"
    assert story.log.count(("Warning", "PreflightFailed")) == 1
    assert list(story.world.preflights) == ["pa-preflight-g3"], "kept for its logs"
    assert st.last_preflight is not None and not st.last_preflight.passed

    # The user allows dropping that state (and the new version can now restore): a new
    # spec, a new preflight, the old pod goes, the upgrade goes through.
    story.world.incompatible_images.clear()
    story.change(restore={"allowNonRestoredState": True})
    d = story.step()
    assert [a.name for a in of_type(d, RunPreflight)] == ["pa-preflight-g4"]
    story.settle()
    assert not story.world.preflights
    assert story.status.phase == "Running" and story.status.image == "v4"
    assert cond_of(story.status, "Degraded") == ("False", "Healthy")


def test_a_change_that_needs_no_restart_does_not_end_the_refusal() -> None:
    story = upgraded("v4")
    story.world.incompatible_images.add("v4")
    story.settle(3)
    story.change(rollback={"readinessTimeout": "90s"})
    d = story.step()
    assert not of_type(d, RunPreflight) and not of_type(d, DeletePreflight)
    assert story.status.operation is not None and story.status.operation.stage == "refused"


def test_an_image_that_cannot_be_pulled_is_refused_at_once_and_its_pod_deleted() -> None:
    story = upgraded("v404")
    story.step(preflights=False)
    pod = story.world.preflights["pa-preflight-g3"]
    story.world.preflights[pod.name] = replace(
        pod, message="image not present", waiting_reason="ErrImageNeverPull"
    )
    story.step(preflights=False)
    assert story.status.operation is not None and story.status.operation.stage == "refused"
    assert "cannot be started: image not present" in (story.status.operation.message or "")
    d = story.step(preflights=False)
    assert [a.name for a in of_type(d, DeletePreflight)] == ["pa-preflight-g3"]


def test_a_preflight_without_an_answer_in_time_lets_the_upgrade_go_on_with_its_savepoint() -> None:
    story = upgraded(preflight={"enabled": True, "timeout": "30s"})
    story.step(preflights=False)
    story.step(10, preflights=False)
    assert story.status.operation is not None and story.status.operation.stage == "preflight"
    d = story.step(25, preflights=False)
    assert story.status.operation is not None and story.status.operation.stage == "savepoint"
    assert ("Warning", "PreflightInconclusive") in events(d)
    assert story.status.last_preflight is not None
    assert "did not finish within 30s" in story.status.last_preflight.message


def test_storage_the_preflight_cannot_read_is_no_verdict_on_the_new_version() -> None:
    story = upgraded()
    story.step(preflights=False)
    pod = story.world.preflights["pa-preflight-g3"]
    story.world.preflights[pod.name] = replace(
        pod, phase="Failed", message="S3 read timeout", exit_code=3
    )
    story.settle()
    assert story.status.image == "v2", "an unreadable store is not a refusal"
    assert story.log.count(("Warning", "PreflightInconclusive")) == 1


def test_a_lost_preflight_job_is_created_again_under_the_same_name() -> None:
    story = upgraded()
    story.step(preflights=False)
    story.world.preflights.clear()
    d = story.step(preflights=False)
    assert [a.name for a in of_type(d, RunPreflight)] == ["pa-preflight-g3"]


def test_operator_restarted_at_every_step_makes_one_preflight_and_one_savepoint() -> None:
    story = upgraded()
    for _ in range(12):
        app = make_app(story.spec_data, story.status, story.generation)
        story.now += timedelta(seconds=1)
        lost = decide(app, story.world.observed(), story.now, POLICY)
        story.world.apply(lost, story.now)  # acted, but the status write is lost
        story.world.run_savepoints(story.now)
        story.world.run_preflights()
        story.step()
    assert story.status.phase == "Running" and story.status.image == "v2"
    assert story.world.preflights_started == [("pa-preflight-g3", "v2")]
    assert len([n for n in story.world.created if "upgrade" in n]) == 1


def test_last_state_upgrades_are_checked_too_then_restart_from_the_newest_checkpoint() -> None:
    story = upgraded(upgradeMode="last-state")
    d = story.step()
    assert of_type(d, RunPreflight) and not of_type(d, ApplyWorkload)
    story.settle()
    assert story.status.image == "v2"
    assert ("v2", "latest") in story.world.images_started
    assert not story.world.created


def test_stateless_upgrades_and_a_disabled_preflight_skip_it() -> None:
    for overrides in ({"upgradeMode": "stateless"}, {"preflight": {"enabled": False}}):
        story = running_story(**{**CHECKED, **overrides})
        story.change(image="v2")
        story.settle()
        assert story.status.image == "v2"
        assert story.world.preflights_started == []


# --------------------------------------------------------------------------- the Job


def test_the_preflight_job_runs_the_real_start_plus_preflight_and_is_never_an_engine() -> None:
    data = spec(
        image="v2",
        args=["--", "--out", "/data"],
        restore={"allowNonRestoredState": True},
        podTemplate={
            "metadata": {"labels": {"team": "a"}},
            "spec": {"containers": [{"name": "sidecar", "image": "proxy"}]},
        },
    )
    job = preflight_job("pa", "pa-preflight-g3", StreamAppSpec.model_validate(data))
    assert job["kind"] == "Job" and job["metadata"]["name"] == "pa-preflight-g3"
    assert job["spec"]["backoffLimit"] == 0, "a failed preflight is the answer, not retried"
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert args[:3] == ["run", "flow.py", "--preflight"]
    assert args[-3:] == ["--", "--out", "/data"]
    assert args[args.index("--restore") + 1] == "latest"
    assert "--allow-non-restored-state" in args
    assert pod["spec"]["restartPolicy"] == "Never"
    assert "readinessProbe" not in container and "livenessProbe" not in container
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert pod["spec"]["automountServiceAccountToken"] is False
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "a" and labels[PREFLIGHT_LABEL] == "pa-preflight-g3"
    selector = selector_labels("pa")
    assert not all(labels.get(k) == v for k, v in selector.items()), "matches the engine"


def test_the_preflight_of_several_workers_is_one_process() -> None:
    data = spec(workers=2, parallelism=2, exchange={"bootstrapServers": "kafka:9092"})
    job = preflight_job("pa", "pa-preflight-g3", StreamAppSpec.model_validate(data))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for e in container["env"]}
    assert not names & {"REWIND_WORKERS", "REWIND_WORKER_INDEX"}
    assert "apps.kubernetes.io/pod-index" not in json.dumps(job)


def test_the_engine_and_the_operator_agree_on_the_unchecked_exit_code() -> None:
    from rewind_engine import cli  # noqa: PLC0415 - the contract between the two halves

    assert cli.PREFLIGHT_UNCHECKED == PREFLIGHT_UNCHECKED_EXIT
