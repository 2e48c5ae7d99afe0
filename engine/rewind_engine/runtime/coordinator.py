"""The checkpoint coordinator: triggers barriers, collects state, commits sinks.

How a snapshot (checkpoint or savepoint) commits, step by step:

1. `trigger` opens a `SnapshotWriter` at the target (a bad URI fails here, at once)
   and asks every source subtask to inject barrier n before its next record.
2. Each source subtask records its split positions and emits the barrier; every other
   subtask aligns the barrier on all inputs, captures its state (quick copies) and
   forwards it. Sinks pre-commit at that moment (their staged output is part of n).
3. Each capture is grouped by key group and encoded on the scheduler's thread, in
   slices between batches (snapshot_work.py: a background thread would be starved of
   the GIL by the busy task loop), and its bytes are queued with `add_encoded`; the
   uploads run on background threads. Processing pauses only for a slice at a time.
4. When every subtask has acknowledged and been encoded, `finish()` (background) waits
   for the files and writes `manifest.json` LAST. Only then does snapshot n exist.
5. Back on the scheduler's thread, every sink commits what it pre-committed up to n
   (idempotent; a crash before this step is repaired on restore, because the
   committables are in the snapshot). Old checkpoints are pruned (never savepoints).
6. A failure anywhere (storage unreachable, timeout) marks the snapshot FAILED with one
   clear error; the job keeps running, sources paused for a stop resume, and the
   staged output is committed with the next successful snapshot.

One snapshot is in flight at a time; requests queue behind it.

Incremental checkpoints (incremental.py): at step 3 each capture is compared with what
the last completed checkpoint holds for its subtask, and a key group whose block did
not change is referenced instead of written (its operator may skip it before encoding:
`Operator.group_changes`). What a checkpoint wrote becomes the base of the next one
only at step 5 (its manifest exists); a failed one (step 6) is forgotten.

One worker of several (`part_mode`): step 4 writes the worker's part file instead of
the manifest and reports it (`on_part`); the snapshot stays in flight until the job's
coordinator says the global manifest exists (`complete_global`, then step 5) or that
the snapshot failed somewhere (`fail_global`). See worker.py and global_checkpoint.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from .. import snapshots
from ..keys import KeyGrouper, key_group_range
from ..snapshots import encoder
from ..snapshots.writer import data_file_key
from .incremental import BlockHistory
from .operators import Capture
from .snapshot_work import SnapshotWork
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
    incremental: bool = False
    """A checkpoint that references the unchanged blocks of the last completed one."""
    result_read: bool = False
    """Set once a client has read the final result (the engine lingers until then)."""

    def complete(self, size_bytes: int | None, sources: Any, duration_s: float) -> None:
        """Mark it COMPLETED (its manifest exists)."""
        self.status = COMPLETED
        self.size_bytes = size_bytes
        self.sources = sources
        self.completed_at = datetime.now(UTC).isoformat()
        self.duration_s = duration_s

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
    encoding: int = 0
    """Captures acknowledged whose slices have not run to their end yet."""
    errors: list[BaseException] = field(default_factory=list)
    before_manifest: list[Callable[[], None]] = field(default_factory=list)
    """Waits that must end before the manifest is written (run on the prep thread)."""
    finish: Future[Any] | None = None
    part_reported: bool = False


class SnapshotQueue:
    """A job's snapshot requests in the order they came, one in flight at a time, each
    numbered (its checkpoint id) when it starts. What the one-process `Coordinator` and
    the workers' `GlobalCoordinator` (global_checkpoint.py) share; each says in
    `_start_next` how a request starts."""

    def __init__(self, first_checkpoint_id: int) -> None:
        self.next_checkpoint_id = first_checkpoint_id
        self.requests: dict[str, SnapshotRequest] = {}
        """Every request of this job by id, for the control API (finished ones too)."""
        self._queue: list[SnapshotRequest] = []

    def trigger(self, request: SnapshotRequest) -> SnapshotRequest:
        self.requests[request.id] = request
        self._queue.append(request)
        self._start_next()
        return request

    def _start_next(self) -> None:
        raise NotImplementedError

    def _take_next(self) -> tuple[SnapshotRequest, int]:
        """The oldest queued request, given the next checkpoint id (returned too)."""
        request = self._queue.pop(0)
        cid = request.checkpoint_id = self.next_checkpoint_id
        self.next_checkpoint_id += 1
        return request, cid


def log_completed(logger: Any, event: str, request: SnapshotRequest, **fields: Any) -> None:
    """The one log line of a completed snapshot (both coordinators)."""
    logger.info(
        event,
        id=request.id,
        **fields,
        location=request.target,
        size_bytes=request.size_bytes,
        duration_s=round(request.duration_s or 0.0, 3),
    )


class Coordinator(SnapshotQueue):
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
        part: Callable[[snapshots.SnapshotWriter], snapshots.WorkerPart] | None = None,
        on_part: Callable[[SnapshotRequest, snapshots.WorkerPart], None] | None = None,
        incremental: bool = False,
        full_every: int = 10,
    ) -> None:
        super().__init__(first_checkpoint_id)
        self.history = BlockHistory(enabled=incremental, full_every=full_every)
        """The base of incremental checkpoints (incremental.py)."""
        self.tasks = tasks
        self.sources = [t for t in tasks if isinstance(t, SourceTask)]
        self._meta = meta
        self._max_parallelism = max_parallelism
        self._grouper = KeyGrouper(max_parallelism)
        self._timeout_s = timeout_s
        self._on_complete = on_complete
        self._on_failed = on_failed
        self._part = part
        self._on_part = on_part
        self._in_flight: _InFlight | None = None
        self.work = SnapshotWork()
        """Grouping and encoding of captures, run by the job's loop (`run_work`)."""
        # One worker: `finish` (waits for uploads, writes the manifest), aborts, pruning.
        self._prep = ThreadPoolExecutor(1, thread_name_prefix="rewind-snapshot-prep")

    @property
    def busy(self) -> bool:
        return self._in_flight is not None or bool(self._queue)

    def _start_next(self) -> None:
        if self._in_flight is not None or not self._queue:
            return
        request, cid = self._take_next()
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
        request.incremental = self.history.begin(cid, request.kind)
        log.info(
            "snapshot_triggered",
            id=request.id,
            kind=request.kind,
            checkpoint_id=cid,
            incremental=request.incremental,
        )
        for source in self.sources:
            source.request_barrier(cid, request.drain, request.stop)

    def ack(self, task: TaskBase, checkpoint_id: int, capture: Capture) -> None:
        flight = self._in_flight
        if flight is None or flight.request.checkpoint_id != checkpoint_id:
            return  # a barrier of a snapshot that already failed (timeout): ignore
        flight.acked += 1
        op = task.operator
        if isinstance(task, SourceTask) or (op is not None and op.stateful):
            flight.encoding += 1

            def failed(exc: BaseException) -> None:
                flight.errors.append(exc)
                self._encoded(flight)

            if capture.before_manifest is not None:
                # e.g. a sink's wait for its records' acknowledgements: off the loop,
                # before the manifest (see _finish)
                flight.before_manifest.append(capture.before_manifest)
            self.work.add(self._add(flight, task, capture), failed)
        self._maybe_finish(flight)

    def run_work(self, tasks_idle: bool) -> bool:
        """Called every scheduler round: a slice of snapshot work; True if any ran."""
        return self.work.run(tasks_idle)

    def _add(
        self, flight: _InFlight, task: TaskBase, capture: Capture
    ) -> Generator[None, None, None]:
        """One capture's work, in steps: group, encode, queue the upload."""
        op = task.operator
        cid = flight.request.checkpoint_id or 0
        subtask = (task.uid, task.index, task.parallelism)
        base = self.history.base(cid, subtask)
        keyed: dict[int, Any] = {}
        unchanged: set[int] = set()
        memo: Any = None
        if op is not None and capture.keyed is not None:
            if self.history.enabled:
                since = base.memo if base is not None else None
                keyed, unchanged, memo = yield from op.group_changes(
                    capture.keyed, self._grouper, since
                )
            else:
                keyed = yield from op.group_steps(capture.keyed, self._grouper)
        encoded = yield from encoder.encode_steps(
            task.uid,
            task.index,
            keyed,
            capture.operator_state,
            file_sha256=False,
            previous=base.blocks if base is not None else None,
            unchanged=unchanged if base is not None else (),
        )
        self.history.record(cid, subtask, data_file_key(task.uid, task.index), encoded, memo)
        positions = None
        if isinstance(task, SourceTask):
            positions = capture.operator_state["splits"]
        kg_range = key_group_range(task.index, task.parallelism, self._max_parallelism)
        flight.writer.add_encoded(
            task.uid, task.index, task.parallelism, kg_range, encoded, source_positions=positions
        )
        self._encoded(flight)

    def _encoded(self, flight: _InFlight) -> None:
        flight.encoding -= 1
        self._maybe_finish(flight)

    def _maybe_finish(self, flight: _InFlight) -> None:
        if (
            flight.acked == flight.expected
            and flight.encoding == 0
            and flight.finish is None
            and flight is self._in_flight
        ):
            flight.finish = self._prep.submit(self._finish, flight)

    def _finish(self, flight: _InFlight) -> Any:
        if flight.errors:
            raise flight.errors[0]  # a grouping/encoding error is the snapshot's failure
        for wait in flight.before_manifest:
            wait()
        if self._part is not None:
            return self._part(flight.writer)
        return flight.writer.finish()

    @property
    def in_flight(self) -> SnapshotRequest | None:
        return self._in_flight.request if self._in_flight is not None else None

    def complete_global(self, checkpoint_id: int, size_bytes: int, sources: Any) -> None:
        """Part mode: the global manifest of `checkpoint_id` exists (step 5 follows)."""
        flight = self._in_flight
        if flight is None or flight.request.checkpoint_id != checkpoint_id:
            return
        self._in_flight = None
        self._complete(flight, size_bytes, sources)
        self._start_next()

    def fail_global(self, checkpoint_id: int, error: str) -> None:
        """Part mode: the snapshot failed (on this worker or another one)."""
        flight = self._in_flight
        if flight is None or flight.request.checkpoint_id != checkpoint_id:
            return
        self._in_flight = None
        self.work.clear()
        self._prep.submit(flight.writer.abort)
        self._fail(flight.request, error)
        self._start_next()

    def _complete(self, flight: _InFlight, size_bytes: int | None, sources: Any) -> None:
        request = flight.request
        self.history.completed(request.checkpoint_id or 0)  # its manifest exists
        request.complete(size_bytes, sources, time.monotonic() - flight.started)
        log_completed(log, "snapshot_completed", request, kind=request.kind)
        self._on_complete(request)

    def poll(self) -> None:
        """Called every scheduler round: completes, fails or times out the snapshot."""
        flight = self._in_flight
        if flight is None:
            return
        finish = flight.finish
        if finish is not None and finish.done() and not flight.part_reported:
            request = flight.request
            exc = finish.exception()
            if exc is None and self._on_part is not None:
                flight.part_reported = True  # stays in flight until complete_global
                self._on_part(request, finish.result())
                return
            self._in_flight = None
            if exc is not None:
                self._prep.submit(flight.writer.abort)  # idempotent; removes stray files
                self._fail(request, str(exc))
            else:
                manifest = finish.result()
                self._complete(flight, manifest.size_bytes, manifest.sources)
            self._start_next()
            return
        if time.monotonic() - flight.started > self._timeout_s:
            self._in_flight = None
            self.work.clear()
            self._prep.submit(flight.writer.abort)
            self._fail(flight.request, f"timed out after {self._timeout_s:g} s")
            self._start_next()

    def _fail(self, request: SnapshotRequest, error: str) -> None:
        self.history.failed(request.checkpoint_id or 0)  # never a base
        request.status = FAILED
        request.error = error
        log.error("snapshot_failed", id=request.id, kind=request.kind, error=error)
        self._on_failed(request)

    def close(self) -> None:
        flight = self._in_flight
        self._in_flight = None
        self.work.clear()
        if flight is not None:
            self._prep.submit(flight.writer.abort)
        # Don't wait: an upload to an unreachable endpoint may retry for a long time.
        self._prep.shutdown(wait=False)
