"""`from: postgres:<schema>.<table>` — a PostgreSQL table, read Arrow-natively through ADBC.

Params: `pg_host`, `pg_port` (5432), `pg_db`, `pg_user`, `pg_pass`, `pg_sslmode`, or one
`pg_connection_string` (a libpq URI or `key=value` string; the other pg_* params may add to a
URI-less setup only); `connection_pool_size` (default 4); the source's statement cap
`max_concurrent_statements`, `statement_queue_size`, `statement_queue_timeout` (see _adbc_pool).
Secrets come in via `${secrets:...}` and never appear in errors or logs.

Reads go through the ADBC PostgreSQL driver (libpq, binary COPY into Arrow batches, streamed),
which cancels the statement on the server when a client goes away or a query times out
(`PQcancel`). A refresh's full read of a large table goes through DuckDB's postgres extension
where it gives exactly the same types (pg_scanner: a quarter of the driver's decoding CPU, and
its statements are cancelled by their own application_name).

Types are chosen from the catalog (never inferred from data), so a schema is stable:
smallint/int/bigint, real/double, numeric(p, s) (decimal128 up to 38 digits, decimal256 up to
76), text/varchar/char/name/citext, bool, date, time, timestamp, timestamptz (UTC), interval,
bytea, uuid/json/jsonb/enum/inet/cidr/macaddr/xml (as text), money (decimal(19, 2)), and
one-dimensional arrays of those. Unbounded numeric, geometric types, ranges, bit strings and
anything else follow `unsupported_type_action` (`string` serves their PostgreSQL text form).
Column comments (COMMENT ON COLUMN) become column descriptions when the pod gives none.

Filters are pushed as PostgreSQL SQL only where PostgreSQL gives the engine's answer: string
comparisons use COLLATE "C" (code point order), LIKE has no escape character, values are
converted to the column type only when exact, float NaN and real (float4) columns are left to
the engine, and naive/aware timestamps never meet. Everything else is UNSUPPORTED.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import hashlib
import logging
import math
import re
import threading
import time
import urllib.parse
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import adbc_driver_postgresql.dbapi as adbc_pg
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConnectorError, Overloaded, QueryTimeout

from ..arrow_filters import _convert
from ..base import (CALLER, DatasetSpec, DescribedStatement, Filter, FilterSupport, checked_projection,
                    with_descriptions)
from ..params import check_params, check_type_action
from ..source_types import resolve_unsupported
from ..sql_render import quote_ident, written_ident
from .pg_scanner import SCANNED_TYPES, ExtensionUnavailable, ScanFailed, ScannerRead, extension_path
from .pg_parallel import MAX_PARTS, PAGES_PER_PART, ParallelRead, extra_slots, page_ranges
from .pool import (
    GATE_PARAMS,
    ConnectFailed,
    ConnectionPool,
    GateSettings,
    RunningStatement,
    close_quietly,
    execute_pooled,
    join_gate,
    leave_gate,
)

log = logging.getLogger("satchel.connectors.sql.postgres")

PG_PARAMS = ("pg_host", "pg_port", "pg_db", "pg_user", "pg_pass", "pg_sslmode", "pg_connection_string",
             "connection_pool_size") + GATE_PARAMS
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
BATCH_ROWS = 64 * 1024
EXTENSION_RETRY_SECONDS = 3600

# -- connection settings -------------------------------------------------------------------------



def quote_literal(text: str) -> str:
    if "\x00" in text:
        raise ValueError("PostgreSQL text cannot hold NUL characters")
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class PgSettings:
    """How to reach one server: the libpq URI (with secrets) and its identity (without)."""

    uri: str
    source_id: str
    secrets: tuple[str, ...]
    pool_size: int

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> "PgSettings":
        p = dict(spec.params)
        name = spec.name
        pool = p.get("connection_pool_size", "4")
        try:
            pool_size = int(pool)
            if pool_size < 1:
                raise ValueError
        except ValueError:
            raise ConnectorError(f"dataset '{name}': param connection_pool_size must be a positive integer, got '{pool}'") from None
        sslmode = p.get("pg_sslmode")
        if sslmode is not None and sslmode not in SSL_MODES:
            raise ConnectorError(f"dataset '{name}': unknown pg_sslmode '{sslmode}'; allowed: {', '.join(SSL_MODES)}")
        conn = p.get("pg_connection_string")
        if conn:
            extra = sorted(k for k in ("pg_host", "pg_port", "pg_db", "pg_user", "pg_pass") if k in p)
            if extra:
                raise ConnectorError(f"dataset '{name}': give either pg_connection_string or {', '.join(extra)}, not both")
            fields = _parse_conninfo(name, conn)
            if sslmode:
                fields["sslmode"] = sslmode
        else:
            fields = {"host": p.get("pg_host", "localhost"), "port": p.get("pg_port", "5432"),
                      "dbname": p.get("pg_db", "postgres")}
            if "pg_user" in p:
                fields["user"] = p["pg_user"]
            if "pg_pass" in p:
                fields["password"] = p["pg_pass"]
            if sslmode:
                fields["sslmode"] = sslmode
        port = fields.get("port", "5432")
        if not str(port).isdigit():
            raise ConnectorError(f"dataset '{name}': pg_port must be a number, got '{port}'")
        secrets = tuple(s for s in (fields.get("password"),) if s)
        # Every session: UTC (timestamptz values and literals), ISO dates and intervals.
        query = {k: v for k, v in fields.items() if k not in ("host", "port", "dbname", "user", "password")}
        # Read-only sessions: a pushed-down query can never write, whatever functions it calls.
        query["options"] = ("-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 "
                            "-c default_transaction_read_only=on")
        app = f"satchel/{_tag_value(spec.pod)}" if spec.pod else "satchel"
        query.setdefault("application_name", app[:63])  # who connects, in pg_stat_activity
        auth = ""
        if fields.get("user"):
            auth = urllib.parse.quote(fields["user"], safe="")
            if fields.get("password"):
                auth += ":" + urllib.parse.quote(fields["password"], safe="")
            auth += "@"
        host = fields.get("host", "localhost")
        hostpart = f"[{host}]" if ":" in host and not host.startswith("[") else urllib.parse.quote(host, safe="/")
        uri = (f"postgresql://{auth}{hostpart}:{port}/{urllib.parse.quote(fields.get('dbname', 'postgres'), safe='')}"
               f"?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}")
        ident = {k: v for k, v in sorted(fields.items()) if k != "password"}
        source_id = "postgres:" + ";".join(f"{k}={v}" for k, v in ident.items())
        if fields.get("password"):  # same server and user but another password is another identity
            source_id += ";pw=" + hashlib.sha256(fields["password"].encode()).hexdigest()[:12]
        return cls(uri, source_id, secrets, pool_size)


def _tag_value(text: str) -> str:
    """`text` safe inside an SQL comment and application_name (printable ASCII, no `*/`)."""
    return re.sub(r"[^A-Za-z0-9_.:@-]", "_", text)[:64] or "-"


def tagged(sql: str, pod: str) -> str:
    """`sql` behind a comment naming the pod, the principal and the kind of task it serves, so a
    DBA sees in pg_stat_activity (and the server log) who is asking."""
    caller = CALLER.get()
    return (f"/* satchel pod={_tag_value(pod)} principal={_tag_value(caller.principal)} "
            f"task={_tag_value(caller.kind)} */ {sql}")


_KV = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


def _quote_userinfo(uri: str) -> str:
    """`uri` with its user name and password percent-encoded. The documented form
    `postgresql://user:${secrets:PG_PASS}@host/db` puts the password in verbatim, so a password
    holding `@`, `/` or `#` would otherwise split the URI in the wrong place (and a parser
    error would quote a fragment of it): the user info ends at the last `@` before the query."""
    scheme, _, rest = uri.partition("://")
    authority_and_path, mark, query = rest.partition("?")
    userinfo, at, host_and_path = authority_and_path.rpartition("@")
    if not at:
        return uri
    user, colon, password = userinfo.partition(":")
    quoted = urllib.parse.quote(urllib.parse.unquote(user), safe="")
    if colon:
        quoted += ":" + urllib.parse.quote(urllib.parse.unquote(password), safe="")
    return f"{scheme}://{quoted}@{host_and_path}{mark}{query}"


def _parse_conninfo(dataset: str, text: str) -> dict[str, str]:
    """A libpq URI or `key=value ...` string as fields (host, port, dbname, user, password, ...)."""
    text = text.strip()
    if text.startswith(("postgres://", "postgresql://")):
        url = urllib.parse.urlsplit(_quote_userinfo(text))
        fields = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            port = url.port
        except ValueError:
            raise ConnectorError(f"dataset '{dataset}': pg_connection_string has a bad port") from None
        if url.hostname:
            fields["host"] = url.hostname
        if port:
            fields["port"] = str(port)
        if url.path.strip("/"):
            fields["dbname"] = urllib.parse.unquote(url.path.strip("/"))
        if url.username:
            fields["user"] = urllib.parse.unquote(url.username)
        if url.password:
            fields["password"] = urllib.parse.unquote(url.password)
        return fields
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _KV.match(text, pos)
        if not m or m.end() == pos:
            raise ConnectorError(f"dataset '{dataset}': pg_connection_string is neither a postgresql:// URI nor "
                                 f"'key=value ...' pairs")
        value = m.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields[m.group(1)] = value
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return fields


# -- connection pool -------------------------------------------------------------------------------


def _batch_size_hint(cur: Any) -> None:
    cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(8 << 20)})
    _statement_timeout(cur)


TIMEOUT_STEP_MS = 250  # statement_timeout is the time left rounded up to this (see _statement_timeout)
_session_timeouts: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()


def _statement_timeout(cur: Any) -> None:
    """The task's time left as the session's statement_timeout (0: none), so PostgreSQL itself
    stops working when the agent's deadline passes. Pooled sessions keep settings, so it is set
    whenever it differs from the session's: rounded up to TIMEOUT_STEP_MS (PostgreSQL then stops
    at most that long after the deadline, within the grace `engine.cancel.guarded` gives a
    source to stop itself), consecutive queries under the same query_timeout need no SET (a
    round trip each)."""
    left = CALLER.get().seconds_left()
    ms = 0 if left is None else max(1, math.ceil(left * 1000 / TIMEOUT_STEP_MS)) * TIMEOUT_STEP_MS
    conn = cur.connection
    if _session_timeouts.get(conn) == ms:
        return
    cur.execute(f"SET statement_timeout = {ms}")
    _session_timeouts[conn] = ms


def _is_sql_error(e: BaseException) -> bool:
    """An error the server raised about the statement (retrying cannot help)."""
    return type(e).__name__ in ("ProgrammingError", "IntegrityError", "DataError", "NotSupportedError") \
        or "ERROR:" in str(e)


_POOLS: dict[str, ConnectionPool] = {}
_POOLS_LOCK = threading.Lock()


def _pool_for(settings: PgSettings) -> ConnectionPool:
    """One pool per server and credentials, shared by every dataset that uses them."""
    key = hashlib.sha256(settings.uri.encode()).hexdigest()
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ConnectionPool(functools.partial(adbc_pg.connect, settings.uri, autocommit=True),
                                                settings.pool_size)
        return pool


# -- types -----------------------------------------------------------------------------------------

_SCALARS: dict[str, pa.DataType] = {
    "int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "oid": pa.int64(),
    "float4": pa.float32(), "float8": pa.float64(), "bool": pa.bool_(),
    "text": pa.string(), "varchar": pa.string(), "bpchar": pa.string(), "name": pa.string(), "citext": pa.string(),
    "date": pa.date32(), "time": pa.time64("us"), "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", "UTC"), "interval": pa.month_day_nano_interval(), "bytea": pa.binary(),
}
# Served as their PostgreSQL text form (the query casts them ::text).
_AS_TEXT = {"uuid", "json", "jsonb", "inet", "cidr", "macaddr", "macaddr8", "xml"}
# Native types whose filters PostgreSQL evaluates exactly as the engine does.
_FILTERABLE = {"int2", "int4", "int8", "float8", "numeric", "bool", "text", "varchar", "name", "date",
               "timestamp", "timestamptz", "bytea"}


@dataclass(frozen=True)
class PgColumn:
    name: str
    pg_type: str  # format_type(), e.g. numeric(12,3)
    base: str  # typname of the (domain's base) type, e.g. numeric, _int4
    arrow: pa.DataType | None  # None: unsupported
    select: str  # the expression in the SELECT list (a cast when served as text or decimal)
    filterable: bool
    description: str | None
    why: str | None = None  # why unsupported
    own_collation: bool = False  # a COLLATE other than the database default / C / POSIX


def _column(name: str, fmt: str, typname: str, typtype: str, elem: str | None, typmod: int,
            comment: str | None) -> PgColumn:
    q = quote_ident(name)
    if typtype == "e":
        return PgColumn(name, fmt, typname, pa.string(), f"{q}::text", False, comment)
    if typname in _SCALARS:
        return PgColumn(name, fmt, typname, _SCALARS[typname], q, typname in _FILTERABLE, comment)
    if typname in _AS_TEXT:  # format(): the type's own output (inet::text would add a /32 mask)
        return PgColumn(name, fmt, typname, pa.string(), f"CASE WHEN {q} IS NULL THEN NULL ELSE format('%s', {q}) END", False, comment)
    if typname == "numeric":
        if typmod < 4:
            return PgColumn(name, fmt, typname, None, f"{q}::text", False, comment,
                            "numeric without a precision (unbounded)")
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        if scale > 0x7FF:  # PostgreSQL 15 allows a negative scale
            return PgColumn(name, fmt, typname, None, f"{q}::text", False, comment, f"{fmt} (negative scale)")
        if precision <= 18:  # unscaled into a bigint: read as int64, no text parsing
            return PgColumn(name, fmt, typname, pa.decimal128(precision, scale),
                            f"({q} * 1{'0' * scale})::int8" if scale else f"{q}::int8", True, comment)
        if precision <= 38:
            arrow = pa.decimal128(precision, scale)
        elif precision <= 76:
            arrow = pa.decimal256(precision, scale)
        else:
            return PgColumn(name, fmt, typname, None, f"{q}::text", False, comment, f"{fmt} (more than 76 digits)")
        return PgColumn(name, fmt, typname, arrow, f"{q}::text", True, comment)
    if typname == "money":
        return PgColumn(name, fmt, typname, pa.decimal128(19, 2), f"{q}::numeric::text", False, comment)
    if typname.startswith("_") and elem:
        inner = _column(name, fmt, elem, "b", None, -1, comment)
        if inner.arrow is not None and inner.select == q:
            return PgColumn(name, fmt, typname, pa.list_(inner.arrow), q, False, comment)
        if inner.arrow == pa.string():  # arrays of uuid, json, enums ...: text[]
            return PgColumn(name, fmt, typname, pa.list_(pa.string()), f"{q}::text[]", False, comment)
        return PgColumn(name, fmt, typname, None, f"{q}::text", False, comment, f"array type {fmt}")
    return PgColumn(name, fmt, typname, None, f"{q}::text", False, comment, f"type {fmt}")


_CATALOG_SQL = """
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
       COALESCE(bt.typname, t.typname)::text, COALESCE(bt.typtype, t.typtype)::text,
       et.typname::text, CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
       col_description(a.attrelid, a.attnum),
       a.attcollation NOT IN (0, 100, 950, 951)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_type et ON et.oid = COALESCE(bt.typelem, t.typelem) AND et.oid <> 0
