"""Filters for Iceberg scans, in two layers.

1. Pruning: each filter becomes a pyiceberg expression that keeps *at least* the rows SQL
   keeps (a superset). pyiceberg uses it to skip partitions and data files (manifest partition
   summaries, column bounds) and applies it to the rows it reads. Only translations whose
   pyiceberg meaning provably contains SQL's are made: integers, decimals, strings, dates,
   timestamps and booleans compared with values converted exactly, IN lists, IS [NOT] NULL,
   and LIKE 'prefix%' (as StartsWith). Floats are never translated (pyiceberg's NaN ordering
   differs from SQL's), nor NOT (its negation would need an exact, not a superset, child).
2. Exactness: the rows pyiceberg returns are filtered again in Arrow with the project's
   SQL-exact pyarrow translation (connectors/_filters.py), extended here to AND/OR/NOT with
   SQL's three-valued logic (a leaf on a NULL value is NULL, NOT NULL is NULL, a row passes
   only when TRUE). A filter is EXACT exactly when that translation exists.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
    NotEqualTo,
    NotNull,
    Or,
    StartsWith,
)

from ._filters import comparable_scalar, to_expression
from .base import Filter, FilterSupport

_ICEBERG_COMPARE = {"=": EqualTo, "!=": NotEqualTo, "<": LessThan, "<=": LessThanOrEqual, ">": GreaterThan,
                    ">=": GreaterThanOrEqual}
_NULL_BOOL = pa.scalar(None, pa.bool_())


def _prunable_type(typ: pa.DataType) -> bool:
    return (pa.types.is_integer(typ) or pa.types.is_decimal(typ) or pa.types.is_string(typ)
            or pa.types.is_large_string(typ) or pa.types.is_date(typ) or pa.types.is_timestamp(typ)
            or pa.types.is_boolean(typ))


def pruning_expression(filters: Sequence[Filter], schema: pa.Schema) -> BooleanExpression:
    """AND of the filters' superset translations (AlwaysTrue when none translates)."""
    result: BooleanExpression = AlwaysTrue()
    for f in filters:
        expr = _prune(f, schema)
        if expr is not None:
            result = expr if isinstance(result, AlwaysTrue) else And(result, expr)
    return result


def _prune(f: Filter, schema: pa.Schema) -> BooleanExpression | None:
    """A pyiceberg expression keeping every row where `f` is TRUE, or None (keep all)."""
    if f.op == "and":
        parts = [p for p in (_prune(x, schema) for x in f.value) if p is not None]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else And(*parts)
    if f.op == "or":
        parts = [_prune(x, schema) for x in f.value]
        if any(p is None for p in parts):
            return None  # one unconstrained branch: every row may match
        return parts[0] if len(parts) == 1 else Or(*parts)
    if f.op in ("not", "match") or f.column not in schema.names:
        return None
    typ = schema.field(f.column).type
    if f.op == "is_null":
        return IsNull(f.column)
    if f.op == "is_not_null":
        return NotNull(f.column)
    if not _prunable_type(typ):
        return None
    if f.op in _ICEBERG_COMPARE:
        value = _exact_value(f.value, typ)
        return None if value is None else _ICEBERG_COMPARE[f.op](f.column, value)
    if f.op == "in":
        if not isinstance(f.value, (tuple, list)) or not f.value:
            return None
        values = [_exact_value(v, typ) for v in f.value]
        if any(v is None for v in values):
            return None
        return In(f.column, set(values))
    if f.op == "like" and isinstance(f.value, str) and (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        prefix = f.value[:-1] if f.value.endswith("%") else None
        if prefix and "%" not in prefix and "_" not in prefix:
            return StartsWith(f.column, prefix)
    return None


def _exact_value(value: object, typ: pa.DataType) -> object | None:
    """`value` as a Python value of the column's own type, when that conversion is exact."""
    scalar = comparable_scalar(value, typ)
    if scalar is None or scalar.type != typ or not scalar.is_valid:
        return None
    return scalar.as_py()


def exact_expression(f: Filter, schema: pa.Schema) -> pc.Expression | None:
    """The pyarrow expression with SQL's meaning for `f` (composites included), or None."""
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
    if f.op == "match" or f.column not in schema.names:
        return None
    return to_expression(f, schema.field(f.column).type)


def _three_valued(f: Filter, schema: pa.Schema) -> pc.Expression | None:
    """`f` as a condition that is NULL where SQL's is NULL (needed under NOT and OR).

    The leaf translations are exact as filters (TRUE exactly where SQL is TRUE) but may give
    FALSE where SQL gives NULL (e.g. `x NOT IN (...)` on a NULL x); wrapped in
    `if_else(x IS NOT NULL, leaf, NULL)`, a leaf on a NULL value is NULL again. The values
    themselves are never NULL: such filters have no translation."""
    expr = exact_expression(f, schema)
    if expr is None or f.op in ("and", "or", "not", "is_null", "is_not_null"):
        return expr
    column = pc.field(f.column)
    return pc.if_else(column.is_valid(), expr, _NULL_BOOL)


def classify(filters: Sequence[Filter], schema: pa.Schema) -> tuple[pc.Expression | None, list[FilterSupport]]:
    """The AND of the exact translations, and each filter's support."""
    combined: pc.Expression | None = None
    support = []
    for f in filters:
        expr = exact_expression(f, schema)
        support.append(FilterSupport.EXACT if expr is not None else FilterSupport.UNSUPPORTED)
        if expr is not None:
            combined = expr if combined is None else combined & expr
    return combined, support
