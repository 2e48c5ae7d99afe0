"""Typed columns in snapshot blocks (snapshots/columns.py, format 3: ext types 4-6).

What a column writes must read back as the same values of the same types, at every size
of msgpack's ext header, and a malformed column is a clear error, never a wrong value."""

from __future__ import annotations

import gc

import msgpack
import numpy as np
import pytest
from rewind_engine.snapshots import codec
from rewind_engine.snapshots.columns import TupleColumn


@pytest.mark.parametrize("n", [0, 1, 31, 32, 8191, 8192, 100_000])
def test_int_float_and_tuple_columns_read_back_as_lists(n: int) -> None:
    ints = np.arange(n, dtype=np.int64) * 7919 - 2**40
    floats = np.arange(n, dtype=np.float64) / 3
    names = [f"n{i % 5}" for i in range(n)]
    keys = TupleColumn((ints, names, floats)) if n else []
    block = codec.encode_columns(codec.Columns(keys, ints.astype(">i8")))  # big-endian too
    decoded = codec.decode(block)
    assert decoded["keys"] == list(zip(ints.tolist(), names, floats.tolist(), strict=True))
    assert decoded["values"] == ints.tolist()
    assert all(type(v) is int for v in decoded["values"])


def test_slices_of_columns_are_columns_of_the_same_rows() -> None:
    ints = np.arange(10, dtype=np.int64)
    column = TupleColumn((ints, [str(i) for i in range(10)]))
    part = codec.decode(codec.encode_columns(codec.Columns(column[3:6], ints[3:6])))
    assert part == {"keys": [(3, "3"), (4, "4"), (5, "5")], "values": [3, 4, 5]}


@pytest.mark.parametrize(
    ("ext", "message"),
    [
        (msgpack.ExtType(4, b"\x00" * 12), "has 12 bytes, not a multiple of 8"),
        (msgpack.ExtType(6, msgpack.packb([[1, 2], [3]])), "fields of one length"),
        (msgpack.ExtType(6, msgpack.packb([])), "fields of one length"),
    ],
)
def test_a_malformed_column_is_a_clear_error(ext: msgpack.ExtType, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codec.decode(msgpack.packb({"keys": ext, "values": []}))


def test_other_arrays_are_refused_when_writing() -> None:
    with pytest.raises(TypeError, match="not a 1-D int32 array"):
        codec.encode_columns(codec.Columns(np.arange(3, dtype=np.int32), [1, 2, 3]))


@pytest.mark.parametrize("enabled", [True, False])
def test_decoding_a_tuple_column_leaves_the_garbage_collector_as_it_was(enabled: bool) -> None:
    block = codec.encode_columns(codec.Columns(TupleColumn((np.arange(3), ["a"] * 3)), [1] * 3))
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        assert codec.decode(block)["keys"] == [(0, "a"), (1, "a"), (2, "a")]
        assert gc.isenabled() is enabled
        with pytest.raises(ValueError, match="fields of one length"):  # also when it fails
            codec.decode(msgpack.packb({"keys": msgpack.ExtType(6, msgpack.packb([[1], []]))}))
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_a_reader_may_take_int_and_float_columns_as_arrays() -> None:
    ints = np.arange(1000, dtype=np.int64) * 7919 - 2**40
    floats = np.arange(1000, dtype=np.float64) / 3
    keys = TupleColumn((ints, ["a"] * 1000))
    for values in (ints.astype(">i8"), floats):  # written big-endian or not: read native
        block = codec.encode_columns(codec.Columns(ints, values))
        decoded = codec.decode(block, arrays=True)
        assert isinstance(decoded["keys"], np.ndarray) and decoded["keys"].dtype == np.int64
        assert decoded["keys"].dtype.isnative and decoded["values"].dtype.isnative
        assert decoded["keys"].tolist() == ints.tolist()
        assert decoded["values"].tolist() == values.tolist()
        assert codec.decode(block) == {k: v.tolist() for k, v in decoded.items()}
    # Tuple columns (and everything that is not an int64 / float64 column) are unchanged.
    block = codec.encode_columns(codec.Columns(keys, [1.5] * 1000))
    assert codec.decode(block, arrays=True) == codec.decode(block)
    for old in ({"keys": [1, [2, "a"]], "values": [3, 4]}, [[1, 3], [2, 4]]):  # formats 2, 1
        assert codec.decode(msgpack.packb(old), arrays=True) == old
    with pytest.raises(ValueError, match="not a multiple of 8"):
        codec.decode(msgpack.packb(msgpack.ExtType(4, b"\x00" * 12)), arrays=True)
