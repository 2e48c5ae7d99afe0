"""The Kafka connectors' pure parts: formats, split ids, config merging, sink encoding
and the exactly-once commit marker. Nothing here needs a broker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rewind_engine.connectors.kafka import KafkaSink, KafkaSource, RecordEncodeError
from rewind_engine.connectors.kafka.config import (
    KafkaUnavailableError,
    admin_config,
    bootstrap_servers,
    consumer_config,
    producer_config,
)
from rewind_engine.connectors.kafka.serde import RecordDecodeError, decoder, encoder
from rewind_engine.connectors.kafka.sink import MARKER_TOKENS, _columns, _Marker, pack, unpack
from rewind_engine.connectors.kafka.source import _DeadLetters, parse_split, split_id


@pytest.mark.parametrize(
    ("fmt", "value", "data"),
    [
        ("bytes", b"\x00\xff", b"\x00\xff"),
        ("utf-8", "héllo", "héllo".encode()),
        ("json", {"post": "p1", "n": 2}, b'{"post":"p1","n":2}'),
        ("json", ["ü"], '["ü"]'.encode()),
    ],
)
def test_formats_round_trip(fmt: str, value: object, data: bytes) -> None:
    assert encoder(fmt)(value) == data  # type: ignore[arg-type]
    assert decoder(fmt)(data) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["bytes", "utf-8", "json"])
def test_null_passes_through_every_format(fmt: str) -> None:
    assert encoder(fmt)(None) is None  # type: ignore[arg-type]
    assert decoder(fmt)(None) is None  # type: ignore[arg-type]


def test_utf8_encoder_writes_scalars_as_text() -> None:
    assert encoder("utf-8")(42) == b"42"


def test_bytes_encoder_refuses_text() -> None:
    with pytest.raises(TypeError, match="needs bytes"):
        encoder("bytes")("text")


def test_unknown_format_is_named() -> None:
    with pytest.raises(ValueError, match="avro"):
        decoder("avro")  # type: ignore[arg-type]


def test_callable_formats_are_used_as_is() -> None:
    assert decoder(lambda b: b[::-1])(b"ab") == b"ba"


JSON_TEXTS = [
    b'{"post":"p1","kind":"view"}',
    b' {"a": [1, 2.5, null, true]} ',
    b'"text"',
    b"-12",
    b"NaN",
    '{"a":"\u00e9"}'.encode(),
    b'\xef\xbb\xbf{"bom":1}',  # UTF-8 with a byte-order mark
    '{"wide":"\u00e9"}'.encode("utf-16"),  # json.loads detects UTF-16 too
]


@pytest.mark.parametrize("data", JSON_TEXTS)
def test_json_decoder_reads_what_json_loads_reads(data: bytes) -> None:
    # The fast path (the C scanner called directly) must not change any result.
    decoded, expected = decoder("json")(data), json.loads(data)
    assert json.dumps(decoded) == json.dumps(expected)


@pytest.mark.parametrize("data", [b'{"a":1} x', b"{", b"", b"\xff", b'{"a":1}{"b":2}'])
def test_json_decoder_refuses_what_json_loads_refuses(data: bytes) -> None:
    with pytest.raises(ValueError) as fast:  # JSONDecodeError and UnicodeDecodeError
        decoder("json")(data)
    with pytest.raises(ValueError) as stdlib:
        json.loads(data)
    assert type(fast.value) is type(stdlib.value)
    assert str(fast.value) == str(stdlib.value)


@pytest.mark.parametrize(
    "value", [{"post": "p1", "count": 3}, [1, "\u00e9", None], "x", 7, 2.5, True, {"n": {}}]
)
def test_json_encoder_writes_compact_utf8_like_json_dumps(value: object) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert encoder("json")(value) == expected


def test_json_encoder_refuses_what_json_cannot_write() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        encoder("json")({"a": object()})
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(RecursionError):
        encoder("json")(circular)
    # An error leaves nothing behind: the next record encodes as usual.
    assert encoder("json")({"a": [1]}) == b'{"a":[1]}'


def test_the_default_clusters_variables_configure_its_clients_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REWIND_KAFKA_BOOTSTRAP", "k:9092")
    monkeypatch.setenv("REWIND_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("REWIND_KAFKA_SASL_USERNAME", "rewind")
    monkeypatch.setenv("REWIND_KAFKA_SSL_CA_LOCATION", "/etc/ca.pem")
    producer = producer_config("k:9092", {"sasl.username": "from-code"})
    assert producer["security.protocol"] == "SASL_SSL"
    assert producer["ssl.ca.location"] == "/etc/ca.pem"
    assert producer["sasl.username"] == "from-code", "the code's config wins"
    assert "bootstrap" not in producer and producer["bootstrap.servers"] == "k:9092"
    consumer = consumer_config("k:9092", "g", {})
    assert consumer["sasl.username"] == "rewind"
    assert admin_config("k:9092", {})["security.protocol"] == "SASL_SSL"
    # Another cluster, named in the code: none of the default cluster's settings.
    assert "security.protocol" not in producer_config("other:9092", {})
    assert "security.protocol" not in consumer_config("other:9092", "g", {})


def test_decode_error_names_topic_partition_offset() -> None:
    err = RecordDecodeError("posts", 3, 1234, "value", ValueError("bad json"))
    assert "topic 'posts' partition 3 offset 1234" in str(err)
    assert (err.topic, err.partition, err.offset) == ("posts", 3, 1234)


@pytest.mark.parametrize(("topic", "partition"), [("posts", 0), ("a.b-c_d", 17)])
def test_split_ids_round_trip(topic: str, partition: int) -> None:
    assert parse_split(split_id(topic, partition)) == (topic, partition)


@pytest.mark.parametrize("bad", ["posts", "posts:", ":1", "posts:x"])
def test_bad_split_ids_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="topic:partition"):
        parse_split(bad)


def test_bootstrap_comes_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWIND_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    assert bootstrap_servers("127.0.0.2:9") == "127.0.0.2:9"
    assert bootstrap_servers(None) == "127.0.0.1:9"
    monkeypatch.delenv("REWIND_KAFKA_BOOTSTRAP")
    with pytest.raises(ValueError, match="REWIND_KAFKA_BOOTSTRAP"):
        bootstrap_servers(None)


def test_user_config_passes_through_but_cannot_take_positions_away() -> None:
    user = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "enable.auto.commit": True,
        "group.id": "theirs",
        "fetch.max.bytes": 1234,
    }
    conf = consumer_config("127.0.0.1:9", "rewind.src", user)
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["fetch.max.bytes"] == 1234
    assert conf["enable.auto.commit"] is False  # the snapshot holds the offsets
    assert conf["group.id"] == "rewind.src"
    prod = producer_config("127.0.0.1:9", {"linger.ms": 50, "enable.idempotence": False})
    assert prod["linger.ms"] == 50
    assert prod["enable.idempotence"] is True
    assert prod["partitioner"] == "murmur2_random"


def test_source_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        KafkaSource()
    with pytest.raises(ValueError, match="exactly one"):
        KafkaSource("a", pattern="a.*")
    with pytest.raises(ValueError, match="dead_letter_topic"):
        KafkaSource("a", on_error="dead-letter")
    with pytest.raises(ValueError, match="start"):
        KafkaSource("a", start="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="committed_fallback must be earliest or latest"):
        KafkaSource("a", start="committed", committed_fallback="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stop_at must be"):
        KafkaSource("a", stop_at="latest")  # type: ignore[arg-type]


def test_sink_encodes_key_value_headers_partition_and_topic() -> None:
    sink = KafkaSink(
        "counts",
        key=lambda r: r[0],
        value=lambda r: {"post": r[0], "count": r[1]},
        headers=lambda r: {"source": "rewind", "raw": b"\x01"},
        partition=lambda r: 2 if r[0] == "p2" else None,
        topic_of=lambda r: "other" if r[0] == "p3" else None,  # type: ignore[arg-type,return-value]
    )
    out = sink.encode([("p1", 3), ("p2", 1), ("p3", 7)])
    assert out[0] == [
        None,
        -1,
        b"p1",
        b'{"post":"p1","count":3}',
        [["source", b"rewind"], ["raw", b"\x01"]],
    ]
    assert out[1][1] == 2
    assert out[2][0] == "other"


def test_sink_batches_are_columns_that_pack_and_stay_version_1_compatible() -> None:
    plain = KafkaSink("counts", key=lambda r: r[0], value=lambda r: r[1], value_format="utf-8")
    batch = plain.encode_batch([("p1", "3"), ("p2", "1")])
    # Only keys and values: no topic, partition or headers columns to store or walk.
    assert batch == [[b"p1", b"p2"], [b"3", b"1"], None, None, None]
    assert unpack(pack(batch)) == batch
    assert isinstance(pack(batch), bytes)
    full = KafkaSink(
        "counts",
        key=lambda r: r,
        headers=lambda r: {"h": r},
        partition=lambda r: 1 if r == "b" else None,
        topic_of=lambda r: "other" if r == "b" else None,  # type: ignore[arg-type,return-value]
    )
    batch = full.encode_batch(["a", "b"])
    assert batch[2:] == [[None, "other"], [-1, 1], [[["h", b"a"]], [["h", b"b"]]]]
    assert unpack(pack(batch)) == batch
    # A version-1 committable's rows become the same batch again.
    assert _columns(full.encode(["a", "b"])) == batch
    assert _columns(plain.encode([("p1", "3")])) == [[b"p1"], [b"3"], None, None, None]


def test_sink_default_record_is_the_value_without_key() -> None:
    assert KafkaSink("t").encode([{"a": 1}]) == [[None, -1, None, b'{"a":1}', None]]


def test_sink_encode_error_names_the_record() -> None:
    sink = KafkaSink("t", value_format="bytes")
    with pytest.raises(RecordEncodeError, match="'not bytes'"):
        sink.encode(["not bytes"])
    keyed = KafkaSink("t", key=lambda r: r["k"], value=lambda r: b"v", value_format="bytes")
    # The failing record of a batch, whichever column fails first.
    with pytest.raises(RecordEncodeError, match=r"KeyError: 'k'; record: \{'x': 1\}"):
        keyed.encode_batch([{"k": "a"}, {"x": 1}])


def test_marker_keeps_the_newest_tokens_within_the_metadata_limit() -> None:
    marker = _Marker({})
    for i in range(MARKER_TOKENS + 5):
        marker = marker.with_commit(f"{i:012x}", i + 1)
    marker = marker.with_commit(f"{5:012x}", 99)  # committing again makes a token newest
    marker = marker.with_commit("f" * 12, 100)  # pushes out the oldest: 6, not 5
    dumped = marker.dump()
    assert len(dumped.encode()) < 4096
    back = _Marker.parse(dumped)
    assert back.committed(f"{5:012x}") == 99
    assert back.committed(f"{MARKER_TOKENS + 4:012x}") == MARKER_TOKENS + 5
    assert back.committed(f"{4:012x}") == -1
    assert back.committed(f"{6:012x}") == -1
    assert len(back.tokens) == MARKER_TOKENS
    assert json.loads(dumped)["v"] == 1


@pytest.mark.parametrize("metadata", [None, "", "not json", '{"t": 5}'])
def test_unreadable_marker_is_empty(metadata: str | None) -> None:
    assert _Marker.parse(metadata).committed("abc") == -1


class _FakeProducer:
    """Delivers what it was given at the next poll, failing the values in `refuse`."""

    def __init__(self) -> None:
        self.refuse: set[bytes] = set()
        self.in_flight: list[tuple[bytes, Any]] = []
        self.delivered: list[bytes] = []

    def produce(
        self, topic: str, *, value: bytes, key: Any, headers: Any, on_delivery: Any
    ) -> None:
        self.in_flight.append((value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        done, self.in_flight = self.in_flight, []
        for value, callback in done:
            if value in self.refuse:
                callback("Broker: Message size too large", None)
            else:
                self.delivered.append(value)
                callback(None, None)
        return len(done)


def test_a_failed_dead_letter_fails_one_wait_and_is_sent_again() -> None:
    producer = _FakeProducer()
    letters = _DeadLetters(producer, "dlq")  # type: ignore[arg-type]
    producer.refuse.add(b"bad-1")
    letters.send(b"bad-1", None, [])  # send() polls at once: this one has failed
    letters.send(b"ok-2", None, [])
    assert not letters.settled()
    barrier = letters.sent
    with pytest.raises(KafkaUnavailableError, match=r"1 record\(s\) to dead-letter topic dlq"):
        letters.wait(barrier)  # the snapshot whose position passes bad-1 fails ...
    assert [v for v, _cb in producer.in_flight] == [b"bad-1"]  # ... and it is sent again
    producer.refuse.clear()  # the broker takes it now
    letters.send(b"ok-3", None, [])  # after the next barrier: not waited for by this one
    letters.wait(barrier)  # reported once: the next snapshot covers it and completes
    assert producer.delivered == [b"ok-2", b"bad-1", b"ok-3"]
    assert letters.settled()
