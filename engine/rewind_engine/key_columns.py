"""Columns of keys and values as numpy arrays: exact conversion, key groups in bulk, and
key columns that learn the keys of a state snapshot after snapshot.

A snapshot of a large keyed state is bound by touching Python objects one by one. When
every key is a plain `int` (post ids, user ids) and every value an `int` or a `float`,
the state fits in int64/float64 arrays, and the expensive steps become array operations:
the key group of each key, the sort into key groups and the encoding (the bytes of the
array are the column; docs/snapshot-format.md, ext types 4 to 6). A `KeyColumn` keeps
the keys seen so far in such a form (IntKeys, TupleKeys with a column per position,
ObjectKeys for anything else), extended with the new keys at each snapshot.

What must stay true:

- `key_groups_of_ints(a, p)[i] == keys.key_group_of(int(a[i]), p)` for every int64: the
  key group of a key never depends on how it was computed (a mismatch would silently
  mis-route restored state). tests/test_engine/test_keys.py checks every encoding
  width and its boundaries.
- A column is built only when the conversion is exact: `bool` is not an `int` here (a
  bool key or count would come back as 0/1), and an int outside int64 is no int64.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from .keys import key_bytes
from .snapshots.columns import Column, TupleColumn

Int64s = npt.NDArray[np.int64]
Float64s = npt.NDArray[np.float64]
KeyGroups = npt.NDArray[np.int32]


def int64_column(items: list[Any]) -> Int64s | None:
    """`items` as an int64 array, or None unless every item is a plain int in range."""
    if set(map(type, items)) - {int}:  # numpy would take bools, floats and "5" as ints
        return None
    try:
        return np.fromiter(items, np.int64, len(items))
    except (OverflowError, TypeError, ValueError):
        return None


def float64_column(items: list[Any]) -> Float64s | None:
    """`items` as a float64 array, or None unless every item is a plain float."""
    if set(map(type, items)) - {float}:
        return None
    return np.fromiter(items, np.float64, len(items))


def value_column(items: list[Any]) -> Int64s | Float64s | None:
    """int64 if every item is an int, float64 if every item is a float, else None (the
    values stay Python objects)."""
    column = int64_column(items)
    return column if column is not None else float64_column(items)


# -- key groups: crc32 of the key's msgpack bytes, vectorised ----------------------------

# msgpack writes an int in the shortest of these forms (first byte, payload width in
# bytes); the key group hashes exactly these bytes (keys.key_bytes).
_UINT8, _UINT16, _UINT32, _UINT64 = 0xCC, 0xCD, 0xCE, 0xCF
_INT8, _INT16, _INT32, _INT64 = 0xD0, 0xD1, 0xD2, 0xD3


def _crc_table() -> npt.NDArray[np.uint32]:
    table = np.zeros(256, np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
        table[byte] = crc
    return table


_TABLE = _crc_table()


Crcs = npt.NDArray[np.uint32]
_START = np.uint32(0xFFFFFFFF)  # zlib.crc32's initial value and final xor
_BY_VALUE_LIMIT = 256
"""Most distinct values of a tuple position hashed value by value (one pass each)."""
_BY_VALUE_TYPES = frozenset({str, bytes, bool, type(None)})
"""Types whose equal values have equal msgpack bytes (not float: 0.0 == -0.0)."""


def _feed_bytes(crc: Crcs, data: bytes) -> Crcs:
    """Each running crc continued with the same `data`."""
    for byte in data:
        crc = _TABLE[(crc ^ np.uint32(byte)) & 0xFF] ^ (crc >> 8)
    return crc


def _feed_big_endian(crc: Crcs, payload: npt.NDArray[np.uint64], width: int) -> Crcs:
    """Each running crc continued with its payload as `width` big-endian bytes."""
    for shift in range(8 * (width - 1), -1, -8):
        byte = ((payload >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.uint32)
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _feed_ints(crc: Crcs, keys: Int64s) -> Crcs:
    """Each running crc continued with the msgpack bytes of its int."""
    bits = keys.view(np.uint64)  # two's complement: the bytes msgpack writes for ints
    out = np.empty_like(crc)
    forms: list[tuple[npt.NDArray[np.bool_], int | None, int]] = [
        ((keys >= 0) & (keys < 1 << 7), None, 1),  # positive fixint: the byte itself
        ((keys >= 1 << 7) & (keys < 1 << 8), _UINT8, 1),
        ((keys >= 1 << 8) & (keys < 1 << 16), _UINT16, 2),
        ((keys >= 1 << 16) & (keys < 1 << 32), _UINT32, 4),
        (keys >= 1 << 32, _UINT64, 8),
        ((keys < 0) & (keys >= -32), None, 1),  # negative fixint: 0xe0..0xff
        ((keys < -32) & (keys >= -(1 << 7)), _INT8, 1),
        ((keys < -(1 << 7)) & (keys >= -(1 << 15)), _INT16, 2),
        ((keys < -(1 << 15)) & (keys >= -(1 << 31)), _INT32, 4),
        (keys < -(1 << 31), _INT64, 8),
    ]
    for mask, first, width in forms:
        if mask.any():
            part = crc[mask]
            if first is not None:
                part = _feed_bytes(part, bytes((first,)))
            low = bits[mask] & np.uint64((1 << (8 * width)) - 1)
            out[mask] = _feed_big_endian(part, low, width)
    return out


def _feed_values(crc: Crcs, values: list[Any]) -> Crcs | None:
    """Each running crc continued with the msgpack bytes of its value, one pass per
    distinct value; None if the values are not all of `_BY_VALUE_TYPES` or too varied."""
    if set(map(type, values)) - _BY_VALUE_TYPES:
        return None
    # No two values of these types are equal unless their bytes are (no ints: True == 1).
    distinct = dict.fromkeys(values)
    if len(distinct) > _BY_VALUE_LIMIT:
        return None
    index = {value: i for i, value in enumerate(distinct)}
    codes = np.fromiter(map(index.__getitem__, values), np.intp, len(values))
    out = np.empty_like(crc)
    for i, value in enumerate(distinct):
        mask = codes == i
        out[mask] = _feed_bytes(crc[mask], key_bytes(value))
    return out


def key_groups_of_ints(keys: Int64s, max_parallelism: int) -> KeyGroups:
    """The key group of each int key, equal to `keys.key_group_of` key by key."""
    crc = _feed_ints(np.full(keys.shape, _START, np.uint32), keys) ^ _START
    return (crc % np.uint32(max_parallelism)).astype(np.int32)


def key_groups_of_tuples(
    fields: list[Int64s | list[Any]], max_parallelism: int
) -> KeyGroups | None:
    """The key group of each tuple (fields[0][i], fields[1][i], ...), equal to
    `keys.key_group_of` tuple by tuple; None if a field is neither ints nor a few
    distinct str / bytes / bool / None values (the caller then hashes key by key)."""
    if not fields or len(fields) >= 16:
        return None
    crc = _feed_bytes(np.full(len(fields[0]), _START, np.uint32), bytes((0x90 | len(fields),)))
    for field in fields:
        fed = _feed_ints(crc, field) if isinstance(field, np.ndarray) else _feed_values(crc, field)
        if fed is None:
            return None
        crc = fed
    return ((crc ^ _START) % np.uint32(max_parallelism)).astype(np.int32)


# -- key columns learned key by key, across snapshots ----------------------------------

_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
"""What a tuple column may hold as a msgpack array: values that come back as they went."""


class KeyColumn:
    """The keys seen so far, in order, in a shape that is quick to reorder and write.

    `extend` learns keys appended after the known ones and returns False if one does
    not fit this kind of column (the column is then unusable); `gather(order)` returns
    the keys in that order as a snapshot column (snapshots/columns.py)."""

    def extend(self, keys: list[Any]) -> bool:
        raise NotImplementedError

    def gather(self, order: npt.NDArray[np.intp]) -> Column:
        raise NotImplementedError

    def key_groups(self, start: int, end: int, max_parallelism: int) -> KeyGroups | None:
        """The key groups of keys start..end-1 computed in bulk, or None if this kind
        of column can't (the caller hashes them one by one)."""
        return None


