"""Operators: what one subtask of each kind of step does with a batch.

Flows through here: the task hands each input `Batch` to `process`, watermarks to
`on_watermark`, processing time to `on_processing_time`; the operator emits batches
through `self.emit` (main output) and `self.emit_port` (side outputs). At a barrier
the task calls `capture(checkpoint_id)` (quick: copies containers) and later, on the
same thread in slices between batches, `group_steps(capture)` turns the keyed part into
{key group: data} (runtime/snapshot_work.py); for an incremental checkpoint,
`group_changes` may leave out the key groups it knows did not change since the last
completed checkpoint (a count does: aggregate_state.py).

What must stay true:
- stateless operators (map/filter/flat_map/key_by/union) have no snapshot entry; every
  stateful operator returns its `kind` in its operator state, so a restore can tell a
  uid that changed kind.
- keyed state is a plain dict (key -> value), or for a count a `CountState` (a slot per
  key and an int64 array, count_state.py), hashed into key groups only at snapshot
  time: the hot path never pays for key groups.
- built-in aggregations work on the whole batch (`Counter` for count with emit="batch").
- an aggregation's keys are never removed: its snapshots learn each key once
  (aggregate_state.py).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Generator, Iterable, MutableMapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from ..connectors.base import Sink, SinkContext, SinkWriter
from ..dataflow import AggregateSpec, OnError, ProcessSpec, WindowSpec
from ..eventtime import MIN_TS
from ..keys import KeyGrouper, decode_key
from ..state import (
    KeyedContext,
    KeyedProcess,
    KeyedStateStore,
    TimeDomain,
    Timers,
    group_capture,
    iter_outputs,
)
from ..windows import Count, SessionWindows
from .aggregate_state import (
    AggregateCapture,
    CountMemo,
    KeyIndex,
    columns_by_key_group,
    columns_by_key_group_steps,
    count_changes_steps,
)
from .count_state import CountState, check_counts
from .elements import Batch

_MISSING = object()


@dataclass
class Capture:
    """What a subtask hands over at a barrier: keyed state (not yet grouped) and
    operator state (msgpack-able)."""

    keyed: Any
    operator_state: Any
    before_manifest: Callable[[], None] | None = None
    """Run on the snapshot thread before the manifest is written (a sink's flush that
    must be durable first); an error fails the snapshot."""


def source_waits(waits: list[Callable[[], None]]) -> Callable[[], None] | None:
    """A source subtask's `Capture.before_manifest`: its readers' `durable()` waits, one
    after another (None when there are none)."""
    if not waits:
        return None

    def wait_all() -> None:
        for wait in waits:
            wait()

    return wait_all


class Operator:
    """Base: a stateless pass-through."""

    kind = "stateless"
    stateful = False
    keyed = False
    restores_arrays = False
    """`restore` takes keyed state whose int64 / float64 columns are numpy arrays
    (SnapshotReader.keyed_state(arrays=True)) instead of lists."""
    on_error: OnError = "fail"
    """"side": the task sends records the function raised on to the errors port
    (step_errors.py); only the stateless steps with a user function offer it."""

    def __init__(self) -> None:
        self.emit: Callable[[Batch], None] = lambda batch: None
        self.emit_port: Callable[[str, Batch], None] = lambda port, batch: None
        self.records_out = 0

    def open(self) -> None:
        pass

    def process(self, batch: Batch) -> None:
        self.emit(batch)

    def on_watermark(self, wm: int) -> None:
        pass

    def on_processing_time(self, now_ms: int) -> None:
        pass

    def capture(self, checkpoint_id: int) -> Capture:
        return Capture(None, {"kind": self.kind})

    def group(self, keyed: Any, grouper: KeyGrouper) -> dict[int, Any]:
        return {}

    def group_steps(self, keyed: Any, grouper: KeyGrouper) -> Generator[None, None, dict[int, Any]]:
        """`group` in steps, for the task's thread between batches: yields wherever the
        work may pause (the capture stays valid meanwhile), returns `group`'s result.
        The default is one step; an operator with a large state yields along the way."""
        yield from ()
        return self.group(keyed, grouper)

    def group_changes(
        self, keyed: Any, grouper: KeyGrouper, since: Any
    ) -> Generator[None, None, tuple[dict[int, Any], set[int], Any]]:
        """`group_steps` for an incremental checkpoint: returns ({key group: data} of the
        key groups that may have changed, the non-empty key groups that certainly did
        not, a memo for the next checkpoint). `since` is the memo the capture of the
        job's last completed checkpoint left, or None (then nothing is left out). The
        default groups everything; the coordinator then compares each block's sha256
        with the last checkpoint's."""
        groups = yield from self.group_steps(keyed, grouper)
        return groups, set(), None

    def restore(self, keyed: Iterable[tuple[int, Any]], operator_states: list[Any]) -> None:
        pass

    def notify_complete(self, checkpoint_id: int) -> None:
        pass

    def close(self) -> None:
        pass


