"""Key groups: how a key finds its place among parallel subtasks, stably.

A key is hashed from its canonical bytes (msgpack of the key, tuples as arrays) with
crc32, never with Python's salted `hash()`, so that the same key lands in the same key
group in every process and every version. `max_parallelism` key groups are split into
contiguous ranges, one per subtask, as in Flink: subtask i owns
`[i * max_p // p, (i + 1) * max_p // p)`. State is snapshotted per key group, so a
restore at another parallelism only reads the ranges it owns.

What must stay true: `key_group_of` never changes for a given key and max_parallelism
(changing it would silently mis-route restored state).
"""

from __future__ import annotations

import zlib
from typing import Any

import msgpack

_CACHE_LIMIT = 1 << 20
"""Entries kept by a KeyGrouper before it starts afresh (bounds memory on huge key spaces)."""


def key_bytes(key: Any) -> bytes:
    """The canonical bytes of a key (msgpack; tuples and lists encode alike)."""
    try:
        return msgpack.packb(key, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(
            f"key {key!r} of type {type(key).__name__} cannot be hashed stably: keys must be"
            " str, int (from -2**63 to 2**64 - 1), float, bytes, bool, None or tuples of those"
        ) from exc


def key_group_of(key: Any, max_parallelism: int) -> int:
    """The key group (0 .. max_parallelism - 1) of `key`."""
    return zlib.crc32(key_bytes(key)) % max_parallelism


def key_group_range(subtask: int, parallelism: int, max_parallelism: int) -> range:
    """The contiguous key groups owned by `subtask` of `parallelism`."""
    check_parallelism(parallelism, max_parallelism)
    return range(
        subtask * max_parallelism // parallelism, (subtask + 1) * max_parallelism // parallelism
    )


def check_parallelism(parallelism: int, max_parallelism: int) -> None:
    """Raise ValueError unless 1 <= parallelism <= max_parallelism."""
    if max_parallelism < 1:
        raise ValueError(f"max_parallelism must be at least 1, got {max_parallelism}")
    if not 1 <= parallelism <= max_parallelism:
        raise ValueError(
            f"parallelism must be between 1 and max_parallelism ({max_parallelism}),"
            f" got {parallelism}"
        )


def owners(parallelism: int, max_parallelism: int) -> list[int]:
    """owners[kg] = the subtask that owns key group kg."""
    table = [0] * max_parallelism
    for subtask in range(parallelism):
        for kg in key_group_range(subtask, parallelism, max_parallelism):
            table[kg] = subtask
    return table


def decode_key(key: Any) -> Any:
    """Undo msgpack's tuple-to-array on a restored key: a list can't be a key, so it was
    a tuple."""
    if isinstance(key, list):
        return tuple(decode_key(k) for k in key)
    return key


class KeyGrouper:
    """key -> key group with a cache; keys repeat, and crc32 of msgpack costs ~0.5 us.

    Use from one thread at a time (its msgpack packer is not thread-safe)."""

    __slots__ = ("_cache", "_pack", "max_parallelism")

    def __init__(self, max_parallelism: int) -> None:
        self.max_parallelism = max_parallelism
        self._cache: dict[Any, int] = {}
        # One reused packer: msgpack.packb builds a new Packer per call, which made a
        # cache miss cost ~2 us (seconds at the first snapshot of 1 M keys). Same bytes.
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def many_uncached(self, keys: list[Any]) -> list[int]:
        """The key group of each of `keys`, neither read from nor added to the cache: for
        callers that keep their own (a snapshot's key index), so that 1 M keys are not
        held twice."""
        pack, n = self._pack, self.max_parallelism
        try:
            return [zlib.crc32(pack(key)) % n for key in keys]
        except (TypeError, ValueError, OverflowError):
            return [key_group_of(key, n) for key in keys]  # raises the clear error

    def __call__(self, key: Any) -> int:
        kg = self._cache.get(key)
        if kg is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            try:
                kg = zlib.crc32(self._pack(key)) % self.max_parallelism
            except (TypeError, ValueError, OverflowError):
                kg = key_group_of(key, self.max_parallelism)  # raises the clear error
            self._cache[key] = kg
        return kg
