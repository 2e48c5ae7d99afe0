"""Rows through files: JSON lines, CSV and Parquet give back exactly the rows JSON lines
carries (strings that look like numbers, empty strings, nulls, bools, big ints, nested
values, fields a row lacks), and rows become key groups the engine's own way."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rewind_engine import state_files, state_rows
from rewind_engine.keys import key_group_of
from rewind_engine.snapshots.codec import Columns

TRICKY: list[dict[str, Any]] = [
    {"key_group": 3, "key": "ada", "value": 2},
    {"key_group": 4, "key": "3", "value": "true"},
    {"key_group": 5, "key": "", "value": None},
    {"key_group": 6, "key": ["ada", 7], "value": [1, [2, "x"], {"a": None}]},
    {"key": 2**70, "value": 1.5, "state": "s"},
    {"key": True, "value": False, "type": "null"},
    {"key": 'with,comma "quoted"\nand a newline', "value": -0.25},
    {"key": 1.0, "value": 2**63 - 1},
    {"key": (1, 2), "value": {1, 2}},
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_format_gives_back_the_rows_json_lines_carries(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"rows.{fmt}"
    if fmt == "parquet":
        state_files.write_rows(TRICKY, fmt, None, str(path))
    else:
        with path.open("w", newline="") as out:
            state_files.write_rows(TRICKY, fmt, out, str(path))
    back = [row for _, row in state_files.read_rows(str(path))]
    assert back == [state_files.as_json(r) for r in TRICKY]
    # as JSON carries them: arrays for tuples and sets, 1.0 stays a float, 1 an int
    assert back[7]["key"] == 1.0 and isinstance(back[7]["key"], float)
    assert back[8] == {"key": [1, 2], "value": [1, 2]}
    assert "key_group" not in back[4] and back[2]["value"] is None


def test_csv_keeps_plain_strings_plain() -> None:
    out = io.StringIO()
    state_files.write_rows(
        [{"key": "ada", "value": 2}, {"key": "7", "value": True}], "csv", out, None
    )
    assert out.getvalue() == 'key,value\nada,2\n"""7""",true\n'


def test_parquet_columns_are_typed_where_they_can_be(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "rows.parquet"
    state_files.write_rows(TRICKY[:4], "parquet", None, str(path))
    schema = pq.read_schema(path)
    assert str(schema.field("key_group").type) == "int64"
    assert schema.field("key").metadata == {b"rewind.json": b"1"}  # strings and an array


def test_rows_become_the_key_groups_of_the_engine() -> None:
    rows = [
        ("f line 1", {"key_group": 0, "key": ["ada", 7], "value": 3}),  # key_group is ignored
        ("f line 2", {"key": "bob", "value": 1}),
    ]
    blocks = state_rows.keyed_blocks("aggregate", rows, 128, count=True)
    ada, bob = key_group_of(("ada", 7), 128), key_group_of("bob", 128)
    assert ada != bob
    assert blocks[ada] == Columns([("ada", 7)], [3])
    assert blocks[bob] == Columns(["bob"], [1])


def test_process_rows_become_the_layout_of_group_capture() -> None:
    rows = [
        ("f line 1", {"key": "ada", "state": "n", "type": "value", "value": 3}),
        ("f line 2", {"key": "ada", "state": "pages", "type": "list", "value": ["/", "/a"]}),
        ("f line 3", {"key": "ada", "state": "per", "type": "map", "value": [[["/", 1], 2]]}),
        ("f line 4", {"key": "ada", "type": "event_timer", "value": 60000}),
    ]
    blocks = state_rows.keyed_blocks("process", rows, 128)
    assert blocks == {
        key_group_of("ada", 128): {
            "v": {"n": [["ada", 3]]},
            "l": {"pages": [["ada", ["/", "/a"]]]},
            "m": {"per": [["ada", [[("/", 1), 2]]]]},
            "et": [["ada", 60000]],
        }
    }


@pytest.mark.parametrize(
    ("kind", "row", "message"),
    [
        ("aggregate", {"value": 1}, "no 'key'"),
        ("aggregate", {"key": "a"}, "no 'value'"),
        ("aggregate", {"key": {"a": 1}, "value": 1}, "is not a valid key"),
        ("aggregate", {"key": "a", "value": 1, "state": "x"}, "field(s) state are not part"),
        ("process", {"key": "a", "type": "value", "value": 1}, "needs its 'state' name"),
        ("process", {"key": "a", "type": "set", "state": "s", "value": 1}, "'type' must be"),
        ("process", {"key": "a", "type": "list", "state": "s", "value": 1}, "must be an array"),
        ("process", {"key": "a", "type": "map", "state": "s", "value": [1]}, "[key, value] pairs"),
        ("process", {"key": "a", "type": "event_timer", "value": "soon"}, "timestamp in ms"),
        ("aggregate", {"key": "a", "value": 2**65}, "cannot be stored"),
    ],
)
def test_a_malformed_row_is_named_with_what_is_wrong(
    kind: str, row: dict[str, Any], message: str
) -> None:
    rows = [("rows.jsonl line 1", {"key": "ok", "value": 1} if kind == "aggregate" else
             {"key": "ok", "state": "s", "type": "value", "value": 1}),
            ("rows.jsonl line 2", row)]  # fmt: skip
    with pytest.raises(state_rows.RowsError) as caught:
        state_rows.keyed_blocks(kind, rows, 128)
    first, *lines = str(caught.value).splitlines()
    assert first == "1 malformed row(s), nothing written:"
    assert len(lines) == 1 and lines[0].startswith("  rows.jsonl line 2: ")
    assert message in lines[0]


def test_a_count_wants_integers_and_a_key_once() -> None:
    rows = [
        ("f line 1", {"key": "a", "value": 1.5}),
        ("f line 2", {"key": "b", "value": True}),
        ("f line 3", {"key": "c", "value": 1}),
        ("f line 4", {"key": "c", "value": 2}),
    ]
    with pytest.raises(state_rows.RowsError) as caught:
        state_rows.keyed_blocks("aggregate", rows, 128, count=True)
    text = str(caught.value)
    assert text.startswith("3 malformed row(s)")
    assert "f line 1: the value of a count must be an integer" in text
    assert "f line 2: the value of a count must be an integer" in text
    assert "f line 4: key 'c' is given twice (first at f line 3)" in text


def test_a_file_that_is_not_rows_is_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"key": "a", "value": 1}\n\n[1, 2]\n')
    with pytest.raises(state_files.StateFileError, match=r"rows.jsonl line 3: a row must be"):
        list(state_files.read_rows(str(path)))
    bad_csv = tmp_path / "rows.csv"
    bad_csv.write_text("key,value\na,1\nb,2,3\n")
    with pytest.raises(state_files.StateFileError, match=r"rows.csv line 3: 3 cells"):
        list(state_files.read_rows(str(bad_csv)))
    with pytest.raises(state_files.StateFileError, match=r"give --format"):
        list(state_files.read_rows(str(tmp_path / "rows.txt")))


def test_without_pyarrow_parquet_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = state_files.importlib.import_module

    def no_pyarrow(name: str) -> Any:
        if name.startswith("pyarrow"):
            raise ImportError(f"No module named {name!r}")
        return real(name)

    monkeypatch.setattr(state_files.importlib, "import_module", no_pyarrow)
    with pytest.raises(state_files.StateFileError, match=r"install rewind\[parquet\]"):
        state_files.write_rows([{"key": 1}], "parquet", None, str(tmp_path / "x.parquet"))
    with pytest.raises(state_files.StateFileError, match=r"install rewind\[parquet\]"):
        list(state_files.read_rows(str(tmp_path / "x.parquet")))
    assert json.dumps(state_files.as_json({"k": b"\x01"})) == '{"k": "01"}'


def test_many_malformed_rows_are_counted_and_the_first_listed() -> None:
    rows = [(f"f line {n}", {"key": f"k{n}"}) for n in range(1, 26)]
    with pytest.raises(state_rows.RowsError) as caught:
        state_rows.keyed_blocks("aggregate", rows, 128)
    first, *lines = str(caught.value).splitlines()
    assert first == "25 malformed row(s), nothing written (the first 10):"
    assert lines == [f"  f line {n}: no 'value'" for n in range(1, 11)]
    with pytest.raises(state_rows.RowsError, match="rows cannot describe window state"):
        state_rows.keyed_blocks("window", [], 128)
