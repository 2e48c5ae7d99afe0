"""The operator's settings, read once from the environment (`REWIND_*`).

Environment -> `Settings` (frozen dataclasses) -> the handlers, the servers and the
`Policy` of the state machines. Every field documents its meaning, unit and why its
default is what it is; the Helm chart sets the same variables
(helm/rewind/templates/deployment.yaml). What must stay true: the operator never
listens on a wildcard address; the default host is loopback and the chart passes the
pod's own IP.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from rewind_operator.policy import Policy
from rewind_operator.vocabulary import UPGRADE_MODES, Mode, UpgradeMode
from rewind_operator.workload import ENGINE_SA


@dataclass(frozen=True)
class ServerSettings:
    """Where the operator serves /healthz and /metrics."""

    health_host: str = "127.0.0.1"
    """Address of the /healthz server (`REWIND_HEALTH_HOST`). Loopback by default; the
    chart passes the pod IP. A wildcard address is refused."""

    health_port: int = 8080
    """Port of the /healthz server (`REWIND_HEALTH_PORT`); 0 = do not serve."""

    metrics_host: str = "127.0.0.1"
    """Address of the Prometheus /metrics server (`REWIND_METRICS_HOST`)."""

    metrics_port: int = 9090
    """Port of the /metrics server (`REWIND_METRICS_PORT`); 0 = do not serve."""


@dataclass(frozen=True)
class ReconcileSettings:
    """How often and how patiently the operator works."""

    resync_interval_s: float = 30.0
    """Seconds between two reconciles of a StreamApp with nothing to do
    (`REWIND_RESYNC_INTERVAL_SECONDS`). While an operation is in flight the operator
    polls every `busy_interval_s` instead. 30 s notices a failed job or a due periodic
    savepoint soon enough without loading the API server."""

    busy_interval_s: float = 2.0
    """Seconds between reconciles while something is in flight (a savepoint, a rollout)
    (`REWIND_BUSY_INTERVAL_SECONDS`): short, so an upgrade is not slowed by polling."""

    savepoint_poll_s: float = 2.0
    """Seconds between polls of a savepoint in progress (`REWIND_SAVEPOINT_POLL_SECONDS`)."""

    upgrade_retry_delay_s: float = 60.0
    """After an upgrade's savepoint failed for good, wait this long before a new attempt
    (`REWIND_UPGRADE_RETRY_SECONDS`). The old version keeps running meanwhile."""

    savepoint_backoff_s: float = 5.0
    """First retry delay of a failed savepoint attempt, doubled per failure
    (`REWIND_SAVEPOINT_BACKOFF_SECONDS`)."""

    savepoint_backoff_max_s: float = 300.0
    """Upper bound of that delay (`REWIND_SAVEPOINT_BACKOFF_MAX_SECONDS`)."""

    crash_restarts: int = 3
    """Restarts after which a new version counts as crashing and is rolled back without
    waiting for its readiness timeout (`REWIND_CRASH_RESTARTS`)."""

    engine_timeout_s: float = 5.0
    """Read timeout of one HTTP call to an engine's control API
    (`REWIND_ENGINE_TIMEOUT_SECONDS`): the longest silence once connected. The engine
    answers from memory, so a slow answer means a sick engine."""

    engine_connect_timeout_s: float = 2.0
    """Seconds to connect to an engine's control API
    (`REWIND_ENGINE_CONNECT_TIMEOUT_SECONDS`). Pods are on the cluster network, where a
    connection takes milliseconds; an engine that does not accept one is gone."""

    app_threads: int = 2
    """Threads of each app's own lane for its reconciles and those of its Savepoints
    (`REWIND_APP_THREADS`). Apps never share them, so a slow app cannot delay another;
    2 lets an app's savepoint be polled while the app itself is being reconciled."""

    default_savepoint_timeout_s: float = 600.0
    """Savepoint timeout of apps that do not set `snapshots.savepointTimeout`
    (`REWIND_SAVEPOINT_TIMEOUT_SECONDS`). Ten minutes covers gigabytes of state on a slow
    link; a stuck savepoint still ends, and the old version keeps running."""

    default_upgrade_mode: UpgradeMode = Mode.SAVEPOINT
    """Upgrade mode of apps that do not set `spec.upgradeMode`
    (`REWIND_DEFAULT_UPGRADE_MODE`). Savepoint is the only mode that never loses or
    repeats output, hence the default."""


