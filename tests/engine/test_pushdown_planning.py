"""What the planner hands to sources: OR/NOT composites, full-text match(), ordered top-N
limits and count(*) -- and that answers stay right whatever a source takes."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.base import Filter, SortKey
from engine.errors import SqlError
from engine.query.sql_policy import parse_query

POD = """
version: v1
kind: Spicepod
name: pushdown
datasets:
  - from: file:t.parquet
    name: t
  - from: file:t.parquet
    name: acc
    acceleration:
      engine: duckdb
"""


def _table() -> pa.Table:
    return pa.table({
        "id": pa.array(range(12), pa.int64()),
        "i": pa.array([1, None, 3, 4, None, 6, 7, 8, 9, None, 11, 12], pa.int64()),
        "s": pa.array(["a", "b", None, "ab", "c", None, "a", "ba", "x", "y", None, "z"]),
        "body": pa.array([f"doc {n}" for n in range(12)]),
    })


@pytest.fixture
def runtime(make_runtime, tmp_path):
    rt = make_runtime(POD, start=False)
    pq.write_table(_table(), tmp_path / "pod0" / "t.parquet")
    rt.start()
    assert rt.wait_ready(30)
    return rt


def _scan(runtime, sql: str):
    tree, _ = parse_query(sql)
    plan = runtime.plan(tree)
    assert plan.route == "federated"
    return plan, plan.scans[0]


def _rows(runtime, sql: str) -> list[tuple]:
    return [tuple(r.values()) for r in runtime.query(sql).read_all().to_pylist()]


def _duckdb_rows(sql: str) -> list[tuple]:
    con = duckdb.connect()
    con.register("t", _table())
    return [tuple(r) for r in con.execute(sql).fetchall()]


def test_or_and_not_become_composite_filters(runtime):
    _, scan = _scan(runtime, "SELECT id FROM t WHERE (i = 1 OR s LIKE 'a%') AND NOT (i > 5 AND s IS NULL)")
    assert scan.filters == [
        Filter("", "or", (Filter("i", "=", 1), Filter("s", "like", "a%"))),
        Filter("", "not", (Filter("", "and", (Filter("i", ">", 5), Filter("s", "is_null"))),)),
    ]


def test_an_or_with_a_part_no_filter_expresses_is_not_pushed(runtime):
    _, scan = _scan(runtime, "SELECT id FROM t WHERE i = 1 OR length(s) = 2")
    assert scan.filters == []


@pytest.mark.parametrize("where", [
    "i = 1 OR s LIKE 'a%'",
    "NOT (i = 1)",
    "NOT (i IN (1, 3) OR s = 'b')",
    "NOT (i BETWEEN 3 AND 8)",
    "(i > 5 AND s IS NOT NULL) OR id < 2",
    "NOT (NOT (s < 'b'))",
])
def test_composite_filters_keep_sql_meaning(runtime, where):
    sql = f"SELECT id FROM t WHERE {where} ORDER BY id"
    assert _rows(runtime, sql) == _duckdb_rows(sql)


def test_order_by_columns_with_limit_is_a_top_n_scan(runtime):
    _, scan = _scan(runtime, "SELECT id, i FROM t WHERE i > 2 ORDER BY i DESC, id LIMIT 3")
    assert scan.limit == 3
    assert scan.order == [SortKey("i", True, True), SortKey("id", False, False)]
    assert _rows(runtime, "SELECT id, i FROM t WHERE i > 2 ORDER BY i DESC, id LIMIT 3") == [(11, 12), (10, 11), (8, 9)]


def test_order_by_an_expression_pushes_no_limit(runtime):
    _, scan = _scan(runtime, "SELECT id FROM t ORDER BY i + 1 LIMIT 3")
    assert scan.limit is None and scan.order == []


def test_a_source_without_ordering_gets_no_limit_for_top_n(runtime):
    """The file connector cannot order: the top-N is computed over all rows, so it is right."""
    sql = "SELECT id, i FROM t ORDER BY i NULLS FIRST, id LIMIT 4"
    assert _rows(runtime, sql) == _duckdb_rows(sql)


def test_between_with_limit_pushes_the_limit(runtime):
    _, scan = _scan(runtime, "SELECT id FROM t WHERE i BETWEEN 2 AND 9 LIMIT 2")
    assert scan.limit == 2 and len(scan.filters) == 2


def test_count_star_plan_names_its_output(runtime):
    plan, _ = _scan(runtime, "SELECT count(*) AS n FROM t WHERE i > 3")
    assert plan.count_as == "n"
    assert _rows(runtime, "SELECT count(*) AS n FROM t WHERE i > 3") == [(7,)]
    for sql in ("SELECT count(*) FROM t GROUP BY s", "SELECT count(i) FROM t", "SELECT count(*), 1 FROM t"):
        assert _scan(runtime, sql)[0].count_as is None


def test_match_becomes_a_full_text_filter_and_leaves_the_where_clause(runtime):
    plan, scan = _scan(runtime, "SELECT id FROM t WHERE match(body, 'doc 3') AND i > 1")
    assert Filter("body", "match", "doc 3") in scan.filters
    assert plan.full_text and "match" not in plan.sql.lower()


def test_match_on_a_source_that_cannot_search_is_a_clear_error(runtime):
    with pytest.raises(SqlError, match=r"dataset 't' \(file\) cannot run full-text match\(body"):
        runtime.query("SELECT id FROM t WHERE match(body, 'doc')").read_all()


@pytest.mark.parametrize("sql", [
    "SELECT id FROM acc WHERE match(body, 'doc')",  # accelerated: the copy cannot search
    "SELECT id FROM t WHERE match(body, 'doc') OR i = 1",  # not a conjunct
    "SELECT match(body, 'doc') FROM t",  # not a condition
    "SELECT t.id FROM t LEFT JOIN acc a ON a.id = t.id WHERE match(a.body, 'doc')",  # NULL-padded side
])
def test_match_where_no_source_can_run_it_is_refused(runtime, sql):
    with pytest.raises(SqlError, match=r"full-text match\(column, 'words'\) runs in the source"):
        runtime.query(sql).read_all()


def test_explain_shows_composites_and_order(runtime):
    text = runtime.query("EXPLAIN SELECT id FROM t WHERE i = 1 OR s = 'a' ORDER BY id LIMIT 2").read_all()
    plan = "\n".join(str(v) for col in text.columns for v in col.to_pylist())
    assert """("i" = 1) OR ("s" = 'a')""" in plan and "order=id ASC NULLS LAST" in plan
