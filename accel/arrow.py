"""The `arrow` accelerator: datasets held as in-memory Arrow tables, swapped by reference."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from connectors.arrow_filters import compile_filters
from connectors.base import CALLER, Caller, Filter, FilterSupport, SortKey
from engine.errors import NotFound, QueryTimeout, RequestCancelled

from .keys import merge_by_key
from .search import SearchStore, load_extensions
from .shared_memory import SharedTable, share, share_table
from .top_rows import top_rows
from .zone_maps import ZoneMaps


class ArrowAccelerator:
    """Tables live in shared memory (accel.shared_memory), one file per table version, so the
    federated engine's worker process maps them without a copy; readers hold the table object
    they started with, so a swap never shows them a partial table."""

    engine = "arrow"

    def __init__(self, instance_id: str = "arrow", search_memory_limit: str | None = None) -> None:
        self.instance_id = instance_id
        self._tables: dict[str, SharedTable] = {}
        self._versions: dict[str, str | None] = {}  # source version each table was loaded to
        self._write_lock = threading.Lock()
        self._search_memory_limit = search_memory_limit
        self._search: SearchStore | None = None
        self.on_swap: Callable[[], None] = lambda: None  # told after a table is replaced (its old file is stale)
        self._zone_maps = ZoneMaps()  # per table version, for exact_scan

    @property
    def search(self) -> SearchStore:
        """Search indexes live in a private in-memory DuckDB (vss, fts), which reads these Arrow
        tables in place; opened on first use."""
        with self._write_lock:
            if self._search is None:
                con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                                         "autoload_known_extensions": False})
                if self._search_memory_limit:
                    con.execute(f"SET memory_limit = '{self._search_memory_limit}'")
                load_extensions(con)
                con.execute("SET enable_external_access = false")
                con.execute("SET lock_configuration = true")
                self._search = SearchStore(con, threading.Lock(), self._relation)
            return self._search

    def _relation(self, cur: duckdb.DuckDBPyConnection, name: str) -> str:
        cur.register("__satchel_dataset", self.table(name))  # zero-copy: DuckDB scans the Arrow table
        return "__satchel_dataset"

    def has_table(self, name: str) -> bool:
        return name in self._tables

    def table(self, name: str) -> pa.Table:
        return self.shared(name).table

    def shared_keys(self) -> list[str]:
        """The keys of the shared-memory files of the tables held now."""
        return [t.key for t in list(self._tables.values())]

    def shared(self, name: str) -> SharedTable:
        """`name`'s table with the shared-memory file it is mapped from."""
        try:
            return self._tables[name]
        except KeyError:
            raise NotFound(f"dataset '{name}' has no accelerated data yet") from None

    def schema(self, name: str) -> pa.Schema:
        return self.table(name).schema

    def row_count(self, name: str) -> int:
        return self.table(name).num_rows

    def loaded_version(self, name: str) -> str | None:
        """The source version recorded by the last load of `name`."""
        return self._versions.get(name)

    def replace(
        self, name: str, reader: pa.RecordBatchReader, primary_key: Sequence[str] = (), source: str | None = None,
        version: str | None = None,
    ) -> int:
        shared = share(reader.schema, reader)  # building the in-memory copy is this accelerator's job
        with self._write_lock:
            self._set(name, shared)
            self._versions[name] = version
        return shared.table.num_rows

    def append(
        self,
        name: str,
        reader: pa.RecordBatchReader,
        primary_key: Sequence[str],
        on_conflict: Mapping[str, str],
        source: str | None = None,
        version: str | None = None,
    ) -> int:
        new = reader.read_all()
        with self._write_lock:
            old = self._tables.get(name)
            self._versions[name] = version
            if old is None:
                self._set(name, share_table(new))
                return new.num_rows
            old = old.table
            if new.schema != old.schema:  # by name: a source may order its columns differently
                new = new.select(old.schema.names).cast(old.schema)
            merged, changed = merge_by_key(old, new, primary_key, on_conflict)
            self._set(name, share_table(merged))
        return changed

    def alter_columns(self, name: str, changes: Sequence[tuple]) -> None:
        """("add", column, pa.DataType) (NULL in existing rows), ("rename", old, new),
        ("drop", column); swapped in at once."""
        with self._write_lock:
            table = self.table(name)
            for change in changes:
                kind, column = change[0], change[1]
                if kind == "add":
                    table = table.append_column(pa.field(column, change[2]), pa.nulls(table.num_rows, change[2]))
                elif kind == "rename":
                    table = table.rename_columns([change[2] if n == column else n for n in table.column_names])
                elif kind == "drop":
                    table = table.drop_columns([column])
                else:
                    raise ValueError(f"unknown column change {kind!r}")
            self._set(name, share_table(table))

    def delete_keys(self, name: str, keys: pa.Table) -> int:
        """Delete the rows whose key (the columns of `keys`) is one of `keys`' rows."""
        if keys.num_rows == 0:
            return 0
        with self._write_lock:
            old = self.table(name)
            names = keys.column_names
            keys = keys.cast(pa.schema([old.schema.field(n) for n in names]))
            marker = "__satchel_delete"
            marked = keys.append_column(marker, pa.array([True] * keys.num_rows))
            joined = old.join(marked, keys=names, join_type="left outer", use_threads=False)
            keep = pc.invert(pc.fill_null(joined[marker], False))
            new = joined.filter(keep).drop_columns([marker]).select(old.schema.names)
            self._set(name, share_table(new.cast(old.schema)))
        return old.num_rows - new.num_rows

    def delete_older_than(self, name: str, column: str, cutoff: object) -> int:
        with self._write_lock:
            old = self.table(name)
            keep = pc.fill_null(pc.greater_equal(old[column], pa.scalar(cutoff, old.schema.field(column).type)), True)
            new = old.filter(keep)
            self._set(name, share_table(new))
        return old.num_rows - new.num_rows

    def max_value(self, name: str, column: str) -> object:
        if name not in self._tables:
            return None
        return pc.max(self._tables[name].table[column]).as_py()

    def scan(
        self, name: str, columns: Sequence[str] | None, filters: Sequence[Filter], limit: int | None
    ) -> pa.RecordBatchReader:
        table = self.table(name)
        expr, support = compile_filters(filters, table.schema)
        if any(s is not FilterSupport.EXACT for s in support):
            limit = None  # the engine re-applies what was not pushed; a limit here could drop matches
        return _scanned(table, columns, expr, limit, CALLER.get())

    def exact_scan(
        self, name: str, columns: Sequence[str], filters: Sequence[Filter], limit: int | None,
        order: Sequence[SortKey] = (), aggregates: Sequence[tuple[str, str | None]] = (),
    ) -> pa.RecordBatchReader | None:
        """The rows of `SELECT columns FROM name WHERE filters [ORDER BY order] LIMIT limit`
        when pyarrow applies every filter exactly (they are then the answer as they are),
        streamed; else None. An `order` needs a `limit` (its rows are held while ranked).
        `aggregates` ((`count`, None) for count(*), (`count` | `min` | `max`, column)): one row
        of them over the matching rows instead, a column each."""
        shared = self.shared(name)
        table = shared.table
        expr, support = compile_filters(filters, table.schema)
        if any(s is not FilterSupport.EXACT for s in support):
            return None
        every = table.to_batches()
        kept = self._zone_maps.candidates(shared, table, filters)
        batches = [every[i] for i in kept]
        caller = CALLER.get()
        if aggregates:
            result = _aggregated(pa.Table.from_batches(batches, table.schema), expr, aggregates, caller)
            return pa.RecordBatchReader.from_batches(result.schema, result.to_batches())
        if not order:
            return _scanned(pa.Table.from_batches(batches, table.schema), columns, expr, limit, caller)
        if limit is None:
            raise ValueError("an ordered scan needs a limit")
        first = order[0].column
        zones = None
        if not order[0].nulls_first or all(b.column(first).null_count == 0 for b in batches):
            all_zones = self._zone_maps.zones(shared, table, first)  # NULLs rank last: a visit may stop early
            zones = [all_zones[i] for i in kept]
        top = top_rows(batches, table.schema, columns, expr, limit, order, zones, lambda: _still_wanted(caller))
        return pa.RecordBatchReader.from_batches(top.schema, top.to_batches())

    def _set(self, name: str, shared: SharedTable) -> None:
        replaced = name in self._tables
        self._tables[name] = shared
        if replaced:
            self.on_swap()

    def close(self) -> None:
        self._tables.clear()


