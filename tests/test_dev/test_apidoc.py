"""docs/api.md is exactly what dev.apidoc generates from rewind_engine's public names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import rewind_engine

from dev import apidoc

ROOT = Path(__file__).resolve().parents[2]


def _headings(text: str) -> set[str]:
    return set(re.findall(r"^### `([^`]+)` \(", text, flags=re.MULTILINE))


def test_committed_api_reference_is_not_stale() -> None:
    committed = ROOT / "docs" / "api.md"
    assert committed.exists(), "docs/api.md missing: run `make crds` (python -m dev.apidoc)"
    assert committed.read_text() == apidoc.render(), (
        "docs/api.md is stale: run `make crds` (python -m dev.apidoc) and commit the result"
    )
    assert apidoc.main(["--check"]) == 0


def test_check_fails_with_the_command_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "api.md"
    stale.write_text(apidoc.render().replace("Dataflow", "Dataflw", 1))
    monkeypatch.setattr(apidoc, "API_MD", stale)
    assert apidoc.main(["--check"]) == 1
    assert "docs/api.md is stale: run make crds" in capsys.readouterr().err


def test_every_public_name_has_a_heading() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    assert text.startswith(apidoc.HEADER)
    missing = set(rewind_engine.__all__) - _headings(text)
    assert not missing, f"no heading in docs/api.md for {sorted(missing)}"


def test_every_public_name_has_its_own_docstring() -> None:
    undocumented = [
        entry.name for entry in apidoc.entries(rewind_engine) if apidoc.own_docstring(entry) is None
    ]
    assert not undocumented, f"public names of rewind_engine without a docstring: {undocumented}"


def _documented() -> None:
    """Documented, and defined outside every module that has a section."""


def _undocumented() -> None:
    pass


@dataclass
class _Plain:
    field: int = 0


def _namespace(**names: object) -> ModuleType:
    module = ModuleType("fake_engine")
    module.__all__ = list(names)  # type: ignore[attr-defined]
    for name, obj in names.items():
        setattr(module, name, obj)
    return module


def test_a_public_name_without_a_docstring_stops_the_generator_with_its_name() -> None:
    with pytest.raises(apidoc.ApiDocError, match=r"fake_engine\.bare"):
        apidoc.render(_namespace(fine=_documented, bare=_undocumented))
    # dataclass fills an empty docstring with the signature: that is no docstring either
    with pytest.raises(apidoc.ApiDocError, match=r"fake_engine\.Plain"):
        apidoc.render(_namespace(Plain=_Plain))


def test_a_name_from_a_module_without_a_section_goes_under_other() -> None:
    text = apidoc.render(_namespace(stray=_documented))
    assert "## Other\n" in text
    assert _headings(text) == {"stray"}
    assert text.index("## Other") < text.index("### `stray` (function)")


def test_defaults_are_shown_without_memory_addresses() -> None:
    assert apidoc.safe_repr(rewind_engine.uniform) == "uniform"
    assert apidoc.safe_repr(_documented) == f"{__name__}._documented"
    assert apidoc.safe_repr(lambda seq: seq) == "lambda seq: ..."
    assert apidoc.safe_repr(object()) == "<object object>"
    assert apidoc.safe_repr(frozenset({"b", "a"})) == "frozenset({'a', 'b'})"
    assert "0x" not in apidoc.render()
