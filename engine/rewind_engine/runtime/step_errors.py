"""A step that raised while processing a batch: named with its uid and the record, or
its failed records sent aside.

What flows through here: a task catches what its operator's `process` raised. By
default it turns it into a `StepError` whose message names the step uid and, where it
can be found, the record that failed ("step 'by-kind' failed on record {'post': 'p1'}:
KeyError: 'kind'"), and the job fails with that message, so a user sees which function
and which input to look at instead of a bare `KeyError: 'kind'`. A step made with
on_error="side" instead has its batch split (`split_failures`): the records that pass
are processed again as one batch, the others leave as `error_record`s on the step's
errors port (a dead-letter stream the flow can sink anywhere).

What must stay true:
- the hot path pays nothing: the record is looked for only after the batch failed;
- the record is found by calling the step's function again, record by record, and only
  for the stateless steps (map, filter, flat_map, key_by), whose functions have no state
  in the engine to corrupt. Calling them again on records of a failed batch is what a
  restore does anyway: the batch is replayed from the last checkpoint.
- a stateful step (aggregate, process, window, sink) is named without a record: running
  its function again would change its state.
- with on_error="side", a failing batch emitted nothing before it raised (every
  stateless operator emits once, after its function ran on the whole batch), so the
  records that pass are emitted exactly once, in their order, and each failed record
  leaves once with its event time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .elements import Batch
from .operators import FilterOp, FlatMapOp, KeyByOp, MapOp, Operator

RECORD_REPR_CHARS = 200
"""How much of the failing record's repr a message quotes."""


class StepError(RuntimeError):
    """A step's processing raised; the message names the step and (if found) the record."""

    def __init__(self, uid: str, cause: BaseException, record: Any = None, *, found: bool) -> None:
        where = f" on record {_quote(record)}" if found else ""
        super().__init__(f"step {uid!r} failed{where}: {type(cause).__name__}: {cause}")
        self.uid = uid
        self.record = record if found else None


def step_error(uid: str, op: Operator, records: list[Any], cause: BaseException) -> StepError:
    """The error to fail the job with, after `op.process` raised `cause` on `records`."""
    fn = _rerunnable(op)
    if fn is not None:
        for record in records:
            try:
                fn(record)
            except Exception as again:
                if type(again) is type(cause):
                    return StepError(uid, cause, record, found=True)
    return StepError(uid, cause, found=False)


def split_failures(uid: str, op: Operator, batch: Batch) -> tuple[Batch, Batch]:
    """(the records the step's function takes, the error records of the others), each
    with its event time, after the function raised on the batch as a whole."""
    fn = _rerunnable(op)
    if fn is None:
        raise TypeError(f"step {uid!r}: {type(op).__name__} cannot send failed records aside")
    ts = batch.timestamps
    good: list[Any] = []
    bad: list[Any] = []
    good_ts: list[int] | None = None if ts is None else []
    bad_ts: list[int] | None = None if ts is None else []
    for i, record in enumerate(batch.records):
        try:
            fn(record)
        except Exception as exc:
            bad.append(error_record(uid, record, exc))
            if ts is not None and bad_ts is not None:
                bad_ts.append(ts[i])
            continue
        good.append(record)
        if ts is not None and good_ts is not None:
            good_ts.append(ts[i])
    return Batch(good, good_ts), Batch(bad, bad_ts)


def error_record(uid: str, record: Any, exc: BaseException) -> dict[str, Any]:
    """What a failed record becomes on the errors port."""
    return {"step": uid, "error": f"{type(exc).__name__}: {exc}", "record": record}


def _rerunnable(op: Operator) -> Callable[[Any], Any] | None:
    """The step's user function, if calling it again cannot change the engine's state."""
    if isinstance(op, FlatMapOp):
        flat: Callable[[Any], Iterable[Any]] = op.fn
        return lambda record: list(flat(record))  # the error may come while iterating
    if isinstance(op, MapOp | FilterOp | KeyByOp):
        fn: Callable[[Any], Any] = op.fn
        return fn
    return None


def _quote(record: Any) -> str:
    try:
        text = repr(record)
    except Exception as exc:  # a record whose __repr__ raises still gets a message
        return f"<unprintable {type(record).__name__}: {type(exc).__name__}>"
    if len(text) > RECORD_REPR_CHARS:
        return text[:RECORD_REPR_CHARS] + "..."
    return text
