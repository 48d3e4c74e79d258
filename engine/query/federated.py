"""Runs a Plan: whole in one DuckDB accelerator, or in DataFusion over pushed-down scans."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from accel.shared_memory import SharedTable, share, share_table
from connectors.base import CALLER

from ..errors import SqlError
from ..memory import resource_exhausted_text
from .datafusion_worker import empty_batch, error_text, planned, session
from .planner import ArrowLookup, Plan, TableScan
from .workers import PlanningError, WorkerPool, WorkerQueryError

ScanOpener = Callable[[TableScan], "pa.RecordBatchReader | pa.Table | SharedTable"]
"""Opens one pushed-down scan: an Arrow table (zero-copy; in shared memory when it is an
accelerator's) or a stream."""

SPILL_ROW_GROUP = 64 * 1024  # rows per row group of a spill file: DataFusion reads one at a time


def run_federated(plan: Plan, open_scan: ScanOpener, workers: WorkerPool, keep: list[str],
                  target_partitions: int = 2, pool_bytes: int | None = None) -> pa.RecordBatchReader:
    """Run the query in a DataFusion worker process over its scans, and stream the result; its
    sorts, joins and aggregates spill to disk past `pool_bytes` (then fail: resources exhausted).

    Every scan reaches the worker as a shared-memory Arrow file it maps without a copy: an Arrow
    accelerator's table as it is, a streamed scan (already projected and filtered at its source)
    written there as it comes, up to its share of `pool_bytes`; a larger one is spilled to a
    Parquet file, which DataFusion then reads as it goes, so memory never grows with the data.
    Spill files are removed when the result ends or is dropped. `keep`: the keys of the
    accelerator tables held now (a worker drops its mappings of any other)."""
    scan = plan.plain_scan
    if scan is not None:  # nothing for DataFusion to do: stream the scan as it comes
        reader = _streamed(open_scan(scan), federated_schema(plan, target_partitions))
        return _widened(reader, plan.widen_decimals) if plan.widen_decimals else reader
    spill = _Spill()
    hold = pool_bytes // max(1, len(plan.scans)) if pool_bytes is not None else None
    try:
        tables, shared = [], []
        for scan in plan.scans:
            scan_source = open_scan(scan)
            held = _shared_or_spilled(scan, scan_source, hold, spill)
            if isinstance(held, Path):
                tables.append({"name": scan.register_as, "parquet": str(held)})
            else:
                entry = {"name": scan.register_as, "fd": len(shared)}
                if held is scan_source:  # an accelerator's table: the worker may keep it mapped
                    entry["key"] = held.key
                tables.append(entry)
                shared.append(held)
        # DataFusion 55 can hang reading Parquet on several partitions while its memory pool is
        # under pressure (seen with fair and greedy pools); a spilled query runs on one.
        request = {"sql": plan.engine_sql or plan.sql, "partitions": 1 if spill.used else target_partitions,
                   "pool_bytes": pool_bytes, "tables": tables, "keep": keep}
        limit = "runtime.params.query_timeout" if CALLER.get().kind == "query" else "refresh_timeout"
        try:
            reader = workers.query(request, [s.fd for s in shared], limit)
        except PlanningError as e:
            if resource_exhausted_text(e):
                raise
            raise SqlError(f"query failed in the federated engine: {_clean(e)}") from None
        del shared  # the worker has mapped them
    except BaseException:
        spill.remove()
        raise
    reader = _explained(reader)
    if plan.widen_decimals:
        reader = _widened(reader, plan.widen_decimals)
    return spill.until_done(reader) if spill.used else reader


def _explained(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """DataFusion's errors after its first batch, said as those before it are (`_clean`)."""
    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except WorkerQueryError as e:
            if resource_exhausted_text(e):
                raise
            raise SqlError(f"query failed in the federated engine: {_clean(e)}") from None
    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def looked_up(plan: Plan, lookup: ArrowLookup, rows: pa.RecordBatchReader,
              target_partitions: int = 2) -> pa.RecordBatchReader:
    """`rows` (the Arrow table's scan answering `lookup`, the plan's) in the schema the federated
    engine announces for the plan, found once per lookup and its template's instances."""
    schema = lookup.memo.get("schema")
    if schema is None:
        schema = lookup.memo["schema"] = federated_schema(plan, target_partitions)
    if lookup.aggregates:  # one row: its columns as the engine names them
        return _streamed(rows.read_all().rename_columns(schema.names), schema)
    return _streamed(rows, schema)


def _streamed(source: "pa.RecordBatchReader | pa.Table | SharedTable", schema: pa.Schema) -> pa.RecordBatchReader:
    """`source` as the federated engine would give it: the scan's columns, in the announced
    schema (types conformed; names, nullability and metadata as announced), batch by batch."""
    types, names = [f.type for f in schema], schema.names
    if isinstance(source, SharedTable):
        source = source.table

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


def _shared_or_spilled(scan: TableScan, source: "pa.RecordBatchReader | pa.Table | SharedTable",
                       hold: int | None, spill: "_Spill") -> SharedTable | Path:
    """One scan's rows in its dataset's declared types: a shared-memory table when they fit in
    `hold` bytes, else the Parquet file they were spilled to."""
    if isinstance(source, SharedTable):
        if _conformed(source.table, scan.binding.schema) is source.table:
            return source  # an Arrow accelerator's table, mapped by the worker as it is
        source = source.table
    if isinstance(source, pa.Table):
        return share_table(_conformed(source, scan.binding.schema))
    schema = _conformed_schema(source.schema, scan.binding.schema)
    batches = (batch if batch.schema.equals(schema) else batch.cast(schema) for batch in source)
    over = False

    def within_hold() -> Iterator[pa.RecordBatch]:
        nonlocal over
        size = 0
        for batch in batches:
            yield batch
            size += batch.nbytes
            if hold is not None and size > hold:
                over = True
                return

    shared = share(schema, within_hold())
    if over:
        return spill.write(scan.register_as, schema, shared.table.to_batches(), batches)
    return shared


class _Spill:
    """The spill files of one federated query, in one temporary directory."""

    def __init__(self) -> None:
        self._dir: Path | None = None

    @property
    def used(self) -> bool:
        return self._dir is not None

    def write(self, name: str, schema: pa.Schema, held: list[pa.RecordBatch],
              rest: Iterator[pa.RecordBatch]) -> Path:
        """`held` then the rest of the stream, written to one Parquet file."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="satchel-spill-"))
        path = self._dir / f"{name}.parquet"
        with pq.ParquetWriter(path, schema, compression="lz4") as writer:
            for batch in held:
                writer.write_batch(batch, row_group_size=SPILL_ROW_GROUP)
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
    ctx = session(target_partitions)
    for scan in plan.scans:
        ctx.register_record_batches(scan.register_as, [[empty_batch(scan.binding.schema)]])
    try:
        schema = planned(ctx, plan.engine_sql or plan.sql).schema()
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


# DataFusion's words for what it cannot run (a regular expression) -> what to write instead
_AT_ARROWS = {"AtArrow": "@>", "ArrowAt": "<@"}  # DataFusion's names for them
_ADVICE = [(re.compile(pattern), advice) for pattern, advice in (
    ("Recursive CTEs are not enabled",
     "WITH RECURSIVE runs only where the whole query runs in a DuckDB accelerator (its datasets accelerated with "
     "engine: duckdb); the federated engine cannot stop a recursion that never ends"),
    ("Physical plan does not support logical expression (Exists|InSubquery)",
     "EXISTS (SELECT ...) and IN (SELECT ...) over a subquery that groups, aggregates or limits its rows run on the "
     "federated engine only as conditions (WHERE, HAVING, JOIN ... ON; its datasets accelerated with engine: duckdb "
     "run them anywhere); in a select list, count the rows instead: (SELECT count(*) FROM ...) > 0"),
    (r"logical expression OuterReferenceColumn\(Field \{ name: \"([^\"]+)\"",
     lambda m: f"the federated engine cannot run a subquery that reads the outer row's {m[1]} there (a LATERAL "
               "subquery with ORDER BY / LIMIT is one); for the top rows of each group, number them with a window "
               "function: SELECT ... FROM (SELECT ..., row_number() OVER (PARTITION BY k ORDER BY x DESC) AS r FROM u) "
               "AS ranked WHERE r <= n; or accelerate the datasets with engine: duckdb, which runs it as written"),
    ("The subquery should only return one column",
     "(a, b) IN (SELECT x, y ...) runs on the federated engine uncorrelated, as a condition of its own in a WHERE "
     "(... AND (a, b) IN (...)); otherwise write EXISTS (SELECT 1 FROM ... WHERE x = a AND y = b), or accelerate "
     "the datasets with engine: duckdb, which runs it anywhere"),
    ("Correlated scalar subquery must be aggregated",
     "a correlated subquery that returns one value runs on the federated engine as an aggregate: "
     "(SELECT max(x) FROM u WHERE u.k = t.k), not (SELECT x FROM u WHERE u.k = t.k); or accelerate the datasets "
     "with engine: duckdb, which runs it as written"),
    ("Physical plan does not support logical expression ScalarSubquery",
     "a subquery used as a value (EXISTS / IN in a select list too) runs on the federated engine only "
     "when it is correlated by equality "
     "(WHERE u.k = t.k); correlated otherwise (u.a < t.a), join and aggregate instead, or accelerate the datasets "
     "with engine: duckdb, which runs it anywhere"),
    (r"Operator (->>|->|#>>|#>|@>|<@) is not yet supported|Binary operator '(AtArrow|ArrowAt)' is not supported",
     lambda m: f"the JSON operator {m[1] or _AT_ARROWS[m[2]]} runs in the federated engine (DataFusion: "
               "Arrow-accelerated datasets, and queries across sources) only " + (
                   "with a constant key, index or path (payload ->> 'name', payload -> 0, payload #>> '{a,b}')"
                   if m[1] in ("->", "->>", "#>", "#>>") else "with constant JSON whose arrays list only scalars "
                   "(payload @> '{\"status\": \"active\"}', tags @> '[\"x\"]')") + "; it runs as written "
               "where the whole query runs " + ("in DuckDB (datasets accelerated with engine: duckdb) or "
                                                if m[1] in ("->", "->>", "#>", "#>>") else "") +
               "in PostgreSQL (live tables of one server)"),
    (r"Invalid function '([^']+)'\.?(?:\s*Did you mean '([^']+)'\?)?",
     lambda m: f"function {m[1]}() does not exist in the federated engine (DataFusion: Arrow-accelerated datasets, "
               f"and queries across sources)" + (f"; did you mean {m[2]}()?" if m[2] else "") +
               "; DuckDB-accelerated datasets (engine: duckdb) and live PostgreSQL tables have more of PostgreSQL's "
               "functions"))]


def _clean(e: Exception) -> str:
    text = error_text(e).strip()
    for pattern, advice in _ADVICE:
        if (found := pattern.search(text)) is not None:
            return advice if isinstance(advice, str) else advice(found)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    # "Optimizer rule 'simplify_expressions' failed / caused by / <what was wrong>": say both
    return f"{lines[0]}: {lines[-1]}" if "caused by" in lines[1:-1] else lines[0]
