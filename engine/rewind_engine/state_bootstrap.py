"""`rewind state bootstrap FLOW --uid UID --from FILE --to DST`: a savepoint for a flow
that has never run, whose steps start from the rows of files (state you computed
elsewhere, or read out of another job with `rewind state read`).

Flows through here: the flow (loaded as `rewind run` loads it, flowload.py) says what
kind of state each named step keeps; the file's rows (state_files.py, the shape `state
read` gives for that kind) become key groups' blocks (state_rows.keyed_blocks, keys in
the engine's own key groups), split among the step's subtasks by their key-group ranges
(`keys.key_group_range` at `--parallelism`, or the step's own); each subtask's operator
state is the one a fresh operator of that step captures. `SnapshotWriter` writes them.

What must stay true: DST is a complete, self-describing savepoint (manifest last, sha256
per file, `meta.bootstrapped_from` naming the files) that `rewind run FLOW --restore
DST` restores: only the named steps have state, and no source has positions (sources
start as configured, other steps empty). A uid the flow lacks, a step whose kind of
state rows cannot describe, a malformed row and bad parallelism are errors before
anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import snapshots, state_files, state_rows
from .dataflow import AggregateSpec, Dataflow, ProcessSpec
from .keys import check_parallelism, key_group_range
from .runtime.operators import AggregateOp, Operator, ProcessOp
from .windows import Count

JOB_ID = "bootstrap"
"""The job id a bootstrapped savepoint records (no job wrote it)."""


class BootstrapError(ValueError):
    """The savepoint cannot be made as asked; the message says what and how to fix it."""


def _operator(flow: Dataflow, uid: str) -> Operator:
    """A fresh operator of step `uid`, for its kind and its operator state."""
    try:
        step = flow.step(uid)
    except KeyError:
        stateful = [s.uid for s in flow.steps if isinstance(s.spec, AggregateSpec | ProcessSpec)]
        raise BootstrapError(
            f"cannot bootstrap {uid!r}: flow {flow.name!r} has no such step (steps whose"
            f" state can be bootstrapped: {', '.join(stateful) or 'none'})"
        ) from None
    if isinstance(step.spec, AggregateSpec):
        return AggregateOp(step.spec)
    if isinstance(step.spec, ProcessSpec):
        return ProcessOp(step.spec, lambda: 0)
    if step.kind in ("window", "source", "sink"):
        try:
            state_rows.check_writable(step.kind, uid)
        except state_rows.RowsError as exc:
            raise BootstrapError(f"cannot bootstrap {uid!r}: {exc}") from None
    raise BootstrapError(
        f"cannot bootstrap {uid!r}: it is a {step.kind} step, which keeps no state (keyed"
        " state lives in the count/sum/.../process step after a key_by)"
    )


def bootstrap(
    flow: Dataflow,
    flow_ref: str,
    states: list[tuple[str, str]],
    dst: str,
    *,
    parallelism: int = 1,
    max_parallelism: int = 128,
    fmt: str | None = None,
    app: str | None = None,
) -> snapshots.Manifest:
    """Write a savepoint of `flow` at `dst` whose step uid holds the rows of file, for
    each (uid, file) of `states` (`fmt`, or by each file's extension). `flow_ref` is how
    the flow was named (recorded as the manifest's `flow`); `app`, when given, is
    recorded as the savepoint's app (`meta.app`, as a job records its own)."""
    if not states:
        raise BootstrapError("cannot bootstrap: no step given (--uid UID --from FILE)")
    flow.validate()
    uids = [uid for uid, _ in states]
    twice = sorted({u for u in uids if uids.count(u) > 1})
    if twice:
        raise BootstrapError(f"cannot bootstrap: uid(s) {', '.join(twice)} given more than once")
    try:
        check_parallelism(parallelism, max_parallelism)
    except ValueError as exc:
        raise BootstrapError(f"cannot bootstrap: {exc}") from None
    steps: list[tuple[str, int, Operator, dict[int, Any]]] = []
    for uid, path in states:
        op = _operator(flow, uid)
        p = flow.step(uid).parallelism or parallelism
        if p > max_parallelism:
            raise BootstrapError(
                f"cannot bootstrap {uid!r}: the step has parallelism {p}, above"
                f" --max-parallelism {max_parallelism}"
            )
        count = isinstance(op, AggregateOp) and isinstance(op.agg, Count)
        try:
            rows = state_files.read_rows(path, fmt)
            blocks = state_rows.keyed_blocks(op.kind, rows, max_parallelism, count=count)
        except (state_rows.RowsError, state_files.StateFileError) as exc:
            raise BootstrapError(f"cannot bootstrap {uid!r} from {path}: {exc}") from exc
        steps.append((uid, p, op, blocks))
    meta = {
        "job_id": JOB_ID,
        "flow": flow_ref,
        "max_parallelism": max_parallelism,
        "dataflow": flow.name,
        "parallelism": parallelism,
        "bootstrapped_from": {uid: str(Path(path).resolve()) for uid, path in states},
    }
    if app:
        meta["app"] = app
    writer = snapshots.SnapshotWriter(dst, "savepoint", snapshots.new_savepoint_id(), meta)
    with writer:
        for uid, p, op, blocks in steps:
            operator_state = op.capture(0).operator_state
            for subtask in range(p):
                groups = key_group_range(subtask, p, max_parallelism)
                keyed = {kg: b for kg, b in blocks.items() if kg in groups}
                writer.add_subtask(uid, subtask, p, groups, keyed, operator_state)
        return writer.finish()
