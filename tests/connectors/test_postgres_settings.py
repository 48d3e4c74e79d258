"""PostgreSQL connector pieces that need no server: connection settings, identity, table
paths, filter rendering and change decoding."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pyarrow as pa
import pytest

from connectors.sql.pool import GateSettings
from connectors.base import DatasetSpec, Filter
from connectors.sql.postgres import PgColumn, PgSettings, _decoded_values, _render_filter, _split_table
from engine.errors import ConnectorError


def settings(**params) -> PgSettings:
    return PgSettings.from_spec(DatasetSpec(name="d", path="public.t", prefix="postgres", params=params))


def test_settings_build_a_uri_and_an_identity_without_the_password() -> None:
    s = settings(pg_host="db", pg_port="6543", pg_db="shop", pg_user="reader", pg_pass="p@ss:/w?rd", pg_sslmode="require")
    assert s.uri.startswith("postgresql://reader:p%40ss%3A%2Fw%3Frd@db:6543/shop?")
    assert "sslmode=require" in s.uri and "TimeZone%3DUTC" in s.uri and "default_transaction_read_only%3Don" in s.uri
    assert "p@ss" not in s.source_id and "host=db" in s.source_id and "user=reader" in s.source_id
    assert s.secrets == ("p@ss:/w?rd",)
    same = settings(pg_connection_string="postgresql://reader:p%40ss%3A%2Fw%3Frd@db:6543/shop?sslmode=require")
    assert same.source_id == s.source_id
    kv = settings(pg_connection_string="host=db port=6543 dbname=shop user=reader password='p@ss:/w?rd' sslmode=require")
    assert kv.source_id == s.source_id
    assert settings(pg_host="db", pg_user="reader", pg_pass="other").source_id != \
        settings(pg_host="db", pg_user="reader", pg_pass="p@ss").source_id


@pytest.mark.parametrize("params, match", [
    ({"pg_port": "x"}, "pg_port must be a number"),
    ({"pg_sslmode": "sometimes"}, "unknown pg_sslmode"),
    ({"connection_pool_size": "0"}, "connection_pool_size must be a positive integer"),
    ({"pg_connection_string": "host=x", "pg_user": "u"}, "either pg_connection_string or pg_user"),
    ({"pg_connection_string": "not a conninfo ="}, "neither a postgresql:// URI"),
])
def test_bad_settings_are_clear_errors(params, match) -> None:
    with pytest.raises(ConnectorError, match=match):
        settings(**params)


@pytest.mark.parametrize("params, match", [
    ({"max_concurrent_statements": "0"}, "max_concurrent_statements must be an integer >= 1, got '0'"),
    ({"statement_queue_size": "-1"}, "statement_queue_size must be an integer >= 0"),
    ({"statement_queue_timeout": "soon"}, "statement_queue_timeout must be a positive duration"),
])
def test_bad_statement_cap_params_are_clear_errors(params, match) -> None:
    with pytest.raises(ConnectorError, match=match):
        GateSettings.from_params("d", params)
    assert GateSettings.from_params("d", {"statement_queue_timeout": "500ms"}).wait_s == 0.5


def test_table_paths() -> None:
    assert _split_table("d", "public.orders") == ("public", "orders")
    assert _split_table("d", "orders") == ("public", "orders")
    assert _split_table("d", '"My Schema"."Odd.Name"') == ("My Schema", "Odd.Name")
    with pytest.raises(ConnectorError, match="<schema>.<table>"):
        _split_table("d", "a.b.c")


def col(name: str, base: str, arrow: pa.DataType, filterable: bool = True) -> PgColumn:
    return PgColumn(name, base, base, arrow, f'"{name}"', filterable, None)


@pytest.mark.parametrize("f, column, sql", [
    (Filter("s", "<", "b"), col("s", "text", pa.string()), '"s" COLLATE "C" < \'b\''),
    (Filter("s", "like", "a\\_%"), col("s", "text", pa.string()), '"s" COLLATE "C" LIKE \'a\\_%\' ESCAPE \'\''),
    (Filter("s", "=", "it's"), col("s", "text", pa.string()), '"s" COLLATE "C" = \'it\'\'s\''),
    (Filter("i", ">", 1.5), col("i", "int4", pa.int32()), "\"i\" > '1.5'::float8"),
    (Filter("i", "in", (1, 2)), col("i", "int8", pa.int64()), '"i" IN (1, 2)'),
    (Filter("d", ">=", math.inf), col("d", "float8", pa.float64()), "\"d\" >= 'Infinity'::float8"),
    (Filter("n", "=", Decimal("1.50")), col("n", "numeric", pa.decimal128(5, 2)), "\"n\" = '1.50'::numeric"),
    (Filter("t", ">", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)), col("t", "timestamptz", pa.timestamp("us", "UTC")),
     "\"t\" > '2024-01-01 00:00:00+00:00'::timestamptz"),
    (Filter("b", "=", b"\x00\xff"), col("b", "bytea", pa.binary()), "\"b\" = '\\x00ff'::bytea"),
])
def test_filters_render_with_the_engine_meaning(f, column, sql) -> None:
    assert _render_filter(f, column) == sql


@pytest.mark.parametrize("f, column", [
    (Filter("d", "=", math.nan), col("d", "float8", pa.float64())),
    (Filter("t", ">", dt.datetime(2024, 1, 1)), col("t", "timestamptz", pa.timestamp("us", "UTC"))),
    (Filter("i", "=", True), col("i", "int4", pa.int32())),
    (Filter("i", "in", (1, None)), col("i", "int4", pa.int32())),
    (Filter("u", "=", "x"), col("u", "uuid", pa.string(), filterable=False)),
    (Filter("n", "=", Decimal("0.001")), col("n", "numeric", pa.decimal128(5, 2))),
])
def test_filters_postgres_could_mean_differently_are_not_pushed(f, column) -> None:
    assert _render_filter(f, column) is None


def test_change_records_decode() -> None:
    assert _decoded_values("id[integer]:1 v[text]:'it''s' n[numeric]:null \"Odd Col\"[text]:'x y'") == {
        "id": ("integer", "1"), "v": ("text", "it's"), "n": ("numeric", None), "Odd Col": ("text", "x y")}


@pytest.mark.parametrize("check_interval", [True, False])
def test_the_extensions_sessions_keep_the_connectors_options_under_a_name_of_their_own(check_interval) -> None:
    import urllib.parse

    from connectors.sql.pg_scanner import scanner_uri

    s = settings(pg_host="db.internal", pg_user="agent", pg_pass="p@ss/w#rd", pg_db="shop")
    uri = scanner_uri(s.uri, "satchel/pod scan-1234", check_interval)
    parts = urllib.parse.urlsplit(uri)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert query["application_name"] == "satchel/pod scan-1234"
    assert "default_transaction_read_only=on" in query["options"] and "TimeZone=UTC" in query["options"]
    assert ("client_connection_check_interval=1000" in query["options"]) is check_interval
    assert urllib.parse.unquote(parts.password) == "p@ss/w#rd" and parts.hostname == "db.internal"
    assert urllib.parse.urlsplit(s.uri)._replace(query="") == parts._replace(query="")
