"""The operator's small parts: workload manifests, settings, logs, CLI helpers, parsing."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY
from rewind_operator import cli, logs, metrics, observe, settings, workload
from rewind_operator.models import StreamApp, StreamAppSpec, parse_duration


def _spec(**kw: Any) -> StreamAppSpec:
    data: dict[str, Any] = {
        "image": "pa:v1",
        "flow": "flow.py",
        "parallelism": 2,
        "maxParallelism": 128,
        "snapshots": {
            "location": "s3://b/pa",
            "credentialsSecret": "creds",
            "checkpointInterval": "1m30s",
        },
    }
    data.update(kw)
    return StreamAppSpec.model_validate(data)


def test_deployment_follows_the_engine_contract() -> None:
    spec = _spec(args=["--topic", "views"], env=[{"name": "A", "value": "1"}])
    dep = workload.deployment("pa", spec, "s3://b/pa/savepoints/ns/sp1/", 1, "rewind-engine")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "rewind-engine"
    [container] = pod["containers"]
    assert container["command"] == ["rewind"]
    assert container["args"] == [
        "run",
        "flow.py",
        "--snapshots",
        "s3://b/pa",
        "--control",
        "$(POD_IP):8081",
        "--parallelism",
        "2",
        "--max-parallelism",
        "128",
        "--checkpoint-interval",
        "90",
        "--restore",
        "s3://b/pa/savepoints/ns/sp1/",
        "--topic",
        "views",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["A"]["value"] == "1"
    assert container["envFrom"] == [{"secretRef": {"name": "creds"}}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "pa"
    assert labels["app.kubernetes.io/managed-by"] == "rewind-operator"
    digest = dep["metadata"]["annotations"][workload.HASH_ANNOTATION]
    assert dep["spec"]["template"]["metadata"]["annotations"][workload.HASH_ANNOTATION] == digest


def test_allow_non_restored_state_only_with_a_restore() -> None:
    spec = _spec(restore={"allowNonRestoredState": True})
    assert "--allow-non-restored-state" not in workload.engine_args(spec, None)
    assert "--allow-non-restored-state" in workload.engine_args(spec, "latest")


def test_hash_changes_with_the_pod_and_only_with_it() -> None:
    base = workload.workload_hash("pa", _spec(), None)
    assert base == workload.workload_hash("pa", _spec(), None)
    assert base != workload.workload_hash("pa", _spec(image="pa:v2"), None)
    assert base != workload.workload_hash("pa", _spec(), "latest")
    no_restart = _spec(
        snapshots={
            "location": "s3://b/pa",
            "credentialsSecret": "creds",
            "checkpointInterval": "1m30s",
            "savepointInterval": "1h",
        }
    )
    assert base == workload.workload_hash("pa", no_restart, None)


def test_pod_template_merges_but_ours_win() -> None:
    spec = _spec(
        podTemplate={
            "metadata": {"labels": {"team": "feed", "app.kubernetes.io/instance": "evil"}},
            "spec": {
                "nodeSelector": {"disk": "ssd"},
                "serviceAccountName": "admin",
                "containers": [{"name": "engine", "image": "x"}, {"name": "sidecar", "image": "s"}],
            },
        }
    )
    tpl = workload.pod_template("pa", spec, None)
    assert tpl["metadata"]["labels"]["team"] == "feed"
    assert tpl["metadata"]["labels"]["app.kubernetes.io/instance"] == "pa"
    assert tpl["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert tpl["spec"]["serviceAccountName"] == "rewind-engine"
    assert [c["name"] for c in tpl["spec"]["containers"]] == ["engine", "sidecar"]
    assert tpl["spec"]["containers"][0]["image"] == "pa:v1"


def test_pod_template_mounts_volumes_into_the_engine_and_takes_nothing_else() -> None:
    mount = {"name": "out", "mountPath": "/out"}
    spec = _spec(
        podTemplate={
            "spec": {
                "volumes": [{"name": "out", "hostPath": {"path": "/srv/out"}}],
                "containers": [
                    {"name": "engine", "image": "x", "command": ["sh"], "volumeMounts": [mount]}
                ],
            },
        }
    )
    tpl = workload.pod_template("pa", spec, None)
    [engine] = tpl["spec"]["containers"]
    assert engine["volumeMounts"] == [mount]
    assert engine["image"] == "pa:v1" and engine["command"] == ["rewind"]
    assert tpl["spec"]["volumes"] == [{"name": "out", "hostPath": {"path": "/srv/out"}}]
    assert "volumeMounts" not in workload.pod_template("pa", _spec(), None)["spec"]["containers"][0]


def test_service_account_has_no_token() -> None:
    assert workload.service_account()["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("1h30m", 5400), ("7d", 604800), ("250ms", 0.25)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("10 minutes")


def test_settings_from_env() -> None:
    s = settings.from_env(
        {
            "REWIND_WATCH_NAMESPACES": "a, b",
            "REWIND_RESYNC_INTERVAL_SECONDS": "5",
            "REWIND_DEFAULT_UPGRADE_MODE": "last-state",
            "REWIND_HEALTH_HOST": "127.0.0.9",
        }
    )
    assert s.watch_namespaces == ("a", "b")
    assert s.reconcile.resync_interval_s == 5
    assert s.policy().default_upgrade_mode == "last-state"
    assert s.server.health_host == "127.0.0.9"
    assert settings.from_env({}).server.health_host == "127.0.0.1"


@pytest.mark.parametrize(
    "env",
    [
        {"REWIND_HEALTH_HOST": "0.0.0.0"},
        {"REWIND_DEFAULT_UPGRADE_MODE": "yolo"},
        {"REWIND_RESYNC_INTERVAL_SECONDS": "0"},
        {"REWIND_LOG_FORMAT": "xml"},
    ],
)
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="REWIND_"):
        settings.from_env(env)


def test_settings_fields_are_documented() -> None:
    for cls in (
        settings.Settings,
        settings.ServerSettings,
        settings.ReconcileSettings,
        settings.StorageSettings,
    ):
        lines = inspect.getsource(cls).splitlines()
        for f in dataclasses.fields(cls):
            at = next(i for i, line in enumerate(lines) if line.startswith(f"    {f.name}:"))
            assert lines[at + 1].strip().startswith('"""'), f"{cls.__name__}.{f.name} undocumented"


