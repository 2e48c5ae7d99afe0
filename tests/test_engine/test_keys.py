"""Key groups: stable hashing, contiguous ranges, owners; the bulk path for int keys."""

from __future__ import annotations

import itertools
import random
import zlib

import msgpack
import numpy as np
import pytest
from rewind_engine.key_columns import (
    int64_column,
    key_groups_of_ints,
    key_groups_of_tuples,
    value_column,
)
from rewind_engine.keys import (
    KeyGrouper,
    decode_key,
    key_group_of,
    key_group_range,
    owners,
)


def test_key_groups_are_pinned() -> None:
    # crc32(msgpack(key)) % max_parallelism, never Python's salted hash(). If these values
    # change, every existing savepoint's keyed state would be mis-routed on restore.
    assert [key_group_of(k, 128) for k in ("a", 1, (1, "view"), "post-1")] == [25, 27, 10, 92]
    assert key_group_of((7, "click"), 128) == zlib.crc32(msgpack.packb([7, "click"])) % 128
    assert key_group_of((1, "view"), 128) == key_group_of([1, "view"], 128)


def test_ranges_are_contiguous_and_cover_all_key_groups() -> None:
    for p in (1, 2, 3, 5, 7, 128):
        ranges = [key_group_range(i, p, 128) for i in range(p)]
        assert ranges[0].start == 0 and ranges[-1].stop == 128
        for a, b in itertools.pairwise(ranges):
            assert a.stop == b.start
        table = owners(p, 128)
        for i, r in enumerate(ranges):
            assert all(table[kg] == i for kg in r)


def test_flink_formula_for_ranges() -> None:
    assert key_group_range(1, 3, 10) == range(3, 6)
    assert key_group_range(2, 3, 10) == range(6, 10)


def test_parallelism_above_max_parallelism_is_refused() -> None:
    with pytest.raises(ValueError, match="max_parallelism"):
        key_group_range(0, 200, 128)


def test_grouper_caches_and_agrees_with_the_function() -> None:
    g = KeyGrouper(64)
    keys = [("p", i) for i in range(500)] + list(range(500))
    assert [g(k) for k in keys] == [key_group_of(k, 64) for k in keys]
    assert [g(k) for k in keys] == [key_group_of(k, 64) for k in keys]
    fresh = KeyGrouper(64)
    assert fresh.many_uncached(keys) == [key_group_of(k, 64) for k in keys]
    with pytest.raises(TypeError, match="cannot be hashed stably"):
        fresh.many_uncached([1, object()])


def test_unhashable_key_gives_a_clear_error() -> None:
    with pytest.raises(TypeError, match="cannot be hashed stably"):
        key_group_of(object(), 128)
    with pytest.raises(TypeError, match=r"int \(from -2\*\*63 to 2\*\*64 - 1\)"):
        KeyGrouper(128)(2**64)


def every_int_width() -> list[int]:
    """Both ends of each msgpack int form, and random ints of every bit length."""
    ints = [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]
    ints += [-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]
    rng = random.Random(3)
    for bits in range(1, 64):
        for _ in range(30):
            value = rng.randrange(2 ** (bits - 1), 2**bits)
            ints += [value, -value]
    return ints


@pytest.mark.parametrize("max_parallelism", [1, 7, 128, 32768, 100_000])
def test_bulk_key_groups_of_ints_equal_the_key_by_key_function(max_parallelism: int) -> None:
    ints = every_int_width()
    bulk = key_groups_of_ints(np.array(ints, np.int64), max_parallelism)
    assert bulk.tolist() == [key_group_of(k, max_parallelism) for k in ints]


def test_bulk_key_groups_of_tuples_equal_the_key_by_key_function() -> None:
    rng = random.Random(5)
    ints = every_int_width()
    # Every msgpack str header (fixstr, str8, str16, str32), non-ASCII, bytes, bools, None.
    words = ["", "view", "ü€𝄞", "a" * 31, "b" * 32, "c" * 255, "d" * 256, "e" * 65536]
    others: list[object] = [b"", b"\x00\xff", True, False, None, "x"]
    n = 4000
    tuples = [(rng.choice(ints), rng.choice(words), rng.choice(others)) for _ in range(n)]
    fields: list[object] = [
        np.array([t[0] for t in tuples], np.int64),
        [t[1] for t in tuples],
        [t[2] for t in tuples],
    ]
    for p in (1, 128, 32768):
        bulk = key_groups_of_tuples(fields, p)  # type: ignore[arg-type]
        assert bulk is not None
        assert bulk.tolist() == [key_group_of(t, p) for t in tuples]
    two = [np.array(ints, np.int64), [words[i % 3] for i in range(len(ints))]]
    bulk = key_groups_of_tuples(two, 128)  # type: ignore[arg-type]
    assert bulk is not None
    assert bulk.tolist() == [key_group_of((k, words[i % 3]), 128) for i, k in enumerate(ints)]


def test_bulk_key_groups_of_tuples_decline_what_they_cannot_hash_exactly() -> None:
    ints = np.arange(300, dtype=np.int64)
    assert key_groups_of_tuples([ints, [0.0] * 300], 128) is None  # 0.0 == -0.0
    assert key_groups_of_tuples([ints, [str(i) for i in range(300)]], 128) is None  # varied
    assert key_groups_of_tuples([ints] * 16, 128) is None  # a 16-array has another header


def test_columns_are_built_only_when_exact() -> None:
    assert int64_column([1, 2, -3]) is not None
    assert int64_column([1, True]) is None  # a bool would come back as 1
    assert int64_column([1, 2.0]) is None
    assert int64_column([1, 2**63]) is None  # outside int64
    assert int64_column([]) is not None
    column = value_column([1.5, 2.0])
    assert column is not None and column.dtype == np.float64
    assert value_column([1, 2.0]) is None
    assert value_column(["1"]) is None


def test_decode_key_turns_arrays_back_into_tuples() -> None:
    assert decode_key([1, ["a", 2]]) == (1, ("a", 2))
    assert decode_key("x") == "x"
