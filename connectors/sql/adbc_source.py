"""What every ADBC-reached SQL source shares (Flight SQL peers, any installed ADBC driver):
pooled connections, streamed reads that cancel the remote statement when dropped, scan SQL
with the filters the remote applies exactly, schema with descriptions and pod column types,
and whole-query push-down hooks (`sql_dialect`, `source_id`, `pushdown_safe`, `sql_table`).

Subclasses give `_connect()` (a DB-API connection of adbc_driver_manager), `_remote_schema()`,
`relation_sql` (the FROM item: a quoted table or a parenthesised query), `filter_dialect` and
`secrets` (scrubbed from every message).
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from typing import Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from engine.errors import ConnectorError, Overloaded

from ..base import DatasetSpec, Filter, FilterSupport, checked_projection, with_descriptions
from ..source_types import normalize_type, resolve_unsupported, unservable_reason
from .filters import DIALECTS, FilterDialect, quote_ident, render_filter
from .pool import ConnectFailed, ConnectionPool, GateSettings, RunningStatement, execute_pooled, join_gate, leave_gate

log = logging.getLogger("satchel.connectors.sql.adbc")

# Field metadata keys a Flight SQL server attaches (catalog, type names, ...): not ours to serve.
_FLIGHT_META = b"ARROW:FLIGHT:SQL:"


def _is_statement_error(e: BaseException) -> bool:
    """An error about the statement itself (retrying on a fresh connection cannot help)."""
    return type(e).__name__ in ("ProgrammingError", "IntegrityError", "DataError", "NotSupportedError")


class AdbcSqlSource:
    """Base of the ADBC connectors: see the module docstring."""

    kind = "adbc"  # prefix used in messages
    filter_dialect: FilterDialect = DIALECTS["generic"]
    sql_dialect: str = "generic"  # whole-query push-down dialect ("satchel", "datafusion", ...)
    secrets: tuple[str, ...] = ()
    relation_sql: str = ""

    def __init__(self, spec: DatasetSpec, pool_size: int = 4) -> None:
        self.spec = spec
        self.query_text: str | None = None  # `from: <prefix>:SELECT ...`: a query, read as a subquery
        self.table_parts: list[str] = []
        if is_query(spec.path):
            self.query_text = spec.path.strip().rstrip(";")
            self.relation_sql = f"({self.query_text}) AS {self.quote('q')}"
        else:
            self.table_parts = split_name(spec.name, spec.prefix, spec.path)
            self.relation_sql = ".".join(self.quote(x) for x in self.table_parts)
        self._pool = ConnectionPool(self._connect, pool_size)
        self._gate = join_gate(self.source_id, self, GateSettings.from_params(spec.name, spec.params))
        self._schema: pa.Schema | None = None
        self._remote: pa.Schema | None = None
        self._lock = threading.Lock()

    # -- to implement --

    def quote(self, name: str) -> str:
        """An identifier as the source writes it (double quotes; a Spark source: backticks)."""
        return quote_ident(name)

    def _connect(self) -> Any:
        raise NotImplementedError

    def _remote_schema(self) -> pa.Schema:
        raise NotImplementedError

    @property
    def source_id(self) -> str:
        raise NotImplementedError

    # -- errors --

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if s:
                text = text.replace(s, "***")
        return text

    def _error(self, what: str, e: BaseException) -> ConnectorError:
        text = str(e).strip() or type(e).__name__
        text = text.split("\nDetail: Python exception: Traceback")[0]
        text = re.sub(r"\.? ?Detail: Python exception: Traceback.*", "", text, flags=re.S)
        text = " ".join(text.split())
        return ConnectorError(f"dataset '{self.spec.name}': {what}: {self.scrub(text)}")

    # -- schema --

    def schema(self) -> pa.Schema:
        with self._lock:
            if self._schema is None:
                self._schema = self._build_schema()
            return self._schema

    def _build_schema(self) -> pa.Schema:
        remote = self._remote_schema()
        pod_types = dict(getattr(self.spec, "column_types", None) or {})
        unknown = [c for c in pod_types if c not in remote.names]
        if unknown:
            raise ConnectorError(f"dataset '{self.spec.name}': columns: {', '.join(unknown)} not in the source; "
                                 f"its columns: {', '.join(remote.names)}")
        fields, descriptions, problems = [], {}, {}
        for f in remote:
            meta = f.metadata or {}
            text = meta.get(b"description") or meta.get(b"ARROW:FLIGHT:SQL:REMARKS")
            if text:
                descriptions[f.name] = text.decode(errors="replace")
            typ = pod_types.get(f.name) or normalize_type(f.type)
            why = unservable_reason(typ)
            if why:
                problems[f.name] = why
            fields.append(pa.field(f.name, typ))
        if len(set(remote.names)) != len(remote.names):
            raise ConnectorError(f"dataset '{self.spec.name}': the source returns duplicate column names: "
                                 f"{', '.join(remote.names)}")
        decisions = resolve_unsupported(self.spec.name, self.spec.unsupported_type_action, problems)
        fields = [f.with_type(pa.string()) if decisions.get(f.name) == "string" else f
                  for f in fields if decisions.get(f.name) != "drop"]
        if not fields:
            raise ConnectorError(f"dataset '{self.spec.name}': no columns to serve")
        self._remote = remote
        # Columns the pod retyped (or served as text) are converted here, not at the source:
        # their filters stay with the engine.
        self._converted = {f.name for f in fields if f.type != normalize_type(remote.field(f.name).type)}
        return with_descriptions(pa.schema(fields), {**descriptions, **self.spec.column_descriptions})

    def _types(self) -> dict[str, pa.DataType]:
        schema = self.schema()
        return {f.name: f.type for f in schema if f.name not in self._converted}

    # -- filters and scans --

    def classify_filters(self, filters: Sequence[Filter]) -> list[FilterSupport]:
        types = self._types()
        return [FilterSupport.EXACT if render_filter(f, types, self.filter_dialect) is not None
                else FilterSupport.UNSUPPORTED for f in filters]

    def scan_sql(self, columns: Sequence[str] | None, filters: Sequence[Filter] = (), limit: int | None = None,
                 order_by: Sequence[Any] | None = None) -> str:
        """The statement a scan sends (filters the remote cannot take exactly are left out)."""
        names = checked_projection(self.spec.name, self.schema(), columns)
        types = self._types()
        select = ", ".join(self.quote(n) for n in names) or f"1 AS {self.quote('?')}"
        where = [w for f in filters if (w := render_filter(f, types, self.filter_dialect)) is not None]
        sql = f"SELECT {select} FROM {self.relation_sql}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        exact = len(where) == len(filters)
        if order_by and exact:
            sql += " ORDER BY " + ", ".join(self._order_key(k, types) for k in order_by)
        if limit is not None and exact:
            if limit < 0:
                raise ConnectorError(f"dataset '{self.spec.name}': limit must be >= 0, got {limit}")
            sql += f" LIMIT {int(limit)}"
        return sql

    def _orderable(self, keys: Sequence[Any]) -> bool:
        """Whether the source orders these columns as the engine does (code point strings,
        SQL NULL placement given explicitly, no floats where -0.0/NaN order differently)."""
        types = self._types()
        d = self.filter_dialect
        if not d.ordered_strings or not keys:
            return False
        for k in keys:
            typ = types.get(k.column)
            if typ is None or pa.types.is_floating(typ) and not d.floats:
                return False
            if not (pa.types.is_integer(typ) or pa.types.is_string(typ) or pa.types.is_large_string(typ)
                    or pa.types.is_boolean(typ) or pa.types.is_floating(typ)
                    or d.temporal and (pa.types.is_date32(typ) or pa.types.is_timestamp(typ))
                    or d.decimals and pa.types.is_decimal(typ)):
                return False
        return True

    def classify_order(self, keys: Sequence[Any]) -> bool:
        return self._orderable(keys)

    def _order_key(self, k: Any, types: dict[str, pa.DataType]) -> str:
        col = self.quote(k.column)
        typ = types.get(k.column)
        if typ is not None and (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            col += self.filter_dialect.string_collate
        return f"{col} {'DESC' if k.descending else 'ASC'} NULLS {'FIRST' if k.nulls_first else 'LAST'}"

    def scan(self, columns: Sequence[str] | None = None, filters: Sequence[Filter] = (),
             limit: int | None = None, order_by: Sequence[Any] | None = None) -> pa.RecordBatchReader:
        schema = self.schema()
        names = checked_projection(self.spec.name, schema, columns)
        out = pa.schema([schema.field(n) for n in names])
        return self.query_reader(self.scan_sql(names, filters, limit, order_by), out, count_only=not names)

    def count(self, filters: Sequence[Filter]) -> int:
        """`SELECT count(*)` in the source (the engine calls it only with exact filters)."""
        types = self._types()
        where = [render_filter(f, types, self.filter_dialect) for f in filters]
        if any(w is None for w in where):
            raise ConnectorError(f"dataset '{self.spec.name}': count() got a filter the source cannot apply")
        sql = f"SELECT count(*) AS n FROM {self.relation_sql}" + (" WHERE " + " AND ".join(where) if where else "")
        table = self.query_reader(sql, None).read_all()
        return int(table.column(0)[0].as_py())

    def query(self, sql: str) -> pa.RecordBatchReader:
        """Run one statement in the source's dialect (whole-query push-down); driver types."""
        return self.query_reader(sql, None)

    def sql_table(self) -> exp.Expression:
        """The FROM item whole-query push-down puts in place of this dataset's table."""
        return exp.maybe_parse(self.relation_sql, into=exp.Table, dialect="postgres") \
            if not self.relation_sql.startswith("(") else exp.Subquery(this=exp.maybe_parse(self.relation_sql[1:-1],
                                                                                               dialect="postgres"))

    def pushdown_safe(self, columns: Sequence[str] | None) -> bool:
        """Whether a whole query over these columns means the same in the source (subclasses
        decide per dialect; columns the pod retyped are converted locally, so never)."""
        return False

    def _spark_pushdown_safe(self, columns: Sequence[str] | None) -> bool:
        """Spark SQL (Sail): served as is, no float (NaN = NaN is false there) and no timestamp
        column (session time zone rules); the query's shape is checked in engine/query/pushdown.py."""
        schema = self.schema()
        names = list(columns) if columns is not None else schema.names
        if any(n in self._converted or n not in schema.names for n in names):
            return False
        return not any(pa.types.is_floating(t) or pa.types.is_timestamp(t)
                       for t in (schema.field(n).type for n in names))

    def close(self) -> None:
        self._pool.close()
        leave_gate(self._gate, self)

    def _table_schema(self, conn: Any) -> pa.Schema:
        """The remote table's schema by ADBC's catalog call (`[catalog.][schema.]table`)."""
        parts = self.table_parts
        kwargs = {"db_schema_filter": parts[-2]} if len(parts) >= 2 else {}
        if len(parts) == 3:
            kwargs["catalog_filter"] = parts[0]
        return conn.adbc_get_table_schema(parts[-1], **kwargs)

    # -- reading --

    def query_reader(self, sql: str, out: pa.Schema | None, count_only: bool = False) -> pa.RecordBatchReader:
        """Stream `sql`'s rows as `out` (None: as the driver types them)."""
        try:
            state, reader = execute_pooled(self._pool, sql, lambda cur: None, _is_statement_error, self._gate)
        except ConnectFailed as e:
            raise self._error(f"cannot connect to the {self.kind} source", e.__cause__) from None
        except Overloaded:
            raise
        except Exception as e:  # noqa: BLE001
            raise self._error(f"query failed in the {self.kind} source", e) from None
        schema = out if out is not None else pa.schema([pa.field(f.name, normalize_type(f.type)) for f in reader.schema])
        if count_only:
            schema = pa.schema([])
        batches = self._stream(reader, schema, state, count_only)
        weakref.finalize(batches, state.finish, False)
        return pa.RecordBatchReader.from_batches(schema, batches)

    def _stream(self, reader, out: pa.Schema, state: RunningStatement, count_only: bool) -> Iterator[pa.RecordBatch]:
        done = False
        try:
            for batch in reader:
                if count_only:
                    yield pa.RecordBatch.from_struct_array(pa.array([{}] * batch.num_rows, pa.struct([])))
                else:
                    yield self._conform(batch, out)
            done = True
        except GeneratorExit:
            raise
        except ConnectorError:
            raise
        except Exception as e:  # noqa: BLE001
            raise self._error(f"error while reading from the {self.kind} source", e) from None
        finally:
            state.finish(done)

    def _conform(self, batch: pa.RecordBatch, out: pa.Schema) -> pa.RecordBatch:
        if batch.schema.equals(out):
            return batch
        arrays = []
        for array, field in zip(batch.columns, out):
            if isinstance(array.type, pa.BaseExtensionType):
                array = array.storage
            if pa.types.is_dictionary(array.type):
                array = array.dictionary_decode()
            if array.type != field.type and array.null_count == len(array):
                # SQLite types a column from its values: all-NULL (or no) rows come as int64
                array = pa.nulls(len(array), field.type)
            elif array.type != field.type:
                try:
                    array = pc.cast(array, field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                    raise ConnectorError(f"dataset '{self.spec.name}': column '{field.name}': the source sent "
                                         f"{array.type} values that do not convert to {field.type}: "
                                         f"{self.scrub(str(e))}") from None
            arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, schema=out)


def parse_pool_size(spec: DatasetSpec) -> int:
    text = spec.params.get("connection_pool_size", "4")
    try:
        size = int(text)
        if size < 1:
            raise ValueError
    except ValueError:
        raise ConnectorError(f"dataset '{spec.name}': param connection_pool_size must be a positive integer, "
                             f"got '{text}'") from None
    return size


def split_name(dataset: str, prefix: str, path: str) -> list[str]:
    """`catalog.schema.table`, `schema.table` or `table`, with "quoted" parts allowed."""
    parts = re.findall(r'"((?:[^"]|"")*)"|([^."]+)', path.strip())
    names = [q.replace('""', '"') if q else u.strip() for q, u in parts]
    if not 1 <= len(names) <= 3 or not all(names):
        raise ConnectorError(f"dataset '{dataset}': 'from: {prefix}:{path}' must name a table "
                             f"([catalog.][schema.]table) or be a query (SELECT ... / WITH ...)")
    return names


def is_query(path: str) -> bool:
    return bool(re.match(r"\s*(\(|select\b|with\b|values\b)", path, re.I))
