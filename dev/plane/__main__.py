"""`python -m dev.plane ...` is what `dev/cluster` runs."""

import sys

from dev.plane.cli import main

sys.exit(main())
