"""The Connector protocol: what every source implements, and the filter vocabulary.

A connector reads one dataset's source. The engine asks it for a schema, classifies each
candidate filter (exact / inexact / unsupported), then scans with the projection, the filters
it accepted and (only when every filter was exact) a limit. The engine always re-applies the
query's full WHERE clause, so a connector that over-returns rows is never wrong, only slower.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import pyarrow as pa

from engine.errors import ConnectorError

# Operators a Filter can carry. Values are Python scalars (int, float, str, bool, Decimal,
# date, datetime, bytes); `in`/`not_in` carry a tuple; `is_null`/`is_not_null` carry None;
# `like`/`not_like` carry the SQL pattern string (`%` and `_` wildcards, no escape char).
LEAF_OPS = ("=", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "is_not_null", "like", "not_like")
# Composites (column ""): `and`/`or` carry a tuple of Filters, `not` a 1-tuple. SQL's
# three-valued logic holds: a row passes only when the whole condition is TRUE.
COMPOSITE_OPS = ("and", "or", "not")
# Full-text search, SQL `match(column, 'words')`: carries the words. Only a source can run it:
# the engine never re-applies it, so a connector classifies it EXACT or the query fails.
FULL_TEXT_OP = "match"
FILTER_OPS = LEAF_OPS + COMPOSITE_OPS + (FULL_TEXT_OP,)

Scalar = int | float | str | bool | decimal.Decimal | _dt.date | _dt.datetime | bytes | None


@dataclass(frozen=True)
class Filter:
    """`column op value`, one conjunct of a WHERE clause that names a single column."""

    column: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        if self.op not in FILTER_OPS:
            raise ValueError(f"unknown filter operator {self.op!r}; allowed: {', '.join(FILTER_OPS)}")
        if self.op in COMPOSITE_OPS:
            parts = self.value
            if not isinstance(parts, tuple) or not parts or not all(isinstance(p, Filter) for p in parts) \
                    or (self.op == "not" and len(parts) != 1):
                raise ValueError(f"filter {self.op!r} needs a tuple of Filters (exactly one for 'not')")

    @property
    def is_composite(self) -> bool:
        return self.op in COMPOSITE_OPS


def filter_columns(f: Filter) -> set[str]:
    """The columns a (possibly composite) filter reads."""
    if f.op in COMPOSITE_OPS:
        return set().union(*(filter_columns(p) for p in f.value))
    return {f.column}


def leaves(f: Filter):
    """The single-column filters inside `f` (itself when it is one)."""
    if f.op in COMPOSITE_OPS:
        for p in f.value:
            yield from leaves(p)
    else:
        yield f


@dataclass(frozen=True)
class SortKey:
    """One ORDER BY key of a top-N scan; NULLs go first when `nulls_first`."""

    column: str
    descending: bool = False
    nulls_first: bool = False


class FilterSupport(str, Enum):
    """How a connector applies a filter: exactly, as a superset (inexact), or not at all."""

    EXACT = "exact"
    INEXACT = "inexact"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Caller:
    """Who the source statements of the current task are for: the principal's name and the kind
    of work (`query` or `refresh`). The engine sets it (`CALLER.set`) around each task."""

    principal: str = "runtime"
    kind: str = "query"
    deadline: float | None = None
    """time.monotonic() by which the task must end; sources get the time left as their own limit."""
    scope: "CancelScope | None" = None
    """Where source statements register how to cancel them (a client that goes away)."""

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else max(0.001, self.deadline - time.monotonic())


class CancelScope:
    """The cancel hooks of one task's source statements, run from another thread when its client
    goes away (e.g. PQcancel through ADBC, which is safe to call while the statement runs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], object]] = []
        self.cancelled = False

    def add(self, hook: Callable[[], object]) -> None:
        with self._lock:
            if not self.cancelled:
                self._hooks.append(hook)
                return
        _quietly(hook)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled, hooks, self._hooks = True, self._hooks, []
        for hook in hooks:
            _quietly(hook)


def _quietly(hook: Callable[[], object]) -> None:
    try:
        hook()
    except Exception:  # noqa: BLE001 - a statement that already ended has nothing to cancel
        pass


CALLER: ContextVar[Caller] = ContextVar("satchel_caller", default=Caller())


@dataclass(frozen=True)
class DatasetSpec:
    """What a connector is built from: the dataset's config, secrets already resolved."""

    name: str
    path: str  # the part of `from:` after the prefix (or the whole URL for http/https)
    prefix: str  # e.g. "file", "https", "postgres"
    params: Mapping[str, str] = field(default_factory=dict)
    unsupported_type_action: str = "error"
    base_dir: str = "."  # directory of the spicepod file; relative paths resolve against it
    column_descriptions: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None
    column_types: Mapping[str, pa.DataType] = field(default_factory=dict)  # the pod's `columns[].type`
    pod: str = ""  # the pod's name (sources that can be told who connects, e.g. PostgreSQL application_name)


