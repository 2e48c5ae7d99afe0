"""`rewind state read | write | bootstrap`: a step's state as rows, without running the flow.

    rewind state read URI --uid UID [--format jsonl|csv|parquet] [--out FILE]
    rewind state write SRC --to DST [--drop UID] [--rename OLD=NEW] [--replace UID=FILE]
    rewind state bootstrap FLOW --uid UID --from FILE --to DST [--parallelism N]
                           [--max-parallelism M] [-- FLOW ARGS]

`read` writes a step's state out of a savepoint or checkpoint as rows (state_rows.py):
JSON lines by default, CSV or Parquet (state_files.py says how each carries values).
`write` makes a new savepoint from one (state_write.py); `bootstrap` makes one for a
flow from rows alone (state_bootstrap.py). Both take back the rows `read` gives, in any
of the three formats. What must stay true: every block read is checked against its
sha256 (SnapshotReader does it); an unknown uid is an error naming the uids there; every
error is one line on stderr saying what is wrong (exit 1; bad usage: exit 2), never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

from . import snapshots, state_files, state_rows
from .cli_options import add_parallelism_options
from .dataflow import FlowError
from .flowload import FlowLoadError, load_flow

_FORMAT_HELP = "format of the files (default: by extension: .jsonl, .csv, .parquet)"


class _BootstrapParser(argparse.ArgumentParser):
    """`state bootstrap`: everything after `--` goes to the flow (as with `rewind run`)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras and extras[0] != "--":
            self.error(f"unrecognized arguments: {' '.join(extras)} (flow arguments go after --)")
        ns.flow_args = [*getattr(ns, "flow_args", []), *extras[1:]]
        return ns, []


def add_parser(sub: Any) -> None:
    state = sub.add_parser("state", help="read, rewrite or bootstrap a step's state in a savepoint")
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
        choices=state_files.FORMATS,
        default="jsonl",
        help="JSON lines; CSV with values as JSON (strings as they are); or Parquet, which"
        " needs --out and rewind[parquet] (default: jsonl)",
    )
    read.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    read.set_defaults(handler=cmd_read)
    write = commands.add_parser(
        "write",
        help="a new savepoint from SRC with steps dropped, renamed or replaced",
        description="Write a new, verified savepoint from SRC: every block is read"
        " (checksums verified) and written again, with --drop, --rename and --replace"
        " applied. A --replace file holds rows as `rewind state read` writes them for that"
        " step (aggregations and process state); each key goes to its key group and to the"
        " subtask of SRC that owns it, the rows' key_group is recomputed.",
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
    write.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="UID=FILE",
        help="step UID's keyed state becomes the rows of FILE (repeatable; default: none)",
    )
    write.add_argument("--format", choices=state_files.FORMATS, help=_FORMAT_HELP)
    write.set_defaults(handler=cmd_write)
    boot = commands.add_parser(
        "bootstrap",
        help="a savepoint for a flow whose steps start from rows in files",
        description="Write a savepoint for FLOW (as `rewind run` takes it) in which each"
        " step --uid holds the rows of its --from file, as `rewind state read` writes them"
        " for that kind of step (aggregations and process state); no other step has state"
        " and sources have no positions (they start as configured). Start the flow from it"
        " with `rewind run FLOW --restore DST`. Arguments after -- go to the flow.",
    )
    boot.__class__ = _BootstrapParser
    boot.set_defaults(flow_args=[])
    boot.add_argument("flow", metavar="FLOW", help="path/to/flow.py or module:attribute")
    boot.add_argument(
        "--uid",
        action="append",
        required=True,
        help="a step to give state (repeatable, each with its --from, in the same order)",
    )
    boot.add_argument(
        "--from",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="the rows of the --uid before it",
    )
    boot.add_argument("--to", required=True, metavar="DST", help="where to write the savepoint")
    add_parallelism_options(boot, default=1, note="any later run may use another (default: 1)")
    boot.add_argument(
        "--app",
        metavar="NAME",
        help="the application the savepoint is for: recorded as its app, so that only"
        " that app's `--restore latest` may pick it under a shared location (default:"
        " none recorded, as for a savepoint of no app)",
    )
    boot.add_argument("--format", choices=state_files.FORMATS, help=_FORMAT_HELP)
    boot.set_defaults(handler=cmd_bootstrap)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def cmd_read(args: argparse.Namespace) -> int:
    if args.format == "parquet" and not args.out:
        print("error: --format parquet writes a file: give --out FILE.parquet", file=sys.stderr)
        return 2
    try:
        with snapshots.SnapshotReader(args.uri) as reader:
            if args.uid not in reader.uids():
                there = ", ".join(sorted(reader.uids())) or "none"
                return _error(
                    f"cannot read state of {args.uid!r} from {args.uri}: the snapshot"
                    f" has no state for that uid (uids with state: {there})"
                )
            inexact: list[int] = []
            rows = state_rows.rows(reader, args.uid)
            if state_rows.step_kind(reader, args.uid) in state_rows.WRITABLE_KINDS:
                rows = _checked(rows, inexact)
            if args.format == "parquet":
                state_files.write_rows(rows, "parquet", None, args.out)
            else:
                out: TextIO = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
                try:
                    state_files.write_rows(rows, args.format, out, args.out)
                finally:
                    if args.out:
                        out.close()
    except snapshots.SnapshotError as exc:
        return _error(f"cannot read snapshot {args.uri}: {exc}")
    except (OSError, state_files.StateFileError) as exc:
        return _error(f"cannot write {args.out or 'stdout'}: {exc}")
    if inexact:
        print(
            f"warning: {inexact[0]} row(s) hold values that rows cannot carry exactly (a"
            f" tuple, set or bytes inside a value, or a map with non-string keys; the first is"
            f" row {inexact[1]}): `rewind state write --replace` from these rows would store"
            " them as JSON gives them back (arrays, strings)",
            file=sys.stderr,
        )
    return 0


