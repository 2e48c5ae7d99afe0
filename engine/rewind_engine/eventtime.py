"""Event time: timestamps and watermarks with bounded out-of-orderness.

A source step given `watermarks=BoundedOutOfOrderness(...)` stamps every record with an
event time (ms) and, per split, emits watermark = highest timestamp seen - max delay - 1
(Flink's rule: a record with timestamp t is on time while watermark < t). A source
subtask's watermark is the minimum over its active splits; a step's watermark is the
minimum over its inputs; watermarks only move forward.

Idleness (Flink's `withIdleness`): with `idle_timeout_ms` set, a split that produced no
record for that long (processing time, read from the job's injected clock) is left out
of the minimum until it produces again, so an empty Kafka partition cannot hold event
time back forever. When every split of a source subtask is idle, the subtask tells its
consumers so (an idle watermark), and they leave that input out of their minimum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

MIN_TS = -(2**63)
"""Watermark before any record: nothing is late yet."""

MAX_TS = 2**63 - 1
"""Watermark of the end of input (a finished source, or a drain): everything fires."""


@dataclass(frozen=True)
class BoundedOutOfOrderness:
    """Watermarks that trail the highest timestamp seen by `max_out_of_orderness_ms`."""

    max_out_of_orderness_ms: int = 0
    """How late (ms) a record may arrive after a newer one and still be on time."""

    timestamp: Callable[[Any], int] | str | None = None
    """Event time of a record in ms: a function, a field name (dict records), or None to
    use the timestamps the source itself provides."""

    idle_timeout_ms: int | None = None
    """A split with no record for this long (ms, processing time) stops holding the
    watermark back until it produces again; None: splits never count as idle."""

    def __post_init__(self) -> None:
        if self.max_out_of_orderness_ms < 0:
            raise ValueError("max_out_of_orderness_ms must be >= 0")
        if self.idle_timeout_ms is not None and self.idle_timeout_ms <= 0:
            raise ValueError("idle_timeout_ms must be > 0 (or None for no idleness)")

    def with_idleness(self, timeout_ms: int) -> BoundedOutOfOrderness:
        """The same strategy with splits idle after `timeout_ms` without a record."""
        return replace(self, idle_timeout_ms=timeout_ms)
