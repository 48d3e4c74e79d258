"""Result encodings for HTTP: JSON rows rendered by DuckDB in C, one chunk per Arrow batch."""

from __future__ import annotations

import contextlib
import queue
from typing import Iterator

import duckdb
import pyarrow as pa

from connectors.sql_render import quote_ident

ARROW_STREAM = "application/vnd.apache.arrow.stream"

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


def json_chunks(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    """A JSON array of row objects, streamed: `[`, rows joined by `,` per batch, `]`."""
    names = _unique_names(schema)
    alias = '"' + _row_alias(names) + '"'
    row_sql = f"to_json({alias})"
    if any(pa.types.is_floating(f.type) for f in schema):
        # NaN and infinities are not JSON numbers: render them as PostgreSQL's to_json does
        # ("NaN", "Infinity", "-Infinity" strings), so strict JSON parsers can read every row
        parts = []
        for name, field in zip(names, schema):
            col = f"{alias}.{quote_ident(name)}"
            value = col
            if pa.types.is_floating(field.type):
                value = (f"CASE WHEN isnan({col}) THEN '\"NaN\"'::JSON WHEN {col} = 'inf'::DOUBLE THEN "
                         f"'\"Infinity\"'::JSON WHEN {col} = '-inf'::DOUBLE THEN '\"-Infinity\"'::JSON "
                         f"ELSE to_json({col}) END")
            parts.append(f"{_string_literal(name)}, {value}")
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
