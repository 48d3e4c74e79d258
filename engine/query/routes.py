"""The routes a plan runs on: the accelerator (DuckDB runs the whole query), a live source's own
count, the whole query in one SQL source (pushdown), or DataFusion over pushed-down scans
(federated). Every route's result has the same public Arrow types."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Callable, Iterator, Mapping, Sequence

import duckdb
import pyarrow as pa

from accel.arrow import ArrowAccelerator
from accel.duckdb import DuckDBAccelerator
from accel.shared_memory import SharedTable
from connectors.base import FULL_TEXT_OP, Counts, Filter, FilterSupport, OrdersTopN

from ..errors import SqlError
from ..memory import datafusion_pool
from ..refresh.dataset import DatasetRuntime
from ..task_history import Task, TaskHistory
from . import pushdown
from .duckdb_errors import explained
from .federated import duckdb_schema, federated_schema, looked_up, run_federated
from .planner import CONSTANTS_INSTANCE, Plan, TableScan
from .workers import WorkerPool, pool_size

Replan = Callable[[frozenset[str]], Plan]  # the same query planned with these datasets read from their sources


class Routes:
    def __init__(self, datasets: Mapping[str, DatasetRuntime], duckdb_instances: Mapping[str, DuckDBAccelerator],
                 arrow: ArrowAccelerator, task_history: TaskHistory, memory_budget: int,
                 query_timeout: timedelta | None, spill_dir: str | None = None,
                 on_worker_replaced: Callable[[str], None] = lambda reason: None) -> None:
        self.datasets = datasets
        self.duckdb_instances = duckdb_instances
        self.arrow = arrow
        self.task_history = task_history
        self.memory_budget = memory_budget
        self.query_timeout = query_timeout
        self.spill_dir = spill_dir
        self._constants: DuckDBAccelerator | None = None  # evaluates queries that name no table
        self.workers = WorkerPool(pool_size(memory_budget), on_replaced=on_worker_replaced)  # the federated engine's processes
        arrow.on_swap = lambda: self.workers.forget(arrow.shared_keys())  # idle workers unmap old tables
        self._lock = threading.Lock()

    def execute(self, plan: Plan, replan: Replan, task: Task | None = None) -> pa.RecordBatchReader:
        """Run `plan`; an accelerated dataset with `on_zero_results: use_source` that gives no
        rows is asked again from its source (`replan`)."""
        if plan.route == "accelerator":
            timeout = self.query_timeout.total_seconds() if self.query_timeout else None
            try:
                reader = self._accelerator(plan).query(plan.sql, timeout=timeout)
            except duckdb.Error as e:
                raise explained(e) from None
        else:
            reader = self._counted(plan)
            if reader is None and not plan.full_text:
                reader = pushdown.run(plan, self.datasets)  # whole query in one SQL source
            if reader is None:
                reader = self.federated(plan)
        reader = public_types(reader)
        if plan.output_names:
            reader = _renamed(reader, plan.output_names)
        fallback = [b.dataset for b in plan.bindings
                    if b.kind in ("duckdb", "arrow") and self.datasets[b.dataset.lower()].acceleration.on_zero_results == "use_source"]
        if fallback:
            def from_source() -> pa.RecordBatchReader:
                source_plan = replan(frozenset(fallback))
                if task is not None:
                    task.served_by = source_plan.served_by
                return self.execute(source_plan, replan)

            return _unless_empty(reader, from_source)
        return reader

    def schema(self, plan: Plan) -> pa.Schema:
        """`plan`'s result schema without reading data (DuckDB: LIMIT 0; DataFusion: empty tables)."""
        if plan.route == "accelerator":
            try:
                schema = duckdb_schema(self._accelerator(plan), plan.sql)
            except duckdb.Error as e:
                raise explained(e) from None
        else:
            try:
                schema = federated_schema(plan)
            except SqlError:  # PostgreSQL may run what the federated engine cannot plan
                statement = pushdown.described(plan, self.datasets) if not plan.full_text else None
                if statement is None:
                    raise
                schema = statement.schema
            if plan.output_names:
                schema = pa.schema([f.with_name(n) for f, n in zip(schema, plan.output_names)], metadata=schema.metadata)
        return public_types(pa.RecordBatchReader.from_batches(schema, [])).schema

    def from_source(self, plan: Plan) -> pa.RecordBatchReader:
        """A plan over sources only (a refresh's read): in the source when it can, else federated."""
        pushed = pushdown.run(plan, self.datasets)
        return pushed if pushed is not None else self.federated(plan)

    def federated(self, plan: Plan) -> pa.RecordBatchReader:
        """DataFusion over pushed-down scans, within the federated share of the memory budget;
        a lookup on one Arrow table (`Plan.arrow_lookup`) is a scan of it here instead."""
        lookup = plan.arrow_lookup
        if lookup is not None:
            ds = self.datasets[lookup.dataset.lower()]
            rows = self.arrow.exact_scan(ds.name, lookup.columns, lookup.filters, lookup.limit, lookup.order,
                                         lookup.aggregates)
            if rows is not None:
                return looked_up(plan, lookup, rows)
        return run_federated(plan, self._open_scan, self.workers, self.arrow.shared_keys(),
                             pool_bytes=datafusion_pool(self.memory_budget))

    def _accelerator(self, plan: Plan) -> DuckDBAccelerator:
        if plan.instance_id == CONSTANTS_INSTANCE:
            with self._lock:
                if self._constants is None:  # made on first use: most pods never need it
                    self._constants = DuckDBAccelerator(None, memory_limit=f"{datafusion_pool(self.memory_budget)}B",
                                                        threads=1, temp_directory=self.spill_dir)
                return self._constants
        return self.duckdb_instances[plan.instance_id.split(":", 1)[1]]

    def close(self) -> None:
        self.workers.close()
        with self._lock:
            if self._constants is not None:
                self._constants.close()

    def _open_scan(self, scan: TableScan) -> pa.RecordBatchReader | pa.Table | SharedTable:
        b = scan.binding
        if b.kind == "memory":
            return self.task_history.table()
        if b.kind in ("search", "catalog"):
            assert b.rows is not None
            return b.rows
        ds = self.datasets[b.dataset.lower()]
        if b.kind == "arrow":
            return self.arrow.shared(ds.name)
        if b.kind == "duckdb":
            return ds.accelerator.scan(ds.name, scan.columns, scan.filters, None if scan.order else scan.limit)
        pushed, exact = _pushed_filters(ds, scan.filters)
        limit = scan.limit if exact else None
        if limit is not None and scan.order:  # a top-N: only a source that orders may cut rows
            if isinstance(ds.connector, OrdersTopN) and ds.connector.classify_order(scan.order):
                return ds.connector.scan(scan.columns, pushed, limit, order_by=scan.order)
            limit = None
        return ds.connector.scan(scan.columns, pushed, limit)

    def _counted(self, plan: Plan) -> pa.RecordBatchReader | None:
        """`SELECT count(*) FROM t [WHERE ...]` answered by a live source's own count."""
        if plan.count_as is None or plan.scans[0].binding.kind != "source":
            return None
        scan = plan.scans[0]
        ds = self.datasets[scan.binding.dataset.lower()]
        if not isinstance(ds.connector, Counts):
            return None
        pushed, exact = _pushed_filters(ds, scan.filters)
        if not exact:
            return None
        # non-null, as count(*) is in the planned schema GetFlightInfo announces (ADBC clients
        # reject a stream whose schema differs from it)
        schema = pa.schema([pa.field(plan.count_as, pa.int64(), nullable=False)])
        table = pa.table([pa.array([int(ds.connector.count(pushed))], pa.int64())], schema=schema)
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


