"""Result encodings for HTTP: JSON rows rendered by DuckDB in C, one chunk per Arrow batch; a
small result of plain types rendered whole in Python, byte for byte as DuckDB renders it."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import io
import json
import math
import os
import queue
from typing import Any, Callable, Iterator

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
    only when there are some; naive timestamps without the zone. Seconds and milliseconds are
    made microseconds first: DuckDB formats those through nanoseconds, which fail past 1677-2262
    (a `9999-12-31` "valid until" failed the whole response)."""
    col = f"CAST({col} AS {'TIMESTAMPTZ' if t.tz else 'TIMESTAMP'})"
    fraction = f"CASE WHEN epoch_us({col}) % 1000000 = 0 THEN '' ELSE strftime({col}, '.%f') END"
    return f"strftime({col}, '%Y-%m-%dT%H:%M:%S') || {fraction}" + (" || 'Z'" if t.tz else "")


def _json_value(col: str, t: pa.DataType) -> str | None:
    """DuckDB SQL for a column's JSON value where to_json's own is not what Satchel publishes."""
    value = _published(col, t)
    return None if value is None else f"to_json({value})"


def _published(expr: str, t: pa.DataType, depth: int = 0) -> str | None:
    """DuckDB SQL for `expr` with its values, inside lists, structs and maps too, in the forms
    Satchel publishes where to_json's differ; None when no value of type `t` needs it.

    NaN and infinities become the strings PostgreSQL's to_json writes ("NaN", "Infinity",
    "-Infinity"): to_json writes them bare, which strict JSON parsers refuse. Timestamps become
    ISO 8601 text: to_json writes `2024-01-06 10:52:00+00` for one inside a nested value."""
    if pa.types.is_floating(t):
        return (f"CASE WHEN isnan({expr}) THEN '\"NaN\"'::JSON WHEN {expr} = 'inf'::DOUBLE THEN "
                f"'\"Infinity\"'::JSON WHEN {expr} = '-inf'::DOUBLE THEN '\"-Infinity\"'::JSON "
                f"ELSE to_json({expr}) END")
    if pa.types.is_timestamp(t):
        return _timestamp_text(expr, t)
    if not _holds(t, lambda inner: pa.types.is_floating(inner) or pa.types.is_timestamp(inner)):
        return None
    if pa.types.is_dictionary(t):
        return _published(expr, t.value_type, depth)
    x = f"x{depth}"
    if pa.types.is_map(t):
        key = _published(f"{x}.key", t.key_type, depth + 1) or f"{x}.key"
        value = _published(f"{x}.value", t.item_type, depth + 1) or f"{x}.value"
        return (f"map_from_entries(list_transform(map_entries({expr}), "
                f"lambda {x}: struct_pack(key := {key}, value := {value})))")
    if pa.types.is_struct(t):
        if any(not field.name for field in t):
            return None  # DuckDB cannot name an empty field to rebuild it: to_json's forms, as before
        fields = []
        for field in t:
            member = f"({expr}).{quote_ident(field.name)}"
            fields.append(f"{quote_ident(field.name)} := {_published(member, field.type, depth + 1) or member}")
        return f"CASE WHEN {expr} IS NULL THEN NULL ELSE struct_pack({', '.join(fields)}) END"
    if pa.types.is_union(t):
        return None  # rare enough to keep to_json's forms
    return f"list_transform({expr}, lambda {x}: {_published(x, t.value_type, depth + 1) or x})"  # lists


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
            con.register("__batch", _readable(batch))
            try:
                text = con.execute(f"SELECT string_agg({row_sql}, ',') FROM __batch AS {alias}").fetchone()[0]
            finally:
                con.unregister("__batch")
            yield (b"" if first else b",") + text.encode()
            first = False
    yield b"]"


def _holds(t: pa.DataType, kind: Callable[[pa.DataType], bool]) -> bool:
    """Whether a value of type `t` can hold a value of a type `kind` accepts anywhere inside it."""
    if kind(t):
        return True
    if pa.types.is_map(t):
        return _holds(t.key_type, kind) or _holds(t.item_type, kind)
    if pa.types.is_struct(t) or pa.types.is_union(t):
        return any(_holds(t.field(i).type, kind) for i in range(t.num_fields))
    value_type = getattr(t, "value_type", None)  # lists of every kind, dictionaries
    return value_type is not None and _holds(value_type, kind)


