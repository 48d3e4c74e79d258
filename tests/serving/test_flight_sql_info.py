"""Catalog metadata helpers: LIKE patterns, SqlInfo union encoding, type names."""

from __future__ import annotations

import pyarrow as pa
import pytest

from serving.flight_sql import catalog
from serving.flight_sql import info


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("trip%", "trips", True),
        ("trip%", "trip", True),
        ("trip%", "atrip", False),
        ("t_ips", "trips", True),
        ("t_ips", "tips", False),
        ("task\\_history", "task_history", True),
        ("task\\_history", "taskXhistory", False),
        ("a.b", "axb", False),  # regex characters are literal
        ("%", "", True),
        ("PUBLIC", "public", False),  # case-sensitive, as identifiers are stored
    ],
)
def test_like_patterns(pattern, value, expected):
    assert (catalog.like_to_regex(pattern).fullmatch(value) is not None) is expected


def test_sql_info_table_encodes_each_value_in_its_union_slot():
    values = {
        0: "Satchel",
        3: True,
        8: info.Int32(0),
        541: 63,
        508: ["limit", "ilike"],
        517: {0: [0, 19], 19: [0]},
    }
    table = info.sql_info_table(values, [])
    assert table.schema == info.SQL_INFO_SCHEMA
    union = table.column("value").chunk(0)
    assert union.type_codes.to_pylist() == [0, 1, 3, 4, 5, 2]  # ids sorted: 0, 3, 8, 508, 517, 541
    assert union.to_pylist() == [
        "Satchel",
        True,
        0,
        ["limit", "ilike"],
        [(0, [0, 19]), (19, [0])],
        63,
    ]
    assert info.sql_info_table(values, [541, 12345, 0]).column("info_name").to_pylist() == [541, 0]


def test_sql_info_table_with_no_match_is_empty_but_typed():
    table = info.sql_info_table({0: "x"}, [999])
    assert table.num_rows == 0 and table.schema == info.SQL_INFO_SCHEMA


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        (pa.int64(), "bigint"),
        (pa.int32(), "integer"),
        (pa.float64(), "double precision"),
        (pa.string(), "varchar"),
        (pa.large_string(), "varchar"),
        (pa.timestamp("us", tz="UTC"), "timestamp with time zone"),
        (pa.decimal128(10, 2), "numeric(10,2)"),
        (pa.list_(pa.int32()), "integer[]"),
        (pa.uint64(), "numeric(20,0)"),  # as the planner types it: one table, one answer
        (pa.uint32(), "bigint"),
        (pa.struct([("a", pa.int32())]), "struct"),
    ],
)
def test_sql_type_names(dtype, name):
    from engine.arrow_sql_types import catalog_type_name

    assert catalog_type_name(dtype) == name
