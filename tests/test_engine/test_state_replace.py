"""`rewind state write --replace`: read -> write -> restore gives the job the same state
(its results equal those of a restore from the original), in every file format; an
edited row shows up in the restored job's output; what rows cannot describe, and rows
that are malformed, are refused before anything is written.

The flow counts, sums and keeps process state (value, list and map state, tuple keys)
over a folder of files; each restore runs at another parallelism than the snapshot's,
so a key put in the wrong key group would start from nothing and show."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rewind_engine import Dataflow, FileSink, FileSource, KeyedProcess, snapshots, state_files
from rewind_engine.cli import main
from rewind_engine.state import KeyedContext
from rewind_engine.testing import make_settings, read_jsonl, run_job

UIDS = ("per-user", "ms-per-region", "visits")


class Visits(KeyedProcess):
    """Per (user, region): clicks (value), pages (list), clicks per page (map), and a
    processing-time timer that never fires (so that snapshots hold timers)."""

    def process(self, key: Any, record: Any, ctx: KeyedContext) -> list[dict[str, Any]]:
        ctx.register_processing_timer(2**62)
        clicks = ctx.value("clicks", 0)
        clicks.set(clicks.get() + 1)
        ctx.list("pages").add(record["page"])
        per_page = ctx.map("per-page")
        per_page.put(record["page"], per_page.get(record["page"], 0) + 1)
        return [
            {
                "key": list(key),
                "clicks": clicks.get(),
                "pages": ctx.list("pages").get(),
                "per_page": dict(per_page.items()),
            }
        ]


def make_flow(tmp: Path, out: str) -> Dataflow:
    f = Dataflow("state-rows")
    clicks = f.source("clicks", FileSource(str(tmp / "in")))
    (
        clicks.key_by("by-user", "user")
        .count("per-user")
        .map("count-rows", lambda kc: {"user": kc[0], "count": kc[1]})
        .sink("counts", FileSink(str(tmp / out / "counts")))
    )
    (
        clicks.key_by("by-region", "region")
        .sum("ms-per-region", "ms")
        .map("sum-rows", lambda kv: {"region": kv[0], "ms": kv[1]})
        .sink("sums", FileSink(str(tmp / out / "sums")))
    )
    (
        clicks.key_by("by-visit", lambda c: (c["user"], c["region"]))
        .process("visits", Visits())
        .sink("visit-rows", FileSink(str(tmp / out / "visits")))
    )
    return f


def write_input(folder: Path, name: str, records: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records))


FIRST = [
    {"user": "ada", "region": "eu", "page": "/", "ms": 10},
    {"user": "bob", "region": "us", "page": "/a", "ms": 20},
    {"user": "ada", "region": "eu", "page": "/b", "ms": 30},
    {"user": "cy", "region": "eu", "page": "/", "ms": 1.5},
]
SECOND = [
    {"user": "ada", "region": "eu", "page": "/", "ms": 5},
    {"user": "bob", "region": "us", "page": "/c", "ms": 1},
    {"user": "dan", "region": "ap", "page": "/", "ms": 2},
]


def run(tmp: Path, name: str, *, restore: str | None = None, parallelism: int = 1) -> str:
    """Run the flow over tmp/in (bounded), outputs under tmp/name; its final checkpoint."""
    settings = make_settings(tmp / name, parallelism=parallelism, restore=restore)
    job = run_job(make_flow(tmp, name), settings)
    assert job.state == "FINISHED", job.error
    final = snapshots.latest(settings.snapshots.location)
    assert final is not None
    return final


def outputs(tmp: Path, name: str) -> dict[str, Counter[str]]:
    return {
        sink: Counter(json.dumps(r, sort_keys=True) for r in read_jsonl(tmp / name / sink))
        for sink in ("counts", "sums", "visits")
    }


def rewind(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`rewind ARGS` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop what the jobs logged
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read(capsys: pytest.CaptureFixture[str], uri: str, uid: str) -> list[dict[str, Any]]:
    code, out, err = rewind(capsys, "state", "read", uri, "--uid", uid)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def first(tmp_path: Path) -> str:
    """The final checkpoint of a run over FIRST at parallelism 2."""
    write_input(tmp_path / "in", "part-1.jsonl", FIRST)
    return run(tmp_path, "first", parallelism=2)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_read_write_replace_restore_gives_the_same_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first: str, fmt: str
) -> None:
    replaces = []
    for uid in UIDS:
        path = tmp_path / f"{uid}.{fmt}"
        code, _, err = rewind(capsys, "state", "read", first, "--uid", uid, "--format", fmt,
                              "--out", str(path))  # fmt: skip
        assert code == 0, err
        assert err == ""  # every value survives the file exactly: no warning
        replaces += ["--replace", f"{uid}={path}"]
    dst = f"file://{tmp_path}/replaced"
    code, out, err = rewind(capsys, "state", "write", first, "--to", dst, *replaces)
    assert code == 0, err
    assert out.strip() == dst
    manifest = snapshots.verify(dst)
    assert manifest.kind == "savepoint" and manifest.meta["written_from"] == first
    assert set(manifest.meta["replaced"]) == set(UIDS)
    assert manifest.sources == snapshots.read_manifest(first).sources
    for uid in UIDS:
        assert read(capsys, dst, uid) == read(capsys, first, uid)
        assert manifest.steps[uid].parallelism == 2
    visits = read(capsys, dst, "visits")
    assert {"key_group", "key", "state", "type", "value"} == set(visits[0])
    assert {"value", "list", "map", "processing_timer"} == {r["type"] for r in visits}

    write_input(tmp_path / "in", "part-2.jsonl", SECOND)
    run(tmp_path, "from-first", restore=first, parallelism=3)
    run(tmp_path, "from-replaced", restore=dst, parallelism=3)
    expected = outputs(tmp_path, "from-first")
    assert outputs(tmp_path, "from-replaced") == expected
    # The restored runs did continue from the state (ada had 2 clicks, eu 41.5 ms):
    assert expected["counts"][json.dumps({"count": 3, "user": "ada"})] == 1
    assert expected["sums"][json.dumps({"ms": 46.5, "region": "eu"})] == 1
    assert sum(expected["counts"].values()) == len(SECOND)


def test_an_edited_row_shows_in_the_restored_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first: str
) -> None:
    counts = read(capsys, first, "per-user")
    assert {r["key"]: r["value"] for r in counts} == {"ada": 2, "bob": 1, "cy": 1}
    edited = [{**r, "value": 10} if r["key"] == "ada" else r for r in counts if r["key"] != "cy"]
    edited.append({"key": "dan", "value": 100})  # a key the job never saw
    (tmp_path / "counts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edited))
    visits = read(capsys, first, "visits")
    for row in visits:
        if row["key"] == ["ada", "eu"] and row.get("state") == "clicks":
            row["value"] = 7
        if row["key"] == ["ada", "eu"] and row.get("state") == "per-page":
            row["value"] = [["/", 40], ["/z", 1]]
    with (tmp_path / "visits.csv").open("w", newline="") as out:
        state_files.write_rows(visits, "csv", out, None)
    dst = f"file://{tmp_path}/edited"
    code, _, err = rewind(capsys, "state", "write", first, "--to", dst,
                          "--replace", f"per-user={tmp_path / 'counts.jsonl'}",
                          "--replace", f"visits={tmp_path / 'visits.csv'}")  # fmt: skip
    assert code == 0, err
    timers = [r for r in read(capsys, first, "visits") if r["type"] == "processing_timer"]
    assert timers and [r for r in read(capsys, dst, "visits") if "state" not in r] == timers

    write_input(tmp_path / "in", "part-2.jsonl", SECOND)
    run(tmp_path, "after", restore=dst, parallelism=2)
    rows = read_jsonl(tmp_path / "after" / "counts")
    assert {"user": "ada", "count": 11} in rows
    assert {"user": "dan", "count": 101} in rows
    assert {"user": "bob", "count": 2} in rows
    ada = [r for r in read_jsonl(tmp_path / "after" / "visits") if r["key"] == ["ada", "eu"]]
    assert ada == [
        {"key": ["ada", "eu"], "clicks": 8, "pages": ["/", "/b", "/"],
         "per_page": {"/": 41, "/z": 1}},
    ]  # fmt: skip


def test_what_rows_cannot_describe_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first: str
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"key": "ada", "value": 1}\n')
    dst = tmp_path / "never"
    code, _, err = rewind(capsys, "state", "write", first, "--to", f"file://{dst}",
                          "--replace", f"clicks={rows}")  # fmt: skip
    assert code == 1
    assert "'clicks' holds source state" in err and "supported are aggregate" in err
    assert "process: keyed process state" in err
    code, _, err = rewind(capsys, "state", "write", first, "--to", f"file://{dst}",
                          "--replace", f"nope={rows}")  # fmt: skip
    assert code == 1 and "no state for uid(s) nope" in err
    code, _, err = rewind(capsys, "state", "write", first, "--to", f"file://{dst}",
                          "--replace", f"per-user={rows}", "--drop", "per-user")  # fmt: skip
    assert code == 1 and "both dropped and replaced" in err
    code, _, err = rewind(capsys, "state", "write", first, "--to", f"file://{dst}",
                          "--replace", "per-user")  # fmt: skip
    assert code == 2 and "--replace wants UID=FILE" in err
    assert not dst.exists()


def test_a_malformed_row_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first: str
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"key": "ada", "value": 1}\n')
    bad = tmp_path / "bad.csv"
    bad.write_text("key,state,type,value\nada,clicks,value,1\nbob,,value,2\n")
    dst = tmp_path / "never"
    replaces = ["--replace", f"per-user={good}", "--replace", f"visits={bad}"]
    code, _, err = rewind(capsys, "state", "write", first, "--to", f"file://{dst}", *replaces)
    assert code == 1
    assert f"{bad} line 2" not in err  # a good row is not named
    assert f"cannot replace the state of 'visits' with {bad}" in err
    assert f"{bad} line 3: a value state row needs its 'state' name" in err
    assert "1 malformed row(s), nothing written" in err
    assert not dst.exists()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"key": "ada", "value": 1}\n{"key": "bob", "value": 2\n')
    code, _, err = rewind(capsys, "state", "write", first, "--to", f"file://{dst}",
                          "--replace", f"per-user={broken}")  # fmt: skip
    assert code == 1 and f"{broken} line 2: not valid JSON" in err
    assert not dst.exists()


def test_a_value_rows_cannot_carry_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_input(tmp_path / "in", "part-1.jsonl", FIRST)
    flow = Dataflow("tuples")
    (
        flow.source("clicks", FileSource(str(tmp_path / "in")))
        .key_by("by-user", "user")
        .reduce("pages", lambda acc, v: (*acc, *v), value=lambda c: (c["page"],))
        .sink("out", FileSink(str(tmp_path / "out")))
    )
    settings = make_settings(tmp_path)
    run_job(flow, settings)
    final = snapshots.latest(settings.snapshots.location)
    assert final is not None
    code, out, err = rewind(capsys, "state", "read", final, "--uid", "pages")
    assert code == 0
    assert json.loads(out.splitlines()[0])["value"] in (["/", "/b"], ["/a"], ["/"])
    assert err.startswith("warning: 3 row(s) hold values that rows cannot carry exactly")
    path = tmp_path / "pages.parquet"
    code, _, err = rewind(capsys, "state", "read", final, "--uid", "pages", "--format",
                          "parquet", "--out", str(path))  # fmt: skip
    assert code == 0 and path.exists() and err.startswith("warning: 3 row(s)")


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = state_files.importlib.import_module

    def no_pyarrow(name: str) -> Any:
        if name.startswith("pyarrow"):
            raise ImportError(f"No module named {name!r}")
        return real(name)

    monkeypatch.setattr(state_files.importlib, "import_module", no_pyarrow)
    path = tmp_path / "counts.parquet"
    code, _, err = rewind(capsys, "state", "read", first, "--uid", "per-user", "--format",
                          "parquet", "--out", str(path))  # fmt: skip
    assert code == 1 and "install rewind[parquet]" in err and "Traceback" not in err
    path.write_bytes(b"PAR1")
    code, _, err = rewind(capsys, "state", "write", first, "--to", f"file://{tmp_path}/x",
                          "--replace", f"per-user={path}")  # fmt: skip
    assert code == 1 and "install rewind[parquet]" in err
    assert not (tmp_path / "x").exists()
