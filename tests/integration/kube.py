"""kubectl against the local cluster, for the operator's integration tests.

What flows through here: manifests as dicts go in (`apply`; `streamapp` and
`post_analytics` build them), objects come back as the API server's JSON (`get`,
`items`). Every call runs the cluster's own kubectl with the
test's kubeconfig, so a test sees exactly what a user's `kubectl` would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from dev import devcluster
from dev.devcluster import ClusterEnv


def apply(namespace: str, body: dict[str, Any], cluster: ClusterEnv) -> Any:
    """`kubectl apply` one object; the completed process (check its returncode)."""
    return devcluster.kubectl(
        "apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(body), env=cluster
    )


def get(kind: str, name: str, namespace: str, cluster: ClusterEnv) -> dict[str, Any] | None:
    """One object, or None when it does not exist (or cannot be read)."""
    result = devcluster.kubectl("get", kind, name, "-o", "json", namespace=namespace, env=cluster)
    return json.loads(result.stdout) if result.returncode == 0 else None


def items(kind: str, namespace: str, cluster: ClusterEnv) -> list[dict[str, Any]]:
    """Every object of a kind in the namespace."""
    result = devcluster.kubectl("get", kind, "-o", "json", namespace=namespace, env=cluster)
    return list(json.loads(result.stdout)["items"])


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """The object's status condition of that type, or {} when it has none."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def host_folders(*folders: Path) -> dict[str, Any]:
    """A StreamApp `podTemplate` that mounts each host folder at the same path in the
    engine's container (hostPath), so that what the engine writes there (file output,
    file:// snapshots) is what the test reads. The folders are made, writable for the
    engine's user (the images run as 10001): a container otherwise sees only its own
    files."""
    volumes, mounts = [], []
    for i, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        volumes.append(
            {"name": f"host-{i}", "hostPath": {"path": str(folder), "type": "Directory"}}
        )
        mounts.append({"name": f"host-{i}", "mountPath": str(folder)})
    return {
        "spec": {"volumes": volumes, "containers": [{"name": "engine", "volumeMounts": mounts}]}
    }


POST_ANALYTICS_V1 = "rewind-examples/post-analytics:v1"
POST_ANALYTICS_V2 = "rewind-examples/post-analytics:v2"


def streamapp(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A StreamApp named `name`."""
    return {
        "apiVersion": "rewind.dev/v1alpha1",
        "kind": "StreamApp",
        "metadata": {"name": name},
        "spec": spec,
    }


def post_analytics(
    name: str,
    bucket: str,
    out: Path,
    image: str = POST_ANALYTICS_V1,
    *,
    checkpoint_interval: str,
    savepoint_timeout: str,
) -> dict[str, Any]:
    """The spec of the post-analytics example at 300 events/s, its counts in the host
    folder `out` (mounted into the engine) and its state under s3://`bucket`/`name`."""
    return {
        "image": image,
        "flow": "flow.py",
        "maxParallelism": 128,
        "env": [
            {"name": "REWIND_OUT", "value": str(out)},
            {"name": "REWIND_RATE", "value": "300"},
        ],
        "snapshots": {
            "location": f"s3://{bucket}/{name}",
            "credentialsSecret": "s3-creds",
            "checkpointInterval": checkpoint_interval,
            "savepointTimeout": savepoint_timeout,
        },
        "podTemplate": host_folders(out),
    }
