"""Write the README's generated sections: the API reference and the CLI reference.

    python -m dev.docgen            # rewrite the generated section of README.md
    python -m dev.docgen --check    # exit 1 if README.md is stale (CI runs this as a test)

models.py (field docstrings, Literals, Field bounds, defaults) -> the structural schema
that `rewind_operator.crdgen` also puts into the CRDs -> one Markdown table per object.
So the README, `kubectl explain` and the API server's validation say the same thing.
The command-line reference is the `--help` of every `rewind` command, taken from the
real parser (`rewind_operator.cli.build_parser()`), so it cannot drift from the code.

What must stay true: only the text between each pair of marker lines in README.md is
generated; everything else there is written by hand and left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rewind_operator.cli import build_parser
from rewind_operator.crdgen import structural
from rewind_operator.models import SavepointSpec, SavepointStatus, StreamAppSpec, StreamAppStatus

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- BEGIN GENERATED REFERENCE: python -m dev.docgen -->"
END = "<!-- END GENERATED REFERENCE -->"
CLI_BEGIN = "<!-- BEGIN GENERATED CLI: python -m dev.docgen -->"
CLI_END = "<!-- END GENERATED CLI -->"
HELP_WIDTH = "100"
"""argparse wraps help to the terminal's width; a fixed width keeps the output stable."""


def _type(node: dict[str, Any]) -> str:
    """A short, user-facing type: `string`, `[]string`, `map[string]string`, an enum ..."""
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "object")
    if kind == "array":
        return "[]" + _type(node.get("items", {}))
    if kind == "object":
        if isinstance(node.get("additionalProperties"), dict):
            return "map[string]" + _type(node["additionalProperties"])
        if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
            return "object (free-form)"
        return "object"
    if node.get("format") == "date-time":
        return "timestamp"
    if "pattern" in node and "ms|s|m|h|d" in node["pattern"]:
        return "duration"
    return str(kind)


def _notes(node: dict[str, Any], required: bool) -> str:
    """Default, bounds and whether the field is required."""
    notes = []
    if required:
        notes.append("**required**")
    if "default" in node and node["default"] not in ([], {}, None):
        notes.append(f"default `{json.dumps(node['default'])}`")
    if "minimum" in node and "maximum" in node:
        notes.append(f"{node['minimum']}..{node['maximum']}")
    elif "minimum" in node:
        notes.append(f">= {node['minimum']}")
    if node.get("example") is not None and _type(node) != "duration":
        notes.append(f"e.g. `{node['example']}`")
    return ", ".join(notes)


def _escape(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(node: dict[str, Any], prefix: str, stop: dict[str, Any] | None) -> list[str]:
    """One table row per field, depth first; `stop` is a schema not expanded again."""
    rows = []
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}"
        target = child.get("items", child) if child.get("type") == "array" else child
        again = stop is not None and target.get("properties") == stop.get("properties")
        kind = "StreamApp spec (as above)" if again else _type(child)
        rows.append(
            f"| `{path}` | {kind} | {_notes(child, name in required)} "
            f"| {_escape(child.get('description', ''))} |"
        )
        if "properties" in target and not again:
            rows += _rows(target, path + ("[]" if target is not child else ""), stop)
    return rows


def _table(title: str, intro: str, rows: list[str]) -> str:
    header = "| Field | Type | Notes | Description |\n|---|---|---|---|"
    return f"#### {title}\n\n{intro}\n\n{header}\n" + "\n".join(rows) + "\n"


def render() -> str:
    """The generated section, markers included."""
    app_spec = structural(StreamAppSpec)
    parts = [
        BEGIN,
        "",
        "<!-- Generated from operator/rewind_operator/models.py; edit the models' "
        "docstrings, then run `python -m dev.docgen`. -->",
        "",
        _table(
            "StreamApp `spec` (`rewind.dev/v1alpha1`, short name `sapp`)",
            " ".join(app_spec.get("description", "").split()),
            _rows(app_spec, "spec", None),
        ),
        _table(
            "StreamApp `status`",
            "Written by the operator only. It is also the operator's memory: an operator "
            "restarted in the middle of an upgrade carries on from here.",
            _rows(structural(StreamAppStatus), "status", app_spec),
        ),
        _table(
            "Savepoint `spec` (`rewind.dev/v1alpha1`, short name `sp`)",
            " ".join(structural(SavepointSpec).get("description", "").split()),
            _rows(structural(SavepointSpec), "spec", None),
        ),
        _table(
            "Savepoint `status`",
            "Written by the operator only.",
            _rows(structural(SavepointStatus), "status", None),
        ),
        END,
    ]
    return "\n".join(parts)


def _commands(
    parser: argparse.ArgumentParser, path: list[str]
) -> list[tuple[list[str], argparse.ArgumentParser]]:
    """(command words, parser) for every command and subcommand, depth first."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, [*path, name])
    return found


def render_cli() -> str:
    """The CLI section, markers included: each command's own --help."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        blocks = []
        for words, parser in _commands(build_parser(), ["rewind"])[1:]:
            blocks.append(
                f"#### `{' '.join(words)}`\n\n```text\n{parser.format_help().rstrip()}\n```\n"
            )
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    note = (
        "<!-- Generated from the `rewind` command's parser; change the help texts in the "
        "code, then run `python -m dev.docgen`. -->"
    )
    return "\n".join([CLI_BEGIN, "", note, "", *blocks, CLI_END])


def _replace(text: str, begin: str, end: str, fresh: str) -> str:
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"README.md lacks the markers {begin!r} ... {end!r}")
    return text[:start] + fresh + text[stop + len(end) :]


def update(text: str) -> str:
    """`text` (a README) with its generated sections replaced by fresh ones."""
    text = _replace(text, BEGIN, END, render())
    return _replace(text, CLI_BEGIN, CLI_END, render_cli())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report whether it is stale")
    args = parser.parse_args(argv)
    current = README.read_text()
    fresh = update(current)
    if args.check:
        if fresh != current:
            print("README.md reference is stale: run `python -m dev.docgen`", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        README.write_text(fresh)
        print("README.md: reference updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