class MapOp(Operator):
    def __init__(self, fn: Callable[[Any], Any], on_error: OnError = "fail") -> None:
        super().__init__()
        self.fn = fn
        self.on_error = on_error

    def process(self, batch: Batch) -> None:
        self.emit(Batch(list(map(self.fn, batch.records)), batch.timestamps))


class FilterOp(Operator):
    def __init__(self, fn: Callable[[Any], bool], on_error: OnError = "fail") -> None:
        super().__init__()
        self.fn = fn
        self.on_error = on_error

    def process(self, batch: Batch) -> None:
        fn = self.fn
        ts = batch.timestamps
        if ts is None:
            out = [r for r in batch.records if fn(r)]
            if out:
                self.emit(Batch(out))
            return
        pairs = [(r, t) for r, t in zip(batch.records, ts, strict=True) if fn(r)]
        if pairs:
            self.emit(Batch([p[0] for p in pairs], [p[1] for p in pairs]))


class FlatMapOp(Operator):
    def __init__(self, fn: Callable[[Any], Iterable[Any]], on_error: OnError = "fail") -> None:
        super().__init__()
        self.fn = fn
        self.on_error = on_error

    def process(self, batch: Batch) -> None:
        out: list[Any] = []
        ts = batch.timestamps
        out_ts: list[int] | None = [] if ts is not None else None
        for i, r in enumerate(batch.records):
            before = len(out)
            out.extend(self.fn(r))
            if out_ts is not None and ts is not None:
                out_ts.extend([ts[i]] * (len(out) - before))
        if out:
            self.emit(Batch(out, out_ts))


class KeyByOp(Operator):
    def __init__(self, fn: Callable[[Any], Any], on_error: OnError = "fail") -> None:
        super().__init__()
        self.fn = fn
        self.on_error = on_error

    def process(self, batch: Batch) -> None:
        self.emit(Batch(batch.records, batch.timestamps, list(map(self.fn, batch.records))))


