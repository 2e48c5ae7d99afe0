"""Routers: how one subtask's output batches reach the subtasks of the next step.

- Forward: subtask i -> subtask i (same parallelism).
- Rebalance: whole batches round robin (parallelism changes, no key).
- Hash: by key group of each record's key (after key_by), with Flink's contiguous
  key-group ranges, so a key always reaches the subtask that owns its state.
Watermarks and barriers are broadcast to every channel.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..keys import KeyGrouper, owners
from .channels import Channel
from .elements import Batch, Element


class Router:
    def __init__(self, channels: Sequence[Channel]) -> None:
        self.channels = list(channels)

    def send(self, batch: Batch) -> None:
        raise NotImplementedError

    def broadcast(self, element: Element) -> None:
        for ch in self.channels:
            ch.push(element)


class ForwardRouter(Router):
    def send(self, batch: Batch) -> None:
        self.channels[0].push(batch)


class RebalanceRouter(Router):
    def __init__(self, channels: Sequence[Channel], start: int = 0) -> None:
        super().__init__(channels)
        self._next = start % len(self.channels)

    def send(self, batch: Batch) -> None:
        self.channels[self._next].push(batch)
        self._next = (self._next + 1) % len(self.channels)


class HashRouter(Router):
    def __init__(self, channels: Sequence[Channel], max_parallelism: int) -> None:
        super().__init__(channels)
        self._grouper = KeyGrouper(max_parallelism)
        self._owner = owners(len(self.channels), max_parallelism)

    def send(self, batch: Batch) -> None:
        n = len(self.channels)
        keys = batch.keys
        if keys is None:
            raise RuntimeError("hash routing needs keys: a keyed step must follow key_by")
        if n == 1:
            self.channels[0].push(batch)
            return
        grouper, owner = self._grouper, self._owner
        recs: list[list[object]] = [[] for _ in range(n)]
        ks: list[list[object]] = [[] for _ in range(n)]
        ts = batch.timestamps
        tss: list[list[int]] | None = [[] for _ in range(n)] if ts is not None else None
        for i, (key, rec) in enumerate(zip(keys, batch.records, strict=True)):
            d = owner[grouper(key)]
            recs[d].append(rec)
            ks[d].append(key)
            if tss is not None and ts is not None:
                tss[d].append(ts[i])
        for d in range(n):
            if recs[d]:
                self.channels[d].push(Batch(recs[d], tss[d] if tss is not None else None, ks[d]))
