"""One worker process of a job that runs as several (Settings.workers.workers > 1).

Flows through here: the same dataflow and settings as a single-process job, plus this
worker's index. The worker builds only its own subtasks (placement.py), wired to the
other workers through the exchange (exchange.py), and takes part in global snapshots
through the control topic (control_bus.py); worker 0 also runs the job's coordinator
(global_checkpoint.py) and serves its control API. A worker's life, step by step:

1. Build: its subtasks; edges to subtasks of other workers become remote channels.
2. Setup (as one process): restore its subtasks' key groups and the splits its source
   subtasks own from the snapshot (state by key group, so any worker count restores
   any snapshot); create the exchange and control topics; position its consumers at
   the end of every partition it reads.
3. Handshake: answer the coordinator's ANNOUNCE with HELLO and wait for GO; nothing is
   produced before GO. Every exchange message is tagged with the attempt it carries.
4. Run: the scheduler loop of one process, plus, every round, the exchange (send what
   lingered, consume what arrived) and the control messages; a heartbeat every
   `heartbeat_s`.
5. Snapshots: TRIGGER n makes the local coordinator inject barrier n; when every
   local subtask acknowledged, the worker's files and part are written and PART n
   is reported; COMMIT n completes it (sinks commit), ABORT n fails it.
6. End: a final or stop snapshot's COMMIT finishes the worker; FAIL, CANCEL, or a
   coordinator silent for `worker_timeout_s` end it with a clear error.

A broker that stops answering silences every worker at once; that is not a dead worker.
So silence only counts while the broker acknowledges this worker's control messages:
once it has left one waiting for `worker_timeout_s / 4` (at least 1 s; `_bus_stalled`),
the clocks of silence stand still, `/status` says why in `reason`, and the job waits.
Records and barriers stay queued in the producer (idempotent, in order) and flow again
when the broker is back, so the outcome is exact. A broker gone for longer than the
producer's `message.timeout.ms` fails a delivery, and with it the job (a full restart).
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from .. import snapshots
from ..connectors.kafka.config import bootstrap_servers
from ..dataflow import Dataflow
from ..settings import Settings
from . import control_bus as bus
from .coordinator import Coordinator, SnapshotRequest
from .exchange import Exchange
from .global_checkpoint import GlobalCoordinator
from .job import DONE, RUNNING, STOPPING, Job
from .placement import Placement, control_topic
from .tasks import TaskBase

log = structlog.get_logger("rewind.worker")


class WorkerError(RuntimeError):
    """The job cannot go on as several workers (a worker died, the coordinator left)."""


class WorkerJob(Job):
    """A job's share on one worker process (see the module docstring)."""

    _triggers = False  # checkpoints are triggered by the coordinator, for all workers

    def __init__(self, flow: Dataflow, settings: Settings, flow_ref: str = "") -> None:
        ws = settings.workers
        self.placement = Placement(ws.worker, ws.workers)
        if not settings.job_id:
            raise ValueError(
                "a job of several workers needs --job-id (the same on every worker): it "
                "names the job's exchange and control topics and its checkpoints"
            )
        if settings.parallelism.parallelism < ws.workers:
            raise ValueError(
                f"parallelism {settings.parallelism.parallelism} is below the number of "
                f"workers {ws.workers}: every worker needs at least one subtask of each step"
            )
        self.servers = bootstrap_servers(ws.kafka_bootstrap)
        self.exchange = Exchange(
            self.servers,
            f"rewind-{settings.job_id}-worker-{ws.worker}",
            linger_s=ws.linger_s,
            max_records=ws.max_records,
            queue_limit=max(64, settings.runtime.channel_capacity * 16),
            high_water=settings.runtime.channel_capacity * 4,
        )
        self._topics: dict[str, int] = {}
        self._retire = None if ws.retire_jobs is None else re.compile(ws.retire_jobs)
        super().__init__(flow, settings, flow_ref)
        self.coordinator = Coordinator(
            tasks=self.tasks,
            meta=self._meta,
            max_parallelism=settings.parallelism.max_parallelism,
            timeout_s=settings.snapshots.timeout_s,
            on_complete=self._snapshot_completed,
            on_failed=self._snapshot_failed,
            part=self._write_part,
            on_part=self._part_written,
            # Each worker references only its own subtasks' blocks, and takes what it
            # wrote as its base only on COMMIT n (the global manifest exists).
            incremental=settings.snapshots.incremental_checkpoints,
            full_every=settings.snapshots.full_checkpoint_every,
        )
        self.control_topic = control_topic(settings.job_id)
        self.run_attempt: str | None = None
        self.go = False
        self._positions: dict[int, dict[str, dict[int, int]]] = {}
        self._heard = time.monotonic()
        self._last_hb = 0.0
        self._failure: str | None = None
        self._bus_reason: str | None = None
        self.leader: GlobalCoordinator | None = None
        if ws.worker == 0:
            self.leader = GlobalCoordinator(
                workers=ws.workers,
                send=self._send_down,
                meta=self._meta,
                first_checkpoint_id=1,
                heartbeat_s=ws.heartbeat_s,
                worker_timeout_s=ws.worker_timeout_s,
                start_timeout_s=ws.start_timeout_s,
                snapshot_timeout_s=settings.snapshots.timeout_s,
                on_committed=self._global_committed,
            )

    def _build(self, **more: Any) -> list[TaskBase]:
        return super()._build(placement=self.placement, exchange=self.exchange, topics=self._topics)

    def _meta(self) -> dict[str, Any]:
        return {**super()._meta(), "workers": self.placement.workers}

    # -- control messages -----------------------------------------------------------

    def _send(self, partition: int, kind: str, fields: dict[str, Any]) -> None:
        attempt = self.leader.attempt if self.leader is not None else (self.run_attempt or "")
        value = bus.encode(kind, attempt, self.placement.worker, fields)
        self.exchange.produce(self.control_topic, partition, value, control=True)
        self.exchange.producer.poll(0)

    def _send_down(self, kind: str, fields: dict[str, Any]) -> None:
        self._send(bus.DOWN, kind, fields)

    def _on_control(self, partition: int, value: bytes) -> None:
        msg = bus.decode(value)
        if partition == bus.UP:
            if self.leader is not None:
                self.leader.on_message(msg)
            return
        kind, attempt = msg["k"], msg["a"]
        if kind == bus.ANNOUNCE and self.run_attempt is None:
            self.run_attempt = self.exchange.attempt = attempt
            log.info("worker_joining", worker=self.placement.worker, attempt=attempt)
        if attempt != self.run_attempt:
            return  # an older (or another) coordinator's message
        self._heard = time.monotonic()
        if kind == bus.ANNOUNCE and not self.go:
            self._send(bus.UP, bus.HELLO, {})
        elif kind == bus.GO:
            self.go = True
        elif kind == bus.TRIGGER:
            self._on_trigger(msg)
        elif kind == bus.COMMIT:
            self.coordinator.complete_global(msg["n"], msg["size"], msg["sources"])
        elif kind == bus.ABORT:
            self.coordinator.fail_global(msg["n"], msg["error"])
        elif kind == bus.FAIL and self._failure is None:
            self._failure = str(msg["reason"])
        elif kind == bus.CANCEL:
            self._cancel = True

    def _on_trigger(self, msg: dict[str, Any]) -> None:
        request = SnapshotRequest(
            msg["id"],
            msg["kind"],
            msg["target"],
            stop=msg["stop"],
            drain=msg["drain"],
            final=msg["final"],
        )
        if request.stop:
            self.stop_request = self.stop_request or request
            self.state = STOPPING
        self.coordinator.next_checkpoint_id = msg["n"]
        self.coordinator.trigger(request)

    # -- snapshots ------------------------------------------------------------------

    def ack(self, task: TaskBase, checkpoint_id: int, capture: Any) -> None:
        # The exchange positions as of the last local barrier: everything consumed
        # before is either in this snapshot's state or regenerated by a replay.
        self._positions[checkpoint_id] = self.exchange.snapshot_positions()
        super().ack(task, checkpoint_id, capture)

    def _write_part(self, writer: snapshots.SnapshotWriter) -> snapshots.WorkerPart:
        cid = int(writer.meta.extra.get("checkpoint_id", 0))
        positions = self._positions.pop(cid, {})
        return writer.finish_part(self.placement.worker, self.placement.workers, positions)

    def _part_written(self, request: SnapshotRequest, part: snapshots.WorkerPart) -> None:
        self._send(bus.UP, bus.PART, {"n": request.checkpoint_id, "ok": True})

    def _snapshot_failed(self, request: SnapshotRequest) -> None:
        self._send(
            bus.UP, bus.PART, {"n": request.checkpoint_id, "ok": False, "error": request.error}
        )
        super()._snapshot_failed(request)

    def _after_checkpoint(self) -> None:
        pass  # the coordinator prunes, once, for the whole job

    def _global_committed(self, request: SnapshotRequest, manifest: snapshots.Manifest) -> None:
        try:
            self.exchange.purge(manifest.exchange)
        except Exception as exc:  # housekeeping: the data stays until the next checkpoint
            log.warning("exchange_purge_failed", error=str(exc))
        if self._retire is not None:
            # Once this version has a committed snapshot, the older ones' topics are
            # garbage: it never needs them, and a rollback creates its own again.
            self.exchange.retire(self._retire, self.job_id)
            self._retire = None
        if request.kind == "checkpoint":
            super()._after_checkpoint()

    @property
    def requests(self) -> dict[str, SnapshotRequest]:
        return self.leader.requests if self.leader is not None else self.coordinator.requests

    def trigger_savepoint(
        self, target: str | None = None, *, stop: bool = False, drain: bool = False
    ) -> SnapshotRequest:
        if self.leader is None:
            raise RuntimeError("savepoints are taken through the coordinator (worker 0)")
        if self.state in DONE:
            raise RuntimeError(f"the job is {self.state}")
        if stop and self.stop_request is not None and self.stop_request.status != "FAILED":
            return self.stop_request
        sid = snapshots.new_savepoint_id()
        uri = target or snapshots.default_savepoint_uri(self.settings.snapshots.location, sid)
        request = SnapshotRequest(sid, "savepoint", uri, stop=stop, drain=drain)
        if stop:
            self.stop_request = request
        log.info("savepoint_requested", id=sid, target=uri, stop=stop, drain=drain)
        return self.leader.trigger(request)

    def cancel(self) -> None:
        if self.leader is not None and self.run_attempt is not None:
            self._send_down(bus.CANCEL, {})
        super().cancel()

    # -- the loop -------------------------------------------------------------------

    def _setup(self) -> None:
        super()._setup()
        if self.leader is not None:
            # Go on from the restored checkpoint's number: a restarted job of the same id
            # (a pod restarted with its arguments) must not write chk-1 again over the
            # checkpoints its first run left in the same folder.
            self.leader.next_checkpoint_id = self.coordinator.next_checkpoint_id
        self.exchange.ensure_topics({**self._topics, self.control_topic: bus.PARTITIONS})
        control = [(self.control_topic, bus.DOWN)]
        if self.leader is not None:
            control.append((self.control_topic, bus.UP))
        self.exchange.assign(control)

    async def run(self) -> str:
        try:
            return await super().run()
        finally:
            try:
                self.exchange.close()
            except Exception as exc:  # closing must not hide the job's outcome
                log.warning("exchange_close_failed", error=str(exc))
            if self.leader is not None:
                self.leader.close()

    def _round(self) -> bool:
        moved = self.exchange.poll(self._on_control)
        now = time.monotonic()
        self.exchange.flush_due(now)
        ws = self.settings.workers
        if self.leader is not None:
            self._lead()
        if self.go and now - self._last_hb >= ws.heartbeat_s:
            self._last_hb = now
            self._heartbeat()
        if self._failure is not None:
            raise WorkerError(self._failure)
        if self.exchange.error is not None:
            raise WorkerError(self.exchange.error)
        if self._bus_stalled(now):
            self._heard = now  # the coordinator's silence is the broker's, not its death
            if self.leader is not None:
                self.leader.hold_silence()
        if self.go and now - self._heard > ws.worker_timeout_s:
            raise WorkerError(
                f"the coordinator (worker 0) sent nothing for {now - self._heard:.1f} s; "
                "restart every worker from the last completed checkpoint (--restore latest)"
            )
        return moved

    def _bus_stalled(self, now: float) -> bool:
        """True while the broker leaves this worker's messages unacknowledged for long
        (see the module docstring); keeps `reason` for /status meanwhile."""
        stalled = self.exchange.stalled_for(now)
        if stalled < max(1.0, self.settings.workers.worker_timeout_s / 4):
            if self._bus_reason is not None:
                log.info("exchange_broker_back", servers=self.servers)
                self._bus_reason = None
            return False
        if self._bus_reason is None:
            log.warning("exchange_broker_silent", servers=self.servers, after_s=round(stalled, 1))
        since = datetime.now(UTC) - timedelta(seconds=stalled)
        self._bus_reason = (
            f"exchange: Kafka at {self.servers} has acknowledged nothing since "
            f"{since.isoformat(timespec='seconds')}; the job waits for it (workers' "
            "silence is not counted meanwhile)"
        )
        return True

    def reason(self) -> str | None:
        return self._bus_reason or super().reason()

    def _lead(self) -> None:
        leader = self.leader
        assert leader is not None
        leader.tick()
        if leader.failure is not None and self._failure is None:
            self._failure = leader.failure
        interval = self.settings.snapshots.checkpoint_interval_s
        now = time.monotonic()
        if not leader.started or leader.busy or self.state != RUNNING:
            return
        if leader.sources_finished() or (interval and now >= self._next_checkpoint):
            self._next_checkpoint = now + (interval or 0)
            cid = leader.next_checkpoint_id
            uri = snapshots.checkpoint_uri(self.settings.snapshots.location, self.job_id, cid)
            leader.trigger(SnapshotRequest(f"chk-{cid}", "checkpoint", uri))

    def _heartbeat(self) -> None:
        metrics = self.step_metrics()
        self._send(
            bus.UP,
            bus.HB,
            {
                "state": self.state,
                "finished": all(s.is_finished() for s in self.sources),
                "records_in": sum(i for i, _ in metrics.values()),
                "records_out": sum(o for _, o in metrics.values()),
                "dropped": self.exchange.dropped,
                "lag": self.exchange.lag(),
            },
        )

    async def _loop(self) -> None:
        start = time.monotonic()
        while not self.go:  # step 3: nothing runs before every worker is ready
            self._round()
            if self._cancel:
                return
            if (
                self.leader is None
                and time.monotonic() - start > self.settings.workers.start_timeout_s
            ):
                raise WorkerError("the coordinator (worker 0) never started this attempt")
            await asyncio.sleep(0.01)
        self._heard = time.monotonic()
        await super()._loop()

    def _failed(self, error: str, exc: BaseException | None) -> str:
        if self.run_attempt is not None and self.leader is None:
            try:
                self._send(bus.UP, bus.ERROR, {"error": error})
                self.exchange.producer.flush(2.0)
            except Exception as send_exc:  # the job fails anyway; the log says why
                log.warning("error_report_failed", error=str(send_exc))
        elif self.leader is not None:
            self.leader.fail(error)
            self.exchange.producer.flush(2.0)
        return super()._failed(error, exc)

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["worker"] = self.placement.worker
        out["workers"] = self.placement.workers
        if self.leader is not None:
            out["worker_status"] = {str(w): s for w, s in sorted(self.leader.worker_status.items())}
        return out


__all__ = ["WorkerError", "WorkerJob"]
