"""Runs a Plan: whole in one DuckDB accelerator, or in DataFusion over pushed-down scans."""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
import pyarrow.dataset as ds
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
        ctx.register_dataset(scan.register_as, ds.dataset(source))
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
