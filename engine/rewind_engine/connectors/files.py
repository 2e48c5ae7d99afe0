"""Files: a source of JSON-lines or CSV files in a folder, and an exactly-once file sink.

FileSource: every file in the folder that matches `pattern` is a split (its name
relative to the folder); the position is a byte offset just after the last line read.
Only complete lines (ending in a newline) are read while the folder is watched, so a
file being appended to is never read half-way through a line. With `watch=True` the
source keeps tailing files and picks up new ones (unbounded); otherwise it reads what is
there and ends.

FileSink (two-phase commit): each subtask appends to a staged file in
`FOLDER/.pending/`; at a checkpoint barrier the staged file is closed and fsynced
(pre-commit) and, once the snapshot's manifest exists, renamed into `FOLDER/` (commit).
A rename is atomic and idempotent (a missing staged file whose final name exists was
already committed), so after any crash the committed files hold every record exactly
once. Staged files of snapshots that never completed (written after the last completed
checkpoint of a crashed or cancelled attempt) are deleted when a later attempt opens:
subtask j of parallelism p removes the staged files of this step written by subtask s of
another attempt with s % p == j, except those its restored committables name. The
runtime hands old subtask s's committables to new subtask s % p, so no other subtask
can still need such a file. An output folder belongs to one job's sink step at a time.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import IO, Any, Literal

import structlog

from .base import Sink, SinkContext, SinkWriter, Source, SourceBatch, SourceContext, SplitReader

log = structlog.get_logger("rewind.files")

Format = Literal["jsonl", "csv"]


class FileSource(Source):
    """Lines of the files in `folder` (JSON lines, or CSV with a header row)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        format: Format = "jsonl",
        pattern: str = "*",
        watch: bool = False,
    ) -> None:
        if format not in ("jsonl", "csv"):
            raise ValueError(f"format must be 'jsonl' or 'csv', got {format!r}")
        self.folder = Path(folder)
        self.format = format
        self.pattern = pattern
        self.watch = watch

    def discover_splits(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.folder))
            for p in self.folder.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(self.folder).parts)
            and fnmatch(p.name, self.pattern)
        )

    def bounded(self) -> bool:
        return not self.watch

    def open_split(self, split: str, position: Any | None, ctx: SourceContext) -> SplitReader:
        return FileReader(self.folder / split, position, self.format, tail=self.watch)


class FileReader(SplitReader):
    def __init__(self, path: Path, position: int | None, fmt: Format, *, tail: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.tail = tail
        self.offset = position
        self.header: list[str] | None = None
        self._f: IO[bytes] | None = None

    def _open(self) -> IO[bytes]:
        if self._f is None:
            self._f = self.path.open("rb")
            if self.fmt == "csv":
                first = self._f.readline()
                if not first.endswith(b"\n") and self.tail:
                    self._f.close()
                    self._f = None
                    raise _NotYet
                self.header = next(csv.reader([first.decode()]), [])
                if self.offset is None:
                    self.offset = len(first)
            if self.offset is None:
                self.offset = 0
            self._f.seek(self.offset)
        return self._f

    def poll(self, max_records: int) -> SourceBatch | None:
        try:
            f = self._open()
        except _NotYet:
            return None
        lines: list[bytes] = []
        at = self.offset or 0
        eof = False
        while len(lines) < max_records:
            line = f.readline()
            if not line:
                eof = True
                break
            if not line.endswith(b"\n") and self.tail:
                f.seek(at)  # half-written last line: read it once it is complete
                eof = True
                break
            at += len(line)
            if line.strip():
                lines.append(line)
        self.offset = at
        if not lines:
            if eof and not self.tail:
                return SourceBatch([], finished=True)
            return None
        return SourceBatch(self._parse(lines), finished=eof and not self.tail)

    def _parse(self, lines: list[bytes]) -> list[Any]:
        if self.fmt == "jsonl":
            try:
                return [json.loads(line) for line in lines]
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{self.path}: invalid JSON line near byte {self.offset}: {exc}"
                ) from exc
        rows = csv.reader(io.StringIO(b"".join(lines).decode()))
        header = self.header or []
        return [dict(zip(header, row, strict=False)) for row in rows]

    def position(self) -> Any:
        return self.offset

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class _NotYet(Exception):
    """A CSV file whose header line is not complete yet."""


