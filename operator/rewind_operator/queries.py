"""Questions `decide` asks of an observation (pure): is the workload ready, why is it
broken, which savepoints are the app's, what restored what.

AppObserved -> bool / str / SavepointObs. Nothing here changes a status or asks for an
action; these answer, the machine decides.
"""

from __future__ import annotations

from rewind_operator.models import (
    JobStatus,
    WorkerStatus,
)
from rewind_operator.observed import AppObserved, DeploymentObs, PodObs, SavepointObs
from rewind_operator.policy import Policy
from rewind_operator.vocabulary import (
    LATEST,
    EngineState,
    PodPhase,
    SpPhase,
)


def app_savepoints(app_name: str, observed: AppObserved) -> list[SavepointObs]:
    return [s for s in observed.savepoints if s.app == app_name]


def find_savepoint(observed: AppObserved, name: str | None) -> SavepointObs | None:
    return next((s for s in observed.savepoints if s.name == name), None)


def pods_for(observed: AppObserved, digest: str | None) -> list[PodObs]:
    return [p for p in observed.pods if p.workload_hash == digest and not p.deleting]


def workload_of(observed: AppObserved, workers: int) -> DeploymentObs | None:
    """The object that runs `workers` workers: the Deployment (1) or the StatefulSet."""
    return observed.statefulset if workers > 1 else observed.deployment


def ready_workers(observed: AppObserved, digest: str | None) -> int:
    """How many pods of the workload `digest` are running and ready (one per worker)."""
    pods = [p for p in pods_for(observed, digest) if p.ready and p.phase == PodPhase.RUNNING]
    return len({p.worker if p.worker is not None else p.name for p in pods})


def is_ready(observed: AppObserved, digest: str | None, workers: int = 1) -> bool:
    """One worker: its pod (or engine) is ready. Several: every worker's pod is ready
    and the coordinator (worker 0) reports every worker running the job (each sent a
    heartbeat after the start handshake), so a job that is still starting on one
    worker is not taken for running."""
    if digest is None:
        return False
    engine = observed.engine
    engine_ready = bool(
        engine and engine.workload_hash == digest and engine.reachable and engine.ready
    )
    if workers == 1:
        return ready_workers(observed, digest) > 0 or engine_ready
    if not engine_ready or engine is None or ready_workers(observed, digest) < workers:
        return False
    running = {
        w.index
        for w in engine.workers or ()
        if w.state == EngineState.RUNNING and w.index < workers
    }
    return len(running) == workers


def crash_reason(observed: AppObserved, digest: str | None, policy: Policy) -> str | None:
    """Why the workload `digest` is clearly broken (not merely slow), if it is."""
    for pod in pods_for(observed, digest):
        who = f"pod {pod.name}" + (f" (worker {pod.worker})" if pod.worker is not None else "")
        if pod.phase == PodPhase.FAILED:
            return f"{who} failed: {pod.message or 'no message'}"
        # CrashLoopBackOff alone is not enough: the kubelet backs off after the first
        # crash already, and the chart promises `crashRestarts` restarts.
        if pod.restarts >= policy.crash_restarts:
            detail = f": {pod.message}" if pod.message else ""
            state = pod.waiting_reason or "crashed"
            return f"{who} restarted {pod.restarts} times ({state}){detail}"
    engine = observed.engine
    if engine and engine.workload_hash == digest and engine.state == EngineState.FAILED:
        return f"the job failed: {engine.error or 'see the engine log'}"
    return None


def not_ready_detail(observed: AppObserved, digest: str | None, workers: int = 1) -> str:
    pods = pods_for(observed, digest)
    if workers > 1:
        ready = ready_workers(observed, digest)
        waiting = [p for p in pods if not (p.ready and p.phase == PodPhase.RUNNING)]
        head = f"{ready}/{workers} workers ready"
        if waiting:
            return f"{head}; {_pod_detail(waiting[0])}"
        if ready < workers:
            return f"{head}; {workers - ready} worker pod(s) not created yet"
        return f"{head}; waiting for worker 0 to report every worker running the job"
    if not pods:
        return "no engine pod yet"
    return _pod_detail(pods[0])


def _pod_detail(pod: PodObs) -> str:
    if pod.waiting_reason:
        return f"pod {pod.name} is waiting: {pod.waiting_reason}" + (
            f" ({pod.message})" if pod.message else ""
        )
    return f"pod {pod.name} is {pod.phase} and not ready (restarts: {pod.restarts})"


def worker_statuses(observed: AppObserved, digest: str | None) -> list[WorkerStatus] | None:
    """Per worker of the workload `digest`: its pod and what worker 0 reports of it
    (None for a single engine)."""
    pods = {p.worker: p for p in pods_for(observed, digest) if p.worker is not None}
    engine = observed.engine
    reports = {}
    if engine is not None and engine.reachable and engine.workload_hash == digest:
        reports = {w.index: w for w in engine.workers or ()}
    if not pods and not reports:
        return None
    out = []
    for index in sorted(pods.keys() | reports.keys()):
        pod = pods.get(index)
        report = reports.get(index)
        out.append(
            WorkerStatus(
                index=index,
                pod=pod.name if pod else None,
                ready=bool(pod and pod.ready and pod.phase == PodPhase.RUNNING),
                restarts=pod.restarts if pod else 0,
                state=report.state if report else None,
                records_in=report.records_in if report else None,
                records_out=report.records_out if report else None,
                lag=report.lag if report else None,
            )
        )
    return out


def job_status(observed: AppObserved, digest: str | None) -> JobStatus | None:
    engine = observed.engine
    if engine is None or not engine.reachable or engine.workload_hash != digest:
        return None
    return JobStatus(
        id=engine.job_id,
        state=engine.state,
        restored_from=engine.restored_from,
        sources=engine.sources,
        records_in=engine.records_in,
        records_out=engine.records_out,
        last_checkpoint=engine.last_checkpoint,
        workers=worker_statuses(observed, digest),
    )


def newest_completed(savepoints: list[SavepointObs]) -> SavepointObs | None:
    done = [s for s in savepoints if s.phase == SpPhase.COMPLETED and s.path and not s.deleting]
    return max(done, key=lambda s: (s.completed_at or s.created_at, s.name), default=None)


def describe_restore(restore: str | None) -> str:
    if restore is None:
        return "from empty state"
    if restore == LATEST:
        return "from the newest checkpoint"
    return f"restored from {restore}"
