"""Filters -> MongoDB query documents with SQL's meaning, or nothing.

Each pushable filter compiles to two conditions: T (the SQL predicate is TRUE) and F (it is
FALSE); NOT swaps them, AND/OR combine them (SQL three-valued logic: a NULL predicate is
neither, so rows where it is NULL pass neither T nor F). The traps:

- Missing vs null: `{c: null}` matches both (both are SQL NULL); `$ne`/`$nin`/`$not` match
  them too, so negations carry an explicit "c holds a value of the column's type".
- Type bracketing: every positive condition also carries `$type` with the BSON types the
  column serves (MongoDB compares only within a type class; some wire-compatible servers do
  not, and a guard makes the intent explicit either way).
- NaN: SQL orders NaN above every number and NaN = NaN; MongoDB orders it below and never
  matches it with `$lt`/`$gt`. So `<`/`<=` exclude NaN, `>`/`>=` add it, `=`/`!=` NaN use
  MongoDB's NaN equality, ordering against a NaN literal is left to the engine.
- Strings compare by UTF-8 bytes in MongoDB (the default, binary collation) = code point
  order, the engine's order. Binary values compare by length first: only = / != / IN.
- BSON dates hold milliseconds: datetime literals with sub-millisecond parts are left to the
  engine. A `date` column holds midnight-UTC datetimes.
- LIKE: a pattern without wildcards is equality, 'prefix%' an anchored, escaped regex, '%'
  is "not NULL"; other patterns are left to the engine.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from typing import Any

import pyarrow as pa
from bson import Decimal128, ObjectId

from ..base import Filter

UTC = dt.timezone.utc
_RANGE = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_INT64 = (-(2**63), 2**63 - 1)


def type_class(typ: pa.DataType) -> str | None:
    """The family of values a column serves, for filters and sorts (None: not pushable)."""
    if pa.types.is_integer(typ):
        return "int"
    if pa.types.is_floating(typ):
        return "float"
    if pa.types.is_decimal(typ):
        return "decimal"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "string"
    if pa.types.is_boolean(typ):
        return "bool"
    if pa.types.is_timestamp(typ):
        return "timestamp_tz" if typ.tz is not None else "timestamp"
    if pa.types.is_date(typ):
        return "date"
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return "binary"
    return None


# BSON types a column of each class serves faithfully.
BSON_TYPES = {
    "int": ["int", "long"],
    "float": ["double", "int", "long"],
    "decimal": ["decimal", "int", "long"],
    "string": ["string"],
    "bool": ["bool"],
    "timestamp": ["date"],
    "timestamp_tz": ["date"],
    "date": ["date"],
    "binary": ["binData"],
    "objectid": ["objectId"],  # served as its 24-digit hex text
}
# Classes whose order MongoDB and SQL agree on (floats: NaN; binary: length first).
# (ObjectIds order as their bytes, which is the order of their lowercase hex text.)
SORTABLE = {"int", "decimal", "string", "bool", "timestamp", "timestamp_tz", "date", "objectid"}
_HEX24 = re.compile(r"[0-9a-f]{24}")


class _NoPush(Exception):
    """The filter cannot be pushed with the engine's meaning."""


def literal(value: Any, cls: str) -> Any:
    """`value` as the BSON value to compare a column of `cls` with, or raise _NoPush."""
    if value is None:
        raise _NoPush
    if cls == "bool":
        if isinstance(value, bool):
            return value
        raise _NoPush
    if isinstance(value, bool):
        raise _NoPush  # never compare a bool with a number
    if cls == "int":
        if isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
            return value
        if isinstance(value, float) and math.isfinite(value):
            return value
        if isinstance(value, decimal.Decimal) and value.is_finite():
            return Decimal128(value)
        raise _NoPush
    if cls == "float":
        if isinstance(value, float):
            return value
        if isinstance(value, int) and abs(value) <= 2**53:
            return float(value)
        raise _NoPush
    if cls == "decimal":
        if isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
            return value
        if isinstance(value, decimal.Decimal) and value.is_finite():
            if len(value.as_tuple().digits) > 34:
                raise _NoPush
            return Decimal128(value)
        raise _NoPush
    if cls == "string":
        if isinstance(value, str) and "\x00" not in value:
            return value
        raise _NoPush
    if cls == "objectid":
        if isinstance(value, str) and _HEX24.fullmatch(value):
            return ObjectId(value)
        raise _NoPush  # text that is no ObjectId's hex form: left to the engine
    if cls == "binary":
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise _NoPush
    if cls == "date":
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
        raise _NoPush
    if cls in ("timestamp", "timestamp_tz"):
        if not isinstance(value, dt.datetime) or (value.tzinfo is None) != (cls == "timestamp"):
            raise _NoPush
        if value.microsecond % 1000:
            raise _NoPush  # BSON dates are milliseconds: the literal would be truncated
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    raise _NoPush


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


