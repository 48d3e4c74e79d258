"""Runs a Plan: whole in one DuckDB accelerator, or in DataFusion over pushed-down scans."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.base import CALLER

from ..errors import SqlError
from .interrupt import InterruptibleRead, reserve_threads
from .planner import Plan, TableScan

reserve_threads()  # before DataFusion's runtime exists
from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext, SQLOptions  # noqa: E402

ScanOpener = Callable[[TableScan], "pa.RecordBatchReader | pa.Table"]
"""Opens one pushed-down scan: an Arrow table (zero-copy) or a stream."""

SPILL_ROW_GROUP = 64 * 1024  # rows per row group of a spill file: DataFusion reads one at a time

_SQL_OPTIONS = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)


def run_federated(plan: Plan, open_scan: ScanOpener, target_partitions: int = 2,
                  pool_bytes: int | None = None) -> pa.RecordBatchReader:
    """Register every scan in a fresh DataFusion session and stream the query's result; its
    sorts, joins and aggregates spill to disk past `pool_bytes` (then fail: resources exhausted).

    DataFusion cannot pull from a Python stream lazily, so a streamed scan (already projected
    and filtered at its source) is held in Arrow memory up to its share of `pool_bytes`; a
    larger one is spilled to a Parquet file, which DataFusion then reads as it goes, so memory
    never grows with the data. Spill files are removed when the result ends or is dropped."""
    scan = plan.plain_scan
    if scan is not None:  # nothing for DataFusion to do: stream the scan as it comes
        reader = _streamed(open_scan(scan), federated_schema(plan, target_partitions))
        return _widened(reader, plan.widen_decimals) if plan.widen_decimals else reader
    spill = _Spill()
    hold = pool_bytes // max(1, len(plan.scans)) if pool_bytes is not None else None
    try:
        rows = [(scan, _held_or_spilled(scan, open_scan(scan), hold, spill)) for scan in plan.scans]
        # DataFusion 55 can hang reading Parquet on several partitions while its memory pool is
        # under pressure (seen with fair and greedy pools); a spilled query runs on one.
        ctx = _session(1 if spill.used else target_partitions, pool_bytes)
        for scan, held in rows:
            if isinstance(held, Path):
                ctx.register_parquet(scan.register_as, str(held))
            else:
                # A zero-copy import of the batches. Not `register_dataset`: a pyarrow dataset is
                # scanned through Python under the GIL, several times slower. One partition keeps
                # the table's row order for plain scans; DataFusion still repartitions joins and
                # aggregates over `target_partitions` cores.
                ctx.register_record_batches(scan.register_as, [held])
        del rows
        try:
            reader = pa.RecordBatchReader.from_stream(ctx.sql_with_options(plan.sql, _SQL_OPTIONS))
        except Exception as e:  # DataFusion raises plain Exceptions for planning errors
            raise SqlError(f"query failed in the federated engine: {_clean(e)}") from None
    except BaseException:
        spill.remove()
        raise
    limit = "runtime.params.query_timeout" if CALLER.get().kind == "query" else "refresh_timeout"
    reader = InterruptibleRead(reader, limit).reader()  # the deadline holds inside an operator
    if plan.widen_decimals:
        reader = _widened(reader, plan.widen_decimals)
    return spill.until_done(reader) if spill.used else reader


def _streamed(source: "pa.RecordBatchReader | pa.Table", schema: pa.Schema) -> pa.RecordBatchReader:
    """`source` as the federated engine would give it: the scan's columns, in the announced
    schema (types conformed; names, nullability and metadata as announced), batch by batch."""
    types, names = [f.type for f in schema], schema.names

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in source.to_batches() if isinstance(source, pa.Table) else source:
                if batch.schema.names != names:  # an accelerator's table or search rows hold every column
                    batch = batch.select(names)
                if [f.type for f in batch.schema] != types:
                    batch = batch.cast(pa.schema([f.with_type(t) for f, t in zip(batch.schema, types)]))
                yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        finally:
            if isinstance(source, pa.RecordBatchReader):
                source.close()  # a result dropped early ends its source statement now

    return pa.RecordBatchReader.from_batches(schema, batches())


def _held_or_spilled(scan: TableScan, source: "pa.RecordBatchReader | pa.Table", hold: int | None,
                     spill: "_Spill") -> list[pa.RecordBatch] | Path:
    """One scan's rows in its dataset's declared types: batches in memory when they fit in
    `hold` bytes, else the Parquet file they were spilled to."""
    if isinstance(source, pa.Table):
        source = _conformed(source, scan.binding.schema)
        return source.to_batches() or [_empty_batch(source.schema)]
    schema = _conformed_schema(source.schema, scan.binding.schema)
    batches = (batch if batch.schema.equals(schema) else batch.cast(schema) for batch in source)
    held: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        held.append(batch)
        size += batch.nbytes
        if hold is not None and size > hold:
            return spill.write(scan.register_as, schema, held, batches)
    return held or [_empty_batch(schema)]


class _Spill:
    """The spill files of one federated query, in one temporary directory."""

    def __init__(self) -> None:
        self._dir: Path | None = None

    @property
    def used(self) -> bool:
        return self._dir is not None

    def write(self, name: str, schema: pa.Schema, held: list[pa.RecordBatch],
              rest: Iterator[pa.RecordBatch]) -> Path:
        """`held` then the rest of the stream, written to one Parquet file (`held` freed as it is written)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="satchel-spill-"))
        path = self._dir / f"{name}.parquet"
        with pq.ParquetWriter(path, schema, compression="lz4") as writer:
            held.reverse()  # popped from the end: each batch is released once written
            while held:
                writer.write_batch(held.pop(), row_group_size=SPILL_ROW_GROUP)
            for batch in rest:
                writer.write_batch(batch, row_group_size=SPILL_ROW_GROUP)
        return path

    def remove(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def until_done(self, reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        """`reader`, removing the spill files when it ends, fails or is dropped."""
        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from reader
            finally:
                self.remove()

        return pa.RecordBatchReader.from_batches(reader.schema, batches())


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


def _conformed_schema(schema: pa.Schema, declared: pa.Schema) -> pa.Schema:
    """`schema` with each column of the dataset's declared schema in its declared type (a scan
    normally has them already), so results match the schema `federated_schema` announced."""
    fields = []
    for f in schema:
        i = declared.get_field_index(f.name)
        fields.append(f.with_type(declared.field(i).type) if i >= 0 else f)
    return pa.schema(fields, metadata=schema.metadata)


def _conformed(source: pa.Table, declared: pa.Schema) -> pa.Table:
    target = _conformed_schema(source.schema, declared)
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
    if "Recursive CTEs are not enabled" in text:
        return ("WITH RECURSIVE runs only where the whole query runs in a DuckDB accelerator (its datasets "
                "accelerated with engine: duckdb); the federated engine cannot stop a recursion that never ends")
    return text.splitlines()[0] if text else type(e).__name__
