"""`rewind state bootstrap`: a savepoint for a flow that never ran, from rows in files;
`rewind run FLOW --restore` it and the counts and process state go on from the
bootstrapped values, while the sources read their input from the start. What rows
cannot describe (windows, sources, stateless steps), a uid the flow lacks and malformed
rows are refused, and nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rewind_engine import snapshots
from rewind_engine.cli import main
from rewind_engine.testing import read_jsonl

REWIND = [sys.executable, "-m", "rewind_operator.cli"]

FLOW = """
from rewind_engine import (
    BoundedOutOfOrderness, Dataflow, FileSink, FileSource, KeyedProcess, TumblingWindows,
)


class Pages(KeyedProcess):
    def process(self, user, click, ctx):
        seen = ctx.value("seen", 0)
        seen.set(seen.get() + 1)
        ctx.list("pages").add(click["page"])
        return [{"user": user, "seen": seen.get(), "pages": ctx.list("pages").get()}]


def flow(argv):
    out = argv[0] if argv else "out"
    f = Dataflow("boot")
    clicks = f.source(
        "clicks", FileSource("clicks"), watermarks=BoundedOutOfOrderness(timestamp="ts")
    )
    (
        clicks.key_by("by-user", "user")
        .count("per-user")
        .map("count-rows", lambda kc: {"user": kc[0], "count": kc[1]})
        .sink("counts", FileSink(out + "/counts"))
    )
    clicks.key_by("by-user-2", "user").process("pages", Pages()).sink(
        "page-rows", FileSink(out + "/pages")
    )
    clicks.key_by("by-page", "page").window("per-minute", TumblingWindows(60_000)).sink(
        "windows", FileSink(out + "/windows")
    )
    return f
"""

CLICKS = [
    {"user": "ada", "page": "/", "ts": 1000},
    {"user": "bob", "page": "/a", "ts": 2000},
    {"user": "ada", "page": "/b", "ts": 3000},
    {"user": "cy", "page": "/", "ts": 4000},
]


def rewind(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REWIND, *args], cwd=cwd, capture_output=True, text=True, check=False
    )  # fmt: skip


def setup(tmp: Path) -> None:
    (tmp / "flow.py").write_text(FLOW)
    (tmp / "clicks").mkdir()
    (tmp / "clicks" / "part-1.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CLICKS))


def test_a_bootstrapped_flow_goes_on_from_the_rows(tmp_path: Path) -> None:
    setup(tmp_path)
    (tmp_path / "counts.csv").write_text("key,value\nada,40\nbob,7\nzed,3\n")
    pages = [
        {"key": "ada", "state": "seen", "type": "value", "value": 10},
        {"key": "ada", "state": "pages", "type": "list", "value": ["/old"]},
    ]
    (tmp_path / "pages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pages))
    dst = f"file://{tmp_path}/boot"
    done = rewind(tmp_path, "state", "bootstrap", "flow.py", "--to", dst,
                  "--uid", "per-user", "--from", "counts.csv",
                  "--uid", "pages", "--from", "pages.jsonl",
                  "--parallelism", "2", "--", "ignored-out")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == dst
    manifest = snapshots.verify(dst)
    assert manifest.kind == "savepoint" and sorted(manifest.steps) == ["pages", "per-user"]
    assert manifest.sources == {} and manifest.max_parallelism == 128
    assert manifest.steps["per-user"].parallelism == 2
    assert set(manifest.meta["bootstrapped_from"]) == {"per-user", "pages"}
    read = rewind(tmp_path, "state", "read", dst, "--uid", "per-user")
    assert read.returncode == 0, read.stderr
    assert {json.loads(r)["key"]: json.loads(r)["value"] for r in read.stdout.splitlines()} == {
        "ada": 40, "bob": 7, "zed": 3,
    }  # fmt: skip

    # At another parallelism than the savepoint's: every key must be in its key group.
    ran = rewind(tmp_path, "run", "flow.py", "--restore", dst, "--parallelism", "3",
                 "--snapshots", f"file://{tmp_path}/snapshots", "--control", "none")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    counts = read_jsonl(tmp_path / "out" / "counts")
    assert len(counts) == len(CLICKS)  # the source read its input from the start
    last = {r["user"]: r["count"] for r in counts}
    assert last == {"ada": 42, "bob": 8, "cy": 1}
    seen = [r for r in read_jsonl(tmp_path / "out" / "pages") if r["user"] == "ada"]
    assert seen[-1] == {"user": "ada", "seen": 12, "pages": ["/old", "/", "/b"]}
    assert read_jsonl(tmp_path / "out" / "windows")  # a step without state started empty


def test_bootstrap_refuses_what_rows_cannot_describe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the flow's folder is put on it
    (tmp_path / "rows.jsonl").write_text('{"key": "ada", "value": 1}\n')
    dst = tmp_path / "never"

    def boot(uid: str, rows: str = "rows.jsonl", *more: str) -> str:
        """`rewind state bootstrap` in this process (faster): its stderr."""
        args = ["state", "bootstrap", "flow.py", "--uid", uid, "--from", rows, "--to",
                f"file://{dst}", *more]  # fmt: skip
        try:
            code = main(args)
        except SystemExit as exit_:  # bad usage: argparse exits 2
            code = int(str(exit_.code))
        assert code in (1, 2)
        return capsys.readouterr().err

    err = boot("per-minute")
    assert "'per-minute' holds window state" in err and "supported are aggregate" in err
    assert "'clicks' holds source state" in boot("clicks")
    assert "it is a keyby step, which keeps no state" in boot("by-user")
    err = boot("nope")
    assert "flow 'boot' has no such step" in err and "per-user, pages" in err
    assert "parallelism must be between 1 and max_parallelism (4)" in boot(
        "per-user", "rows.jsonl", "--parallelism", "5", "--max-parallelism", "4"
    )
    (tmp_path / "bad.csv").write_text("key,value\nada,1.5\nbob,2\n,3\n")
    err = boot("per-user", "bad.csv")
    assert "bad.csv line 2: the value of a count must be an integer (64 bits), got 1.5" in err
    assert "bad.csv line 4: no 'key'" in err and "line 3" not in err
    assert "2 malformed row(s)" in err
    assert "unrecognized arguments: out" in boot("per-user", "rows.jsonl", "out")
    assert "cannot tell the format of rows.txt" in boot("per-user", "rows.txt")
    assert not dst.exists()


def test_a_bootstrap_for_an_app_is_picked_by_that_apps_restore_latest_only(
    tmp_path: Path,
) -> None:
    setup(tmp_path)
    (tmp_path / "counts.csv").write_text("key,value\nada,40\n")
    location = f"file://{tmp_path}/snapshots"
    dst = f"{location}/savepoints/boot"
    done = rewind(tmp_path, "state", "bootstrap", "flow.py", "--to", dst, "--app", "shop/clicks",
                  "--uid", "per-user", "--from", "counts.csv")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert snapshots.verify(dst).meta["app"] == "shop/clicks"
    assert snapshots.latest(location, app="shop/clicks") == dst
    assert snapshots.latest(location, app="shop/other") is None
