"""Logging: structlog JSON lines with `app`, `namespace` and `savepoint` on every line.

Our code logs through structlog with those keys bound in context variables by the
handlers; kopf's and the Kubernetes client's stdlib records go through the same
renderer, and kopf's object reference fills the keys for its lines. What must stay
true: every line carries the three keys (null when not about one); the Kubernetes
client never logs at debug level (it would print request bodies, Secrets included).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

CONTEXT_KEYS = ("app", "namespace", "savepoint")


def _context_keys(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    record = event.get("_record")
    ref = getattr(record, "k8s_ref", None) if record is not None else None
    if isinstance(ref, dict):  # a kopf line about one object: that object, not our context
        savepoint = ref.get("kind") == "Savepoint"
        event["namespace"] = ref.get("namespace")
        event["savepoint"] = ref.get("name") if savepoint else None
        event["app"] = None if savepoint else ref.get("name")
    for key in CONTEXT_KEYS:
        event.setdefault(key, None)
    return event


class _DropHandlerChatter(logging.Filter):
    """kopf logs every successful run of every handler ("Timer 'x' succeeded.", "Handler
    'y' succeeded.", "Creation is processed: 1 succeeded; 0 failed."): once a second per
    object for timers. Our own lines say what happened; failures, retries and everything
    else still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        if message.startswith(("Timer '", "Handler '")) and message.endswith("succeeded."):
            return False
        return not (message.endswith("is processed: 1 succeeded; 0 failed."))


def configure(level: str = "info", fmt: str = "json") -> None:
    """Set up structlog and the stdlib root logger once, for the whole process."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _context_keys,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(_DropHandlerChatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kubernetes", "urllib3", "botocore", "boto3", "s3transfer", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def bind(**values: str | None) -> None:
    """Bind the context keys for the current handler call (and clear the others)."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**{k: values.get(k) for k in CONTEXT_KEYS})
