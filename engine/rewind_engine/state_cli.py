"""`rewind state read URI --uid UID [--format jsonl|csv]`: a step's state, out of a
savepoint or checkpoint, as rows (state_rows.py), without running the flow.

Rows go to stdout (or `--out FILE`): JSON lines by default, or CSV with one column per
field (nested values as JSON). What must stay true: every block read is checked against
its sha256 (SnapshotReader does it); an unknown uid is an error naming the uids there.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any, TextIO

from . import snapshots, state_rows


def add_parser(sub: Any) -> None:
    state = sub.add_parser("state", help="read a step's state out of a savepoint")
    commands = state.add_subparsers(dest="state_command", metavar="COMMAND", required=True)
    read = commands.add_parser(
        "read",
        help="every key and value of one step's state",
        description="Write every entry of a step's state (keyed state, aggregations,"
        " windows with their bounds, source positions, pending sink commits) as rows.",
    )
    read.add_argument("uri", metavar="URI", help="a savepoint or checkpoint folder")
    read.add_argument("--uid", required=True, help="the step's uid (`rewind inspect` lists them)")
    read.add_argument(
        "--format",
        choices=["jsonl", "csv"],
        default="jsonl",
        help="JSON lines, or CSV with nested values as JSON (default: jsonl)",
    )
    read.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    read.set_defaults(handler=cmd_read)
    write = commands.add_parser(
        "write",
        help="a new savepoint from SRC with steps dropped or renamed",
        description="Write a new, verified savepoint from SRC: every block is read"
        " (checksums verified) and written again, with --drop and --rename applied.",
    )
    write.add_argument("src", metavar="SRC", help="the savepoint or checkpoint to start from")
    write.add_argument("--to", required=True, metavar="DST", help="where to write the new one")
    write.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="UID",
        help="leave this step's state out (repeatable; default: keep all)",
    )
    write.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="give step OLD's state to uid NEW (repeatable; default: none)",
    )
    write.set_defaults(handler=cmd_write)


def cmd_read(args: argparse.Namespace) -> int:
    try:
        with snapshots.SnapshotReader(args.uri) as reader:
            if args.uid not in reader.uids():
                there = ", ".join(sorted(reader.uids())) or "none"
                print(
                    f"error: cannot read state of {args.uid!r} from {args.uri}: the snapshot"
                    f" has no state for that uid (uids with state: {there})",
                    file=sys.stderr,
                )
                return 1
            out: TextIO = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
            try:
                _write(state_rows.rows(reader, args.uid), args.format, out)
            finally:
                if args.out:
                    out.close()
    except snapshots.SnapshotError as exc:
        print(f"error: cannot read snapshot {args.uri}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_write(args: argparse.Namespace) -> int:
    from . import state_write  # noqa: PLC0415 - only this command writes

    rename: dict[str, str] = {}
    for item in args.rename:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            print(f"error: --rename wants OLD=NEW, got {item!r}", file=sys.stderr)
            return 2
        rename[old] = new
    try:
        manifest = state_write.write(args.src, args.to, drop=args.drop, rename=rename)
    except (snapshots.SnapshotError, state_write.StateWriteError) as exc:
        message = str(exc)
        if isinstance(exc, snapshots.SnapshotError):
            message = f"cannot write {args.to} from {args.src}: {message}"
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(f"wrote savepoint {manifest.snapshot_id} ({manifest.size_bytes} bytes)", file=sys.stderr)
    print(snapshots.open_storage(args.to).uri)
    return 0


def _write(rows: Any, fmt: str, out: TextIO) -> None:
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, default=_jsonable) + "\n")
        return
    materialised = list(rows)
    fields: list[str] = []
    for row in materialised:
        fields += [k for k in row if k not in fields]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for row in materialised:
        writer.writerow(
            {
                k: json.dumps(v, default=_jsonable) if isinstance(v, list | dict | tuple) else v
                for k, v in row.items()
            }
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
