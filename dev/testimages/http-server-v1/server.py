"""rewind-dev/http-server:v1 -- the test HTTP server, answering with version "v1"."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

from httpserver import serve

serve("v1")
