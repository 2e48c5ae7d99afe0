"""Subtasks: one per (step, index); the scheduler calls `run_once` round robin.

Flows through here: a `Task` pops elements from its input channels, hands batches to
its operator, combines watermarks (minimum over active inputs) and aligns checkpoint
barriers; a `SourceTask` polls split readers, stamps event time, emits watermarks and
injects barriers when the coordinator asks.

What must stay true (Chandy-Lamport, aligned):
- once barrier n arrived on an input, that input is not read again until barrier n
  arrived on every input; then the operator's state is captured, the barrier is
  forwarded on every output, and the inputs are released. So the snapshot holds the
  effect of exactly the records before the barrier on every path.
- a subtask takes input only while all its output channels have space (backpressure).
- watermarks only move forward; an idle input is left out of the minimum.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any, Protocol

from ..connectors.base import Source, SourceContext, SplitReader
from ..dataflow import ERRORS_PORT
from ..eventtime import MAX_TS, MIN_TS, BoundedOutOfOrderness
from .channels import Channel
from .elements import Barrier, Batch, Watermark
from .operators import Capture, Operator, source_waits
from .routing import Router
from .step_errors import split_failures, step_error


class SnapshotSink(Protocol):
    """Where a subtask hands its captured state (the checkpoint coordinator)."""

    def ack(self, task: TaskBase, checkpoint_id: int, capture: Capture) -> None: ...


class TaskBase:
    """What every subtask has: identity, outputs by port, metrics."""

    def __init__(
        self,
        uid: str,
        index: int,
        parallelism: int,
        outputs: dict[str, list[Router]],
        snapshots: SnapshotSink,
    ) -> None:
        self.uid = uid
        self.index = index
        self.parallelism = parallelism
        self.outputs = outputs
        self.snapshots = snapshots
        self.out_channels: list[Channel] = [
            ch for routers in outputs.values() for r in routers for ch in r.channels
        ]
        self._main: list[Router] = outputs.get("main", [])
        self.records_in = 0
        self.records_out = 0
        self.watermark = MIN_TS
        self.operator: Operator | None = None

    @property
    def name(self) -> str:
        return f"{self.uid}[{self.index}]"

    def out_space(self) -> bool:
        for ch in self.out_channels:  # noqa: SIM110 - hot path: a loop beats all(genexpr)
            if not ch.has_space():
                return False
        return True

    def emit(self, batch: Batch) -> None:
        self.records_out += len(batch.records)
        for router in self._main:
            router.send(batch)

    def emit_port(self, port: str, batch: Batch) -> None:
        for router in self.outputs.get(port, ()):
            router.send(batch)

    def broadcast(self, element: Watermark | Barrier) -> None:
        for routers in self.outputs.values():
            for router in routers:
                router.broadcast(element)

    def run_once(self) -> bool:
        raise NotImplementedError


class Task(TaskBase):
    """A non-source subtask: inputs -> operator -> outputs."""

    BURST = 4
    """Elements taken per turn: enough to amortise the turn, small enough to be fair."""

    def __init__(
        self,
        uid: str,
        index: int,
        parallelism: int,
        *,
        operator: Operator,
        inputs: list[Channel],
        outputs: dict[str, list[Router]],
        snapshots: SnapshotSink,
    ) -> None:
        super().__init__(uid, index, parallelism, outputs, snapshots)
        self.operator = operator
        self.op = operator
        operator.emit = self.emit
        operator.emit_port = self.emit_port
        self.inputs = inputs
        n = len(inputs)
        self._wm = [MIN_TS] * n
        self._idle = [False] * n
        self._blocked = [False] * n
        self._aligning: int | None = None
        self._arrived = 0
        self._rr = 0
        self._idle_sent = False

    def run_once(self) -> bool:
        if not self.out_space():
            return False
        inputs, blocked = self.inputs, self._blocked
        n = len(inputs)
        progressed = False
        for _ in range(self.BURST):
            element = None
            for j in range(n):
                idx = (self._rr + j) % n
                if blocked[idx]:
                    continue
                element = inputs[idx].pop()
                if element is not None:
                    self._rr = (idx + 1) % n
                    break
            if element is None:
                break
            progressed = True
            if type(element) is Batch:
                self.records_in += len(element.records)
                try:
                    self.op.process(element)
                except Exception as exc:
                    if self.op.on_error != "side":
                        raise step_error(self.uid, self.op, element.records, exc) from exc
                    self._set_aside(element, exc)
            elif type(element) is Watermark:
                self._on_watermark(idx, element)
            else:
                assert isinstance(element, Barrier)
                self._on_barrier(idx, element)
            if not self.out_space():
                break
        return progressed

    def _set_aside(self, batch: Batch, cause: Exception) -> None:
        """on_error="side": the records that pass go on, the others to the errors port."""
        good, failed = split_failures(self.uid, self.op, batch)
        if not failed.records:  # raised on the batch, not on any one record: not ours
            raise step_error(self.uid, self.op, batch.records, cause) from cause
        if good.records:
            try:
                self.op.process(good)
            except Exception as exc:
                raise step_error(self.uid, self.op, good.records, exc) from exc
        self.emit_port(ERRORS_PORT, failed)

    def _on_watermark(self, idx: int, wm: Watermark) -> None:
        self._idle[idx] = wm.idle
        if not wm.idle:
            self._wm[idx] = max(self._wm[idx], wm.ts)
        active = [w for w, idle in zip(self._wm, self._idle, strict=True) if not idle]
        if not active:
            if not self._idle_sent:
                self._idle_sent = True
                self.broadcast(Watermark(self.watermark, idle=True))
            return
        new = min(active)
        if new > self.watermark or self._idle_sent:
            self._idle_sent = False
            self.watermark = max(new, self.watermark)
            self.op.on_watermark(self.watermark)
            self.broadcast(Watermark(self.watermark))

    def _on_barrier(self, idx: int, barrier: Barrier) -> None:
        cid = barrier.checkpoint_id
        if self._aligning is None:
            self._aligning = cid
        elif self._aligning != cid:
            raise RuntimeError(
                f"{self.name}: barrier {cid} arrived while aligning barrier {self._aligning}"
            )
        self._blocked[idx] = True
        self._arrived += 1
        if self._arrived < len(self.inputs):
            return
        capture = self.op.capture(cid)
        self.snapshots.ack(self, cid, capture)
        self.broadcast(barrier)
        self._aligning = None
        self._arrived = 0
        self._blocked = [False] * len(self.inputs)

    @property
    def aligning(self) -> int | None:
        return self._aligning


class SourceTask(TaskBase):
    """One source subtask: polls its splits' readers, emits batches and watermarks."""

    def __init__(
        self,
        uid: str,
        index: int,
        parallelism: int,
        *,
        source: Source,
        ctx: SourceContext,
        watermarks: BoundedOutOfOrderness | None,
        bounded: bool,
        batch_size: int,
        outputs: dict[str, list[Router]],
        snapshots: SnapshotSink,
        now_ms: Callable[[], int] = lambda: 0,
    ) -> None:
        super().__init__(uid, index, parallelism, outputs, snapshots)
        self.source = source
        self.now_ms = now_ms
        self.ctx = ctx
        self.strategy = watermarks
        self.bounded = bounded
        self.batch_size = batch_size
        self.readers: dict[str, SplitReader] = {}
        self.finished: dict[str, Any] = {}  # split -> final position
        self.parked: dict[str, Any] = {}  # restored split not discovered yet -> position
        self.max_ts: dict[str, int] = {}
        self.paused = False
        self._pending: tuple[int, bool, bool] | None = None  # (checkpoint id, drain, stop)
        self._order: list[str] = []
        self._rr = 0
        self._idle_sent = False
        self._ts_of: Callable[[Any], int] | None = None
        self._delay = 0
        self._idle_after: int | None = None
        self._last_record: dict[str, int] = {}  # split -> clock ms of its last record
        if watermarks is not None:
            self._delay = watermarks.max_out_of_orderness_ms
            self._idle_after = watermarks.idle_timeout_ms
            ts = watermarks.timestamp
            self._ts_of = itemgetter(ts) if isinstance(ts, str) else ts

    # -- splits ---------------------------------------------------------------------

    def add_split(self, split: str, position: Any | None, max_ts: int | None, done: bool) -> None:
        if max_ts is not None:
            self.max_ts[split] = max_ts
        if done:
            self.finished[split] = position
            return
        self.readers[split] = self.source.open_split(split, position, self.ctx)
        self._order.append(split)
        # A new (or restored) split gets a full timeout before it may count as idle.
        self._last_record[split] = self.now_ms()

    def park(self, split: str, position: Any, max_ts: int | None) -> None:
        """Keep a restored split's position that its source does not list right now (a
        Kafka partition missing from metadata for a moment, a file moved away): it stays
        in every snapshot and is opened from there once discovered (`unpark`)."""
        if max_ts is not None:
            self.max_ts[split] = max_ts
        self.parked[split] = position

    def unpark(self, split: str) -> None:
        position = self.parked.pop(split)
        self.add_split(split, position, None, False)

    def splits(self) -> set[str]:
        return set(self.readers) | set(self.finished) | set(self.parked)

    def is_finished(self) -> bool:
        """A bounded source subtask whose splits are all exhausted."""
        return self.bounded and not self.readers

    def notify_complete(self, checkpoint_id: int) -> None:
        """A snapshot holding these readers' positions is complete (see SplitReader)."""
        for reader in self.readers.values():
            reader.notify_checkpoint_complete(checkpoint_id)

    def positions(self, *, for_status: bool = False) -> dict[str, Any]:
        """Split -> position: for a snapshot (durable), or for `/status` (never waits)."""
        if for_status:
            out = {s: r.progress() for s, r in self.readers.items()}
        else:
            out = {s: r.position() for s, r in self.readers.items()}
        out.update(self.finished)
        out.update(self.parked)
        return out

    # -- barriers -------------------------------------------------------------------

    def request_barrier(self, checkpoint_id: int, drain: bool, stop: bool) -> None:
        self._pending = (checkpoint_id, drain, stop)

    def resume(self) -> None:
        """Carry on after a stop-with-savepoint failed."""
        self.paused = False

    def _emit_barrier(self) -> None:
        assert self._pending is not None
        cid, drain, stop = self._pending
        self._pending = None
        state = {
            "kind": "source",
            "splits": self.positions(),
            "finished": sorted(self.finished),
            "max_ts": dict(self.max_ts),
        }
        waits = [w for r in self.readers.values() if (w := r.durable()) is not None]
        self.snapshots.ack(self, cid, Capture(None, state, source_waits(waits)))
        if drain:
            self.watermark = MAX_TS
            self.broadcast(Watermark(MAX_TS))
        self.broadcast(Barrier(cid))
        if stop:
            self.paused = True

    # -- the hot path ---------------------------------------------------------------

    def start(self) -> None:
        """Emit the watermark restored from a snapshot before any record, so that lateness
        after a restore is judged exactly as it would have been without one."""
        self._update_watermark()

    def run_once(self) -> bool:
        if self._pending is not None:
            self._emit_barrier()
            return True
        if self.paused or not self.out_space():
            return False
        order = self._order
        n = len(order)
        for j in range(n):
            split = order[(self._rr + j) % n]
            reader = self.readers.get(split)
            if reader is None:
                continue
            got = reader.poll(self.batch_size)
            if got is None:
                continue
            self._rr = (self._rr + j + 1) % n
            records = got.records
            if records:
                ts = got.timestamps
                if self._ts_of is not None:
                    ts = list(map(self._ts_of, records))
                if ts is not None:
                    top = max(ts)
                    if top > self.max_ts.get(split, MIN_TS):
                        self.max_ts[split] = top
                if self._idle_after is not None:
                    self._last_record[split] = self.now_ms()
                self.emit(Batch(records, ts))
            if got.finished:
                self.finished[split] = reader.position()
                reader.close()
                del self.readers[split]
                self._last_record.pop(split, None)
                self._order = [s for s in order if s in self.readers]
                self._rr = 0
            self._update_watermark()
            return True
        if not self.readers or self._idle_after is not None:
            self._update_watermark()  # nothing polled: splits may have become idle
        return False

    def _update_watermark(self) -> None:
        if self.strategy is None:
            return
        active = self._active_splits()
        if not self.readers and self.bounded:
            wm = MAX_TS  # exhausted (or never had a split): nothing more will come
        elif not active:
            # No split (unbounded) or every split idle: hold no consumer back.
            if not self._idle_sent:
                self._idle_sent = True
                self.broadcast(Watermark(self.watermark, idle=True))
            return
        else:
            wm = min(self.max_ts.get(s, MIN_TS) for s in active)
            if wm != MIN_TS:
                wm = wm - self._delay - 1
        if wm > self.watermark or self._idle_sent:
            # After idleness, a split producing again makes the subtask active again
            # downstream even if its watermark is behind (watermarks never go back).
            self._idle_sent = False
            self.watermark = max(wm, self.watermark)
            self.broadcast(Watermark(self.watermark))

    def _active_splits(self) -> list[str]:
        """Open splits that hold the watermark back: all, or those not idle."""
        timeout = self._idle_after
        if timeout is None:
            return list(self.readers)
        now = self.now_ms()
        last = self._last_record
        return [s for s in self.readers if now - last.get(s, now) < timeout]

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
