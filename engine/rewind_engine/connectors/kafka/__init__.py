"""Kafka connectors: `KafkaSource` (partitions as resettable splits) and `KafkaSink`
(exactly-once through transactions, or at-least-once). See `source` and `sink`."""

from .config import KafkaUnavailableError
from .serde import KafkaRecord, RecordDecodeError, RecordEncodeError
from .sink import KafkaSink
from .source import KafkaSource

__all__ = [
    "KafkaRecord",
    "KafkaSink",
    "KafkaSource",
    "KafkaUnavailableError",
    "RecordDecodeError",
    "RecordEncodeError",
]