def _checked(rows: Iterable[state_rows.Row], inexact: list[int]) -> Iterator[state_rows.Row]:
    """`rows`, counting those that do not survive JSON into `inexact` ([count, first])."""
    for number, row in enumerate(rows, 1):
        if not state_rows.survives_json(row):
            if not inexact:
                inexact += [0, number]
            inexact[0] += 1
        yield row


def _pairs(items: list[str], option: str, what: str) -> dict[str, str] | None:
    pairs: dict[str, str] = {}
    for item in items:
        left, sep, right = item.partition("=")
        if not sep or not left or not right:
            print(f"error: {option} wants {what}, got {item!r}", file=sys.stderr)
            return None
        if left in pairs:
            print(f"error: {option} names {left!r} twice", file=sys.stderr)
            return None
        pairs[left] = right
    return pairs


def cmd_write(args: argparse.Namespace) -> int:
    from . import state_write  # noqa: PLC0415 - only this command writes

    rename = _pairs(args.rename, "--rename", "OLD=NEW")
    replace = _pairs(args.replace, "--replace", "UID=FILE")
    if rename is None or replace is None:
        return 2
    try:
        manifest = state_write.write(
            args.src, args.to, drop=args.drop, rename=rename, replace=replace, fmt=args.format
        )
    except (snapshots.SnapshotError, state_write.StateWriteError) as exc:
        message = str(exc)
        if isinstance(exc, snapshots.SnapshotError):
            message = f"cannot write {args.to} from {args.src}: {message}"
        return _error(message)
    print(f"wrote savepoint {manifest.snapshot_id} ({manifest.size_bytes} bytes)", file=sys.stderr)
    print(snapshots.open_storage(args.to).uri)
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from . import state_bootstrap  # noqa: PLC0415 - only this command loads a flow

    if len(args.uid) != len(args.files):
        print(
            f"error: give one --from FILE per --uid ({len(args.uid)} --uid,"
            f" {len(args.files)} --from)",
            file=sys.stderr,
        )
        return 2
    try:
        flow = load_flow(args.flow, args.flow_args)
        manifest = state_bootstrap.bootstrap(
            flow,
            args.flow,
            list(zip(args.uid, args.files, strict=True)),
            args.to,
            parallelism=args.parallelism,
            max_parallelism=args.max_parallelism,
            fmt=args.format,
            app=args.app,
        )
    except (FlowLoadError, FlowError) as exc:
        return _error(f"cannot load flow {args.flow}: {exc}")
    except state_bootstrap.BootstrapError as exc:
        return _error(f"{exc} ({args.to} not written)")
    except snapshots.SnapshotError as exc:
        return _error(f"cannot write {args.to}: {exc}")
    print(f"wrote savepoint {manifest.snapshot_id} ({manifest.size_bytes} bytes)", file=sys.stderr)
    print(snapshots.open_storage(args.to).uri)
    return 0
