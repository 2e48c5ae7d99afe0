"""State values <-> msgpack bytes (the only encoding of state in a snapshot; never pickle).

Plain msgpack types (dict, list, str, bytes, int, float, bool, None) map to themselves.
Because a snapshot is data that must outlive the code that wrote it, the few Python
types that msgpack would silently change are written as documented extension types
(see docs/snapshot-format.md), so that what comes back equals what went in:

  ext 1 = tuple, ext 2 = set, ext 3 = frozenset   (payload: a msgpack array)

Subclasses of the plain types (Counter, defaultdict, IntEnum, numpy scalars) are
written as their plain base type. Anything else is a `TypeError` naming the type.

`Columns` is the fast shape of a key group's keyed state (format 2): two parallel
columns packed as the map {"keys": ..., "values": ...}. A column is either a list, packed
as a msgpack array (keys natively by msgpack's C code, tuples as arrays: one extension
object per tuple key cost ~3 us, more than all else together for 1 M composite keys; a
key can never be a list, so a reader turns arrays in key position back into tuples,
`keys.decode_key`), or, since format 3, an int64 or float64 numpy array, packed as one
extension object holding the array's little-endian bytes:

  ext 4 = int64 column, ext 5 = float64 column   (decoded into a list of int / float)

so that 1 M int keys and counts cost two memory copies instead of 2 M objects visited.
"""

from __future__ import annotations

import numbers
import sys
from array import array
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_INT64_COLUMN = 4
EXT_FLOAT64_COLUMN = 5
_COLUMN_DTYPES = {np.dtype(np.int64): EXT_INT64_COLUMN, np.dtype(np.float64): EXT_FLOAT64_COLUMN}
_COLUMN_TYPECODES = {EXT_INT64_COLUMN: "q", EXT_FLOAT64_COLUMN: "d"}


def _default(obj: Any) -> Any:
    # strict_types=True sends every non-exact type here, so tuples are not packed as
    # lists and come back as tuples (a composite key must stay hashable).
    if isinstance(obj, tuple):
        return msgpack.ExtType(EXT_TUPLE, _pack_plain(list(obj)))
    if isinstance(obj, frozenset):
        return msgpack.ExtType(EXT_FROZENSET, _pack_plain(list(obj)))
    if isinstance(obj, set):
        return msgpack.ExtType(EXT_SET, _pack_plain(list(obj)))
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    tolist = getattr(obj, "tolist", None)  # numpy arrays
    if callable(tolist):
        return tolist()
    raise TypeError(
        f"cannot store a value of type {type(obj).__module__}.{type(obj).__qualname__} "
        "in a snapshot: state must be msgpack data (dict, list, tuple, set, str, bytes, "
        "int, float, bool, None)"
    )


def _pack_plain(items: list[Any]) -> bytes:
    return msgpack.packb(items, default=_default, strict_types=True, use_bin_type=True)  # type: ignore[no-any-return]


def new_packer() -> msgpack.Packer:
    """A packer for one thread (packers are not thread-safe)."""
    return msgpack.Packer(default=_default, strict_types=True, use_bin_type=True)


Column = list[Any] | np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class Columns:
    """One key group's keyed state as parallel columns: `keys[i]` maps to `values[i]`.
    A column is a list, or a 1-D int64 / float64 numpy array (written as ext 4 / 5)."""

    keys: Column
    values: Column


def new_key_packer() -> msgpack.Packer:
    """A packer for the keys of `Columns` (tuples as arrays, natively); one per thread."""
    return msgpack.Packer(default=_default, use_bin_type=True)


_MAP2 = b"\x82"
_KEYS = msgpack.packb("keys")
_VALUES = msgpack.packb("values")


def encode_columns(
    columns: Columns, packer: msgpack.Packer | None = None, key_packer: msgpack.Packer | None = None
) -> bytes:
    """msgpack bytes of the map {"keys": ..., "values": ...} of `columns`."""
    if len(columns.keys) != len(columns.values):
        raise ValueError(f"{len(columns.keys)} keys but {len(columns.values)} values")
    keys = _pack_column(columns.keys, key_packer or new_key_packer())
    values = _pack_column(columns.values, packer or new_packer())
    return b"".join((_MAP2, _KEYS, *keys, _VALUES, *values))


def _pack_column(column: Column, packer: msgpack.Packer) -> tuple[bytes | memoryview, ...]:
    if isinstance(column, list):
        return (packer.pack(column),)
    native = column.dtype.newbyteorder("=")
    code = _COLUMN_DTYPES.get(native) if column.ndim == 1 else None
    if code is None:
        raise TypeError(
            f"a column must be a list or a 1-D int64/float64 array, not {column.ndim}-D "
            f"{column.dtype}"
        )
    little = np.ascontiguousarray(column, native.newbyteorder("<"))
    # The ext header by hand (ext 8/16/32 by size) so that the array's bytes are copied
    # once, into the block, instead of first into a bytes object for msgpack.ExtType.
    size = little.nbytes
    if size < 1 << 8:
        header = bytes((0xC7, size, code))
    elif size < 1 << 16:
        header = b"\xc8" + size.to_bytes(2, "big") + bytes((code,))
    else:
        header = b"\xc9" + size.to_bytes(4, "big") + bytes((code,))
    return header, memoryview(little.data).cast("B")


def _decode_column(code: int, payload: bytes) -> list[Any]:
    items = array(_COLUMN_TYPECODES[code])
    if len(payload) % items.itemsize:
        raise ValueError(
            f"a column of ext type {code} has {len(payload)} bytes, "
            f"not a multiple of {items.itemsize}"
        )
    items.frombytes(payload)
    if sys.byteorder == "big":
        items.byteswap()  # columns are little-endian
    return items.tolist()


def encode(value: Any, packer: msgpack.Packer | None = None) -> bytes:
    """msgpack bytes of `value`; `TypeError`/`OverflowError` if it is not state data."""
    return (packer or new_packer()).pack(value)  # type: ignore[no-any-return]


def _ext_hook(code: int, payload: bytes) -> Any:
    if code == EXT_TUPLE:
        return tuple(decode(payload))
    if code == EXT_SET:
        return set(decode(payload))
    if code == EXT_FROZENSET:
        return frozenset(decode(payload))
    if code in _COLUMN_TYPECODES:
        return _decode_column(code, payload)
    return msgpack.ExtType(code, payload)  # unknown: keep it, do not guess


def decode(data: bytes | memoryview) -> Any:
    """The value encoded by `encode` (raises `ValueError` on malformed bytes)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook, use_list=True)
