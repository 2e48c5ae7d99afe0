"""The state of a keyed count: {key: count} kept as a slot per key and one int64 array.

A count is the most common keyed state (views per post, clicks per user), and the one
that grows to millions of keys. Held as a dict of Python ints, a snapshot must visit
every int object (scattered over the heap) twice: to copy it at the barrier and to
encode it, ~150 ms for 1 M keys before a byte is written. Held here as

- `slots`: key -> slot number, in order of first appearance (keys are never removed);
- `keys_by_slot`: the keys by slot, an append-only list;
- `counts`: an `array('q')` (int64), `counts[slot]`;

the copy at the barrier is one memory copy (~1 ms for 1 M keys), handed to the snapshot
thread as a numpy array without another copy, and the snapshot thread reads the keys
list without stopping the task (the task only ever appends to it, and a slice of the
first n entries is taken under the GIL). Counting costs a little more than on a dict:
per key one dict lookup for the slot, then an array read and write instead of a dict
write (emit="each" measured ~15% slower in bench/bench_keyed_count.py, batch the same),
the price of a barrier copy that no longer grows with the number of keys.

What must stay true: `slots[keys_by_slot[i]] == i` for every i < len(self); a count fits
int64 (9.2e18: `array` raises OverflowError beyond); the first n keys never change once
written, so a capture of size n stays valid while counting goes on.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np

from ..key_columns import Int64s


def check_counts(counts: list[Any]) -> None:
    """Raise ValueError unless every count is a plain int (restored state is data from
    outside: a float or a bool under a count's uid was written by something else)."""
    odd = set(map(type, counts)) - {int}
    if odd:
        names = ", ".join(sorted(t.__name__ for t in odd))
        raise ValueError(f"a count must be an integer, got {names}")


class CountState(MutableMapping[Any, int]):
    """{key: count}. Behaves as a mapping (for tests and tools); the runtime uses
    `add_batch`, `add_each`, `capture` and `load`."""

    __slots__ = ("counts", "keys_by_slot", "slots")

    def __init__(self) -> None:
        self.slots: dict[Any, int] = {}
        self.keys_by_slot: list[Any] = []
        """Append-only: the snapshot thread reads a prefix of it while the task counts."""
        self.counts = array("q")

    # -- the hot path -------------------------------------------------------------------

    def add_batch(self, keys: list[Any]) -> list[tuple[Any, int]]:
        """Count `keys`; (key, new count) once per distinct key, in first-seen order."""
        counts, get, out = self.counts, self.slots.get, []
        for k, n in Counter(keys).items():
            slot = get(k)
            if slot is None:
                slot = self._new_slot(k)
            c = counts[slot] + n
            counts[slot] = c
            out.append((k, c))
        return out

    def add_each(self, keys: list[Any]) -> list[tuple[Any, int]]:
        """Count `keys`; (key, running count) for every record, in order."""
        counts, get = self.counts, self.slots.get
        out: list[tuple[Any, int]] = []
        append = out.append
        for k in keys:
            slot = get(k)
            if slot is None:
                slot = self._new_slot(k)
            c = counts[slot] + 1
            counts[slot] = c
            append((k, c))
        return out

    def _new_slot(self, key: Any) -> int:
        slot = len(self.keys_by_slot)
        self.slots[key] = slot
        self.keys_by_slot.append(key)
        self.counts.append(0)
        return slot

    # -- snapshots ----------------------------------------------------------------------

    def capture(self) -> tuple[list[Any], int, Int64s]:
        """(the live keys list, how many of its keys are captured, their counts: a copy)."""
        n = len(self.keys_by_slot)
        return self.keys_by_slot, n, np.frombuffer(self.counts[:n], np.int64)

    def load(self, keys: list[Any], counts: list[Any] | Int64s, *, checked: bool = False) -> None:
        """Add restored keys with their counts; a key already present is summed.
        `counts`: ints, or an int64 array (a snapshot's count column, taken as it is);
        `checked`: `check_counts` was called on the list `counts` already."""
        if len(keys) != len(counts):
            raise ValueError(f"{len(keys)} keys but {len(counts)} counts")
        if isinstance(counts, np.ndarray):
            if counts.dtype != np.int64 or counts.ndim != 1:
                raise ValueError(f"a count must be an integer, got {counts.dtype} array")
            column = counts
        else:
            if not checked:
                check_counts(counts)
            try:  # one C pass into int64, whose bytes the array then copies (array.extend
                # of a list converts item by item, ~3x slower)
                column = np.fromiter(counts, np.int64, len(counts))
            except OverflowError as exc:
                raise ValueError(f"a count does not fit 64 bits: {exc}") from exc
        start, end = len(self.keys_by_slot), len(self.keys_by_slot) + len(keys)
        new = dict(zip(keys, range(start, end), strict=True))
        if len(new) != len(keys) or not new.keys().isdisjoint(self.slots.keys()):
            for k, c in zip(keys, column.tolist(), strict=True):  # a key seen before: add up
                self[k] = self.get(k, 0) + c
            return
        self.counts.frombytes(column.tobytes())
        if self.slots:
            self.slots.update(new)
        else:
            self.slots = new  # a restore into an empty state: no second dict to build
        self.keys_by_slot.extend(keys)

    # -- the mapping protocol (slow path: one key at a time) ------------------------------

    def __getitem__(self, key: Any) -> int:
        return self.counts[self.slots[key]]

    def __setitem__(self, key: Any, count: int) -> None:
        slot = self.slots.get(key)
        if slot is None:
            self.counts.append(count)  # raises (OverflowError, TypeError) before the key is added
            self.slots[key] = len(self.keys_by_slot)
            self.keys_by_slot.append(key)
        else:
            self.counts[slot] = count

    def __delitem__(self, key: Any) -> None:
        raise TypeError("the keys of a count are never removed (its snapshots rely on it)")

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys_by_slot)

    def __len__(self) -> int:
        return len(self.keys_by_slot)

    def __contains__(self, key: object) -> bool:
        return key in self.slots

    def __repr__(self) -> str:
        return f"CountState({dict(self.items())!r})"
