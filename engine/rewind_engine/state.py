"""Keyed state for user steps: value, map and list state per key, and timers.

What flows through here: the runtime sets the current key, then calls the user's
`KeyedProcess.process(key, record, ctx)`; `ctx.value(...)`, `ctx.map(...)`,
`ctx.list(...)` give handles bound to that key; `ctx.register_event_timer(ts)` /
`ctx.register_processing_timer(ts)` schedule `on_timer(key, ts, ctx)`. All state of a
subtask lives in one `KeyedStateStore`.

What must stay true:
- state values are msgpack-able data (they go into snapshots as data, never pickled),
  and are treated as immutable once stored: `set`/`put`/`add` again after changing one.
  A snapshot copies containers (dicts, lists) but not the values inside them.
- a timer is unique per (key, timestamp, domain) as in Flink; it fires once, in
  timestamp order, event-time timers when the watermark reaches them, processing-time
  timers when the injected clock does.
- capture() is quick (copies containers); grouping by key group happens later, off the
  hot path, in `group_capture`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from .keys import KeyGrouper, decode_key

TimeDomain = Literal["event", "processing"]


class KeyedProcess:
    """Base class of a keyed stateful step. Override `process`; `on_timer` if you set
    timers. Return an iterable of outputs (or None)."""

    def process(self, key: Any, record: Any, ctx: KeyedContext) -> Iterable[Any] | None:
        """Called for each record of `key`; `ctx` holds that key's state and timers."""
        raise NotImplementedError

    def on_timer(self, key: Any, timestamp: int, ctx: KeyedContext) -> Iterable[Any] | None:
        """Called when a timer of `key` set for `timestamp` fires (`ctx.time_domain`
        says which kind); the default does nothing."""
        return None


class StatefulMap(KeyedProcess):
    """fn(state, record) -> (state, output), Bytewax style, over one value state."""

    def __init__(self, fn: Callable[[Any, Any], tuple[Any, Any]]) -> None:
        self.fn = fn

    def process(self, key: Any, record: Any, ctx: KeyedContext) -> Iterable[Any] | None:
        state = ctx.value("state")
        new_state, out = self.fn(state.get(), record)
        if new_state is None:
            state.clear()
        else:
            state.set(new_state)
        return None if out is None else (out,)


class ValueState:
    """One value per key."""

    __slots__ = ("_d", "_default", "_key")

    def __init__(self, d: dict[Any, Any], key: Any, default: Any) -> None:
        self._d, self._key, self._default = d, key, default

    def get(self) -> Any:
        """The key's value, or the default given to `ctx.value(...)` if none is set."""
        return self._d.get(self._key, self._default)

    def set(self, value: Any) -> None:
        """Replace the key's value (msgpack-able: it goes into every snapshot)."""
        self._d[self._key] = value

    def clear(self) -> None:
        """Forget the key's value (it no longer takes room in snapshots)."""
        self._d.pop(self._key, None)


class MapState:
    """A dict per key."""

    __slots__ = ("_d", "_key")

    def __init__(self, d: dict[Any, dict[Any, Any]], key: Any) -> None:
        self._d, self._key = d, key

    def _map(self) -> dict[Any, Any]:
        return self._d.get(self._key) or {}

    def get(self, k: Any, default: Any = None) -> Any:
        """The value at `k` in the key's map, or `default`."""
        return self._map().get(k, default)

    def put(self, k: Any, v: Any) -> None:
        """Set `k` to `v` in the key's map (msgpack-able)."""
        self._d.setdefault(self._key, {})[k] = v

    def remove(self, k: Any) -> None:
        """Remove `k` from the key's map, if there."""
        m = self._d.get(self._key)
        if m is not None:
            m.pop(k, None)
            if not m:
                del self._d[self._key]

    def contains(self, k: Any) -> bool:
        """True if the key's map has `k`."""
        return k in self._map()

    def items(self) -> list[tuple[Any, Any]]:
        """The key's map as (k, v) pairs (a copy)."""
        return list(self._map().items())

    def keys(self) -> list[Any]:
        """The keys of the key's map (a copy)."""
        return list(self._map())

    def clear(self) -> None:
        """Forget the key's state of this name."""
        self._d.pop(self._key, None)


class ListState:
    """A list per key."""

    __slots__ = ("_d", "_key")

    def __init__(self, d: dict[Any, list[Any]], key: Any) -> None:
        self._d, self._key = d, key

    def get(self) -> list[Any]:
        """The key's list (a copy)."""
        return list(self._d.get(self._key, ()))

    def add(self, value: Any) -> None:
        """Append `value` to the key's list."""
        self._d.setdefault(self._key, []).append(value)

    def update(self, values: Iterable[Any]) -> None:
        """Replace the key's list with `values` (empty: forget it)."""
        values = list(values)
        if values:
            self._d[self._key] = values
        else:
            self._d.pop(self._key, None)

    def clear(self) -> None:
        """Forget the key's state of this name."""
        self._d.pop(self._key, None)


