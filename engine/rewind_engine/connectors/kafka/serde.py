"""Turning Kafka bytes into records and records into Kafka bytes.

What flows through here: the source hands every fetched key/value (bytes or None) to a
`Decoder`; the sink hands every record's key/value to an `Encoder`. A format is named
("bytes", "utf-8", "json") or is any callable.

What must stay true:
- A decoding failure raises `RecordDecodeError` that names the topic, partition and
  offset, so the bad record can be found with any Kafka tool; the source decides
  whether that fails the job or sends the raw bytes to a dead-letter topic.
- None (a Kafka null, e.g. a tombstone) passes through every named format unchanged.
- JSON is written compactly and as UTF-8, so equal values give equal bytes (keys that
  hash to partitions must be stable).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Format = Literal["bytes", "utf-8", "json"]
Decoder = Callable[[bytes | None], Any]
Encoder = Callable[[Any], bytes | None]


class RecordDecodeError(ValueError):
    """A fetched record could not be decoded; carries where it lives."""

    def __init__(self, topic: str, partition: int, offset: int, part: str, cause: Exception):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.part = part
        self.cause = cause
        super().__init__(
            f"cannot decode the {part} of the record at topic {topic!r} partition "
            f"{partition} offset {offset}: {type(cause).__name__}: {cause}"
        )


class RecordEncodeError(ValueError):
    """A record could not be encoded for the sink; names the record."""


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A record with its Kafka coordinates, emitted by `KafkaSource(emit="record")`."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    """Milliseconds since the epoch (CreateTime or LogAppendTime); -1 when unknown."""
    key: Any
    value: Any
    headers: tuple[tuple[str, bytes | None], ...] = ()


def _decode_bytes(data: bytes | None) -> Any:
    return data


def _decode_utf8(data: bytes | None) -> Any:
    return None if data is None else data.decode("utf-8")


def _decode_json(data: bytes | None) -> Any:
    # json.loads accepts bytes and detects UTF-8 itself, which saves a decode step.
    return None if data is None else json.loads(data)


def _encode_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"format 'bytes' needs bytes or None, got {type(value).__name__}")


def _encode_utf8(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    # Keys are often ints or other scalars; their text form is what a user expects.
    return str(value).encode("utf-8")


_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _encode_json(value: Any) -> bytes | None:
    return None if value is None else _json_encoder.encode(value).encode("utf-8")


_DECODERS: dict[str, Decoder] = {
    "bytes": _decode_bytes,
    "utf-8": _decode_utf8,
    "json": _decode_json,
}
_ENCODERS: dict[str, Encoder] = {
    "bytes": _encode_bytes,
    "utf-8": _encode_utf8,
    "json": _encode_json,
}


def decoder(fmt: Format | Decoder) -> Decoder:
    """The decoder for a named format, or `fmt` itself when it is a callable."""
    if callable(fmt):
        return fmt
    try:
        return _DECODERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; use one of {sorted(_DECODERS)}") from None


def encoder(fmt: Format | Encoder) -> Encoder:
    """The encoder for a named format, or `fmt` itself when it is a callable."""
    if callable(fmt):
        return fmt
    try:
        return _ENCODERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; use one of {sorted(_ENCODERS)}") from None
