"""Where things live: the repository, the binary cache and the runtime state folder.

Everything the cluster writes at run time is under `State.root` (default `dev/.state`),
so `rm -rf dev/.state` after `dev/cluster down` is a complete reset. Binaries are under
`${XDG_CACHE_HOME:-~/.cache}/rewind-dev/<component>-<version>/` and never in the tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root (this file is dev/plane/layout.py)."""


def cache_root() -> Path:
    """The binary cache; honours XDG_CACHE_HOME like every other cache on the machine."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rewind-dev"


@dataclass(frozen=True)
class State:
    """The runtime state folder and the fixed names inside it."""

    root: Path

    @classmethod
    def default(cls) -> State:
        # REWIND_DEV_STATE lets a second checkout (or a test of `down`) use its own cluster.
        return cls(Path(os.environ.get("REWIND_DEV_STATE") or REPO / "dev" / ".state").resolve())

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """One `<process>.pid` file per running process."""
        return self.root / "run"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def bin(self) -> Path:
        """Symlinks to every cached binary: the folder `REWIND_DEV_BIN` points at."""
        return self.root / "bin"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    @property
    def env_file(self) -> Path:
        """Shell `export` lines, written once everything is healthy (CONTRACTS.md)."""
        return self.root / "env"

    def kubeconfig(self, user: str) -> Path:
        return self.root / f"{user}.kubeconfig"

    def data(self, component: str) -> Path:
        return self.root / component
