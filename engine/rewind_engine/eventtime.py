"""Event time: timestamps and watermarks with bounded out-of-orderness.

A source step given `watermarks=BoundedOutOfOrderness(...)` stamps every record with an
event time (ms) and, per split, emits watermark = highest timestamp seen - max delay - 1
(Flink's rule: a record with timestamp t is on time while watermark < t). A source
subtask's watermark is the minimum over its active splits; a step's watermark is the
minimum over its inputs; watermarks only move forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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

    def __post_init__(self) -> None:
        if self.max_out_of_orderness_ms < 0:
            raise ValueError("max_out_of_orderness_ms must be >= 0")
