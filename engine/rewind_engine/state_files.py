"""Rows of state <-> files, for `rewind state`: JSON lines, CSV or Parquet.

Flows through here: the rows `state_rows.rows` gives (one dict per entry) out to a file
(`write_rows`), and rows back in from a file a person may have edited (`read_rows`),
each row with where it came from (`FILE line N`, `FILE row N`) for error messages.

The three formats carry the same thing, the rows as JSON carries them (tuples and sets
as arrays, bytes as hex):

- JSON lines: one object per line.
- CSV: one column per field, lines ending in "\n"; a cell is its value as JSON
  (numbers, `true`, `null`, arrays, objects), except a string, which is written as is
  unless it would read as JSON (`"3"`, `"true"`, `""` are quoted); an empty cell is a
  field the row lacks.
- Parquet (pyarrow, the optional extra `rewind[parquet]`): a column whose present
  values are all ints (int64), all floats, all strings or all bools is a column of that
  type; any other column holds each value as JSON text and says so in its field
  metadata (`rewind.json`). A null is a field the row lacks. Parquet written by other
  tools is read by its own types (lists, structs, numbers, strings).

What must stay true: `read_rows` of what `write_rows` wrote gives back exactly the rows
that JSON lines would give, in every format; pyarrow is imported only for Parquet, and
its absence is an error saying `install rewind[parquet]`, never a traceback.
"""

from __future__ import annotations

import csv
import importlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
JSON_COLUMN = b"rewind.json"
"""Field metadata key of a Parquet column that holds its values as JSON text."""
_INT64 = (-(2**63), 2**63 - 1)

Row = dict[str, Any]


class StateFileError(ValueError):
    """A file of rows cannot be read or written; the message names the file and why."""


def jsonable(value: Any) -> Any:
    """`json.dumps`' fallback: sets and tuples as arrays, bytes as hex, else str."""
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def as_json(row: Row) -> Row:
    """The row as JSON lines carries it (what every format writes and reads back)."""
    return json.loads(json.dumps(row, default=jsonable))  # type: ignore[no-any-return]


def detect_format(path: str, given: str | None) -> str:
    """`given`, else the format `path`'s extension names."""
    if given is not None:
        if given not in FORMATS:
            raise StateFileError(f"unknown format {given!r} (choose one of {', '.join(FORMATS)})")
        return given
    found = _EXTENSIONS.get(Path(path).suffix.lower())
    if found is None:
        raise StateFileError(
            f"cannot tell the format of {path} from its name: name it .jsonl, .csv or"
            " .parquet, or give --format jsonl|csv|parquet"
        )
    return found


def _pyarrow(path: str) -> tuple[Any, Any]:
    """(pyarrow, pyarrow.parquet), or a StateFileError saying how to install them."""
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise StateFileError(
            f"cannot use Parquet for {path}: pyarrow is not installed; install"
            " rewind[parquet] (pip install 'rewind[parquet]') or use --format jsonl or csv"
        ) from exc


# -- writing ---------------------------------------------------------------------------


def write_rows(rows: Iterable[Row], fmt: str, out: TextIO | None, path: str | None) -> None:
    """Write `rows` as `fmt` to `out` (jsonl, csv) or to the file `path` (parquet,
    which is binary and needs a path)."""
    if fmt == "jsonl":
        assert out is not None
        for row in rows:
            out.write(json.dumps(row, default=jsonable) + "\n")
    elif fmt == "csv":
        assert out is not None
        _write_csv(rows, out)
    elif fmt == "parquet":
        if path is None:
            raise StateFileError("Parquet is written to a file: give --out FILE.parquet")
        _write_parquet([as_json(r) for r in rows], path)
    else:
        raise StateFileError(f"unknown format {fmt!r} (choose one of {', '.join(FORMATS)})")


def _fields(rows: list[Row]) -> list[str]:
    fields: dict[str, None] = {}
    for row in rows:
        fields.update(dict.fromkeys(row))
    return list(fields)


def csv_cell(value: Any) -> str:
    """A value as one CSV cell (see the module docstring); `csv_value` reads it back."""
    if isinstance(value, str) and value:  # "" is quoted: an empty cell is no value
        try:
            json.loads(value)
        except ValueError:
            return value  # a plain string that cannot be mistaken for JSON
    return json.dumps(value, default=jsonable)


def csv_value(cell: str) -> Any:
    """The value of a non-empty CSV cell written by `csv_cell`."""
    try:
        return json.loads(cell)
    except ValueError:
        return cell


