"""Harmless input gets an answer, not a misleading refusal: a leading byte-order mark (editors
and some HTTP clients send one) and EXPLAIN ANALYZE (a clear 400 naming the alternative, not a
403 read_only)."""

from __future__ import annotations

import time

import pytest

from engine.errors import ReadOnlyViolation, SqlError
from engine.query.sql_policy import parse_query


def test_a_byte_order_mark_is_not_part_of_the_sql(make_runtime) -> None:
    tree, explain = parse_query("\ufeffSELECT 1 AS one")
    assert not explain and tree.sql() == "SELECT 1 AS one"
    rt = make_runtime("version: v1\nkind: Spicepod\nname: bom\n")
    assert rt.query("\ufeff SELECT 40 + 2 AS n").read_all().to_pylist() == [{"n": 42}]
    with pytest.raises(ReadOnlyViolation):  # still the read-only check, BOM or not
        parse_query("\ufeffDROP TABLE regions")


def test_explain_analyze_is_a_clear_sql_error_not_a_refusal() -> None:
    with pytest.raises(SqlError) as info:
        parse_query("EXPLAIN ANALYZE SELECT 1")
    assert not isinstance(info.value, ReadOnlyViolation) and info.value.http_status == 400
    assert "use EXPLAIN" in info.value.message


@pytest.mark.parametrize("hidden", ["pg_settings", "duckdb_databases", "__satchel_meta", "duckdb_settings"])
def test_a_cte_name_out_of_scope_never_reaches_an_engine_table(make_runtime, hidden) -> None:
    from engine.errors import UnknownDataset

    rt = make_runtime("""
version: v1
kind: Spicepod
name: shadow
datasets:
  - from: file:t.csv
    name: t
    acceleration:
      engine: duckdb
""", files={"t.csv": "id\n1\n2\n"}, start=True)
    deadline = time.monotonic() + 30
    while not rt.ready():
        assert time.monotonic() < deadline, rt.status()
        time.sleep(0.05)
    sql = (f"SELECT * FROM t o, (WITH {hidden} AS (SELECT 1 AS a) SELECT a FROM {hidden}) s, {hidden} x")
    with pytest.raises(UnknownDataset, match=f"unknown table '{hidden}'"):
        rt.query(sql).read_all()
    # in scope, a CTE still shadows as SQL says
    assert rt.query(f"WITH {hidden} AS (SELECT 7 AS a) SELECT a FROM {hidden}").read_all().to_pylist() == [{"a": 7}]
    ok = rt.query(f"SELECT s.a FROM (WITH {hidden} AS (SELECT 1 AS a) SELECT a FROM {hidden}) s").read_all()
    assert ok.to_pylist() == [{"a": 1}]


def test_positional_parameters_bind_in_text_order() -> None:
    from engine.query.sql_policy import bind_parameters

    tree, _ = parse_query("SELECT ? + 1 AS a, ? AS b FROM (SELECT ? AS x) s WHERE s.x > ?")
    assert bind_parameters(tree, [41, "answer", 5, 4]).sql() == \
        "SELECT 41 + 1 AS a, 'answer' AS b FROM (SELECT 5 AS x) AS s WHERE s.x > 4"


def test_positional_parameters_bind_in_text_order_across_clauses() -> None:
    # the parser stores LIMIT before WHERE: a tree walk would give WHERE the LIMIT's value
    from engine.query.sql_policy import bind_parameters

    tree, _ = parse_query("SELECT n / ? AS r, ? || c AS s FROM t WHERE d > ? ORDER BY d LIMIT ? OFFSET ?")
    assert bind_parameters(tree, [2, "x", 3, 4, 5]).sql() == \
        "SELECT n / 2 AS r, 'x' || c AS s FROM t WHERE d > 3 ORDER BY d NULLS LAST LIMIT 4 OFFSET 5"
