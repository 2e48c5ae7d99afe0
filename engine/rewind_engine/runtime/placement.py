"""Placement: which worker process runs which subtask, and where an exchange edge writes.

Flows through here: the number of workers N, this worker's index, the parallelism of a
step and `max_parallelism` in; out come pure answers that every worker computes alike,
so no worker has to ask another:

1. Subtask i of a step with parallelism p runs on worker `i * N // p` (Flink's
   operator-index formula, one level up). A worker therefore owns a contiguous run of
   subtasks, and because subtask ranges of key groups are contiguous, a contiguous range
   of key groups per keyed step. With p < N some workers have no subtask of that step.
2. An edge between two steps whose subtasks sit on different workers goes through the
   Kafka topic `edge_topic(job, up, down, j)`, which has `max_parallelism` partitions.
   Everything sent to downstream subtask d is written to partition `partition_of(d)`,
   the first key group d owns: distinct for distinct d, and valid at every parallelism
   up to max_parallelism, so a restore at another worker count or parallelism only
   changes which worker reads which partition, never the topic.
3. Source splits: at start every worker sorts the splits it knows the same way and
   split k goes to subtask `k % p` (as one process does); a split discovered later goes
   to subtask `crc32(split) % p`, which every worker computes alike whenever it sees it.

What must stay true: all functions are pure and deterministic; one worker (N = 1)
places every subtask on worker 0, i.e. exactly today's single process.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from ..keys import key_group_range

_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
TOPIC_PREFIX = "rewind"


@dataclass(frozen=True)
class Placement:
    """This process's place among the job's workers."""

    worker: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if not 0 <= self.worker < self.workers:
            raise ValueError(
                f"worker index must be between 0 and {self.workers - 1} for {self.workers} "
                f"workers, got {self.worker}"
            )

    @property
    def distributed(self) -> bool:
        return self.workers > 1

    def worker_of(self, subtask: int, parallelism: int) -> int:
        """The worker that runs `subtask` of a step with `parallelism` subtasks."""
        if not 0 <= subtask < parallelism:
            raise ValueError(f"subtask {subtask} outside parallelism {parallelism}")
        return subtask * self.workers // parallelism

    def owns(self, subtask: int, parallelism: int) -> bool:
        return self.worker_of(subtask, parallelism) == self.worker

    def subtasks(self, parallelism: int, worker: int | None = None) -> list[int]:
        """The subtasks of a step that `worker` (default: this one) runs, ascending."""
        w = self.worker if worker is None else worker
        return [i for i in range(parallelism) if self.worker_of(i, parallelism) == w]

    def key_groups(self, parallelism: int, max_parallelism: int) -> range:
        """The contiguous key groups this worker owns for a keyed step (maybe empty)."""
        mine = self.subtasks(parallelism)
        if not mine:
            return range(0)
        first = key_group_range(mine[0], parallelism, max_parallelism)
        last = key_group_range(mine[-1], parallelism, max_parallelism)
        return range(first.start, last.stop)


def partition_of(subtask: int, parallelism: int, max_parallelism: int) -> int:
    """The exchange partition that carries everything sent to `subtask` (step 2)."""
    return key_group_range(subtask, parallelism, max_parallelism).start


def edge_topic(job: str, up: str, down: str, input_index: int) -> str:
    """The exchange topic of the edge up -> down (down's input number `input_index`).

    Kafka topic names allow [A-Za-z0-9._-] up to 249 characters; uids already do, the
    job name is cleaned, and a too-long name is cut and given a hash so it stays unique."""
    name = f"{TOPIC_PREFIX}-{_clean(job)}-{up}-{down}-{input_index}"
    return _fit(name)


def control_topic(job: str) -> str:
    """The job's control topic (coordinator <-> workers; see control_bus.py)."""
    return _fit(f"{TOPIC_PREFIX}-{_clean(job)}-control")


def of_retired_job(topic: str, jobs: re.Pattern[str], own_job: str) -> bool:
    """Whether `topic` is an exchange or control topic of a job other than `own_job`
    whose (cleaned) id `jobs` matches in full: `rewind-<job>-...`. The job part of a
    name is not delimited (uids and ids may hold '-'), so every cut at a '-' is tried."""
    head = f"{TOPIC_PREFIX}-"
    if not topic.startswith(head) or topic.startswith(f"{head}{_clean(own_job)}-"):
        return False
    body = topic[len(head) :]
    return any(jobs.fullmatch(body[:i]) for i, char in enumerate(body) if char == "-")


def split_subtask(split: str, parallelism: int) -> int:
    """The subtask that reads a split discovered while running (step 3)."""
    return zlib.crc32(split.encode()) % parallelism


def _clean(text: str) -> str:
    return _TOPIC_UNSAFE.sub("_", text) or "job"


def _fit(name: str, limit: int = 249) -> str:
    if len(name) <= limit:
        return name
    digest = f"{zlib.crc32(name.encode()):08x}"
    return f"{name[: limit - 9]}-{digest}"