class AggregateOp(Operator):
    """count/sum/min/max/reduce per key, emitting (key, value)."""

    kind = "aggregate"
    stateful = True
    keyed = True
    restores_arrays = True

    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__()
        self.agg = spec.agg
        self.value = spec.value
        self.emit_each = spec.emit == "each"
        self.counts = CountState() if isinstance(spec.agg, Count) else None
        """A count's state, as slots and an int64 array (count_state.py)."""
        self.state: MutableMapping[Any, Any] = {} if self.counts is None else self.counts
        """{key: accumulator}, insert-only (a count's is `counts`)."""
        self._index = KeyIndex()
        """What snapshots learned about the keys; used only by the snapshot thread
        (`group`) and by `restore`, before the job runs."""

    def process(self, batch: Batch) -> None:
        keys = batch.keys
        assert keys is not None
        if self.counts is not None:
            if self.emit_each:
                self.emit(Batch(self.counts.add_each(keys), batch.timestamps))
            else:
                self.emit(Batch(self.counts.add_batch(keys)))
            return
        st = self.state
        out: list[Any] = []
        values = batch.records if self.value is None else list(map(self.value, batch.records))
        create, add = self.agg.create, self.agg.add
        if self.emit_each:
            for k, v in zip(keys, values, strict=True):
                acc = st.get(k, _MISSING)
                acc = create(v) if acc is _MISSING else add(acc, v)
                st[k] = acc
                out.append((k, acc))
            self.emit(Batch(out, batch.timestamps))
        else:
            touched: dict[Any, None] = {}
            for k, v in zip(keys, values, strict=True):
                acc = st.get(k, _MISSING)
                st[k] = create(v) if acc is _MISSING else add(acc, v)
                touched[k] = None
            self.emit(Batch([(k, st[k]) for k in touched]))

    def capture(self, checkpoint_id: int) -> Capture:
        # Quick copies (the task's thread waits for them): one int64 array for a count,
        # two lists of pointers otherwise. The snapshot thread builds the columns while
        # processing goes on (aggregate_state.py).
        if self.counts is not None:
            keyed = AggregateCapture(*self.counts.capture())
        else:
            keyed = AggregateCapture(list(self.state), len(self.state), list(self.state.values()))
        return Capture(keyed, {"kind": self.kind})

    def group(self, keyed: Any, grouper: KeyGrouper) -> dict[int, Any]:
        return columns_by_key_group(keyed, self._index, grouper)

    def group_steps(self, keyed: Any, grouper: KeyGrouper) -> Generator[None, None, dict[int, Any]]:
        return (yield from columns_by_key_group_steps(keyed, self._index, grouper))

    def group_changes(
        self, keyed: Any, grouper: KeyGrouper, since: Any
    ) -> Generator[None, None, tuple[dict[int, Any], set[int], Any]]:
        if self.counts is None:  # other aggregations: compared block by block
            return (yield from super().group_changes(keyed, grouper, since))
        memo = since if isinstance(since, CountMemo) else None
        return (yield from count_changes_steps(keyed, self._index, grouper, memo))

    def restore(self, keyed: Iterable[tuple[int, Any]], operator_states: list[Any]) -> None:
        state = self.state
        fresh = not state
        groups: list[int] = []
        sizes: list[int] = []
        key_parts: list[list[Any] | npt.NDArray[Any]] = []
        value_parts: list[list[Any] | npt.NDArray[Any]] = []
        for kg, data in keyed:
            if isinstance(data, dict):  # formats 2 and 3: {"keys": [...], "values": [...]}
                keys, values = data["keys"], data["values"]
                if len(keys) != len(values):
                    raise ValueError(f"key group {kg}: {len(keys)} keys but {len(values)} values")
                if isinstance(keys, list) and list in set(map(type, keys)):
                    keys = list(map(decode_key, keys))  # tuple keys were written as arrays
            else:  # format 1: [[key, value], ...]
                keys = [decode_key(k) for k, _ in data]
                values = [v for _, v in data]
            if self.counts is not None:
                try:
                    _check_count_column(values)
                except ValueError as exc:
                    raise ValueError(f"key group {kg} of a count: {exc}") from exc
            key_parts.append(keys)
            value_parts.append(values)
            groups.append(kg)
            sizes.append(len(keys))
        # An int64 key column is taken whole: its ints are made once (tolist), and the
        # key index takes the array itself.
        ints = _concatenated_ints(key_parts)
        all_keys = ints.tolist() if ints is not None else _concatenated(key_parts)
        if self.counts is not None:
            counts = _concatenated_ints(value_parts)  # a count column: no check per count
            self.counts.load(
                all_keys,
                _concatenated(value_parts) if counts is None else counts,
                checked=True,
            )
        else:
            state.update(zip(all_keys, _concatenated(value_parts), strict=True))
        self._index.reset()
        if fresh and len(state) == len(all_keys):
            # The state's keys are the restored ones, in key-group order: the next
            # snapshot needs to hash none of them.
            kgs = np.repeat(np.array(groups, np.int32), sizes)
            self._index.learn(all_keys, len(all_keys), groups=kgs, ints=ints)


