"""The connector contract: how sources and sinks plug into the runtime.

What flows through here: a source step owns one `Source`; the runtime asks it for its
splits (stable string ids), assigns them to source subtasks (sorted ids, round robin)
and opens one `SplitReader` per assigned split, handing back the position recorded in
the snapshot it restores from (or None). Readers are polled for `SourceBatch`es. A sink
step owns one `Sink`; every sink subtask gets a `SinkWriter` that receives batches,
pre-commits at every checkpoint barrier and commits once that snapshot's
`manifest.json` exists.

What must stay true:
- Positions and committables are msgpack-able plain data (dict/list/str/int/float/
  bytes/bool/None), never objects: a snapshot is data and must survive a code upgrade.
- `SplitReader.position()` is the position *after* the last record returned by
  `poll`, so that a restore from it neither repeats nor skips a record.
- `SinkWriter.commit` is idempotent: after a crash the same committable may be
  committed again (it comes back in `Sink.open(restored=...)`).
- The runtime calls every method of one reader/writer from one thread; connectors need
  no locks of their own. A writer may run its commits on a thread of its own (so the
  job's loop and control API never wait for a stalled destination): it then reports
  them through `committing()`, and the job finishes only once that returns None.

See docs/CONTRACTS.md ("Engine internals: connectors").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SourceContext:
    """Where a split reader runs: the step's uid, the subtask index and the job.

    `app` is the application's identity (stable across restarts and versions of one
    app, distinct between apps): what names the source's consumer group."""

    step_uid: str
    subtask: int
    parallelism: int
    job_id: str
    app: str = ""


@dataclass(frozen=True)
class SinkContext:
    """Where a sink writer runs: the step's uid, the subtask index and the job.

    `attempt` is unique per engine process (a restart gets a new one), so that files a
    writer creates never collide with those of an earlier attempt of the same job.
    `app` is the application's identity (stable across restarts and versions of one app,
    distinct between apps): what names a transactional sink's ids.
    """

    step_uid: str
    subtask: int
    parallelism: int
    job_id: str
    attempt: str = ""
    app: str = ""


@dataclass
class SourceBatch:
    """Records read from one split in one poll."""

    records: list[Any]
    timestamps: list[int] | None = None
    """Event time of each record in ms since the epoch, when the source knows it."""
    finished: bool = False
    """True when a bounded split is exhausted: it is never polled again."""


class SplitReader(ABC):
    """Reads one split from a position; one reader per (split, engine process)."""

    @abstractmethod
    def poll(self, max_records: int) -> SourceBatch | None:
        """Return up to `max_records` records, or None when nothing is available now."""

    @abstractmethod
    def position(self) -> Any:
        """The position after the last polled record (msgpack-able; snapshot data).

        Called at a barrier: it may first make durable what the position passes, and
        raise if it cannot; a wait that can take long belongs in `durable()` instead."""

    def durable(self) -> Callable[[], None] | None:
        """Called at a barrier after `position()`: None, or a wait for what the position
        passes to become durable (a dead-lettered record the broker has not yet
        acknowledged). The snapshot thread runs it before the snapshot's manifest is
        written, so the job's loop does not wait; an error it raises fails the snapshot."""
        return None

    def progress(self) -> Any:
        """The same position for monitoring (`/status`): must never block or raise.
        The default is `position()`, for readers whose position costs nothing."""
        return self.position()

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:  # noqa: B027 - optional
        """Snapshot `checkpoint_id` (holding this reader's position) is complete.

        For side effects that must wait for a durable position, such as committing Kafka
        offsets to a consumer group for lag monitoring; never a source of truth."""

    def close(self) -> None:  # noqa: B027 - optional hook, most readers hold nothing
        """Release files or connections."""


class Source(ABC):
    """A resettable source; one instance per source step, the step owns the uid."""

    @abstractmethod
    def discover_splits(self) -> list[str]:
        """Stable split ids; called at start and again periodically (new files, ...)."""

    @abstractmethod
    def open_split(self, split: str, position: Any | None, ctx: SourceContext) -> SplitReader:
        """Open a reader for `split` at `position` (None: from the beginning)."""

    def bounded(self) -> bool:
        """True if the source ends: once every split reported `finished`, no new split
        will appear, and the job finishes (after a final checkpoint that commits the
        sinks). Default False: the job runs until stopped or cancelled."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the source holds (clients, watches)."""


class SinkWriter(ABC):
    """Writes one sink subtask's output with two-phase commit."""

    @abstractmethod
    def write(self, records: list[Any]) -> None:
        """Take a batch of records (buffered or staged, not yet visible)."""

    @abstractmethod
    def pre_commit(self, checkpoint_id: int) -> Any:
        """Stage everything written since the last pre-commit; return a committable.

        The committable (msgpack-able, or None when there is nothing to commit) is
        stored in the snapshot and later handed to `commit`.
        """

    @abstractmethod
    def commit(self, checkpoint_id: int, committable: Any) -> None:
        """Make a pre-committed stage visible. Idempotent. Called after manifest.json."""

    def wait_durable(self, checkpoint_id: int) -> None:  # noqa: B027 - optional hook
        """Block until what was written before `pre_commit(checkpoint_id)` is durable.

        Runs on the snapshot thread (not the job's loop) before the snapshot's manifest
        is written; an error fails that snapshot. For sinks whose writes go out at once
        (at-least-once Kafka): a completed snapshot must never miss output before it."""

    def committing(self) -> str | None:
        """None unless a commit runs in the background; then what it waits for (shown in
        `/status`, e.g. a broker that does not answer). Raises the error a background
        commit ended with, so the job fails on its own thread. Writers whose `commit`
        runs inline keep the default."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files or connections; staged but uncommitted output stays staged."""


class Sink(ABC):
    """A sink step's factory of writers."""

    @abstractmethod
    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        """Open a writer for one subtask.

        `restored` holds committables that were pre-committed before a crash or stop
        and may not have been committed; the writer must commit them again,
        idempotently, before it writes new output.
        """
