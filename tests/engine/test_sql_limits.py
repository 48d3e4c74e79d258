"""SQL past the size and nesting limits is refused before parsing with `sql_too_complex` (a
statement nested deep enough exhausted the parser's recursion or crashed the engines), while
every TPC-H query, long IN lists and long-but-flat statements pass; `U&'...'` strings work."""

from __future__ import annotations

import pytest

from engine.errors import SqlTooComplex
from engine.query.sql_limits import SqlLimits
from engine.query.sql_policy import parse_query

POD = """
version: v1
kind: Spicepod
name: limits
runtime:
  params:
    max_sql_length: 2000
    max_sql_depth: 8
    max_sql_terms: 50
datasets:
  - from: file:t.csv
    name: t_arrow
    acceleration:
      engine: arrow
  - from: file:t.csv
    name: t_duckdb
    acceleration:
      engine: duckdb
  - from: file:t.csv
    name: t_live
"""


@pytest.mark.parametrize("sql, what", [
    ("SELECT " + "(" * 33 + "1" + ")" * 33, "max_sql_depth"),
    ("SELECT " + "(SELECT " * 33 + "1" + ")" * 33, "max_sql_depth"),
    ("SELECT " + "+".join(["1"] * 5000), "max_sql_terms"),
    ("SELECT 1 WHERE " + " OR ".join(f"x = {i}" for i in range(5000)), "max_sql_terms"),
    ("SELECT 1 WHERE " + " AND ".join(f"(x <> {i})" for i in range(1001)), "max_sql_terms"),
    (" UNION ALL ".join(["SELECT 1"] * 1001), "max_sql_terms"),
    ("SELECT '" + "x" * (1 << 20) + "'", "max_sql_length"),
])
def test_hostile_shapes_are_refused_before_parsing(sql: str, what: str) -> None:
    with pytest.raises(SqlTooComplex, match=what) as info:
        parse_query(sql)
    assert info.value.code == "sql_too_complex" and info.value.http_status == 400


@pytest.mark.parametrize("sql", [
    "SELECT " + "(" * 32 + "1" + ")" * 32,
    "SELECT " + "+".join(["1"] * 999),
    "SELECT 1 WHERE " + " OR ".join(f"x = {i}" for i in range(999)),
    "SELECT 1 WHERE x IN (" + ", ".join(str(i) for i in range(50_000)) + ")",
    "SELECT " + ", ".join(f"{i} + {i} AS c{i}" for i in range(2000)),
])
def test_long_but_shallow_statements_pass(sql: str) -> None:
    parse_query(sql)


def test_every_tpch_query_passes_the_default_limits() -> None:
    from tests.engine.test_tpch import tpch_connection

    con = tpch_connection()
    try:
        queries = [q for (q,) in con.execute("SELECT query FROM tpch_queries()").fetchall()]
    finally:
        con.close()
    assert len(queries) == 22
    for query in queries:
        parse_query(query, SqlLimits())


def test_the_pod_sets_the_limits_and_every_route_reads_unicode_escapes(make_runtime) -> None:
    rt = make_runtime(POD, files={"t.csv": "a,b\n1,x\n2,y\n"}, start=True)
    assert rt.wait_ready(30)
    for sql, what in [("SELECT " + "(" * 9 + "1" + ")" * 9, "max_sql_depth"),
                      ("SELECT a FROM t_arrow WHERE " + " OR ".join(f"a = {i}" for i in range(60)), "max_sql_terms"),
                      ("SELECT '" + "x" * 2000 + "'", "max_sql_length")]:
        with pytest.raises(SqlTooComplex, match=what):
            rt.query(sql)
    rows = rt.task_history.table().to_pylist()
    assert [r["error_code"] for r in rows[-3:]] == ["sql_too_complex"] * 3  # audited like any failure
    for table in ("t_arrow", "t_duckdb", "t_live"):
        got = rt.query(f"SELECT U&'d\\0061t\\+000061' AS s, U&'!0078' UESCAPE '!' AS u, b FROM {table} "
                       f"WHERE b = U&'\\0079'").read_all().to_pylist()
        assert got == [{"s": "data", "u": "x", "b": "y"}], table


BUDGET_POD = """
version: v1
kind: Spicepod
name: value_sizes
runtime:
  params:
    memory_limit: 256MiB
datasets:
  - from: file:t.csv
    name: t_duckdb
    acceleration:
      engine: duckdb
  - from: file:t.csv
    name: t_live
"""


@pytest.mark.parametrize("sql", [
    "SELECT length(repeat('x', 2000000000)) AS n",
    "SELECT length(repeat('ab', 1000 * 1000 * 1000)) AS n FROM t_live",
    "SELECT generate_series(1, 1000000000000) AS g",
    "SELECT count(*) AS n FROM (SELECT generate_series(1, 1000000000000) AS g FROM t_live) q",
    "SELECT unnest(range(100000000)) AS u FROM t_duckdb",
    "SELECT lpad('x', 2000000000) AS p",
    "SELECT length(repeat('x', ?)) AS n",
])
def test_calls_that_would_build_values_past_the_budget_are_refused_up_front(make_runtime, sql) -> None:
    from engine.errors import ResourceExhausted

    rt = make_runtime(BUDGET_POD, files={"t.csv": "a,b\n1,x\n2,y\n"}, start=True)
    assert rt.wait_ready(30)
    with pytest.raises(ResourceExhausted, match="memory budget") as info:
        rt.query(sql, params=[2_000_000_000] if "?" in sql else None).read_all()
    assert info.value.code == "resource_exhausted" and info.value.http_status == 507
    # the same calls within the budget run, on every route
    assert rt.query("SELECT length(repeat('x', 1000)) AS n").read_all().to_pylist() == [{"n": 1000}]
    assert rt.query("SELECT count(*) AS n FROM (SELECT unnest(range(1000)) AS u FROM t_duckdb) q"
                    ).read_all().to_pylist() == [{"n": 2000}]