def _check_count_column(values: list[Any] | npt.NDArray[Any]) -> None:
    if isinstance(values, np.ndarray):
        if values.dtype != np.int64:
            raise ValueError(f"a count must be an integer, got {values.dtype}")
    else:
        check_counts(values)


def _concatenated_ints(
    parts: list[list[Any] | npt.NDArray[Any]],
) -> npt.NDArray[np.int64] | None:
    """The parts as one int64 array if every part is one, else None."""
    if parts and all(isinstance(p, np.ndarray) and p.dtype == np.int64 for p in parts):
        return np.concatenate(parts)
    return None


def _concatenated(parts: list[list[Any] | npt.NDArray[Any]]) -> list[Any]:
    """The parts as one list; array parts as Python ints / floats (tolist)."""
    out: list[Any] = []
    for part in parts:
        out += part.tolist() if isinstance(part, np.ndarray) else part
    return out


class ProcessOp(Operator):
    """A user KeyedProcess with value/map/list state and timers."""

    kind = "process"
    stateful = True
    keyed = True

    def __init__(self, spec: ProcessSpec, now_ms: Callable[[], int]) -> None:
        super().__init__()
        self.fn: KeyedProcess = spec.fn
        self.store = KeyedStateStore()
        self.ctx = KeyedContext(self.store, now_ms)
        self.ctx.watermark = MIN_TS

    def process(self, batch: Batch) -> None:
        keys = batch.keys
        assert keys is not None
        ctx, fn = self.ctx, self.fn
        ts = batch.timestamps
        out: list[Any] = []
        out_ts: list[int] | None = [] if ts is not None else None
        ctx.time_domain = None
        for i, (k, r) in enumerate(zip(keys, batch.records, strict=True)):
            ctx.key = k
            ctx.timestamp = ts[i] if ts is not None else None
            before = len(out)
            out.extend(iter_outputs(fn.process(k, r, ctx)))
            if out_ts is not None and ts is not None:
                out_ts.extend([ts[i]] * (len(out) - before))
        if out:
            self.emit(Batch(out, out_ts))

    def _fire(self, timers: Timers, upto: int, domain: TimeDomain) -> None:
        ctx = self.ctx
        out: list[Any] = []
        out_ts: list[int] = []
        while (due := timers.pop_due(upto)) is not None:
            ts, key = due
            ctx.key, ctx.timestamp, ctx.time_domain = key, ts, domain
            before = len(out)
            out.extend(iter_outputs(self.fn.on_timer(key, ts, ctx)))
            out_ts.extend([ts] * (len(out) - before))
        ctx.time_domain = None
        if out:
            self.emit(Batch(out, out_ts if domain == "event" else None))

    def on_watermark(self, wm: int) -> None:
        self.ctx.watermark = wm
        self._fire(self.store.event_timers, wm, "event")

    def on_processing_time(self, now_ms: int) -> None:
        if len(self.store.processing_timers):
            self._fire(self.store.processing_timers, now_ms, "processing")

    def capture(self, checkpoint_id: int) -> Capture:
        return Capture(self.store.capture(), {"kind": self.kind, "watermark": self.ctx.watermark})

    def group(self, keyed: Any, grouper: KeyGrouper) -> dict[int, Any]:
        return group_capture(keyed, grouper)

    def restore(self, keyed: Iterable[tuple[int, Any]], operator_states: list[Any]) -> None:
        for _kg, data in keyed:
            self.store.restore_group(data)
        wms = [s.get("watermark", MIN_TS) for s in operator_states if isinstance(s, dict)]
        self.ctx.watermark = min(wms) if wms else MIN_TS


