"""Graph building: a validated Dataflow -> subtasks wired by channels and routers.

What must stay true: tasks are listed in topological order (sources first); a step fed
by a key_by gets hash routing (each key reaches the subtask owning its key group);
equal parallelism means forward (subtask i -> i), anything else rebalance.

With several workers (placement.py) only this worker's subtasks are built; a channel
whose two ends are on different workers is a remote channel of the exchange
(exchange.py) on the sending side and a local channel fed by the exchange on the
receiving side. Forward edges never cross workers (same index, same worker).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..connectors.base import SinkContext, SourceContext
from ..dataflow import (
    AggregateSpec,
    Dataflow,
    FilterSpec,
    FlatMapSpec,
    KeyBySpec,
    MapSpec,
    ProcessSpec,
    SinkSpec,
    SourceSpec,
    Step,
    UnionSpec,
    WindowSpec,
)
from ..keys import check_parallelism
from ..windows import Count
from .channels import Channel, LocalChannel
from .operators import (
    AggregateOp,
    FilterOp,
    FlatMapOp,
    KeyByOp,
    MapOp,
    Operator,
    ProcessOp,
    SinkOp,
    WindowOp,
)
from .placement import Placement, edge_topic, partition_of
from .routing import ForwardRouter, HashRouter, RebalanceRouter, Router
from .tasks import SnapshotSink, SourceTask, Task, TaskBase


class ExchangeSide(Protocol):
    """What graph building needs of the exchange (exchange.Exchange)."""

    def channel(self, topic: str, partition: int, source: int) -> Channel: ...

    def route(self, topic: str, partition: int, source: int, channel: LocalChannel) -> None: ...

    def bind(self, topic: str, partition: int, task: Task) -> None: ...


def _operator(
    step: Step,
    index: int,
    parallelism: int,
    *,
    job_id: str,
    attempt: str,
    app: str,
    now_ms: Callable[[], int],
) -> Operator:
    spec = step.spec
    if isinstance(spec, MapSpec):
        return MapOp(spec.fn, spec.on_error)
    if isinstance(spec, FilterSpec):
        return FilterOp(spec.fn, spec.on_error)
    if isinstance(spec, FlatMapSpec):
        return FlatMapOp(spec.fn, spec.on_error)
    if isinstance(spec, KeyBySpec):
        return KeyByOp(spec.fn, spec.on_error)
    if isinstance(spec, AggregateSpec):
        return AggregateOp(spec)
    if isinstance(spec, ProcessSpec):
        return ProcessOp(spec, now_ms)
    if isinstance(spec, WindowSpec):
        return WindowOp(spec)
    if isinstance(spec, UnionSpec):
        return Operator()
    if isinstance(spec, SinkSpec):
        ctx = SinkContext(step.uid, index, parallelism, job_id, attempt, app)
        return SinkOp(spec.sink, ctx)
    raise TypeError(f"no operator for step {step.uid!r} ({step.kind})")


def reads_keys_only(spec: object) -> bool:
    """A keyed count without a value function reads only its input's keys and event
    times, never the records: the edge into it carries the keys alone (HashRouter's
    `keys_only`), which spares the exchange encoding and decoding every record."""
    return isinstance(spec, AggregateSpec) and isinstance(spec.agg, Count) and spec.value is None


def build_tasks(
    flow: Dataflow,
    *,
    parallelism: int,
    max_parallelism: int,
    channel_capacity: int,
    batch_size: int,
    job_id: str,
    attempt: str,
    now_ms: Callable[[], int],
    snapshots: SnapshotSink,
    app: str | None = None,
    placement: Placement | None = None,
    exchange: ExchangeSide | None = None,
    topics: dict[str, int] | None = None,
) -> list[TaskBase]:
    """The subtasks this worker runs. With several workers, `exchange` carries the edges
    between workers and `topics` receives the exchange topics used (name -> partitions)."""
    flow.validate()
    app = app or flow.name
    place = placement or Placement()
    if place.distributed and exchange is None:
        raise ValueError("several workers need an exchange")
    par = {s.uid: s.parallelism or parallelism for s in flow.steps}
    for uid, p in par.items():
        try:
            check_parallelism(p, max_parallelism)
        except ValueError as exc:
            raise ValueError(f"step {uid!r}: {exc}") from None
    # routers[uid][subtask][port] and inputs[uid][subtask]
    routers: dict[str, list[dict[str, list[Router]]]] = {
        s.uid: [{} for _ in range(par[s.uid])] for s in flow.steps
    }
    inputs: dict[str, list[list[Channel]]] = {
        s.uid: [[] for _ in range(par[s.uid])] for s in flow.steps
    }
    binds: list[tuple[str, int, str, int]] = []
    for step in flow.steps:
        pd = par[step.uid]
        for j, (up, port) in enumerate(step.inputs):
            pu = par[up.uid]
            # A key_by's errors port carries failed records, not keyed ones.
            hashed = isinstance(up.spec, KeyBySpec) and port == "main"
            keys_only = hashed and reads_keys_only(step.spec)
            forward = not hashed and pu == pd
            topic = edge_topic(job_id, up.uid, step.uid, j)

            def channel(u: int, d: int, up: Step = up, down: Step = step) -> LocalChannel:
                return LocalChannel(channel_capacity, f"{up.uid}[{u}]->{down.uid}[{d}]")

            for u in range(pu):
                here = place.owns(u, pu)
                router: Router
                if forward:
                    if not here:
                        continue
                    ch = channel(u, u)
                    inputs[step.uid][u].append(ch)
                    router = ForwardRouter([ch])
                else:
                    row: list[Channel] = []
                    for d in range(pd):
                        there = place.owns(d, pd)
                        if here and there:
                            local = channel(u, d)
                            inputs[step.uid][d].append(local)
                            row.append(local)
                            continue
                        assert exchange is not None
                        partition = partition_of(d, pd, max_parallelism)
                        if topics is not None:
                            topics[topic] = max_parallelism
                        if here:
                            row.append(exchange.channel(topic, partition, u))
                        elif there:
                            local = channel(u, d)
                            inputs[step.uid][d].append(local)
                            exchange.route(topic, partition, u, local)
                            binds.append((topic, partition, step.uid, d))
                    if not here:
                        continue
                    router = (
                        HashRouter(row, max_parallelism, keys_only=keys_only)
                        if hashed
                        else RebalanceRouter(row, start=u)
                    )
                routers[up.uid][u].setdefault(port, []).append(router)
    tasks: list[TaskBase] = []
    for step in flow.steps:
        p = par[step.uid]
        for i in place.subtasks(p):
            if isinstance(step.spec, SourceSpec):
                source = step.spec.source
                ctx = SourceContext(step.uid, i, p, job_id, app)
                tasks.append(
                    SourceTask(
                        step.uid,
                        i,
                        p,
                        source=source,
                        ctx=ctx,
                        watermarks=step.spec.watermarks,
                        bounded=source.bounded(),
                        batch_size=batch_size,
                        outputs=routers[step.uid][i],
                        snapshots=snapshots,
                        now_ms=now_ms,
                    )
                )
            else:
                op = _operator(step, i, p, job_id=job_id, attempt=attempt, app=app, now_ms=now_ms)
                tasks.append(
                    Task(
                        step.uid,
                        i,
                        p,
                        operator=op,
                        inputs=inputs[step.uid][i],
                        outputs=routers[step.uid][i],
                        snapshots=snapshots,
                    )
                )
    if exchange is not None:
        by_name = {(t.uid, t.index): t for t in tasks if isinstance(t, Task)}
        for topic, partition, uid, d in binds:
            exchange.bind(topic, partition, by_name[(uid, d)])
    return tasks
