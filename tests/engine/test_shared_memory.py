"""accel.shared_memory: tables written to shared memory come back equal, read in place, with every
decimal's values 16-byte aligned (what DataFusion needs to use them without a copy)."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from accel.shared_memory import mapped, share, share_table
from engine.query.datafusion_worker import session


def _mixed(rows: int, seed: int = 0) -> pa.Table:
    """Every kind of column an accelerator holds, decimals between strings, with NULLs."""
    ids = pa.array(range(seed, seed + rows), pa.int64())
    odd = pc.equal(pc.bit_wise_and(ids, 1), 1)
    return pa.table({
        "name": pc.if_else(odd, None, pc.cast(ids, pa.string())),
        "price": pc.cast(pc.divide(pc.cast(ids, pa.float64()), 4), pa.decimal128(15, 2)),
        "id": ids,
        "blob": pc.cast(pc.cast(ids, pa.string()), pa.binary()),
        "amount": pc.if_else(odd, pc.cast(ids, pa.decimal128(38, 0)), None),
        "wide": pc.cast(ids, pa.decimal256(50, 3)),
        "flag": odd,
        "day": pc.cast(pc.cast(ids, pa.int32()), pa.date32()),
        "at": pc.cast(ids, pa.timestamp("us", tz="UTC")),
        "tags": pa.array([[decimal.Decimal(i)] if i % 3 else None for i in range(seed, seed + rows)],
                         pa.list_(pa.decimal128(10, 0))),
        "point": pa.array([{"x": i, "label": str(i)} for i in range(seed, seed + rows)]),
    })


def _decimal_value_buffers(table: pa.Table) -> list[pa.Buffer]:
    found = []
    for column in table.columns:
        if pa.types.is_decimal(column.type):
            found += [chunk.buffers()[1] for chunk in column.chunks if len(chunk)]
    return found


@pytest.mark.parametrize("rows", [65536, 1000, 1])
def test_a_table_comes_back_equal_in_its_column_order(rows: int) -> None:
    # batches of odd sizes too: each batch's decimals lead its body, wherever strings end
    table = pa.concat_tables([_mixed(rows), _mixed(rows // 3 + 7, seed=rows)])
    table = table.replace_schema_metadata({"origin": "test"})
    table = table.cast(table.schema.set(0, table.schema.field(0).with_metadata({"comment": "a name"})))
    shared = share_table(table)
    assert shared.table.schema.equals(table.schema, check_metadata=True)
    assert shared.table.equals(table)
    assert mapped(shared.fd).equals(table)


def test_decimal_values_are_aligned_and_read_in_place() -> None:
    table = pa.concat_tables([_mixed(65536), _mixed(57344, seed=65536), _mixed(333, seed=200000)])
    shared = share_table(table)
    before = pa.total_allocated_bytes()
    again = mapped(shared.fd)
    allocated = pa.total_allocated_bytes() - before
    buffers = _decimal_value_buffers(again)
    assert len(buffers) == 3 * 3
    assert all(b.address % 16 == 0 for b in buffers), [b.address % 64 for b in buffers]
    assert allocated < sum(b.size for b in buffers) // 100  # read in place, not copied


def test_datafusion_reads_the_shared_table() -> None:
    table = pa.concat_tables([_mixed(65536), _mixed(4097, seed=65536)])
    shared = share_table(table)
    ctx = session(2)
    ctx.register_record_batches("t", [mapped(shared.fd).to_batches()])
    got = ctx.sql("SELECT sum(price) AS p, sum(amount) AS a, count(name) AS n, min(day) AS d FROM t").to_arrow_table()
    assert got.column("p")[0].as_py() == pc.sum(table.column("price")).as_py()
    assert got.column("a")[0].as_py() == pc.sum(table.column("amount")).as_py()
    assert got.column("n")[0].as_py() == pc.count(table.column("name")).as_py()
    assert got.column("d")[0].as_py() == dt.date(1970, 1, 1)


def test_an_empty_table_and_empty_batches() -> None:
    schema = _mixed(1).schema
    assert share(schema, []).table.equals(pa.table({f.name: pa.array([], f.type) for f in schema}))
    empty = pa.record_batch([pa.array([], f.type) for f in schema], schema=schema)
    shared = share(schema, [empty, _mixed(3).to_batches()[0], empty])
    assert shared.table.equals(_mixed(3))


def test_dictionary_columns_come_back_equal() -> None:
    table = pa.table({"kind": pa.array(["a", "b", "a", None]).dictionary_encode(),
                      "price": pa.array([decimal.Decimal("1.5")] * 4, pa.decimal128(5, 1))})
    shared = share_table(table)
    assert shared.table.equals(table)
    assert mapped(shared.fd).equals(table)
