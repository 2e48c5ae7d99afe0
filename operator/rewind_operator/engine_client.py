"""HTTP calls to an engine's control API (docs/CONTRACTS.md, "Engine <-> operator").

host:port in, parsed JSON out. Synchronous (urllib): the handlers run in kopf's thread
pool, and one call is a few milliseconds on a healthy engine. What must stay true:
every call has a timeout; every failure becomes one `EngineError` that says which
engine and why, so `decide` can put it in words.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, cast


class EngineError(Exception):
    """The engine could not be reached or refused the request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _call(
    address: str, method: str, path: str, body: dict[str, Any] | None, timeout: float
) -> tuple[int, Any]:
    url = f"http://{address}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise EngineError(f"{method} {url}: HTTP {exc.code} {detail}", exc.code) from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise EngineError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from exc
    except json.JSONDecodeError as exc:
        raise EngineError(f"{method} {url}: not JSON ({exc})") from exc


def status(address: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET /status."""
    return cast(dict[str, Any], _call(address, "GET", "/status", None, timeout)[1])


def ready(address: str, timeout: float = 5.0) -> bool:
    """GET /readyz: True on 200."""
    try:
        code, _ = _call(address, "GET", "/readyz", None, timeout)
    except EngineError as exc:
        if exc.status is not None:
            return False
        raise
    return code == 200


def trigger_savepoint(
    address: str, target: str, *, stop: bool, drain: bool, timeout: float = 5.0
) -> str:
    """POST /savepoints; returns the trigger id."""
    body = {"target": target, "stop": stop, "drain": drain}
    _, answer = _call(address, "POST", "/savepoints", body, timeout)
    if not isinstance(answer, dict) or "id" not in answer:
        raise EngineError(f"POST http://{address}/savepoints: no id in {answer!r}")
    return str(answer["id"])


def savepoint_status(address: str, trigger_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET /savepoints/{id}."""
    return cast(
        dict[str, Any], _call(address, "GET", f"/savepoints/{trigger_id}", None, timeout)[1]
    )
