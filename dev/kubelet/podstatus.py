"""Pod status from what the kubelet knows about its containers. Pure.

Flows through: the pod (for its spec and existing conditions), one ``ContainerView`` per
init container and container, the pod IP, the start time. Out comes the ``status`` patch.

What must stay true (the kubelet's ``getPhase`` and ``generateAPIPodStatus``):

- a terminal phase (Succeeded, Failed) is never left again;
- Pending while init containers run or a container has never started; Running once all
  have started and one runs, or all stopped but will restart; Succeeded when all exited
  0 and none restarts; Failed when one failed and will not restart;
- a container waiting to restart counts as stopped, not as "not yet started";
- ``lastTransitionTime`` of a condition changes only when its status changes, and
  conditions owned by others (PodScheduled, DisruptionTarget, readiness gates) are kept;
- the patch is a strategic merge patch: absent container states are sent as null so that
  ``waiting`` does not linger beside ``running``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

JsonDict = dict[str, Any]
State = Literal["waiting", "running", "terminated"]


def now_rfc3339() -> str:
    """Now as the API writes times: whole seconds, UTC, ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Terminated:
    """How one container instance ended."""

    exit_code: int
    reason: str
    started_at: str | None
    finished_at: str
    container_id: str | None = None
    signal: int | None = None
    message: str | None = None

    def to_json(self) -> JsonDict:
        out: JsonDict = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        if self.signal:
            out["signal"] = self.signal
        if self.message:
            out["message"] = self.message
        return out

    @classmethod
    def from_json(cls, data: JsonDict) -> Terminated:
        return cls(
            exit_code=int(data["exitCode"]),
            reason=str(data.get("reason") or ""),
            started_at=data.get("startedAt"),
            finished_at=str(data.get("finishedAt") or now_rfc3339()),
            container_id=data.get("containerID"),
            signal=data.get("signal"),
            message=data.get("message"),
        )


def termination_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


@dataclass(frozen=True)
class ContainerView:
    """What the kubelet knows of one container right now."""

    name: str
    image: str
    image_id: str
    state: State
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    started_at: str | None = None
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    will_restart: bool = False

    def to_json(self) -> JsonDict:
        state: JsonDict = {"waiting": None, "running": None, "terminated": None}
        if self.state == "waiting":
            waiting: JsonDict = {"reason": self.waiting_reason or "ContainerCreating"}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state["waiting"] = waiting
        elif self.state == "running":
            state["running"] = {"startedAt": self.started_at}
        elif self.terminated is not None:
            state["terminated"] = self.terminated.to_json()
        last: JsonDict = {"waiting": None, "running": None, "terminated": None}
        if self.last_terminated is not None:
            last["terminated"] = self.last_terminated.to_json()
        out: JsonDict = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": state,
            "lastState": last,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "containerID": self.container_id,
        }
        return out


def pod_phase(
    previous: str | None,
    restart_policy: str,
    init_done: bool,
    init_failed: bool,
    containers: Sequence[ContainerView],
) -> str:
    """The pod phase, after the kubelet's getPhase."""
    if previous in ("Succeeded", "Failed"):
        return previous
    if init_failed:
        return "Failed"
    if not init_done:
        return "Pending"
    waiting = running = stopped = succeeded = 0
    for c in containers:
        if c.state == "running":
            running += 1
        elif c.state == "terminated":
            stopped += 1
            if c.terminated is not None and c.terminated.exit_code == 0:
                succeeded += 1
        elif c.last_terminated is not None:
            stopped += 1
            if c.last_terminated.exit_code == 0:
                succeeded += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if not stopped:
        return "Pending"
    if any(c.will_restart for c in containers) or restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if restart_policy == "Never":
        return "Failed"
    return "Running"


def _condition(
    previous: dict[str, JsonDict], ctype: str, ok: bool, reason: str | None, message: str | None
) -> JsonDict:
    status = "True" if ok else "False"
    old = previous.get(ctype)
    changed = old is None or old.get("status") != status
    return {
        "type": ctype,
        "status": status,
        "reason": None if ok else reason,
        "message": None if ok else message,
        "lastProbeTime": None,
        "lastTransitionTime": now_rfc3339()
        if changed or old is None
        else old.get("lastTransitionTime"),
    }


def pod_status(
    pod: JsonDict,
    init_views: Sequence[ContainerView],
    views: Sequence[ContainerView],
    pod_ip: str,
    host_ip: str,
    start_time: str,
    init_failed: bool = False,
    terminal: str | None = None,
) -> JsonDict:
    """The status patch. ``terminal`` forces Succeeded/Failed (the pod was deleted)."""
    old_status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    init_done = all(
        v.state == "terminated" and v.terminated is not None and v.terminated.exit_code == 0
        for v in init_views
    )
    phase = pod_phase(
        old_status.get("phase"), spec.get("restartPolicy", "Always"), init_done, init_failed, views
    )
    if terminal is not None and phase not in ("Succeeded", "Failed"):
        phase = terminal
    previous = {c["type"]: c for c in old_status.get("conditions") or []}
    not_ready = [v.name for v in views if not v.ready]
    terminal_phase = phase in ("Succeeded", "Failed")
    ready_reason = "PodCompleted" if terminal_phase else "ContainersNotReady"
    ready_message = (
        None if terminal_phase else f"containers with unready status: [{' '.join(not_ready)}]"
    )
    uninit = [
        v.name
        for v in init_views
        if not (v.state == "terminated" and v.terminated and v.terminated.exit_code == 0)
    ]
    gates = [g["conditionType"] for g in spec.get("readinessGates") or []]
    gates_ok = all(previous.get(g, {}).get("status") == "True" for g in gates)
    containers_ready = not not_ready and not terminal_phase
    conditions = [
        _condition(previous, "PodReadyToStartContainers", not terminal_phase, None, None),
        _condition(
            previous,
            "Initialized",
            init_done,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(uninit)}]",
        ),
        _condition(previous, "ContainersReady", containers_ready, ready_reason, ready_message),
        _condition(previous, "Ready", containers_ready and gates_ok, ready_reason, ready_message),
    ]
    status: JsonDict = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "containerStatuses": [v.to_json() for v in views],
        "initContainerStatuses": [v.to_json() for v in init_views] if init_views else None,
    }
    return status