@dataclass(frozen=True)
class StorageSettings:
    """How long the operator waits for object storage (its own calls: listing an app's
    snapshots, reading a savepoint's manifest, deleting data). The engines have their own,
    longer timeouts (`rewind_engine.snapshots.s3_storage.S3Timeouts`): they move data,
    the operator reads a few kilobytes."""

    connect_timeout_s: float = 2.0
    """Seconds to open a connection to the store (`REWIND_STORAGE_CONNECT_TIMEOUT_SECONDS`)."""

    read_timeout_s: float = 5.0
    """Longest silence of the store once connected (`REWIND_STORAGE_READ_TIMEOUT_SECONDS`).
    A manifest is a few kilobytes: 5 s without a byte means the store hangs (paused,
    partitioned, a stuck load balancer), which without this would block for minutes."""

    max_attempts: int = 2
    """Attempts per request, the first included (`REWIND_STORAGE_MAX_ATTEMPTS`): one retry
    for a dropped connection; the next reconcile is the retry after that."""

    deadline_s: float = 15.0
    """Seconds one storage call of the operator (which may be several requests: a listing
    and its manifests) may take before the reconcile carries on without its answer and
    says so (`REWIND_STORAGE_DEADLINE_SECONDS`). The call goes on in the background and
    its own timeouts end it. 15 s: a few requests' worth of the timeouts above."""

    calls_per_app: int = 2
    """Storage calls of one app that may be in flight at once, abandoned ones included
    (`REWIND_STORAGE_CALLS_PER_APP`); more are refused at once, so a hung store costs
    each app at most this many threads, and no other app anything."""

    def overlay(self) -> dict[str, str]:
        """These timeouts as the variables the engine's S3 storage reads (laid over an
        app's credentials for the operator's own calls)."""
        return {
            "REWIND_S3_CONNECT_TIMEOUT_SECONDS": f"{self.connect_timeout_s:g}",
            "REWIND_S3_READ_TIMEOUT_SECONDS": f"{self.read_timeout_s:g}",
            "AWS_MAX_ATTEMPTS": str(self.max_attempts),
        }


@dataclass(frozen=True)
class Settings:
    """All of the operator's settings."""

    watch_namespaces: tuple[str, ...] = ()
    """Namespaces to reconcile (`REWIND_WATCH_NAMESPACES`, comma-separated); empty =
    every namespace (needs cluster-wide rights)."""

    engine_service_account: str = ENGINE_SA
    """ServiceAccount of engine pods (`REWIND_ENGINE_SERVICE_ACCOUNT`). The operator
    creates it in an app's namespace if missing, with no rights and no token mounted."""

    log_level: str = "info"
    """debug, info, warning or error (`REWIND_LOG_LEVEL`)."""

    log_format: str = "json"
    """json (one object per line) or console (`REWIND_LOG_FORMAT`)."""

    server: ServerSettings = field(default_factory=ServerSettings)
    """Health and metrics servers."""

    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    """Timing of the reconcile loops."""

    storage: StorageSettings = field(default_factory=StorageSettings)
    """Timeouts of the operator's own object-storage calls."""

    def policy(self) -> Policy:
        """The state machines' tunables."""
        r = self.reconcile
        return Policy(
            upgrade_retry_delay=timedelta(seconds=r.upgrade_retry_delay_s),
            savepoint_backoff=timedelta(seconds=r.savepoint_backoff_s),
            savepoint_backoff_max=timedelta(seconds=r.savepoint_backoff_max_s),
            crash_restarts=r.crash_restarts,
            default_upgrade_mode=r.default_upgrade_mode,
            engine_service_account=self.engine_service_account,
        )


