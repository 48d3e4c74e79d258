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
    seen: dict[str, int] = {}
    out = []
    for name in schema.names:
        n = seen.get(name, 0)
        seen[name] = n + 1
        out.append(name if n == 0 else f"{name}_{n}")
    return out


def json_chunks(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    """A JSON array of row objects, streamed: `[`, rows joined by `,` per batch, `]`."""
    names = _unique_names(schema)
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
            text = con.execute("SELECT string_agg(to_json(b), ',') FROM __batch AS b").fetchone()[0]
        finally:
            con.unregister("__batch")
        yield (b"" if first else b",") + text.encode()
        first = False
    yield b"]"
