"""The keyed state of built-in aggregations in a snapshot (formats 3, 2 and 1).

A count's state goes capture -> group (two parallel columns per key group) -> encode ->
SnapshotWriter, and back through SnapshotReader -> restore. Int keys and int or float
values are written as typed columns (ext 4 / 5); anything else as msgpack arrays; a
value or key must come back with its type (a bool is not an int, a float not an int).
Format-1 blocks (lists of [key, value] pairs) must still restore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from rewind_engine.dataflow import AggregateSpec
from rewind_engine.keys import KeyGrouper, key_group_of, key_group_range
from rewind_engine.runtime.aggregate_state import AggregateCapture, KeyIndex, columns_by_key_group
from rewind_engine.runtime.elements import Batch
from rewind_engine.runtime.operators import AggregateOp
from rewind_engine.snapshots import SnapshotMeta, SnapshotReader, SnapshotWriter
from rewind_engine.windows import Count, aggregation

MAXP = 16


def count_op(state: dict[Any, Any] | None = None) -> AggregateOp:
    op = AggregateOp(AggregateSpec(Count(), None, "batch"))
    op.state.update(state or {})
    return op


def sum_op(state: dict[Any, Any]) -> AggregateOp:
    """A sum's values may be of any type (a count's are always ints)."""
    op = AggregateOp(AggregateSpec(aggregation("sum"), None, "batch"))
    op.state.update(state)
    return op


def write(uri: str, ops: list[AggregateOp], grouper: KeyGrouper) -> None:
    writer = SnapshotWriter(uri, "savepoint", "sp", SnapshotMeta("j", "f", MAXP))
    for i, op in enumerate(ops):
        capture = op.capture(1)
        kgs = key_group_range(i, len(ops), MAXP)
        writer.add_subtask("count", i, len(ops), kgs, op.group(capture.keyed, grouper), None)
    writer.finish()


def restore(uri: str, subtask: int, parallelism: int, op: AggregateOp | None = None) -> AggregateOp:
    op = op or count_op()
    with SnapshotReader(uri, max_parallelism=MAXP) as reader:
        op.restore(reader.keyed_state("count", key_group_range(subtask, parallelism, MAXP)), [])
    return op


def test_counts_with_tuple_keys_round_trip_as_columns_and_rescale(tmp_path: Path) -> None:
    state: dict[Any, Any] = {(i, "view" if i % 2 else "click"): i * 3 for i in range(500)}
    state.update({f"s{i}": i for i in range(100)})
    halves: list[dict[Any, Any]] = [{}, {}]
    for k, v in state.items():
        halves[0 if key_group_of(k, MAXP) < MAXP // 2 else 1][k] = v
    ops = [count_op(halves[0]), count_op(halves[1])]
    grouper = KeyGrouper(MAXP)
    write((tmp_path / "a").as_uri(), ops, grouper)
    # Keys added after the first snapshot are grouped too (the key-group memo extends).
    ops[0].state[(9999, "view")] = 1
    if key_group_of((9999, "view"), MAXP) >= MAXP // 2:
        # Moving it breaks "insert only": the key index must notice and start afresh.
        ops[1].state[(9999, "view")] = ops[0].state.pop((9999, "view"))
    write((tmp_path / "b").as_uri(), ops, grouper)
    expected = {**state, (9999, "view"): 1}
    restored = restore((tmp_path / "b").as_uri(), 0, 1)
    assert restored.state == expected
    assert all(type(k) is tuple or type(k) is str for k in restored.state)
    thirds = [restore((tmp_path / "b").as_uri(), i, 3).state for i in range(3)]
    assert {k: v for part in thirds for k, v in part.items()} == expected
    assert sum(len(p) for p in thirds) == len(expected)
    # The block is the documented map of two parallel arrays.
    with SnapshotReader((tmp_path / "a").as_uri()) as reader:
        blocks = dict(reader.keyed_state("count", range(MAXP)))
    block = next(iter(blocks.values()))
    assert set(block) == {"keys", "values"} and len(block["keys"]) == len(block["values"])
    # A restored operator snapshots again without looking its keys up afresh.
    again = restore((tmp_path / "a").as_uri(), 0, 1)
    write((tmp_path / "c").as_uri(), [again], NoLookups(MAXP))
    assert restore((tmp_path / "c").as_uri(), 0, 1).state == state


class NoLookups(KeyGrouper):
    """A grouper that fails the test if asked for a key group."""

    def many(self, keys: list[Any]) -> list[int]:
        raise AssertionError(f"looked up {len(keys)} keys")

    def __call__(self, key: Any) -> int:
        raise AssertionError(f"looked up {key!r}")


def split_by_owner(state: dict[Any, Any], parallelism: int) -> list[dict[Any, Any]]:
    parts: list[dict[Any, Any]] = [{} for _ in range(parallelism)]
    for k, v in state.items():
        kg = key_group_of(k, MAXP)
        parts[next(i for i in range(parallelism) if kg in key_group_range(i, parallelism, MAXP))][
            k
        ] = v
    return parts


def raw_blocks(uri: str) -> dict[int, Any]:
    """{key group: block} decoded without the extension hooks (ext types stay ExtType)."""
    with SnapshotReader(uri) as reader:
        entry = reader.manifest.steps["count"].subtasks[0]
    data = (Path(uri.removeprefix("file://")) / entry.file).read_bytes()
    return {
        kg: msgpack.unpackb(data[offset : offset + length], strict_map_key=False)
        for kg, offset, length, _ in entry.blocks
    }


INT_KEYS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, -1, -32, -33]
INT_KEYS += [-128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]
INT_KEYS += [7 * i**3 + 12345 for i in range(1, 3000)]


def test_int_keys_and_counts_are_int64_columns_in_the_right_key_groups(tmp_path: Path) -> None:
    state = {k: i + 1 for i, k in enumerate(INT_KEYS)}
    grouper = KeyGrouper(MAXP)
    write((tmp_path / "a").as_uri(), [count_op(state)], grouper)
    blocks = raw_blocks((tmp_path / "a").as_uri())
    for block in blocks.values():
        assert isinstance(block["keys"], msgpack.ExtType) and block["keys"].code == 4
        assert isinstance(block["values"], msgpack.ExtType) and block["values"].code == 4
        assert len(block["keys"].data) == len(block["values"].data)
    with SnapshotReader((tmp_path / "a").as_uri()) as reader:
        for kg, block in reader.keyed_state("count", range(MAXP)):
            assert {key_group_of(k, MAXP) for k in block["keys"]} == {kg}
            assert [state[k] for k in block["keys"]] == block["values"]
    # New keys after the first snapshot (the key index extends), then 1 -> 3 subtasks.
    op = count_op(state)
    write((tmp_path / "b").as_uri(), [op], grouper)
    op.state.update({-5: 1, 2**40 + 3: 2, 99: 3})
    op.state[0] += 10
    write((tmp_path / "c").as_uri(), [op], grouper)
    thirds = [restore((tmp_path / "c").as_uri(), i, 3).state for i in range(3)]
    assert thirds == split_by_owner(op.state, 3)
    assert all(type(k) is int and type(v) is int for t in thirds for k, v in t.items())


def test_tuple_keys_are_tuple_columns_and_extend_after_the_first_snapshot(
    tmp_path: Path,
) -> None:
    keys = [
        (post, kind, 0.5 * post, None if post % 3 else b"x")
        for post in INT_KEYS[:1500]
        for kind in ("view", "click")
    ]
    state: dict[Any, Any] = {key: i + 1 for i, key in enumerate(keys)}
    grouper = KeyGrouper(MAXP)
    op = count_op(state)
    write((tmp_path / "a").as_uri(), [op], grouper)
    for block in raw_blocks((tmp_path / "a").as_uri()).values():
        assert isinstance(block["keys"], msgpack.ExtType) and block["keys"].code == 6
    assert restore((tmp_path / "a").as_uri(), 0, 1).state == state
    op.state.update({(-7, "share", 1.0, None): 4, (2**40, "view", 2.0, b"y"): 5})
    write((tmp_path / "b").as_uri(), [op], grouper)
    thirds = [restore((tmp_path / "b").as_uri(), i, 3).state for i in range(3)]
    assert thirds == split_by_owner(op.state, 3)
    assert all(type(k) is tuple and type(k[0]) is int for t in thirds for k in t)


def test_keys_of_another_shape_fall_back_to_the_general_column(tmp_path: Path) -> None:
    cases: list[list[Any]] = [
        [(1, "a"), (True, "b")],  # a bool where ints were
        [(1, "a"), (2, "b", 3)],  # another length
        [(1, ("nested", 2)), (2, ("x", 3))],  # a tuple inside a tuple
        [(1, "a"), "plain"],  # not a tuple
        [5, (1, "a"), 2**63],  # ints, then others
    ]
    for n, keys in enumerate(cases):
        op = count_op()
        grouper = KeyGrouper(MAXP)
        for i, key in enumerate(keys):  # one new key per snapshot: the column extends
            op.state[key] = i + 1
            write((tmp_path / f"case{n}-{i}").as_uri(), [op], grouper)
        last = (tmp_path / f"case{n}-{len(keys) - 1}").as_uri()
        assert all(isinstance(b["keys"], list) for b in raw_blocks(last).values()), keys
        restored = restore(last, 0, 1).state
        expected = {key: i + 1 for i, key in enumerate(keys)}
        assert restored == expected
        assert sorted(map(repr, restored)) == sorted(map(repr, expected))  # bool stays bool


def test_types_survive_when_not_every_key_or_value_fits_a_column(tmp_path: Path) -> None:
    cases: list[dict[Any, Any]] = [
        {True: 1, False: 2, 5: 3},  # bool keys are not ints
        {2**63: 1, 2**64 - 1: 2, 3: 3},  # outside int64 (msgpack's uint64)
        {1: 1.5, 2: float("inf"), 3: -0.0, 4: 1e308},  # float values: a float64 column
        {1: 1, 2: 2.0, 3: True},  # mixed values stay objects
        {"a": 1, (1, "b"): 2, 3: 3, None: 4, b"x": 5, 2.5: 6},
    ]
    for n, state in enumerate(cases):
        uri = (tmp_path / f"case{n}").as_uri()
        write(uri, [sum_op(state)], KeyGrouper(MAXP))
        restored = restore(uri, 0, 1, sum_op({})).state
        assert restored == state
        assert [(type(k), type(v)) for k, v in sorted(restored.items(), key=repr)] == [
            (type(k), type(v)) for k, v in sorted(state.items(), key=repr)
        ]
    floats = raw_blocks((tmp_path / "case2").as_uri())
    assert {block["values"].code for block in floats.values()} == {5}
    assert str(restore((tmp_path / "case2").as_uri(), 0, 1, sum_op({})).state[3]) == "-0.0"
    # A count holds ints only: another aggregation's floats under its uid are refused.
    with pytest.raises(ValueError, match=r"key group \d+ of a count: a count must be an integer"):
        restore((tmp_path / "case2").as_uri(), 0, 1)


def test_format_1_pairs_still_restore() -> None:
    pairs = [[[1, "view"], 5], ["x", 2]]
    block = msgpack.unpackb(msgpack.packb(pairs), strict_map_key=False)
    op = count_op()
    op.restore([(3, block)], [])
    assert op.state == {(1, "view"): 5, "x": 2}


@pytest.mark.parametrize("shape", ["int", "tuple"])
def test_a_large_count_restores_exactly_counts_on_and_snapshots_again(
    tmp_path: Path, shape: str
) -> None:
    def key(i: int) -> Any:
        return i * 104729 - 10**12 if shape == "int" else (i, "view" if i % 3 else "click")

    n = 20_000
    state = {key(i): i % 1000 + 1 for i in range(n)}
    grouper = KeyGrouper(MAXP)
    write((tmp_path / "a").as_uri(), [count_op(state)], grouper)
    halves = [restore((tmp_path / "a").as_uri(), i, 2) for i in range(2)]
    assert [op.state for op in halves] == split_by_owner(state, 2)
    assert all(type(k) is type(key(0)) for op in halves for k in op.state)
    # Counting on: restored keys keep their counts, new keys are added.
    touched = [key(i) for i in range(0, n + 5, 7)] + [key(0), key(n + 1)]
    expected = dict(state)
    for k in touched:
        expected[k] = expected.get(k, 0) + 1
    for subtask, op in enumerate(halves):
        owned = key_group_range(subtask, 2, MAXP)
        mine = [k for k in touched if key_group_of(k, MAXP) in owned]
        out: list[Batch] = []
        op.emit = out.append
        op.process(Batch(mine, keys=mine))
        assert out[0].records == [(k, expected[k]) for k in dict.fromkeys(mine)]
    # The halves snapshot again and restore into one subtask.
    write((tmp_path / "b").as_uri(), halves, grouper)
    one = restore((tmp_path / "b").as_uri(), 0, 1)
    assert one.state == expected
    assert all(type(k) is type(key(0)) and type(v) is int for k, v in one.state.items())


def test_a_key_index_takes_restored_int_keys_as_an_array() -> None:
    keys = list(INT_KEYS)
    groups = np.array([key_group_of(k, MAXP) for k in keys], np.int32)
    from_array, from_list = KeyIndex(), KeyIndex()
    from_array.learn(keys, len(keys), groups=groups, ints=np.array(keys, np.int64))
    from_list.learn(keys, len(keys), groups=groups)
    assert from_array.column_size == len(keys) and from_list.column_size == 0
    capture = AggregateCapture(keys, len(keys), np.arange(len(keys), dtype=np.int64))
    a = columns_by_key_group(capture, from_array, NoLookups(MAXP))
    b = columns_by_key_group(capture, from_list, NoLookups(MAXP))
    assert a.keys() == b.keys()
    for kg, columns in a.items():
        assert np.array_equal(columns.keys, b[kg].keys)  # type: ignore[arg-type]
        assert np.array_equal(columns.values, b[kg].values)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="an int64 column of 2"):
        KeyIndex().learn(keys, len(keys), groups=groups, ints=np.array([1, 2], np.int64))


def test_the_reads_of_keyed_state_start_before_its_iterator_is_advanced(tmp_path: Path) -> None:
    # restore.py asks for every subtask's iterator first, so that the downloads of the
    # later subtasks overlap the decoding of the earlier ones.
    state = {k: 1 for k in INT_KEYS}
    write((tmp_path / "a").as_uri(), [count_op(state)], KeyGrouper(MAXP))
    reads: list[str] = []
    with SnapshotReader((tmp_path / "a").as_uri()) as reader:
        read_whole = reader._read_whole
        reader._read_whole = lambda entry: reads.append(entry.file) or read_whole(entry)  # type: ignore[method-assign]
        blocks = reader.keyed_state("count", range(MAXP))
        reader._pool.shutdown(wait=True)  # lets the submitted read finish
        assert reads == ["data/count/subtask-0.msgpack"]
        assert {k for _, block in blocks for k in block["keys"]} == set(INT_KEYS)
