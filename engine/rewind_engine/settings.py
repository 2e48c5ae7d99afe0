"""Engine settings: one dataclass per concern, every field documented.

Values flow from the CLI (`rewind run` flags) or from code (`Job(flow, Settings(...))`)
into the runtime. Every field says its meaning, its unit and why the default is what it
is. What must stay true: defaults are safe for a laptop run (local file storage,
loopback only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .clock import Clock, SystemClock


@dataclass
class ParallelismSettings:
    """How many parallel subtasks run each step."""

    parallelism: int = 1
    """Subtasks per step unless a step sets its own. 1: one core per engine process is
    what Python gives us anyway; raise it to spread keyed state for a later rescale."""

    max_parallelism: int = 128
    """Number of key groups (the upper bound of any future parallelism). Fixed for the
    life of the state: a restore with another value is refused. 128 as in Flink: enough
    headroom to rescale, small enough that per-key-group overhead stays negligible."""


@dataclass
class SnapshotSettings:
    """Where and how often checkpoints and savepoints are taken."""

    location: str = "file://./rewind-snapshots"
    """Root URI (file:// or s3://). Checkpoints go to LOCATION/checkpoints/<job-id>/chk-<n>/,
    savepoints by default to LOCATION/savepoints/sp-<timestamp>-<id>/. A relative local
    folder by default so that a first run needs no setup."""

    checkpoint_interval_s: float | None = 10.0
    """Seconds between periodic checkpoints; None disables them. 10 s bounds replay after a
    crash to a few seconds of input while keeping snapshot overhead small."""

    checkpoints_retained: int = 3
    """Completed checkpoints kept per job; older ones are deleted. 3 leaves a fallback if
    the newest turns out unreadable, without letting storage grow."""

    incremental_checkpoints: bool = True
    """Checkpoints write only the key groups whose state changed since the job's last
    completed checkpoint and reference the others' blocks in the earlier checkpoint
    folders (docs/snapshot-format.md, version 4); savepoints are always full. On by
    default: a key group that did not change costs a reference instead of its bytes,
    and a count skips encoding it too, while a checkpoint where everything changed costs
    what a full one does; retention keeps every file a kept checkpoint references. The
    price: a checkpoint folder alone is not self-contained (copy a savepoint instead)."""

    full_checkpoint_every: int = 10
    """With incremental checkpoints, every N-th checkpoint of a chain is full, so that a
    checkpoint references folders at most N - 1 checkpoints older and retention keeps at
    most about N + `checkpoints_retained` folders alive. 10: at a 10 s interval a chain
    spans under 2 minutes, and a full checkpoint every 10 costs a tenth of what full
    checkpoints every time cost, yet unchanged key groups are read back from at most 10
    folders on restore."""

    timeout_s: float = 600.0
    """A snapshot not completed after this many seconds is declared FAILED (the job keeps
    running). 10 minutes: generous for large states on slow object storage."""

    restore: str | None = None
    """URI of a savepoint or checkpoint to start from, or "latest" (newest completed
    snapshot under `location`; none there means start empty). None: start empty."""

    deployment_id: str | None = None
    """The deployment this process belongs to (REWIND_DEPLOYMENT_ID, set by the operator
    to its workload hash). Recorded as `meta.deployment_id` in every snapshot; at start, the
    newest completed snapshot under `location` with the same id is restored instead of
    `restore`, so a restarted container continues from its own last checkpoint rather than
    replaying from the savepoint it was first started from. None: not tracked."""

    allow_non_restored_state: bool = False
    """Start even if the snapshot holds state of uids the flow no longer has (that state is
    dropped). Off by default: silently losing state is the worst outcome."""


@dataclass
class RuntimeSettings:
    """The in-process scheduler: batch sizes, channels, polling."""

    batch_size: int = 1024
    """Records a source reads per poll (and so the typical batch size). ~1 K amortises the
    per-batch Python overhead (~10 us) to ~10 ns per record while keeping latency low."""

    channel_capacity: int = 8
    """Batches a channel between two subtasks holds before the sender is paused
    (backpressure). 8 batches keep every subtask busy without buffering much memory."""

    split_discovery_interval_s: float = 2.0
    """Seconds between asking sources for new splits (new files in a folder). 2 s: prompt
    enough for a human, cheap for a folder listing."""

    idle_sleep_s: float = 0.002
    """Seconds the scheduler sleeps when no subtask made progress (no input). 2 ms: low
    latency without spinning a core."""

    linger_after_stop_s: float = 30.0
    """After a stop-with-savepoint, seconds the control API stays up until a client has
    read the savepoint's result (`rewind stop` waits for it). It ends earlier once read."""

    clock: Clock = field(default_factory=SystemClock)
    """Processing time for timers and rates; tests inject a ManualClock."""


@dataclass
class WorkerSettings:
    """One job as several worker processes (docs/scale.md); the defaults are one process."""

    workers: int = 1
    """Worker processes of the job. 1: today's single process, in-process channels, no
    Kafka needed. More: edges between workers go through Kafka (the exchange)."""

    worker: int = 0
    """This process's index, 0 .. workers - 1; worker 0 is the coordinator (it triggers
    global checkpoints and serves the job's control API)."""

    kafka_bootstrap: str | None = None
    """Brokers of the exchange and control topics; None: $REWIND_KAFKA_BOOTSTRAP."""

    heartbeat_s: float = 0.5
    """Seconds between heartbeats (workers -> coordinator and back). 0.5 s: a dead
    worker is noticed within a few seconds at a cost of 2 small messages/s per worker."""

    worker_timeout_s: float = 10.0
    """Silence after which a worker (or the coordinator) counts as dead and the job
    fails, to be restarted from its last checkpoint. 10 s rides out a GC or CPU stall
    on a busy machine but keeps a crashed worker from stalling the job for long."""

    start_timeout_s: float = 300.0
    """Seconds the coordinator waits for every worker to join at start (pods may be
    scheduled one by one); then the job fails naming the missing workers."""

    linger_s: float = 0.005
    """Longest time an exchange message collects records before it is sent. 5 ms: a
    small share of the latency budget, enough to fill messages at moderate rates."""

    max_records: int = 4096
    """Records per exchange message at most (about 250 KB of small JSON-like records,
    far below Kafka's 1 MB default message limit)."""

    retire_jobs: str | None = None
    """A regular expression of job ids (matched in full) whose exchange and control
    topics this job deletes once its first snapshot is committed: the older versions of
    the same app, which never run beside it again (a rollback makes its topics anew).
    The operator sets it to `<namespace>.<app>.<hex deployment id>`; None: none."""


@dataclass
class Settings:
    """All settings of one job."""

    parallelism: ParallelismSettings = field(default_factory=ParallelismSettings)
    snapshots: SnapshotSettings = field(default_factory=SnapshotSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)

    job_id: str | None = None
    """Job id: names the checkpoint folder LOCATION/checkpoints/<job_id>/. A job given an
    id that has checkpoints there numbers its own after them, so restarts with one id
    share one history and `checkpoints_retained` bounds it. `rewind run` uses
    `--job-id`, else REWIND_DEPLOYMENT_ID (the operator's deployment: all restarts of a
    crashed container are one job). None: a fresh random id per process."""

    app: str | None = None
    """The application's identity (`--app`, REWIND_APP; the operator sets
    `<namespace>/<StreamApp name>`). Recorded as `meta.app` in every snapshot, so that
    `--restore latest` only ever picks this app's own history, and it names the app's
    Kafka consumer groups and transactional ids, which then stay the same across restarts
    and versions. None: the flow's name stands in for it."""

    control: str | None = None
    """HOST:PORT for the control API (loopback unless told otherwise); None: no API."""