@runtime_checkable
class Connector(Protocol):
    """A source of one dataset. Implementations live in connectors/<name>.py."""

    spec: DatasetSpec

    def schema(self) -> pa.Schema:
        """The dataset's Arrow schema; field metadata b"description" carries column comments."""

    def classify_filters(self, filters: Sequence[Filter]) -> list[FilterSupport]:
        """How `scan` would apply each filter, in order."""

    def scan(
        self,
        columns: Sequence[str] | None = None,
        filters: Sequence[Filter] = (),
        limit: int | None = None,
    ) -> pa.RecordBatchReader:
        """Stream the rows, projected to `columns` (None = all, in schema order).

        Filters the connector classified UNSUPPORTED are ignored by it; `limit` is only passed
        when every filter is EXACT, and the connector may return fewer rows only if the source
        has fewer.
        """

    def close(self) -> None:
        """Release connections and files."""

    # Optional capabilities are the Protocols below; the engine asks with isinstance().


@runtime_checkable
class KnowsRowCount(Protocol):
    """A source that can tell, cheaply and before reading, how many rows a full load brings
    (Parquet footers): loading progress shows a percentage."""

    def expected_rows(self) -> int | None: ...


@runtime_checkable
class Counts(Protocol):
    """Answers `SELECT count(*) FROM t [WHERE ...]` itself."""

    def count(self, filters: Sequence[Filter]) -> int:
        """Rows passing `filters`, every one of them classified EXACT."""


@runtime_checkable
class OrdersTopN(Protocol):
    """Takes `scan(..., limit=n, order_by=keys)` (single-table ORDER BY plain columns + LIMIT,
    every filter exact) when `classify_order(keys)` says it returns the first n rows in order."""

    def classify_order(self, keys: Sequence[SortKey]) -> bool: ...


@runtime_checkable
class VersionedSnapshots(Protocol):
    """A source with versions (e.g. Iceberg snapshots); none of these reads data unless it says so."""

    def source_version(self) -> str:
        """The current version (equal versions = equal data and columns)."""

    def same_data(self, a: str, b: str) -> bool:
        """Versions a and b hold the same rows (they differ in columns only)."""

    def schema_changes_since(self, version: str) -> list | None:
        """Column changes since `version`, in order: ("add", column, type), ("rename", old, new),
        ("drop", column); None when a copy cannot follow them in place."""

    def scan_changes_since(self, version: str, columns: Sequence[str] | None = None) -> Any:
        """(reader of the rows added since `version`, new version), or None (reload in full)."""

    def pin_version(self, version: str | None) -> None:
        """Scans read `version` until unpinned."""


@runtime_checkable
class ChangeFeed(Protocol):
    """`refresh_mode: changes`: upserts and deletes by primary key (logical decoding, change streams)."""

    def read_changes(self, primary_key: Sequence[str]) -> Any: ...


@runtime_checkable
class WholeQuerySql(Protocol):
    """A SQL source that can run a whole query (joins, aggregates ...) in its own dialect."""

    source_id: str  # connection identity without secrets: equal ids = one server and login
    sql_dialect: str  # "postgres" | "satchel" | "datafusion"
    relation_sql: str | None  # the FROM item for the table (None: schema_name.table_name)

    def query(self, sql: str) -> pa.RecordBatchReader: ...

    def pushdown_safe(self, columns: Sequence[str] | None) -> bool:
        """Whether these columns mean in the source what they mean here (collation, types)."""


@dataclass(frozen=True)
class DescribedStatement:
    """A statement typed by its source: `sql` reads its result as `schema` says (names, and
    the types the connector serves such columns in)."""

    sql: str
    schema: pa.Schema


@runtime_checkable
class DescribesStatements(Protocol):
    """A whole-query source that can type a statement's result itself, without running it:
    for queries the federated engine cannot plan (a function only the source has)."""

    def described(self, sql: str) -> DescribedStatement: ...


@runtime_checkable
class HasJsonColumns(Protocol):
    """A SQL source whose JSON columns are served as their text."""

    def json_columns(self) -> frozenset[str]: ...


@runtime_checkable
class ScanSql(Protocol):
    """Shows (in EXPLAIN) the statement a scan sends."""

    def scan_sql(self, columns: Sequence[str] | None, filters: Sequence[Filter] = (),
                 limit: int | None = None) -> str: ...


def with_descriptions(schema: pa.Schema, descriptions: Mapping[str, str]) -> pa.Schema:
    """Attach column descriptions as field metadata (pod descriptions win over the source's)."""
    fields = []
    for f in schema:
        text = descriptions.get(f.name)
        if text:
            meta = dict(f.metadata or {})
            meta[b"description"] = text.encode()
            f = f.with_metadata(meta)
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


def description_of(f: pa.Field) -> str | None:
    """The description carried in a field's metadata, if any."""
    if f.metadata and b"description" in f.metadata:
        return f.metadata[b"description"].decode()
    return None


def checked_projection(dataset: str, schema: pa.Schema, columns: Sequence[str] | None) -> list[str]:
    """The column names a scan returns: all (None) or `columns`, each known and named once."""
    if columns is None:
        return list(schema.names)
    names = list(columns)
    unknown = [c for c in names if c not in schema.names]
    if unknown:
        raise ConnectorError(
            f"dataset '{dataset}': unknown column(s) {', '.join(unknown)}; columns: {', '.join(schema.names)}")
    if len(set(names)) != len(names):
        raise ConnectorError(f"dataset '{dataset}': a column is projected twice: {', '.join(names)}")
    return names
