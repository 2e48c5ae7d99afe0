"""A step's state in a snapshot as plain rows, and rows back into state blocks.

Flows through here, reading (`rows`, for `rewind inspect` and `rewind state read`): a
`SnapshotReader` (which verifies every block it reads) and a step uid; out come JSON-able
rows, one per key (or per window, per named state entry, per timer, per source split,
per pending sink commit), decoded from the block layout the runtime's operators write
(runtime/operators.py, state.py). The kind of state is the `kind` each operator records
in its operator state.

And back (`keyed_blocks`, for `rewind state write --replace` and `rewind state
bootstrap`): rows of that same shape, for the kinds in `WRITABLE_KINDS`, become
{key group: block} in the layout the operators' `restore` reads, each key in the key
group of the engine's own function (`keys.KeyGrouper`, which is `keys.key_group_of`).
Every row is checked first; a malformed one is an error naming where it came from and
what is wrong.

What must stay true: only the reader's public API is used (no file layout here); keys
come back as the flow saw them (tuples, not msgpack's arrays); `keyed_blocks(rows(...))`
restores the state `rows` read (the `key_group` of a row is recomputed from its key,
never trusted).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgpack

from .keys import KeyGrouper, decode_key, key_bytes
from .snapshots import SnapshotReader, codec
from .state_files import as_json

Row = dict[str, Any]


def step_kind(reader: SnapshotReader, uid: str) -> str:
    """`source`, `aggregate`, `window`, `process`, `sink`, ... (`unknown` if unrecorded)."""
    for state in reader.operator_states(uid):
        if isinstance(state, dict):
            if "splits" in state:
                return "source"
            if isinstance(state.get("kind"), str):
                return str(state["kind"])
    return "unknown"


def _plain(value: Any) -> Any:
    """numpy columns and scalars -> Python values (rows are JSON)."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else value


def rows(reader: SnapshotReader, uid: str) -> Iterator[Row]:
    """Every entry of `uid`'s state, in key-group order (operator state after)."""
    kind = step_kind(reader, uid)
    groups = range(reader.manifest.max_parallelism)
    for kg, data in reader.keyed_state(uid, groups):
        yield from _keyed_rows(kind, kg, data)
    for subtask, state in enumerate(reader.operator_states(uid)):
        if not isinstance(state, dict):
            continue
        if kind == "source":
            finished = set(state.get("finished", []))
            for split, position in state.get("splits", {}).items():
                yield {
                    "subtask": subtask,
                    "split": split,
                    "position": position,
                    "finished": split in finished,
                }
        elif kind == "sink":
            for checkpoint_id, committable in state.get("pending", []):
                yield {"subtask": subtask, "checkpoint_id": checkpoint_id, "pending": committable}


def _keyed_rows(kind: str, kg: int, data: Any) -> Iterator[Row]:
    if kind == "aggregate":
        if isinstance(data, dict):
            keys, values = _plain(data["keys"]), _plain(data["values"])
        else:  # format 1: [[key, value], ...]
            keys, values = [k for k, _ in data], [v for _, v in data]
        for key, value in zip(keys, values, strict=True):
            yield {"key_group": kg, "key": decode_key(key), "value": value}
    elif kind == "window":
        for key, windows in data["w"]:
            for start, end, acc in windows:
                yield {
                    "key_group": kg,
                    "key": decode_key(key),
                    "window_start": start,
                    "window_end": end,
                    "value": acc,
                    "watermark": data["wm"],
                }
    elif kind == "process":
        for section, label in (("v", "value"), ("l", "list")):
            for name, pairs in data.get(section, {}).items():
                for key, value in pairs:
                    yield {
                        "key_group": kg,
                        "key": decode_key(key),
                        "state": name,
                        "type": label,
                        "value": value,
                    }
        for name, pairs in data.get("m", {}).items():
            for key, items in pairs:
                yield {
                    "key_group": kg,
                    "key": decode_key(key),
                    "state": name,
                    "type": "map",
                    "value": [[decode_key(mk), mv] for mk, mv in items],
                }
        for section, label in (("et", "event_timer"), ("pt", "processing_timer")):
            for key, ts in data.get(section, []):
                yield {"key_group": kg, "key": decode_key(key), "type": label, "value": ts}
    else:
        yield {"key_group": kg, "value": data}