def _readable(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` with 256-bit decimals (DataFusion's past 38 digits), which DuckDB cannot read, as
    128-bit ones when their values fit (38 digits, exact), else as doubles."""
    if not any(pa.types.is_decimal256(t) for t in batch.schema.types):
        return batch
    columns = []
    for column in batch.columns:
        if pa.types.is_decimal256(column.type):
            try:
                column = column.cast(pa.decimal128(38, column.type.scale))
            except (pa.ArrowInvalid, ValueError):
                column = column.cast(pa.float64())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


SMALL_JSON_CELLS = 2048  # past about this many values DuckDB's renderer is the faster (and has no per-value Python)
# DuckDB's string escapes: quote, backslash, the short forms, other controls as \u00XX (upper case)
_ESCAPES = {i: f"\\u{i:04X}" for i in range(0x20)} | {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f",
                                                      0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def json_body(schema: pa.Schema, batches: list[pa.RecordBatch]) -> bytes:
    """The whole JSON array of a result's rows: in Python when small and plain (`small_json`),
    else by DuckDB."""
    body = small_json(schema, batches)
    return body if body is not None else b"".join(json_chunks(schema, iter(batches)))


def small_json(schema: pa.Schema, batches: list[pa.RecordBatch]) -> bytes | None:
    """The whole JSON body of a small result (at most SMALL_JSON_CELLS values) whose column
    types `_writer` knows, byte for byte as `json_chunks` renders it; None otherwise.

    DuckDB's renderer costs about 1.6 ms per call however small the result (registering Arrow
    data and planning): most of an agent's small query over HTTP. This costs microseconds."""
    rows = sum(batch.num_rows for batch in batches)
    writers = [_writer(f.type) for f in schema]
    if not writers or rows * len(writers) > SMALL_JSON_CELLS or None in writers:
        return None
    keys = [_json_string(name) + ":" for name in _unique_names(schema)]
    try:
        columns = [["null" if value is None else write(value)
                    for value in pa.chunked_array([b.column(i) for b in batches], f.type).to_pylist()]
                   for i, (f, write) in enumerate(zip(schema, writers))]
    except (ValueError, OverflowError):  # a date or time past Python's years 1-9999: DuckDB writes it
        return None
    return ("[" + ",".join("{" + ",".join(map(str.__add__, keys, values)) + "}" for values in zip(*columns))
            + "]").encode()


def _writer(t: pa.DataType) -> Callable[[Any], str] | None:
    """How `small_json` writes a non-null value of type `t` as DuckDB's `to_json` does (with
    json_chunks' forms for NaN, infinities and timestamps), or None where only DuckDB can."""
    if pa.types.is_integer(t) or pa.types.is_null(t):
        return str
    if pa.types.is_boolean(t):
        return _json_bool
    if pa.types.is_float32(t) or pa.types.is_float64(t):  # DuckDB writes a float as the double it is
        return _json_double
    if pa.types.is_decimal128(t) and t.precision <= 15:
        # DuckDB writes the double of unscaled / 10^scale, both exact below 2^53: the correctly
        # rounded quotient, which float() gives too
        return _json_decimal
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _json_string
    if pa.types.is_date32(t):
        return _json_date
    if pa.types.is_timestamp(t) and t.unit != "ns" and t.tz in (None, "UTC"):
        return _json_utc_timestamp if t.tz else _json_timestamp
    return None


def _json_bool(value: bool) -> str:
    return "true" if value else "false"


def _json_decimal(value: decimal.Decimal) -> str:
    return _json_double(float(value))


def _json_date(value: dt.date) -> str:
    return f'"{value.year:04d}-{value.month:02d}-{value.day:02d}"'


def _json_timestamp(value: dt.datetime, zone: str = "") -> str:
    """ISO 8601 as `_timestamp_text` writes it: microseconds only when there are some."""
    fraction = f".{value.microsecond:06d}" if value.microsecond else ""
    return (f'"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:'
            f'{value.second:02d}{fraction}{zone}"')


def _json_utc_timestamp(value: dt.datetime) -> str:
    return _json_timestamp(value, "Z")


def _json_string(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def _json_double(value: float) -> str:
    """A double in DuckDB's (yyjson's) form: the shortest digits that read back exactly, in
    decimal notation when the point falls within 21 digits before or 6 after the first digit
    (`100.0`, `0.00001`), else `1.5e21` / `1e-7`; NaN and infinities as strings."""
    if math.isnan(value):
        return '"NaN"'
    if math.isinf(value):
        return '"Infinity"' if value > 0 else '"-Infinity"'
    sign, text = ("-", repr(-value)) if math.copysign(1.0, value) < 0 else ("", repr(value))
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    significant = (whole + fraction).lstrip("0")
    digits = significant.rstrip("0")
    if not digits:
        return sign + "0.0"
    point = len(whole) + int(exponent or 0) - (len(whole) + len(fraction) - len(significant))  # 0.<digits> x 10^point
    if 0 < point <= 21:
        return sign + (digits + "0" * (point - len(digits)) + ".0" if len(digits) <= point
                       else digits[:point] + "." + digits[point:])
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    return sign + digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + f"e{point - 1}"


def json_ready(value: Any) -> Any:
    """A Python value (as Arrow's `to_pylist` gives it) in the form the JSON results above give
    it, ready for `json.dumps` with `allow_nan=False`: NaN and infinities as strings, decimals as
    numbers, bytes as DuckDB's text of a blob, dates, times and timestamps as ISO text (aware ones
    in UTC with `Z`), UUIDs as text; dicts and lists value by value. For results built in
    Python (search), which would otherwise fail on a NaN or on bytes that are not UTF-8."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else json.loads(_json_double(value))
    if isinstance(value, decimal.Decimal):
        return json_ready(float(value))
    if isinstance(value, dict):  # a struct, or a map (`to_pylist(maps_as_pydicts=...)`)
        return {_json_key(json_ready(key)): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("latin-1").translate(_BLOB_ESCAPES)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return json.loads(_json_timestamp(value))
        return json.loads(_json_utc_timestamp(value.astimezone(dt.timezone.utc)))
    if isinstance(value, dt.date):
        return json.loads(_json_date(value))
    if isinstance(value, dt.time):
        fraction = f".{value.microsecond:06d}".rstrip("0") if value.microsecond else ""  # DuckDB's TIME text
        return f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}{fraction}"
    return str(value)


def _json_key(key: Any) -> str:
    """A map's key as the JSON object key DuckDB writes for it: text as it is, else its JSON."""
    return key if isinstance(key, str) else json.dumps(key)


# DuckDB's text of a blob: printable ASCII as it is, but for quotes and backslash; \xHH otherwise
_BLOB_ESCAPES = {i: f"\\x{i:02X}" for i in (*range(0x20), 0x22, 0x27, 0x5C, *range(0x7F, 0x100))}


def _csv_value(col: str, t: pa.DataType) -> str | None:
    """DuckDB SQL for a column's CSV text where Arrow's writer has none or another form:
    nested values as JSON text, timestamps in ISO 8601 as in JSON, bytes as DuckDB's text of a
    blob (`\\xFF`, as in JSON; Arrow's writer refuses bytes that are not UTF-8), and the types
    Arrow's writer lacks (string and binary views, UUIDs, intervals: `3 days 05:00:00`) as
    DuckDB's text of them."""
    if pa.types.is_dictionary(t):
        t = t.value_type  # DuckDB reads a dictionary as its values
    if pa.types.is_timestamp(t):
        return _timestamp_text(col, t)
    if pa.types.is_nested(t):
        return f"CAST(to_json({_published(col, t) or col}) AS VARCHAR)"
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or pa.types.is_binary_view(t) or pa.types.is_string_view(t) or isinstance(t, pa.BaseExtensionType)
            or pa.types.is_interval(t) or pa.types.is_duration(t)):
        return f"CAST({col} AS VARCHAR)"
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
                    texts = con.execute(f"SELECT {select} FROM __batch").to_arrow_table().combine_chunks()
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
