"""What FlightSqlConnector / AdbcConnector send, without a server: filters per remote dialect
(composites, values that must stay local), params and secrets, whole-query dialect checks."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from types import SimpleNamespace

import pyarrow as pa
import pytest
import sqlglot
from sqlglot.optimizer.qualify import qualify

from connectors.sql.filters import DIALECTS, render_filter
from connectors.base import DatasetSpec, Filter
from connectors.sql.flightsql import FlightSqlConnector, dialect_of_vendor
from engine.errors import ConnectorError
from engine.arrow_sql_types import sql_type
from engine.query.pushdown import _datafusion_same_meaning, _spark_same_meaning

TYPES = {"i": pa.int64(), "f": pa.float64(), "s": pa.string(), "d": pa.date32(), "ts": pa.timestamp("us"),
         "tz": pa.timestamp("us", "UTC"), "dec": pa.decimal128(12, 3), "bin": pa.binary(), "b": pa.bool_()}


def render(f: Filter, dialect: str) -> str | None:
    return render_filter(f, TYPES, DIALECTS[dialect])


def test_composites_render_only_when_every_leaf_does() -> None:
    both = Filter("", "or", (Filter("i", "=", 1), Filter("s", "is_null")))
    assert render(both, "satchel") == '("i" = 1 OR "s" IS NULL)'
    assert render(Filter("", "not", (both,)), "satchel") == '(NOT ("i" = 1 OR "s" IS NULL))'
    with_float = Filter("", "and", (Filter("i", "=", 1), Filter("f", ">", 0.5)))
    assert render(with_float, "satchel") is not None
    assert render(with_float, "datafusion") is None  # -0.0 / NaN order differently there


@pytest.mark.parametrize("f", [
    Filter("f", "=", math.nan), Filter("f", ">", math.inf), Filter("i", "=", 1.5), Filter("i", "=", True),
    Filter("ts", ">", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)), Filter("s", "=", "nul\x00"),
    Filter("i", "in", (1, None)), Filter("dec", "=", decimal.Decimal("0.0005")),
])
def test_values_that_do_not_convert_exactly_stay_local(f: Filter) -> None:
    assert all(render(f, d) is None for d in DIALECTS)


def test_literals_per_dialect() -> None:
    assert render(Filter("s", "like", "a\\c%"), "satchel") == "\"s\" LIKE 'a\\\\c%'"  # public LIKE escapes with \
    assert render(Filter("s", "like", "a\\c%"), "sqlite") == "\"s\" LIKE 'a\\c%'"  # no escape char there
    assert render(Filter("s", "<", "b"), "postgres") == "\"s\" COLLATE \"C\" < 'b'"
    assert render(Filter("s", "<", "b"), "generic") is None
    assert render(Filter("s", "=", "it's"), "generic") == "\"s\" = 'it''s'"
    assert render(Filter("bin", "=", b"\x00\xff"), "datafusion") == "\"bin\" = X'00ff'"
    assert render(Filter("tz", ">=", dt.datetime(2024, 1, 15, 17, 30, tzinfo=dt.timezone(dt.timedelta(hours=5)))),
                  "satchel") == "\"tz\" >= CAST('2024-01-15 12:30:00+00:00' AS TIMESTAMPTZ)"
    assert render(Filter("d", "=", "2024-02-29"), "sqlite") is None  # dates are text in SQLite


def test_vendor_names_pick_the_dialect() -> None:
    assert dialect_of_vendor("Satchel") == "satchel"
    assert dialect_of_vendor("RoAPI Flight SQL Server") == "datafusion"
    assert dialect_of_vendor("Dremio") == "generic"


def test_params_and_secrets() -> None:
    secret = "T0ken-Sh0uld-N3ver-Leak"
    conn = FlightSqlConnector(DatasetSpec("d", "public.t", "flightsql",
                                          {"flightsql_endpoint": "grpc://h:1", "flightsql_token": secret}))
    assert secret not in repr(conn) and secret not in conn.source_id
    assert conn.relation_sql == '"public"."t"'
    other = FlightSqlConnector(DatasetSpec("d", "t", "flightsql",
                                           {"flightsql_endpoint": "grpc://h:1", "flightsql_token": "another"}))
    assert other.source_id != conn.source_id  # other credentials: never one whole query
    query = FlightSqlConnector(DatasetSpec("d", "SELECT a FROM t;", "flightsql", {"flightsql_endpoint": "grpc://h:1"}))
    assert query.relation_sql == '(SELECT a FROM t) AS "q"'
    with pytest.raises(ConnectorError, match="dataset 'd': param flightsql_endpoint must be grpc://") as e:
        FlightSqlConnector(DatasetSpec("d", "t", "flightsql", {"flightsql_endpoint": f"grpc://u:{secret}@h:1"}))
    assert secret not in str(e.value)
    with pytest.raises(ConnectorError, match="cannot read flightsql_tls_ca_cert"):
        FlightSqlConnector(DatasetSpec("d", "t", "flightsql", {"flightsql_endpoint": "grpc+tls://h:1",
                                                               "flightsql_tls_ca_cert": "missing.pem"}))


@pytest.mark.parametrize("sql, same", [
    ('SELECT a.x, count(*) AS n FROM "t" AS a JOIN "u" AS b ON a.x = b.x WHERE a.y > 3 GROUP BY a.x ORDER BY n DESC LIMIT 5', True),
    ("SELECT x / 2 AS h FROM t", True),
    ("SELECT x FROM t WHERE s LIKE 'a%'", False),
    ("SELECT upper(s) AS u FROM t", False),
    ("SELECT CAST(x AS TEXT) AS s FROM t", False),
    ("SELECT row_number() OVER (ORDER BY x) AS r FROM t", False),
])
def test_datafusion_whole_queries_are_a_conservative_set(sql: str, same: bool) -> None:
    assert _datafusion_same_meaning(sqlglot.parse_one(sql, read="postgres")) is same


def test_full_text_match_goes_only_to_another_satchel() -> None:
    f = Filter("s", "match", "it's words")
    assert render(f, "satchel") == """match("s", 'it''s words')"""
    assert all(render(f, d) is None for d in DIALECTS if d != "satchel")


def test_spark_literals_and_quoting() -> None:
    """Sail (Spark SQL): backslash escapes in strings, LIKE escaping with a backslash,
    TIMESTAMP_NTZ for naive timestamps, instants as TIMESTAMP with their offset, no floats."""
    d = DIALECTS["spark"]
    assert render(Filter("s", "=", "it's a\\b"), "spark") == "`s` = 'it\\'s a\\\\b'"
    assert render(Filter("s", "like", "a\\c%"), "spark") == "`s` LIKE 'a\\\\\\\\c%'"
    assert render(Filter("ts", "=", dt.datetime(2024, 1, 15, 12, 0)), "spark") == "`ts` = TIMESTAMP_NTZ '2024-01-15 12:00:00'"
    assert render(Filter("tz", "=", dt.datetime(2024, 1, 15, 12, 0, tzinfo=dt.timezone.utc)), "spark") == \
        "`tz` = CAST('2024-01-15 12:00:00+00:00' AS TIMESTAMP)"
    assert render(Filter("f", ">", 0.5), "spark") is None
    assert d.ident("we`ird") == "`we``ird`"
    conn = FlightSqlConnector(DatasetSpec("d", "db.t", "flightsql", {"flightsql_endpoint": "grpc://h:1",
                                                                    "flightsql_dialect": "spark"}))
    assert conn.relation_sql == "`db`.`t`" and conn.dialect() == "spark"
    query = FlightSqlConnector(DatasetSpec("d", "SELECT a FROM t", "flightsql", {"flightsql_endpoint": "grpc://h:1",
                                                                                "flightsql_dialect": "spark"}))
    assert query.relation_sql == "(SELECT a FROM t) AS `q`"


@pytest.mark.parametrize("sql, same", [
    ('SELECT a.x, count(*) AS n FROM "t" AS a JOIN "u" AS b ON a.x = b.x WHERE a.y > 3 GROUP BY a.x ORDER BY n DESC LIMIT 5', True),
    ("SELECT x / 2 AS h FROM t", False),  # fractional division in Spark
    ("SELECT big + 1 AS h, dec * 2 AS d FROM t", True),
    ("SELECT small + 1 AS h FROM t", False),  # 32-bit integers wrap around on overflow in Spark
    ("SELECT -small AS h FROM t", False),
    ("SELECT x FROM t WHERE small > -1", True),  # a negative literal is no arithmetic
    ("SELECT CAST(big AS DOUBLE) AS f FROM t", False),
    ("SELECT CAST('2024-01-01' AS DATE) AS d FROM t", True),
    ("SELECT upper(s) AS u FROM t", False),
])
def test_spark_whole_queries_are_a_conservative_set(sql: str, same: bool) -> None:
    schema = pa.schema([("x", pa.int64()), ("y", pa.int64()), ("big", pa.int64()), ("small", pa.int32()),
                        ("dec", pa.decimal128(12, 2)), ("s", pa.string())])
    # the planner's scans as _spark_same_meaning reads them (table name, columns, schema)
    scans = [SimpleNamespace(register_as=t, columns=None, binding=SimpleNamespace(schema=schema)) for t in ("t", "u")]
    tree = qualify(sqlglot.parse_one(sql, read="postgres"), schema={t: {f.name: sql_type(f.type) for f in schema}
                                                                     for t in ("t", "u")}, dialect="postgres")
    assert _spark_same_meaning(tree, SimpleNamespace(scans=scans)) is same


def test_adbc_spark_driver_picks_the_spark_dialect() -> None:
    from connectors.sql.adbc import AdbcConnector

    conn = AdbcConnector(DatasetSpec("d", '"parquet"."/data/o.parquet"', "adbc",
                                     {"adbc_driver": "adbc_driver_spark", "adbc_uri": "sc://h:1"}))
    try:
        assert conn.dialect == "spark" and conn.relation_sql == "`parquet`.`/data/o.parquet`"
        assert conn.filter_dialect.name == "spark"
    finally:
        conn.close()
