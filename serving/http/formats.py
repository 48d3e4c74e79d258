"""Result encodings for HTTP: JSON rows rendered by DuckDB in C, one chunk per Arrow batch."""

from __future__ import annotations

import contextlib
import io
import os
import queue
from typing import Iterator

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from connectors.sql_render import quote_ident

ARROW_STREAM = "application/vnd.apache.arrow.stream"

# Batches from a Flight stream may sit at any offset; DuckDB reads registered Arrow data through
# Acero, which otherwise prints a warning per batch (to the CLI's terminal, too).
os.environ.setdefault("ACERO_ALIGNMENT_HANDLING", "reallocate")

_IDLE: queue.SimpleQueue = queue.SimpleQueue()  # formatter connections no response holds


@contextlib.contextmanager
def _formatter() -> Iterator[duckdb.DuckDBPyConnection]:
    """A private in-memory DuckDB used only to render JSON (never sees user SQL), held by one
    response from its first to its last chunk. Not one per thread: Starlette runs the steps of
    a streaming response on any pool thread, and two responses sharing a connection deadlock
    (one waits for DuckDB's context lock, the other holds it waiting for the GIL)."""
    try:
        con = _IDLE.get_nowait()
    except queue.Empty:
        con = duckdb.connect(":memory:")
        con.execute("SET enable_external_access = false")
        con.execute("SET TimeZone = 'UTC'")
    try:
        yield con
    except BaseException:
        con.close()  # a response cut short: its connection may be mid-statement
        raise
    _IDLE.put(con)


def _unique_names(schema: pa.Schema) -> list[str]:
    """Column names made unique (DuckDB compares names case-insensitively): a, a_1, A_2 ..."""
    seen: set[str] = set()
    out = []
    for name in schema.names:
        candidate, n = name, 0
        while candidate.lower() in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def _row_alias(names: list[str]) -> str:
    """A table alias no column is called: `to_json(alias)` must mean the row, never a column."""
    lowered = {n.lower() for n in names}
    alias = "__satchel_row"
    while alias in lowered:
        alias += "_"
    return alias


def _string_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _timestamp_text(col: str, t: pa.TimestampType) -> str:
    """ISO 8601 (RFC 3339) text of a timestamp column: `2024-01-06T10:52:00Z`, with microseconds
    only when there are some; naive timestamps without the zone."""
    fraction = f"CASE WHEN epoch_us({col}) % 1000000 = 0 THEN '' ELSE strftime({col}, '.%f') END"
    return f"strftime({col}, '%Y-%m-%dT%H:%M:%S') || {fraction}" + (" || 'Z'" if t.tz else "")


def _json_value(col: str, t: pa.DataType) -> str | None:
    """DuckDB SQL for a column's JSON value where to_json's own is not what Satchel publishes."""
    if pa.types.is_floating(t):
        # NaN and infinities are not JSON numbers: render them as PostgreSQL's to_json does
        # ("NaN", "Infinity", "-Infinity" strings), so strict JSON parsers can read every row
        return (f"CASE WHEN isnan({col}) THEN '\"NaN\"'::JSON WHEN {col} = 'inf'::DOUBLE THEN "
                f"'\"Infinity\"'::JSON WHEN {col} = '-inf'::DOUBLE THEN '\"-Infinity\"'::JSON "
                f"ELSE to_json({col}) END")
    if pa.types.is_timestamp(t):
        return f"to_json({_timestamp_text(col, t)})"
    return None


def json_chunks(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    """A JSON array of row objects, streamed: `[`, rows joined by `,` per batch, `]`."""
    names = _unique_names(schema)
    alias = '"' + _row_alias(names) + '"'
    row_sql = f"to_json({alias})"
    columns = [f"{alias}.{quote_ident(name)}" for name in names]
    special = [_json_value(col, f.type) for col, f in zip(columns, schema)]
    if any(special):
        parts = [f"{_string_literal(name)}, {value or f'to_json({col})'}"
                 for name, col, value in zip(names, columns, special)]
        row_sql = f"json_object({', '.join(parts)})"
    yield b"["
    first = True
    with _formatter() as con:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if names != schema.names:
                batch = batch.rename_columns(names)
            con.register("__batch", batch)
            try:
                text = con.execute(f"SELECT string_agg({row_sql}, ',') FROM __batch AS {alias}").fetchone()[0]
            finally:
                con.unregister("__batch")
            yield (b"" if first else b",") + text.encode()
            first = False
    yield b"]"


def _csv_value(col: str, t: pa.DataType) -> str | None:
    """DuckDB SQL for a column's CSV text where Arrow's writer has none or another form:
    nested values as JSON text, timestamps in ISO 8601 as in JSON."""
    if pa.types.is_nested(t):
        return f"CAST(to_json({col}) AS VARCHAR)"
    if pa.types.is_timestamp(t):
        return _timestamp_text(col, t)
    return None


def csv_chunks(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    """CSV with a header row, streamed one chunk per batch."""
    names = _unique_names(schema)
    special = {i: _csv_value(quote_ident(name), f.type) for i, (name, f) in enumerate(zip(names, schema))}
    special = {i: value for i, value in special.items() if value}
    select = ", ".join(special.values())
    out_schema = pa.schema([pa.field(f.name, pa.string()) if i in special else f for i, f in enumerate(schema)])
    sink = io.BytesIO()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(pacsv.CSVWriter(sink, out_schema))
        con = stack.enter_context(_formatter()) if special else None
        for batch in batches:
            if con is not None:
                if not batch.num_rows:
                    continue
                con.register("__batch", batch.rename_columns(names))
                try:
                    texts = con.execute(f"SELECT {select} FROM __batch").fetch_arrow_table().combine_chunks()
                finally:
                    con.unregister("__batch")
                converted = dict(zip(special, texts.columns))
                batch = pa.RecordBatch.from_arrays(
                    [converted[i].chunk(0) if i in converted else col for i, col in enumerate(batch.columns)],
                    schema=out_schema)
            writer.write_batch(batch)
            yield drain(sink)
    yield drain(sink)


def drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data
