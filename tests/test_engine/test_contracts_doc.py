"""docs/CONTRACTS.md refers only to files that exist in the repository (it once cited
a DESIGN.md that was never in it)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_file_contracts_md_names_exists() -> None:
    text = (REPO / "docs/CONTRACTS.md").read_text()
    named = set(re.findall(r"`([\w./-]+\.(?:py|md|yaml|json))`", text))
    named |= set(re.findall(r"\b([\w-]+\.md)\b", text))
    missing = []
    for name in sorted(named):
        if "<" in name or name in ("flow.py", "manifest.json") or name.startswith("parts/"):
            continue  # a placeholder or a snapshot's own file
        candidates = [REPO / name, REPO / "docs" / name, REPO / "engine" / name]
        if not any(c.exists() for c in candidates):
            missing.append(name)
    assert not missing, f"docs/CONTRACTS.md names files that do not exist: {missing}"
    assert "../shared" not in text
