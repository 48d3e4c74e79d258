"""A TEST DOUBLE of `engine.runtime.Runtime` over an in-memory DuckDB database.

It implements only the interface the Flight SQL server uses (auth_enabled, authenticate,
query, query_schema, parameter_count, tables, secrets, refused) so the server can be tested before, and
independently of, the real runtime. It is not a model of the engine's planner or policy.

Tables: spice.public.trips (primary key id), spice.public.cities, the view
spice.public.trip_cities, spice.runtime.task_history, and spice.public.flaky whose result
streams one row per batch, then fails with a QueryTimeout (to test mid-stream errors: the
server reads a result's first two batches before it starts streaming).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence

import duckdb
import pyarrow as pa

from engine.errors import (
    DatasetNotReady,
    QueryTimeout,
    ReadOnlyViolation,
    SqlError,
    Unauthenticated,
    UnknownDataset,
)
from engine.runtime import Principal, TableInfo


_SETUP = """
ATTACH ':memory:' AS spice;
CREATE SCHEMA spice.public;
CREATE SCHEMA spice.runtime;
CREATE TABLE spice.public.trips AS
    SELECT i::BIGINT AS id,
           ['paris', 'oslo', 'lima'][1 + i % 3] AS city,
           (i * 1.5)::DOUBLE AS fare,
           TIMESTAMP '2024-01-01' + i * INTERVAL 1 HOUR AS started_at
    FROM range(1, 10001) t(i);
CREATE TABLE spice.public.cities (name VARCHAR, country VARCHAR);
INSERT INTO spice.public.cities VALUES ('paris', 'FR'), ('oslo', 'NO'), ('lima', 'PE');
CREATE VIEW spice.public.trip_cities AS
    SELECT t.id, c.country FROM spice.public.trips t JOIN spice.public.cities c ON t.city = c.name;
CREATE TABLE spice.runtime.task_history (task VARCHAR, status VARCHAR);
INSERT INTO spice.runtime.task_history VALUES ('refresh', 'ok');
CREATE TABLE spice.public.flaky AS SELECT i::BIGINT AS n FROM range(3) t(i);
"""

_READ_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class DuckDBRuntimeDouble:
    """Test double of Runtime: DuckDB in memory, optional single API key."""

    def __init__(self, api_key: str | None = None, not_ready: Sequence[str] = ()):
        self.auth_enabled = api_key is not None
        self._api_key = api_key
        self._not_ready = {n.lower() for n in not_ready}
        self._db = duckdb.connect()
        self._db.execute(_SETUP)
        self.queries: list[tuple[str, str, list | None]] = []  # (sql, principal, params)
        self.secrets: tuple[str, ...] = ()
        self.refusals: list[tuple[str, str]] = []  # (code, text) of requests refused before running

    # -------------------------------------------------------------- auth

    def authenticate(self, api_key: str | None, client: str = "unknown", protocol: str = "http") -> Principal:
        if not self.auth_enabled:
            return Principal("anonymous")
        if api_key is None or not hmac.compare_digest(api_key, self._api_key or ""):
            raise Unauthenticated("invalid API key")
        return Principal("agent")

    # -------------------------------------------------------------- queries

    def query(
        self,
        sql: str,
        principal: Principal,
        *,
        protocol: str = "flight",
        params: Sequence[object] | None = None,
        client_gone: Callable[[], bool] | None = None,  # a local DuckDB has no source to cancel
    ) -> pa.RecordBatchReader:
        self._check(sql)
        self.queries.append((sql, principal.name, list(params) if params is not None else None))
        cursor = self._cursor()
        try:
            cursor.execute(sql, list(params) if params is not None else None)
            reader = cursor.to_arrow_reader(1024)
        except duckdb.Error as exc:
            raise _translate(exc) from None
        if re.search(r"\bflaky\b", sql, re.IGNORECASE):
            return _fail_after_its_rows(reader)
        return reader

    def refused(self, error: Exception, *, protocol: str, principal: str | None, text: str,
                started: float, task: str = "request") -> Exception:
        self.refusals.append((getattr(error, "code", "internal_error"), text))
        return error

    def query_schema(
        self, sql: str, principal: Principal, params: Sequence[object] | None = None,
        client_gone: Callable[[], bool] | None = None,
    ) -> pa.Schema:
        self._check(sql)
        if params is None:
            params = [None] * self.parameter_count(sql)
        cursor = self._cursor()
        try:
            cursor.execute(
                f"SELECT * FROM ({sql.rstrip().rstrip(';')}) AS q LIMIT 0", list(params) or None
            )
            return cursor.to_arrow_reader().schema
        except duckdb.Error as exc:
            raise _translate(exc) from None

    def parameter_count(self, sql: str) -> int:
        return len(self._statement(sql).named_parameters)

    # -------------------------------------------------------------- catalog

    def tables(self) -> list[TableInfo]:
        rows = self._db.execute(
            "SELECT table_schema, table_name, table_type FROM information_schema.tables "
            "WHERE table_catalog = 'spice' ORDER BY 1, 2"
        ).fetchall()
        out = []
        for schema, name, kind in rows:
            arrow = (
                self._cursor()
                .execute(f"SELECT * FROM spice.{schema}.{name} LIMIT 0")
                .to_arrow_reader()
                .schema
            )
            out.append(
                TableInfo(
                    catalog="spice",
                    schema=schema,
                    name=name,
                    table_type="VIEW" if kind == "VIEW" else "TABLE",
                    arrow_schema=arrow,
                    primary_key=("id",) if name == "trips" else (),
                    description=None,
                )
            )
        return out

    # -------------------------------------------------------------- helpers

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self._db.cursor()
        cursor.execute("USE spice.public")
        return cursor

    def _statement(self, sql: str):
        try:
            statements = self._db.extract_statements(sql)
        except duckdb.Error as exc:
            raise _translate(exc) from None
        if len(statements) != 1:
            raise SqlError(f"expected exactly one SQL statement, got {len(statements)}")
        return statements[0]

    def _check(self, sql: str) -> None:
        if self._statement(sql).type not in _READ_TYPES:
            raise ReadOnlyViolation("only read statements are allowed")
        for name in self._not_ready:
            if re.search(rf"\b{re.escape(name)}\b", sql, re.IGNORECASE):
                raise DatasetNotReady(f"dataset {name} has not finished its first load")


def _translate(exc: duckdb.Error) -> Exception:
    text = str(exc)
    if isinstance(exc, duckdb.CatalogException) and "does not exist" in text:
        return UnknownDataset(text)
    return SqlError(text)


def _fail_after_its_rows(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    def batches():
        for batch in reader:
            yield from (batch.slice(i, 1) for i in range(batch.num_rows))
        raise QueryTimeout("query exceeded its time limit")

    return pa.RecordBatchReader.from_batches(reader.schema, batches())
