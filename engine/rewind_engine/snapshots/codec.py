"""State values <-> msgpack bytes (the only encoding of state in a snapshot; never pickle).

Plain msgpack types (dict, list, str, bytes, int, float, bool, None) map to themselves.
Because a snapshot is data that must outlive the code that wrote it, the few Python
types that msgpack would silently change are written as documented extension types
(see docs/snapshot-format.md), so that what comes back equals what went in:

  ext 1 = tuple, ext 2 = set, ext 3 = frozenset   (payload: a msgpack array)

Subclasses of the plain types (Counter, defaultdict, IntEnum, numpy scalars) are
written as their plain base type. Anything else is a `TypeError` naming the type.

`Columns` is the fast shape of a key group's keyed state (format 2): two parallel
columns packed as the map {"keys": ..., "values": ...}. A column is a list, packed as a
msgpack array (keys natively by msgpack's C code, tuples as arrays: one extension object
per tuple key cost ~3 us, more than all else together for 1 M composite keys; a key can
never be a list, so a reader turns arrays in key position back into tuples,
`keys.decode_key`), or, since format 3, a typed column (columns.py: ext types 4-6,
int64, float64 and tuple columns), decoded back into a list (or, for `decode(...,
arrays=True)`, an int64 / float64 column into a numpy array).
"""

from __future__ import annotations

import numbers
from typing import Any

import msgpack

from .columns import COLUMN_CODES, Column, Columns, decode_column, pack_column

__all__ = [
    "Column",
    "Columns",
    "decode",
    "encode",
    "encode_columns",
    "new_key_packer",
    "new_packer",
]

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3


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
    keys = pack_column(columns.keys, key_packer or new_key_packer())
    values = pack_column(columns.values, packer or new_packer())
    return b"".join((_MAP2, _KEYS, *keys, _VALUES, *values))


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
    if code in COLUMN_CODES:
        return decode_column(code, payload, decode)
    return msgpack.ExtType(code, payload)  # unknown: keep it, do not guess


def _ext_hook_arrays(code: int, payload: bytes) -> Any:
    if code in COLUMN_CODES:
        return decode_column(code, payload, decode, arrays=True)
    return _ext_hook(code, payload)


def decode(data: bytes | memoryview, *, arrays: bool = False) -> Any:
    """The value encoded by `encode` (raises `ValueError` on malformed bytes).
    `arrays`: int64 / float64 columns come back as numpy arrays, not lists
    (columns.decode_column); everything else is the same."""
    hook = _ext_hook_arrays if arrays else _ext_hook
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=hook, use_list=True)
