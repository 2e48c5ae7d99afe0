"""Processing time, injected: the runtime and user steps read time only from a Clock.

Tests pass a `ManualClock` to make processing-time timers and rates deterministic; the
engine uses `SystemClock`. All values are milliseconds since the epoch (int).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of processing time in ms since the epoch."""

    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self._now += ms

    def set(self, ms: int) -> None:
        self._now = ms