def survives_json(row: Row) -> bool:
    """Whether the row comes back from JSON (and so from every format state_files
    writes) as the same state: keys and map keys come back as tuples, but a tuple, set
    or bytes inside a value, or a map with non-string keys, would not."""
    back = as_json(row)
    if "key" in back:
        back["key"] = decode_key(back["key"])
    if row.get("type") == "map" and isinstance(back.get("value"), list):
        back["value"] = [[decode_key(k), v] for k, v in back["value"]]
    return back == row or repr(back) == repr(row)  # repr: a NaN is not equal to itself


def key_count(reader: SnapshotReader, uid: str) -> int:
    """Distinct keys with keyed state in `uid` (0 for a step without keyed state)."""
    return len({_hashable(r["key"]) for r in rows(reader, uid) if "key" in r})


def _hashable(key: Any) -> Any:
    return repr(key) if isinstance(key, dict | list) else key


# -- rows back into state --------------------------------------------------------------

WRITABLE_KINDS = {
    "aggregate": "built-in aggregations (count, sum, min, max, reduce after key_by)",
    "process": "keyed process state (ValueState, MapState, ListState and timers)",
}
"""The kinds of state `keyed_blocks` builds, and what they are, for messages."""

AGGREGATE_FIELDS = frozenset({"key_group", "key", "value"})
PROCESS_FIELDS = frozenset({"key_group", "key", "state", "type", "value"})
_PROCESS_SECTIONS = {"value": "v", "list": "l", "map": "m"}
_TIMER_SECTIONS = {"event_timer": "et", "processing_timer": "pt"}
MAX_PROBLEMS = 10
"""Malformed rows listed in one error (the count of all of them is given)."""


class RowsError(ValueError):
    """Rows that do not fit a step's state; the message lists where and what."""


def check_writable(kind: str, uid: str) -> None:
    """Raise RowsError unless state of `kind` can be written from rows."""
    if kind not in WRITABLE_KINDS:
        supported = "; ".join(f"{k}: {v}" for k, v in WRITABLE_KINDS.items())
        raise RowsError(
            f"step {uid!r} holds {kind} state, which cannot be written from rows; supported"
            f" are {supported}"
        )


def keyed_blocks(
    kind: str,
    rows: Iterable[tuple[str, Row]],
    max_parallelism: int,
    *,
    count: bool = False,
) -> dict[int, Any]:
    """{key group: block} of the (where, row) pairs, rows shaped as `rows` gives them for
    a step of `kind` (aggregate or process). `count`: the step is a count, whose values
    must be integers. Raises RowsError listing the malformed rows, before any is used."""
    if kind not in WRITABLE_KINDS:
        raise RowsError(f"rows cannot describe {kind} state (only {', '.join(WRITABLE_KINDS)})")
    problems: list[str] = []
    total = 0

    def problem(where: str, what: str) -> None:
        nonlocal total
        total += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append(f"{where}: {what}")

    grouper = KeyGrouper(max_parallelism)
    packer = codec.new_packer()
    builder = _AggregateBlocks(packer, count) if kind == "aggregate" else _ProcessBlocks(packer)
    fields = AGGREGATE_FIELDS if kind == "aggregate" else PROCESS_FIELDS
    for where, row in rows:
        try:
            unknown = sorted(set(row) - fields)
            if unknown:
                raise RowsError(
                    f"field(s) {', '.join(unknown)} are not part of the rows of {kind} state"
                    f" (their fields: {', '.join(sorted(fields))})"
                )
            if "key" not in row:
                raise RowsError("no 'key'")
            key = decode_key(row["key"])
            try:
                kg = grouper(key)  # raises TypeError for what cannot be a key
            except TypeError:
                raise RowsError(f"key {row['key']!r} is not a valid key: {_KEYS}") from None
            if "value" not in row:
                raise RowsError("no 'value'")
            builder.add(kg, key, row, where)
        except RowsError as exc:
            problem(where, str(exc))
    if problems:
        first = f" (the first {len(problems)})" if total > len(problems) else ""
        raise RowsError(
            f"{total} malformed row(s), nothing written{first}:\n  " + "\n  ".join(problems)
        )
    return builder.blocks


_KEYS = "keys are str, int, float, bool, null or arrays of those"


def _key(value: Any, what: str) -> Any:
    """A key from a row (arrays back to tuples), checked to be one the engine hashes."""
    key = decode_key(value)
    try:
        key_bytes(key)
        hash(key)
    except TypeError:
        raise RowsError(f"{what} {value!r} is not a valid key: {_KEYS}") from None
    return key


