"""Pods and objects on the real node, for its tests: kubectl, pod manifests, waits, S3.

What flows through here: manifests as dicts go in (`start` applies a pod and waits
until it runs), the API server's JSON comes back. Every wait polls until what it waits
for is true; `LIMIT` is a fail-safe for a hung test, never a measure of speed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from rewind_operator.testing import wait_until
from rewind_operator.vocabulary import PodPhase

from dev import devcluster
from dev.devcluster import ClusterEnv

T = TypeVar("T")
Json = dict[str, Any]
LIMIT = 180.0
"""Fail-safe only: how long a wait may take before the test is declared hung."""
SLEEP = ["python", "-c", "import time; print('up', flush=True); time.sleep(3600)"]


def wait_for(what: str, probe: Callable[[], T | None], limit: float = LIMIT) -> T:
    """`probe`'s first truthy answer, polled often: pods start in about a second."""
    return wait_until(what, probe, timeout=limit, every=0.3)


def kubectl(*args: str, namespace: str, input: str | None = None) -> str:
    done = devcluster.kubectl(*args, namespace=namespace, input=input)
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def pod(name: str, image: str, command: list[str], **container: Any) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    **container,
                }
            ],
            "terminationGracePeriodSeconds": 1,
        },
    }


def apply_pod(namespace: str, manifest: Json) -> None:
    """Applies a pod once its namespace's default service account exists (a pod that
    names none is refused before)."""
    wait_for(
        "the default service account",
        lambda: devcluster.kubectl("get", "sa", "default", namespace=namespace).returncode == 0,
    )
    kubectl("apply", "-f", "-", namespace=namespace, input=json.dumps(manifest))


def start(namespace: str, manifest: Json) -> Json:
    """Applies a pod and waits until it runs; returns its status."""
    apply_pod(namespace, manifest)
    name = manifest["metadata"]["name"]

    def running() -> Json | None:
        got = json.loads(kubectl("get", "pod", name, "-o", "json", namespace=namespace))
        return got if got["status"].get("phase") == "Running" else None

    return wait_for(f"pod {name} running", running)


def run_to_end(namespace: str, manifest: Json) -> tuple[str, str]:
    """Runs a pod to completion (restartPolicy Never); returns its phase and log."""
    manifest["spec"]["restartPolicy"] = "Never"
    apply_pod(namespace, manifest)
    name = manifest["metadata"]["name"]

    def ended() -> str | None:
        got = json.loads(kubectl("get", "pod", name, "-o", "json", namespace=namespace))
        phase = got["status"].get("phase")
        return str(phase) if phase in (PodPhase.SUCCEEDED, PodPhase.FAILED) else None

    phase = wait_for(f"pod {name} to end", ended)
    return phase, kubectl("logs", name, namespace=namespace)


def exec_(namespace: str, name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return devcluster.kubectl("exec", name, "--", *cmd, namespace=namespace)


def s3_client(env: ClusterEnv) -> Any:
    """boto3 on MinIO, from the host."""
    return boto3.client(
        "s3",
        endpoint_url=env.s3_endpoint,
        aws_access_key_id=env.aws_access_key_id,
        aws_secret_access_key=env.aws_secret_access_key,
        region_name=env.aws_region,
    )
