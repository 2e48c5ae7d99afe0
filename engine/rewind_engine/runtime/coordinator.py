"""The checkpoint coordinator: triggers barriers, collects state, commits sinks.

How a snapshot (checkpoint or savepoint) commits, step by step:

1. `trigger` opens a `SnapshotWriter` at the target (a bad URI fails here, at once)
   and asks every source subtask to inject barrier n before its next record.
2. Each source subtask records its split positions and emits the barrier; every other
   subtask aligns the barrier on all inputs, captures its state (quick copies) and
   forwards it. Sinks pre-commit at that moment (their staged output is part of n).
3. Each capture is grouped by key group and queued with `add_subtask` on a background
   thread; encoding, checksums and uploads run there too. Processing never waits.
4. When every subtask has acknowledged, `finish()` (background) waits for the files and
   writes `manifest.json` LAST. Only then does snapshot n exist.
5. Back on the scheduler's thread, every sink commits what it pre-committed up to n
   (idempotent; a crash before this step is repaired on restore, because the
   committables are in the snapshot). Old checkpoints are pruned (never savepoints).
6. A failure anywhere (storage unreachable, timeout) marks the snapshot FAILED with one
   clear error; the job keeps running, sources paused for a stop resume, and the
   staged output is committed with the next successful snapshot.

One snapshot is in flight at a time; requests queue behind it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from .. import snapshots
from ..keys import KeyGrouper, key_group_range
from .operators import Capture
from .tasks import SourceTask, TaskBase

log = structlog.get_logger("rewind.checkpoint")

IN_PROGRESS, COMPLETED, FAILED = "IN_PROGRESS", "COMPLETED", "FAILED"


@dataclass
class SnapshotRequest:
    """One requested checkpoint or savepoint, as the control API reports it."""

    id: str
    kind: str
    """"checkpoint" or "savepoint"."""
    target: str
    stop: bool = False
    drain: bool = False
    final: bool = False
    """The checkpoint taken when every bounded source is exhausted (then the job ends)."""
    status: str = IN_PROGRESS
    error: str | None = None
    checkpoint_id: int | None = None
    size_bytes: int | None = None
    sources: dict[str, Any] | None = None
    completed_at: str | None = None
    duration_s: float | None = None
    result_read: bool = False
    """Set once a client has read the final result (the engine lingers until then)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "location": self.target if self.status == COMPLETED else None,
            "target": self.target,
            "error": self.error,
            "stop": self.stop,
            "drain": self.drain,
        }
        if self.status == COMPLETED:
            out.update(
                size_bytes=self.size_bytes,
                sources=self.sources,
                completed_at=self.completed_at,
                checkpoint_id=self.checkpoint_id,
            )
        return out


@dataclass
class _InFlight:
    request: SnapshotRequest
    writer: snapshots.SnapshotWriter
    expected: int
    started: float
    acked: int = 0
    preps: list[Future[None]] = field(default_factory=list)
    finish: Future[snapshots.Manifest] | None = None