WHERE a.attrelid = {rel} AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


# -- the connector --------------------------------------------------------------------------------


class PostgresConnector:
    """One PostgreSQL table or view."""

    sql_dialect = "postgres"
    relation_sql = None  # whole queries name the table itself (schema_name.table_name)

    def __init__(self, spec: DatasetSpec):
        check_params(spec.name, "postgres", spec.params, PG_PARAMS)
        check_type_action(spec.name, spec.unsupported_type_action)
        self.spec = spec
        self.settings = PgSettings.from_spec(spec)
        parts = _split_table(spec.name, spec.path)
        self.schema_name, self.table_name = parts
        self.relation = f"{quote_ident(self.schema_name)}.{quote_ident(self.table_name)}"
        self._pool = _pool_for(self.settings)
        self._gate = join_gate(self.settings.source_id, self, GateSettings.from_params(spec.name, spec.params))
        self._lock = threading.Lock()
        self._columns: list[PgColumn] | None = None
        self._schema: pa.Schema | None = None
        self._code_point_order = False
        self._extension_retry_at = 0.0  # after the extension could not reach the source: ADBC until then

    @property
    def source_id(self) -> str:
        """The server's identity (host, port, database, user; no password): datasets with the
        same source_id can be queried together in one PostgreSQL statement."""
        return self.settings.source_id

    # -- errors --

    def _error(self, what: str, e: BaseException) -> ConnectorError | QueryTimeout:
        text = str(e).strip() or type(e).__name__
        if "statement timeout" in text:  # SQLSTATE 57014 from the statement_timeout set above
            return QueryTimeout(f"dataset '{self.spec.name}': PostgreSQL stopped the statement at the query's "
                                f"deadline (runtime.params.query_timeout)")
        text = re.sub(r"\s*SQLSTATE: \w+", "", text.replace("[libpq] ", "")).strip()
        text = " ".join(text.split())
        for s in self.settings.secrets:
            text = text.replace(s, "***").replace(urllib.parse.quote(s, safe=""), "***")
        text = re.sub(r"postgres(ql)?://[^\s'\"]*", "postgresql://***", text)
        return ConnectorError(f"dataset '{self.spec.name}': {what}: {text}")

    # -- catalog --

    def _load_columns(self) -> list[PgColumn]:
        if self._columns is not None:
            return self._columns
        rel = f"to_regclass({quote_literal(self.relation)})"
        rows = self._fetch(f"SELECT {rel} IS NOT NULL", "cannot connect to PostgreSQL")
        if not rows or not rows[0][0]:
            raise ConnectorError(f"dataset '{self.spec.name}': table {self.schema_name}.{self.table_name} "
                                 f"does not exist in PostgreSQL (or the user cannot see it)")
        rows = self._fetch(_CATALOG_SQL.format(rel=rel), "cannot read the table's columns")
        columns = []
        for *row, own_collation in rows:
            c = _column(*row)
            columns.append(PgColumn(**{**c.__dict__, "own_collation": bool(own_collation)}))
        rows = self._fetch("SELECT datcollate::text, COALESCE(to_jsonb(d) ->> 'datlocprovider', 'c') "
                           "FROM pg_database d WHERE datname = current_database()", "cannot read the database's collation")
        collate, provider = rows[0] if rows else ("", "")
        self._code_point_order = provider == "c" and (collate in ("C", "POSIX") or collate.startswith("C."))
        if not columns:
            raise ConnectorError(f"dataset '{self.spec.name}': table {self.schema_name}.{self.table_name} has no columns")
        problems = {c.name: c.why for c in columns if c.arrow is None}
        decisions = resolve_unsupported(self.spec.name, self.spec.unsupported_type_action, problems)
        kept = []
        for c in columns:
            if c.arrow is None:
                if decisions.get(c.name) == "drop":
                    continue
                c = PgColumn(c.name, c.pg_type, c.base, pa.string(), c.select, False, c.description,
                             own_collation=c.own_collation)
            kept.append(c)
        if not kept:
            raise ConnectorError(f"dataset '{self.spec.name}': no columns to serve")
        self._columns = kept
        return kept

    def _fetch(self, sql: str, what: str, fresh: bool = False) -> list[tuple]:
        """A small catalog statement's rows, within the source's statement cap."""
        self._gate.acquire()
        try:
            return self._fetch_pooled(sql, what, fresh)
        finally:
            self._gate.release()

    def _fetch_pooled(self, sql: str, what: str, fresh: bool) -> list[tuple]:
        try:
            conn, reused = self._pool.acquire(fresh)
        except Exception as e:  # noqa: BLE001 - driver errors become ConnectorError
            raise self._error("cannot connect to PostgreSQL", e) from None
        healthy = False
        try:
            cur = conn.cursor()
            try:
                _statement_timeout(cur)
                cur.execute(tagged(sql, self.spec.pod))
                rows = cur.fetchall()
            finally:
                close_quietly(cur)
            healthy = True
            return rows
        except Exception as e:  # noqa: BLE001
            if reused:  # an idle connection the server may have closed meanwhile: once more, anew
                self._pool.release(conn, False)
                conn = None
                return self._fetch_pooled(sql, what, fresh=True)
            raise self._error(what, e) from None
        finally:
            if conn is not None:
                self._pool.release(conn, healthy)

    # -- Connector --

    def schema(self) -> pa.Schema:
        with self._lock:
            if self._schema is None:
                columns = self._load_columns()
                source = {c.name: text for c in columns if (text := _source_description(c))}
                fields = [pa.field(c.name, c.arrow) for c in columns]
                self._schema = with_descriptions(pa.schema(fields), {**source, **self.spec.column_descriptions})
            return self._schema

    def pg_columns(self) -> dict[str, PgColumn]:
        self.schema()
        return {c.name: c for c in self._columns}

    def pushdown_safe(self, columns: Sequence[str] | None) -> bool:
        """Whether a query over these columns means in PostgreSQL what it means in the engine:
        strings in code point order, no char(n) blanks, no values served through a text cast."""
        by_name = self.pg_columns()
        if not self._code_point_order:
            return False
        for name in (columns if columns is not None else list(by_name)):
            c = by_name.get(name)
            if c is None or c.own_collation or c.base == "bpchar":
                return False
            if c.select != quote_ident(c.name) and not pa.types.is_decimal(c.arrow):
                return False
        return True

    def json_columns(self) -> frozenset[str]:
        """The json and jsonb columns (served as their text)."""
        return frozenset(c.name for c in self.pg_columns().values() if c.base in ("json", "jsonb"))

    def classify_filters(self, filters: Sequence[Filter]) -> list[FilterSupport]:
        columns = self.pg_columns()
        return [FilterSupport.EXACT if _render_filter(f, columns.get(f.column)) is not None else FilterSupport.UNSUPPORTED
                for f in filters]

    def scan_sql(self, columns: Sequence[str] | None, filters: Sequence[Filter] = (), limit: int | None = None,
                 part: str | None = None) -> str:
        """The PostgreSQL statement a scan sends (filters it cannot take exactly are left out);
        `part`: a condition on `ctid` that keeps one part of the table (pg_parallel)."""
        by_name = self.pg_columns()
        names = self._projection(columns)
        select = ", ".join(f"{by_name[n].select} AS {quote_ident(n)}" if by_name[n].select != quote_ident(n)
                           else quote_ident(n) for n in names) or "1 AS \"?\""
        where = [w for f in filters if (w := _render_filter(f, by_name.get(f.column))) is not None]
        if part is not None:
            where.append(part)
        sql = f"SELECT {select} FROM {self.relation}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        exact = all(_render_filter(f, by_name.get(f.column)) is not None for f in filters)
        if limit is not None and exact:
            if limit < 0:
                raise ConnectorError(f"dataset '{self.spec.name}': limit must be >= 0, got {limit}")
            sql += f" LIMIT {int(limit)}"
        return sql

    def scan(self, columns: Sequence[str] | None = None, filters: Sequence[Filter] = (),
             limit: int | None = None) -> pa.RecordBatchReader:
        schema = self.schema()
        names = self._projection(columns)
        out = pa.schema([schema.field(n) for n in names])
        if limit is None and names and CALLER.get().kind == "refresh":
            return self._refresh_reader(names, filters, out)
        return self.query_reader(self.scan_sql(names, filters, limit), out, count_only=not names)

    def _refresh_reader(self, names: list[str], filters: Sequence[Filter], out: pa.Schema) -> pa.RecordBatchReader:
        """A refresh's full read: a large table on several connections in one snapshot
        (pg_parallel), else one statement. The size lookup runs in the slot the read takes."""
        self._gate.acquire()  # the first statement waits its turn like any other
        slots = 1
        try:
            rel = f"to_regclass({quote_literal(self.relation)})"
            # relpages (as of the last VACUUM or ANALYZE), not pg_relation_size: that one waits for a
            # lock on the table, where no cancel reaches it (a table never analyzed reads in one statement)
            rows = self._fetch_pooled(f"SELECT GREATEST(c.relpages, 0), c.relkind::text, "
                                      f"current_setting('server_version_num')::int, pg_is_in_recovery() "
                                      f"FROM pg_class c WHERE c.oid = {rel}",
                                      "cannot read the table's size", False)
            pages = rows[0][0] if rows and rows[0][1] in ("r", "m") else 0  # views and the like: one statement
            if pages >= 2 * PAGES_PER_PART:
                slots += extra_slots(self._gate, min(MAX_PARTS, pages // PAGES_PER_PART) - 1)
                # a standby: the extension may not read its parts in one snapshot there
                if not filters and not rows[0][3]:
                    reader = self._scanner_reader(names, out, slots, rows[0][2])
                    if reader is not None:
                        slots = 0  # the read gives them back when it ends
                        return reader
            if slots < 2:
                slots = 0  # the statement holds the slot now, and gives it back
                return self.query_reader(self.scan_sql(names, filters), out, slot_held=True)
            statements = [tagged(self.scan_sql(names, filters, part=part), self.spec.pod)
                          for part in page_ranges(pages, slots)]
            read = ParallelRead(self._pool, self._gate, statements, _batch_size_hint, lambda b: _conform(b, out),
                                out, lambda e: self._error("error while reading from PostgreSQL", e))
        except BaseException:
            for _ in range(slots):
                self._gate.release()
            raise
        try:
            read.start()  # gives the slots back if it fails, else when the read ends
        except Exception as e:  # noqa: BLE001 - driver errors become ConnectorError
            raise self._error("query failed in PostgreSQL", e) from None
        return read.reader()

    def _scanner_reader(self, names: list[str], out: pa.Schema, slots: int,
                        server_version: int) -> pa.RecordBatchReader | None:
        """The read through DuckDB's postgres extension (pg_scanner) on `slots` connections, or
        None where it would not give exactly `out` (the ADBC path reads it then)."""
        by_name = self.pg_columns()
        extension = extension_path()
        if extension is None or time.monotonic() < self._extension_retry_at \
                or not all(_scanned(by_name[n]) for n in names):
            return None
        gate = self._gate

        def release() -> None:
            if gate is not None:
                for _ in range(slots):
                    gate.release()

        read = ScannerRead(self.settings.uri, self.schema_name, self.table_name, names, out, slots, release,
                           lambda e: self._scan_failed("error while reading from PostgreSQL", e),
                           check_interval=server_version >= 140000)
        try:
            return read.open(extension)
        except ExtensionUnavailable as e:  # ADBC reached the source just now: the extension's own problem
            self._avoid_extension(self._error("DuckDB's postgres extension cannot reach PostgreSQL", e))
            return None
        except ScanFailed as e:
            raise self._scan_failed("cannot read the table through DuckDB's postgres extension", e) from None

    def _scan_failed(self, what: str, e: ScanFailed) -> ConnectorError | QueryTimeout:
        """The read's error; a crashed extension also sends the next refreshes through ADBC."""
        error = self._error(what, e)
        if e.crashed:
            self._avoid_extension(error)
        return error

    def _avoid_extension(self, why: Exception) -> None:
        self._extension_retry_at = time.monotonic() + EXTENSION_RETRY_SECONDS
        log.warning("%s; refreshes read through ADBC for the next %d minutes", why, EXTENSION_RETRY_SECONDS // 60)

    def query(self, sql: str) -> pa.RecordBatchReader:
        """Run one PostgreSQL statement (whole-query push-down); types as the driver gives them."""
        return self.query_reader(sql, None)

    def described(self, sql: str) -> DescribedStatement:
        """`sql`'s result as PostgreSQL types it (the statement planned under LIMIT 0: no row is
        read), each column in the type a table column of its type is served in (a numeric(p, s)
        read as text, to be cast to its decimal); an unbounded numeric (an aggregate's, a
        function's) as float8, as DuckDB's postgres extension reads one; types served as text
        as their text."""
        with self.query_reader(f"SELECT * FROM ({sql}) AS q LIMIT 0", None) as reader:
            described = reader.schema
            reader.read_all()
        names = [f"c{i}" for i in range(len(described))]
        selects, fields = [], []
        for name, f in zip(names, described):
            meta = f.metadata or {}
            typname = meta.get(b"POSTGRESQL:type", b"").decode()
            typmod = int(meta.get(b"POSTGRESQL:typmod", b"-1"))
            column = _column(name, typname, typname, "b", typname[1:] if typname.startswith("_") else None, typmod, None)
            q = quote_ident(name)
            if typname == "numeric":
                arrow, select = (column.arrow, f"{q}::text") if column.arrow is not None else (pa.float64(), f"{q}::float8")
            elif column.arrow is None:
                arrow, select = pa.string(), f"{q}::text"
            else:
                arrow, select = column.arrow, column.select
            selects.append(select)
            fields.append(pa.field(f.name, arrow))
        columns = ", ".join(quote_ident(n) for n in names)
        return DescribedStatement(f"SELECT {', '.join(selects)} FROM ({sql}) AS q({columns})", pa.schema(fields))

    def close(self) -> None:
        """Leaves the source's statement gate; connections live in the shared pool (`close_pools`)."""
        leave_gate(self._gate, self)

    # -- changes (refresh_mode: changes) --

    @property
    def slot_name(self) -> str:
        """The logical replication slot this dataset reads its changes from."""
        digest = hashlib.sha256(f"{self.source_id}|{self.relation}|{self.spec.name}".encode()).hexdigest()
        return f"satchel_{digest[:24]}"

    def _admin(self, sql: str, what: str) -> list[tuple]:
        """A statement on a writable session (slot management), on its own connection."""
        uri = self.settings.uri.replace("default_transaction_read_only%3Don", "default_transaction_read_only%3Doff")
        try:
            conn = adbc_pg.connect(uri, autocommit=True)
        except Exception as e:  # noqa: BLE001
            raise self._error("cannot connect to PostgreSQL", e) from None
        try:
            with conn.cursor() as cur:
                cur.execute(tagged(sql, self.spec.pod))
                return cur.fetchall()
        except Exception as e:  # noqa: BLE001
            raise self._error(what, e) from None
        finally:
            close_quietly(conn)

    def start_changes(self) -> str:
        """Create the slot if needed (before a full load, so no change is missed); returns the
        position the full load covers, for `commit_changes`."""
        slot = quote_literal(self.slot_name)
        rows = self._admin(
            f"SELECT (pg_create_logical_replication_slot({slot}, 'test_decoding')).lsn::text "
            f"WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {slot})",
            "cannot create the logical replication slot (the user needs the REPLICATION attribute and the "
            "server wal_level=logical)")
        del rows
        return self._admin("SELECT pg_current_wal_flush_lsn()::text", "cannot read the WAL position")[0][0]

    def read_changes(self, primary_key: Sequence[str]) -> "PgChanges | None":
        """The rows changed since the last commit: current rows to upsert and keys deleted.
        None when the table was truncated (the caller reloads it in full)."""
        columns = self.pg_columns()
        missing = [k for k in primary_key if k not in columns]
        if missing or not primary_key:
            raise ConnectorError(f"dataset '{self.spec.name}': refresh_mode: changes needs primary_key columns "
                                 f"of the table (unknown: {', '.join(missing) or 'none given'})")
        # Up to what is flushed: all of it can be decoded now, so advancing there skips nothing
        # (a commit not yet flushed, with synchronous_commit off, comes with the next refresh).
        upto = self._admin("SELECT pg_current_wal_flush_lsn()::text", "cannot read the WAL position")[0][0]
        rows = self._admin(
            f"SELECT data FROM pg_logical_slot_peek_changes({quote_literal(self.slot_name)}, "
            f"{quote_literal(upto)}::pg_lsn, NULL, 'skip-empty-xacts', '1', 'include-xids', '0')",
            "cannot read changes from the replication slot")
        prefix = f"table {_decoding_name(self.schema_name)}.{_decoding_name(self.table_name)}: "
        keys: dict[tuple, tuple] = {}
        for (data,) in rows:
            if not data.startswith(prefix):
                continue
            action, _, rest = data[len(prefix):].partition(": ")
            if action == "TRUNCATE":
                return None
            for part in re.split(r"\b(?:old-key|new-tuple): ", rest):
                values = _decoded_values(part)
                if all(k in values for k in primary_key):
                    key = tuple(values[k] for k in primary_key)
                    keys[tuple(v[1] for v in key)] = key
        return PgChanges(self, list(primary_key), list(keys.values()), upto)

    def commit_changes(self, position: str) -> None:
        """Mark changes up to `position` as applied (the slot frees their WAL)."""
        self._admin(f"SELECT (pg_replication_slot_advance({quote_literal(self.slot_name)}, "
                    f"{quote_literal(position)}::pg_lsn)).end_lsn::text"
                    f" WHERE {quote_literal(position)}::pg_lsn > (SELECT confirmed_flush_lsn FROM pg_replication_slots "
                    f"WHERE slot_name = {quote_literal(self.slot_name)})",
                    "cannot advance the replication slot")

    def drop_changes(self) -> None:
        slot = quote_literal(self.slot_name)
        self._admin(f"SELECT 1 FROM pg_replication_slots s, LATERAL pg_drop_replication_slot(s.slot_name) d "
                    f"WHERE s.slot_name = {slot}",
                    "cannot drop the replication slot")

    # -- reading --

    def query_reader(self, sql: str, out: pa.Schema | None, count_only: bool = False,
                     slot_held: bool = False) -> pa.RecordBatchReader:
        """Stream `sql`'s rows as `out` (None: as the driver types them). Dropping or closing the
        reader early cancels the statement on the server. `slot_held`: the caller already took
        the gate slot the statement runs in (it is released when the statement ends)."""
        try:
            state, reader = execute_pooled(self._pool, tagged(sql, self.spec.pod), _batch_size_hint, _is_sql_error,
                                           self._gate, held=slot_held)
        except ConnectFailed as e:
            raise self._error("cannot connect to PostgreSQL", e.__cause__) from None
        except Overloaded:
            raise
        except Exception as e:  # noqa: BLE001
            raise self._error("query failed in PostgreSQL", e) from None
        schema = out if out is not None else pa.schema([f.with_type(_driver_type(f.type)) for f in reader.schema])
        batches = self._stream(reader, schema, state, count_only)
        weakref.finalize(batches, state.finish, False)
        return pa.RecordBatchReader.from_batches(schema, batches)

    def _stream(self, reader, out: pa.Schema, state: "RunningStatement", count_only: bool) -> Iterator[pa.RecordBatch]:
        done = False
        try:
            for batch in reader:
                if count_only:
                    yield _empty_columns(batch.num_rows)
                else:
                    yield _conform(batch, out)
            done = True
        except GeneratorExit:
            raise
        except Exception as e:  # noqa: BLE001
            raise self._error("error while reading from PostgreSQL", e) from None
        finally:
            state.finish(done)

    def _projection(self, columns: Sequence[str] | None) -> list[str]:
        return checked_projection(self.spec.name, self.schema(), columns)


class PgChanges:
    """Changed keys read from the slot: `upserts()` streams their current rows, `deleted()` the
    keys no longer in the table, `position` is what to commit once both are applied."""

    def __init__(self, connector: PostgresConnector, primary_key: list[str], keys: list[tuple], position: str):
        self.connector, self.primary_key, self.keys, self.position = connector, primary_key, keys, position

    def _values(self) -> str:
        rows = []
        for key in self.keys:
            rows.append("(" + ", ".join("NULL" if text is None else f"{quote_literal(text)}::{typ}"
                                        for typ, text in key) + ")")
        return ", ".join(rows)

    def upserts(self) -> pa.RecordBatchReader:
        c = self.connector
        schema = c.schema()
        if not self.keys:
            return pa.RecordBatchReader.from_batches(schema, [])
        cols = ", ".join(quote_ident(k) for k in self.primary_key)
        return c.query_reader(f"{c.scan_sql(None)} WHERE ({cols}) IN (VALUES {self._values()})", schema)

    def deleted(self) -> pa.Table:
        c = self.connector
        by_name = c.pg_columns()
        out = pa.schema([c.schema().field(k) for k in self.primary_key])
        if not self.keys:
            return out.empty_table()
        cols = ", ".join(quote_ident(k) for k in self.primary_key)
        select = ", ".join(f"{by_name[k].select} AS {quote_ident(k)}" for k in self.primary_key)
        match = " AND ".join(f"t.{quote_ident(k)} = k.{quote_ident(k)}" for k in self.primary_key)
        sql = (f"SELECT {select} FROM (VALUES {self._values()}) AS k({cols}) "
               f"WHERE NOT EXISTS (SELECT 1 FROM {c.relation} t WHERE {match})")
        return c.query_reader(sql, out).read_all()


_TOKEN = re.compile(r'("(?:[^"]|"")+"|[^\s\[]+)\[([^\]]+)\]:(\'(?:[^\']|\'\')*\'|\S+)')


def _decoded_values(text: str) -> dict[str, tuple[str, str | None]]:
    """`id[integer]:1 v[text]:'a''b'` (test_decoding) -> {column: (type, text or None)}."""
    out: dict[str, tuple[str, str | None]] = {}
    for name, typ, value in _TOKEN.findall(text):
        if name.startswith('"'):
            name = name[1:-1].replace('""', '"')
        if value.startswith("'"):
            out[name] = (typ, value[1:-1].replace("''", "'"))
        else:
            out[name] = (typ, None if value == "null" else value)
    return out


def _decoding_name(name: str) -> str:
    """How test_decoding prints an identifier (quoted only when it must be)."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else quote_ident(name)


def _source_description(c: PgColumn) -> str | None:
    """The column's comment, and for a column served as its text what it is in PostgreSQL: an
    agent that reads `varchar` would not know it holds JSON it can read into."""
    if c.arrow != pa.string() or c.select == quote_ident(c.name):
        return c.description
    if c.base in ("json", "jsonb"):
        note = f"PostgreSQL {c.base}, as its JSON text: read a field with {written_ident(c.name)} ->> 'key'"
    else:
        note = f"PostgreSQL {c.pg_type}, as its text"
    return f"{c.description} ({note})" if c.description else note


def _empty_columns(rows: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_struct_array(pa.array([{}] * rows, pa.struct([])))


def _driver_type(t: pa.DataType) -> pa.DataType:
    if isinstance(t, pa.BaseExtensionType):
        return _driver_type(t.storage_type)
    if pa.types.is_list(t):
        return pa.list_(_driver_type(t.value_type))
    return t


def _scanned(c: PgColumn) -> bool:
    """Whether DuckDB's postgres extension reads the column as the type announced for it."""
    return c.base in SCANNED_TYPES and c.arrow is not None and not pa.types.is_decimal256(c.arrow)


def _conform(batch: pa.RecordBatch, out: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for array, field in zip(batch.columns, out):
        if isinstance(array.type, pa.BaseExtensionType):
            array = array.storage
        if array.type != field.type:
            if pa.types.is_decimal128(field.type) and pa.types.is_int64(array.type):
                array = _unscaled_decimal(array, field.type)
            elif pa.types.is_decimal(field.type) and pa.types.is_string(array.type):
                array = pc.cast(array, field.type)
            else:
                array = array.cast(field.type)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=out)


def _unscaled_decimal(array: pa.Array, typ: pa.Decimal128Type) -> pa.Array:
    """int64 unscaled values (value * 10^scale) as decimal128(p, s): the same 128-bit words,
    read with the column's scale."""
    return pc.cast(array, pa.decimal128(19, 0)).view(typ)


def _split_table(dataset: str, path: str) -> tuple[str, str]:
    """`schema.table`, `table` (schema public), with "quoted" parts allowed."""
    parts = re.findall(r'"((?:[^"]|"")*)"|([^.]+)', path.strip())
    names = [q.replace('""', '"') if q else u for q, u in parts]
    if len(names) == 1:
        names = ["public", names[0]]
    if len(names) != 2 or not all(names):
        raise ConnectorError(f"dataset '{dataset}': 'from: postgres:{path}' must name <schema>.<table>")
    return names[0], names[1]


# -- filters ---------------------------------------------------------------------------------------

_SQL_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_TEXT = {"text", "varchar", "name"}


def _render_filter(f: Filter, column: PgColumn | None) -> str | None:
    """`f` as a PostgreSQL condition with the engine's meaning, or None."""
    if column is None or not column.filterable:
        return None
    col = quote_ident(column.name)
    if column.base in _TEXT:
        col = f'{col} COLLATE "C"'
    if f.op == "is_null":
        return f"{col} IS NULL"
    if f.op == "is_not_null":
        return f"{col} IS NOT NULL"
    if f.op in ("like", "not_like"):
        if column.base not in _TEXT or not isinstance(f.value, str):
            return None
        lit = _literal(pa.scalar(f.value, pa.string()))
        return None if lit is None else f"{col} {'NOT ' if f.op == 'not_like' else ''}LIKE {lit} ESCAPE ''"
    if f.op in _SQL_OPS:
        lit = _value_literal(f.value, column)
        return None if lit is None else f"{col} {_SQL_OPS[f.op]} {lit}"
    if f.op in ("in", "not_in"):
        if not f.value or any(v is None for v in f.value):
            return None
        lits = [_value_literal(v, column) for v in f.value]
        if any(x is None for x in lits):
            return None
        return f"{col} {'NOT IN' if f.op == 'not_in' else 'IN'} ({', '.join(lits)})"
    return None


def _value_literal(value: Any, column: PgColumn) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        scalar = _convert(value, column.arrow)
    except Exception:  # noqa: BLE001 - a value that does not convert is left to the engine
        return None
    if scalar is None or not scalar.is_valid:
        return None
    return _literal(scalar)


def _literal(s: pa.Scalar) -> str | None:
    t, v = s.type, s.as_py()
    try:
        if pa.types.is_boolean(t):
            return "TRUE" if v else "FALSE"
        if pa.types.is_integer(t):
            return f"{int(v)}" if -(2**63) <= v < 2**63 else f"{int(v)}::numeric"
        if pa.types.is_floating(t):
            if math.isnan(v):
                return None
            text = "Infinity" if v == math.inf else "-Infinity" if v == -math.inf else repr(float(v))
            return f"'{text}'::float8"
        if pa.types.is_decimal(t):
            return f"'{decimal.Decimal(v)}'::numeric"
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return quote_literal(v)
        if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            return f"'\\x{bytes(v).hex()}'::bytea"
        if pa.types.is_date(t):
            return f"'{v.isoformat()}'::date"
        if pa.types.is_timestamp(t):
            if t.tz is None:
                return f"'{v.isoformat(sep=' ')}'::timestamp"
            return f"'{v.astimezone(dt.timezone.utc).isoformat(sep=' ')}'::timestamptz"
    except ValueError:
        return None
    return None


def close_pools() -> None:
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()
