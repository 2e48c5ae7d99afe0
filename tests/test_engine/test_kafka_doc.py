"""docs/kafka.md is checked against the code, without a broker.

Its Python blocks are written to the file their first line names (`# file: NAME.py`) and
loaded as `rewind run` loads a flow, with every Kafka client class replaced by one that
fails the test: building a flow must never connect. What they build is compared with
what the text says (step uids, topics, delivery, the derived group and transactional
ids); the parameter tables must list exactly the constructors' parameters with their
real defaults; the `rewind` lines of its shell blocks must parse with no option left
over; the error and status messages it quotes must be what the code says."""

from __future__ import annotations

import ast
import inspect
import json
import re
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest
import rewind_engine.connectors.kafka.committer as kafka_committer
import rewind_engine.connectors.kafka.config as kafka_config
import rewind_engine.connectors.kafka.sink as kafka_sink
import rewind_engine.connectors.kafka.source as kafka_source
from confluent_kafka import KafkaError, KafkaException
from rewind_engine import BoundedOutOfOrderness, Dataflow, SinkContext
from rewind_engine.cli import build_parser
from rewind_engine.connectors.kafka import (
    KafkaSink,
    KafkaSource,
    KafkaUnavailableError,
    RecordDecodeError,
    RecordEncodeError,
)
from rewind_engine.dataflow import SinkSpec, SourceSpec, Step
from rewind_engine.flowload import load_flow
from rewind_engine.runtime.job import Job
from rewind_engine.runtime.operators import SinkOp
from rewind_engine.runtime.tasks import SourceTask, Task
from rewind_engine.settings import Settings, SnapshotSettings

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs/kafka.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
USERNAME, PASSWORD = "doc-user", "doc-secret"


def doc() -> str:
    return DOC.read_text()


def blocks(lang: str) -> list[str]:
    return [body for found, body in BLOCK.findall(doc()) if found == lang]


