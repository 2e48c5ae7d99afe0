"""`rewind inspect URI [--json]`: what a snapshot holds, without running anything.

`describe` turns a manifest into plain JSON-able data (uids, parallelism, key-group
ranges, source positions, sizes); `render` prints it for people. Nothing is decoded:
only manifest.json is read (pass verify=True to also check every file's checksum).
An incremental checkpoint is described with the bytes it wrote (`size_bytes`, "new")
next to the bytes of the blocks it references in earlier checkpoints
(`referenced_bytes`) and the checkpoints they lie in (`references`).
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
                    "key_groups_with_state": len(entry.blocks) + len(entry.refs),
                    "key_groups_referenced": len(entry.refs),
                    "has_operator_state": entry.operator_state is not None,
                    "file": entry.file,
                    "size_bytes": entry.size,
                    "referenced_bytes": entry.referenced_bytes,
                    "sha256": entry.sha256,
                }
            )
        steps[uid] = {
            "parallelism": step.parallelism,
            "size_bytes": sum(entry.size for entry in step.subtasks),
            "referenced_bytes": sum(entry.referenced_bytes for entry in step.subtasks),
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
        "referenced_bytes": manifest.referenced_bytes,
        "references": sorted(
            {folder for folder, _ in manifest.referenced_files()},
            key=lambda f: int(f.partition("-")[2]),
        ),
        "verified": verified,
        "steps": steps,
        "sources": manifest.sources,
        "meta": manifest.meta,
        "workers": [w.model_dump(mode="json") for w in manifest.workers],
        "exchange": manifest.exchange,
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
        f"  size:            {human_size(d['size_bytes'])}"
        + ("  (all checksums verified)" if d.get("verified") else ""),
    ]
    if d.get("referenced_bytes"):
        lines.append(
            f"  incremental:     {human_size(d['size_bytes'])} new, "
            f"{human_size(d['referenced_bytes'])} referenced in {', '.join(d['references'])}"
        )
    for key, value in sorted(d["meta"].items()):
        lines.append(f"  {key + ':':<16} {_short(value)}")
    lines.append("")
    lines.append(f"steps ({len(d['steps'])}):")
    for uid, step in d["steps"].items():
        what = f"{step['kind']}, " if "kind" in step else ""
        keys = f", {step['keys']} keys" if step.get("keys") else ""
        lines.append(
            f"  {uid}  {what}parallelism {step['parallelism']}{keys},"
            f" {human_size(step['size_bytes'])}"
        )
        for sub in step["subtasks"]:
            start, end = sub["key_group_range"]
            # Half-open [start, end), as key_group_range is in --json and the manifest.
            groups = f"key groups [{start}, {end})" if end > start else "no key groups"
            extra = ", operator state" if sub["has_operator_state"] else ""
            if sub.get("key_groups_referenced"):
                extra += f", {sub['key_groups_referenced']} referenced"
            refs = sub.get("referenced_bytes")
            more = f" + {human_size(refs)} referenced" if refs else ""
            lines.append(
                f"    subtask {sub['subtask']}: {groups} ({sub['key_groups_with_state']} with "
                f"state{extra}), {human_size(sub['size_bytes'])}{more}, {sub['file']}"
            )
    if d["sources"]:
        lines.append("")
        lines.append("source positions:")
        for uid, splits in d["sources"].items():
            lines.append(f"  {uid}")
            for split, position in sorted(splits.items()):
                lines.append(f"    {split}: {_short(position)}")
    if d.get("workers"):
        lines.append("")
        lines.append(f"workers ({len(d['workers'])}):")
        for w in d["workers"]:
            owned = ", ".join(f"{u} {_ranges(ix)}" for u, ix in w["subtasks"].items())
            lines.append(
                f"  worker {w['worker']}: {human_size(w['size_bytes'])}, {w['part']}: {owned}"
            )
    if d.get("exchange"):
        lines.append("")
        lines.append("exchange positions (next offset per partition read):")
        for topic, positions in d["exchange"].items():
            lines.append(f"  {topic}")
            lines.append("    " + ", ".join(f"{p}: {o}" for p, o in positions.items()))
    return "\n".join(lines)


def _ranges(indices: list[int]) -> str:
    if not indices:
        return "(none)"
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"[{indices[0]}]" if len(indices) == 1 else f"[{indices[0]}-{indices[-1]}]"
    return str(indices)


def human_size(n: int) -> str:
    """`n` bytes for people: "812 B", "2.7 KiB", "16.0 MiB"."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
