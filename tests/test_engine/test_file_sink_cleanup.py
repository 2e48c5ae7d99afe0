"""FileSink: staged files of snapshots that never completed are removed on open.

Subtask j of parallelism p removes the `.pending/` files of its step written by old
subtask s (s % p == j) of another attempt, unless a restored committable names them;
SinkOp deals old subtask s's committables to new subtask s % p, so that no other
subtask can still need a file that is removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewind_engine.connectors.base import SinkContext
from rewind_engine.connectors.files import FileSink
from rewind_engine.runtime.operators import SinkOp
from structlog.testing import capture_logs


def stage(folder: Path, *names: str) -> None:
    (folder / ".pending").mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / ".pending" / name).write_text(f'{{"from": "{name}"}}\n')


def pending(folder: Path) -> set[str]:
    return {p.name for p in (folder / ".pending").iterdir()}


def ctx(subtask: int, parallelism: int = 2) -> SinkContext:
    return SinkContext("out", subtask, parallelism, "job", attempt="bbbb")


def test_open_removes_only_its_share_of_abandoned_staged_files(tmp_path: Path) -> None:
    stage(
        tmp_path,
        "part-out-aaaa-0-000001.jsonl",  # pre-committed in the restored snapshot
        "part-out-aaaa-0-000002.jsonl",  # staged after it: abandoned, subtask 0's
        "part-out-aaaa-2-000003.jsonl",  # old subtask 2 at parallelism 2: subtask 0's
        "part-out-aaaa-1-000001.jsonl",  # subtask 1's
        "part-out-bbbb-0-000001.jsonl",  # this attempt's own
        "part-other-aaaa-0-000001.jsonl",  # another step's
        "part-out-x-cccc-0-000001.jsonl",  # step "out-x", not "out"
        "notes.txt",
    )
    name = "part-out-aaaa-0-000001.jsonl"
    committable = {"pending": f".pending/{name}", "final": name}
    sink = FileSink(tmp_path)
    sink.open(ctx(0), [committable]).close()
    assert (tmp_path / "part-out-aaaa-0-000001.jsonl").exists()  # committed, not removed
    left = {
        "part-out-aaaa-1-000001.jsonl",
        "part-out-bbbb-0-000001.jsonl",
        "part-other-aaaa-0-000001.jsonl",
        "part-out-x-cccc-0-000001.jsonl",
        "notes.txt",
    }
    assert pending(tmp_path) == left
    sink.open(ctx(0), [committable]).close()  # idempotent: a second open changes nothing
    assert pending(tmp_path) == left
    sink.open(ctx(1), []).close()
    assert pending(tmp_path) == left - {"part-out-aaaa-1-000001.jsonl"}
    assert sorted(p.name for p in tmp_path.glob("part-*")) == ["part-out-aaaa-0-000001.jsonl"]


def test_restored_committables_go_to_the_subtask_that_cleans_their_files(tmp_path: Path) -> None:
    def state(subtask: int) -> dict[str, Any]:
        name = f"part-out-aaaa-{subtask}-000001.jsonl"
        committable = {"pending": f".pending/{name}", "final": name}
        return {"kind": "sink", "subtask": subtask, "pending": [[7, committable]]}

    stage(tmp_path, *(f"part-out-aaaa-{s}-000001.jsonl" for s in range(3)))
    ops = [SinkOp(FileSink(tmp_path), ctx(j)) for j in range(2)]
    for op in ops:  # rescale 3 -> 2
        op.restore([], [state(0), state(1), state(2)])
    assert [c["final"] for c in ops[0].restored] == [
        "part-out-aaaa-0-000001.jsonl",
        "part-out-aaaa-2-000001.jsonl",
    ]
    assert [c["final"] for c in ops[1].restored] == ["part-out-aaaa-1-000001.jsonl"]
    for op in ops:
        op.open()
        op.close()
    assert pending(tmp_path) == set()
    assert len(list(tmp_path.glob("part-out-aaaa-*.jsonl"))) == 3  # all committed, none lost
    # Its capture names the subtask, so a later restore deals by it.
    assert ops[1].capture(8).operator_state["subtask"] == 1


def test_a_fork_into_another_folder_commits_its_originals_file_where_it_was_staged(
    tmp_path: Path,
) -> None:
    original, fork = tmp_path / "out", tmp_path / "fork-out"
    writer = FileSink(original).open(ctx(0, 1), [])
    writer.write([{"n": 1}])
    committable = writer.pre_commit(1)
    # The original crashed before committing; a fork restores its snapshot elsewhere.
    with capture_logs() as logs:
        FileSink(fork).open(ctx(0, 1), [committable]).close()
        FileSink(fork).open(ctx(0, 1), [committable]).close()  # again: idempotent
    assert [p.read_text() for p in original.glob("*.jsonl")] == ['{"n":1}\n']
    assert pending(original) == set() and list(fork.glob("*.jsonl")) == []
    assert [e for e in logs if e["event"] == "sink_commit_lost"] == []
    # A committable of an older snapshot names no folder: this sink's own is used.
    stage(fork, "part-out-aaaa-0-000001.jsonl")
    legacy = {
        "pending": ".pending/part-out-aaaa-0-000001.jsonl",
        "final": "part-out-aaaa-0-000001.jsonl",
    }
    FileSink(fork).open(ctx(0, 1), [legacy]).close()
    assert [p.name for p in fork.glob("*.jsonl")] == ["part-out-aaaa-0-000001.jsonl"]