def _json_line(record: Any) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)


class FileSink(Sink):
    """Exactly-once JSON-lines output: committed files `FOLDER/part-*.jsonl`."""

    def __init__(
        self, folder: str | os.PathLike[str], *, encode: Callable[[Any], str] = _json_line
    ) -> None:
        self.folder = Path(folder)
        self.encode = encode

    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        (self.folder / ".pending").mkdir(parents=True, exist_ok=True)
        writer = FileSinkWriter(self, ctx)
        for committable in restored:
            writer.commit(-1, committable)
        self._remove_abandoned(ctx, {Path(c["pending"]).name for c in restored})
        return writer

    def _remove_abandoned(self, ctx: SinkContext, referenced: set[str]) -> None:
        """Delete this subtask's share of staged files no restored committable names."""
        # Names are part-<uid>-<attempt>-<subtask>-<seq>.jsonl; an attempt has no "-".
        pattern = re.compile(re.escape(f"part-{ctx.step_uid}-") + r"([0-9a-z]+)-(\d+)-\d+\.jsonl")
        removed = []
        for path in (self.folder / ".pending").iterdir():
            match = pattern.fullmatch(path.name)
            if match is None or path.name in referenced:
                continue
            attempt, subtask = match.group(1), int(match.group(2))
            if attempt == (ctx.attempt or "x") or subtask % ctx.parallelism != ctx.subtask:
                continue
            path.unlink(missing_ok=True)  # another subtask never shares it: idempotent
            removed.append(path.name)
        if removed:
            log.info(
                "sink_staged_files_removed",
                folder=str(self.folder),
                files=sorted(removed),
                message="staged by an earlier attempt after its last completed snapshot",
            )


class FileSinkWriter(SinkWriter):
    def __init__(self, sink: FileSink, ctx: SinkContext) -> None:
        self.sink = sink
        self.ctx = ctx
        self._f: IO[str] | None = None
        self._name = ""
        self._seq = 0

    def write(self, records: list[Any]) -> None:
        if not records:
            return
        if self._f is None:
            self._seq += 1
            c = self.ctx
            self._name = f"part-{c.step_uid}-{c.attempt or 'x'}-{c.subtask}-{self._seq:06d}.jsonl"
            self._f = (self.sink.folder / ".pending" / self._name).open("w", encoding="utf-8")
        encode = self.sink.encode
        self._f.write("".join([encode(r) + "\n" for r in records]))

    def pre_commit(self, checkpoint_id: int) -> Any:
        if self._f is None:
            return None
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        return {
            "pending": f".pending/{self._name}",
            "final": self._name,
            "folder": str(self.sink.folder.resolve()),
        }

    def commit(self, checkpoint_id: int, committable: Any) -> None:
        # A committable is committed in the folder that staged it: a fork writing to
        # another folder completes its original's pending file there (or finds it
        # committed) instead of missing it in its own. Older committables name no folder.
        folder = Path(committable.get("folder") or self.sink.folder)
        src, dst = folder / committable["pending"], folder / committable["final"]
        if src.exists():
            os.replace(src, dst)
        elif not dst.exists():
            log.error(
                "sink_commit_lost",
                file=str(src),
                message="a pre-committed file is missing and was never committed",
            )

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class StdoutSink(Sink):
    """Prints each record as a JSON line as soon as it arrives (at-least-once)."""

    def __init__(self, encode: Callable[[Any], str] = _json_line) -> None:
        self.encode = encode

    def open(self, ctx: SinkContext, restored: list[Any]) -> SinkWriter:
        return _StdoutWriter(self.encode)


class _StdoutWriter(SinkWriter):
    def __init__(self, encode: Callable[[Any], str]) -> None:
        self.encode = encode

    def write(self, records: list[Any]) -> None:
        sys.stdout.write("".join([self.encode(r) + "\n" for r in records]))
        sys.stdout.flush()

    def pre_commit(self, checkpoint_id: int) -> Any:
        return None

    def commit(self, checkpoint_id: int, committable: Any) -> None:
        pass