def _connects(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError(f"a Kafka client was created while building a flow: {args!r:.200}")


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Kafka client may be made, no address is known, the doc's credentials are set."""
    for module in (kafka_source, kafka_sink):
        for name in ("AdminClient", "Consumer", "Producer"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, _connects)
    monkeypatch.delenv("REWIND_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("KAFKA_USERNAME", USERNAME)
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)


@pytest.fixture
def flows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_broker: None
) -> Iterator[dict[str, Dataflow]]:
    """Every Python block of the doc, loaded as `rewind run FILE` loads it: file -> flow."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_flow prepends the file's folder
    folder = tmp_path / "doc"
    folder.mkdir()
    loaded: dict[str, Dataflow] = {}
    modules: list[str] = []
    try:
        for number, body in enumerate(blocks("python"), 1):
            first, _, _ = body.partition("\n")
            match = re.fullmatch(r"# file: (\S+\.py)", first)
            assert match, f"python block {number} does not name its file on line 1"
            assert match[1] not in loaded, f"two python blocks write {match[1]}"
            path = folder / match[1]
            path.write_text(body)
            modules.append(f"rewind_flow_{path.stem}")
            loaded[match[1]] = load_flow(str(path), [])
        yield loaded
    finally:
        for name in modules:
            sys.modules.pop(name, None)


def source_of(step: Step) -> KafkaSource:
    assert isinstance(step.spec, SourceSpec), step.uid
    assert isinstance(step.spec.source, KafkaSource), step.uid
    return step.spec.source


def sink_of(step: Step) -> KafkaSink:
    assert isinstance(step.spec, SinkSpec), step.uid
    assert isinstance(step.spec.sink, KafkaSink), step.uid
    return step.spec.sink


def rewind_lines() -> list[list[str]]:
    """The `rewind ...` commands of the shell blocks, as argument lists."""
    out = []
    for body in blocks("sh"):
        for line in body.replace("\\\n", " ").splitlines():
            if line.startswith("rewind "):
                out.append(shlex.split(line)[1:])
    return out


def the_run_command() -> Any:
    runs = [args for args in rewind_lines() if args[0] == "run"]
    assert len(runs) == 1, runs
    return build_parser().parse_args(runs[0])


def test_blocks_are_python_sh_or_text_and_name_their_files() -> None:
    found = BLOCK.findall(doc())
    assert found and {lang for lang, _ in found} <= {"python", "sh", "text"}
    names = [re.match(r"# file: (\S+)\n", body) for body in blocks("python")]
    assert [m[1] for m in names if m] == ["page_counts.py", "clicks_per_minute.py"]
    assert "../shared" not in doc()


def test_the_topic_to_topic_flow_is_what_the_text_says(flows: dict[str, Dataflow]) -> None:
    f = flows["page_counts.py"]
    assert f.name == "page-counts"
    assert [s.uid for s in f.steps] == ["page-views", "by-page", "views-per-page", "counts-out"]
    source = source_of(f.steps[0])
    assert (source.topics, source.pattern, source.start) == (("page-views",), None, "earliest")
    assert source.emit == "value" and source.on_error == "fail"
    # "This source has no `stop_at`, so it never ends"; with one it is bounded.
    assert (source.stop_at, source.bounded()) == (None, False)
    assert KafkaSource("page-views", stop_at="end").bounded()
    sink = sink_of(f.steps[-1])
    assert (sink.topic, sink.delivery) == ("page-counts", "exactly-once")
    # "the key is the page as UTF-8 text, the value is JSON, e.g. {...}"
    [encoded] = sink.encode([("/home", 3)])
    assert encoded == [None, -1, b"/home", b'{"page":"/home","views":3}', None]
    assert f"`{encoded[3].decode()}`" in doc()


def test_the_run_command_parses_and_says_what_the_text_says(flows: dict[str, Dataflow]) -> None:
    for args in rewind_lines():
        ns = build_parser().parse_args(args)  # exits (fails) on an unknown subcommand
        assert getattr(ns, "flow_args", []) == [], f"options `rewind` does not know: {args}"
    run = the_run_command()
    assert run.flow in flows
    assert run.checkpoint_interval == 10 and "every 10 seconds here" in doc()
    assert f"export {kafka_config.BOOTSTRAP_ENV}=" in doc()


def ids(
    flow: Dataflow, tmp_path: Path, app: str | None, parallelism: int
) -> tuple[set[str], list[str]]:
    """(source groups, sink writer ids) of the job that `rewind run` would build."""
    settings = Settings(app=app, snapshots=SnapshotSettings(location=f"file://{tmp_path}/snaps"))
    settings.parallelism.parallelism = parallelism
    job = Job(flow, settings)
    groups = {
        t.source.monitoring_group(t.ctx)
        for t in job.tasks
        if isinstance(t, SourceTask) and isinstance(t.source, KafkaSource)
    }
    writers = [
        t.operator.sink.writer_id(t.operator.ctx)
        for t in job.tasks
        if isinstance(t, Task) and isinstance(t.operator, SinkOp)
        if isinstance(t.operator.sink, KafkaSink)
    ]
    return groups, writers


def test_group_and_transactional_ids_are_the_ones_the_text_names(
    flows: dict[str, Dataflow], tmp_path: Path
) -> None:
    f = flows["page_counts.py"]
    app = the_run_command().app
    assert app == "shop/page-counts"
    groups, writers = ids(f, tmp_path, app, 2)
    assert groups == {"rewind.shop/page-counts.page-views"}
    assert writers == [
        "rewind-shop/page-counts.counts-out.0",
        "rewind-shop/page-counts.counts-out.1",
    ]
    groups, writers = ids(f, tmp_path, None, 1)  # no --app: the flow's name
    assert groups == {"rewind.page-counts.page-views"}
    assert writers == ["rewind-page-counts.counts-out.0"]
    text = doc()
    for name in [
        "rewind.shop/page-counts.page-views",
        "rewind.page-counts.page-views",
        "rewind-shop/page-counts.counts-out.0",
        "rewind-shop/page-counts.counts-out.1",
        "rewind-page-counts.",
    ]:
        assert f"`{name}`" in text, name


def test_the_secure_window_flow_is_what_the_text_says(
    flows: dict[str, Dataflow], tmp_path: Path
) -> None:
    f = flows["clicks_per_minute.py"]
    uids = [s.uid for s in f.steps]
    assert uids == ["clicks", "by-topic", "clicks-per-minute", "per-minute-out"]
    first = f.steps[0]
    source = source_of(first)
    assert source.topics == () and source.pattern is not None
    assert source.pattern.pattern == "clicks-[a-z]+"
    assert (source.emit, source.start, source.on_error) == ("record", "latest", "dead-letter")
    assert source.dead_letter_topic == "dead-letter.clicks"
    assert isinstance(first.spec, SourceSpec)
    watermarks = first.spec.watermarks
    assert isinstance(watermarks, BoundedOutOfOrderness)
    assert watermarks.timestamp is None  # the Kafka timestamps are the event time
    assert watermarks.idle_timeout_ms == 60_000
    sink = sink_of(f.steps[-1])
    assert (sink.topic, sink.delivery) == ("clicks.per-minute", "at-least-once")
    # "The output topic and the dead-letter topic do not match the pattern"
    assert source.pattern.fullmatch("clicks-eu") is not None
    assert source.pattern.fullmatch(sink.topic) is None
    assert source.pattern.fullmatch("dead-letter.clicks") is None
    # The security settings reach librdkafka, and cannot take the group away.
    for conf in (source.config, sink.config):
        assert conf["security.protocol"] == "SASL_SSL"
        assert (conf["sasl.username"], conf["sasl.password"]) == (USERNAME, PASSWORD)
    consumer = kafka_config.consumer_config("kafka-1:9092", "rewind.x.clicks", source.config)
    assert (
        consumer["sasl.mechanism"] == "SCRAM-SHA-512" and consumer["group.id"] == "rewind.x.clicks"
    )
    admin = kafka_config.admin_config("kafka-1:9092", source.config)
    assert admin["sasl.password"] == PASSWORD
    # "Each window has its own key (topic and minute)"
    window = {"key": "clicks-eu", "start": 1_700_000_040_000, "end": 1_700_000_100_000, "value": 12}
    [(topic, partition, key, value, headers)] = sink.encode([window])
    assert (topic, partition, key) == (None, -1, b"clicks-eu@1700000040000")
    assert json.loads(value) == {"topic": "clicks-eu", "minute": 1_700_000_040_000, "clicks": 12}
    assert headers == [["window-end", b"1700000100000"]]
    ids(f, tmp_path, None, 1)  # the job builds: the window has event time


def test_building_needs_no_address_but_starting_names_it(flows: dict[str, Dataflow]) -> None:
    # `flows` built both flows with every Kafka client class failing and no address set.
    f = flows["page_counts.py"]
    with pytest.raises(ValueError, match="REWIND_KAFKA_BOOTSTRAP"):
        source_of(f.steps[0]).discover_splits()
    with pytest.raises(ValueError, match="REWIND_KAFKA_BOOTSTRAP"):
        sink_of(f.steps[-1]).open(SinkContext("counts-out", 0, 1, "job"), [])


def table(section: str) -> dict[str, str]:
    """Parameter -> default cell of the table in the doc's section `## N. `section``."""
    text = doc()
    heading = re.search(rf"^## \d+\. `{section}`$", text, re.M)
    assert heading, f"no section for {section}"
    end = text.find("\n## ", heading.end())
    part = text[heading.end() : end if end >= 0 else len(text)]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", part, re.M)
    assert rows, f"no parameter table in the {section} section"
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), names
    return dict(rows)


