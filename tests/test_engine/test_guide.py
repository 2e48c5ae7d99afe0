"""docs/guide.md is executed: its Python blocks are written to the file named on their
first line (`# file: NAME`), its shell blocks run in order with bash -e in one fresh
folder, with the repository's `rewind` first on PATH (tests/docblocks.py). A guide that
drifts from the code fails here."""

from __future__ import annotations

from pathlib import Path

from tests.docblocks import run_blocks

REPO = Path(__file__).resolve().parents[2]


def test_every_block_of_the_guide_runs(tmp_path: Path) -> None:
    assert run_blocks(REPO / "docs/guide.md", tmp_path) > 0
