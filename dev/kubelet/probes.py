"""Probes: when a result counts (pure) and how one attempt is made (network, processes).

Flows through: a probe spec from the pod (``httpGet``, ``tcpSocket``, ``exec``; the
apiserver has already defaulted the numbers), the pod IP and the container's ports.

What must stay true (Kubernetes semantics):

- a result flips only after ``successThreshold`` consecutive successes or
  ``failureThreshold`` consecutive failures;
- before its first flip a readiness or startup probe says "not yet", a liveness probe
  says "alive";
- probes start ``initialDelaySeconds`` after the container started and repeat every
  ``periodSeconds``; one attempt is cut after ``timeoutSeconds`` and then counts as a
  failure;
- httpGet succeeds on a status from 200 to 399 and goes to the pod IP unless ``host``
  is set; a named port is looked up in the container's ports.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

JsonDict = dict[str, Any]
ProbeKind = Literal["startup", "readiness", "liveness"]


@dataclass(frozen=True)
class ProbeTiming:
    """The numbers of a probe, with Kubernetes' defaults."""

    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_spec(cls, spec: JsonDict) -> ProbeTiming:
        return cls(
            initial_delay=float(spec.get("initialDelaySeconds", 0)),
            period=float(spec.get("periodSeconds", 10) or 10),
            timeout=float(spec.get("timeoutSeconds", 1) or 1),
            success_threshold=int(spec.get("successThreshold", 1) or 1),
            failure_threshold=int(spec.get("failureThreshold", 3) or 3),
        )


@dataclass
class ProbeTracker:
    """Consecutive results of one probe of one container instance, and the verdict."""

    kind: ProbeKind
    timing: ProbeTiming
    verdict: bool = field(init=False)
    decided: bool = field(default=False, init=False)
    _successes: int = field(default=0, init=False)
    _failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.verdict = self.kind == "liveness"

    def record(self, ok: bool) -> bool:
        """Count one attempt; True when the verdict changed."""
        if ok:
            self._successes += 1
            self._failures = 0
            flip = not self.verdict and self._successes >= self.timing.success_threshold
        else:
            self._failures += 1
            self._successes = 0
            flip = self.verdict and self._failures >= self.timing.failure_threshold
            # A startup probe that never succeeded fails for good after the threshold.
            if self.kind == "startup" and self._failures >= self.timing.failure_threshold:
                self.decided = True
                return False
        if flip:
            self.verdict = ok
            self.decided = True
        return flip

    @property
    def failed(self) -> bool:
        """Liveness or startup has given up on the container: it must be killed."""
        if self.kind == "liveness":
            return not self.verdict
        if self.kind == "startup":
            return self.decided and not self.verdict
        return False


def resolve_port(port: int | str, container: JsonDict) -> int:
    """A probe port: a number, a numeric string, or the name of a container port."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"port {port!r} is not a named port of container {container.get('name')}")


def http_get(spec: JsonDict, pod_ip: str, container: JsonDict, timeout: float) -> bool:
    """One httpGet attempt: 200..399 is a success; anything else, or no answer, a failure."""
    host = spec.get("host") or pod_ip
    port = resolve_port(spec["port"], container)
    path = spec.get("path") or "/"
    headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
    headers.setdefault("User-Agent", "kube-probe/rewind-dev")
    conn: http.client.HTTPConnection
    if (spec.get("scheme") or "HTTP").upper() == "HTTPS":
        # Kubernetes does not verify a probed server's certificate either.
        context = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return 200 <= status < 400


def tcp_socket(spec: JsonDict, pod_ip: str, container: JsonDict, timeout: float) -> bool:
    """One tcpSocket attempt: the port accepts a connection."""
    host = spec.get("host") or pod_ip
    try:
        with socket.create_connection((host, resolve_port(spec["port"], container)), timeout):
            return True
    except OSError:
        return False


def run_exec(argv: Sequence[str], env: Mapping[str, str], cwd: str, timeout: float) -> bool:
    """One exec attempt: the command exits 0 within the timeout."""
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