@pytest.mark.parametrize("cls", [KafkaSource, KafkaSink])
def test_parameter_tables_are_the_constructors(cls: type) -> None:
    documented = table(cls.__name__)
    params = inspect.signature(cls).parameters
    assert set(documented) == set(params), (
        f"{cls.__name__}: documented but not a parameter: {sorted(set(documented) - set(params))}; "
        f"a parameter not documented: {sorted(set(params) - set(documented))}"
    )
    for name, cell in documented.items():
        default = params[name].default
        if cell == "required":
            assert default is inspect.Parameter.empty, name
            continue
        literal = re.fullmatch(r"`([^`]+)`", cell)
        assert literal, f"{name}: the default {cell!r} is not `a Python literal` or required"
        value = ast.literal_eval(literal[1])
        assert (type(value), value) == (type(default), default), f"{cls.__name__}({name}=...)"


def test_every_keyword_the_text_names_is_a_parameter() -> None:
    known = {
        # librdkafka properties the connector sets, e.g. `partitioner=murmur2_random`
        *kafka_config.consumer_config("x", "g", {}),
        *kafka_config.producer_config("x", {}),
        *inspect.signature(KafkaSource).parameters,
        *inspect.signature(KafkaSink).parameters,
        *inspect.signature(BoundedOutOfOrderness).parameters,
        *inspect.signature(Dataflow.source).parameters,
    }
    spans = re.findall(r"`([^`\n]+)`", BLOCK.sub("", doc()))
    named: list[str] = []
    for span in spans:
        call = re.fullmatch(r"(KafkaSource|KafkaSink)\((.*)\)", span)
        if call:
            cls = {"KafkaSource": KafkaSource, "KafkaSink": KafkaSink}[call[1]]
            params = inspect.signature(cls).parameters
            for keyword in re.findall(r"(\w+)=", call[2]):
                assert keyword in params, f"{span}: {call[1]} has no {keyword}"
        elif keyword := re.match(r"([a-z_]+)=", span):
            named.append(keyword[1])
        elif re.fullmatch(r"[a-z]+(_[a-z]+)+", span):
            named.append(span)
    assert named, "the text names no parameter in backticks"
    unknown = sorted(set(named) - known)
    assert not unknown, f"the text names parameters that do not exist: {unknown}"


