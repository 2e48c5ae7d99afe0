"""Generate the CRDs from the pydantic models: `python -m rewind_operator.crdgen --out crds`.

models.py -> JSON schema (pydantic) -> structural OpenAPI v3 schema -> CRD YAML.

What must stay true for the API server to accept the schema as structural:
- no `$ref`/`$defs` (every reference is inlined), no `title`;
- an optional field is its own type plus `nullable: true`, never `anyOf` with null;
- free-form maps carry `x-kubernetes-preserve-unknown-fields` and no `additionalProperties`;
- every node has a `type`.
The output is deterministic (sorted keys where order is not meaningful), so the test
that compares it with the committed `crds/` only fails when the models changed.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from rewind_operator.models import (
    GROUP,
    VERSION,
    SavepointSpec,
    SavepointStatus,
    StreamAppSpec,
    StreamAppStatus,
)

_DROP_KEYS = {"title"}


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema made structural (see the module docstring)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    result: dict[str, Any] = _clean(_inline(schema, defs))
    return result


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            target = copy.deepcopy(defs[name])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            target.update(rest)  # a field's own description wins over the class docstring
            return _inline(target, defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _clean(node: Any) -> Any:
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if not isinstance(node, dict):
        return node
    variants = node.get("anyOf")
    if isinstance(variants, list):
        non_null = [v for v in variants if v.get("type") != "null"]
        if len(non_null) == 1 and len(non_null) < len(variants):
            merged = dict(non_null[0])
            for key, value in node.items():
                if key != "anyOf":
                    merged[key] = value
            merged["nullable"] = True
            if merged.get("default", 0) is None:
                del merged["default"]
            node = merged
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
        node["type"] = "object"
    if node.get("additionalProperties") is True:
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "examples" in node:
        node["example"] = node.pop("examples")[0]
    if isinstance(node.get("description"), str):
        # Docstrings wrap at the source's line length; kubectl explain re-wraps anyway.
        node["description"] = " ".join(node["description"].split())
    return {k: _clean(v) for k, v in node.items() if k not in _DROP_KEYS}


def _root(spec: type[BaseModel], status: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural(spec),
            "status": structural(status),
        },
    }


def _crd(
    *,
    kind: str,
    plural: str,
    short: str,
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "rewind"},
            "annotations": {"rewind.dev/generated-by": "python -m rewind_operator.crdgen"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["rewind"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": _root(spec, status, description)},
                }
            ],
        },
    }


def _age() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, for every kind."""
    streamapp = _crd(
        kind="StreamApp",
        plural="streamapps",
        short="sapp",
        description="A stateful streaming application run by the Rewind engine, upgraded "
        "through savepoints.",
        spec=StreamAppSpec,
        status=StreamAppStatus,
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            # Tells a rolled-back or crashing app from a healthy one at a glance
            # (Healthy, UpgradeFailed, JobCrashing, ...): the Degraded condition's reason.
            {
                "name": "Health",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Degraded")].reason',
            },
            # What runs now, which after a rollback is not spec.image.
            {"name": "Workers", "type": "string", "jsonPath": ".status.workers"},
            {"name": "Image", "type": "string", "jsonPath": ".status.image"},
            {"name": "Last savepoint", "type": "string", "jsonPath": ".status.lastSavepoint.name"},
            _age(),
        ],
    )
    savepoint = _crd(
        kind="Savepoint",
        plural="savepoints",
        short="sp",
        description="A savepoint of a StreamApp: a consistent, portable snapshot of its "
        "state and source positions in object storage.",
        spec=SavepointSpec,
        status=SavepointStatus,
        columns=[
            {"name": "App", "type": "string", "jsonPath": ".spec.app"},
            {"name": "Reason", "type": "string", "jsonPath": ".spec.reason"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Path", "type": "string", "jsonPath": ".status.path"},
            {"name": "Bytes", "type": "integer", "jsonPath": ".status.sizeBytes"},
            _age(),
        ],
    )
    return {
        f"streamapps.{GROUP}.yaml": streamapp,
        f"savepoints.{GROUP}.yaml": savepoint,
    }


HEADER = (
    "# GENERATED by `python -m rewind_operator.crdgen` from operator/rewind_operator/models.py.\n"
)
HEADER += "# Do not edit: change the models and run `make crds`.\n"


def render(obj: dict[str, Any]) -> str:
    """The YAML text written for one CRD."""
    return HEADER + yaml.safe_dump(obj, sort_keys=False, width=100, allow_unicode=True)


def write(out: Path) -> list[Path]:
    """Write every CRD into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, obj in crds().items():
        path = out / name
        path.write_text(render(obj))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("crds"), help="folder for the CRDs")
    parser.add_argument("--chart", type=Path, help="also write them into this chart folder")
    args = parser.parse_args(argv)
    for folder in [args.out, args.chart]:
        if folder is not None:
            for path in write(folder):
                print(path)


if __name__ == "__main__":
    main()