_WILDCARDS = {"0.0.0.0", "::", "", "*"}  # noqa: S104 - the list of what we refuse


def _host(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    if value in _WILDCARDS:
        raise ValueError(f"{name}={value!r}: the operator binds one address, not every interface")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    value = float(env.get(name, default))
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={text!r}: give a whole number of at least 1")
    return value


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment; a bad value raises ValueError naming the variable."""
    env = os.environ if env is None else env
    mode = env.get("REWIND_DEFAULT_UPGRADE_MODE", Mode.SAVEPOINT)
    if mode not in UPGRADE_MODES:
        raise ValueError(
            f"REWIND_DEFAULT_UPGRADE_MODE={mode!r}: "
            f"{', '.join(UPGRADE_MODES[:-1])} or {UPGRADE_MODES[-1]}"
        )
    log_format = env.get("REWIND_LOG_FORMAT", "json")
    if log_format not in ("json", "console"):
        raise ValueError(f"REWIND_LOG_FORMAT={log_format!r}: json or console")
    namespaces = tuple(
        ns.strip() for ns in env.get("REWIND_WATCH_NAMESPACES", "").split(",") if ns.strip()
    )
    return Settings(
        watch_namespaces=namespaces,
        engine_service_account=env.get("REWIND_ENGINE_SERVICE_ACCOUNT", ENGINE_SA),
        log_level=env.get("REWIND_LOG_LEVEL", "info").lower(),
        log_format=log_format,
        server=ServerSettings(
            health_host=_host(env, "REWIND_HEALTH_HOST", "127.0.0.1"),
            health_port=int(env.get("REWIND_HEALTH_PORT", 8080)),
            metrics_host=_host(env, "REWIND_METRICS_HOST", "127.0.0.1"),
            metrics_port=int(env.get("REWIND_METRICS_PORT", 9090)),
        ),
        reconcile=ReconcileSettings(
            resync_interval_s=_float(env, "REWIND_RESYNC_INTERVAL_SECONDS", 30.0),
            busy_interval_s=_float(env, "REWIND_BUSY_INTERVAL_SECONDS", 2.0),
            savepoint_poll_s=_float(env, "REWIND_SAVEPOINT_POLL_SECONDS", 2.0),
            upgrade_retry_delay_s=_float(env, "REWIND_UPGRADE_RETRY_SECONDS", 60.0),
            savepoint_backoff_s=_float(env, "REWIND_SAVEPOINT_BACKOFF_SECONDS", 5.0),
            savepoint_backoff_max_s=_float(env, "REWIND_SAVEPOINT_BACKOFF_MAX_SECONDS", 300.0),
            crash_restarts=int(env.get("REWIND_CRASH_RESTARTS", 3)),
            engine_timeout_s=_float(env, "REWIND_ENGINE_TIMEOUT_SECONDS", 5.0),
            engine_connect_timeout_s=_float(env, "REWIND_ENGINE_CONNECT_TIMEOUT_SECONDS", 2.0),
            app_threads=_count(env, "REWIND_APP_THREADS", 2),
            default_savepoint_timeout_s=_float(env, "REWIND_SAVEPOINT_TIMEOUT_SECONDS", 600.0),
            default_upgrade_mode=mode,
        ),
        storage=StorageSettings(
            connect_timeout_s=_float(env, "REWIND_STORAGE_CONNECT_TIMEOUT_SECONDS", 2.0),
            read_timeout_s=_float(env, "REWIND_STORAGE_READ_TIMEOUT_SECONDS", 5.0),
            max_attempts=_count(env, "REWIND_STORAGE_MAX_ATTEMPTS", 2),
            deadline_s=_float(env, "REWIND_STORAGE_DEADLINE_SECONDS", 15.0),
            calls_per_app=_count(env, "REWIND_STORAGE_CALLS_PER_APP", 2),
        ),
    )


DEFAULT_POLICY: Policy = Settings().policy()
"""The state machines' tunables at the default settings (`decide` called without one)."""