def pattern_of(quoted: str) -> str:
    """A quoted message as a regular expression: "..." stands for anything."""
    return ".*".join(re.escape(part) for part in quoted.split("..."))


def test_the_quoted_error_messages_are_the_codes(
    monkeypatch: pytest.MonkeyPatch, flows: dict[str, Dataflow]
) -> None:
    decode, encode = (b.strip() for b in blocks("text"))
    cause = json.JSONDecodeError("Expecting property name enclosed in double quotes", "{x", 1)
    error = RecordDecodeError("page-views", 3, 1234, "value", cause)
    assert re.fullmatch(pattern_of(decode), str(error)), (decode, str(error))
    with pytest.raises(RecordEncodeError) as caught:
        sink_of(flows["page_counts.py"].steps[-1]).encode([5])  # 5[0]: TypeError
    assert re.fullmatch(pattern_of(encode), str(caught.value)), (encode, str(caught.value))

    # The start gives up after connect_timeout_s (the clock is faked: no waiting).
    class Unreachable:
        def __init__(self, conf: dict[str, Any]) -> None:
            pass

        def list_topics(self, timeout: float) -> NoReturn:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Connection refused"))

    clock = iter([0.0, 1000.0])
    monkeypatch.setattr(kafka_source, "AdminClient", Unreachable)
    monkeypatch.setattr(kafka_config, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    quoted = re.search(r"`(listing Kafka partitions: [^`]*)`", doc())
    assert quoted
    source = KafkaSource("page-views", bootstrap_servers="kafka-1:9092")
    with pytest.raises(KafkaUnavailableError) as unavailable:
        source.discover_splits()
    assert re.fullmatch(pattern_of(re.sub(r"\s+", " ", quoted[1])), str(unavailable.value))


def test_the_quoted_status_reason_is_the_exactly_once_writers(
    monkeypatch: pytest.MonkeyPatch, flows: dict[str, Dataflow]
) -> None:
    f = flows["page_counts.py"]
    step = f.steps[-1]
    quoted = re.search(r"`(([\w-]+)\[0\]: committing transaction to Kafka[^`]*)`", doc())
    assert quoted and quoted[2] == step.uid
    gate = threading.Event()

    def commit(self: Any, checkpoint_id: int) -> None:  # a broker that does not answer
        gate.wait(10)

    monkeypatch.setattr(kafka_sink.ExactlyOnceWriter, "_commit_up_to", commit)
    monkeypatch.setattr(kafka_committer, "SLOW_AFTER_S", 0.0)
    ctx = SinkContext(step.uid, 0, 1, "job", app=f.name)
    writer = kafka_sink.ExactlyOnceWriter(sink_of(step), ctx, "kafka-1:9092", [])
    try:
        writer.write([("/home", 1)])
        writer.commit(7, writer.pre_commit(7))
        deadline = time.monotonic() + 10
        while (why := writer.committing()) is None or "since" not in why:
            assert time.monotonic() < deadline, why
            time.sleep(0.01)
    finally:
        gate.set()
        writer.wait_committed(10)
        writer.close()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$"
    assert re.sub(stamp, "T", quoted[1]) == re.sub(stamp, "T", f"{step.uid}[0]: {why}")