def test_every_log_line_has_app_namespace_savepoint() -> None:
    stream = io.StringIO()
    logs.configure("info", "json")
    root = logging.getLogger()
    root.handlers[0].stream = stream  # type: ignore[attr-defined]
    try:
        logs.bind(app="pa", namespace="ns")
        structlog.get_logger("t").info("hello", x=1)
        logging.getLogger("kopf.objects").info(
            "from kopf", extra={"k8s_ref": {"kind": "Savepoint", "name": "sp1", "namespace": "ns2"}}
        )
        logs.bind()
        logging.getLogger("other").warning("plain")
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
        root.handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert {"app", "namespace", "savepoint"} <= line.keys()
    assert lines[0]["app"] == "pa" and lines[0]["x"] == 1
    assert (lines[1]["savepoint"], lines[1]["namespace"], lines[1]["app"]) == ("sp1", "ns2", None)
    assert lines[2]["app"] is None


def test_pod_observation() -> None:
    pod = {
        "metadata": {"name": "pa-engine-x", "annotations": {workload.HASH_ANNOTATION: "h1"}},
        "status": {
            "phase": "Running",
            "podIP": "127.0.3.4",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "ImportError: v3"}},
                }
            ],
        },
    }
    obs = observe.pod_obs(pod)
    assert obs.workload_hash == "h1" and obs.ip == "127.0.3.4" and not obs.ready
    assert obs.restarts == 4 and obs.waiting_reason == "CrashLoopBackOff"


