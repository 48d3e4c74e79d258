"""Filter -> pyarrow.compute expression, exactly matching SQL semantics or not at all.

A filter compiles only when pyarrow evaluates it with the same result as SQL (DuckDB /
DataFusion) for every row; otherwise it is UNSUPPORTED and the engine applies it. The traps
handled here:

- value types: a Python value is converted to the column's type only when the conversion is
  exact (an int against a float column must be exactly representable, a Decimal must fit the
  column's scale, an aware datetime never meets a naive timestamp column, a bool is never an
  int...). Anything doubtful is UNSUPPORTED.
- NaN: SQL engines order NaN above every number and make NaN = NaN true; IEEE (pyarrow)
  makes every comparison with NaN false. `>`/`>=` on float columns therefore also keep NaN
  rows, and NaN literals are left to the engine.
- -0.0 equals 0.0 in SQL, but pyarrow's is_in hashes bits: both zeros go into the set.
- NULL: `!=`, `not_in` and `not_like` drop NULL rows as SQL does (is_in returns false, not
  null, for a NULL input, so `not_in` adds an explicit validity test).
- LIKE: the contract has no escape character, while pyarrow's match_like treats `\\` as one,
  so backslashes are escaped.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from .base import LEAF_OPS, Filter, FilterSupport, filter_columns

_COMPARE = {
    "=": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?)?")
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError, TypeError, ValueError)


def orderable(typ: pa.DataType) -> bool:
    """Whether pyarrow orders values of `typ` as the SQL engines do (integers, text, decimals,
    dates, timestamps): what zone maps prune on and what a sidecar top-N sorts by. Not floats:
    DataFusion ranks -0.0 before 0.0, pyarrow ties them."""
    return (pa.types.is_integer(typ) or pa.types.is_string(typ) or pa.types.is_large_string(typ)
            or pa.types.is_decimal(typ) or pa.types.is_date(typ) or pa.types.is_timestamp(typ))


def order_key(scalar: pa.Scalar) -> Any:
    """`scalar` (of an `orderable` type) as a Python value that orders as SQL orders it, None for
    NULL. Dates and timestamps as their integers: a nanosecond has no datetime, and aware and
    naive datetimes do not compare."""
    if pa.types.is_date(scalar.type) or pa.types.is_timestamp(scalar.type):
        return scalar.cast(pa.int32() if scalar.type.bit_width == 32 else pa.int64()).as_py()
    return scalar.as_py()


def compile_filters(filters: Sequence[Filter], schema: pa.Schema, opaque: frozenset[str] = frozenset()
                    ) -> tuple[pc.Expression | None, list[FilterSupport]]:
    """AND of the filters pyarrow applies exactly, and each filter's support.

    `opaque` names columns whose served values differ from what the scan filters on (e.g.
    columns converted to text), so no filter on them is pushed.
    """
    combined: pc.Expression | None = None
    support: list[FilterSupport] = []
    for f in filters:
        expr = exact_expression(f, schema) if not (filter_columns(f) & opaque) else None
        support.append(FilterSupport.EXACT if expr is not None else FilterSupport.UNSUPPORTED)
        if expr is not None:
            combined = expr if combined is None else combined & expr
    return combined, support


def exact_expression(f: Filter, schema: pa.Schema) -> pc.Expression | None:
    """The pyarrow expression with SQL's meaning for `f` (AND/OR/NOT included), or None."""
    if f.op in ("and", "or", "not"):
        parts = [_three_valued(p, schema) for p in f.value]
        if any(p is None for p in parts):
            return None
        if f.op == "not":
            return ~parts[0]
        combined = parts[0]
        for p in parts[1:]:
            combined = (combined & p) if f.op == "and" else (combined | p)  # Kleene and/or
        return combined
    if f.column not in schema.names:
        return None
    return to_expression(f, schema.field(f.column).type)


def _three_valued(f: Filter, schema: pa.Schema) -> pc.Expression | None:
    """`f` as a condition that is NULL where SQL's is NULL (needed under NOT and OR).

    Leaf translations are exact as filters (TRUE exactly where SQL is TRUE) but may give FALSE
    where SQL gives NULL (`is_in` on a NULL input); wrapped in `if_else(x IS NOT NULL, leaf,
    NULL)`, a leaf on a NULL value is NULL again. Filter values are never NULL (such filters
    have no translation), so on a non-NULL value SQL's answer is TRUE or FALSE."""
    expr = exact_expression(f, schema)
    if expr is None or f.op in ("and", "or", "not", "is_null", "is_not_null"):
        return expr
    return pc.if_else(pc.field(f.column).is_valid(), expr, _NULL_BOOL)


_NULL_BOOL = pa.scalar(None, pa.bool_())


def to_expression(f: Filter, typ: pa.DataType) -> pc.Expression | None:
    """The exact pyarrow expression for `f` on a column of type `typ`, or None."""
    if f.op not in LEAF_OPS:
        return None  # composites: exact_expression; match: no local engine runs it
    field = pc.field(f.column)
    if f.op == "is_null":
        return field.is_null()
    if f.op == "is_not_null":
        return field.is_valid()
    if f.op in ("like", "not_like"):
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)) or not isinstance(f.value, str):
            return None
        matched = pc.match_like(field, f.value.replace("\\", "\\\\"))
        return matched if f.op == "like" else ~matched
    if f.op in ("in", "not_in"):
        return _membership(field, f.op, f.value, typ)
    return _comparison(field, f.op, f.value, typ)


