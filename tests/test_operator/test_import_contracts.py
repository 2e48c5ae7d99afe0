"""The import rules in pyproject.toml hold for modules nobody has written yet.

The contracts are written over the whole `rewind_operator` package, so a new module is
covered without being listed; these tests prove it by breaking the rules in a copy of
the code and running `lint-imports` on the copy with the real configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "rewind_operator"
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _layers() -> list[str]:
    [contract] = [c for c in CONFIG["contracts"] if c["type"] == "layers"]
    return contract["layers"]


def test_every_operator_module_has_exactly_one_layer() -> None:
    placed = [m.strip() for layer in _layers() for m in layer.replace(":", "|").split("|")]
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert sorted(placed) == modules, "put every module in one layer of the layers contract"


def test_kopf_and_kubernetes_rules_cover_the_whole_package() -> None:
    forbidden = {c["name"]: c for c in CONFIG["contracts"] if c["type"] == "forbidden"}
    for name in (
        "Only the handlers module imports kopf",
        "Only the k8s module imports the Kubernetes client",
    ):
        assert forbidden[name]["source_modules"] == ["rewind_operator"]


def _lint_copy(tmp_path: Path, edit: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """lint-imports with the real configuration over a copy of the code, edited."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for part in ("engine", "operator"):
        shutil.copytree(
            REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for module, line in edit.items():
        path = tmp_path / "operator" / "rewind_operator" / f"{module}.py"
        text = path.read_text() if path.exists() else '"""A module added later."""\n'
        path.write_text(text + line + "\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'engine'}{os.pathsep}{tmp_path / 'operator'}"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tmp_path / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_copy_is_clean(tmp_path: Path) -> None:
    result = _lint_copy(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contracts_bite(tmp_path: Path) -> None:
    result = _lint_copy(
        tmp_path,
        {
            # a module nobody listed anywhere imports kopf
            "newcomer": "import kopf  # noqa: F401",
            # the pure machine reaches up into I/O, and act sideways into observe
            "decide": "from rewind_operator import observe  # noqa: E402, F401",
            "act": "from rewind_operator import observe as _observe  # noqa: E402, F401",
        },
    )
    out = result.stdout
    assert result.returncode != 0, out
    assert "Only the handlers module imports kopf BROKEN" in out
    assert "rewind_operator.newcomer -> kopf" in out
    assert "Operator layers" in out and "BROKEN" in out.split("Operator layers", 1)[1]
    assert "rewind_operator.decide -> rewind_operator.observe" in out
    assert "rewind_operator.act -> rewind_operator.observe" in out