class _Growing:
    """A 1-D array that grows by doubling: appending k items costs O(k) instead of a
    copy of everything before them (for an object array, that copy touches every key
    object, scattered over the heap, at every snapshot that brings new keys)."""

    def __init__(self, dtype: type) -> None:
        self._buffer: npt.NDArray[Any] = np.empty(0, dtype)
        self._size = 0

    def append(self, items: npt.NDArray[Any]) -> None:
        end = self._size + len(items)
        if end > len(self._buffer):
            grown = np.empty(max(end, 2 * len(self._buffer)), self._buffer.dtype)
            grown[: self._size] = self._buffer[: self._size]
            self._buffer = grown
        self._buffer[self._size : end] = items
        self._size = end

    @property
    def array(self) -> npt.NDArray[Any]:
        """The items so far (a view)."""
        return self._buffer[: self._size]


class IntKeys(KeyColumn):
    """Plain ints in int64 range: an int64 array, written as an int64 column."""

    def __init__(self) -> None:
        self._values = _Growing(np.int64)

    @property
    def values(self) -> Int64s:
        return self._values.array

    def extend(self, keys: list[Any]) -> bool:
        column = int64_column(keys)
        if column is None:
            return False
        self._values.append(column)
        return True

    def extend_ints(self, keys: Int64s) -> None:
        """Append keys that are an int64 array already (copied)."""
        self._values.append(keys)

    def gather(self, order: npt.NDArray[np.intp]) -> Column:
        return self.values[order]

    def key_groups(self, start: int, end: int, max_parallelism: int) -> KeyGroups | None:
        return key_groups_of_ints(self.values[start:end], max_parallelism)


