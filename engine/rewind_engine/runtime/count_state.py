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

A restore (`load` of many keys into an empty state) does not build `slots` at once:
inserting 1 M keys into a dict costs 200-300 ms on our machines, most of a restore. The
restored keys go into `keys_by_slot` and `counts` as they are, and are split by their
hash into partitions of ~16 keys (`_Cold`: the slots of each partition, found by one
radix sort of 16-bit partition numbers). A key that misses `slots` while some partition
is cold brings its own partition into `slots` first (`_thaw`), then looks again: as
`hash(a) == hash(b)` whenever `a == b`, every restored key equal to it is in that
partition, so the lookup answers as the full dict would, for keys of any type (1.0 and
True find a restored 1). The dict fills in as the stream touches keys (~16 dict inserts
per first touch of a partition, the work the restore skipped); once every partition is
in, the cold part is dropped. A restore whose keys have two equal hashes (a duplicate
key, or a collision) builds the dict at once, as before, so that a duplicate is summed.

What must stay true: `slots.get(keys_by_slot[i], i) == i` for every i < len(self), and a
key is missing from `slots` only while its partition is cold; a count fits int64
(9.2e18: `array` raises OverflowError beyond); the first n keys never change once
written, so a capture of size n stays valid while counting goes on.
"""

from __future__ import annotations

import sys
from array import array
from collections import Counter
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ..key_columns import Int64s, int64_column

COLD_MIN = 1 << 14
"""A restore of fewer keys builds its dict at once (it is quick, and simpler)."""
_PARTITION_KEYS = 16
"""Restored keys per cold partition, on average: what a miss brings into the dict."""
_MIX = 0x9E3779B97F4A7C15
"""Odd 64-bit multiplier: spreads a hash's low bits (ints hash to themselves) into the
top bits that number the partitions; a bijection, so distinct hashes stay distinct."""
_MASK64 = (1 << 64) - 1
_HASH_MODULUS = (1 << 61) - 1
"""CPython's hash of an int on 64-bit builds: sign * (|n| mod 2**61 - 1), -1 -> -2."""


def check_counts(counts: list[Any]) -> None:
    """Raise ValueError unless every count is a plain int (restored state is data from
    outside: a float or a bool under a count's uid was written by something else)."""
    odd = set(map(type, counts)) - {int}
    if odd:
        names = ", ".join(sorted(t.__name__ for t in odd))
        raise ValueError(f"a count must be an integer, got {names}")


def int_hashes(keys: Int64s) -> Int64s:
    """`hash(int(k))` for every k of `keys`, in bulk (64-bit CPython's int hash)."""
    # |k| as uint64 (abs(-2**63) wraps to itself, whose unsigned view is 2**63).
    rest = (np.abs(keys).view(np.uint64) % np.uint64(_HASH_MODULUS)).view(np.int64)
    hashes = np.where(keys < 0, -rest, rest)
    hashes[hashes == -1] = -2  # -1 is CPython's error value
    return hashes


def key_hashes(keys: list[Any]) -> Int64s:
    """`hash(k)` for every key (TypeError for an unhashable one, as a dict would)."""
    ints = int64_column(keys) if sys.hash_info.modulus == _HASH_MODULUS else None
    if ints is not None:
        return int_hashes(ints)
    return np.fromiter(map(hash, keys), np.int64, len(keys))


