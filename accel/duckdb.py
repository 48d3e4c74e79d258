"""The `duckdb` accelerator: datasets as tables in one DuckDB database (memory or file).

Datasets that share a database can be joined inside DuckDB, so the planner sends whole
queries here when every table lives in one instance. The database is locked down after setup:
no file access, no extension loading, no settings changes, whatever SQL reaches it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from typing import Iterator, Mapping, Sequence

import duckdb
import pyarrow as pa

from connectors.base import CALLER, CancelScope, Filter
from connectors.sql_render import quote_ident, select_sql
from engine.errors import ConnectorError, NotFound, QueryTimeout, ReadOnlyViolation, RequestCancelled

from .base import TableIndex
from .fifo_slots import FifoSlots
from .keys import dedupe_last
from .read_ahead import read_ahead
from .search import SearchStore, load_extensions
from .timers import TIMERS

META_TABLE = "__satchel_meta"
BATCH_ROWS = 64 * 1024
# DuckDB's row group (its default `row_group_size`, 60 vectors of 2048 rows)
ROW_GROUP_ROWS = 122_880



def execution_slots() -> int:
    """How many queries a DuckDB database executes at once: `SATCHEL_DUCKDB_SLOTS`, else the
    cores this process may use (at least 2)."""
    configured = int(os.environ.get("SATCHEL_DUCKDB_SLOTS", "0") or 0)
    return configured if configured > 0 else max(2, len(os.sched_getaffinity(0)))


class DuckDBAccelerator:
    """One DuckDB database. Writes are serialised; every reader uses its own cursor, and MVCC
    gives each query a consistent snapshot, so `CREATE OR REPLACE` swaps are atomic for them."""

    engine = "duckdb"

    def __init__(self, path: str | None = None, memory_limit: str | None = None, threads: int | None = None,
                 temp_directory: str | None = None) -> None:
        """`temp_directory`: where DuckDB spills past `memory_limit` (its default for an in-memory
        database is `.tmp` in the working directory; a file database's is next to its file)."""
        self.path = path
        self.instance_id = f"duckdb:{path or 'memory'}"
        self._con = duckdb.connect(path or ":memory:")
        self._closed = False
        self._write_lock = threading.Lock()
        self._indexes: dict[str, tuple[TableIndex, ...]] = {}  # declared by each table's dataset
        self._slots = FifoSlots(execution_slots())
        setup = [
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET GLOBAL TimeZone = 'UTC'",  # GLOBAL: cursors (one per query) get it too
        ]
        if memory_limit:
            setup.append(f"SET memory_limit = '{memory_limit}'")
        if threads:
            setup.append(f"SET threads = {int(threads)}")
        if temp_directory:
            setup.append("SET temp_directory = " + "'" + temp_directory.replace("'", "''") + "'")
        for stmt in setup:
            self._con.execute(stmt)
        self._con.execute(
            f"CREATE TABLE IF NOT EXISTS {META_TABLE} (dataset VARCHAR PRIMARY KEY, source VARCHAR, loaded_at TIMESTAMPTZ)"
        )
        # the source version (e.g. an Iceberg snapshot) a load brought the table to; added to
        # files written before the column existed
        self._con.execute(f"ALTER TABLE {META_TABLE} ADD COLUMN IF NOT EXISTS version VARCHAR")
        load_extensions(self._con)  # vss and fts, for search indexes (before the lockdown below)
        self.search = SearchStore(self._con, self._write_lock, lambda cur, name: quote_ident(name))
        if path:
            # A process killed mid-load leaves blocks only a checkpoint gives back (the file grew
            # by about one load per kill -9 until the next one): reclaim them at open.
            self._con.execute("CHECKPOINT")
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")

    # -- reading ---------------------------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self._con.cursor()

    def has_table(self, name: str) -> bool:
        cur = self.cursor()
        try:
            row = cur.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?", [name]
            ).fetchone()
            return bool(row and row[0])
        finally:
            cur.close()

    def loaded_source(self, name: str) -> str | None:
        """The `from:` recorded by the last successful load of `name` (file mode restarts)."""
        cur = self.cursor()
        try:
            row = cur.execute(f"SELECT source FROM {META_TABLE} WHERE dataset = ?", [name]).fetchone()
            return row[0] if row else None
        finally:
            cur.close()

    def loaded_version(self, name: str) -> str | None:
        """The source version recorded by the last load of `name` (None: none recorded)."""
        cur = self.cursor()
        try:
            row = cur.execute(f"SELECT version FROM {META_TABLE} WHERE dataset = ?", [name]).fetchone()
            return row[0] if row else None
        finally:
            cur.close()

    def schema(self, name: str) -> pa.Schema:
        self._require(name)
        cur = self.cursor()
        try:
            return cur.execute(f"SELECT * FROM {quote_ident(name)} LIMIT 0").to_arrow_table().schema
        finally:
            cur.close()

    def row_count(self, name: str) -> int:
        self._require(name)
        cur = self.cursor()
        try:
            return int(cur.execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchone()[0])
        finally:
            cur.close()

    def max_value(self, name: str, column: str) -> object:
        if not self.has_table(name):
            return None
        cur = self.cursor()
        try:
            result = cur.execute(f"SELECT max({quote_ident(column)}) AS m FROM {quote_ident(name)}").to_arrow_table()
            return result.column(0)[0].as_py()
        finally:
            cur.close()

    def query(self, sql: str, params: Sequence[object] | None = None,
              timeout: float | None = None) -> pa.RecordBatchReader:
        """Run one SELECT (DuckDB dialect) and stream the result; the cursor lives as long as the reader.

        Defence in depth under the SQL policy: DuckDB's own parser must see exactly one SELECT
        statement (no ATTACH, DDL, DML, SET, PRAGMA, multi-statement strings), and the database
        is locked down (no file access, no extensions, no settings changes). With `timeout`
        (seconds), the query is interrupted inside DuckDB when it runs longer and the reader
        raises QueryTimeout."""
        cur = self.cursor()
        timer = _Deadline(cur, timeout) if timeout else None
        scope = CALLER.get().scope
        if scope is not None:  # a client that goes away, or a stopping server, interrupts the query
            scope.add(cur.interrupt)
        try:
            statements = cur.extract_statements(sql)
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                kinds = ", ".join(st.type.name for st in statements) or "nothing"
                raise ReadOnlyViolation(f"the DuckDB accelerator runs exactly one SELECT statement; got {kinds}")
            with self._slot(timeout, scope):
                result = cur.execute(statements[0], params) if params else cur.execute(statements[0])
                reader = result.to_arrow_reader(BATCH_ROWS)
        except duckdb.InterruptException:
            cur.close()
            raise _interrupted(timer) from None
        except Exception:
            if timer:
                timer.cancel()
            cur.close()
            raise
        return pa.RecordBatchReader.from_batches(reader.schema, _owning(reader, cur, timer))

    @contextlib.contextmanager
    def _slot(self, timeout: float | None, scope: CancelScope | None = None) -> Iterator[None]:
        """One of the database's execution slots while a query executes up to its first batch.

        Many clients at once would otherwise all execute together, each slowed by all the
        others (and the slowest kinds the most): with as many slots as cores, queries execute
        in arrival order at full speed, so a query's latency under load is mostly its wait,
        alike for every kind. Streaming the rest of a result to a slow client holds no slot. A
        query cancelled while it waits (`scope`: its client went away) leaves the line at once."""
        if not self._slots.acquire(timeout=timeout or None, scope=scope):
            if scope is not None and scope.cancelled:
                raise RequestCancelled("the query was cancelled while it waited to run")
            raise QueryTimeout(f"query exceeded the runtime query_timeout of {timeout:g}s waiting to run")
        try:
            yield
        finally:
            self._slots.release()

    def interrupt_all(self) -> None:
        self._con.interrupt()

    def scan(
        self, name: str, columns: Sequence[str] | None, filters: Sequence[Filter], limit: int | None
    ) -> pa.RecordBatchReader:
        self._require(name)
        return self.query(select_sql(name, columns, filters, limit, "duckdb"))

    # -- writing ---------------------------------------------------------------------------

    def replace(
        self, name: str, reader: pa.RecordBatchReader, primary_key: Sequence[str] = (), source: str | None = None,
        version: str | None = None,
    ) -> int:
        """Stream `reader` into a new version of the table (with its declared indexes), swapped
        in one transaction."""
        with self._write_lock, self._registered(_in_row_groups(reader)) as (cur, src), self._transaction(cur, name):
            cur.execute(f"CREATE OR REPLACE TABLE {quote_ident(name)} AS SELECT * FROM {src}")
            self._build_indexes(cur, name)
            count = int(cur.execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchone()[0])
            self._record_load(cur, name, source, version)
        self._checkpoint()
        return count

    def append(
        self,
        name: str,
        reader: pa.RecordBatchReader,
        primary_key: Sequence[str],
        on_conflict: Mapping[str, str],
        source: str | None = None,
        version: str | None = None,
    ) -> int:
        """Insert new rows; with a primary key, `upsert` replaces and `drop` skips existing keys."""
        if not self.has_table(name):
            return self.replace(name, reader, primary_key, source, version)
        keys = list(primary_key)
        # An increment with keys is small and is read twice (delete, insert): hold it, deduplicated.
        source_rows = dedupe_last(reader.read_all(), keys) if keys else _in_row_groups(reader)
        drop = bool(on_conflict) and all(v == "drop" for v in on_conflict.values())
        cols = ", ".join(quote_ident(c) for c in self.schema(name).names)
        with self._write_lock, self._registered(source_rows) as (cur, src), self._transaction(cur, name):
            self._build_indexes(cur, name)  # any a column change dropped
            if keys:
                key_cols = ", ".join(quote_ident(k) for k in keys)
                match = " AND ".join(f"t.{quote_ident(k)} IS NOT DISTINCT FROM s.{quote_ident(k)}" for k in keys)
                if drop:
                    select = f"SELECT {cols} FROM {src} s WHERE NOT EXISTS (SELECT 1 FROM {quote_ident(name)} t WHERE {match})"
                else:
                    cur.execute(f"DELETE FROM {quote_ident(name)} t WHERE ({key_cols}) IN (SELECT {key_cols} FROM {src})")
                    select = f"SELECT {cols} FROM {src}"
            else:
                select = f"SELECT {cols} FROM {src}"
            changed = int(cur.execute(f"INSERT INTO {quote_ident(name)} {select}").fetchone()[0])
            self._record_load(cur, name, source, version)
        self._checkpoint()
        return changed

    def delete_keys(self, name: str, keys: pa.Table) -> int:
        """Delete the rows whose key (the columns of `keys`) is one of `keys`' rows."""
        if keys.num_rows == 0:
            return 0
        key_cols = ", ".join(quote_ident(k) for k in keys.column_names)
        with self._write_lock, self._registered(keys) as (cur, src):
            deleted = int(cur.execute(
                f"DELETE FROM {quote_ident(name)} WHERE ({key_cols}) IN (SELECT {key_cols} FROM {src})").fetchone()[0])
        self._checkpoint()
        return deleted

    def alter_columns(self, name: str, changes: Sequence[tuple]) -> None:
        """Apply column changes in one transaction: ("add", column, pa.DataType),
        ("rename", old, new), ("drop", column). Added columns are NULL in existing rows. The
        table's indexes are dropped with them (DuckDB alters no indexed table) and rebuilt after,
        in a transaction of their own (DuckDB cannot re-create a name dropped in the same one)."""
        self._require(name)
        with self._write_lock:
            cur = self.cursor()
            try:
                with self._transaction(cur, name):
                    self._drop_indexes(cur, name)
                    for change in changes:
                        kind, column = change[0], change[1]
                        if kind == "add":
                            sql_type = _duckdb_type(cur, change[2])
                            cur.execute(f"ALTER TABLE {quote_ident(name)} ADD COLUMN {quote_ident(column)} {sql_type}")
                        elif kind == "rename":
                            cur.execute(f"ALTER TABLE {quote_ident(name)} RENAME COLUMN {quote_ident(column)} TO {quote_ident(change[2])}")
                        elif kind == "drop":
                            cur.execute(f"ALTER TABLE {quote_ident(name)} DROP COLUMN {quote_ident(column)}")
                        else:
                            raise ValueError(f"unknown column change {kind!r}")
                with self._transaction(cur, name):
                    self._build_indexes(cur, name)
            finally:
                cur.close()
        self._checkpoint()

    def delete_older_than(self, name: str, column: str, cutoff: object) -> int:
        with self._write_lock:
            cur = self.cursor()
            try:
                return int(cur.execute(f"DELETE FROM {quote_ident(name)} WHERE {quote_ident(column)} < ?", [cutoff]).fetchone()[0])
            finally:
                cur.close()

    def drop(self, name: str) -> None:
        with self._write_lock:
            cur = self.cursor()
            try:
                cur.execute(f"DROP TABLE IF EXISTS {quote_ident(name)}")
                cur.execute(f"DELETE FROM {META_TABLE} WHERE dataset = ?", [name])
            finally:
                cur.close()

    def close(self) -> None:
        """Checkpoint and close; closing twice is a no-op."""
        if self._closed:
            return
        self._closed = True
        self._checkpoint()
        self._con.close()

    # -- helpers ---------------------------------------------------------------------------

    def _require(self, name: str) -> None:
        if not self.has_table(name):
            raise NotFound(f"dataset '{name}' has no accelerated data yet")

    def _record_load(self, cur: duckdb.DuckDBPyConnection, name: str, source: str | None,
                     version: str | None = None) -> None:
        cur.execute(
            f"INSERT OR REPLACE INTO {META_TABLE} (dataset, source, loaded_at, version) VALUES (?, ?, now(), ?)",
            [name, source or "", version],
        )

    # -- indexes ---------------------------------------------------------------------------

    def declare_indexes(self, name: str, indexes: Sequence[TableIndex]) -> None:
        """The indexes `name` carries from its next load on (KeepsIndexes)."""
        self._indexes[name] = tuple(indexes)

    def has_declared_indexes(self, name: str) -> bool:
        cur = self.cursor()
        try:
            return set(self._index_names(cur, name)) == {_index_name(name, i) for i in self._indexes.get(name, ())}
        finally:
            cur.close()

    def _index_names(self, cur: duckdb.DuckDBPyConnection, name: str) -> list[str]:
        """The indexes Satchel built on `name` (not the search store's)."""
        return [row[0] for row in cur.execute(
            "SELECT index_name FROM duckdb_indexes() WHERE schema_name = 'main' AND table_name = ? "
            "AND starts_with(index_name, ?)", [name, _INDEX_PREFIX]).fetchall()]

    def _drop_indexes(self, cur: duckdb.DuckDBPyConnection, name: str) -> None:
        for index in self._index_names(cur, name):
            cur.execute(f"DROP INDEX {quote_ident(index)}")

    def _build_indexes(self, cur: duckdb.DuckDBPyConnection, name: str) -> None:
        """Create those of `name`'s declared indexes it lacks, in `cur`'s transaction."""
        declared = self._indexes.get(name, ())
        if not declared:
            return
        built = set(self._index_names(cur, name))
        declared = [i for i in declared if _index_name(name, i) not in built]
        columns = [row[0] for row in cur.execute(
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = ? "
            "ORDER BY column_index", [name]).fetchall()]
        for index in declared:
            missing = [c for c in index.columns if c not in columns]
            if missing:
                raise ConnectorError(f"dataset '{name}': acceleration.indexes names column '{missing[0]}', which "
                                     f"its data does not have (columns: {', '.join(columns)})")
            unique = "UNIQUE " if index.unique else ""
            cur.execute(f"CREATE {unique}INDEX {quote_ident(_index_name(name, index))} ON {quote_ident(name)} "
                        f"({', '.join(quote_ident(c) for c in index.columns)})")

    @contextlib.contextmanager
    def _transaction(self, cur: duckdb.DuckDBPyConnection, name: str) -> Iterator[None]:
        """One transaction on table `name`: committed, or rolled back on any error. A unique
        index the data breaks (DuckDB says so at the statement, or at the commit of a table made
        in the same transaction) fails it clearly, naming the index but no value: the error is
        shown to principals whose policy may hide that column or row."""
        cur.execute("BEGIN TRANSACTION")
        try:
            yield
            cur.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(duckdb.TransactionException):  # a failed constraint may have ended it
                cur.execute("ROLLBACK")
            if isinstance(e, duckdb.ConstraintException) or (
                    isinstance(e, duckdb.TransactionException) and "constraint violation" in str(e)):
                unique = "; ".join("(" + ", ".join(i.columns) + ")" for i in self._indexes.get(name, ()) if i.unique)
                raise ConnectorError(f"dataset '{name}': the data breaks a unique index of acceleration.indexes "
                                     f"(a duplicate key in {unique or 'a unique index'}); the last good data is "
                                     f"kept") from None
            raise

    def _checkpoint(self) -> None:
        """Best effort, after every write: compress what was written and reclaim the blocks of
        replaced tables, so the file does not grow without bound. DuckDB compresses a table only
        at a checkpoint, in memory too, and a database in memory never checkpoints by itself:
        without this, an in-memory table stays uncompressed (about 4x the memory, and about 4x
        the CPU for an aggregate grouped by a string). A checkpoint cannot run while another
        transaction writes; the next one will."""
        cur = self.cursor()
        try:
            cur.execute("CHECKPOINT")
        except duckdb.Error:
            pass
        finally:
            cur.close()

    class _Registration:
        def __init__(self, outer: "DuckDBAccelerator", reader: pa.RecordBatchReader | pa.Table) -> None:
            self.cur = outer.cursor()
            self.name = f"__satchel_src_{uuid.uuid4().hex}"
            self.reader = reader

        def __enter__(self) -> tuple[duckdb.DuckDBPyConnection, str]:
            self.cur.register(self.name, self.reader)
            return self.cur, self.name

        def __exit__(self, *exc: object) -> None:
            try:
                self.cur.unregister(self.name)
            finally:
                self.cur.close()

    def _registered(self, reader: pa.RecordBatchReader | pa.Table) -> "DuckDBAccelerator._Registration":
        return DuckDBAccelerator._Registration(self, reader)


