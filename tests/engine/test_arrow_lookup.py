"""Lookups on an Arrow-accelerated table (`Plan.arrow_lookup`): `SELECT columns FROM t WHERE
filters on integer and text columns [LIMIT n]` is answered by a pyarrow scan in the sidecar,
without a federated engine worker. Every answer here is compared with DuckDB's over the same
data, and its schema with the one announced before the query runs."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlglot import parse_one

ROWS = 3000

LOOKUPS = [
    "SELECT * FROM {t} WHERE id = 42",
    "SELECT id, name FROM {t} WHERE id = 42",
    "SELECT name, id FROM {t} WHERE id = -1",
    "SELECT id FROM {t} WHERE 42 = id",
    "SELECT * FROM {t} WHERE name = 'O''Brien 7'",
    "SELECT * FROM {t} WHERE name = 'n-- 5'",
    "SELECT id, small FROM {t} WHERE small = 3 AND id < 100",
    "SELECT id FROM {t} WHERE small = 1000",  # out of the int8 column's range
    "SELECT id FROM {t} WHERE id BETWEEN 10 AND 20",
    "SELECT id FROM {t} WHERE id IN (1, 5, 2999, 4000)",
    "SELECT id FROM {t} WHERE id NOT IN (1, 5) AND id < 10",
    "SELECT id FROM {t} WHERE name IS NULL",
    "SELECT id FROM {t} WHERE name IS NOT NULL AND id < 12",
    "SELECT id FROM {t} WHERE name <> 'x 3' AND id < 12",
    "SELECT id FROM {t} WHERE name LIKE 'x 1_' ",
    "SELECT id FROM {t} WHERE name NOT LIKE 'x%' AND id < 30",
    "SELECT id FROM {t} WHERE id = 1 OR name = 'x 4'",
    "SELECT id FROM {t} WHERE NOT (id > 5 OR name = 'x 1') AND id >= 0",
    "SELECT id FROM {t} WHERE name > 'x 2998'",
    "SELECT * FROM {t} WHERE id >= 100 LIMIT 0",
    "SELECT * FROM {t} WHERE id < 0",
    "SELECT * FROM {t} WHERE id = 42 AND name = 'nobody'",
]
ORDERED = [  # a LIMIT without ORDER BY picks any rows: compared by count and by matching the filter
    ("SELECT id FROM {t} WHERE id > 100 LIMIT 7", 7, lambda r: r["id"] > 100),
    ("SELECT id, name FROM {t} WHERE small = 2 LIMIT 5", 5, lambda r: r["id"] % 7 == 2),
]
NOT_LOOKUPS = [
    "SELECT * FROM {t} WHERE price = 4.5",  # decimal: the engines' coercions decide
    "SELECT * FROM {t} WHERE score > 0.5 AND id < 5",  # float
    "SELECT id AS k FROM {t} WHERE id = 3",  # renamed
    "SELECT id + 1 AS id1 FROM {t} WHERE id = 3",
    "SELECT id FROM {t} WHERE id = 3 ORDER BY id",
    "SELECT DISTINCT small FROM {t} WHERE id < 10",
    "SELECT id FROM {t} WHERE id = small",
    "SELECT id FROM {t} WHERE lower(name) = 'x 3'",
    "SELECT id FROM {t} WHERE id = 3 LIMIT 1 OFFSET 0",
]


def _data(directory) -> None:
    ids = list(range(ROWS))
    pq.write_table(pa.table({
        "id": pa.array(ids, pa.int64()),
        "small": pa.array([i % 7 for i in ids], pa.int8()),
        "name": pa.array([None if i % 11 == 0 else ("O'Brien 7" if i == 7 else "n-- 5" if i == 5 else f"x {i}")
                          for i in ids], pa.string()),
        "price": pa.array([f"{i / 2:.2f}" for i in ids]).cast(pa.decimal128(10, 2)),
        "score": pa.array([(i % 10) / 10 for i in ids], pa.float64()),
    }), directory / "t.parquet", row_group_size=500)


@pytest.fixture(scope="module")
def pod_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lookup")


@pytest.fixture(scope="module")
def runtime(pod_dir):
    from engine.config import load_pod
    from engine.runtime import Runtime

    directory = pod_dir
    _data(directory)
    (directory / "spicepod.yaml").write_text("""
version: v1
kind: Spicepod
name: lookup
datasets:
  - from: file:t.parquet
    name: t_arrow
    acceleration:
      engine: arrow
  - from: file:t.parquet
    name: t_duckdb
    acceleration:
      engine: duckdb
