"""Command-line options that more than one `rewind` command declares.

`rewind run` (cli.py) and `rewind state bootstrap` (state_cli.py) both decide how a
flow's steps are split: `--parallelism` and `--max-parallelism`. Their names, metavars,
types and the meaning of `--max-parallelism` live here once; each command says only what
differs (its default parallelism and what that means for it). What must stay true: the
defaults shown in `--help` are those of `ParallelismSettings`, and `--max-parallelism`
keeps one meaning everywhere (it is fixed for the life of the state).
"""

from __future__ import annotations

import argparse

from .settings import ParallelismSettings


def add_parallelism_options(
    parser: argparse.ArgumentParser, *, default: int | None, note: str
) -> None:
    """Add `--parallelism N` and `--max-parallelism M` to `parser`.

    `default` is the value `args.parallelism` takes when the flag is not given (None: the
    command decides later, e.g. from `--workers`); `note` ends the flag's help: what is
    particular to the command, and that default in words.
    """
    parser.add_argument(
        "--parallelism",
        type=int,
        default=default,
        metavar="N",
        help=f"subtasks of steps without their own parallelism; {note}",
    )
    parser.add_argument(
        "--max-parallelism",
        type=int,
        default=ParallelismSettings.max_parallelism,
        metavar="M",
        help="number of key groups, the upper bound of any later parallelism; fixed for"
        f" the life of the state (default: {ParallelismSettings.max_parallelism})",
    )