class Coordinator:
    """Drives snapshots for one job; every method runs on the scheduler's thread."""

    def __init__(
        self,
        *,
        tasks: list[TaskBase],
        meta: Callable[[], dict[str, Any]],
        max_parallelism: int,
        timeout_s: float,
        on_complete: Callable[[SnapshotRequest], None],
        on_failed: Callable[[SnapshotRequest], None],
        first_checkpoint_id: int = 1,
    ) -> None:
        self.tasks = tasks
        self.sources = [t for t in tasks if isinstance(t, SourceTask)]
        self._meta = meta
        self._max_parallelism = max_parallelism
        self._grouper = KeyGrouper(max_parallelism)
        self._timeout_s = timeout_s
        self._on_complete = on_complete
        self._on_failed = on_failed
        self.next_checkpoint_id = first_checkpoint_id
        self._queue: list[SnapshotRequest] = []
        self._in_flight: _InFlight | None = None
        # One worker: preps run in order and `finish` runs after all of a snapshot's preps.
        self._prep = ThreadPoolExecutor(1, thread_name_prefix="rewind-snapshot-prep")
        self.requests: dict[str, SnapshotRequest] = {}

    @property
    def busy(self) -> bool:
        return self._in_flight is not None or bool(self._queue)

    def trigger(self, request: SnapshotRequest) -> SnapshotRequest:
        self.requests[request.id] = request
        self._queue.append(request)
        self._start_next()
        return request

    def _start_next(self) -> None:
        if self._in_flight is not None or not self._queue:
            return
        request = self._queue.pop(0)
        cid = self.next_checkpoint_id
        self.next_checkpoint_id += 1
        request.checkpoint_id = cid
        meta = self._meta()
        meta["checkpoint_id"] = cid
        try:
            writer = snapshots.SnapshotWriter(
                request.target,
                "savepoint" if request.kind == "savepoint" else "checkpoint",
                request.id if request.kind == "savepoint" else cid,
                meta,
            )
        except Exception as exc:  # a wrong URI, an unknown scheme: fail this one, carry on
            self._fail(request, f"cannot write {request.kind} to {request.target}: {exc}")
            self._start_next()
            return
        self._in_flight = _InFlight(request, writer, len(self.tasks), time.monotonic())
        log.info("snapshot_triggered", id=request.id, kind=request.kind, checkpoint_id=cid)
        for source in self.sources:
            source.request_barrier(cid, request.drain, request.stop)

    def ack(self, task: TaskBase, checkpoint_id: int, capture: Capture) -> None:
        flight = self._in_flight
        if flight is None or flight.request.checkpoint_id != checkpoint_id:
            return  # a barrier of a snapshot that already failed (timeout): ignore
        flight.acked += 1
        op = task.operator
        if isinstance(task, SourceTask) or (op is not None and op.stateful):
            flight.preps.append(self._prep.submit(self._add, flight, task, capture))
        if flight.acked == flight.expected:
            flight.finish = self._prep.submit(self._finish, flight)

    def _add(self, flight: _InFlight, task: TaskBase, capture: Capture) -> None:
        op = task.operator
        keyed: dict[int, Any] = {}
        if op is not None and capture.keyed is not None:
            keyed = op.group(capture.keyed, self._grouper)
        positions = None
        if isinstance(task, SourceTask):
            positions = capture.operator_state["splits"]
        kg_range = key_group_range(task.index, task.parallelism, self._max_parallelism)
        flight.writer.add_subtask(
            task.uid,
            task.index,
            task.parallelism,
            kg_range,
            keyed,
            capture.operator_state,
            source_positions=positions,
        )

    def _finish(self, flight: _InFlight) -> snapshots.Manifest:
        for prep in flight.preps:
            prep.result()  # re-raise a grouping/validation error as the snapshot's failure
        return flight.writer.finish()

    def poll(self) -> None:
        """Called every scheduler round: completes, fails or times out the snapshot."""
        flight = self._in_flight
        if flight is None:
            return
        finish = flight.finish
        if finish is not None and finish.done():
            self._in_flight = None
            request = flight.request
            exc = finish.exception()
            if exc is not None:
                self._prep.submit(flight.writer.abort)  # idempotent; removes stray files
                self._fail(request, str(exc))
            else:
                manifest = finish.result()
                request.status = COMPLETED
                request.size_bytes = manifest.size_bytes
                request.sources = manifest.sources
                request.completed_at = datetime.now(UTC).isoformat()
                request.duration_s = time.monotonic() - flight.started
                log.info(
                    "snapshot_completed",
                    id=request.id,
                    kind=request.kind,
                    location=request.target,
                    size_bytes=request.size_bytes,
                    duration_s=round(request.duration_s, 3),
                )
                self._on_complete(request)
            self._start_next()
            return
        if time.monotonic() - flight.started > self._timeout_s:
            self._in_flight = None
            self._prep.submit(flight.writer.abort)
            self._fail(flight.request, f"timed out after {self._timeout_s:g} s")
            self._start_next()

    def _fail(self, request: SnapshotRequest, error: str) -> None:
        request.status = FAILED
        request.error = error
        log.error("snapshot_failed", id=request.id, kind=request.kind, error=error)
        self._on_failed(request)

    def close(self) -> None:
        flight = self._in_flight
        self._in_flight = None
        if flight is not None:
            self._prep.submit(flight.writer.abort)
        # Don't wait: an upload to an unreachable endpoint may retry for a long time.
        self._prep.shutdown(wait=False)