class Timers:
    """Timers of one domain: unique (timestamp, key) pairs, popped in timestamp order."""

    def __init__(self) -> None:
        self.pending: set[tuple[int, Any]] = set()
        self._heap: list[tuple[int, int, Any]] = []
        self._seq = itertools.count()  # tie-breaker: keys of mixed types don't compare

    def register(self, ts: int, key: Any) -> None:
        if (ts, key) not in self.pending:
            self.pending.add((ts, key))
            heapq.heappush(self._heap, (ts, next(self._seq), key))

    def delete(self, ts: int, key: Any) -> None:
        self.pending.discard((ts, key))  # the heap entry is skipped when popped

    def pop_due(self, upto: int) -> tuple[int, Any] | None:
        """The earliest pending timer with timestamp <= upto, removed; None if none."""
        heap = self._heap
        while heap and heap[0][0] <= upto:
            ts, _, key = heapq.heappop(heap)
            if (ts, key) in self.pending:
                self.pending.discard((ts, key))
                return ts, key
        return None

    def __len__(self) -> int:
        return len(self.pending)


class KeyedStateStore:
    """All keyed state and timers of one subtask of a KeyedProcess step."""

    def __init__(self) -> None:
        self.values: dict[str, dict[Any, Any]] = {}
        self.maps: dict[str, dict[Any, dict[Any, Any]]] = {}
        self.lists: dict[str, dict[Any, list[Any]]] = {}
        self.event_timers = Timers()
        self.processing_timers = Timers()

    def capture(self) -> dict[str, Any]:
        """A copy of everything, quick (containers copied, values shared)."""
        return {
            "v": {n: dict(d) for n, d in self.values.items()},
            "m": {n: {k: dict(m) for k, m in d.items()} for n, d in self.maps.items()},
            "l": {n: {k: list(v) for k, v in d.items()} for n, d in self.lists.items()},
            "et": list(self.event_timers.pending),
            "pt": list(self.processing_timers.pending),
        }

    def restore_group(self, data: dict[str, Any]) -> None:
        """Add one key group's state (as written by `group_capture`)."""
        for name, pairs in data.get("v", {}).items():
            d = self.values.setdefault(name, {})
            for k, v in pairs:
                d[decode_key(k)] = v
        for name, pairs in data.get("m", {}).items():
            md = self.maps.setdefault(name, {})
            for k, items in pairs:
                md[decode_key(k)] = {decode_key(mk): mv for mk, mv in items}
        for name, pairs in data.get("l", {}).items():
            ld = self.lists.setdefault(name, {})
            for k, v in pairs:
                ld[decode_key(k)] = list(v)
        for k, ts in data.get("et", []):
            self.event_timers.register(ts, decode_key(k))
        for k, ts in data.get("pt", []):
            self.processing_timers.register(ts, decode_key(k))


def group_capture(capture: dict[str, Any], grouper: KeyGrouper) -> dict[int, Any]:
    """Split a capture into {key group: msgpack-able data}; runs in the background."""
    out: dict[int, dict[str, Any]] = {}

    def slot(key: Any, section: str) -> Any:
        group = out.get(grouper(key))
        if group is None:
            group = out[grouper(key)] = {}
        return group.setdefault(section, {} if section in ("v", "m", "l") else [])

    for section in ("v", "l"):
        for name, d in capture[section].items():
            for k, v in d.items():
                slot(k, section).setdefault(name, []).append([k, v])
    for name, d in capture["m"].items():
        for k, m in d.items():
            slot(k, "m").setdefault(name, []).append([k, [[mk, mv] for mk, mv in m.items()]])
    for section in ("et", "pt"):
        for ts, k in capture[section]:
            slot(k, section).append([k, ts])
    return dict(out)


class KeyedContext:
    """What a KeyedProcess sees: the current key's state, time and timers."""

    def __init__(self, store: KeyedStateStore, now_ms: Callable[[], int]) -> None:
        self._store = store
        self._now = now_ms
        self.key: Any = None
        self.timestamp: int | None = None
        """Event time of the current record (or the firing timer's time), if known."""
        self.watermark: int = 0
        """The step's current event-time watermark."""
        self.time_domain: TimeDomain | None = None
        """In on_timer: which kind of timer fired."""

    def now(self) -> int:
        """Processing time (ms), from the job's injected clock."""
        return self._now()

    def value(self, name: str, default: Any = None) -> ValueState:
        """The current key's value state `name` (one value per key)."""
        return ValueState(self._store.values.setdefault(name, {}), self.key, default)

    def map(self, name: str) -> MapState:
        """The current key's map state `name` (a dict per key)."""
        return MapState(self._store.maps.setdefault(name, {}), self.key)

    def list(self, name: str) -> ListState:
        """The current key's list state `name` (a list per key)."""
        return ListState(self._store.lists.setdefault(name, {}), self.key)

    def register_event_timer(self, ts: int) -> None:
        """Call `on_timer` for this key once the watermark passes `ts` (ms); once per
        (ts, key)."""
        self._store.event_timers.register(int(ts), self.key)

    def delete_event_timer(self, ts: int) -> None:
        """Cancel this key's event-time timer at `ts`, if set."""
        self._store.event_timers.delete(int(ts), self.key)

    def register_processing_timer(self, ts: int) -> None:
        """Call `on_timer` for this key once the job's clock reaches `ts` (ms); once per
        (ts, key)."""
        self._store.processing_timers.register(int(ts), self.key)

    def delete_processing_timer(self, ts: int) -> None:
        """Cancel this key's processing-time timer at `ts`, if set."""
        self._store.processing_timers.delete(int(ts), self.key)


def iter_outputs(result: Iterable[Any] | None) -> Iterator[Any]:
    """The outputs of a user call (None means none)."""
    if result is None:
        return iter(())
    return iter(result)
