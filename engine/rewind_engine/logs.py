"""structlog configured for JSON lines on stderr (one event per line, machine-readable).

Everything the engine logs goes through structlog; `configure(json=True)` is called
once by the CLI. Library use (tests, notebooks) keeps structlog's defaults.

What must stay true: under `--log-format json` every line on stderr is one JSON object
with `event`, `level` and `timestamp`. The lines of stdlib loggers (the Kafka
connector's, librdkafka's own through the `rewind.kafka.librdkafka` logger, boto's) are
rendered by the same processors, with `logger` naming where they come from.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(*, json: bool = True, level: int = logging.INFO) -> None:
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    rendering: list[structlog.typing.Processor] = (
        [structlog.processors.dict_tracebacks, renderer] if json else [renderer]
    )
    structlog.configure(
        processors=[*processors, *rendering],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Records of stdlib loggers: the same keys and renderer as the engine's own events.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*processors, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
