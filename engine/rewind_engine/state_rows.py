"""A step's state in a snapshot as plain rows, for `rewind inspect` and `rewind state`.

Flows through here: a `SnapshotReader` (which verifies every block it reads) and a step
uid; out come JSON-able rows, one per key (or per window, per named state entry, per
source split, per pending sink commit), decoded from the block layout the runtime's
operators write (runtime/operators.py, state.py). The kind of state is the `kind` each
operator records in its operator state. What must stay true: only the reader's public
API is used (no file layout here), and keys come back as the flow saw them (tuples,
not msgpack's arrays).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .keys import decode_key
from .snapshots import SnapshotReader

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


def key_count(reader: SnapshotReader, uid: str) -> int:
    """Distinct keys with keyed state in `uid` (0 for a step without keyed state)."""
    return len({_hashable(r["key"]) for r in rows(reader, uid) if "key" in r})


def _hashable(key: Any) -> Any:
    return repr(key) if isinstance(key, dict | list) else key
