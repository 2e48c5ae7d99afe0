"""`rewind inspect URI [--json]`: what a snapshot holds, without running anything.

`describe` turns a manifest into plain JSON-able data (uids, parallelism, key-group
ranges, source positions, sizes); `render` prints it for people. Nothing is decoded:
only manifest.json is read (pass verify=True to also check every file's checksum).
"""

from __future__ import annotations

import json
from typing import Any

from .manage import read_manifest, verify
from .manifest import Manifest
from .storage import open_storage


def describe(uri: str, *, check: bool = False) -> dict[str, Any]:
    """A JSON-able description of the snapshot at `uri`."""
    uri = open_storage(uri).uri
    manifest = verify(uri) if check else read_manifest(uri)
    return describe_manifest(manifest, uri, verified=check)


def describe_manifest(manifest: Manifest, uri: str, *, verified: bool = False) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for uid, step in manifest.steps.items():
        subtasks = []
        for entry in sorted(step.subtasks, key=lambda e: e.subtask):
            subtasks.append(
                {
                    "subtask": entry.subtask,
                    "key_group_range": list(entry.key_group_range),
                    "key_groups_with_state": len(entry.blocks),
                    "has_operator_state": entry.operator_state is not None,
                    "file": entry.file,
                    "size_bytes": entry.size,
                    "sha256": entry.sha256,
                }
            )
        steps[uid] = {
            "parallelism": step.parallelism,
            "size_bytes": sum(entry.size for entry in step.subtasks),
            "subtasks": subtasks,
        }
    return {
        "uri": uri,
        "kind": manifest.kind,
        "snapshot_id": manifest.snapshot_id,
        "job_id": manifest.job_id,
        "flow": manifest.flow,
        "created_at": manifest.created_at,
        "format_version": manifest.format_version,
        "max_parallelism": manifest.max_parallelism,
        "size_bytes": manifest.size_bytes,
        "verified": verified,
        "steps": steps,
        "sources": manifest.sources,
        "meta": manifest.meta,
    }


def render(description: dict[str, Any]) -> str:
    """The description as text for a terminal."""
    d = description
    lines = [
        f"{d['kind']} {d['snapshot_id']}  ({d['uri']})",
        f"  job:             {d['job_id']}",
        f"  flow:            {d['flow']}",
        f"  created:         {d['created_at']}",
        f"  format version:  {d['format_version']}",
        f"  max parallelism: {d['max_parallelism']} key groups",
        f"  size:            {_size(d['size_bytes'])}"
        + ("  (all checksums verified)" if d.get("verified") else ""),
    ]
    for key, value in sorted(d["meta"].items()):
        lines.append(f"  {key + ':':<16} {_short(value)}")
    lines.append("")
    lines.append(f"steps ({len(d['steps'])}):")
    for uid, step in d["steps"].items():
        lines.append(f"  {uid}  parallelism {step['parallelism']}, {_size(step['size_bytes'])}")
        for sub in step["subtasks"]:
            start, end = sub["key_group_range"]
            groups = f"key groups {start}-{end - 1}" if end > start else "no key groups"
            extra = ", operator state" if sub["has_operator_state"] else ""
            lines.append(
                f"    subtask {sub['subtask']}: {groups} ({sub['key_groups_with_state']} with "
                f"state{extra}), {_size(sub['size_bytes'])}, {sub['file']}"
            )
    if d["sources"]:
        lines.append("")
        lines.append("source positions:")
        for uid, splits in d["sources"].items():
            lines.append(f"  {uid}")
            for split, position in sorted(splits.items()):
                lines.append(f"    {split}: {_short(position)}")
    return "\n".join(lines)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
