"""The dataflow API: build a DAG of steps, each with a mandatory, unique uid.

What flows through here: user code calls `Dataflow.source(...)` and chains `Stream`
methods (map, filter, flat_map, key_by, count/sum/min/max/reduce, process, window,
union, sink). Each call appends a `Step` (uid, kind, spec, inputs, parallelism) and
returns the stream of its output. Nothing runs here: the runtime (`rewind_engine.runtime`)
turns a validated flow into subtasks.

What must stay true:
- every step has a uid that matches `UID_PATTERN`, unique in the flow; a missing,
  malformed or duplicate uid raises `FlowError` before anything runs. State is matched
  to steps by uid on restore, so uids are the flow's stable identity across versions.
- `Dataflow.validate()` reports every problem it finds at once, with the line of the
  user's code that created the offending step.
"""

from __future__ import annotations

import operator
import re
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .connectors.base import Sink, Source
from .eventtime import BoundedOutOfOrderness
from .state import KeyedProcess, StatefulMap
from .windows import Aggregation, WindowAssigner, aggregation

UID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""uids name snapshot files: letters, digits, '_', '.', '-'; at most 128 characters."""

Emit = Literal["each", "batch"]
"""When a keyed aggregation emits: "each" = one (key, value) per input record (exact and
deterministic; the default), "batch" = the latest (key, value) per key per batch (fewer
records; how many depends on batching, so not reproducible record for record)."""

Late = Literal["drop", "side"]

OnError = Literal["fail", "side"]
"""What a stateless step does with a record its function raises on: "fail" the job (with
the step and the record named; the default), or "side": send
{"step", "error", "record"} to the step's `.errors` stream and go on (a dead letter)."""

ERRORS_PORT = "errors"
"""The output port of the records a step with on_error="side" could not process."""


class FlowError(ValueError):
    """A dataflow is malformed (missing/duplicate uid, bad wiring); raised before running."""


@dataclass(frozen=True)
class SourceSpec:
    source: Source
    watermarks: BoundedOutOfOrderness | None


@dataclass(frozen=True)
class MapSpec:
    fn: Callable[[Any], Any]
    on_error: OnError = "fail"


@dataclass(frozen=True)
class FilterSpec:
    fn: Callable[[Any], bool]
    on_error: OnError = "fail"


@dataclass(frozen=True)
class FlatMapSpec:
    fn: Callable[[Any], Iterable[Any]]
    on_error: OnError = "fail"


@dataclass(frozen=True)
class KeyBySpec:
    fn: Callable[[Any], Any]
    on_error: OnError = "fail"


@dataclass(frozen=True)
class AggregateSpec:
    agg: Aggregation
    value: Callable[[Any], Any] | None
    emit: Emit


@dataclass(frozen=True)
class ProcessSpec:
    fn: Any
    """A KeyedProcess instance (see rewind_engine.state)."""


@dataclass(frozen=True)
class WindowSpec:
    assigner: WindowAssigner
    agg: Aggregation
    value: Callable[[Any], Any] | None
    allowed_lateness_ms: int
    late: Late


@dataclass(frozen=True)
class UnionSpec:
    pass


@dataclass(frozen=True)
class SinkSpec:
    sink: Sink


StepSpec = (
    SourceSpec
    | MapSpec
    | FilterSpec
    | FlatMapSpec
    | KeyBySpec
    | AggregateSpec
    | ProcessSpec
    | WindowSpec
    | UnionSpec
    | SinkSpec
)

KEYED_SPECS = (AggregateSpec, ProcessSpec, WindowSpec)
"""Steps that keep state per key and so must follow a key_by."""


@dataclass(eq=False)
class Step:
    """One node of the DAG."""

    uid: str
    spec: StepSpec
    inputs: list[tuple[Step, str]]
    """(upstream step, output port) pairs; ports are "main", "late" (window side output)
    or "errors" (records a step with on_error="side" could not process)."""
    parallelism: int | None
    defined_at: str
    """file:line of the user code that created the step (for error messages)."""
    consumers: list[Step] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return type(self.spec).__name__.removesuffix("Spec").lower()


