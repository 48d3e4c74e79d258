"""file: connector behaviour beyond the conformance suite: schema stability, layouts, types,
unsupported_type_action, filter classification."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.base import DatasetSpec, Filter, FilterSupport
from connectors.files.file import FileConnector
from engine.errors import ConnectorError, UnsupportedType
from tests.connectors.conformance import read

EXACT, UNSUPPORTED = FilterSupport.EXACT, FilterSupport.UNSUPPORTED


def connector(root: Path, path: str, params: dict | None = None, **extra) -> FileConnector:
    return FileConnector(DatasetSpec(name="things", path=path, prefix="file", params=params or {}, base_dir=str(root),
                                     **extra))


def rows(conn: FileConnector, *args, **kwargs) -> list[dict]:
    return read(conn.scan(*args, **kwargs)).to_pylist()


# -- schema stability and refresh ---------------------------------------------------------

def test_csv_schema_is_frozen_and_refresh_sees_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,amount,when\n1,10,2024-01-01\n2,20,2024-01-02\n")
    conn = connector(tmp_path, "t.csv")
    schema = conn.schema()
    assert [str(t) for t in schema.types] == ["int64", "int64", "date32[day]"]
    # the file changes so that fresh inference would pick other types; the schema does not move
    path.write_text("id,amount,when\n3,,2024-01-03\n4,40,\n")
    assert conn.schema().equals(schema)
    assert rows(conn) == [{"id": 3, "amount": None, "when": dt.date(2024, 1, 3)},
                          {"id": 4, "amount": 40, "when": None}]


def test_csv_value_that_no_longer_fits_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,amount\n1,10\n")
    conn = connector(tmp_path, "t.csv")
    conn.schema()
    path.write_text("id,amount\n1,ten\n")
    with pytest.raises(ConnectorError, match=r"dataset 'things': error while reading: .*ten"):
        rows(conn)


def test_directory_refresh_sees_added_and_removed_files(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    pq.write_table(pa.table({"id": [1, 2]}), tmp_path / "d" / "a.parquet")
    conn = connector(tmp_path, "d")
    assert conn.schema().names == ["id"]
    pq.write_table(pa.table({"id": [3]}), tmp_path / "d" / "b.parquet")
    assert sorted(r["id"] for r in rows(conn)) == [1, 2, 3]
    (tmp_path / "d" / "a.parquet").unlink()
    assert rows(conn) == [{"id": 3}]


def test_parquet_parts_with_evolving_schemas_are_unified(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"a": pa.array([1, 2], pa.int32()), "s": ["x", "y"]}), tmp_path / "p" / "1.parquet")
    pq.write_table(pa.table({"a": pa.array([3], pa.int64()), "c": [1.5]}), tmp_path / "p" / "2.parquet")
    conn = connector(tmp_path, "p")
    assert conn.schema() == pa.schema([("a", pa.int64()), ("s", pa.string()), ("c", pa.float64())])
    got = sorted(rows(conn, None, [Filter("a", ">=", 2)]), key=lambda r: r["a"])
    assert got == [{"a": 2, "s": "y", "c": None}, {"a": 3, "s": None, "c": 1.5}]


def test_incompatible_parts_are_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "p" / "1.parquet")
    pq.write_table(pa.table({"a": [b"x"]}), tmp_path / "p" / "2.parquet")
    with pytest.raises(ConnectorError, match="dataset 'things': the files have incompatible schemas"):
        connector(tmp_path, "p").schema()


def test_directory_mixing_formats_needs_a_format(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    pq.write_table(pa.table({"id": [1]}), tmp_path / "m" / "a.parquet")
    (tmp_path / "m" / "b.csv").write_text("id\n2\n")
    with pytest.raises(ConnectorError, match=r"mixes formats \(csv, parquet\)"):
        connector(tmp_path, "m").schema()
    assert rows(connector(tmp_path, "m", {"file_format": "csv"})) == [{"id": 2}]


def test_directory_of_extensionless_parts_with_file_format(tmp_path: Path) -> None:
    (tmp_path / "spark").mkdir()
    (tmp_path / "spark" / "part-00000").write_text("id,name\n1,a\n")
    (tmp_path / "spark" / "part-00001").write_text("id,name\n2,b\n")
    (tmp_path / "spark" / "_SUCCESS").write_text("")
    conn = connector(tmp_path, "spark", {"file_format": "csv"})
    assert sorted(r["id"] for r in rows(conn)) == [1, 2]


def test_absolute_file_url_form(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [7]}), tmp_path / "abs.parquet")
    conn = FileConnector(DatasetSpec(name="things", path=f"//{tmp_path}/abs.parquet", prefix="file", base_dir="/"))
    assert rows(conn) == [{"id": 7}]


# -- CSV options -------------------------------------------------------------------------

def test_csv_without_header_and_with_delimiter(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text("1;x;2024-01-01\n2;;2024-01-02\n")
    conn = connector(tmp_path, "n.csv", {"csv_has_header": "false", "csv_delimiter": ";"})
    assert conn.schema().names == ["column_1", "column_2", "column_3"]
    assert rows(conn, ["column_3", "column_1"], [Filter("column_2", "is_null")]) == [
        {"column_3": dt.date(2024, 1, 2), "column_1": 2}]


def test_tab_delimiter_and_bad_delimiter(tmp_path: Path) -> None:
    (tmp_path / "t.tsv").write_text("a\tb\n1\tx\n")
    conn = connector(tmp_path, "t.tsv", {"file_format": "csv", "csv_delimiter": "\\t"})
    assert rows(conn) == [{"a": 1, "b": "x"}]
    with pytest.raises(ConnectorError, match="csv_delimiter must be one character"):
        connector(tmp_path, "t.tsv", {"csv_delimiter": ";;"})


def test_jsonl_alias_and_extension(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    (tmp_path / "x.data").write_text('{"a": 3}\n')
    assert rows(connector(tmp_path, "x.jsonl")) == [{"a": 1}, {"a": 2}]
    assert rows(connector(tmp_path, "x.data", {"file_format": "jsonl"})) == [{"a": 3}]


# -- types ---------------------------------------------------------------------------------

def test_parquet_dictionary_and_extension_columns_are_plain(tmp_path: Path) -> None:
    table = pa.table({"cat": pa.array(["x", "y", "x"]).dictionary_encode(),
                      "doc": pa.array(['{"a":1}', "[]", None], pa.json_())})
    pq.write_table(table, tmp_path / "d.parquet")
    conn = connector(tmp_path, "d.parquet")
    assert conn.schema() == pa.schema([("cat", pa.string()), ("doc", pa.string())])
    assert conn.classify_filters([Filter("cat", "=", "x")]) == [EXACT]
    assert rows(conn, ["cat"], [Filter("cat", "=", "x")]) == [{"cat": "x"}, {"cat": "x"}]


def test_source_column_descriptions_kept_and_pod_descriptions_win(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("a", pa.int64(), metadata={b"description": b"from the file"}),
                        pa.field("b", pa.int64(), metadata={b"description": b"also from the file"})])
    pq.write_table(pa.table({"a": [1], "b": [2]}, schema=schema), tmp_path / "m.parquet")
    conn = connector(tmp_path, "m.parquet", column_descriptions={"b": "from the pod"})
    got = conn.schema()
    assert got.field("a").metadata == {b"description": b"from the file"}
    assert got.field("b").metadata == {b"description": b"from the pod"}


def test_description_for_unknown_column_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pq.write_table(pa.table({"a": [1]}), tmp_path / "m.parquet")
    connector(tmp_path, "m.parquet", column_descriptions={"nope": "x"}).schema()
    assert "descriptions given for unknown column(s): nope" in caplog.text


MIXED = [
    {"id": 1, "mixed": 1, "nested": {"k": 1}, "tags": ["a"], "nothing": None, "when": "2024-01-01T10:00:00Z"},
    {"id": 2, "mixed": "two", "nested": {"k": 2}, "tags": [], "nothing": None, "when": "2024-01-01T12:00:00+02:00"},
    {"id": 3, "mixed": {"three": 3}, "nested": None, "tags": ["b", "c"], "nothing": None, "when": None},
]


@pytest.fixture
def mixed_json(tmp_path: Path) -> Path:
    (tmp_path / "mixed.json").write_text(json.dumps(MIXED))
    return tmp_path


def test_json_mixed_values_error_by_default(mixed_json: Path) -> None:
    with pytest.raises(UnsupportedType, match=r"dataset 'things': column 'mixed' has JSON values of mixed types.*"
                                              r"unsupported_type_action"):
        connector(mixed_json, "mixed.json").schema()


def test_json_mixed_values_as_text(mixed_json: Path) -> None:
    conn = connector(mixed_json, "mixed.json", unsupported_type_action="string")
    schema = conn.schema()
    assert schema.field("mixed").type == pa.string()
    assert schema.field("nested").type == pa.struct([("k", pa.int64())])
    assert schema.field("tags").type.value_type == pa.string()
    assert schema.field("nothing").type == pa.string()
    assert schema.field("when").type == pa.timestamp("us", "UTC")
    got = rows(conn, ["mixed", "when"])
    assert [json.loads(r["mixed"]) for r in got] == [1, "two", {"three": 3}]
    assert [r["when"] for r in got] == [dt.datetime(2024, 1, 1, 10, tzinfo=dt.timezone.utc)] * 2 + [None]
    # text-converted columns are never filtered by the connector
    assert conn.classify_filters([Filter("mixed", "=", "1")]) == [UNSUPPORTED]


@pytest.mark.parametrize("action", ["ignore", "warn"])
def test_json_mixed_values_dropped_with_a_warning(mixed_json: Path, action: str, caplog: pytest.LogCaptureFixture) -> None:
    conn = connector(mixed_json, "mixed.json", unsupported_type_action=action)
    assert "mixed" not in conn.schema().names
    assert [r["id"] for r in rows(conn)] == [1, 2, 3]
    assert any(r.levelno == logging.WARNING and "dropping column 'mixed'" in r.getMessage() for r in caplog.records)


def test_ndjson_in_a_json_file(tmp_path: Path) -> None:
    (tmp_path / "lines.json").write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": null}\n')
    conn = connector(tmp_path, "lines.json")
    assert rows(conn, None, [Filter("a", ">", 1)]) == [{"a": 2, "b": None}]


def test_json_non_iso_strings_stay_text(tmp_path: Path) -> None:
    (tmp_path / "d.ndjson").write_text('{"d": "2024-01-01"}\n{"d": "01/02/2024"}\n{"d": "2024-01-03"}\n')
    conn = connector(tmp_path, "d.ndjson")
    assert conn.schema().field("d").type == pa.string()


def test_json_that_is_not_records_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "n.json").write_text("42")
    with pytest.raises(ConnectorError, match="is not JSON records"):
        connector(tmp_path, "n.json").schema()


# -- scans ---------------------------------------------------------------------------------

def test_parquet_scan_streams_row_groups(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": list(range(5000))}), tmp_path / "big.parquet", row_group_size=1000)
    reader = connector(tmp_path, "big.parquet").scan(["id"], [Filter("id", ">=", 2500)])
    batches = list(reader)
    assert len(batches) > 1
    assert sum(b.num_rows for b in batches) == 2500


def test_limit_stops_early_and_zero_limit_keeps_schema(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": list(range(5000))}), tmp_path / "big.parquet", row_group_size=1000)
    conn = connector(tmp_path, "big.parquet")
    assert read(conn.scan(["id"], [Filter("id", ">=", 10)], limit=3)).num_rows == 3
    empty = read(conn.scan(None, [], limit=0))
    assert empty.num_rows == 0 and empty.schema == conn.schema()
    with pytest.raises(ConnectorError, match="limit must be >= 0"):
        conn.scan(None, [], limit=-1)


def test_limit_ignored_when_a_filter_is_not_exact(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": list(range(10))}), tmp_path / "t.parquet")
    conn = connector(tmp_path, "t.parquet")
    # an engine bug (limit with an unsupported filter) must not drop matching rows
    assert read(conn.scan(None, [Filter("id", ">", 4.5)], limit=2)).num_rows == 10


@pytest.fixture
def typed(tmp_path: Path) -> FileConnector:
    table = pa.table({
        "i8": pa.array([1], pa.int8()), "i32": pa.array([1], pa.int32()), "i64": [1], "u64": pa.array([1], pa.uint64()),
        "f32": pa.array([1.0], pa.float32()), "f64": [1.0], "dec": pa.array([decimal.Decimal("1.5")], pa.decimal128(5, 2)),
        "s": ["a"], "b": [True], "d": [dt.date(2024, 1, 1)], "ts": pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("s")),
        "tstz": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)], pa.timestamp("ms", "UTC")),
        "bin": [b"x"], "st": [{"k": 1}], "l": [[1]],
    })
    pq.write_table(table, tmp_path / "typed.parquet")
    return connector(tmp_path, "typed.parquet")


CLASSIFICATION = [
    (Filter("i64", "=", 1), EXACT),
    (Filter("i64", ">", 1.5), UNSUPPORTED),  # int64 vs a fraction: float64 cannot hold every int64
    (Filter("i32", ">", 1.5), EXACT),
    (Filter("i64", "=", 2.0), EXACT),
    (Filter("i8", "<", 1000), UNSUPPORTED),
    (Filter("u64", ">", 2**63), EXACT),
    (Filter("i64", "=", True), UNSUPPORTED),
    (Filter("i64", "in", (1, None)), UNSUPPORTED),
    (Filter("i64", "in", ()), UNSUPPORTED),
    (Filter("f64", ">", 1), EXACT),
    (Filter("f64", "<", 2**60 + 1), UNSUPPORTED),
    (Filter("f64", "=", float("nan")), UNSUPPORTED),
    (Filter("f32", "in", (0.5, 1)), EXACT),
    (Filter("dec", ">", 1), EXACT),
    (Filter("dec", "=", decimal.Decimal("1.50")), EXACT),
    (Filter("dec", "=", decimal.Decimal("1.505")), UNSUPPORTED),
    (Filter("dec", "=", 1.5), UNSUPPORTED),
    (Filter("s", "like", "a%"), EXACT),
    (Filter("s", "=", 1), UNSUPPORTED),
    (Filter("s", "=", None), UNSUPPORTED),
    (Filter("b", "=", 1), UNSUPPORTED),
    (Filter("b", "!=", False), EXACT),
    (Filter("d", ">=", "2024-01-01"), EXACT),
    (Filter("d", ">=", "Jan 1"), UNSUPPORTED),
    (Filter("d", "<", dt.datetime(2024, 1, 1, 1)), UNSUPPORTED),
    (Filter("ts", ">=", dt.date(2024, 1, 1)), EXACT),
    (Filter("ts", ">", dt.datetime(2024, 1, 1, 0, 0, 0, 500)), EXACT),  # finer than the column's seconds
    (Filter("ts", "in", (dt.datetime(2024, 1, 1, 0, 0, 0, 500),)), UNSUPPORTED),
    (Filter("ts", ">", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)), UNSUPPORTED),
    (Filter("tstz", ">", dt.datetime(2024, 1, 1)), UNSUPPORTED),
    (Filter("tstz", ">", dt.datetime(2024, 1, 1, 3, tzinfo=dt.timezone(dt.timedelta(hours=2)))), EXACT),
    (Filter("bin", "=", b"x"), EXACT),
    (Filter("bin", "like", "x"), UNSUPPORTED),
    (Filter("i64", "like", "1%"), UNSUPPORTED),
    (Filter("st", "=", "x"), UNSUPPORTED),
    (Filter("st", "is_null"), EXACT),
    (Filter("l", "is_not_null"), EXACT),
    (Filter("missing", "=", 1), UNSUPPORTED),
]


def test_filter_classification(typed: FileConnector) -> None:
    filters = [f for f, _ in CLASSIFICATION]
    got = typed.classify_filters(filters)
    wrong = [(f, g.value, w.value) for (f, w), g in zip(CLASSIFICATION, got) if g is not w]
    assert not wrong, wrong
    # every filter classified EXACT also runs
    read(typed.scan(None, [f for f, s in zip(filters, got) if s is EXACT and f.column != "missing"]))
