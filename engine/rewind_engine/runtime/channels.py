"""Bounded channels between subtasks (backpressure) behind a small interface.

A sender checks `has_space()` before it processes more input; a full channel thereby
pauses everything upstream of it. Capacity is soft: one processed element may push its
whole output even if that overfills a channel by a little, which keeps a subtask from
ever having to stop halfway through a batch.

What must stay true: FIFO per channel. `LocalChannel` is an in-process deque; a channel
to another process (later) implements the same four methods.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from .elements import Element


class Channel(Protocol):
    def push(self, element: Element) -> None: ...

    def pop(self) -> Element | None: ...

    def has_space(self) -> bool: ...

    def __len__(self) -> int: ...


class LocalChannel:
    """A bounded FIFO in one process."""

    __slots__ = ("_q", "capacity", "name")

    def __init__(self, capacity: int, name: str = "") -> None:
        self._q: deque[Element] = deque()
        self.capacity = capacity
        self.name = name

    def push(self, element: Element) -> None:
        self._q.append(element)

    def pop(self) -> Element | None:
        return self._q.popleft() if self._q else None

    def has_space(self) -> bool:
        return len(self._q) < self.capacity

    def __len__(self) -> int:
        return len(self._q)
