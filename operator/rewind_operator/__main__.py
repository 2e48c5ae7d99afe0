"""`python -m rewind_operator`: run the operator with settings from the environment.

Environment (`REWIND_*`, see settings.py) -> logging -> kopf with our handlers, a
/healthz endpoint and /metrics, each bound only to the address it is given.
"""

from __future__ import annotations

from rewind_operator import logs
from rewind_operator.settings import from_env


def main() -> None:
    settings = from_env()
    logs.configure(settings.log_level, settings.log_format)
    # Imported here: importing it registers the handlers and reads the settings.
    from rewind_operator import handlers  # noqa: PLC0415

    handlers.run()


if __name__ == "__main__":
    main()
