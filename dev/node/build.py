"""`dev/cluster build`: Debian packages, the binaries (the node's too), the images.

Each step is cached on its own: dev/node/packages does nothing when every command is
installed, the node binaries are their own cache entry (the control plane's build stays
as it is), and an image is rebuilt only when its inputs change (dev/node/images.py).
"""

from __future__ import annotations

import subprocess
import sys
import time

from dev.node import images
from dev.plane import build
from dev.plane.layout import REPO, State

PACKAGES = REPO / "dev" / "node" / "packages"


def build_node(state: State) -> images.Store:
    """Everything the cluster needs; returns the store of image tars."""
    t0 = time.monotonic()
    if subprocess.run([str(PACKAGES)], check=False).returncode != 0:
        raise RuntimeError(f"{PACKAGES} failed: the real node needs its Debian packages")
    seconds = time.monotonic() - t0
    if seconds > 2:
        print(f"dev/cluster: node packages installed in {seconds:.0f} s", file=sys.stderr)
    build.build_all(state)
    return images.build_images(state.logs)
