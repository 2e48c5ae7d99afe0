"""HTTP calls to an engine's control API (docs/CONTRACTS.md, "Engine <-> operator").

host:port in, parsed JSON out. Synchronous (http.client): the handlers run each app's
reconciles in that app's own threads (`lanes`), and one call is a few milliseconds on a
healthy engine. What must stay true: every call has a connect timeout and a read timeout
(`Timeouts`), so a hung engine costs seconds, never a thread for ever; every failure
becomes one `EngineError` that says which engine and why, so `decide` can put it in words.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any, cast

from rewind_operator.settings import Settings


class EngineError(Exception):
    """The engine could not be reached or refused the request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Timeouts:
    """Bounds of one call (`ReconcileSettings.engine_connect_timeout_s`/`engine_timeout_s`)."""

    connect_s: float = 2.0
    """Seconds to open the connection."""
    read_s: float = 5.0
    """Longest silence once connected (sending the request, waiting for the answer)."""


DEFAULT_TIMEOUTS = Timeouts()


def engine_timeouts(settings: Settings) -> Timeouts:
    """The bounds of one call to an engine's control API, from the operator's settings."""
    r = settings.reconcile
    return Timeouts(connect_s=r.engine_connect_timeout_s, read_s=r.engine_timeout_s)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


def _call(
    address: str, method: str, path: str, body: dict[str, Any] | None, timeouts: Timeouts
) -> tuple[int, Any]:
    url = f"http://{address}{path}"
    host, port = _split(address)
    data = json.dumps(body).encode() if body is not None else None
    connection = http.client.HTTPConnection(host, port, timeout=timeouts.connect_s)
    try:
        connection.connect()
        if connection.sock is not None:
            connection.sock.settimeout(timeouts.read_s)
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
    except TimeoutError as exc:
        raise EngineError(f"{method} {url}: no answer ({exc or 'timed out'})") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise EngineError(f"{method} {url}: {exc}") from exc
    finally:
        connection.close()
    if response.status >= 400:
        detail = raw.decode(errors="replace")[:300]
        raise EngineError(f"{method} {url}: HTTP {response.status} {detail}", response.status)
    try:
        return response.status, json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        raise EngineError(f"{method} {url}: not JSON ({exc})") from exc


def status(address: str, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> dict[str, Any]:
    """GET /status."""
    return cast(dict[str, Any], _call(address, "GET", "/status", None, timeouts)[1])


def ready(address: str, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> bool:
    """GET /readyz: True on 200."""
    try:
        code, _ = _call(address, "GET", "/readyz", None, timeouts)
    except EngineError as exc:
        if exc.status is not None:
            return False
        raise
    return code == 200


def trigger_savepoint(
    address: str, target: str, *, stop: bool, drain: bool, timeouts: Timeouts = DEFAULT_TIMEOUTS
) -> str:
    """POST /savepoints; returns the trigger id."""
    body = {"target": target, "stop": stop, "drain": drain}
    _, answer = _call(address, "POST", "/savepoints", body, timeouts)
    if not isinstance(answer, dict) or "id" not in answer:
        raise EngineError(f"POST http://{address}/savepoints: no id in {answer!r}")
    return str(answer["id"])


def savepoint_status(
    address: str, trigger_id: str, timeouts: Timeouts = DEFAULT_TIMEOUTS
) -> dict[str, Any]:
    """GET /savepoints/{id}."""
    return cast(
        dict[str, Any], _call(address, "GET", f"/savepoints/{trigger_id}", None, timeouts)[1]
    )
