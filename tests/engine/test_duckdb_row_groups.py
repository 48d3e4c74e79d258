"""Loads reach DuckDB in batches of one row group, so DuckDB writes whole row groups in
parallel instead of merging small batches on one thread; rows and their order are unchanged."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from accel.duckdb import ROW_GROUP_ROWS, DuckDBAccelerator, _in_row_groups

SCHEMA = pa.schema([("id", pa.int64()), ("s", pa.string())])


def _batches(sizes: list[int]) -> list[pa.RecordBatch]:
    out, start = [], 0
    for size in sizes:
        ids = pa.array(range(start, start + size), pa.int64())
        out.append(pa.record_batch([ids, pa.compute.cast(ids, pa.string())], schema=SCHEMA))
        start += size
    return out


@pytest.mark.parametrize("sizes", [[45_000] * 7, [1] * 3, [300_000], [ROW_GROUP_ROWS] * 2, [0, 130_000, 0, 5]])
def test_batches_are_recut_to_whole_row_groups_in_order(sizes: list[int]) -> None:
    source = _batches(sizes)
    got = list(_in_row_groups(pa.RecordBatchReader.from_batches(SCHEMA, source)))
    assert all(b.num_rows == ROW_GROUP_ROWS for b in got[:-1]), [b.num_rows for b in got]
    assert 0 < got[-1].num_rows <= ROW_GROUP_ROWS if sum(sizes) else not got
    assert pa.Table.from_batches(got, SCHEMA).equals(pa.Table.from_batches(source, SCHEMA))


def test_a_table_is_recut_too() -> None:
    table = pa.Table.from_batches(_batches([100_000, 100_000]), SCHEMA)
    got = list(_in_row_groups(table))
    assert [b.num_rows for b in got] == [ROW_GROUP_ROWS, 200_000 - ROW_GROUP_ROWS]


@pytest.mark.parametrize("mode", ["memory", "file"])
def test_replace_and_append_write_full_row_groups(tmp_path, mode: str) -> None:
    acc = DuckDBAccelerator(str(tmp_path / "acc.duckdb") if mode == "file" else None)
    try:
        rows = 400_000
        acc.replace("t", pa.RecordBatchReader.from_batches(SCHEMA, _batches([40_000] * 10)))
        groups = "SELECT count(DISTINCT row_group_id) AS n FROM pragma_storage_info('t')"
        assert acc.query(groups).read_all()["n"][0].as_py() == math.ceil(rows / ROW_GROUP_ROWS)
        ids = acc.query("SELECT id FROM t").read_all()["id"]
        assert ids.to_pylist() == list(range(rows))

        more = _batches([40_000] * 11)[10:]  # ids 400000..439999
        acc.append("t", pa.RecordBatchReader.from_batches(SCHEMA, more), [], {})
        assert acc.row_count("t") == rows + 40_000
        total = acc.query("SELECT sum(id) AS s FROM t").read_all()["s"][0].as_py()
        assert total == sum(range(rows + 40_000))
    finally:
        acc.close()
