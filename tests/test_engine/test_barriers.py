"""Aligned checkpoint barriers at a step with several inputs (Chandy-Lamport)."""

from __future__ import annotations

from typing import Any

from rewind_engine.dataflow import AggregateSpec
from rewind_engine.runtime.channels import LocalChannel
from rewind_engine.runtime.elements import Barrier, Batch, Watermark
from rewind_engine.runtime.operators import AggregateOp, Capture
from rewind_engine.runtime.routing import ForwardRouter
from rewind_engine.runtime.tasks import Task, TaskBase
from rewind_engine.windows import aggregation


class Acks:
    def __init__(self) -> None:
        self.acks: list[tuple[int, Any]] = []

    def ack(self, task: TaskBase, checkpoint_id: int, capture: Capture) -> None:
        keyed = capture.keyed
        self.acks.append((checkpoint_id, dict(zip(keyed.keys, keyed.values, strict=True))))


def keyed(*keys: str) -> Batch:
    return Batch(list(keys), None, list(keys))


def make_task() -> tuple[Task, list[LocalChannel], LocalChannel, Acks]:
    ins = [LocalChannel(100), LocalChannel(100)]
    out = LocalChannel(100)
    acks = Acks()
    op = AggregateOp(AggregateSpec(aggregation("count"), None, "each"))
    task = Task(
        "count",
        0,
        1,
        operator=op,
        inputs=list(ins),
        outputs={"main": [ForwardRouter([out])]},
        snapshots=acks,
    )
    return task, ins, out, acks


def drain(task: Task) -> None:
    while task.run_once():
        pass


def test_input_with_barrier_is_held_until_all_inputs_deliver_it() -> None:
    task, (a, b), out, acks = make_task()
    a.push(keyed("x"))
    a.push(Barrier(1))
    a.push(keyed("x", "x", "x"))  # after the barrier: must not be in snapshot 1
    b.push(keyed("y"))
    drain(task)
    assert acks.acks == []
    assert len(a) == 1, "records behind the barrier stay queued while aligning"
    assert task.op.state == {"x": 1, "y": 1}
    b.push(keyed("y"))  # still before b's barrier: belongs to snapshot 1
    b.push(Barrier(1))
    b.push(keyed("y"))
    drain(task)
    assert acks.acks == [(1, {"x": 1, "y": 2})]
    assert task.op.state == {"x": 4, "y": 3}
    kinds = []
    while (el := out.pop()) is not None:
        kinds.append(type(el).__name__)
    # the barrier is forwarded once, after everything that belongs to snapshot 1
    assert kinds.count("Barrier") == 1
    assert kinds.index("Barrier") == 3


def test_watermark_is_the_minimum_of_active_inputs() -> None:
    task, (a, b), out, _ = make_task()
    a.push(Watermark(100))
    drain(task)
    assert task.watermark < 0  # b has said nothing yet
    b.push(Watermark(50))
    drain(task)
    assert task.watermark == 50
    b.push(Watermark(0, idle=True))  # b goes idle: only a counts
    drain(task)
    assert task.watermark == 100
    b.push(Watermark(70))  # b active again, behind: the watermark never goes back
    drain(task)
    assert task.watermark == 100
    sent = []
    while (el := out.pop()) is not None:
        if isinstance(el, Watermark):
            sent.append(el.ts)
    assert sent == sorted(sent) and sent[-1] == 100


def test_backpressure_a_full_output_stops_input() -> None:
    ins = [LocalChannel(100)]
    out = LocalChannel(2)
    op = AggregateOp(AggregateSpec(aggregation("count"), None, "each"))
    task = Task(
        "count",
        0,
        1,
        operator=op,
        inputs=list(ins),
        outputs={"main": [ForwardRouter([out])]},
        snapshots=Acks(),
    )
    for _ in range(10):
        ins[0].push(keyed("k"))
    drain(task)
    assert len(out) == 2 and len(ins[0]) == 8
    out.pop()
    drain(task)
    assert len(out) == 2 and len(ins[0]) == 7