def _pushed_filters(ds: DatasetRuntime, filters: Sequence[Filter]) -> tuple[list[Filter], bool]:
    """The filters the source takes, and whether it takes them all exactly; a full-text
    match() the source cannot run exactly is an error (nothing else can run it)."""
    support = ds.connector.classify_filters(filters)
    for f, s in zip(filters, support):
        if f.op == FULL_TEXT_OP and s is not FilterSupport.EXACT:
            raise SqlError(f"dataset '{ds.name}' ({ds.config.connector_prefix}) cannot run full-text "
                           f"match({f.column}, ...): use it on a search source (elasticsearch)")
    pushed = [f for f, s in zip(filters, support) if s is not FilterSupport.UNSUPPORTED]
    return pushed, all(s is FilterSupport.EXACT for s in support)


def _public_type(t: pa.DataType) -> pa.DataType:
    """The type clients get for `t`, the same whichever engine ran the query: no unsigned
    integers (PostgreSQL has none; DataFusion's row_number() is UInt64), no view or large
    string layouts (DataFusion's CAST(.. AS VARCHAR) is Utf8View), microseconds at most, as in
    PostgreSQL (DataFusion's now() is in nanoseconds, which Python's datetime cannot hold),
    nested types alike, a list's item named `item` (Arrow's default; DuckDB writes `l`)."""
    if pa.types.is_timestamp(t) and t.unit == "ns":
        return pa.timestamp("us", t.tz)
    if pa.types.is_time64(t) and t.unit == "ns":
        return pa.time64("us")
    if pa.types.is_duration(t) and t.unit == "ns":
        return pa.duration("us")
    if pa.types.is_unsigned_integer(t):
        return {8: pa.int16(), 16: pa.int32()}.get(t.bit_width, pa.int64())
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return pa.list_(t.value_field.with_name("item").with_type(_public_type(t.value_type)))  # DuckDB names it "l"
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_public_type(t.field(i).type)) for i in range(t.num_fields)])
    return t


