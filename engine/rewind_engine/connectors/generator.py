"""A deterministic, resettable generator source (for demos, tests and benchmarks).

Record number `seq` is always `make(seq)`, whatever the rate, the restarts or the
parallelism: the sequence space is split into `splits` interleaved splits
(split i produces seq = i, i + splits, i + 2 * splits, ...), and a split's position is
how many records it has produced. A restore from a position therefore continues with
exactly the next record. `rate` (records/s for the whole source) only paces the
output; `total` makes the source bounded.

`skewed(seq, n, skew)` picks a key in [0, n) from a record number with a stable hash,
uniform for skew=1 and increasingly concentrated on low keys for larger skew.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .base import Source, SourceBatch, SourceContext, SplitReader

_MASK = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64: a stable, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def uniform(seq: int, salt: int = 0) -> float:
    """A stable pseudo-random number in [0, 1) for record `seq`."""
    return mix64(seq * 0x100000001B3 + salt) / 2.0**64


def skewed(seq: int, n: int, skew: float = 1.0, salt: int = 0) -> int:
    """A key in [0, n) for record `seq`: uniform at skew 1, hot low keys above 1."""
    return min(n - 1, int(n * uniform(seq, salt) ** skew))


class GeneratorSource(Source):
    """Records make(0), make(1), ... in `splits` splits, optionally paced and bounded."""

    def __init__(
        self,
        make: Callable[[int], Any] = lambda seq: seq,
        *,
        total: int | None = None,
        rate: float | None = None,
        splits: int = 1,
        timestamp: Callable[[int], int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if splits < 1:
            raise ValueError("splits must be >= 1")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0 records/s (or None for as fast as possible)")
        self.make = make
        self.total = total
        self.rate = rate
        self.n_splits = splits
        self.timestamp = timestamp
        self.monotonic = monotonic

    def discover_splits(self) -> list[str]:
        return [f"gen-{i}" for i in range(self.n_splits)]

    def bounded(self) -> bool:
        return self.total is not None

    def open_split(self, split: str, position: Any | None, ctx: SourceContext) -> SplitReader:
        index = int(split.removeprefix("gen-"))
        return GeneratorReader(self, index, int(position or 0))


class GeneratorReader(SplitReader):
    def __init__(self, source: GeneratorSource, index: int, produced: int) -> None:
        self.s = source
        self.index = index
        self.produced = produced
        n = source.n_splits
        total = source.total
        # Records of this split: seq = index + n * k for k < limit.
        self.limit = None if total is None else max(0, (total - index + n - 1) // n)
        self._t0 = source.monotonic()
        self._from = produced
        self._split_rate = None if source.rate is None else source.rate / n

    def poll(self, max_records: int) -> SourceBatch | None:
        want = max_records
        if self.limit is not None:
            want = min(want, self.limit - self.produced)
            if want <= 0:
                return SourceBatch([], finished=True)
        if self._split_rate is not None:
            allowed = int((self.s.monotonic() - self._t0) * self._split_rate) - (
                self.produced - self._from
            )
            want = min(want, allowed)
            if want <= 0:
                return None
        n, i, make = self.s.n_splits, self.index, self.s.make
        seqs = range(i + n * self.produced, i + n * (self.produced + want), n)
        records = [make(seq) for seq in seqs]
        ts = [self.s.timestamp(seq) for seq in seqs] if self.s.timestamp else None
        self.produced += want
        finished = self.limit is not None and self.produced >= self.limit
        return SourceBatch(records, ts, finished)

    def position(self) -> Any:
        return self.produced
