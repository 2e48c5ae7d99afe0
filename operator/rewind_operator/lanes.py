"""Lanes: a few threads of its own for each app, so one app's hung call never delays another.

Two uses, one per kind of lane:
- reconcile lanes: the handlers hand each reconcile of an app (and of its Savepoints) to
  the app's lane and await it, so kopf's event loop never blocks and an app whose
  reconciles are slow holds only its own threads (`executor`, queued);
- call lanes: every object-storage call of an app runs in the app's call lane with a
  deadline (`call`). The caller has an answer or `DeadlineExceeded` by then; a call that
  does not answer is abandoned to its own timeouts in the background, and while a lane's
  threads are all taken by such calls, new calls are refused at once (`LaneBusy`) rather
  than queued behind them.

What must stay true: a lane's threads serve one app only; `call` never waits past its
deadline; abandoned calls per app are bounded by the lane's size; the caller's context
variables (log bindings) go with the call into the lane's thread.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The call did not answer within its deadline (it goes on in the background)."""


class LaneBusy(Exception):
    """Every thread of the lane is still taken by earlier calls that did not answer."""


class Lane:
    """`size` threads for one app."""

    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"a lane needs at least one thread, got {size}")
        self.name = name
        self.size = size
        self.executor = ThreadPoolExecutor(size, thread_name_prefix=f"lane-{name}")
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Calls started through `call` that have not returned yet (abandoned included)."""
        with self._lock:
            return self._in_flight

    def call(self, fn: Callable[[], T], deadline: float) -> T:
        """`fn()` in one of the lane's threads; its result, or its exception, within
        `deadline` seconds, else `DeadlineExceeded`. `LaneBusy` when no thread is free."""
        with self._lock:
            if self._in_flight >= self.size:
                raise LaneBusy(f"{self._in_flight} earlier call(s) have not returned yet")
            self._in_flight += 1
        context = contextvars.copy_context()

        def run() -> T:
            try:
                return context.run(fn)
            finally:
                with self._lock:
                    self._in_flight -= 1

        try:
            future = self.executor.submit(run)
        except RuntimeError:  # shut down meanwhile (the app is gone)
            with self._lock:
                self._in_flight -= 1
            raise
        try:
            return future.result(timeout=deadline)
        except FutureTimeout:
            raise DeadlineExceeded(f"no answer within {deadline:g}s") from None

    def shutdown(self) -> None:
        """Take no new work; what was handed over still runs, then the threads end."""
        self.executor.shutdown(wait=False)


class Lanes:
    """One lane per key (an app: `namespace/name`), made on first use."""

    def __init__(self, kind: str, size: int) -> None:
        self.kind = kind
        self.size = size
        self._lanes: dict[str, Lane] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Lane:
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = Lane(f"{self.kind}-{key}", self.size)
                self._lanes[key] = lane
            return lane

    def drop(self, key: str) -> None:
        """Forget the lane of an app that is gone."""
        with self._lock:
            lane = self._lanes.pop(key, None)
        if lane is not None:
            lane.shutdown()


def app_key(namespace: str, app: str) -> str:
    """The lane key of an app."""
    return f"{namespace}/{app}"
