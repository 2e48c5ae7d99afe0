"""A StreamApp of several workers (`spec.workers`): validation, the StatefulSet it runs
as, readiness across every worker, and the lifecycle edges it moves along (a rescale is
an upgrade through a savepoint taken by worker 0; a crashing worker rolls back like a
crashing pod)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from rewind_operator import lifecycle, workload
from rewind_operator.actions import ApplyWorkload, CreateSavepoint
from rewind_operator.decide import decide
from rewind_operator.lifecycle import On
from rewind_operator.models import StreamApp, StreamAppSpec
from rewind_operator.observe import _engine_pod, pod_obs
from rewind_operator.observed import AppObserved
from rewind_operator.queries import is_ready, not_ready_detail

from .appworld import POLICY, T0, Story, cond, make_app, of_type, running_story, spec

KAFKA = {"bootstrapServers": "kafka-0.kafka:9092"}


def workers_spec(workers: int = 2, **more: Any) -> dict[str, Any]:
    return spec(**{"workers": workers, "parallelism": workers, "exchange": KAFKA, **more})


class EdgeStory(Story):
    """A Story that remembers every edge it moved along."""

    edges: list[lifecycle.Edge]

    def step(self, seconds: float = 1, *, savepoints: bool = True) -> Any:
        decision = super().step(seconds, savepoints=savepoints)
        self.__dict__.setdefault("edges", []).extend(decision.transitions)
        return decision


def workers_story(workers: int = 2) -> EdgeStory:
    story = EdgeStory(spec_data=workers_spec(workers))
    story._overrides = {"workers": workers, "parallelism": workers, "exchange": KAFKA}
    story.settle(3)
    assert story.status.phase == "Running", story.status
    story.log.clear()
    story.edges = []
    return story


# --------------------------------------------------------------------------- validation


def _problems(**spec_data: Any) -> str:
    app = make_app(spec(**spec_data))
    decision = decide(app, AppObserved(secret_exists=True), T0, POLICY)
    assert decision.transitions[-1].on == On.INVALID_SPEC_NOTHING_DEPLOYED
    assert not of_type(decision, ApplyWorkload), "nothing is deployed"
    assert cond(decision, "Ready") == ("False", "InvalidSpec")
    message = next(c.message for c in decision.status.conditions if c.type == "Ready")
    assert message.endswith("(nothing deployed)")
    return message


def test_parallelism_below_workers_is_refused_before_anything_is_deployed() -> None:
    message = _problems(workers=3, parallelism=2, exchange=KAFKA)
    assert "parallelism 2 is below workers 3" in message
    assert "set spec.parallelism to at least 3" in message


def test_workers_without_kafka_are_refused_with_the_fields_to_set() -> None:
    message = _problems(workers=2, parallelism=2)
    assert "spec.exchange.bootstrapServers" in message and "workers: 1" in message


def test_kafka_may_come_from_env_or_a_secret() -> None:
    for extra in (
        {"env": [{"name": "REWIND_KAFKA_BOOTSTRAP", "value": "k:9092"}]},
        {"exchange": {"credentialsSecret": "kafka-creds"}},
    ):
        app = make_app(spec(workers=2, parallelism=2, **extra))
        decision = decide(app, AppObserved(secret_exists=True), T0, POLICY)
        assert decision.transitions[-1].on == On.FIRST_START, extra


def test_a_missing_exchange_secret_is_named() -> None:
    app = make_app(spec(workers=2, parallelism=2, exchange={"credentialsSecret": "kc"}))
    observed = AppObserved(secret_exists=True, exchange_secret_exists=False)
    decision = decide(app, observed, T0, POLICY)
    assert decision.transitions[-1].on == On.INVALID_SPEC_NOTHING_DEPLOYED
    assert any("'kc' does not exist" in c.message for c in decision.status.conditions)


def test_the_worker_variables_are_the_operators() -> None:
    message = _problems(env=[{"name": "REWIND_WORKER_INDEX", "value": "1"}])
    assert "env may not set REWIND_WORKER_INDEX" in message


def test_a_name_too_long_for_the_statefulsets_pods_is_refused() -> None:
    app = make_app(workers_spec(2))
    app.metadata["name"] = "x" * 46
    decision = decide(app, AppObserved(secret_exists=True), T0, POLICY)
    assert any("at most 45" in c.message for c in decision.status.conditions)


# --------------------------------------------------------------------------- workload


def _spec(**data: Any) -> StreamAppSpec:
    return StreamAppSpec.model_validate(data)


def test_several_workers_are_a_statefulset_that_replaces_all_of_them_at_once() -> None:
    s = _spec(**workers_spec(3, exchange={**KAFKA, "credentialsSecret": "kafka-creds"}))
    sts = workload.statefulset("pa", s, "s3://b/sp/", 3)
    assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert sts["spec"]["serviceName"] == workload.workers_service_name("pa")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["REWIND_WORKERS"]["value"] == "3"
    assert env["REWIND_WORKER_INDEX"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert env["REWIND_KAFKA_BOOTSTRAP"]["value"] == KAFKA["bootstrapServers"]
    digest = sts["metadata"]["annotations"][workload.HASH_ANNOTATION]
    assert env["REWIND_DEPLOYMENT_ID"]["value"] == digest
    args = container["args"]
    assert args[args.index("--job-id") + 1] == "$(POD_NAMESPACE).pa.$(REWIND_DEPLOYMENT_ID)"
    # As Kubernetes expands it: every version of pa in ns, and nothing else.
    older = re.compile(
        args[args.index("--retire-exchange-of") + 1].replace("$(POD_NAMESPACE)", "ns")
    )
    assert older.fullmatch(f"ns.pa.{digest}") and older.fullmatch("ns.pa.0123abcd")
    for other in ("ns.pa.b.0123abcd", "ns.pa-2.0123abcd", "ns2.pa.0123abcd", "ns.pa.x"):
        assert not older.fullmatch(other), other
    assert args[args.index("--control") + 1] == "$(POD_IP):8081"
    assert container["envFrom"] == [
        {"secretRef": {"name": "s3-creds"}},
        {"secretRef": {"name": "kafka-creds"}},
    ]
    headless = workload.workers_service("pa")
    assert headless["spec"]["clusterIP"] == "None"
    control = workload.service("pa", 3)
    assert control["spec"]["selector"]["apps.kubernetes.io/pod-index"] == "0"


def test_one_worker_stays_the_deployment_of_before() -> None:
    s = _spec(**spec())
    dep = workload.deployment("pa", s, None, 1)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in container["env"]}
    assert not names & {"REWIND_WORKERS", "REWIND_WORKER_INDEX", "REWIND_KAFKA_BOOTSTRAP"}
    assert "--job-id" not in container["args"]
    assert "--retire-exchange-of" not in container["args"]
    assert "apps.kubernetes.io/pod-index" not in workload.service("pa")["spec"]["selector"]


def test_the_worker_count_is_part_of_the_workload_hash() -> None:
    two = workload.workload_hash("pa", _spec(**workers_spec(2)), None)
    three = workload.workload_hash("pa", _spec(**workers_spec(3)), None)
    assert two != three


# --------------------------------------------------------------------------- readiness


def test_running_needs_every_worker_ready_and_reported_by_worker_0() -> None:
    story = workers_story(3)
    digest = story.status.workload_hash
    world = story.world
    assert is_ready(world.observed(), digest, 3)
    assert story.status.workers == "3/3"
    assert [w.index for w in story.status.job.workers or []] == [0, 1, 2]
    assert all(w.state == "RUNNING" and w.ready for w in story.status.job.workers or [])
    # one worker's pod not ready: not ready, and the detail counts the workers
    world.pods = [replace(p, ready=p.worker != 2) for p in world.pods]
    assert not is_ready(world.observed(), digest, 3)
    detail = not_ready_detail(world.observed(), digest, 3)
    assert detail.startswith("2/3 workers ready; pod pa-engine-2")
    # every pod ready, but worker 0 has not heard from worker 1 yet (still starting)
    world.pods = [replace(p, ready=True) for p in world.pods]
    observed = world.observed()
    assert observed.engine is not None
    reports = tuple(w for w in observed.engine.workers or () if w.index != 1)
    observed = replace(observed, engine=replace(observed.engine, workers=reports))
    assert not is_ready(observed, digest, 3)
    assert "worker 0 to report every worker" in not_ready_detail(observed, digest, 3)


def test_a_worker_that_stops_being_ready_moves_the_running_app_to_not_ready() -> None:
    story = workers_story(2)
    story.world.pods = [replace(p, ready=p.worker == 0) for p in story.world.pods]
    decision = story.step()
    assert [e.on for e in decision.transitions] == [On.NOT_READY]
    assert cond(decision, "Ready") == ("False", "JobNotReady")
    assert story.status.workers == "1/2"


def test_a_crashing_worker_counts_like_a_crashing_pod() -> None:
    story = workers_story(2)
    story.world.pods = [
        replace(p, ready=False, restarts=3, waiting_reason="CrashLoopBackOff")
        if p.worker == 1
        else p
        for p in story.world.pods
    ]
    decision = story.step()
    assert cond(decision, "Degraded") == ("True", "JobCrashing")
    message = next(c.message for c in decision.status.conditions if c.type == "Degraded")
    assert "pod pa-engine-1 (worker 1) restarted 3 times" in message


# --------------------------------------------------------------------------- lifecycle


def test_a_rescale_is_an_upgrade_through_a_savepoint_of_worker_0() -> None:
    story = workers_story(2)
    old = story.status.workload_hash
    story.change(workers=3, parallelism=3)
    first = story.step(savepoints=False)
    assert [e.on for e in first.transitions] == [On.UPGRADE_WITH_SAVEPOINT]
    [gate] = of_type(first, CreateSavepoint)
    assert gate.stop and gate.reason == "upgrade"
    assert not of_type(first, ApplyWorkload), "the old workers run until the savepoint"
    second = story.step()  # the savepoint completes (the engine: worker 0's stop)
    assert [e.on for e in second.transitions] == [On.SAVEPOINT_PENDING]
    third = story.step()
    assert [e.on for e in third.transitions] == [On.SAVEPOINT_COMPLETED]
    [applied] = of_type(third, ApplyWorkload)
    assert applied.spec.workers == 3 and applied.restore == story.world.savepoints[gate.name].path
    assert applied.workload_hash != old
    story.settle(2)
    assert story.status.phase == "Running" and story.status.workers == "3/3"
    assert (lifecycle.UPGRADE_DEPLOYING, On.READY) in [(e.src, e.on) for e in story.edges]
    assert story.status.last_stable_spec is not None
    assert story.status.last_stable_spec.workers == 3
    assert story.world.statefulset is not None and story.world.statefulset.replicas == 3


def test_a_rescale_from_one_worker_to_two_and_back() -> None:
    story = running_story()
    assert story.world.deployment is not None
    story.change(workers=2, parallelism=2, exchange=KAFKA)
    story.settle(4)
    assert story.status.phase == "Running" and story.status.workers == "2/2"
    assert story.world.deployment is None and story.world.statefulset is not None
    assert [p.worker for p in story.world.pods] == [0, 1]
    story.change(workers=1, parallelism=1)
    story.settle(4)
    assert story.status.phase == "Running" and story.status.workers == "1/1"
    assert story.world.statefulset is None and story.world.deployment is not None
    assert [image for image, _ in story.world.images_started][-3:] == ["post-analytics:v1"] * 3


def test_a_new_version_whose_worker_crashes_is_rolled_back_from_the_same_savepoint() -> None:
    story = workers_story(2)
    story.world.broken_images.add("v3")
    story.change(image="v3", workers=3, parallelism=3)
    story.settle(4)
    on = [(e.src, e.on) for e in story.edges]
    assert (lifecycle.UPGRADE_DEPLOYING, On.ROLLING_BACK) in on
    assert (lifecycle.ROLLBACK, On.READY) in on
    assert story.status.phase == "Running"
    assert story.status.image == "post-analytics:v1" and story.status.workers == "2/2"
    (_, upgrade_restore), (_, rollback_restore) = story.world.images_started[-2:]
    assert upgrade_restore == rollback_restore and upgrade_restore is not None


def test_a_stale_worker_of_the_old_version_is_replaced() -> None:
    story = workers_story(2)
    old = story.status.workload_hash
    story.change(image="v2")
    story.step()  # the gating savepoint (completes at once in this world)
    story.step()  # deploys v2
    assert lifecycle.state_of(story.status.operation) == lifecycle.UPGRADE_DEPLOYING
    # The StatefulSet (OnDelete) still runs worker 1 of the old version: not ready, and
    # the operator applies again (act deletes the old version's pods) until it is gone.
    story.world.pods = [
        replace(p, workload_hash=old) if p.worker == 1 else p for p in story.world.pods
    ]
    decision = story.step()
    assert [e.on for e in decision.transitions] == [On.WAITING]
    assert of_type(decision, ApplyWorkload)
    assert cond(decision, "Ready") == ("False", "JobNotReady")


def test_suspend_scales_the_workers_to_zero_after_a_savepoint() -> None:
    story = workers_story(2)
    story.change(state="suspended")
    story.settle(3)
    assert story.world.statefulset is not None and story.world.statefulset.replicas == 0
    story.world.pods = []
    story.step()
    assert story.status.phase == "Suspended"
    assert any(sp.reason == "suspend" for sp in story.world.savepoints.values())


def test_the_readme_example_of_workers_is_a_valid_app() -> None:
    """The YAML in README's "Several workers" section, through the model and validation."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text.split("## Several workers", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    body = yaml.safe_load(block)
    app = make_app(StreamApp.model_validate(body).spec.dump())
    assert app.spec.workers == 3
    decision = decide(app, AppObserved(secret_exists=True, exchange_secret_exists=True), T0, POLICY)
    assert decision.transitions[-1].on == On.FIRST_START
    [applied] = of_type(decision, ApplyWorkload)
    assert applied.replicas == 3


def test_the_operator_talks_to_worker_0() -> None:
    """Savepoints and /status go to the coordinator: worker 0's pod, never another."""

    def pod(index: int) -> dict[str, Any]:
        return {
            "metadata": {
                "name": f"pa-engine-{index}",
                "labels": {"apps.kubernetes.io/pod-index": str(index)},
                "annotations": {workload.HASH_ANNOTATION: "h"},
            },
            "status": {"phase": "Running", "podIP": f"127.0.9.{index + 1}"},
        }

    pods = [pod_obs(pod(i)) for i in (2, 1, 0)]
    assert [p.worker for p in pods] == [2, 1, 0]
    chosen = _engine_pod(pods, "h")
    assert chosen is not None and chosen.name == "pa-engine-0"
    assert _engine_pod(pods[:2], "h") is None, "no coordinator, no control API"
