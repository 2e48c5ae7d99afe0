"""The job's coordinator (worker 0): start handshake, liveness, global checkpoints.

Flows through here: control messages from the workers (UP, control_bus.py), requests
from the control API and the clock in; control messages to the workers (DOWN) and
manifests out. How a global checkpoint or savepoint n commits, step by step:

1. `trigger` queues the request; one global snapshot is in flight at a time. When it
   starts, n is the next checkpoint id and TRIGGER n goes to every worker (the
   coordinator's own worker part receives it like any other).
2. Each worker injects barrier n at its source subtasks; barriers cross workers
   through the exchange, so every subtask aligns as in one process. Each worker writes
   its subtasks' data files and then its part file into the snapshot's folder, and
   answers PART n (or the error).
3. When every worker's part is there, a background thread reads the parts back and
   writes manifest.json LAST (snapshots/parts.py). Only now does snapshot n exist.
4. COMMIT n goes to every worker: their sinks commit what they pre-committed up to n,
   and a final or stop snapshot ends them. Then the coordinator deletes exchange
   records before the positions in the manifest and prunes old checkpoints.
5. Any PART error, a failed manifest or a timeout: ABORT n to every worker (each drops
   its part's files, a stop resumes its sources) and the request is FAILED; the job
   keeps running.

Liveness: a worker silent for `worker_timeout_s` (while the broker answers: worker.py
holds the clocks during an outage, `hold_silence`), or one that reports ERROR, fails the
whole job (`failure`), with a message that names the worker and says how to resume:
restarting every worker from the last completed checkpoint (a full restart) is exactly
what `--restore latest` (or the deployment's own snapshots) does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

from .. import snapshots
from . import control_bus as bus
from .coordinator import FAILED, SnapshotQueue, SnapshotRequest, log_completed

log = structlog.get_logger("rewind.global_checkpoint")

Send = Callable[[str, dict[str, Any]], None]
"""send(kind, fields): one control message to every worker (DOWN)."""


@dataclass
class _Flight:
    request: SnapshotRequest
    checkpoint_id: int
    started: float
    parts: set[int] = field(default_factory=set)
    commit: Future[snapshots.Manifest] | None = None


class GlobalCoordinator(SnapshotQueue):
    """Runs on worker 0's scheduler thread; `tick` every round, `on_message` per message."""

    def __init__(
        self,
        *,
        workers: int,
        send: Send,
        meta: Callable[[], dict[str, Any]],
        first_checkpoint_id: int,
        heartbeat_s: float,
        worker_timeout_s: float,
        start_timeout_s: float,
        snapshot_timeout_s: float,
        on_committed: Callable[[SnapshotRequest, snapshots.Manifest], None],
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(first_checkpoint_id)
        self.workers = workers
        self.attempt = secrets.token_hex(6)
        self._send = send
        self._meta = meta
        self._heartbeat_s = heartbeat_s
        self._worker_timeout_s = worker_timeout_s
        self._start_timeout_s = start_timeout_s
        self._snapshot_timeout_s = snapshot_timeout_s
        self._on_committed = on_committed
        self._now = now
        self._started = now()
        self._last_sent = float("-inf")
        self.hellos: set[int] = set()
        self.started = False
        self.heard: dict[int, float] = {}
        self.worker_status: dict[int, dict[str, Any]] = {}
        self._flight: _Flight | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rewind-global-commit")
        self.failure: str | None = None

    @property
    def busy(self) -> bool:
        return self._flight is not None or bool(self._queue)

    def sources_finished(self) -> bool:
        """Every worker reported that its bounded sources are exhausted."""
        return len(self.worker_status) == self.workers and all(
            s.get("finished") for s in self.worker_status.values()
        )

    # -- messages -------------------------------------------------------------------

    def on_message(self, msg: dict[str, Any]) -> None:
        if msg.get("a") != self.attempt:
            return  # a worker still answering an older coordinator
        kind, worker = msg["k"], int(msg["w"])
        self.heard[worker] = self._now()
        if kind == bus.HELLO:
            self.hellos.add(worker)
        elif kind == bus.HB:
            self.worker_status[worker] = {k: v for k, v in msg.items() if k not in ("k", "a", "w")}
        elif kind == bus.PART:
            self._on_part(msg)
        elif kind == bus.ERROR:
            self.fail(f"worker {worker} failed: {msg.get('error')}")

    def _on_part(self, msg: dict[str, Any]) -> None:
        flight = self._flight
        if flight is None or msg.get("n") != flight.checkpoint_id or flight.commit is not None:
            return
        if not msg.get("ok"):
            self._abort(flight, f"worker {msg['w']}: {msg.get('error')}")
            return
        flight.parts.add(int(msg["w"]))
        if len(flight.parts) == self.workers:
            flight.commit = self._pool.submit(self._write_manifest, flight)

    # -- the clock ------------------------------------------------------------------

    def tick(self) -> None:
        now = self._now()
        if not self.started:
            if len(self.hellos) == self.workers:
                self.started = True
                self.heard = dict.fromkeys(range(self.workers), now)
                self._send(bus.GO, {})
                log.info("workers_started", workers=self.workers, attempt=self.attempt)
                self._start_next()
            elif now - self._last_sent >= 0.2:
                self._last_sent = now
                self._send(bus.ANNOUNCE, {"workers": self.workers})
            if not self.started and now - self._started > self._start_timeout_s:
                missing = sorted(set(range(self.workers)) - self.hellos)
                self.fail(
                    f"workers {missing} did not join within {self._start_timeout_s:g} s "
                    "(are they running with the same --job-id and Kafka?)"
                )
            return
        if now - self._last_sent >= self._heartbeat_s:
            self._last_sent = now
            self._send(bus.HB, {})
        for worker, at in self.heard.items():
            if now - at > self._worker_timeout_s:
                self.fail(
                    f"worker {worker} sent nothing for {now - at:.1f} s (its process died or "
                    "hangs); restart every worker from the last completed checkpoint "
                    "(--restore latest)"
                )
                return
        flight = self._flight
        if flight is None:
            return
        if flight.commit is not None and flight.commit.done():
            self._flight = None
            exc = flight.commit.exception()
            if exc is not None:
                self._abort(flight, f"cannot write the manifest: {exc}")
            else:
                self._committed(flight, flight.commit.result())
            self._start_next()
        elif now - flight.started > self._snapshot_timeout_s:
            self._abort(flight, f"timed out after {self._snapshot_timeout_s:g} s")

    def hold_silence(self) -> None:
        """While the broker does not answer, no worker's silence counts: every worker
        is as heard as now, and gets the whole `worker_timeout_s` once it is back."""
        now = self._now()
        self.heard = dict.fromkeys(self.heard, now)

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("job_failing", reason=reason)
            self._send(bus.FAIL, {"reason": reason})

    # -- snapshots ------------------------------------------------------------------

    def _start_next(self) -> None:
        if self._flight is not None or not self._queue or not self.started:
            return
        request, cid = self._take_next()
        request.final = request.final or (request.kind == "checkpoint" and self.sources_finished())
        self._flight = _Flight(request, cid, self._now())
        fields = {
            "n": cid,
            "id": request.id,
            "kind": request.kind,
            "target": request.target,
            "stop": request.stop,
            "drain": request.drain,
            "final": request.final,
        }
        self._send(bus.TRIGGER, fields)
        log.info("global_snapshot_triggered", id=request.id, kind=request.kind, checkpoint_id=cid)

    def _write_manifest(self, flight: _Flight) -> snapshots.Manifest:
        request = flight.request
        meta = {**self._meta(), "checkpoint_id": flight.checkpoint_id, "workers": self.workers}
        header = {k: meta.pop(k) for k in ("job_id", "flow", "max_parallelism")}
        return snapshots.commit_global(
            snapshots.open_storage(request.target),
            self.workers,
            kind="savepoint" if request.kind == "savepoint" else "checkpoint",
            snapshot_id=request.id if request.kind == "savepoint" else flight.checkpoint_id,
            meta=meta,
            **header,
        )

    def _committed(self, flight: _Flight, manifest: snapshots.Manifest) -> None:
        request = flight.request
        request.complete(manifest.size_bytes, manifest.sources, self._now() - flight.started)
        self._send(
            bus.COMMIT,
            {"n": flight.checkpoint_id, "size": manifest.size_bytes, "sources": manifest.sources},
        )
        log_completed(log, "global_snapshot_completed", request, checkpoint_id=flight.checkpoint_id)
        self._on_committed(request, manifest)

    def _abort(self, flight: _Flight, error: str) -> None:
        if self._flight is flight:
            self._flight = None
        request = flight.request
        request.status = FAILED
        request.error = error
        self._send(bus.ABORT, {"n": flight.checkpoint_id, "error": error})
        log.error("global_snapshot_failed", id=request.id, error=error)
        self._start_next()

    def close(self) -> None:
        self._pool.shutdown(wait=False)