class ObjectKeys(KeyColumn):
    """Any keys (`scalars_only`: only str, bytes, int, float, bool, None): references in
    an object array, reordered in C and written as a msgpack array."""

    def __init__(self, *, scalars_only: bool = False) -> None:
        self._refs = _Growing(object)
        self.scalars_only = scalars_only

    @property
    def refs(self) -> npt.NDArray[np.object_]:
        return self._refs.array

    def extend(self, keys: list[Any]) -> bool:
        if self.scalars_only and set(map(type, keys)) - _SCALARS:
            return False
        self._refs.append(np.fromiter(keys, object, len(keys)))
        return True

    def gather(self, order: npt.NDArray[np.intp]) -> Column:
        return self.refs[order].tolist()  # type: ignore[no-any-return]


class TupleKeys(KeyColumn):
    """Tuples of one length: a column per position (ints as IntKeys, other scalars as
    ObjectKeys), written as a tuple column."""

    def __init__(self, first: tuple[Any, ...]) -> None:
        self.fields: list[IntKeys | ObjectKeys] = [
            IntKeys() if type(item) is int else ObjectKeys(scalars_only=True) for item in first
        ]

    def extend(self, keys: list[Any]) -> bool:
        if set(map(type, keys)) != {tuple} or set(map(len, keys)) != {len(self.fields)}:
            return False
        # One position at a time (itemgetter in C); zip(*keys) would take every key as
        # an argument.
        return all(
            field.extend(list(map(itemgetter(i), keys))) for i, field in enumerate(self.fields)
        )

    def gather(self, order: npt.NDArray[np.intp]) -> Column:
        return TupleColumn(tuple(field.gather(order) for field in self.fields))

    def key_groups(self, start: int, end: int, max_parallelism: int) -> KeyGroups | None:
        fields: list[Int64s | list[Any]] = [
            field.values[start:end]
            if isinstance(field, IntKeys)
            else field.refs[start:end].tolist()
            for field in self.fields
        ]
        return key_groups_of_tuples(fields, max_parallelism)


def key_column_for(first: Any) -> KeyColumn:
    """The most compact kind of column that a key like `first` may fit."""
    if type(first) is int:
        return IntKeys()
    if type(first) is tuple and first:
        return TupleKeys(first)
    return ObjectKeys()
