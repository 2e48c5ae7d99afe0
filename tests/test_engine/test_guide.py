"""docs/guide.md is executed: its Python blocks are written to the file named on their
first line (`# file: NAME`), its shell blocks run in order with bash -e in one fresh
folder, with the repository's `rewind` first on PATH. A guide that drifts from the
code fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def test_every_block_of_the_guide_runs(tmp_path: Path) -> None:
    text = (REPO / "docs/guide.md").read_text()
    blocks = BLOCK.findall(text)
    assert blocks and {lang for lang, _ in blocks} <= {"python", "sh", "text"}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("REWIND_CONTROL", None)
    for number, (lang, body) in enumerate(blocks, 1):
        if lang == "python":
            first, _, _ = body.partition("\n")
            match = re.fullmatch(r"# file: (\S+)", first)
            assert match, f"python block {number} does not name its file on line 1"
            (tmp_path / match[1]).write_text(body)
        elif lang == "sh":
            done = subprocess.run(
                ["bash", "-e", "-c", body], cwd=tmp_path, env=env,
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert done.returncode == 0, f"block {number}:\n{body}\n{done.stdout}\n{done.stderr}"
