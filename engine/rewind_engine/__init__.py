"""Rewind streaming engine: dataflows with managed keyed state and savepoints.

The public API is the dataflow API below; everything else (runtime, snapshots, control
API, CLI) is reached through `rewind run` or its own module.
"""

from .clock import Clock, ManualClock, SystemClock
from .connectors.base import (
    Sink,
    SinkContext,
    SinkWriter,
    Source,
    SourceBatch,
    SourceContext,
    SplitReader,
)
from .connectors.files import FileSink, FileSource, StdoutSink
from .connectors.generator import GeneratorSource, skewed, uniform
from .connectors.memory import CollectionSource, CollectSink
from .dataflow import Dataflow, FlowError, KeyedStream, Stream, WindowedStream
from .eventtime import MAX_TS, MIN_TS, BoundedOutOfOrderness
from .state import KeyedContext, KeyedProcess, ListState, MapState, ValueState
from .windows import Aggregation, SessionWindows, SlidingWindows, TumblingWindows

__all__ = [
    "MAX_TS",
    "MIN_TS",
    "Aggregation",
    "BoundedOutOfOrderness",
    "Clock",
    "CollectSink",
    "CollectionSource",
    "Dataflow",
    "FileSink",
    "FileSource",
    "FlowError",
    "GeneratorSource",
    "KeyedContext",
    "KeyedProcess",
    "KeyedStream",
    "ListState",
    "ManualClock",
    "MapState",
    "SessionWindows",
    "Sink",
    "SinkContext",
    "SinkWriter",
    "SlidingWindows",
    "Source",
    "SourceBatch",
    "SourceContext",
    "SplitReader",
    "StdoutSink",
    "Stream",
    "SystemClock",
    "TumblingWindows",
    "ValueState",
    "WindowedStream",
    "skewed",
    "uniform",
]
