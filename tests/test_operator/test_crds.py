"""The committed CRDs are exactly what the models generate, and they are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from rewind_operator import crdgen

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crds_are_not_stale() -> None:
    for name, obj in crdgen.crds().items():
        committed = ROOT / "crds" / name
        assert committed.exists(), f"crds/{name} missing: run `make crds`"
        assert committed.read_text() == crdgen.render(obj), (
            f"crds/{name} is stale: run `make crds` and commit the result"
        )


def test_chart_copies_match_when_present() -> None:
    chart = ROOT / "helm" / "rewind" / "crds"
    for name, obj in crdgen.crds().items():
        if (chart / name).exists():
            assert (chart / name).read_text() == crdgen.render(obj), f"helm copy of {name} stale"


def _walk(node: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found.extend(_walk(value, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            found.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            found.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return found


def _schema(name: str) -> dict[str, Any]:
    crd = crdgen.crds()[name]
    version = crd["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_schemas_are_structural_and_documented() -> None:
    for name in crdgen.crds():
        text = yaml.safe_dump(_schema(name))
        for forbidden in ("$ref", "$defs", "anyOf", "title:", "additionalProperties: true"):
            assert forbidden not in text, f"{name} has {forbidden}"
        for path, node in _walk(_schema(name)["properties"]["spec"], "spec"):
            assert "type" in node, f"{name} {path} has no type"
            if path != "spec" and not path.endswith("[]") and not path.endswith("}"):
                assert node.get("description"), f"{name} {path} has no description"
        for path, node in _walk(_schema(name)["properties"]["status"], "status"):
            assert "type" in node, f"{name} {path} has no type"


def test_enums_bounds_and_names() -> None:
    app = _schema("streamapps.rewind.dev.yaml")["properties"]["spec"]["properties"]
    assert app["upgradeMode"]["enum"] == ["savepoint", "last-state", "stateless"]
    assert app["state"]["enum"] == ["running", "suspended"]
    assert app["parallelism"]["minimum"] == 1
    assert app["snapshots"]["properties"]["location"]["pattern"].startswith("^(s3|file)")
    assert "pattern" in app["snapshots"]["properties"]["savepointInterval"]
    sp = _schema("savepoints.rewind.dev.yaml")["properties"]["spec"]["properties"]
    assert sp["reason"]["enum"] == ["manual", "upgrade", "periodic", "suspend", "delete"]
    crds = crdgen.crds()
    names = {c["spec"]["names"]["kind"]: c["spec"]["names"] for c in crds.values()}
    assert names["StreamApp"]["shortNames"] == ["sapp"]
    assert names["Savepoint"]["shortNames"] == ["sp"]
    assert all(n["categories"] == ["rewind"] for n in names.values())
    columns = [
        c["name"]
        for c in crds["streamapps.rewind.dev.yaml"]["spec"]["versions"][0][
            "additionalPrinterColumns"
        ]
    ]
    assert columns == ["Phase", "Ready", "Health", "Workers", "Image", "Last savepoint", "Age"]
    for crd in crds.values():
        assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