def _caller() -> str:
    """file:line of the first frame outside this module."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        if frame.filename != __file__:
            return f"{frame.filename}:{frame.lineno}"
    return "?"


def _field_getter(key: Callable[[Any], Any] | str) -> Callable[[Any], Any]:
    return operator.itemgetter(key) if isinstance(key, str) else key


class Dataflow:
    """A named DAG of steps. Build it, then hand it to `rewind run` or `Job`."""

    def __init__(self, name: str) -> None:
        if not name:
            raise FlowError("a Dataflow needs a name")
        self.name = name
        self.steps: list[Step] = []
        self._by_uid: dict[str, Step] = {}

    def _add(
        self,
        uid: str,
        spec: StepSpec,
        inputs: list[tuple[Step, str]],
        parallelism: int | None,
    ) -> Step:
        where = _caller()
        if not isinstance(uid, str) or not uid:
            raise FlowError(f"{where}: every step needs a uid (a non-empty string), got {uid!r}")
        if not UID_PATTERN.match(uid):
            raise FlowError(
                f"{where}: uid {uid!r} is not valid: use letters, digits, '_', '.', '-'"
                " (at most 128 characters, starting with a letter or digit)"
            )
        if uid in self._by_uid:
            raise FlowError(
                f"{where}: duplicate uid {uid!r}, already used by the step defined at"
                f" {self._by_uid[uid].defined_at}"
            )
        if parallelism is not None and (not isinstance(parallelism, int) or parallelism < 1):
            raise FlowError(f"{where}: step {uid!r}: parallelism must be an int >= 1")
        step = Step(uid, spec, inputs, parallelism, where)
        for upstream, _port in inputs:
            upstream.consumers.append(step)
        self.steps.append(step)
        self._by_uid[uid] = step
        return step

    def step(self, uid: str) -> Step:
        """The step with this uid (KeyError if none): its spec, inputs and consumers."""
        return self._by_uid[uid]

    def source(
        self,
        uid: str,
        source: Source,
        *,
        watermarks: BoundedOutOfOrderness | None = None,
        parallelism: int | None = None,
    ) -> Stream:
        """A source step; `watermarks` gives records an event time (needed by windows)."""
        if not isinstance(source, Source):
            raise FlowError(f"step {uid!r}: source must be a rewind_engine Source, got {source!r}")
        return Stream(self, self._add(uid, SourceSpec(source, watermarks), [], parallelism))

    def validate(self) -> None:
        """Raise FlowError listing every problem: no source, windows without event time,
        keyed steps without key_by."""
        problems: list[str] = []
        if not any(isinstance(s.spec, SourceSpec) for s in self.steps):
            problems.append("the flow has no source")
        for step in self.steps:
            if isinstance(step.spec, WindowSpec) and not _has_event_time(step):
                problems.append(
                    f"{step.defined_at}: window {step.uid!r} needs event time: give its"
                    " source watermarks=BoundedOutOfOrderness(...)"
                )
            if isinstance(step.spec, KEYED_SPECS) and not all(
                isinstance(up.spec, KeyBySpec) and port == "main" for up, port in step.inputs
            ):
                problems.append(
                    f"{step.defined_at}: step {step.uid!r} keeps state per key and must"
                    " directly follow a key_by"
                )
        if problems:
            raise FlowError("invalid dataflow " + repr(self.name) + ":\n  " + "\n  ".join(problems))


def _on_error(uid: str, on_error: OnError) -> OnError:
    if on_error not in ("fail", "side"):
        raise FlowError(f"step {uid!r}: on_error must be 'fail' or 'side', got {on_error!r}")
    return on_error


def _has_event_time(step: Step) -> bool:
    """True if every path to a source passes a source with watermarks."""
    if isinstance(step.spec, SourceSpec):
        return step.spec.watermarks is not None
    return bool(step.inputs) and all(_has_event_time(up) for up, _ in step.inputs)


class Stream:
    """The output of a step; methods add downstream steps."""

    def __init__(self, flow: Dataflow, step: Step, port: str = "main") -> None:
        self.flow = flow
        self.step = step
        self.port = port

    def _then(self, uid: str, spec: StepSpec, parallelism: int | None) -> Step:
        return self.flow._add(uid, spec, [(self.step, self.port)], parallelism)

    def map(
        self,
        uid: str,
        fn: Callable[[Any], Any],
        *,
        on_error: OnError = "fail",
        parallelism: int | None = None,
    ) -> Stream:
        """One output per record: fn(record). on_error="side" sends the records fn
        raises on to `.errors` instead of failing the job (the default, "fail")."""
        spec = MapSpec(fn, _on_error(uid, on_error))
        return Stream(self.flow, self._then(uid, spec, parallelism))

    def filter(
        self,
        uid: str,
        fn: Callable[[Any], bool],
        *,
        on_error: OnError = "fail",
        parallelism: int | None = None,
    ) -> Stream:
        """Keep records for which fn(record) is true. on_error="side" sends the records
        fn raises on to `.errors` instead of failing the job (the default, "fail")."""
        spec = FilterSpec(fn, _on_error(uid, on_error))
        return Stream(self.flow, self._then(uid, spec, parallelism))

    def flat_map(
        self,
        uid: str,
        fn: Callable[[Any], Iterable[Any]],
        *,
        on_error: OnError = "fail",
        parallelism: int | None = None,
    ) -> Stream:
        """Zero or more outputs per record: every item of fn(record). on_error="side"
        sends the records fn raises on to `.errors` (a record whose items fail part way
        yields none of them) instead of failing the job (the default, "fail")."""
        spec = FlatMapSpec(fn, _on_error(uid, on_error))
        return Stream(self.flow, self._then(uid, spec, parallelism))

    def key_by(
        self,
        uid: str,
        key: Callable[[Any], Any] | str,
        *,
        on_error: OnError = "fail",
        parallelism: int | None = None,
    ) -> KeyedStream:
        """Partition by key (a function, or a field name of dict records). Keys must be
        str, int, float, bytes, bool, None or tuples of those (they are hashed stably).
        on_error="side" sends the records the key function raises on to `.errors`
        instead of failing the job (the default, "fail")."""
        spec = KeyBySpec(_field_getter(key), _on_error(uid, on_error))
        return KeyedStream(self.flow, self._then(uid, spec, parallelism))

    @property
    def errors(self) -> Stream:
        """The records this step's function raised on, as {"step", "error", "record"}
        (event time kept), for a step made with on_error="side"."""
        spec = self.step.spec
        if getattr(spec, "on_error", None) != "side":
            raise FlowError(f"step {self.step.uid!r}: pass on_error='side' to use .errors")
        return Stream(self.flow, self.step, ERRORS_PORT)

    def union(self, uid: str, *others: Stream, parallelism: int | None = None) -> Stream:
        """Merge this stream with others (checkpoint barriers are aligned across them)."""
        inputs = [(self.step, self.port)] + [(o.step, o.port) for o in others]
        for other in others:
            if other.flow is not self.flow:
                raise FlowError(f"step {uid!r}: cannot union streams of different dataflows")
        return Stream(self.flow, self.flow._add(uid, UnionSpec(), inputs, parallelism))

    def sink(self, uid: str, sink: Sink, *, parallelism: int | None = None) -> None:
        """Write the stream to a sink."""
        if not isinstance(sink, Sink):
            raise FlowError(f"step {uid!r}: sink must be a rewind_engine Sink, got {sink!r}")
        self._then(uid, SinkSpec(sink), parallelism)


class KeyedStream(Stream):
    """A stream partitioned by key; keyed steps keep state per key."""

    def _aggregate(
        self,
        uid: str,
        agg: Aggregation,
        value: Callable[[Any], Any] | str | None,
        emit: Emit,
        parallelism: int | None,
    ) -> Stream:
        if emit not in ("each", "batch"):
            raise FlowError(f"step {uid!r}: emit must be 'each' or 'batch', got {emit!r}")
        getter = None if value is None else _field_getter(value)
        return Stream(self.flow, self._then(uid, AggregateSpec(agg, getter, emit), parallelism))

    def count(self, uid: str, *, emit: Emit = "each", parallelism: int | None = None) -> Stream:
        """Running count per key; emits (key, count)."""
        return self._aggregate(uid, aggregation("count"), None, emit, parallelism)

    def sum(
        self,
        uid: str,
        value: Callable[[Any], Any] | str,
        *,
        emit: Emit = "each",
        parallelism: int | None = None,
    ) -> Stream:
        """Running sum of value(record) per key; emits (key, sum)."""
        return self._aggregate(uid, aggregation("sum"), value, emit, parallelism)

    def min(
        self,
        uid: str,
        value: Callable[[Any], Any] | str,
        *,
        emit: Emit = "each",
        parallelism: int | None = None,
    ) -> Stream:
        """Running minimum of value(record) per key; emits (key, min)."""
        return self._aggregate(uid, aggregation("min"), value, emit, parallelism)

    def max(
        self,
        uid: str,
        value: Callable[[Any], Any] | str,
        *,
        emit: Emit = "each",
        parallelism: int | None = None,
    ) -> Stream:
        """Running maximum of value(record) per key; emits (key, max)."""
        return self._aggregate(uid, aggregation("max"), value, emit, parallelism)

    def reduce(
        self,
        uid: str,
        fn: Callable[[Any, Any], Any],
        *,
        value: Callable[[Any], Any] | str | None = None,
        emit: Emit = "each",
        parallelism: int | None = None,
    ) -> Stream:
        """Running fn(acc, value) per key (values default to the records); emits (key, acc)."""
        return self._aggregate(uid, aggregation(fn), value, emit, parallelism)

    def process(self, uid: str, fn: Any, *, parallelism: int | None = None) -> Stream:
        """A keyed stateful step: a `KeyedProcess` with value/map/list state and timers."""
        if not isinstance(fn, KeyedProcess):
            raise FlowError(f"step {uid!r}: process() takes a KeyedProcess, got {fn!r}")
        return Stream(self.flow, self._then(uid, ProcessSpec(fn), parallelism))

    def stateful_map(
        self, uid: str, fn: Callable[[Any, Any], tuple[Any, Any]], *, parallelism: int | None = None
    ) -> Stream:
        """fn(state, record) -> (new state, output) per key; state starts as None and a new
        state of None deletes it. Emits the outputs (None outputs are dropped)."""
        return Stream(self.flow, self._then(uid, ProcessSpec(StatefulMap(fn)), parallelism))

    def window(
        self,
        uid: str,
        assigner: WindowAssigner,
        agg: str | Aggregation | Callable[[Any, Any], Any] = "count",
        *,
        value: Callable[[Any], Any] | str | None = None,
        allowed_lateness_ms: int = 0,
        late: Late = "drop",
        parallelism: int | None = None,
    ) -> WindowedStream:
        """Event-time windows per key. Emits {"key", "start", "end", "value"} when the
        watermark passes a window's end, and again for each late record within
        `allowed_lateness_ms`. Later records are dropped, or with late="side" go to
        `.late` (a stream of the records themselves)."""
        if late not in ("drop", "side"):
            raise FlowError(f"step {uid!r}: late must be 'drop' or 'side', got {late!r}")
        if allowed_lateness_ms < 0:
            raise FlowError(f"step {uid!r}: allowed_lateness_ms must be >= 0")
        getter = None if value is None else _field_getter(value)
        spec = WindowSpec(assigner, aggregation(agg), getter, allowed_lateness_ms, late)
        return WindowedStream(self.flow, self._then(uid, spec, parallelism))


class WindowedStream(Stream):
    """The results of a window step; `.late` is its side output of late records."""

    @property
    def late(self) -> Stream:
        """The records that came too late for their window (window made with
        late="side"), unchanged, with their event time."""
        spec = self.step.spec
        if not isinstance(spec, WindowSpec) or spec.late != "side":
            raise FlowError(f"window {self.step.uid!r}: pass late='side' to use .late")
        return Stream(self.flow, self.step, "late")
