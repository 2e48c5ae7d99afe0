"""A running job: build subtasks, restore, drive them, snapshot, stop.

Flows through here: a validated Dataflow and Settings in; the scheduler loop runs every
subtask round robin on one asyncio loop (so the control API, in the same loop, needs no
locks), sleeps briefly when nothing moved, and on every round lets the coordinator
run a slice of snapshot work, finish snapshots, trigger periodic checkpoints, discover
new source splits and fire processing-time timers.

What must stay true:
- state advances only by the subtasks' own processing; snapshots pause it only for
  bounded slices of work (snapshot_work.py);
- a failed savepoint leaves the job RUNNING (a stop that failed resumes the sources);
- a bounded flow ends with a final checkpoint (which commits the sinks) and FINISHED;
- a restored split position is never dropped: a split its source does not list at start
  is parked in its subtask (kept in every snapshot) and opened once discovered;
- user code that raises ends the job FAILED with the error logged; no silent retries
  (restarting is the deployment's job, from the latest checkpoint).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import traceback
from datetime import UTC, datetime
from typing import Any

import structlog

from .. import snapshots
from ..dataflow import Dataflow, SourceSpec
from ..settings import Settings
from .coordinator import COMPLETED, Coordinator, SnapshotRequest
from .graph import build_tasks
from .operators import SinkOp
from .rates import Rates
from .restore import RestoreError, resolve, restore_tasks
from .splits import Splits
from .step_errors import StepError
from .tasks import SourceTask, Task, TaskBase

log = structlog.get_logger("rewind.job")

RUNNING, STOPPING, FINISHED, FAILED, CANCELED = (
    "RUNNING",
    "STOPPING",
    "FINISHED",
    "FAILED",
    "CANCELED",
)
DONE = (FINISHED, FAILED, CANCELED)


class Job:
    """One execution of a dataflow in this process."""

    def __init__(
        self, flow: Dataflow, settings: Settings | None = None, flow_ref: str = ""
    ) -> None:
        self.flow = flow
        self.settings = settings or Settings()
        self.flow_ref = flow_ref or flow.name
        self.job_id = self.settings.job_id or secrets.token_hex(6)
        self.attempt = secrets.token_hex(4)
        self.state = RUNNING
        self.ready = False
        self.error: str | None = None
        self.restored_from: str | None = None
        self.last_checkpoint: SnapshotRequest | None = None
        self.last_savepoint: SnapshotRequest | None = None
        self.stop_request: SnapshotRequest | None = None
        self.failed_snapshots: dict[str, int] = {}
        self.snapshot_stats: dict[str, tuple[int, float, int]] = {}
        """kind -> (completed count, total seconds, size in bytes of the last one)."""
        self.started = time.monotonic()
        self.running_since: str | None = None
        """UTC time (ISO) at which restore was done and records began to flow."""
        self._clock = self.settings.runtime.clock
        self.rates = Rates()
        """Recent records/s per step (sampled by the loop about once a second)."""
        sp = self.settings.parallelism
        self.tasks: list[TaskBase] = self._build()
        self.sources = [t for t in self.tasks if isinstance(t, SourceTask)]
        self.coordinator = Coordinator(
            tasks=self.tasks,
            meta=self._meta,
            max_parallelism=sp.max_parallelism,
            timeout_s=self.settings.snapshots.timeout_s,
            on_complete=self._snapshot_completed,
            on_failed=self._snapshot_failed,
            incremental=self.settings.snapshots.incremental_checkpoints,
            full_every=self.settings.snapshots.full_checkpoint_every,
        )
        self._cancel = False
        self._next_checkpoint = 0.0
        self._next_discovery = 0.0
        self.splits = Splits(
            flow, self.sources, sp.parallelism, distributed=self.settings.workers.workers > 1
        )

    def _build(self, **more: Any) -> list[TaskBase]:
        sp = self.settings.parallelism
        return build_tasks(
            self.flow,
            parallelism=sp.parallelism,
            max_parallelism=sp.max_parallelism,
            channel_capacity=self.settings.runtime.channel_capacity,
            batch_size=self.settings.runtime.batch_size,
            job_id=self.job_id,
            attempt=self.attempt,
            now_ms=self._clock.now_ms,
            snapshots=self,
            app=self.settings.app,
            **more,
        )

    @property
    def requests(self) -> dict[str, SnapshotRequest]:
        """Snapshot requests by id, as GET /savepoints/{id} reports them."""
        return self.coordinator.requests

    # -- SnapshotSink (called by subtasks at barriers) -----------------------------------

    def ack(self, task: TaskBase, checkpoint_id: int, capture: Any) -> None:
        self.coordinator.ack(task, checkpoint_id, capture)

    def _meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "job_id": self.job_id,
            "flow": self.flow_ref,
            "max_parallelism": self.settings.parallelism.max_parallelism,
            "dataflow": self.flow.name,
            "parallelism": self.settings.parallelism.parallelism,
        }
        if self.settings.snapshots.deployment_id:
            meta["deployment_id"] = self.settings.snapshots.deployment_id
        if self.settings.app:
            meta["app"] = self.settings.app
        return meta

    # -- setup --------------------------------------------------------------------

    def _setup(self) -> None:
        """Restore (if asked), assign source splits, open operators. Blocking."""
        snap = self.settings.snapshots
        uri = resolve(snap.restore, snap.location, snap.deployment_id, app=self.settings.app)
        restored = None
        if uri is not None:
            restored = restore_tasks(
                uri,
                self.tasks,
                max_parallelism=self.settings.parallelism.max_parallelism,
                allow_non_restored_state=snap.allow_non_restored_state,
                flow_uids={s.uid for s in self.flow.steps},
            )
            self.restored_from = restored.uri
            self.coordinator.next_checkpoint_id = restored.checkpoint_id + 1
        if self.settings.job_id:  # a reused id: carry on after the checkpoints already there
            last = snapshots.last_checkpoint_number(snap.location, self.job_id)
            self.coordinator.next_checkpoint_id = max(self.coordinator.next_checkpoint_id, last + 1)
        self.splits.assign(restored.sources if restored else {})
        for task in self.tasks:
            if isinstance(task, Task):
                try:
                    task.op.open()
                except Exception as exc:  # a sink that cannot connect, a broken open()
                    raise RuntimeError(
                        f"step {task.uid!r} could not open: {type(exc).__name__}: {exc}"
                    ) from exc
        for source in self.sources:
            source.start()

    # -- requests from the control API ------------------------------------------------

    def trigger_savepoint(
        self, target: str | None = None, *, stop: bool = False, drain: bool = False
    ) -> SnapshotRequest:
        """Start a savepoint; returns at once (poll the request's status)."""
        if self.state in DONE:
            raise RuntimeError(f"the job is {self.state}")
        if stop and self.stop_request is not None and self.stop_request.status != "FAILED":
            return self.stop_request  # idempotent: one stop at a time
        sid = snapshots.new_savepoint_id()
        location = self.settings.snapshots.location
        uri = target or snapshots.default_savepoint_uri(location, sid)
        request = SnapshotRequest(sid, "savepoint", uri, stop=stop, drain=drain)
        if stop:
            self.stop_request = request
            self.state = STOPPING
        log.info("savepoint_requested", id=sid, target=uri, stop=stop, drain=drain)
        return self.coordinator.trigger(request)

    def cancel(self) -> None:
        """Stop at once, without a savepoint (staged sink output is not committed)."""
        self._cancel = True

    def _trigger_checkpoint(self, final: bool = False) -> None:
        # Any checkpoint triggered once every bounded source is exhausted follows all of
        # the input, so it can end the job (else busy periodic checkpoints would starve
        # the final one).
        final = final or all(s.is_finished() for s in self.sources)
        cid = self.coordinator.next_checkpoint_id
        uri = snapshots.checkpoint_uri(self.settings.snapshots.location, self.job_id, cid)
        self.coordinator.trigger(SnapshotRequest(f"chk-{cid}", "checkpoint", uri, final=final))

    def _snapshot_completed(self, request: SnapshotRequest) -> None:
        for task in self.tasks:
            if task.operator is not None:
                task.operator.notify_complete(request.checkpoint_id or 0)
        for source in self.sources:
            source.notify_complete(request.checkpoint_id or 0)
        count, total, _ = self.snapshot_stats.get(request.kind, (0, 0.0, 0))
        self.snapshot_stats[request.kind] = (
            count + 1,
            total + (request.duration_s or 0.0),
            request.size_bytes or 0,
        )
        if request.kind == "savepoint":
            self.last_savepoint = request
        else:
            self.last_checkpoint = request
            self._after_checkpoint()
        if request.stop or request.final:
            self.state = FINISHED

    def _after_checkpoint(self) -> None:
        keep = self.settings.snapshots.checkpoints_retained
        location, job_id = self.settings.snapshots.location, self.job_id
        self.coordinator._prep.submit(_prune, location, job_id, keep)

    def _snapshot_failed(self, request: SnapshotRequest) -> None:
        self.failed_snapshots[request.kind] = self.failed_snapshots.get(request.kind, 0) + 1
        if request.stop:
            for source in self.sources:
                source.resume()
            if self.state == STOPPING:
                self.state = RUNNING

    # -- the loop -----------------------------------------------------------------

    async def run(self) -> str:
        """Run until finished, stopped, cancelled or failed; returns the final state."""
        log.info(
            "job_starting",
            job_id=self.job_id,
            flow=self.flow_ref,
            parallelism=self.settings.parallelism.parallelism,
            restore=self.settings.snapshots.restore,
        )
        try:
            await asyncio.to_thread(self._setup)
        except RestoreError as exc:
            return self._failed(str(exc), None)
        except Exception as exc:
            return self._failed(f"cannot start the job: {type(exc).__name__}: {exc}", exc)
        self.ready = True
        self.running_since = datetime.now(UTC).isoformat()
        log.info("job_running", job_id=self.job_id, restored_from=self.restored_from)
        try:
            await self._loop()
        except StepError as exc:  # its message names the step, the record and the cause
            return self._failed(str(exc), exc)
        except Exception as exc:
            return self._failed(f"{type(exc).__name__}: {exc}", exc)
        finally:
            self._close()
        log.info("job_ended", job_id=self.job_id, state=self.state)
        return self.state

    def _failed(self, error: str, exc: BaseException | None) -> str:
        self.state = FAILED
        self.error = error
        tb = "".join(traceback.format_exception(exc)) if exc is not None else None
        log.error("job_failed", job_id=self.job_id, error=error, traceback=tb)
        return self.state

    async def _loop(self) -> None:
        rt = self.settings.runtime
        interval = self.settings.snapshots.checkpoint_interval_s
        now = time.monotonic()
        self._next_checkpoint = now + interval if interval else float("inf")
        self._next_discovery = now + rt.split_discovery_interval_s
        tasks = self.tasks
        coordinator = self.coordinator
        clock = self._clock
        rounds = 0
        last_ms = clock.now_ms()
        while True:
            progressed = False
            for task in tasks:
                if task.run_once():
                    progressed = True
            # A slice of snapshot work (grouping, encoding): a share of the round while
            # the tasks are busy, more when they are idle (snapshot_work.py).
            worked = coordinator.run_work(tasks_idle=not progressed)
            coordinator.poll()
            progressed = self._round() or progressed or worked
            if self.state == FINISHED and self.reason() is None:
                return  # (a sink still committing in the background is waited for)
            if self._cancel:
                self.state = CANCELED
                return
            now = time.monotonic()
            if now >= self._next_checkpoint:
                self._next_checkpoint = now + (interval or 0)
                if not coordinator.busy and self.state == RUNNING and self._triggers:
                    self._trigger_checkpoint()
            if self.rates.due(now):
                self.rates.sample(now, self.step_metrics())
            if now >= self._next_discovery:
                self._next_discovery = now + rt.split_discovery_interval_s
                self.splits.discover()
            now_ms = clock.now_ms()
            if now_ms != last_ms:
                last_ms = now_ms
                for task in tasks:
                    if task.operator is not None:
                        task.operator.on_processing_time(now_ms)
            if (
                not progressed
                and not coordinator.busy
                and self.state == RUNNING
                and self._triggers
                and all(s.is_finished() for s in self.sources)
            ):
                # The barrier follows every record still in flight, so the final
                # checkpoint sees (and its sinks commit) all of the output.
                self._trigger_checkpoint(final=True)
            rounds += 1
            if not progressed:
                await asyncio.sleep(rt.idle_sleep_s)
            elif rounds % 4 == 0:
                await asyncio.sleep(0)

    _triggers = True
    """This process decides when checkpoints happen (a worker of several does not)."""

    def _round(self) -> bool:
        """Once per scheduler round, after the subtasks: True if anything moved."""
        return False

    def _close(self) -> None:
        self.coordinator.close()
        for task in self.tasks:
            try:
                if isinstance(task, SourceTask):
                    task.close()
                elif task.operator is not None:
                    task.operator.close()
            except Exception as exc:  # closing must not hide the job's real outcome
                log.warning("close_failed", task=task.name, error=str(exc))
        for step in self.flow.steps:
            if isinstance(step.spec, SourceSpec):
                step.spec.source.close()

    # -- observation --------------------------------------------------------------

    def step_metrics(self) -> dict[str, tuple[int, int]]:
        """uid -> (records in, records out), summed over subtasks."""
        out: dict[str, tuple[int, int]] = {}
        for task in self.tasks:
            i, o = out.get(task.uid, (0, 0))
            out[task.uid] = (i + task.records_in, o + task.records_out)
        return out

    def reason(self) -> str | None:
        """What the job waits for right now (a sink's commit to a stalled broker), or
        None. Raises the error a sink's background commit ended with."""
        for task in self.tasks:
            op = task.operator
            if isinstance(op, SinkOp):
                why = op.committing()
                if why is not None:
                    return f"{task.name}: {why}"
        return None

    def status(self) -> dict[str, Any]:
        def brief(req: SnapshotRequest | None) -> dict[str, Any] | None:
            if req is None:
                return None
            return {"id": req.id, "location": req.target, "completed_at": req.completed_at}

        sources: dict[str, dict[str, Any]] = {}
        for task in self.sources:
            sources.setdefault(task.uid, {}).update(task.positions(for_status=True))
        metrics = self.step_metrics()
        rates = self.rates.rates()
        age = self.last_snapshot_age_s(checkpoints_only=True)
        source_uids = {t.uid for t in self.sources}
        sink_uids = {s.uid for s in self.flow.steps if not s.consumers}
        return {
            "job_id": self.job_id,
            "state": self.state,
            "flow": self.flow_ref,
            "parallelism": self.settings.parallelism.parallelism,
            "max_parallelism": self.settings.parallelism.max_parallelism,
            "restored_from": self.restored_from,
            "last_checkpoint": brief(self.last_checkpoint),
            "last_savepoint": brief(self.last_savepoint),
            "sources": sources,
            # Each record read counts once, however many branches read it; records_out
            # sums over sinks (a flow with two sinks writes every record twice).
            "records_in": sum(metrics[u][1] for u in source_uids),
            "records_out": sum(metrics[u][0] for u in sink_uids),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "running_since": self.running_since,
            "error": self.error,
            "reason": self._status_reason(),
            # Age of the newest completed checkpoint: how much input a crash would replay.
            "last_checkpoint_age_s": None if age is None else round(age, 1),
            "steps": {
                u: {
                    "records_in": i,
                    "records_out": o,
                    # Over the last ~10 s; null until two samples a second apart exist.
                    "records_in_per_s": (rates.get(u) or (None, None))[0],
                    "records_out_per_s": (rates.get(u) or (None, None))[1],
                }
                for u, (i, o) in metrics.items()
            },
        }

    def _status_reason(self) -> str | None:
        if self.state in DONE and self.state != FINISHED:
            return None
        try:
            return self.reason()
        except Exception as exc:  # the loop fails the job with it on its next round
            return f"a sink's commit failed: {exc}"

    def last_snapshot_age_s(self, *, checkpoints_only: bool = False) -> float | None:
        """Seconds since the newest completed checkpoint (or savepoint, unless
        `checkpoints_only`); None when there is none yet."""
        candidates = (
            (self.last_checkpoint,)
            if checkpoints_only
            else (
                self.last_checkpoint,
                self.last_savepoint,
            )
        )
        done = [
            datetime.fromisoformat(r.completed_at)
            for r in candidates
            if r is not None and r.completed_at is not None
        ]
        return (datetime.now(UTC) - max(done)).total_seconds() if done else None


def _prune(location: str, job_id: str, keep: int) -> None:
    try:
        snapshots.prune(location, job_id, keep)
    except Exception as exc:  # pruning is housekeeping; a failure must not fail the job
        log.warning("prune_failed", location=location, job_id=job_id, error=str(exc))


__all__ = ["COMPLETED", "Job"]
