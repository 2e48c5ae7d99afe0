"""rewind-dev/crasher:v1 -- starts, says so, and exits with the code given (default 3).

Used to see a container restarted with a growing restartCount (CrashLoopBackOff).
"""

import os
import sys

code = int(sys.argv[1]) if len(sys.argv) > 1 else 3
print(f"crasher in pod {os.environ.get('POD_NAME')} exiting with {code}", flush=True)
sys.exit(code)
