"""Runs the blocks of a Markdown page in order, so that docs cannot drift from the code.

Python blocks are written to the file named on their first line (`# file: NAME`); shell
blocks run with bash -e, in order, in one folder, with the repository's `rewind` first
on PATH; text blocks are output shown to the reader and are not run. Used by the tests
of docs/guide.md and docs/kafka-tutorial.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def run_blocks(page: Path, folder: Path, env: dict[str, str] | None = None) -> int:
    """Runs every block of PAGE in FOLDER; returns how many shell blocks ran."""
    blocks = BLOCK.findall(page.read_text())
    assert blocks and {lang for lang, _ in blocks} <= {"python", "sh", "text"}
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, **(env or {}), "PATH": path}
    env.pop("REWIND_CONTROL", None)  # the page's commands say where the API is
    ran = 0
    for number, (lang, body) in enumerate(blocks, 1):
        if lang == "python":
            first, _, _ = body.partition("\n")
            match = re.fullmatch(r"# file: (\S+)", first)
            assert match, f"{page.name}: python block {number} does not name its file on line 1"
            (folder / match[1]).write_text(body)
        elif lang == "sh":
            done = subprocess.run(
                ["bash", "-e", "-c", body], cwd=folder, env=env,
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert done.returncode == 0, (
                f"{page.name}, block {number}:\n{body}\n{done.stdout}\n{done.stderr}"
            )
            ran += 1
    return ran
