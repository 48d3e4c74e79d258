"""Filters as SQL text for the remote SQL sources reached through ADBC (Flight SQL peers, SQLite,
PostgreSQL, ...), rendered only where the remote answer is the engine's answer.

Each remote dialect states what it evaluates exactly like the engine (DuckDB/PostgreSQL
semantics, three-valued logic). A filter renders only when its value converts exactly to the
column's type (connectors.arrow_filters._convert) and the dialect compares that type our way:

- `satchel` (another Satchel): its public dialect *is* ours; everything but NaN/infinite
  literals renders.
- `datafusion` (roapi, other DataFusion servers): floats compare in IEEE total order there
  (-0.0 < 0.0, so `f = 0` misses -0.0 rows): no float filters. Strings, integers, decimals,
  dates, timestamps, binary and LIKE agree.
- `sqlite`: strings compare as bytes (BINARY collation = code point order), LIKE is made
  case-sensitive per connection (PRAGMA case_sensitive_like) and has no escape character,
  exactly the Filter contract; dates/timestamps/decimals are text or REAL there: not pushed.
- `postgres` (the ADBC PostgreSQL driver): strings `COLLATE "C"`, LIKE `ESCAPE ''`, float8 only.
- `spark` (Sail and other Spark SQL servers): identifiers in backticks, string literals with
  a quote and a backslash escaped by a backslash, LIKE escaping with a backslash, naive
  timestamps as TIMESTAMP_NTZ literals; floats stay local (NaN = NaN is false in Sail,
  -0.0 = 0.0 is true).
- `generic` (an unknown server): only integer/boolean comparisons, string (in)equality and
  NULL tests, which every SQL engine evaluates alike.

Composite filters (`and` / `or` / `not`) render when every leaf renders: SQL's three-valued
logic is the same in all of these dialects.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import pyarrow as pa

from ..arrow_filters import _convert
from ..base import Filter
from ..sql_render import quote_ident


@dataclass(frozen=True)
class FilterDialect:
    name: str
    ordered_strings: bool  # <, <=, >, >= on strings in code point order
    floats: bool  # float64 comparisons with SQL NaN/-0.0 semantics
    float32: bool
    decimals: bool
    temporal: bool  # date and timestamp columns
    binary: bool
    like: bool
    string_collate: str = ""  # appended to string columns, e.g. ` COLLATE "C"`
    like_escape: str = ""  # appended to LIKE, e.g. ` ESCAPE ''`
    like_backslash: str = "double"  # "double": the dialect escapes with `\`; "plain": no escape char
    ident_quote: str = '"'  # identifiers: "name" (standard) or `name` (Spark)
    backslash_strings: bool = False  # string literals take backslash escapes (Spark): `\'` and `\\`

    def ident(self, name: str) -> str:
        """`name` as a quoted identifier of this dialect."""
        q = self.ident_quote
        return q + name.replace(q, q + q) + q


DIALECTS: dict[str, FilterDialect] = {
    "satchel": FilterDialect("satchel", True, True, True, True, True, True, True),
    "datafusion": FilterDialect("datafusion", True, False, False, True, True, True, True),
    "sqlite": FilterDialect("sqlite", True, True, False, False, False, True, True, like_backslash="plain"),
    "postgres": FilterDialect("postgres", True, True, False, True, True, True, True, string_collate=' COLLATE "C"',
                              like_escape=" ESCAPE ''", like_backslash="plain"),
    "spark": FilterDialect("spark", True, False, False, True, True, True, True, ident_quote="`",
                           backslash_strings=True),
    "generic": FilterDialect("generic", False, False, False, False, False, False, False),
}

_COMPARE = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_ORDERING = {"<", "<=", ">", ">="}



def quote_string(text: str, d: FilterDialect | None = None) -> str | None:
    """`text` as a string literal (of dialect `d`: Spark's takes backslash escapes), None with NUL."""
    if "\x00" in text:
        return None
    if d is not None and d.backslash_strings:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + text.replace("'", "''") + "'"


def render_filter(f: Filter, types: Mapping[str, pa.DataType], d: FilterDialect,
                  column_sql: Callable[[str], str] | None = None) -> str | None:
    """`f` as a condition in dialect `d` with the engine's meaning, or None."""
    if column_sql is None:
        column_sql = d.ident
    if f.op in ("and", "or"):
        parts = [render_filter(x, types, d, column_sql) for x in (f.value or ())]
        if not parts or any(p is None for p in parts):
            return None
        return "(" + f" {f.op.upper()} ".join(parts) + ")"
    if f.op == "not":
        inner = f.value[0] if isinstance(f.value, (tuple, list)) and len(f.value) == 1 else f.value
        text = render_filter(inner, types, d, column_sql) if isinstance(inner, Filter) else None
        return None if text is None else f"(NOT {text})"
    typ = types.get(f.column)
    if f.op == "match":  # full text: only another Satchel knows match(), and runs it in its source
        if d.name != "satchel" or typ is None or not isinstance(f.value, str) or (lit := quote_string(f.value)) is None:
            return None
        return f"match({column_sql(f.column)}, {lit})"
    if typ is None or not _filterable(typ, d):
        return None
    col = column_sql(f.column)
    if f.op == "is_null":
        return f"{col} IS NULL"
    if f.op == "is_not_null":
        return f"{col} IS NOT NULL"
    is_text = pa.types.is_string(typ) or pa.types.is_large_string(typ)
    if is_text and d.string_collate:
        col += d.string_collate
    if f.op in ("like", "not_like"):
        if not (is_text and d.like and isinstance(f.value, str)):
            return None
        pattern = f.value.replace("\\", "\\\\") if d.like_backslash == "double" else f.value
        lit = quote_string(pattern, d)
        if lit is None:
            return None
        return f"{col} {'NOT ' if f.op == 'not_like' else ''}LIKE {lit}{d.like_escape}"
    if f.op in _COMPARE:
        if f.op in _ORDERING and is_text and not d.ordered_strings:
            return None
        if f.op in _ORDERING and not d.ordered_strings and not (pa.types.is_integer(typ) or pa.types.is_boolean(typ)):
            return None
        lit = _value_literal(f.value, typ, d)
        return None if lit is None else f"{col} {_COMPARE[f.op]} {lit}"
    if f.op in ("in", "not_in"):
        values = f.value if isinstance(f.value, (tuple, list)) else ()
        if not values or any(v is None for v in values):
            return None
        lits = [_value_literal(v, typ, d) for v in values]
        if any(x is None for x in lits):
            return None
        return f"{col} {'NOT IN' if f.op == 'not_in' else 'IN'} ({', '.join(lits)})"
    return None  # anything newer: left to the engine


def _filterable(typ: pa.DataType, d: FilterDialect) -> bool:
    t = pa.types
    if t.is_integer(typ) or t.is_boolean(typ) or t.is_string(typ) or t.is_large_string(typ):
        return True
    if t.is_float64(typ):
        return d.floats
    if t.is_float32(typ):
        return d.float32
    if t.is_decimal(typ):
        return d.decimals
    if t.is_date32(typ) or t.is_timestamp(typ):
        return d.temporal
    if t.is_binary(typ) or t.is_large_binary(typ):
        return d.binary
    return False


def _value_literal(value: Any, typ: pa.DataType, d: FilterDialect) -> str | None:
    if value is None or isinstance(value, float) and math.isnan(value):
        return None
    try:
        scalar = _convert(value, typ)
    except Exception:  # noqa: BLE001 - a value that does not convert exactly is left to the engine
        return None
    if scalar is None or not scalar.is_valid:
        return None
    return literal(scalar, d)


def literal(s: pa.Scalar, d: FilterDialect) -> str | None:
    """A typed SQL literal for `s` in dialect `d`, or None when it has none there."""
    t, v = s.type, s.as_py()
    if pa.types.is_boolean(t):
        if d.name == "sqlite":
            return "1" if v else "0"
        return "TRUE" if v else "FALSE"
    if pa.types.is_integer(t):
        return str(int(v)) if -(2**63) <= v < 2**63 else None
    if pa.types.is_floating(t):
        if not math.isfinite(v):
            return None
        text = repr(float(v))
        if d.name == "postgres":
            return f"'{text}'::float8"
        if d.name == "sqlite":
            return text if ("." in text or "e" in text or "inf" in text) else text + ".0"
        return f"CAST('{text}' AS DOUBLE)"
    if pa.types.is_decimal(t):
        if d.name == "postgres":
            return f"'{decimal.Decimal(v)}'::numeric"
        return f"CAST('{decimal.Decimal(v)}' AS DECIMAL({t.precision}, {t.scale}))"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return quote_string(v, d)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        if d.name == "postgres":
            return f"'\\x{bytes(v).hex()}'::bytea"
        return f"X'{bytes(v).hex()}'"
    if pa.types.is_date(t):
        return f"DATE '{v.isoformat()}'"
    if pa.types.is_timestamp(t):
        if not isinstance(v, dt.datetime):
            return None
        if t.tz is None:
            return f"{'TIMESTAMP_NTZ' if d.name == 'spark' else 'TIMESTAMP'} '{v.isoformat(sep=' ')}'"
        text = v.astimezone(dt.timezone.utc).isoformat(sep=" ")
        if d.name == "postgres":
            return f"'{text}'::timestamptz"
        if d.name == "spark":  # TIMESTAMP is Spark's instant type; the string carries its offset
            return f"CAST('{text}' AS TIMESTAMP)"
        return f"CAST('{text}' AS TIMESTAMPTZ)"
    return None
