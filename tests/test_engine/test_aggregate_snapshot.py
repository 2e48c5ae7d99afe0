"""The keyed state of built-in aggregations in a snapshot (format 2 and format 1).

A count's state goes capture -> group (two parallel lists per key group) -> encode ->
SnapshotWriter, and back through SnapshotReader -> restore. Format-1 blocks (lists of
[key, value] pairs) must still restore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
from rewind_engine.dataflow import AggregateSpec
from rewind_engine.keys import KeyGrouper, key_group_of, key_group_range
from rewind_engine.runtime.operators import AggregateOp
from rewind_engine.snapshots import SnapshotMeta, SnapshotReader, SnapshotWriter
from rewind_engine.windows import Count

MAXP = 16


def count_op(state: dict[Any, Any] | None = None) -> AggregateOp:
    op = AggregateOp(AggregateSpec(Count(), None, "batch"))
    op.state.update(state or {})
    return op


def write(uri: str, ops: list[AggregateOp], grouper: KeyGrouper) -> None:
    writer = SnapshotWriter(uri, "savepoint", "sp", SnapshotMeta("j", "f", MAXP))
    for i, op in enumerate(ops):
        capture = op.capture(1)
        kgs = key_group_range(i, len(ops), MAXP)
        writer.add_subtask("count", i, len(ops), kgs, op.group(capture.keyed, grouper), None)
    writer.finish()


def restore(uri: str, subtask: int, parallelism: int) -> AggregateOp:
    op = count_op()
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
        ops[1].state[(9999, "view")] = ops[0].state.pop((9999, "view"))
        ops[0]._kgs.clear()
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
    assert len(again._kgs) == len(again.state) == len(state)
    write((tmp_path / "c").as_uri(), [again], KeyGrouper(MAXP))
    assert restore((tmp_path / "c").as_uri(), 0, 1).state == state


def test_format_1_pairs_still_restore() -> None:
    pairs = [[[1, "view"], 5], ["x", 2]]
    block = msgpack.unpackb(msgpack.packb(pairs), strict_map_key=False)
    op = count_op()
    op.restore([(3, block)], [])
    assert op.state == {(1, "view"): 5, "x": 2}
