"""Filters for Iceberg scans, in two layers.

1. Pruning: each filter becomes a pyiceberg expression that keeps *at least* the rows SQL
   keeps (a superset). pyiceberg uses it to skip partitions and data files (manifest partition
   summaries, column bounds) and applies it to the rows it reads. Only translations whose
   pyiceberg meaning provably contains SQL's are made: integers, decimals, strings, dates,
   timestamps and booleans compared with values converted exactly, IN lists, IS [NOT] NULL,
   and LIKE 'prefix%' (as StartsWith). Floats are never translated (pyiceberg's NaN ordering
   differs from SQL's), nor NOT (its negation would need an exact, not a superset, child).
2. Exactness: when every filter translated whole (nothing dropped from an AND, no untranslated
   branch), pyiceberg's row-level filtering keeps exactly SQL's rows: each translated predicate
   becomes the pyarrow comparison, `isin`, `starts_with` or null test whose NULL handling is
   SQL's (a NULL operand drops the row). The expression is then EXACT and the rows are not
   filtered again. Otherwise they are filtered again in Arrow with the project's SQL-exact
   translation (connectors/arrow_filters.py, composites included); a filter is EXACT for the
   engine exactly when that translation exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa
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

from ..arrow_filters import comparable_scalar
from ..base import Filter

_ICEBERG_COMPARE = {"=": EqualTo, "!=": NotEqualTo, "<": LessThan, "<=": LessThanOrEqual, ">": GreaterThan,
                    ">=": GreaterThanOrEqual}


def _prunable_type(typ: pa.DataType) -> bool:
    return (pa.types.is_integer(typ) or pa.types.is_decimal(typ) or pa.types.is_string(typ)
            or pa.types.is_large_string(typ) or pa.types.is_date(typ) or pa.types.is_timestamp(typ)
            or pa.types.is_boolean(typ))


@dataclass(frozen=True)
class RowFilter:
    """The pyiceberg row filter of a scan, and whether pyiceberg's row-level filtering with it
    keeps exactly the rows SQL keeps (else a superset)."""

    expression: BooleanExpression
    exact: bool


def row_filter(filters: Sequence[Filter], schema: pa.Schema) -> RowFilter:
    """AND of the filters' superset translations (AlwaysTrue when none translates)."""
    result: BooleanExpression = AlwaysTrue()
    exact = True
    for f in filters:
        expr, whole = _prune(f, schema)
        exact = exact and whole
        if expr is not None:
            result = expr if isinstance(result, AlwaysTrue) else And(result, expr)
    return RowFilter(result, exact)


NO_FILTER = RowFilter(AlwaysTrue(), True)


def _prune(f: Filter, schema: pa.Schema) -> tuple[BooleanExpression | None, bool]:
    """A pyiceberg expression keeping every row where `f` is TRUE (None: keep all), and whether
    it keeps exactly those rows: no part of `f` dropped, and each predicate one pyiceberg
    evaluates per row with SQL's meaning."""
    if f.op in ("and", "or"):
        pruned = [_prune(x, schema) for x in f.value]
        parts = [p for p, _ in pruned if p is not None]
        if not parts or (f.op == "or" and len(parts) < len(pruned)):
            return None, False  # an unconstrained branch of an OR: every row may match
        combine = And if f.op == "and" else Or
        return (parts[0] if len(parts) == 1 else combine(*parts)), all(whole for _, whole in pruned)
    expr = _predicate(f, schema)
    if expr is None:
        return None, False
    typ = schema.field(f.column).type
    # a timestamp other than microseconds would be compared through pyiceberg's microseconds
    return expr, f.op in ("is_null", "is_not_null") or not pa.types.is_timestamp(typ) or typ.unit == "us"


def _predicate(f: Filter, schema: pa.Schema) -> BooleanExpression | None:
    """One predicate's translation, or None."""
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
