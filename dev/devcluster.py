"""The local cluster as tests and the demo see it: addresses, `ensure_up`, `kubectl`.

`ensure_up()` runs `dev/cluster up` (idempotent: it builds what is missing and starts
what is not running) in a child process, so the cluster's processes never belong to
the caller, and returns a `ClusterEnv` read from `dev/.state/env`. The variables in
`ClusterEnv.env()` are exactly the ones `dev/cluster env` prints (docs/CONTRACTS.md).

Two addresses of each service: the host's (`s3_endpoint`, `kafka_bootstrap`: for the
test process and anything it runs on the host) and the pods' (`pod_s3_endpoint`,
`pod_kafka_bootstrap`: for what goes into a pod spec or a Secret a pod reads): the pods'
are at the node IP, which the host reaches as well.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dev.plane.layout import REPO, State

CLUSTER = REPO / "dev" / "cluster"


@dataclass(frozen=True)
class ClusterEnv:
    """Where the running cluster's parts answer, for the host and for pods."""

    kubeconfig: Path
    s3_endpoint: str
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_region: str
    kafka_bootstrap: str
    bin_dir: Path
    pod_s3_endpoint: str
    """MinIO as a pod reaches it (for AWS_ENDPOINT_URL in a pod's Secret)."""
    pod_kafka_bootstrap: str
    """The broker as a pod reaches it (advertised back to pods as that address)."""
    extra: dict[str, str]
    """Other variables `dev/cluster env` prints (AWS_DEFAULT_REGION, ...)."""

    def env(self) -> dict[str, str]:
        """The variables to add to a process's environment to use this cluster."""
        return self.extra | {
            "KUBECONFIG": str(self.kubeconfig),
            "REWIND_S3_ENDPOINT": self.s3_endpoint,
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "AWS_REGION": self.aws_region,
            "REWIND_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "REWIND_DEV_BIN": str(self.bin_dir),
            "REWIND_DEV_POD_S3_ENDPOINT": self.pod_s3_endpoint,
            "REWIND_DEV_POD_KAFKA_BOOTSTRAP": self.pod_kafka_bootstrap,
        }

    def binary(self, name: str) -> Path:
        """A cached binary: kubectl, helm, etcd, kube-apiserver, minio, ..."""
        return self.bin_dir / name

    @classmethod
    def from_env_file(cls, path: Path) -> ClusterEnv:
        values: dict[str, str] = {}
        for line in path.read_text().splitlines():
            if line.startswith("export "):
                key, _, raw = line[len("export ") :].partition("=")
                values[key] = shlex.split(raw)[0] if raw else ""
        named = {
            "KUBECONFIG", "REWIND_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "REWIND_KAFKA_BOOTSTRAP", "REWIND_DEV_BIN",
            "REWIND_DEV_POD_S3_ENDPOINT", "REWIND_DEV_POD_KAFKA_BOOTSTRAP",
        }  # fmt: skip
        return cls(
            kubeconfig=Path(values["KUBECONFIG"]),
            s3_endpoint=values["REWIND_S3_ENDPOINT"],
            aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
            aws_region=values["AWS_REGION"],
            kafka_bootstrap=values["REWIND_KAFKA_BOOTSTRAP"],
            bin_dir=Path(values["REWIND_DEV_BIN"]),
            pod_s3_endpoint=values["REWIND_DEV_POD_S3_ENDPOINT"],
            pod_kafka_bootstrap=values["REWIND_DEV_POD_KAFKA_BOOTSTRAP"],
            extra={k: v for k, v in values.items() if k not in named},
        )


def _cluster(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLUSTER), *args], text=True, capture_output=True, check=check)


def is_up() -> bool:
    """True when every component runs and answers its health check."""
    return _cluster("status", check=False).returncode == 0


def ensure_up() -> ClusterEnv:
    """Starts the cluster unless it runs (building what is missing) and returns its env.

    Progress goes to `dev/.state/logs/ensure-up.log` (a first build takes long)."""
    state = State.default()
    state.logs.mkdir(parents=True, exist_ok=True)
    log = state.logs / "ensure-up.log"
    with log.open("w") as f:
        code = subprocess.run([str(CLUSTER), "up"], stdout=f, stderr=f, check=False).returncode
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"dev/cluster up failed ({code}); end of {log}:\n{tail}")
    return current()


def current() -> ClusterEnv:
    """The env of the cluster set up last (it may be down; see `is_up`)."""
    return ClusterEnv.from_env_file(State.default().env_file)


def down() -> None:
    """Stops every process of the cluster, pods included."""
    _cluster("down")


def kubectl(
    *args: str,
    namespace: str | None = None,
    input: str | None = None,
    check: bool = False,
    env: ClusterEnv | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs the cached kubectl against the cluster; output captured as text."""
    ce = env or current()
    argv = [str(ce.binary("kubectl"))]
    if namespace is not None:
        argv += ["--namespace", namespace]
    return subprocess.run(
        [*argv, *args],
        input=input,
        text=True,
        capture_output=True,
        check=check,
        env=os.environ | {"KUBECONFIG": str(ce.kubeconfig)},
    )
