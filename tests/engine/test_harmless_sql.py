"""Harmless input gets an answer, not a misleading refusal: a leading byte-order mark (editors
and some HTTP clients send one) and EXPLAIN ANALYZE (a clear 400 naming the alternative, not a
403 read_only)."""

from __future__ import annotations

import pytest

from engine.errors import ReadOnlyViolation, SqlError
from engine.sql_policy import parse_query


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
