"""Result encodings for HTTP: JSON rows rendered by DuckDB in C, one chunk per Arrow batch."""

from __future__ import annotations

import threading
from typing import Iterator

import duckdb
import pyarrow as pa

ARROW_STREAM = "application/vnd.apache.arrow.stream"

_local = threading.local()


def _formatter() -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB per thread, used only to render JSON (never sees user SQL)."""
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(":memory:")
        con.execute("SET enable_external_access = false")
        con.execute("SET TimeZone = 'UTC'")
        _local.con = con
    return con


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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
            col = f"{alias}.{_quote(name)}"
            value = col
            if pa.types.is_floating(field.type):
                value = (f"CASE WHEN isnan({col}) THEN '\"NaN\"'::JSON WHEN {col} = 'inf'::DOUBLE THEN "
                         f"'\"Infinity\"'::JSON WHEN {col} = '-inf'::DOUBLE THEN '\"-Infinity\"'::JSON "
                         f"ELSE to_json({col}) END")
            parts.append(f"{_string_literal(name)}, {value}")
        row_sql = f"json_object({', '.join(parts)})"
    con = _formatter()
    yield b"["
    first = True
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