class WindowOp(Operator):
    """Event-time windows per key with incremental aggregation and allowed lateness."""

    kind = "window"
    stateful = True
    keyed = True

    def __init__(self, spec: WindowSpec) -> None:
        super().__init__()
        self.spec = spec
        self.agg = spec.agg
        self.lateness = spec.allowed_lateness_ms
        self.sessions = isinstance(spec.assigner, SessionWindows)
        self.wm = MIN_TS
        # key -> {(start, end): accumulator}
        self.state: dict[Any, dict[tuple[int, int], Any]] = {}
        self._seq = itertools.count()
        self._fire_heap: list[tuple[int, int, Any, int]] = []  # (end, seq, key, start)
        self._clean_heap: list[tuple[int, int, Any, int, int]] = []  # (at, seq, key, s, e)
        self.late_records = 0

    def _schedule(self, key: Any, start: int, end: int, fired: bool) -> None:
        if not fired:
            heapq.heappush(self._fire_heap, (end, next(self._seq), key, start))
        heapq.heappush(
            self._clean_heap,
            (end - 1 + self.lateness, next(self._seq), key, start, end),
        )

    def _result(self, key: Any, start: int, end: int, acc: Any) -> dict[str, Any]:
        return {"key": key, "start": start, "end": end, "value": self.agg.result(acc)}

    def process(self, batch: Batch) -> None:
        keys, ts = batch.keys, batch.timestamps
        assert keys is not None
        if ts is None:
            raise RuntimeError(f"window step got records without event time ({self.spec})")
        values = (
            batch.records if self.spec.value is None else list(map(self.spec.value, batch.records))
        )
        wm, lateness = self.wm, self.lateness
        create, add, merge = self.agg.create, self.agg.add, self.agg.merge
        assign = self.spec.assigner.assign
        fired: list[Any] = []
        fired_ts: list[int] = []
        late: list[Any] = []
        late_ts: list[int] = []
        for i, key in enumerate(keys):
            t = ts[i]
            if wm != MIN_TS and t + lateness <= wm:
                late.append(batch.records[i])
                late_ts.append(t)
                continue
            wins = self.state.get(key)
            if wins is None:
                wins = self.state[key] = {}
            v = values[i]
            for window in assign(t):
                start, end = window
                if end - 1 + lateness <= wm:
                    continue  # this window is gone; the record may still fit others
                if self.sessions:
                    start, end, acc = self._merge_session(wins, key, window, create(v), merge)
                else:
                    acc = wins.get((start, end), _MISSING)
                    if acc is _MISSING:
                        acc = create(v)
                        self._schedule(key, start, end, fired=end - 1 <= wm)
                    else:
                        acc = add(acc, v)
                    wins[(start, end)] = acc
                if end - 1 <= wm:  # late but allowed: emit the updated result now
                    fired.append(self._result(key, start, end, acc))
                    fired_ts.append(end - 1)
        if fired:
            self.emit(Batch(fired, fired_ts))
        if late:
            self.late_records += len(late)
            if self.spec.late == "side":
                self.emit_port("late", Batch(late, late_ts))

    def _merge_session(
        self,
        wins: dict[tuple[int, int], Any],
        key: Any,
        window: tuple[int, int],
        acc: Any,
        merge: Callable[[Any, Any], Any],
    ) -> tuple[int, int, Any]:
        start, end = window
        for s, e in sorted(w for w in wins if w[0] < end and start < w[1]):
            acc = merge(wins.pop((s, e)), acc)
            start, end = min(start, s), max(end, e)
        wins[(start, end)] = acc
        self._schedule(key, start, end, fired=end - 1 <= self.wm)
        return start, end, acc

    def on_watermark(self, wm: int) -> None:
        self.wm = wm
        out: list[Any] = []
        out_ts: list[int] = []
        heap = self._fire_heap
        while heap and heap[0][0] - 1 <= wm:
            end, _, key, start = heapq.heappop(heap)
            wins = self.state.get(key)
            if wins is not None and (start, end) in wins:
                out.append(self._result(key, start, end, wins[(start, end)]))
                out_ts.append(end - 1)
        clean = self._clean_heap
        while clean and clean[0][0] <= wm:
            _, _, key, start, end = heapq.heappop(clean)
            wins = self.state.get(key)
            if wins is not None:
                wins.pop((start, end), None)
                if not wins:
                    del self.state[key]
        if out:
            self.emit(Batch(out, out_ts))

    def capture(self, checkpoint_id: int) -> Capture:
        copy = {
            k: {w: (list(a) if isinstance(a, list) else a) for w, a in wins.items()}
            for k, wins in self.state.items()
        }
        return Capture((copy, self.wm), {"kind": self.kind, "watermark": self.wm})

    def group(self, keyed: Any, grouper: KeyGrouper) -> dict[int, Any]:
        state, wm = keyed
        out: dict[int, dict[str, Any]] = {}
        for k, wins in state.items():
            if not wins:
                continue
            kg = grouper(k)
            group = out.get(kg)
            if group is None:
                group = out[kg] = {"wm": wm, "w": []}
            group["w"].append([k, [[s, e, acc] for (s, e), acc in wins.items()]])
        return dict(out)

    def restore(self, keyed: Iterable[tuple[int, Any]], operator_states: list[Any]) -> None:
        wms: list[int] = []
        for _kg, data in keyed:
            old_wm = data["wm"]
            wms.append(old_wm)
            for k, wins in data["w"]:
                key = decode_key(k)
                d = self.state.setdefault(key, {})
                for s, e, acc in wins:
                    d[(s, e)] = acc
                    self._schedule(key, s, e, fired=e - 1 <= old_wm)
        old = [s.get("watermark", MIN_TS) for s in operator_states if isinstance(s, dict)]
        candidates = wms or old
        self.wm = min(candidates) if candidates else MIN_TS


