"""Typed columns in a snapshot: many values of one shape as one msgpack extension object.

A large keyed state costs, in Python, one object visit per key and per value. A column
writes them as arrays instead (docs/snapshot-format.md, "Values"):

  ext 4  int64 column       payload: the ints, 8-byte little-endian, back to back
  ext 5  float64 column     payload: the floats, 8-byte little-endian IEEE 754
  ext 6  tuple column       payload: a msgpack array of one column per tuple position
                            (each an ext 4 / ext 5 column or a msgpack array of
                            scalars); tuple i is (column0[i], column1[i], ...)

A reader gets lists back (of ints, floats or tuples), so a column is only an encoding
(or, when it asks, an int64 / float64 column as a numpy array):
what comes back equals what the writer's caller had, of the same types, as long as the
caller built columns only from exact values (an int64 column from ints that are not
bools; a tuple column's array positions from scalars, not from lists or tuples, which
msgpack would turn into lists). key_columns.py builds them so.

`Column` is what `Columns` (one key group's keys and values) holds: a list (packed as a
msgpack array), a 1-D int64/float64 numpy array, or a `TupleColumn`. Slicing any of
them (`column[a:b]`) gives a column of the same kind.
"""

from __future__ import annotations

import gc
import sys
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union

import msgpack
import numpy as np
import numpy.typing as npt

EXT_INT64_COLUMN = 4
EXT_FLOAT64_COLUMN = 5
EXT_TUPLE_COLUMN = 6
COLUMN_CODES = frozenset({EXT_INT64_COLUMN, EXT_FLOAT64_COLUMN, EXT_TUPLE_COLUMN})

_DTYPE_CODES = {np.dtype(np.int64): EXT_INT64_COLUMN, np.dtype(np.float64): EXT_FLOAT64_COLUMN}
_TYPECODES = {EXT_INT64_COLUMN: "q", EXT_FLOAT64_COLUMN: "d"}


@dataclass(frozen=True, slots=True)
class TupleColumn:
    """Tuples of one length as one column per position: tuple i is
    `(fields[0][i], fields[1][i], ...)`."""

    fields: tuple[Column, ...]

    def __len__(self) -> int:
        return len(self.fields[0])

    def __getitem__(self, part: slice) -> TupleColumn:
        return TupleColumn(tuple(field[part] for field in self.fields))


Column = Union[list[Any], npt.NDArray[Any], TupleColumn]  # noqa: UP007 - runtime alias


@dataclass(frozen=True, slots=True)
class Columns:
    """One key group's keyed state as parallel columns: `keys[i]` maps to `values[i]`."""

    keys: Column
    values: Column


Buffers = tuple[bytes | memoryview, ...]


def pack_column(column: Column, packer: msgpack.Packer) -> Buffers:
    """The msgpack bytes of `column`, as buffers to concatenate (arrays are not copied)."""
    if isinstance(column, list):
        return (packer.pack(column),)
    if isinstance(column, TupleColumn):
        count = len(column.fields)
        header = bytes((0x90 | count,)) if count < 16 else b"\xdc" + count.to_bytes(2, "big")
        fields = [buffer for field in column.fields for buffer in pack_column(field, packer)]
        return _ext(EXT_TUPLE_COLUMN, (header, *fields))
    native = column.dtype.newbyteorder("=")
    code = _DTYPE_CODES.get(native) if column.ndim == 1 else None
    if code is None:
        raise TypeError(
            f"a column must be a list, a TupleColumn or a 1-D int64/float64 "
            f"array, not a {column.ndim}-D {column.dtype} array"
        )
    little = np.ascontiguousarray(column, native.newbyteorder("<"))
    return _ext(code, (memoryview(little.data).cast("B"),))


def _ext(code: int, payload: Buffers) -> Buffers:
    # The ext header by hand (ext 8/16/32 by size), so that large payloads are copied
    # once, into the block, instead of first into a bytes object for msgpack.ExtType.
    size = sum(len(part) for part in payload)
    if size < 1 << 8:
        header = bytes((0xC7, size, code))
    elif size < 1 << 16:
        header = b"\xc8" + size.to_bytes(2, "big") + bytes((code,))
    else:
        header = b"\xc9" + size.to_bytes(4, "big") + bytes((code,))
    return (header, *payload)


def decode_column(
    code: int, payload: bytes, decode: Callable[[bytes], Any], *, arrays: bool = False
) -> list[Any] | npt.NDArray[Any]:
    """The values of a column extension object (`decode` decodes nested msgpack, as
    lists). `arrays`: an int64 / float64 column comes back as a numpy array (native byte
    order; a read-only view of `payload` on little-endian machines) instead of a list:
    for a reader that takes the column whole, without 1 M Python ints made and checked."""
    if code in _TYPECODES:
        itemsize = 8
        if len(payload) % itemsize:
            raise ValueError(
                f"a column of ext type {code} has {len(payload)} bytes, "
                f"not a multiple of {itemsize}"
            )
        if arrays:
            little = np.frombuffer(payload, "<" + _TYPECODES[code])  # "<q" / "<d"
            return little.astype(little.dtype.newbyteorder("="), copy=False)
        items = array(_TYPECODES[code])
        items.frombytes(payload)
        if sys.byteorder == "big":
            items.byteswap()  # columns are little-endian
        return items.tolist()
    fields = decode(payload)  # EXT_TUPLE_COLUMN
    if not isinstance(fields, list) or not fields or len({len(f) for f in fields}) != 1:
        raise ValueError("a tuple column must hold one or more fields of one length")
    with _gc_paused():
        return list(zip(*fields, strict=True))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: making many tuples (containers, which the
    collector counts) would otherwise start a collection every 700 of them, ~20% of
    the decoding of 1 M tuple keys. Tuples of scalars hold no cycles, and the first
    collection after this leaves them untracked. Leaves the collector as it found it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
