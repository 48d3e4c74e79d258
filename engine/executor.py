"""Runs a Plan: whole in one DuckDB accelerator, or in DataFusion over pushed-down scans."""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
from datafusion import SessionConfig, SessionContext, SQLOptions

from .errors import SqlError
from .planner import Plan, TableScan

ScanOpener = Callable[[TableScan], "pa.RecordBatchReader | pa.Table"]
"""Opens one pushed-down scan: an Arrow table (zero-copy) or a stream."""

_SQL_OPTIONS = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)


def run_federated(plan: Plan, open_scan: ScanOpener, target_partitions: int = 2) -> pa.RecordBatchReader:
    """Register every scan in a fresh DataFusion session and stream the query's result."""
    config = SessionConfig().with_target_partitions(target_partitions).with_information_schema(False)
    ctx = SessionContext(config)
    for scan in plan.scans:
        source = open_scan(scan)
        if isinstance(source, pa.RecordBatchReader):
            # DataFusion cannot pull from a Python stream lazily: the pushed-down scan (already
            # projected and filtered at the source) is collected into Arrow memory here.
            source = source.read_all()
        # An in-memory table (zero-copy import of its batches). Not `register_dataset`: a
        # pyarrow dataset is scanned through Python under the GIL, several times slower.
        # One partition keeps the table's row order for plain scans; DataFusion still
        # repartitions joins and aggregates over `target_partitions` cores.
        batches = source.to_batches()
        if not batches:
            batches = [pa.record_batch([pa.array([], f.type) for f in source.schema], schema=source.schema)]
        ctx.register_record_batches(scan.register_as, [batches])
    try:
        df = ctx.sql_with_options(plan.sql, _SQL_OPTIONS)
        reader = pa.RecordBatchReader.from_stream(df)
    except Exception as e:  # DataFusion raises plain Exceptions for planning errors
        raise SqlError(f"query failed in the federated engine: {_clean(e)}") from None
    return _widened(reader, plan.widen_decimals) if plan.widen_decimals else reader


def _widened(reader: pa.RecordBatchReader, columns: list[int]) -> pa.RecordBatchReader:
    """`reader` with the given decimal columns widened to decimal128(38, scale)."""
    fields = list(reader.schema)
    for i in columns:
        typ = fields[i].type if i < len(fields) else None
        if pa.types.is_decimal128(typ) and typ.precision < 38:
            fields[i] = fields[i].with_type(pa.decimal128(38, typ.scale))
    schema = pa.schema(fields, metadata=reader.schema.metadata)
    if schema.equals(reader.schema):
        return reader
    return pa.RecordBatchReader.from_batches(schema, (batch.cast(schema) for batch in reader))


def _clean(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
