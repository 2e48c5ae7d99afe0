"""`rewind state write SRC --to DST [--drop UID] [--rename OLD=NEW] [--replace UID=FILE]`:
a new savepoint from an existing one, with steps' state dropped, moved to another uid
(the offline way to migrate state between versions of a flow), or replaced by the rows
of a file (read -> edit -> write).

Flows through here: every block of SRC is read through `SnapshotReader` (so every
checksum is verified on the way) and written again with `SnapshotWriter`, subtask by
subtask, key group by key group, unchanged except for the uids. A replaced step's keyed
state comes from its file instead (state_files.py reads it, state_rows.keyed_blocks puts
each key in its key group), and each key group goes to the subtask whose key-group range
in SRC holds it; its operator state (kind, watermark) is SRC's.

What must stay true: DST is a complete, self-describing savepoint (manifest last, sha256
per file, SRC's meta and source positions kept, `meta.written_from` naming SRC and
`meta.replaced` the files used), and SRC is never modified; a name that is not in SRC, a
kind of state rows cannot describe and a malformed row are errors before anything is
written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import snapshots, state_files, state_rows


class StateWriteError(ValueError):
    """The requested change does not fit the snapshot; the message says what."""


def _msgpack_ready(value: Any) -> Any:
    """Decoded columns (numpy arrays) back to lists, which the writer encodes."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, list | tuple | dict):
        return tolist()
    if isinstance(value, dict):
        return {k: _msgpack_ready(v) for k, v in value.items()}
    return value


def write(
    src: str,
    dst: str,
    *,
    drop: list[str],
    rename: dict[str, str],
    replace: dict[str, str] | None = None,
    fmt: str | None = None,
) -> snapshots.Manifest:
    """Write DST from SRC without the `drop` uids, with `rename` applied and the keyed
    state of each `replace` uid (its SRC name) taken from the rows of its file (`fmt`, or
    by the file's extension)."""
    replace = replace or {}
    with snapshots.SnapshotReader(src) as reader:
        uids = set(reader.uids())
        unknown = sorted((set(drop) | set(rename) | set(replace)) - uids)
        if unknown:
            raise StateWriteError(
                f"cannot write {dst}: {src} has no state for uid(s) {', '.join(unknown)}"
                f" (uids with state: {', '.join(sorted(uids))})"
            )
        both = sorted(set(drop) & set(replace))
        if both:
            raise StateWriteError(
                f"cannot write {dst}: uid(s) {', '.join(both)} are both dropped and replaced"
            )
        kept = [u for u in sorted(uids) if u not in drop]
        targets = [rename.get(u, u) for u in kept]
        clash = sorted({t for t in targets if targets.count(t) > 1})
        if clash:
            raise StateWriteError(f"cannot write {dst}: two steps would have uid(s) {clash}")
        manifest = reader.manifest
        replaced = {uid: _blocks_from(reader, uid, path, fmt) for uid, path in replace.items()}
        extra = {
            k: v
            for k, v in manifest.meta.items()
            if k not in ("engine_version", "written_from", "replaced")
        }
        extra["written_from"] = reader.uri
        if replace:
            extra["replaced"] = {uid: str(Path(p).resolve()) for uid, p in replace.items()}
        meta = {
            "job_id": manifest.job_id,
            "flow": manifest.flow,
            "max_parallelism": manifest.max_parallelism,
            **extra,
        }
        writer = snapshots.SnapshotWriter(dst, "savepoint", snapshots.new_savepoint_id(), meta)
        with writer:
            for uid in kept:
                step = manifest.steps[uid]
                states = reader.operator_states(uid)
                for entry in sorted(step.subtasks, key=lambda e: e.subtask):
                    start, end = entry.key_group_range
                    if uid in replaced:
                        keyed = {kg: b for kg, b in replaced[uid].items() if start <= kg < end}
                    else:
                        keyed = {
                            kg: _msgpack_ready(data)
                            for kg, data in reader.keyed_state(uid, range(start, end))
                        }
                    op_state = states[entry.subtask] if entry.subtask < len(states) else None
                    positions = None
                    if isinstance(op_state, dict) and isinstance(op_state.get("splits"), dict):
                        positions = op_state["splits"]
                    writer.add_subtask(
                        rename.get(uid, uid),
                        entry.subtask,
                        step.parallelism,
                        (start, end),
                        keyed,
                        op_state,
                        source_positions=positions,
                    )
            return writer.finish()


def _blocks_from(
    reader: snapshots.SnapshotReader, uid: str, path: str, fmt: str | None
) -> dict[int, Any]:
    """{key group: block} of step `uid` from the rows of `path`, checked against SRC."""
    kind = state_rows.step_kind(reader, uid)
    try:
        state_rows.check_writable(kind, uid)
        blocks = state_rows.keyed_blocks(
            kind, state_files.read_rows(path, fmt), reader.manifest.max_parallelism
        )
    except (state_rows.RowsError, state_files.StateFileError) as exc:
        raise StateWriteError(f"cannot replace the state of {uid!r} with {path}: {exc}") from exc
    covered: set[int] = set()
    for entry in reader.manifest.steps[uid].subtasks:
        covered.update(range(*entry.key_group_range))
    outside = sorted(set(blocks) - covered)
    if outside:  # a snapshot whose subtasks do not cover every key group
        raise StateWriteError(
            f"cannot replace the state of {uid!r}: no subtask of it in {reader.uri} owns key"
            f" group(s) {outside[:5]}, where keys of {path} belong"
        )
    return blocks
