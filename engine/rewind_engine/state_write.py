"""`rewind state write SRC --to DST [--drop UID] [--rename OLD=NEW]`: a new savepoint
from an existing one, with steps' state dropped or moved to another uid (the offline
way to migrate state between versions of a flow).

Flows through here: every block of SRC is read through `SnapshotReader` (so every
checksum is verified on the way) and written again with `SnapshotWriter`, subtask by
subtask, key group by key group, unchanged except for the uids. What must stay true:
DST is a complete, self-describing savepoint (manifest last, sha256 per file, SRC's
meta and source positions kept, `meta.written_from` naming SRC), and SRC is never
modified; a name that is not in SRC is an error before anything is written.
"""

from __future__ import annotations

from typing import Any

from . import snapshots


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


def write(src: str, dst: str, *, drop: list[str], rename: dict[str, str]) -> snapshots.Manifest:
    """Write DST from SRC without the `drop` uids and with `rename` applied."""
    with snapshots.SnapshotReader(src) as reader:
        uids = set(reader.uids())
        unknown = sorted((set(drop) | set(rename)) - uids)
        if unknown:
            raise StateWriteError(
                f"cannot write {dst}: {src} has no state for uid(s) {', '.join(unknown)}"
                f" (uids with state: {', '.join(sorted(uids))})"
            )
        kept = [u for u in sorted(uids) if u not in drop]
        targets = [rename.get(u, u) for u in kept]
        clash = sorted({t for t in targets if targets.count(t) > 1})
        if clash:
            raise StateWriteError(f"cannot write {dst}: two steps would have uid(s) {clash}")
        manifest = reader.manifest
        extra = {
            k: v for k, v in manifest.meta.items() if k not in ("engine_version", "written_from")
        }
        extra["written_from"] = reader.uri
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
