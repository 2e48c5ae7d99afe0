"""What is wrong with a StreamApp's spec beyond what the CRD schema checks.

    validate(app, observed, policy) -> [problem, ...]   (empty = fine)

What must stay true: each problem names the field and how to fix it; an invalid spec
never starts or stops anything (`decide` finishes what is in flight with the spec it
accepted before, and waits).
"""

from __future__ import annotations

from datetime import timedelta

from rewind_operator.models import (
    StreamApp,
    parse_duration,
)
from rewind_operator.observed import AppObserved
from rewind_operator.policy import Policy
from rewind_operator.settings import DEFAULT_POLICY
from rewind_operator.strategy import strategy_for
from rewind_operator.vocabulary import (
    KAFKA_BOOTSTRAP_ENV,
    LATEST,
)
from rewind_operator.workload import RESERVED_ENV, WORKER_APP_NAME_MAX

# --------------------------------------------------------------------------- validation


def validate(app: StreamApp, observed: AppObserved, policy: Policy = DEFAULT_POLICY) -> list[str]:
    """What is wrong with the spec beyond what the schema checks (empty = fine)."""
    spec = app.spec
    status = app.status
    mode = spec.upgrade_mode or policy.default_upgrade_mode
    keeps_state = strategy_for(mode).keeps_state
    problems: list[str] = []
    if spec.restore.savepoint and spec.restore.path:
        problems.append("restore.savepoint and restore.path are mutually exclusive")
    if spec.max_parallelism is not None and spec.parallelism > spec.max_parallelism:
        problems.append(
            f"parallelism {spec.parallelism} exceeds maxParallelism {spec.max_parallelism}"
        )
    if (
        spec.restore.path is not None
        and spec.restore.path != LATEST
        and not (spec.restore.path.startswith(("s3://", "file://")))
    ):
        problems.append(
            f"restore.path {spec.restore.path!r} is not an s3:// or file:// URI or 'latest'"
        )
    if spec.restore.path == LATEST and not keeps_state:
        problems.append(f"restore.path 'latest' contradicts upgradeMode {mode!r}")
    names = [var.name for var in spec.env]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"env has duplicate names: {', '.join(dupes)}")
    reserved = sorted(set(RESERVED_ENV) & set(names))
    if reserved:
        problems.append(f"env may not set {', '.join(reserved)} (set by the operator)")
    problems += _workers_problems(app)
    for field_name, text in (
        ("snapshots.savepointInterval", spec.snapshots.savepoint_interval),
        ("snapshots.savepointTimeout", spec.snapshots.savepoint_timeout),
        ("rollback.readinessTimeout", spec.rollback.readiness_timeout),
        ("preflight.timeout", spec.preflight.timeout),
    ):
        if text is not None and parse_duration(text) <= timedelta(0):
            problems.append(f"{field_name} must be longer than zero")
    reconciled = status.last_reconciled_spec
    if (
        reconciled is not None
        and keeps_state
        and reconciled.max_parallelism != spec.max_parallelism
        and reconciled.max_parallelism is not None
    ):
        problems.append(
            f"maxParallelism cannot change from {reconciled.max_parallelism} to "
            f"{spec.max_parallelism} while keeping state (it fixes the key groups); "
            "use upgradeMode: stateless or a new app"
        )
    exchange_secret = spec.exchange.credentials_secret if spec.exchange else None
    if spec.workers > 1 and exchange_secret and observed.exchange_secret_exists is False:
        problems.append(
            f"exchange.credentialsSecret {exchange_secret!r} does not exist in this namespace"
        )
    if spec.snapshots.credentials_secret and observed.secret_exists is False:
        problems.append(
            f"credentials secret {spec.snapshots.credentials_secret!r} does not exist "
            "in this namespace"
        )
    return problems


def _workers_problems(app: StreamApp) -> list[str]:
    """What a job of several workers needs that the schema cannot check."""
    spec = app.spec
    if spec.workers == 1:
        return []
    problems: list[str] = []
    if spec.parallelism < spec.workers:
        problems.append(
            f"parallelism {spec.parallelism} is below workers {spec.workers}: every worker "
            f"runs at least one subtask of each step; set spec.parallelism to at least "
            f"{spec.workers}"
        )
    exchange = spec.exchange
    if not (
        (exchange and (exchange.bootstrap_servers or exchange.credentials_secret))
        or any(var.name == KAFKA_BOOTSTRAP_ENV for var in spec.env)
    ):
        problems.append(
            f"workers {spec.workers} need Kafka between them: set spec.exchange."
            "bootstrapServers (or spec.exchange.credentialsSecret, a Secret with "
            f"{KAFKA_BOOTSTRAP_ENV}), or use workers: 1"
        )
    name = str(app.metadata.get("name", ""))
    if len(name) > WORKER_APP_NAME_MAX:
        problems.append(
            f"the app's name is {len(name)} characters; with workers above 1 it may have at "
            f"most {WORKER_APP_NAME_MAX} (its StatefulSet's pods are named after it)"
        )
    return problems
