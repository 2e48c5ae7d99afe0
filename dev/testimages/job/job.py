"""rewind-dev/job:v1 -- a batch step: prints its arguments and a marker, exits 0.

``python job.py [WORDS...]`` prints ``job done: WORDS``; with JOB_EXIT_CODE set it exits
with that code instead of 0.
"""

import os
import sys

print(f"job done: {' '.join(sys.argv[1:])}", flush=True)
sys.exit(int(os.environ.get("JOB_EXIT_CODE", "0")))
