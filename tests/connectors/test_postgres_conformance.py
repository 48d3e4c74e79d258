"""The connector conformance suite over a real PostgreSQL (tests/integration/postgres_server.py)."""

from __future__ import annotations

from typing import Callable, Mapping

import pytest

from connectors.base import DatasetSpec
from connectors.sql.postgres import PostgresConnector
from engine.errors import UnsupportedType
from tests.connectors.conformance import ConformanceCase, ConformanceSuite, ErrorCase, Source, reference_table
from tests.integration.postgres_server import SATCHEL_PASSWORD, postgres_server  # noqa: F401

DATASET = "reference"
# What PostgreSQL can hold: no 8-bit or unsigned integers.
PG_COLUMNS = ("id", "i16", "i32", "i64", "f32", "f64", "dec", "s", "b", "d", "ts", "tstz", "bin")
PG_TYPES = {"id": "bigint", "i16": "smallint", "i32": "integer", "i64": "bigint", "f32": "real",
            "f64": "double precision", "dec": "numeric(12,3)", "s": "text", "b": "boolean", "d": "date",
            "ts": "timestamp", "tstz": "timestamptz", "bin": "bytea"}


def pg_spec(params: Mapping[str, str], path: str = "public.reference", descriptions=None, **extra) -> DatasetSpec:
    return DatasetSpec(name=DATASET, path=path, prefix="postgres", params=dict(params),
                       column_descriptions=dict(descriptions or {}), **extra)


def build_postgres(request: pytest.FixtureRequest) -> Source:
    server = request.getfixturevalue("postgres_server")
    columns = ", ".join(f'"{c}" {PG_TYPES[c]}' for c in PG_COLUMNS)
    server.ingest("public.reference", reference_table(PG_COLUMNS), f"CREATE TABLE public.reference ({columns})")
    server.execute("DROP TABLE IF EXISTS public.oddities",
                   "CREATE TABLE public.oddities (id int, p point)",
                   "GRANT SELECT ON public.oddities TO satchel")
    params = server.params()
    wrong = "wr0ng-Pg-Pa55-Sh0uld-N3ver-Leak"

    def conn(p: Mapping[str, str], path: str = "public.reference", **extra) -> Callable[[], PostgresConnector]:
        return lambda: PostgresConnector(pg_spec(p, path, **extra))

    errors = [
        ErrorCase("wrong-password", conn({**params, "pg_pass": wrong}), r"password authentication failed"),
        ErrorCase("unreachable", conn({**params, "pg_port": "1"}), r"cannot connect to PostgreSQL"),
        ErrorCase("missing-table", conn(params, "public.no_such_table"), r"public\.no_such_table does not exist"),
        ErrorCase("bad-path", conn(params, "a.b.c"), r"must name <schema>\.<table>"),
        ErrorCase("unknown-param", conn({**params, "file_format": "csv"}),
                  r"unknown param\(s\) file_format .*allowed: .*pg_host"),
        ErrorCase("bad-sslmode", conn({**params, "pg_sslmode": "maybe"}), r"unknown pg_sslmode 'maybe'"),
        ErrorCase("both-connection-forms", conn({**params, "pg_connection_string": "host=x"}),
                  r"either pg_connection_string or"),
        ErrorCase("connection-string-wrong-password",
                  conn({"pg_connection_string": f"postgresql://satchel:{wrong}@127.0.0.1:{server.port}/satchel_test"}),
                  r"password authentication failed"),
        ErrorCase("unsupported-type", conn(params, "public.oddities"), r"column 'p' has type point",
                  raises=UnsupportedType),
    ]

    def make(descriptions: Mapping[str, str]) -> PostgresConnector:
        return PostgresConnector(pg_spec(params, descriptions=descriptions))

    return Source(make=make, errors=errors, secrets=(SATCHEL_PASSWORD, wrong), dataset=DATASET)


class TestPostgresConformance(ConformanceSuite):
    pytestmark = pytest.mark.integration
    cases = [ConformanceCase("postgres", PG_COLUMNS, build=build_postgres)]