def _scanned(table: pa.Table, columns: Sequence[str] | None, expr: pc.Expression | None,
             limit: int | None, caller: Caller) -> pa.RecordBatchReader:
    """The table's rows matching `expr` (at most `limit`), streamed in its batches' order. The
    scanner gives one batch per batch of the table, most of them empty for a lookup: those are
    left out (each would cost every layer above a pass)."""
    reader = ds.dataset(table).scanner(columns=list(columns) if columns else None, filter=expr).to_reader()
    return pa.RecordBatchReader.from_batches(reader.schema, _limited(reader, limit, caller))


def _aggregated(table: pa.Table, expr: pc.Expression | None, aggregates: Sequence[tuple[str, str | None]],
                caller: Caller) -> pa.Table:
    """One row: each aggregate over `table`'s rows matching `expr`, batch by batch (each batch's
    least and greatest values kept, then the least and greatest of those), holding one batch."""
    needed = list(dict.fromkeys(c for _, c in aggregates if c is not None))
    if expr is None:  # every row: the table's own batches, without a scan
        matching: Iterator[pa.RecordBatch] = (b.select(needed) for b in table.to_batches())
    else:
        matching = ds.dataset(table).scanner(columns=needed, filter=expr).to_reader()
    counts = [0] * len(aggregates)
    extremes: dict[str, list[pa.Scalar]] = {c: [] for fn, c in aggregates if fn != "count"}
    for batch in _limited(matching, None, caller):
        for i, (fn, column) in enumerate(aggregates):
            if fn == "count":
                counts[i] += batch.num_rows if column is None else pc.count(batch.column(column)).as_py()
        for column, kept in extremes.items():
            kept.extend(pc.min_max(batch.column(column)).values())
    folded = {c: pc.min_max(pa.array(kept, table.schema.field(c).type)) for c, kept in extremes.items()}
    columns = [pa.array([counts[i]], pa.int64()) if fn == "count"
               else pa.array([folded[column][fn]], table.schema.field(column).type)
               for i, (fn, column) in enumerate(aggregates)]
    return pa.table(columns, names=[f"{fn}_{i}" for i, (fn, _) in enumerate(aggregates)])


def _limited(reader: Iterable[pa.RecordBatch], limit: int | None, caller: Caller) -> Iterator[pa.RecordBatch]:
    left = limit
    for batch in reader:
        _still_wanted(caller)  # empty batches are not yielded: the checks above them would not run
        if left is not None:
            if left <= 0:
                break
            if batch.num_rows > left:
                batch = batch.slice(0, left)
            left -= batch.num_rows
        if batch.num_rows:
            yield batch


def _still_wanted(caller: Caller) -> None:
    """Raise when the task `caller` describes is past its deadline or cancelled (its client went
    away, the runtime stops): checked between batches of a scan in the sidecar, which no
    interrupt or worker kill can stop."""
    if caller.scope is not None and caller.scope.cancelled:
        raise RequestCancelled("the query was cancelled while it scanned the table")
    if caller.deadline is not None and time.monotonic() > caller.deadline:
        raise QueryTimeout("the query exceeded its deadline (runtime.params.query_timeout) while it scanned the table")
