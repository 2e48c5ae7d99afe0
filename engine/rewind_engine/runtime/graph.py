"""Graph building: a validated Dataflow -> subtasks wired by channels and routers.

What must stay true: tasks are listed in topological order (sources first); a step fed
by a key_by gets hash routing (each key reaches the subtask owning its key group);
equal parallelism means forward (subtask i -> i), anything else rebalance.
"""

from __future__ import annotations

from collections.abc import Callable

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
from .routing import ForwardRouter, HashRouter, RebalanceRouter, Router
from .tasks import SnapshotSink, SourceTask, Task, TaskBase


def _operator(
    step: Step,
    index: int,
    parallelism: int,
    *,
    job_id: str,
    attempt: str,
    now_ms: Callable[[], int],
) -> Operator:
    spec = step.spec
    if isinstance(spec, MapSpec):
        return MapOp(spec.fn)
    if isinstance(spec, FilterSpec):
        return FilterOp(spec.fn)
    if isinstance(spec, FlatMapSpec):
        return FlatMapOp(spec.fn)
    if isinstance(spec, KeyBySpec):
        return KeyByOp(spec.fn)
    if isinstance(spec, AggregateSpec):
        return AggregateOp(spec)
    if isinstance(spec, ProcessSpec):
        return ProcessOp(spec, now_ms)
    if isinstance(spec, WindowSpec):
        return WindowOp(spec)
    if isinstance(spec, UnionSpec):
        return Operator()
    if isinstance(spec, SinkSpec):
        ctx = SinkContext(step.uid, index, parallelism, job_id, attempt)
        return SinkOp(spec.sink, ctx)
    raise TypeError(f"no operator for step {step.uid!r} ({step.kind})")


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
) -> list[TaskBase]:
    flow.validate()
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
    for step in flow.steps:
        pd = par[step.uid]
        for up, port in step.inputs:
            pu = par[up.uid]
            hashed = isinstance(up.spec, KeyBySpec)
            forward = not hashed and pu == pd

            def channel(u: int, d: int, up: Step = up, down: Step = step) -> Channel:
                return LocalChannel(channel_capacity, f"{up.uid}[{u}]->{down.uid}[{d}]")

            for u in range(pu):
                router: Router
                if forward:
                    ch = channel(u, u)
                    inputs[step.uid][u].append(ch)
                    router = ForwardRouter([ch])
                else:
                    row = [channel(u, d) for d in range(pd)]
                    for d in range(pd):
                        inputs[step.uid][d].append(row[d])
                    router = (
                        HashRouter(row, max_parallelism)
                        if hashed
                        else RebalanceRouter(row, start=u)
                    )
                routers[up.uid][u].setdefault(port, []).append(router)
    tasks: list[TaskBase] = []
    for step in flow.steps:
        p = par[step.uid]
        for i in range(p):
            if isinstance(step.spec, SourceSpec):
                source = step.spec.source
                ctx = SourceContext(step.uid, i, p, job_id)
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
                op = _operator(step, i, p, job_id=job_id, attempt=attempt, now_ms=now_ms)
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
    return tasks