class _Cold:
    """The restored keys not in `slots` yet: their slots by partition of their hash.

    Partition p holds `order[starts[p]:starts[p + 1]]`; `cold[p]` is 1 while its keys
    are not in `slots`."""

    __slots__ = ("cold", "left", "order", "shift", "starts")

    def __init__(self, hashes: Int64s) -> None:
        bits = max(1, min(16, (len(hashes) // _PARTITION_KEYS).bit_length()))
        self.shift = 64 - bits
        mixed = hashes.view(np.uint64) * np.uint64(_MIX)  # wraps around: modulo 2**64
        parts = (mixed >> np.uint64(self.shift)).astype(np.uint16)
        self.order: npt.NDArray[np.intp] = np.argsort(parts, kind="stable")  # radix sort
        sizes = np.bincount(parts, minlength=1 << bits)
        self.starts: list[int] = np.concatenate(([0], np.cumsum(sizes))).tolist()
        self.cold = bytearray((sizes > 0).astype(np.uint8).tobytes())
        self.left = int(np.count_nonzero(sizes))

    def partition(self, key: Any) -> int:
        return ((hash(key) * _MIX) & _MASK64) >> self.shift


class CountState(MutableMapping[Any, int]):
    """{key: count}. Behaves as a mapping (for tests and tools); the runtime uses
    `add_batch`, `add_each`, `capture` and `load`."""

    __slots__ = ("_cold", "counts", "keys_by_slot", "slots")

    def __init__(self) -> None:
        self.slots: dict[Any, int] = {}
        """key -> slot, except restored keys whose partition is still in `_cold`."""
        self.keys_by_slot: list[Any] = []
        """Append-only: the snapshot thread reads a prefix of it while the task counts."""
        self.counts = array("q")
        self._cold: _Cold | None = None

    # -- the hot path -------------------------------------------------------------------

    def add_batch(self, keys: list[Any]) -> list[tuple[Any, int]]:
        """Count `keys`; (key, new count) once per distinct key, in first-seen order."""
        counts, get, out = self.counts, self.slots.get, []
        for k, n in Counter(keys).items():
            slot = get(k)
            if slot is None:
                slot = self._missing(k)
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
                slot = self._missing(k)
            c = counts[slot] + 1
            counts[slot] = c
            append((k, c))
        return out

    def _missing(self, key: Any) -> int:
        """The slot of a key that `slots` lacks: a restored one's, or a new one."""
        slot = None if self._cold is None else self._cold_slot(key)
        return self._new_slot(key) if slot is None else slot

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

    def load(self, keys: list[Any], counts: list[Any], *, checked: bool = False) -> None:
        """Add restored keys with their counts; a key already present is summed.
        `checked`: `check_counts` was called on `counts` already."""
        if not checked:
            check_counts(counts)
        try:  # one C pass to int64, whose bytes the array takes without another
            column = np.fromiter(counts, np.int64, len(counts))
        except OverflowError as exc:
            raise ValueError(f"a count does not fit 64 bits: {exc}") from exc
        if len(keys) != len(column):
            raise ValueError(f"{len(keys)} keys but {len(column)} counts")
        if not self.keys_by_slot and len(keys) >= COLD_MIN and self._load_cold(keys, column):
            return
        self._thaw_all()
        start, end = len(self.keys_by_slot), len(self.keys_by_slot) + len(keys)
        new = dict(zip(keys, range(start, end), strict=True))
        if len(new) != len(keys) or not new.keys().isdisjoint(self.slots.keys()):
            for k, c in zip(keys, counts, strict=True):  # a key seen before: add up
                self[k] = self.get(k, 0) + c
            return
        self.counts.frombytes(column.tobytes())
        if self.slots:
            self.slots.update(new)
        else:
            self.slots = new  # a restore into an empty state: no second dict to build
        self.keys_by_slot.extend(keys)

    def _load_cold(self, keys: list[Any], counts: Int64s) -> bool:
        """Load into an empty state, leaving `slots` to fill in partition by partition;
        False (nothing done) if two keys have equal hashes (maybe equal keys)."""
        hashes = key_hashes(keys)
        ordered = np.sort(hashes)
        if bool((ordered[1:] == ordered[:-1]).any()):
            return False
        self._cold = _Cold(hashes)
        self.counts.frombytes(counts.tobytes())
        self.keys_by_slot.extend(keys)
        return True

    def _cold_slot(self, key: Any) -> int | None:
        """The slot of a key that `slots` lacks, after bringing its partition in; None
        if it has none."""
        cold = self._cold
        if cold is None:
            return None
        part = cold.partition(key)
        if not cold.cold[part]:
            return None
        self._thaw(cold, part)
        return self.slots.get(key)

    def _thaw(self, cold: _Cold, part: int) -> None:
        """Put the keys of cold partition `part` into `slots`."""
        chosen = cold.order[cold.starts[part] : cold.starts[part + 1]].tolist()
        self.slots.update(zip(map(self.keys_by_slot.__getitem__, chosen), chosen, strict=True))
        cold.cold[part] = 0
        cold.left -= 1
        if not cold.left:
            self._cold = None

    def _thaw_all(self) -> None:
        """Put every restored key into `slots` (before a load over known keys)."""
        if self._cold is not None:
            self.slots.update(zip(self.keys_by_slot, range(len(self.keys_by_slot)), strict=True))
            self._cold = None

    # -- the mapping protocol (slow path: one key at a time) ------------------------------

    def __getitem__(self, key: Any) -> int:
        slot = self.slots.get(key)
        if slot is None:
            slot = self._cold_slot(key)
            if slot is None:
                raise KeyError(key)
        return self.counts[slot]

    def __setitem__(self, key: Any, count: int) -> None:
        slot = self.slots.get(key)
        if slot is None:
            slot = self._cold_slot(key)
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
        return key in self.slots or self._cold_slot(key) is not None

    def __repr__(self) -> str:
        return f"CountState({dict(self.items())!r})"