""")
    rt = Runtime(load_pod(directory / "spicepod.yaml"), data_dir=str(directory / ".satchel"))
    rt.start()
    assert rt.wait_ready(60)
    yield rt
    rt.stop()


def _rows(runtime, sql: str, params=None) -> tuple[pa.Schema, list[dict]]:
    table = runtime.query(sql, params=params).read_all()
    return table.schema, sorted(table.to_pylist(), key=lambda r: tuple((v is None, str(v)) for v in r.values()))


@pytest.mark.parametrize("sql", LOOKUPS)
def test_a_lookup_is_answered_in_the_sidecar_as_duckdb_answers_it(runtime, sql: str) -> None:
    assert "lookup: answered by a scan of the Arrow table" in runtime.explain(sql.format(t="t_arrow"))
    lookup = runtime.plan(parse_one(sql.format(t="t_arrow"), read="postgres")).arrow_lookup
    scanned = runtime.routes.arrow.exact_scan("t_arrow", lookup.columns, lookup.filters, lookup.limit)
    assert (scanned is None) == ("small = 1000" in sql)  # out of the column's range: the engine answers
    schema, rows = _rows(runtime, sql.format(t="t_arrow"))
    assert rows == _rows(runtime, sql.format(t="t_duckdb"))[1]
    assert schema == runtime.query_schema(sql.format(t="t_arrow"))  # as GetFlightInfo announced it


@pytest.mark.parametrize("sql,count,matches", ORDERED)
def test_a_lookup_with_a_limit_gives_that_many_matching_rows(runtime, sql: str, count: int, matches) -> None:
    _, rows = _rows(runtime, sql.format(t="t_arrow"))
    assert len(rows) == count and all(matches(r) for r in rows)


@pytest.mark.parametrize("sql", NOT_LOOKUPS)
def test_other_queries_still_run_in_the_federated_engine(runtime, sql: str) -> None:
    assert "lookup:" not in runtime.explain(sql.format(t="t_arrow"))
    assert _rows(runtime, sql.format(t="t_arrow"))[1] == _rows(runtime, sql.format(t="t_duckdb"))[1]


def test_values_written_in_the_text_and_bound_values_reach_the_lookup(runtime) -> None:
    for value in (3, 17, 2500, 99999):  # one template: each instance gets its own values
        sql = f"SELECT id, name FROM t_arrow WHERE id = {value}"
        assert _rows(runtime, sql)[1] == _rows(runtime, sql.replace("t_arrow", "t_duckdb"))[1]
    for name in ("x 12", "O'Brien 7", "nobody"):
        got = _rows(runtime, "SELECT id FROM t_arrow WHERE name = ?", [name])[1]
        assert got == _rows(runtime, "SELECT id FROM t_duckdb WHERE name = ?", [name])[1]
    for low, limit in ((5, 3), (2990, 50), (10, 0)):
        # a bound LIMIT is not a filter's value: such a template is not answered as a lookup
        _, rows = _rows(runtime, "SELECT id FROM t_arrow WHERE id >= ? LIMIT ?", [low, limit])
        assert len(rows) == min(limit, ROWS - low) and all(r["id"] >= low for r in rows)


def test_a_lookup_sees_the_table_a_refresh_swapped_in(runtime, pod_dir) -> None:
    sql = "SELECT id, name FROM t_arrow WHERE id = 1"
    assert _rows(runtime, sql)[1] == [{"id": 1, "name": "x 1"}]
    table = pq.read_table(pod_dir / "t.parquet")
    names = table.column("name").to_pylist()
    names[1] = "renamed"
    pq.write_table(table.set_column(2, "name", pa.array(names, pa.string())), pod_dir / "t.parquet")
    try:
        runtime.refresh("t_arrow", wait=True)
        assert _rows(runtime, sql)[1] == [{"id": 1, "name": "renamed"}]  # the same plan, the new table
    finally:
        _data(pod_dir)
        runtime.refresh("t_arrow", wait=True)


TOP_N = [  # keys unique together, so the first n rows are one answer
    "SELECT * FROM {t} WHERE id >= 1500 ORDER BY id LIMIT 20",
    "SELECT id, name FROM {t} ORDER BY id DESC LIMIT 7",
    "SELECT id FROM {t} WHERE small = 3 ORDER BY id LIMIT 5",
    "SELECT id, small FROM {t} ORDER BY small DESC, id LIMIT 30",
    "SELECT id, name FROM {t} WHERE id < 40 ORDER BY name, id LIMIT 12",  # NULL names last
    "SELECT id, name FROM {t} WHERE id < 40 ORDER BY name DESC, id DESC LIMIT 12",  # NULLs first
    "SELECT id, name FROM {t} WHERE id < 40 ORDER BY name NULLS FIRST, id NULLS FIRST LIMIT 9",
    "SELECT id, name FROM {t} WHERE id < 60 ORDER BY name NULLS FIRST, id DESC NULLS LAST LIMIT 9",
    "SELECT id FROM {t} WHERE id > 2990 ORDER BY id LIMIT 100",  # fewer rows than the limit
    "SELECT id FROM {t} WHERE id < 0 ORDER BY id LIMIT 3",
    "SELECT id FROM {t} ORDER BY id LIMIT 0",
]


@pytest.mark.parametrize("sql", TOP_N)
def test_the_first_rows_in_an_order_are_duckdbs(runtime, sql: str) -> None:
    arrow = sql.format(t="t_arrow")
    assert "lookup: answered by a scan" in runtime.explain(arrow)
    table = runtime.query(arrow).read_all()
    assert table.to_pylist() == runtime.query(sql.format(t="t_duckdb")).read_all().to_pylist()  # in order
    assert table.schema == runtime.query_schema(arrow)


@pytest.mark.parametrize("sql", [
    "SELECT id FROM {t} ORDER BY id",  # no limit: a sort of every row stays in the engine (it spills)
    "SELECT id FROM {t} ORDER BY id LIMIT 20000",  # more rows than a lookup holds
    "SELECT id FROM {t} ORDER BY score LIMIT 3",  # a float key
    "SELECT id FROM {t} ORDER BY id + 1 LIMIT 3",
])
def test_other_orders_stay_in_the_engine(runtime, sql: str) -> None:
    assert "lookup:" not in runtime.explain(sql.format(t="t_arrow"))
    assert runtime.query(sql.format(t="t_arrow")).read_all().num_rows == \
        runtime.query(sql.format(t="t_duckdb")).read_all().num_rows
