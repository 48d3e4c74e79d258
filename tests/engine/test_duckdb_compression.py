"""An in-memory DuckDB accelerator compresses what it loads, as a file does: DuckDB compresses a
table only at a checkpoint, and a database in memory never checkpoints by itself (an
uncompressed table held about 4x the memory, and an aggregate grouped by a string took about 4x
the CPU)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from accel.duckdb import DuckDBAccelerator

ROWS = 300_000


def _reader(start: int, rows: int) -> pa.RecordBatchReader:
    ids = pa.array(range(start, start + rows), pa.int64())
    table = pa.table({"id": ids, "category": pa.compute.cast(pa.compute.bit_wise_and(ids, 15), pa.string()),
                      "amount": pa.compute.multiply(pa.compute.cast(ids, pa.float64()), 0.5)})
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=65536))


def _compressions(acc: DuckDBAccelerator, name: str) -> set[str]:
    cur = acc.cursor()
    try:
        return {row[0] for row in cur.execute(
            "SELECT DISTINCT compression FROM pragma_storage_info(?) WHERE segment_type <> 'VALIDITY'",
            [name]).fetchall()}
    finally:
        cur.close()


@pytest.mark.parametrize("mode", ["memory", "file"])
def test_loaded_and_appended_rows_are_compressed(tmp_path, mode: str) -> None:
    acc = DuckDBAccelerator(str(tmp_path / "acc.duckdb") if mode == "file" else None)
    assert acc.replace("t", _reader(0, ROWS)) == ROWS
    assert "Uncompressed" not in _compressions(acc, "t")
    assert acc.append("t", _reader(ROWS, ROWS), primary_key=(), on_conflict={}) == ROWS
    assert "Uncompressed" not in _compressions(acc, "t")
    reader = acc.query("SELECT category, count(*) AS n, sum(amount) AS total FROM t GROUP BY category ORDER BY category")
    got = reader.read_all()
    assert got.num_rows == 16 and sum(got.column("n").to_pylist()) == 2 * ROWS