_INDEX_PREFIX = "__satchel_index_"


def _index_name(table: str, index: TableIndex) -> str:
    """A name that says which declaration an index was built from (a changed one is rebuilt)."""
    digest = hashlib.sha256(repr((index.columns, index.unique)).encode()).hexdigest()[:12]
    return f"{_INDEX_PREFIX}{digest}_{table}"


def _duckdb_type(cur: duckdb.DuckDBPyConnection, typ: pa.DataType) -> str:
    """DuckDB's SQL type for an Arrow type (as DuckDB itself maps it)."""
    probe = f"__satchel_type_{uuid.uuid4().hex}"
    cur.register(probe, pa.table({"c": pa.array([], typ)}))
    try:
        return cur.execute(f"DESCRIBE SELECT c FROM {probe}").fetchone()[1]
    finally:
        cur.unregister(probe)


class _Deadline:
    """Interrupts a cursor's running query when `seconds` pass."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self.seconds = seconds
        self._handle: int | None = TIMERS.schedule(seconds, cur.interrupt)

    def cancel(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            TIMERS.cancel(handle)

    def error(self) -> QueryTimeout:
        self.cancel()
        return QueryTimeout(f"query exceeded the runtime query_timeout of {self.seconds:g}s and was cancelled")


def _in_row_groups(reader: pa.RecordBatchReader | pa.Table) -> pa.RecordBatchReader:
    """`reader` re-cut into batches of exactly one row group (the last one shorter). DuckDB
    writes each such batch as its own row group, on any of its threads; smaller batches are
    merged into row groups one after another on one thread. Refreshing TPC-H lineitem from
    PostgreSQL: 1.38 s in the driver's ~45k-row batches, 1.09 s re-cut (bench/refresh_postgres.py)."""
    if isinstance(reader, pa.Table):
        reader = reader.to_reader()
    schema = reader.schema

    def batches() -> Iterator[pa.RecordBatch]:
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            if rows < ROW_GROUP_ROWS:
                continue
            held = pa.Table.from_batches(pending, schema)
            whole = rows - rows % ROW_GROUP_ROWS
            ready = held.slice(0, whole)
            if len(pending) > 1:  # one batch is sliced without a copy
                ready = ready.combine_chunks()
            yield from ready.to_batches(max_chunksize=ROW_GROUP_ROWS)
            pending, rows = held.slice(whole).to_batches(), rows - whole
        if rows:
            yield from pa.Table.from_batches(pending, schema).combine_chunks().to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


def _interrupted(timer: _Deadline | None) -> QueryTimeout:
    """The error of a query DuckDB interrupted: its deadline's, else a plain interrupt."""
    return timer.error() if timer else QueryTimeout("query interrupted")


def _owning(reader: pa.RecordBatchReader, cur: duckdb.DuckDBPyConnection,
            timer: _Deadline | None = None) -> Iterator[pa.RecordBatch]:
    """Yield the reader's batches (read ahead: accel.read_ahead), closing the cursor (and its
    deadline) when done or abandoned."""
    try:
        yield from read_ahead(reader, cur.interrupt)
    except duckdb.InterruptException:
        raise _interrupted(timer) from None
    except OSError as e:  # an interrupt after the first batch reaches us through pyarrow's stream
        if "INTERRUPT Error" not in str(e):
            raise
        raise _interrupted(timer) from None
    finally:
        if timer:
            timer.cancel()
        cur.close()