def _storable(value: Any, what: str, packer: msgpack.Packer) -> Any:
    """`value`, checked to be state data the snapshot codec writes (an int of 65 bits
    is not)."""
    try:
        codec.encode(value, packer)
    except (TypeError, ValueError, OverflowError) as exc:
        packer.reset()  # a failed pack may leave bytes behind
        raise RowsError(f"{what} {value!r} cannot be stored: {exc}") from None
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _AggregateBlocks:
    """Key groups' `Columns` (keys, values) of an aggregation, as AggregateOp restores."""

    def __init__(self, packer: msgpack.Packer, count: bool) -> None:
        self.packer = packer
        self.count = count
        self.seen: dict[Any, str] = {}
        self.keys: dict[int, list[Any]] = {}
        self.values: dict[int, list[Any]] = {}

    def add(self, kg: int, key: Any, row: Row, where: str) -> None:
        value = row["value"]
        if self.count and not (_is_int(value) and -(2**63) <= value < 2**63):
            raise RowsError(f"the value of a count must be an integer (64 bits), got {value!r}")
        _storable(value, "value", self.packer)
        if key in self.seen:
            raise RowsError(f"key {key!r} is given twice (first at {self.seen[key]})")
        self.seen[key] = where
        self.keys.setdefault(kg, []).append(key)
        self.values.setdefault(kg, []).append(value)

    @property
    def blocks(self) -> dict[int, Any]:
        return {kg: codec.Columns(keys, self.values[kg]) for kg, keys in self.keys.items()}


class _ProcessBlocks:
    """Key groups' blocks of a KeyedProcess ({"v", "l", "m", "et", "pt"}, the layout of
    state.group_capture), as ProcessOp restores them."""

    def __init__(self, packer: msgpack.Packer) -> None:
        self.packer = packer
        self.seen: dict[tuple[Any, ...], str] = {}
        self.out: dict[int, dict[str, Any]] = {}

    def add(self, kg: int, key: Any, row: Row, where: str) -> None:
        kind, value = row.get("type"), row["value"]
        group = self.out.setdefault(kg, {})
        if kind in _TIMER_SECTIONS:
            if "state" in row:
                raise RowsError(f"a {kind} row has no 'state' (it is the key's timer)")
            if not _is_int(value) or not -(2**63) <= value < 2**63:
                raise RowsError(
                    f"a timer's value is its timestamp in ms (an integer), got {value!r}"
                )
            identity: tuple[Any, ...] = (kind, key, value)
            entry: Any = [key, value]
            group.setdefault(_TIMER_SECTIONS[kind], [])
        elif kind in _PROCESS_SECTIONS:
            name = row.get("state")
            if not isinstance(name, str) or not name:
                raise RowsError(f"a {kind} state row needs its 'state' name (a string)")
            if kind == "list" and not isinstance(value, list):
                raise RowsError(f"a list state's value must be an array, got {value!r}")
            if kind == "map":
                value = _map_items(value)
            _storable(value, "value", self.packer)
            identity = (kind, name, key)
            entry = [key, value]
        else:
            choices = ", ".join([*_PROCESS_SECTIONS, *_TIMER_SECTIONS])
            raise RowsError(f"'type' must be one of {choices}, got {kind!r}")
        if identity in self.seen:
            raise RowsError(f"the same entry is given twice (first at {self.seen[identity]})")
        self.seen[identity] = where
        if kind in _TIMER_SECTIONS:
            group[_TIMER_SECTIONS[kind]].append(entry)
        else:
            section = group.setdefault(_PROCESS_SECTIONS[kind], {})
            section.setdefault(row["state"], []).append(entry)

    @property
    def blocks(self) -> dict[int, Any]:
        return dict(self.out)


def _map_items(value: Any) -> list[list[Any]]:
    """A map state's [[key, value], ...] (map keys back to tuples), checked."""
    if not isinstance(value, list) or not all(
        isinstance(item, list) and len(item) == 2 for item in value
    ):
        raise RowsError(
            f"a map state's value must be an array of [key, value] pairs, got {value!r}"
        )
    items = [[_key(k, "map key"), v] for k, v in value]
    if len({_hashable(k) for k, _ in items}) != len(items):
        raise RowsError("a map state's value gives one map key twice")
    return items
