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
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from json.scanner import make_scanner
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


# The JSON codecs call the C scanner and encoder of the json module straight away: per
# record, json.loads(bytes) spends about as long detecting the encoding and wrapping
# the scan as the scan itself, and JSONEncoder.encode builds a new C encoder per call
# (measured on 40-byte objects: 2.7x and 2.2x faster). Anything the fast path does not
# take as it is goes to json.loads, so results and errors are json's own.
_json_decoder = json.JSONDecoder()
_scan_json: Callable[[str, int], tuple[Any, int]] = make_scanner(_json_decoder)  # type: ignore[arg-type]


def _decode_json(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
        value, end = _scan_json(text, 0)
    except (UnicodeDecodeError, StopIteration):
        # Not UTF-8 (json.loads also reads UTF-16/32 and a BOM), leading whitespace or
        # malformed: json.loads decides and names the problem.
        return json.loads(data)
    if end != len(text):
        return json.loads(data)  # trailing whitespace, or extra data (an error)
    return value


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
# markers=None: no check for circular containers (a shared markers dict would be
# neither thread-safe nor emptied after an error); a circular record fails with
# RecursionError instead of ValueError, named by the sink like any encoding error.
_encode_json_chunks = c_make_encoder(
    None, _json_encoder.default, encode_basestring, None, ":", ",", False, False, True
)


def _encode_json(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):  # the C encoder takes containers and scalars, not str
        return _json_encoder.encode(value).encode("utf-8")
    return "".join(_encode_json_chunks(value, 0)).encode("utf-8")


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
