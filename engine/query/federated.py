"""Runs a Plan: whole in one DuckDB accelerator, or in DataFusion over pushed-down scans."""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext, SQLOptions

from ..errors import SqlError
from .planner import Plan, TableScan

ScanOpener = Callable[[TableScan], "pa.RecordBatchReader | pa.Table"]
"""Opens one pushed-down scan: an Arrow table (zero-copy) or a stream."""

_SQL_OPTIONS = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)


def run_federated(plan: Plan, open_scan: ScanOpener, target_partitions: int = 2,
                  pool_bytes: int | None = None) -> pa.RecordBatchReader:
    """Register every scan in a fresh DataFusion session and stream the query's result; its
    sorts, joins and aggregates spill to disk past `pool_bytes` (then fail: resources exhausted)."""
    ctx = _session(target_partitions, pool_bytes)
    for scan in plan.scans:
        source = open_scan(scan)
        if isinstance(source, pa.RecordBatchReader):
            # DataFusion cannot pull from a Python stream lazily: the pushed-down scan (already
            # projected and filtered at the source) is collected into Arrow memory here.
            source = source.read_all()
        source = _conformed(source, scan.binding.schema)
        # An in-memory table (zero-copy import of its batches). Not `register_dataset`: a
        # pyarrow dataset is scanned through Python under the GIL, several times slower.
        # One partition keeps the table's row order for plain scans; DataFusion still
        # repartitions joins and aggregates over `target_partitions` cores.
        ctx.register_record_batches(scan.register_as, [source.to_batches() or [_empty_batch(source.schema)]])
    try:
        df = ctx.sql_with_options(plan.sql, _SQL_OPTIONS)
        reader = pa.RecordBatchReader.from_stream(df)
    except Exception as e:  # DataFusion raises plain Exceptions for planning errors
        raise SqlError(f"query failed in the federated engine: {_clean(e)}") from None
    return _widened(reader, plan.widen_decimals) if plan.widen_decimals else reader


def federated_schema(plan: Plan, target_partitions: int = 2) -> pa.Schema:
    """The result schema `run_federated(plan)` streams, found without reading any data: every
    scan is registered as an empty table of its dataset's schema (scans are conformed to it)."""
    ctx = _session(target_partitions)
    for scan in plan.scans:
        ctx.register_record_batches(scan.register_as, [[_empty_batch(scan.binding.schema)]])
    try:
        df = ctx.sql_with_options(plan.sql, _SQL_OPTIONS)
        schema = df.schema()
    except Exception as e:
        raise SqlError(f"query failed in the federated engine: {_clean(e)}") from None
    return _widened_schema(schema, plan.widen_decimals) if plan.widen_decimals else schema


def duckdb_schema(accelerator, sql: str) -> pa.Schema:
    """The result schema of `sql` (DuckDB dialect) in a DuckDB accelerator, executed with LIMIT 0
    through the relation API (which keeps duplicate output names as they are)."""
    cur = accelerator.cursor()
    try:
        return cur.sql(sql).limit(0).to_arrow_table().schema
    finally:
        cur.close()


def _session(target_partitions: int, pool_bytes: int | None = None) -> SessionContext:
    config = SessionConfig().with_target_partitions(target_partitions).with_information_schema(False)
    if pool_bytes is None:
        return SessionContext(config)
    return SessionContext(config, RuntimeEnvBuilder().with_disk_manager_os().with_fair_spill_pool(pool_bytes))


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.record_batch([pa.array([], f.type) for f in schema], schema=schema)


def _conformed(source: pa.Table, declared: pa.Schema) -> pa.Table:
    """`source` with each column of the dataset's declared schema in its declared type (a scan
    normally has them already), so results match the schema `federated_schema` announced."""
    fields = []
    for f in source.schema:
        i = declared.get_field_index(f.name)
        fields.append(f.with_type(declared.field(i).type) if i >= 0 else f)
    target = pa.schema(fields, metadata=source.schema.metadata)
    if [f.type for f in target] == [f.type for f in source.schema]:
        return source
    return source.cast(target)


def _widened_schema(schema: pa.Schema, columns: list[int]) -> pa.Schema:
    fields = list(schema)
    for i in columns:
        typ = fields[i].type if i < len(fields) else None
        if pa.types.is_decimal128(typ) and typ.precision < 38:
            fields[i] = fields[i].with_type(pa.decimal128(38, typ.scale))
    return pa.schema(fields, metadata=schema.metadata)


def _widened(reader: pa.RecordBatchReader, columns: list[int]) -> pa.RecordBatchReader:
    """`reader` with the given decimal columns widened to decimal128(38, scale)."""
    schema = _widened_schema(reader.schema, columns)
    if schema.equals(reader.schema):
        return reader
    return pa.RecordBatchReader.from_batches(schema, (batch.cast(schema) for batch in reader))


def _clean(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
