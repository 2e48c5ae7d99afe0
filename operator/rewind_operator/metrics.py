"""Prometheus metrics of the operator (served on REWIND_METRICS_HOST:REWIND_METRICS_PORT).

Decisions and events in, counters and gauges out. What must stay true: label values
come from small fixed sets (phases, reasons, outcomes), never from names, so the number
of series stays bounded however many apps there are.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from rewind_operator.vocabulary import APP_PHASES, AppPhase

PHASES: tuple[AppPhase, ...] = APP_PHASES

APPS = Gauge("rewind_streamapps", "StreamApps by phase.", ["phase"])
SAVEPOINTS = Counter(
    "rewind_savepoints_total", "Savepoints that reached a final outcome.", ["reason", "outcome"]
)
SAVEPOINT_SECONDS = Histogram(
    "rewind_savepoint_duration_seconds",
    "From trigger to completion, per savepoint reason.",
    ["reason"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
UPGRADES = Counter("rewind_upgrades_total", "Upgrades by outcome.", ["outcome"])
ROLLBACKS = Counter("rewind_rollbacks_total", "Rollbacks started after a failed upgrade.")
RECONCILES = Counter(
    "rewind_reconciles_total", "Reconciles by kind and result.", ["kind", "result"]
)

_phases: dict[tuple[str, str], str] = {}

_UPGRADE_OUTCOMES = {
    "UpgradeSucceeded": "succeeded",
    "SavepointFailed": "blocked",
    "DeployFailed": "failed",
    "RolledBack": "rolled_back",
}


def set_phase(namespace: str, name: str, phase: str | None) -> None:
    """Record an app's phase (None: the app is gone) and refresh the gauge."""
    key = (namespace, name)
    if phase is None:
        _phases.pop(key, None)
    else:
        _phases[key] = phase
    for known in PHASES:
        APPS.labels(phase=known).set(sum(1 for p in _phases.values() if p == known))


def observe_event(kind: str, reason: str) -> None:
    """Count the transitions that are upgrade outcomes and rollbacks."""
    if kind != "StreamApp":
        return
    if reason == "RollingBack":
        ROLLBACKS.inc()
    outcome = _UPGRADE_OUTCOMES.get(reason)
    if outcome is not None:
        UPGRADES.labels(outcome=outcome).inc()


def savepoint_finished(
    reason: str, outcome: str, triggered_at: datetime | None, completed_at: datetime | None
) -> None:
    """Count a savepoint that became Completed, Failed or Abandoned."""
    SAVEPOINTS.labels(reason=reason, outcome=outcome).inc()
    if outcome == "completed" and triggered_at and completed_at:
        seconds = (completed_at - triggered_at).total_seconds()
        SAVEPOINT_SECONDS.labels(reason=reason).observe(max(seconds, 0.0))


def serve(host: str, port: int) -> None:
    """Serve /metrics on host:port (a thread); port 0 = do not serve."""
    if port:
        start_http_server(port, addr=host)
