"""A keyed aggregation's state at a snapshot: a capture -> one `Columns` per key group.

`AggregateOp` keeps its state insert-only: keys are added, never removed, so the first n
keys of a capture are the n keys of the previous capture, in the same order. At a
barrier the task's thread hands over an `AggregateCapture`: the keys in insertion order
and the values, a copy (a count: one int64 array copy, see count_state.py; any other
aggregation: two lists, two pointer copies). The snapshot thread then builds the key
groups' columns, and keeps what it learned about the keys in a `KeyIndex` for the next
snapshot:

- the key group of every known key, so that a snapshot hashes only the keys that are new
  since the last one, and the stable order of the keys by key group;
- the keys as a `KeyColumn` (key_columns.py), the most compact kind that all of them
  fit: an int64 array for plain ints (post ids, user ids; their key groups are computed
  in bulk), a column per position for tuples of scalars (`(post_id, kind)`), else an
  array of references. A restore knows its keys' groups from the snapshot and learns
  only those; the column is built by the next snapshot, in steps (for 1 M tuple keys it
  is ~150 ms of Python passes that a restore would otherwise wait for).

Per snapshot, the values are an int64 array (a count), or become an int64 or float64
array when every value is an int or a float; keys and values are put into key-group
order by one gather (numpy indexing for arrays, a C-level map for lists) and cut into
one `Columns` per key group. Arrays are written as typed columns (format 3 in
docs/snapshot-format.md): 1 M int keys with their counts cost a few array operations
instead of 2 M objects visited one by one, which is what brings a savepoint near the
speed of the upload itself (bench/bench_savepoint.py).

An incremental checkpoint of a count (`count_changes_steps`) skips the key groups that
did not change since the job's last completed checkpoint: the coordinator hands back the
`CountMemo` that checkpoint's capture left (its counts array, a copy it already was),
one numpy comparison finds the slots whose count changed, and with the slots added
since (new keys) they name the changed key groups; only those are gathered and encoded,
the others are referenced (snapshots/encoder.py). Cost per checkpoint: a comparison of
the counts, plus the work for the changed key groups only.

What must stay true: `Columns` of key group kg holds exactly the captured keys of key
group kg and their captured values, in the same positions. An index that does not match
a capture (the state was replaced) is rebuilt, never trusted. A key group is reported
unchanged only if it had keys at the memo's capture and none of its slots changed
since (keys are never removed, so its old block restores exactly its state now); a memo
that does not match the capture (not the same first keys) makes every group changed.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..key_columns import (
    Int64s,
    IntKeys,
    KeyColumn,
    ObjectKeys,
    key_column_for,
    value_column,
)
from ..keys import KeyGrouper
from ..snapshots.codec import Column, Columns

_RADIX_SORTABLE = 1 << 16
"""Key groups below this fit uint16, which numpy sorts stably by radix (7x faster than int32)."""


@dataclass(frozen=True, slots=True)
class CountMemo:
    """What a count's capture leaves for the next incremental checkpoint: its counts
    (never written to after the capture), its last key (the very object) and which key
    groups had keys."""

    counts: Int64s
    last_key: Any
    nonempty: npt.NDArray[np.bool_]

    def matches(self, keys: list[Any]) -> bool:
        n = len(self.counts)
        return len(keys) >= n and (n == 0 or keys[n - 1] is self.last_key)


@dataclass(frozen=True, slots=True)
class AggregateCapture:
    """An aggregation's state at a barrier: `values[i]` belongs to `keys[i]`, in the
    state's insertion order, for i < `size`. `keys` may be the state's own append-only
    list, which grows after the capture: only its first `size` entries are read."""

    keys: list[Any]
    size: int
    values: list[Any] | Int64s


class KeyIndex:
    """What the snapshot thread knows about the first `size` keys of an insert-only dict.

    Use from one thread at a time (the snapshot thread; `restore` before the job runs)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every key."""
        self.size = 0
        self.groups: npt.NDArray[np.integer[Any]] = np.empty(0, np.uint16)
        """Key group of the i-th key."""
        self.column: KeyColumn | None = None
        """The first `column_size` keys, as the most compact kind of column that all of
        them fit."""
        self.column_size = 0
        """<= `size`: a restore learns the key groups only, and the next snapshot builds
        the column in steps (`build_column`), off the restore's critical path."""
        self._last: Any = None
        self._order: npt.NDArray[np.intp] | None = None
        self._counts: npt.NDArray[np.intp] | None = None

    def matches(self, keys: list[Any]) -> bool:
        """Whether `keys` begins with the known keys (checked cheaply: the count and the
        last known key, the very same object; the state only ever appends)."""
        return len(keys) >= self.size and (self.size == 0 or keys[self.size - 1] is self._last)

    def learn(
        self,
        keys: list[Any],
        size: int,
        grouper: KeyGrouper | None = None,
        groups: npt.NDArray[np.integer[Any]] | None = None,
        ints: Int64s | None = None,
    ) -> None:
        """Learn `keys[self.size:size]`, the keys appended since the known ones. Their key
        groups are `groups` if known (a restore: the column is left to `build_column`),
        else computed (`grouper` required), in bulk from the column where it can.
        `ints`: the same keys as an int64 array (a restore's int64 key column), which
        becomes the column at once (one copy, no pass over the Python ints)."""
        new = keys[self.size : size]
        if not new:
            return
        if ints is not None and self.column_size == self.size and self.column is None:
            if len(ints) != len(new):
                raise ValueError(f"{len(new)} keys but an int64 column of {len(ints)}")
            column = IntKeys()
            column.extend_ints(ints)
            self.column, self.column_size = column, size
        if groups is None:
            if grouper is None:
                raise ValueError("the key groups of new keys need a grouper")
            self.build_column(keys, size)
            assert self.column is not None
            groups = self.column.key_groups(self.size, size, grouper.max_parallelism)
            if groups is None:
                groups = np.array(grouper.many_uncached(new), np.int32)
        if int(groups.max(initial=0)) < _RADIX_SORTABLE:
            groups = groups.astype(np.uint16, copy=False)
        self.groups = np.concatenate((self.groups, groups))  # int32 if either is
        self.size = size
        self._last = new[-1]
        self._order = self._counts = None

    def build_column(self, keys: list[Any], upto: int) -> None:
        """Extend the column to the first `upto` keys of `keys` (the known keys)."""
        new = keys[self.column_size : upto]
        if not new:
            return
        if self.column is None:
            self.column = key_column_for(new[0])
        if not self.column.extend(new):  # a key of another shape: the general column
            self.column = ObjectKeys()
            self.column.extend(keys[:upto])
        self.column_size = upto

    def order(self, max_parallelism: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """(positions of the keys sorted by key group, stable; keys per key group)."""
        if self._order is None or self._counts is None:
            self._order = np.argsort(self.groups, kind="stable")
            self._counts = np.bincount(self.groups, minlength=max_parallelism)
        return self._order, self._counts


LEARN_STEP = 1 << 15
"""`columns_by_key_group_steps` learns (hashes) this many new keys, or puts this many
restored keys into the column, per step (~1-5 ms)."""


def columns_by_key_group(
    capture: AggregateCapture, index: KeyIndex, grouper: KeyGrouper
) -> dict[int, Columns]:
    """{key group: Columns} of a capture; `index` learns the capture's new keys."""
    steps = columns_by_key_group_steps(capture, index, grouper)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def columns_by_key_group_steps(
    capture: AggregateCapture, index: KeyIndex, grouper: KeyGrouper
) -> Generator[None, None, dict[int, Columns]]:
    """`columns_by_key_group` in steps: yields after each `LEARN_STEP` restored keys
    put into the column, after each `LEARN_STEP` new keys and before the gather, so that
    the task's thread can process batches in between (the capture's keys are
    append-only, so they stay valid meanwhile)."""
    keys, size, values = capture.keys, capture.size, capture.values
    if len(values) != size:
        raise ValueError(f"a capture of {size} keys holds {len(values)} values")
    n = grouper.max_parallelism
    yield from _learn_steps(keys, size, index, grouper)
    order, counts = index.order(n)
    yield
    return _columns(index, values, order, counts, np.flatnonzero(counts))


def _learn_steps(
    keys: list[Any], size: int, index: KeyIndex, grouper: KeyGrouper
) -> Generator[None, None, None]:
    """`index` learns the first `size` of `keys`, in steps of `LEARN_STEP` keys."""
    if index.size > size or not index.matches(keys):
        index.reset()  # the state was replaced: start afresh
    while index.column_size < index.size:  # the keys of a restore
        index.build_column(keys, min(index.size, index.column_size + LEARN_STEP))
        yield
    while index.size < size:
        index.learn(keys, min(size, index.size + LEARN_STEP), grouper)
        yield


def count_changes_steps(
    capture: AggregateCapture, index: KeyIndex, grouper: KeyGrouper, since: CountMemo | None
) -> Generator[None, None, tuple[dict[int, Columns], set[int], CountMemo]]:
    """A count's key groups that changed since the capture `since` left (all of them
    when it is None or does not match), the non-empty key groups that did not, and the
    memo of this capture (see the module docstring)."""
    keys, size, values = capture.keys, capture.size, capture.values
    if not isinstance(values, np.ndarray):
        raise ValueError("the capture of a count holds an int64 array of counts")
    if len(values) != size:
        raise ValueError(f"a capture of {size} keys holds {len(values)} values")
    n = grouper.max_parallelism
    yield from _learn_steps(keys, size, index, grouper)
    order, counts = index.order(n)
    memo = CountMemo(values, keys[size - 1] if size else None, counts > 0)
    yield
    if since is None or len(since.counts) > size or not since.matches(keys):
        return _columns(index, values, order, counts, np.flatnonzero(counts)), set(), memo
    old = len(since.counts)
    changed = np.zeros(n, bool)
    changed[index.groups[np.flatnonzero(values[:old] != since.counts)]] = True
    changed[index.groups[old:size]] = True  # new keys
    unchanged = np.flatnonzero(since.nonempty & ~changed).tolist()
    yield
    return _columns(index, values, order, counts, np.flatnonzero(changed)), set(unchanged), memo


def _columns(
    index: KeyIndex,
    values: list[Any] | Int64s,
    order: npt.NDArray[np.intp],
    counts: npt.NDArray[np.intp],
    groups: npt.NDArray[np.intp],
) -> dict[int, Columns]:
    """{kg: Columns} for the non-empty key groups `groups` (ascending), by one gather."""
    groups = groups[counts[groups] > 0]
    starts = np.concatenate(([0], np.cumsum(counts)))
    if len(groups) < len(np.flatnonzero(counts)):
        # Only some key groups: gather their positions only.
        order = np.concatenate(
            [order[starts[g] : starts[g + 1]] for g in groups.tolist()] or [order[:0]]
        )
        counts = counts[groups]
        starts = np.concatenate(([0], np.cumsum(counts)))
        bounds = list(zip(groups.tolist(), range(len(groups)), strict=True))
    else:
        bounds = [(g, g) for g in groups.tolist()]
    key_column: Column = [] if index.column is None else index.column.gather(order)
    array = values if isinstance(values, np.ndarray) else value_column(values)
    value_col = _gather(values, array, order)
    cut: list[int] = starts.tolist()
    return {
        kg: Columns(key_column[cut[i] : cut[i + 1]], value_col[cut[i] : cut[i + 1]])
        for kg, i in bounds
    }


def _gather(items: Any, array: npt.NDArray[Any] | None, order: npt.NDArray[np.intp]) -> Column:
    if array is not None:
        return array[order]
    return list(map(items.__getitem__, order.tolist()))
