"""Built-in connectors: generator, file source, file sink (two-phase commit)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rewind_engine import FileSink, FileSource, GeneratorSource, SinkContext, SourceContext
from rewind_engine.testing import read_jsonl

CTX = SourceContext("src", 0, 1, "job")


def drain(reader: Any, n: int = 3) -> list[Any]:
    out: list[Any] = []
    while (batch := reader.poll(n)) is not None:
        out.extend(batch.records)
        if batch.finished:
            break
    reader.close()
    return out


def test_generator_is_deterministic_and_resumes_at_its_position() -> None:
    gen = GeneratorSource(lambda s: s * 10, total=11, splits=2)
    assert gen.discover_splits() == ["gen-0", "gen-1"]
    r = gen.open_split("gen-1", None, CTX)
    first = r.poll(2)
    assert first is not None and first.records == [10, 30]
    again = gen.open_split("gen-1", r.position(), CTX)
    assert drain(again) == [50, 70, 90]
    assert drain(gen.open_split("gen-0", None, CTX)) == [0, 20, 40, 60, 80, 100]


def test_generator_rate_is_paced_by_the_injected_clock() -> None:
    now = [0.0]
    gen = GeneratorSource(total=None, rate=10.0, monotonic=lambda: now[0])
    r = gen.open_split("gen-0", None, CTX)
    assert r.poll(100) is None
    now[0] = 0.5
    batch = r.poll(100)
    assert batch is not None and batch.records == [0, 1, 2, 3, 4]


def test_file_source_offsets_partial_lines_and_new_files(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"n": 1}\n{"n": 2}\n{"n": 3')  # last line incomplete
    src = FileSource(tmp_path, watch=True)
    assert src.discover_splits() == ["a.jsonl"]
    r = src.open_split("a.jsonl", None, CTX)
    assert drain(r) == [{"n": 1}, {"n": 2}]
    pos = r.position()
    assert pos == len('{"n": 1}\n{"n": 2}\n')
    with (tmp_path / "a.jsonl").open("a") as f:
        f.write("}\n")
    resumed = src.open_split("a.jsonl", pos, CTX)
    assert drain(resumed) == [{"n": 3}]
    (tmp_path / "b.jsonl").write_text('{"n": 4}\n')
    (tmp_path / ".hidden").write_text("x\n")
    assert src.discover_splits() == ["a.jsonl", "b.jsonl"]


def test_csv_source_with_header_and_bounded_end(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("post_id,kind\n1,view\n2,click\n")
    src = FileSource(tmp_path, format="csv")
    r = src.open_split("x.csv", None, CTX)
    b = r.poll(1)
    assert b is not None and b.records == [{"post_id": "1", "kind": "view"}]
    r.close()
    r2 = src.open_split("x.csv", r.position(), CTX)
    b2 = r2.poll(10)
    r2.close()
    assert b2 is not None and b2.records == [{"post_id": "2", "kind": "click"}] and b2.finished


def test_file_sink_two_phase_commit_is_idempotent(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    w = sink.open(SinkContext("out", 0, 1, "job", "att1"), [])
    w.write([{"a": 1}, {"a": 2}])
    c1 = w.pre_commit(1)
    w.write([{"a": 3}])
    assert read_jsonl(tmp_path) == [], "nothing is visible before commit"
    w.commit(1, c1)
    assert read_jsonl(tmp_path) == [{"a": 1}, {"a": 2}]
    w.commit(1, c1)  # again: no-op
    assert w.pre_commit(2) is not None
    assert w.pre_commit(3) is None  # nothing written since
    # A restart that restores committable 1 (already committed) commits nothing twice.
    w2 = sink.open(SinkContext("out", 0, 1, "job", "att2"), [c1])
    w2.close()
    assert read_jsonl(tmp_path) == [{"a": 1}, {"a": 2}]
    assert json.loads(json.dumps(c1)) == c1  # plain data, storable in a snapshot