class SinkOp(Operator):
    """Feeds a SinkWriter; pre-commits at barriers, commits after the manifest."""

    kind = "sink"
    stateful = True

    def __init__(self, sink: Sink, ctx: SinkContext) -> None:
        super().__init__()
        self.sink = sink
        self.ctx = ctx
        self.restored: list[Any] = []
        self.pending: list[tuple[int, Any]] = []
        self.writer: SinkWriter | None = None

    def restore(self, keyed: Iterable[tuple[int, Any]], operator_states: list[Any]) -> None:
        # Old subtask s's committables go to new subtask s % parallelism: a sink that
        # cleans up after an earlier attempt (FileSink) then knows that no other subtask
        # still needs the staged files of the old subtasks it is given.
        self.restored = [
            c
            for i, state in enumerate(operator_states)
            if state.get("subtask", i) % self.ctx.parallelism == self.ctx.subtask
            for _cid, c in state.get("pending", [])
        ]

    def open(self) -> None:
        self.writer = self.sink.open(self.ctx, self.restored)

    def process(self, batch: Batch) -> None:
        assert self.writer is not None
        self.writer.write(batch.records)

    def capture(self, checkpoint_id: int) -> Capture:
        assert self.writer is not None
        committable = self.writer.pre_commit(checkpoint_id)
        if committable is not None:
            self.pending.append((checkpoint_id, committable))
        pending = [list(p) for p in self.pending]
        state = {"kind": self.kind, "subtask": self.ctx.subtask, "pending": pending}
        return Capture(None, state, partial(self.writer.wait_durable, checkpoint_id))

    def notify_complete(self, checkpoint_id: int) -> None:
        assert self.writer is not None
        keep: list[tuple[int, Any]] = []
        for cid, committable in self.pending:
            if cid <= checkpoint_id:
                self.writer.commit(cid, committable)
            else:
                keep.append((cid, committable))
        self.pending = keep

    def on_processing_time(self, now_ms: int) -> None:
        if self.writer is not None:
            self.writer.committing()  # raises the error of a background commit

    def committing(self) -> str | None:
        """What the writer's background commit waits for, or None (see SinkWriter)."""
        return self.writer.committing() if self.writer is not None else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
