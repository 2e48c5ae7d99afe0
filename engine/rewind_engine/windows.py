"""Window assigners and window aggregations (the user-facing half of windowing).

Flows through here: a record's event time goes in, the windows it belongs to come out
as half-open [start, end) intervals in ms. Aggregations are incremental accumulators
(`create`, `add` a batch of values, `merge` two accumulators for session merges), so a
window holds one small value per key, not every record, unless `collect` is asked for.
What must stay true: assignment depends only on the timestamp (deterministic, so a
restore produces the very same windows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TumblingWindows:
    """Fixed, non-overlapping windows of `size_ms`, aligned to the epoch plus `offset_ms`."""

    size_ms: int
    offset_ms: int = 0

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ValueError("size_ms must be > 0")

    def assign(self, ts: int) -> list[tuple[int, int]]:
        start = ts - (ts - self.offset_ms) % self.size_ms
        return [(start, start + self.size_ms)]


@dataclass(frozen=True)
class SlidingWindows:
    """Windows of `size_ms` starting every `slide_ms` (a record is in size/slide windows)."""

    size_ms: int
    slide_ms: int
    offset_ms: int = 0

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.slide_ms <= 0:
            raise ValueError("size_ms and slide_ms must be > 0")

    def assign(self, ts: int) -> list[tuple[int, int]]:
        last_start = ts - (ts - self.offset_ms) % self.slide_ms
        out = []
        start = last_start
        while start > ts - self.size_ms:
            out.append((start, start + self.size_ms))
            start -= self.slide_ms
        return out


@dataclass(frozen=True)
class SessionWindows:
    """Per-key sessions: a window closes after `gap_ms` without records for that key."""

    gap_ms: int

    def __post_init__(self) -> None:
        if self.gap_ms <= 0:
            raise ValueError("gap_ms must be > 0")

    def assign(self, ts: int) -> list[tuple[int, int]]:
        return [(ts, ts + self.gap_ms)]


WindowAssigner = TumblingWindows | SlidingWindows | SessionWindows


class Aggregation:
    """An incremental accumulator over the values of one window (or one key)."""

    name = "custom"

    def create(self, value: Any) -> Any:
        """The accumulator of a single value."""
        return value

    def add(self, acc: Any, value: Any) -> Any:
        raise NotImplementedError

    def merge(self, a: Any, b: Any) -> Any:
        return self.add(a, b)

    def result(self, acc: Any) -> Any:
        return acc


class Count(Aggregation):
    name = "count"

    def create(self, value: Any) -> Any:
        return 1

    def add(self, acc: Any, value: Any) -> Any:
        return acc + 1

    def merge(self, a: Any, b: Any) -> Any:
        return a + b


class Sum(Aggregation):
    name = "sum"

    def add(self, acc: Any, value: Any) -> Any:
        return acc + value


class Min(Aggregation):
    name = "min"

    def add(self, acc: Any, value: Any) -> Any:
        return value if value < acc else acc


class Max(Aggregation):
    name = "max"

    def add(self, acc: Any, value: Any) -> Any:
        return value if value > acc else acc


class Collect(Aggregation):
    """Keeps every value (a list); for windows whose result needs all records."""

    name = "collect"

    def create(self, value: Any) -> Any:
        return [value]

    def add(self, acc: Any, value: Any) -> Any:
        acc.append(value)
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        return a + b


class Reduce(Aggregation):
    """fn(acc, value) -> acc, where values and accumulators have the same type."""

    name = "reduce"

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn

    def add(self, acc: Any, value: Any) -> Any:
        return self.fn(acc, value)


AGGREGATIONS: dict[str, type[Aggregation]] = {
    "count": Count,
    "sum": Sum,
    "min": Min,
    "max": Max,
    "collect": Collect,
}


def aggregation(agg: str | Aggregation | Callable[[Any, Any], Any]) -> Aggregation:
    """An Aggregation from a name ("count", "sum", "min", "max", "collect"), an
    Aggregation, or a reduce function."""
    if isinstance(agg, Aggregation):
        return agg
    if isinstance(agg, str):
        if agg not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {agg!r}; use one of {sorted(AGGREGATIONS)}")
        return AGGREGATIONS[agg]()
    if callable(agg):
        return Reduce(agg)
    raise TypeError(f"aggregation must be a name, an Aggregation or a function, got {agg!r}")