def test_fork_spec_restores_from_the_savepoint_into_its_own_location() -> None:
    original = StreamApp.model_validate(
        {
            "metadata": {"name": "pa"},
            "spec": {
                "image": "pa:v2",
                "flow": "flow.py",
                "state": "suspended",
                "snapshots": {"location": "s3://b/pa/"},
                "restore": {"redeployNonce": 3},
            },
        }
    )
    spec = cli.fork_spec(original, "pa-sp", "pa-b", "pa:v2b", None)
    assert spec["restore"] == {"savepoint": "pa-sp", "allowNonRestoredState": False}
    assert spec["image"] == "pa:v2b" and spec["state"] == "running"
    assert spec["snapshots"]["location"] == "s3://b/pa-b"
    StreamAppSpec.model_validate(spec)


@pytest.mark.parametrize(
    ("location", "fork"),
    [
        ("s3://b/apps/clicks", "s3://b/apps/clicks-fork"),
        ("s3://b/apps/clicks/", "s3://b/apps/clicks-fork"),
        ("s3://b", "s3://b/clicks-fork"),
        ("file:///tmp/snap/clicks", "file:///tmp/snap/clicks-fork"),
    ],
)
def test_a_forks_default_location_is_a_sibling_of_the_original(location: str, fork: str) -> None:
    assert cli.sibling_location(location, "clicks-fork") == fork


def test_cli_parses_cluster_commands() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["savepoint", "create", "pa", "--stop", "-n", "x"])
    assert args.cluster_command is cli.savepoint_create and args.stop and args.namespace == "x"
    args = parser.parse_args(["savepoint", "list"])
    assert args.cluster_command is cli.savepoint_list and args.app is None
    args = parser.parse_args(["fork", "pa", "--from", "sp", "--name", "pa2"])
    assert args.cluster_command is cli.fork_app and args.source == "sp"


def test_savepoint_rows() -> None:
    items = [
        {
            "metadata": {"name": "b", "creationTimestamp": "2026-01-01T00:00:02Z"},
            "spec": {"app": "pa", "reason": "periodic"},
            "status": {"phase": "Completed", "sizeBytes": 2765, "path": "s3://x/b/"},
        },
        {
            "metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:01Z"},
            "spec": {"app": "other"},
        },
    ]
    rows = cli.savepoint_rows(items, None)
    assert [r[0] for r in rows] == ["a", "b"]
    assert rows[1][2:5] == ["periodic", "Completed", "2.7 KiB"]
    assert [r[0] for r in cli.savepoint_rows(items, "pa")] == ["b"]


def test_metrics_phases_and_outcomes() -> None:

    metrics.set_phase("ns", "a", "Running")
    metrics.set_phase("ns", "b", "Running")
    metrics.set_phase("ns", "b", "Upgrading")
    assert REGISTRY.get_sample_value("rewind_streamapps", {"phase": "Running"}) == 1
    assert REGISTRY.get_sample_value("rewind_streamapps", {"phase": "Upgrading"}) == 1
    metrics.set_phase("ns", "b", None)
    assert REGISTRY.get_sample_value("rewind_streamapps", {"phase": "Upgrading"}) == 0
    before = REGISTRY.get_sample_value("rewind_rollbacks_total") or 0
    metrics.observe_event("StreamApp", "RollingBack")
    assert REGISTRY.get_sample_value("rewind_rollbacks_total") == before + 1
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    metrics.savepoint_finished("upgrade", "completed", t0, t0 + timedelta(seconds=3))
    labels = {"reason": "upgrade"}
    assert (REGISTRY.get_sample_value("rewind_savepoint_duration_seconds_count", labels) or 0) >= 1


def test_handler_chatter_is_not_logged() -> None:
    stream = io.StringIO()
    logs.configure("info", "json")
    root = logging.getLogger()
    root.handlers[0].stream = stream  # type: ignore[attr-defined]
    try:
        kopf_log = logging.getLogger("kopf.objects")
        kopf_log.info("Timer 'app_timer' succeeded.")
        kopf_log.info("Handler 'app_create' succeeded.")
        kopf_log.info("Creation is processed: 1 succeeded; 0 failed.")
        kopf_log.error("Timer 'app_timer' failed with an exception.")
        kopf_log.warning("Handler 'app_create' succeeded.")  # odd, but not chatter at info
    finally:
        structlog.reset_defaults()
        root.handlers.clear()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "failed with" in lines[0] and "warning" in lines[1]
