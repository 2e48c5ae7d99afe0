"""librdkafka configuration for Rewind's Kafka clients, and how broker trouble is reported.

What flows through here: the user's `bootstrap_servers` and `config` (any librdkafka
property: `security.protocol`, `sasl.*`, `ssl.*`, fetch and batch sizes, ...) are merged
over the defaults each client role needs. The user's values win, except for the few
properties that the connector's guarantees depend on, which `consumer_config` and
`producer_config` set after the user's, each with its reason.

What must stay true:
- Passing a property through never weakens a guarantee: the forced properties are the
  ones that make positions and commits ours (no auto-commit, explicit assignment, an
  idempotent producer).
- The bootstrap address comes from the argument or, failing that, from
  `REWIND_KAFKA_BOOTSTRAP` (what `dev/cluster env` exports), read when the job starts
  (so a flow can be built anywhere); a missing address is a clear error then, not a
  hang.
- That default cluster's other client properties come from `REWIND_KAFKA_<PROPERTY>`
  variables (`REWIND_KAFKA_SECURITY_PROTOCOL=SASL_SSL` -> `security.protocol`), so a
  Secret's keys reach every client of it, the exchange of several workers included.
  They apply only to clients of the address in `REWIND_KAFKA_BOOTSTRAP` (a connector
  given another cluster gets none of them), under the code's own `config`, and their
  values are never logged (they hold passwords).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger("rewind.kafka")

ConfigValue = str | int | float | bool
ClientConfig = dict[str, Any]

BOOTSTRAP_ENV = "REWIND_KAFKA_BOOTSTRAP"

T = TypeVar("T")


class KafkaUnavailableError(RuntimeError):
    """The brokers could not be reached (or did not answer) within the allowed time."""


def bootstrap_servers(explicit: str | None) -> str:
    """The bootstrap address: the argument, else `$REWIND_KAFKA_BOOTSTRAP`."""
    value = explicit or os.environ.get(BOOTSTRAP_ENV, "")
    if not value:
        raise ValueError(
            "no Kafka bootstrap address: pass bootstrap_servers=... or set "
            f"{BOOTSTRAP_ENV} (dev/cluster env prints it for the local broker)"
        )
    return value


ENV_PREFIX = "REWIND_KAFKA_"


def env_config(servers: str) -> ClientConfig:
    """The `REWIND_KAFKA_<PROPERTY>` variables as librdkafka properties (upper case and
    `_` for the property's lower case and `.`), when `servers` is the default cluster
    (`REWIND_KAFKA_BOOTSTRAP`); else none."""
    if not servers or servers != os.environ.get(BOOTSTRAP_ENV):
        return {}
    return {
        name[len(ENV_PREFIX) :].lower().replace("_", "."): value
        for name, value in sorted(os.environ.items())
        if name.startswith(ENV_PREFIX) and name != BOOTSTRAP_ENV
    }


def _logger_config() -> ClientConfig:
    # librdkafka logs through Python logging, so its messages reach structlog/handlers
    # instead of stderr, and at the level the application chose.
    return {"logger": logging.getLogger("rewind.kafka.librdkafka")}


def consumer_config(servers: str, group_id: str, user: Mapping[str, ConfigValue]) -> ClientConfig:
    """A consumer that reads only what it is assigned and commits only when told to."""
    conf: ClientConfig = {
        "bootstrap.servers": servers,
        # Committed output of transactional producers only: a Rewind Kafka sink upstream
        # in exactly-once mode is then read exactly once.
        "isolation.level": "read_committed",
        # Used only when a restored offset fell out of retention.
        "auto.offset.reset": "earliest",
        # Larger local queues keep poll() from waiting on the network.
        "queued.min.messages": 200_000,
        "fetch.wait.max.ms": 100,
        **_logger_config(),
    }
    conf.update(env_config(servers))
    conf.update(user)
    conf.update(
        {
            "group.id": group_id,
            # The snapshot holds the offsets; the group's offsets are for monitoring only.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
        }
    )
    return conf


def producer_config(servers: str, user: Mapping[str, ConfigValue]) -> ClientConfig:
    """A producer whose key partitioning matches the Java client's (murmur2)."""
    conf: ClientConfig = {
        "bootstrap.servers": servers,
        # Same partition for the same key as Kafka Streams and the Java producer.
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
        # Only failed deliveries call back into Python: one callback per record would
        # cost more than the produce call itself.
        "delivery.report.only.error": True,
        **_logger_config(),
    }
    conf.update(env_config(servers))
    conf.update(user)
    # No duplicates from the producer's own retries, in both delivery modes.
    conf["enable.idempotence"] = True
    return conf


def admin_config(servers: str, user: Mapping[str, ConfigValue]) -> ClientConfig:
    """An admin client with the user's security settings (only client-wide keys kept)."""
    conf: ClientConfig = {"bootstrap.servers": servers, **_logger_config()}
    for key, value in {**env_config(servers), **user}.items():
        # Consumer- or producer-only properties would make librdkafka warn or refuse.
        if key.startswith(("security.", "sasl.", "ssl.", "socket.", "client.")) or key in (
            "bootstrap.servers",
            "metadata.max.age.ms",
            "broker.address.family",
        ):
            conf[key] = value
    return conf


def is_retriable(exc: BaseException) -> bool:
    """True for errors that a later attempt may not meet (broker down, timeouts)."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        err: KafkaError = exc.args[0]
        if err.fatal():
            return False
        return bool(err.retriable()) or err.code() in (
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._TIMED_OUT,
            KafkaError.REQUEST_TIMED_OUT,
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.NOT_LEADER_FOR_PARTITION,
            KafkaError.CONCURRENT_TRANSACTIONS,
            KafkaError._WAIT_COORD,
        )
    return False


def with_retries(
    what: str,
    servers: str,
    call: Callable[[], T],
    *,
    deadline_s: float,
    first_backoff_s: float = 0.2,
    max_backoff_s: float = 5.0,
) -> T:
    """Run `call`, retrying retriable Kafka errors with exponential backoff.

    Gives up with `KafkaUnavailableError` (naming the brokers and the last error) once
    `deadline_s` has passed, so an unreachable cluster is a clear error, not a hang.
    """
    end = time.monotonic() + deadline_s
    backoff = first_backoff_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            if not is_retriable(exc):
                raise
            if time.monotonic() + backoff > end:
                raise KafkaUnavailableError(
                    f"{what}: Kafka at {servers} did not answer within {deadline_s:.0f}s "
                    f"(last error: {exc.args[0] if exc.args else exc})"
                ) from exc
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
