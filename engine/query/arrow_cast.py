"""DataFusion's `arrow_cast`: its names for SQL types, one home for both directions (the planner
casts with it where DataFusion's CAST is not PostgreSQL's; push-down writes it back as CAST)."""

from __future__ import annotations

import re

from sqlglot import exp

_T = exp.DataType.Type
# SQL types as DataFusion's arrow_cast names them (TEXT before VARCHAR: cast_type_of reads the first)
ARROW_CAST_TYPES = {_T.TINYINT: "Int8", _T.SMALLINT: "Int16", _T.INT: "Int32", _T.BIGINT: "Int64",
                    _T.FLOAT: "Float32", _T.DOUBLE: "Float64", _T.BOOLEAN: "Boolean", _T.TEXT: "Utf8",
                    _T.VARCHAR: "Utf8", _T.DATE: "Date32", _T.TIMESTAMP: "Timestamp(Microsecond, None)",
                    _T.TIMESTAMPTZ: 'Timestamp(Microsecond, Some("UTC"))', _T.INTERVAL: "Interval(MonthDayNano)"}
_ARROW_DECIMAL = re.compile(r"Decimal128\((\d+), (\d+)\)")


def arrow_cast(node: exp.Expression, to: exp.DataType.Type) -> exp.Expression:
    """`node` cast for DataFusion with `arrow_cast` (its CAST to some SQL types is not PostgreSQL's)."""
    return exp.Anonymous(this="arrow_cast", expressions=[node, exp.Literal.string(ARROW_CAST_TYPES[to])])


def cast_type_of(arrow_name: str) -> exp.DataType | None:
    """The SQL type an `arrow_cast` to `arrow_name` is; None for one SQL has no name for."""
    if (decimal := _ARROW_DECIMAL.fullmatch(arrow_name)) is not None:
        return exp.DataType.build(f"DECIMAL({decimal[1]}, {decimal[2]})")
    sql = next((t for t, name in ARROW_CAST_TYPES.items() if name == arrow_name), None)
    return exp.DataType.build(sql) if sql is not None else None


def arrow_type_name(to: exp.DataType) -> str | None:
    """arrow_cast's name for the SQL type `to`; None for one it has none for here."""
    if to.this == exp.DataType.Type.DECIMAL and len(to.expressions) == 2:
        return "Decimal128({}, {})".format(*(p.this.name for p in to.expressions))
    return ARROW_CAST_TYPES.get(to.this)


def interval_text(amounts: list[tuple[exp.Expression, str]]) -> exp.Expression:
    """The text `<n> days <m> microseconds` of (amount, unit) pairs such as (n, "days"), which
    PostgreSQL and both engines read as an INTERVAL; NULL when an amount is NULL (`||`)."""
    text: exp.Expression | None = None
    for i, (amount, unit) in enumerate(amounts):
        word = exp.Literal.string(f" {unit}" + (" " if i < len(amounts) - 1 else ""))
        piece = exp.DPipe(this=exp.Cast(this=amount, to=exp.DataType.build("VARCHAR")), expression=word)
        text = piece if text is None else exp.DPipe(this=text, expression=piece)
    return text


def interval_of(amounts: list[tuple[exp.Expression, str]]) -> exp.Expression:
    """An INTERVAL for DataFusion from (amount, unit) pairs: their `interval_text` read back with arrow_cast."""
    return arrow_cast(interval_text(amounts), _T.INTERVAL)