class Compiler:
    """Compiles filters over columns of known classes ({column: class})."""

    def __init__(self, classes: dict[str, str]):
        self.classes = classes

    def compile(self, f: Filter) -> dict | None:
        """The query document selecting rows where `f` is TRUE, or None."""
        try:
            return self.true(f)
        except _NoPush:
            return None

    def true(self, f: Filter) -> dict:
        if f.op == "and":
            return {"$and": [self.true(p) for p in f.value]}
        if f.op == "or":
            return {"$or": [self.true(p) for p in f.value]}
        if f.op == "not":
            return self.false(f.value[0])
        return self._leaf(f)

    def false(self, f: Filter) -> dict:
        if f.op == "and":
            return {"$or": [self.false(p) for p in f.value]}
        if f.op == "or":
            return {"$and": [self.false(p) for p in f.value]}
        if f.op == "not":
            return self.true(f.value[0])
        if f.op == "is_null":
            return self._leaf(Filter(f.column, "is_not_null"))
        if f.op == "is_not_null":
            return self._leaf(Filter(f.column, "is_null"))
        # a leaf comparison is FALSE where the column holds a value and the comparison fails
        return {"$and": [self._present(f.column), {"$nor": [self._leaf(f)]}]}

    def _class(self, column: str) -> str:
        cls = self.classes.get(column)
        if cls is None:
            raise _NoPush
        return cls

    def _present(self, column: str) -> dict:
        return {column: {"$type": BSON_TYPES[self._class(column)]}}

    def _leaf(self, f: Filter) -> dict:
        c = f.column
        cls = self._class(c)
        guard = BSON_TYPES[cls]
        op = f.op
        if op == "is_null":
            return {c: None}
        if op == "is_not_null":
            return {c: {"$type": guard}}
        if op in ("like", "not_like"):
            return self._like(c, cls, f.value, negate=op == "not_like")
        if op in ("=", "!="):
            if cls == "float" and _is_nan(f.value):
                value = math.nan
            else:
                value = literal(f.value, cls)
            if op == "=":
                return {c: {"$eq": value, "$type": guard}}
            return {c: {"$nin": [value, None], "$type": guard}}
        if op in _RANGE:
            if cls == "binary" or _is_nan(f.value):
                raise _NoPush
            value = literal(f.value, cls)
            cond = {c: {_RANGE[op]: value, "$type": guard}}
            if cls == "float":
                if op in ("<", "<="):
                    cond[c]["$ne"] = math.nan
                else:
                    return {"$or": [cond, {c: {"$eq": math.nan}}]}
            return cond
        if op in ("in", "not_in"):
            values = f.value
            if not isinstance(values, (tuple, list)) or not values or any(v is None or _is_nan(v) for v in values):
                raise _NoPush
            bson_values = [literal(v, cls) for v in values]
            if op == "in":
                return {c: {"$in": bson_values, "$type": guard}}
            return {c: {"$nin": bson_values + [None], "$type": guard}}
        raise _NoPush  # match (full text) and anything new

    def _like(self, c: str, cls: str, pattern: Any, negate: bool) -> dict:
        if cls != "string" or not isinstance(pattern, str) or "\x00" in pattern:
            raise _NoPush
        if "%" not in pattern and "_" not in pattern:
            return self._leaf(Filter(c, "!=" if negate else "=", pattern))
        if pattern == "%":
            if negate:  # NOT LIKE '%' is never TRUE
                return {c: {"$in": []}}
            return {c: {"$type": "string"}}
        prefix = pattern[:-1]
        if not pattern.endswith("%") or "%" in prefix or "_" in prefix:
            raise _NoPush
        regex = "^" + re.escape(prefix)
        if negate:
            return {c: {"$type": "string", "$not": {"$regex": regex}}}
        return {c: {"$regex": regex, "$type": "string"}}