def _write_csv(rows: Iterable[Row], out: TextIO) -> None:
    materialised = list(rows)
    # "\n", not the RFC's "\r\n": the file is for sed, grep and editors as much as for
    # spreadsheets (and a CSV reader takes either).
    writer = csv.DictWriter(out, fieldnames=_fields(materialised), lineterminator="\n")
    writer.writeheader()
    for row in materialised:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})


def _column_type(values: list[Any]) -> str:
    """`int`, `float`, `str`, `bool` for a column of one such type, else `json`."""
    present = [v for v in values if v is not _ABSENT]
    kinds = set(map(type, present))
    if len(kinds) != 1:
        return "json" if kinds else "str"
    kind = kinds.pop()
    if kind is int and not all(_INT64[0] <= v <= _INT64[1] for v in present):
        return "json"
    return kind.__name__ if kind in (int, float, str, bool) else "json"


_ABSENT = object()


def _write_parquet(rows: list[Row], path: str) -> None:
    pa, pq = _pyarrow(path)
    arrow_types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}
    arrays, fields = [], []
    for name in _fields(rows):
        values = [row.get(name, _ABSENT) for row in rows]
        kind = _column_type(values)
        if kind == "json":
            cells = [None if v is _ABSENT else json.dumps(v) for v in values]
            fields.append(pa.field(name, pa.string(), metadata={JSON_COLUMN: b"1"}))
        else:
            cells = [None if v is _ABSENT else v for v in values]
            fields.append(pa.field(name, arrow_types[kind]))
        arrays.append(pa.array(cells, type=fields[-1].type))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    try:
        pq.write_table(table, path)
    except OSError as exc:
        raise StateFileError(f"cannot write {path}: {exc}") from exc


# -- reading ---------------------------------------------------------------------------


def read_rows(path: str, fmt: str | None = None) -> Iterator[tuple[str, Row]]:
    """(where, row) for every row of the file `path` (`fmt`: by its extension if None).
    A row that is not an object is a StateFileError naming the file and line."""
    fmt = detect_format(path, fmt)
    if fmt == "parquet":
        yield from _read_parquet(path)
        return
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise StateFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        try:
            if fmt == "jsonl":
                yield from _read_jsonl(path, handle)
            else:
                yield from _read_csv(path, handle)
        except UnicodeDecodeError as exc:
            raise StateFileError(f"cannot read {path} as {fmt}: not UTF-8 text ({exc})") from exc


def _read_jsonl(path: str, handle: TextIO) -> Iterator[tuple[str, Row]]:
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise StateFileError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise StateFileError(f"{where}: a row must be a JSON object, not {line.strip()[:60]}")
        yield where, row


def _read_csv(path: str, handle: TextIO) -> Iterator[tuple[str, Row]]:
    reader = csv.reader(handle)
    try:
        header = next(reader, None)
        if header is None:
            return
        if len(set(header)) != len(header) or "" in header:
            raise StateFileError(f"{path} line 1: the header needs distinct, non-empty names")
        for cells in reader:
            where = f"{path} line {reader.line_num}"
            if not any(cells):
                continue
            if len(cells) != len(header):
                raise StateFileError(
                    f"{where}: {len(cells)} cells, but the header has {len(header)} columns"
                )
            yield where, {k: csv_value(c) for k, c in zip(header, cells, strict=True) if c != ""}
    except csv.Error as exc:
        raise StateFileError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from exc


def _read_parquet(path: str) -> Iterator[tuple[str, Row]]:
    _, pq = _pyarrow(path)
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise StateFileError(f"cannot read {path} as Parquet: {exc}") from exc
    columns: list[tuple[str, list[Any]]] = []
    for field, column in zip(table.schema, table.columns, strict=True):
        as_json_text = bool(field.metadata and field.metadata.get(JSON_COLUMN))
        try:
            values = [
                _ABSENT if v is None else json.loads(v) if as_json_text else v
                for v in column.to_pylist()
            ]
        except (TypeError, ValueError) as exc:
            raise StateFileError(
                f"{path}: column {field.name!r} is marked as JSON text ({JSON_COLUMN.decode()})"
                f" but does not hold JSON: {exc}"
            ) from exc
        columns.append((field.name, values))
    for index in range(table.num_rows):
        row = {name: values[index] for name, values in columns if values[index] is not _ABSENT}
        yield f"{path} row {index + 1}", row