def _comparison(field: pc.Expression, op: str, value: Any, typ: pa.DataType) -> pc.Expression | None:
    scalar = comparable_scalar(value, typ)
    if scalar is None:
        return None
    if pa.types.is_floating(scalar.type) and scalar.type != typ:
        # compare in float64 explicitly: pyarrow's implicit promotion may pick float32
        expr = _COMPARE[op](field.cast(pa.float64()), scalar)
    else:
        expr = _COMPARE[op](field, scalar)
    if pa.types.is_floating(typ) and op in (">", ">="):
        expr = expr | pc.is_nan(field)  # NaN sorts above every number in SQL
    return expr


def _membership(field: pc.Expression, op: str, values: Any, typ: pa.DataType) -> pc.Expression | None:
    if not isinstance(values, (tuple, list)) or not values:
        return None
    scalars = [comparable_scalar(v, typ) for v in values]
    if any(s is None for s in scalars):
        return None
    set_type = scalars[0].type
    if any(s.type != set_type for s in scalars):
        return None
    if set_type != typ:
        if not pa.types.is_floating(typ):
            return None
        field = field.cast(set_type)  # float32 column vs float64 values: compare in float64
    values = [s.as_py() for s in scalars]
    if pa.types.is_floating(set_type) and 0.0 in values:
        values += [0.0, -0.0]  # is_in hashes bits, so -0.0 would not match 0.0 as SQL requires
    value_set = pa.array(values, type=set_type)
    member = field.isin(value_set)
    return member if op == "in" else ~member & field.is_valid()


def comparable_scalar(value: Any, typ: pa.DataType) -> pa.Scalar | None:
    """`value` as a scalar pyarrow compares exactly against a column of `typ`, or None."""
    if value is None:
        return None
    try:
        return _convert(value, typ)
    except _CAST_ERRORS:
        return None


def _cast(value: Any, typ: pa.DataType, source: pa.DataType | None = None) -> pa.Scalar:
    return pa.scalar(value, source).cast(typ, safe=True) if source is not None else pa.scalar(value).cast(typ, safe=True)


def _convert(value: Any, typ: pa.DataType) -> pa.Scalar | None:
    if pa.types.is_boolean(typ):
        return pa.scalar(value, pa.bool_()) if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None  # bool is an int subclass; never compare it with numbers
    if pa.types.is_integer(typ):
        return _to_integer(value, typ)
    if pa.types.is_floating(typ):
        return _to_float(value)
    if pa.types.is_decimal(typ):
        if isinstance(value, int) or (isinstance(value, decimal.Decimal) and value.is_finite()):
            return _cast(decimal.Decimal(value), typ)
        return None
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return pa.scalar(value, typ) if isinstance(value, str) else None
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_fixed_size_binary(typ):
        return pa.scalar(value, typ) if isinstance(value, (bytes, bytearray)) else None
    if pa.types.is_date(typ):
        return _to_date(value, typ)
    if pa.types.is_timestamp(typ):
        return _to_timestamp(value, typ)
    if pa.types.is_time(typ) and isinstance(value, dt.time) and value.tzinfo is None:
        return _cast(value, typ, pa.time64("us"))
    if pa.types.is_duration(typ) and isinstance(value, dt.timedelta):
        return _cast(value, typ, pa.duration("us"))
    return None


def _to_integer(value: Any, typ: pa.DataType) -> pa.Scalar | None:
    if isinstance(value, float) or isinstance(value, decimal.Decimal):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if value != int(value):
            # 2.5 against a narrow int column compares exactly in float64; int64 would not
            return pa.scalar(float(value), pa.float64()) if isinstance(value, float) and typ.bit_width <= 32 else None
        value = int(value)
    if not isinstance(value, int):
        return None
    return pa.scalar(value, pa.int64() if value < 2**63 else pa.uint64()).cast(typ, safe=True)


def _to_float(value: Any) -> pa.Scalar | None:
    if isinstance(value, float):
        return None if math.isnan(value) else pa.scalar(value, pa.float64())
    if isinstance(value, (int, decimal.Decimal)):
        as_float = float(value)
        if math.isfinite(as_float) and decimal.Decimal(as_float) == decimal.Decimal(value):
            return pa.scalar(as_float, pa.float64())
    return None


def _to_date(value: Any, typ: pa.DataType) -> pa.Scalar | None:
    if isinstance(value, str):
        if not _DATE_TEXT.fullmatch(value):
            return None  # Python reads more ('2026-W01-1', '20260101') than the engines do
        value = dt.date.fromisoformat(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return pa.scalar(value, typ)
    return None


def _to_timestamp(value: Any, typ: pa.DataType) -> pa.Scalar | None:
    text = isinstance(value, str)
    if text:
        if not _TIMESTAMP_TEXT.fullmatch(value):
            return None  # Python reads more ('2026-01-01 10:00', '2026-W01-1') than the engines do
        value = dt.datetime.fromisoformat(value)
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        return None
    aware = value.tzinfo is not None and value.utcoffset() is not None
    if aware != (typ.tz is not None):
        return None  # naive vs aware depends on a session time zone: leave it to the engine
    micro = pa.scalar(value, pa.timestamp("us", typ.tz))
    try:
        return micro.cast(typ, safe=True)  # same unit as the column when exact
    except _CAST_ERRORS:
        # finer than the column: a typed value compares in microseconds, but text is cast to
        # the column's unit first (DataFusion: '00:00:00.5' on a seconds column is 00:00:00)
        return None if text else micro
