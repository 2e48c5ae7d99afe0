"""A sink writer's commits on their own thread, so the job's loop never waits for Kafka.

What flows through here: the writer asks for checkpoint n to be committed (`request`,
on the job's thread); one background thread runs the writer's commit function for the
highest id asked for, one commit at a time, in order. A commit that raises is kept and
re-raised on the job's thread by the next `check` (so the job fails as if the commit had
run inline); `committing()` says what is in flight and since when, for `/status`.

What must stay true:
- at most one commit runs at a time, and ids only grow: a request for n after n+1 was
  done does nothing (commits are idempotent anyway, this just saves the round trips);
- requests that arrive while a commit runs are coalesced: the next run commits up to
  the newest id, so a stalled broker never builds a queue of commits;
- the commit function (and `prepare`, run first) is only ever called on the
  committer's thread, so the producer it uses needs no lock; the job's thread only
  reads `done` and the status fields;
- `prepare` (e.g. making the transactional producer) runs once, before any commit, as
  soon as the committer exists; while it runs the committer is busy (the job does not
  finish under it) and `committing()` says so. It is a head start only: an error it
  raises is logged, and the commit function does what it would have done (and fails
  the job if that fails too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

log = logging.getLogger("rewind.kafka")

SLOW_AFTER_S = 1.0
"""A commit in flight for longer than this is reported by `committing()`."""


class Committer:
    """Runs `commit(n)` on one daemon thread for the newest requested checkpoint id n."""

    def __init__(
        self,
        name: str,
        commit: Callable[[int], None],
        what: str,
        *,
        prepare: Callable[[], None] | None = None,
        preparing: str = "preparing",
    ) -> None:
        self._commit = commit
        self._what = what
        self._prepare = prepare
        self._preparing_what = preparing
        self._preparing = prepare is not None
        """True until `prepare` returned (or raised)."""
        self._cond = threading.Condition()
        self._wanted = -1
        self.done = -1
        """The highest checkpoint id whose commit finished (read by the job's thread)."""
        self._current: int | None = None
        self._since_wall: datetime | None = datetime.now(UTC) if self._preparing else None
        self._since: float = time.monotonic()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def request(self, checkpoint_id: int) -> None:
        """Ask for everything up to `checkpoint_id` to be committed; returns at once."""
        self.check()
        with self._cond:
            if checkpoint_id > self._wanted:
                self._wanted = checkpoint_id
                self._cond.notify()

    def check(self) -> None:
        """Re-raise, on the caller's thread, the error a background commit ended with."""
        if self._error is not None:
            raise self._error

    @property
    def busy(self) -> bool:
        """True while `prepare` runs or a requested commit has not finished (and none
        failed)."""
        return self._error is None and (self._preparing or self._wanted > self.done)

    def committing(self) -> str | None:
        """None when no commit is due; else what is in flight, and since when if slow.

        Raises the error a background commit ended with (see `check`)."""
        self.check()
        if not self.busy:
            return None
        if self._preparing:
            # A commit asked for meanwhile waits for `prepare`, which does what that
            # commit would have done first: it is reported as that commit.
            doing = self._preparing_what
            if self._wanted > self.done:
                doing = f"{self._what} for checkpoint {self._wanted}"
            since = self._since_wall
            if since is None or time.monotonic() - self._since < SLOW_AFTER_S:
                return doing
            return f"{doing}, broker not answering since {since.isoformat(timespec='seconds')}"
        current, since = self._current, self._since_wall
        if current is None or since is None:
            return f"{self._what} for checkpoint {self._wanted} (queued)"
        if time.monotonic() - self._since < SLOW_AFTER_S:
            return f"{self._what} for checkpoint {current}"
        return (
            f"{self._what} for checkpoint {current}, broker not answering since "
            f"{since.isoformat(timespec='seconds')}"
        )

    def wait(self, timeout_s: float) -> bool:
        """Block until no commit is due (or `timeout_s` passed); True if none is due."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        """Let the thread end after the commit in flight (if any); does not wait."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        if self._prepare is not None:
            try:
                self._prepare()
            except Exception as exc:  # the first commit does it again, and reports it
                log.warning(
                    "%s failed (the first commit tries again): %s", self._preparing_what, exc
                )
            with self._cond:
                self._preparing = False
                self._cond.notify_all()
        while True:
            with self._cond:
                while not self._closed and self._wanted <= self.done:
                    self._cond.wait()
                if self._wanted <= self.done:
                    return  # closed with nothing left to do
                target = self._wanted
                self._current = target
                self._since = time.monotonic()
                self._since_wall = datetime.now(UTC)
            try:
                self._commit(target)
            except BaseException as exc:  # re-raised on the job's thread by `check`
                with self._cond:
                    self._error = exc
                    self._current = None
                    self._cond.notify_all()
                return
            with self._cond:
                self.done = max(self.done, target)
                self._current = None
                self._cond.notify_all()