def _has_nanoseconds(t: pa.DataType) -> bool:
    if isinstance(t, (pa.TimestampType, pa.Time64Type, pa.DurationType)):
        return t.unit == "ns"
    return any(_has_nanoseconds(t.field(i).type) for i in range(t.num_fields))


def public_types(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    schema = reader.schema
    target = pa.schema([f.with_type(_public_type(f.type)) for f in schema], metadata=schema.metadata)
    # (by their text: Arrow's type equality ignores a list item's name)
    changed = [str(f.type) != str(t.type) for f, t in zip(schema, target)]
    if not any(changed):
        return reader

    # Nanoseconds are cut to microseconds (an unsafe cast); every other cast stays checked.
    safe = [not _has_nanoseconds(f.type) for f in schema]

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield pa.RecordBatch.from_arrays(
                [col.cast(f.type, safe=ok) if change else col
                 for col, f, ok, change in zip(batch.columns, target, safe, changed)], schema=target)

    return pa.RecordBatchReader.from_batches(target, batches())


def _renamed(reader: pa.RecordBatchReader, names: list[str]) -> pa.RecordBatchReader:
    schema = pa.schema([f.with_name(n) for f, n in zip(reader.schema, names)], metadata=reader.schema.metadata)
    return pa.RecordBatchReader.from_batches(schema, (pa.RecordBatch.from_arrays(b.columns, schema=schema) for b in reader))


def _unless_empty(reader: pa.RecordBatchReader, fallback: Callable[[], pa.RecordBatchReader]) -> pa.RecordBatchReader:
    """`reader`, or `fallback()` when reader yields no rows at all (on_zero_results: use_source)."""
    held: list[pa.RecordBatch] = []
    for batch in reader:
        held.append(batch)
        if batch.num_rows:
            break
    else:
        return fallback()

    def rest() -> Iterator[pa.RecordBatch]:
        yield from held
        yield from reader

    return pa.RecordBatchReader.from_batches(reader.schema, rest())
