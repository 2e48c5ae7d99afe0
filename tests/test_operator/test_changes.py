"""The change table: every spec field has a row (a new field cannot default silently)."""

from __future__ import annotations

import typing

from pydantic import BaseModel
from rewind_operator.changes import SPEC_CHANGES
from rewind_operator.models import StreamAppSpec


def _model_of(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        nested = _model_of(info.annotation)
        out += _paths(nested, path + ".") if nested is not None else [path]
    return out


def test_every_spec_field_has_a_row_in_the_change_table() -> None:
    def covered(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:n]) in SPEC_CHANGES for n in range(1, len(parts) + 1))

    paths = _paths(StreamAppSpec)
    assert "snapshots.retain.count" in paths and "restore.redeployNonce" in paths
    missing = [p for p in paths if not covered(p)]
    assert not missing, f"add these fields to changes.SPEC_CHANGES: {missing}"


def test_the_change_table_names_only_existing_fields() -> None:
    paths = _paths(StreamAppSpec)
    stale = [
        key for key in SPEC_CHANGES if not any(p == key or p.startswith(key + ".") for p in paths)
    ]
    assert not stale, stale
