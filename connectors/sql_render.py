"""Renders Filter lists as SQL (via sqlglot) for sources and accelerators that speak SQL."""

from __future__ import annotations

import re
from typing import Sequence

from sqlglot import exp

from .base import Filter


def quote_ident(name: str) -> str:
    """A SQL identifier, double-quoted (PostgreSQL, DuckDB, DataFusion and the ADBC sources)."""
    return '"' + name.replace('"', '""') + '"'


def written_ident(name: str) -> str:
    """A name as a PostgreSQL query must write it: bare when folding to lower case keeps it,
    else double-quoted (`"shipTo"`, `"order id"`)."""
    return name if _PLAIN_NAME.fullmatch(name) else quote_ident(name)


_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")

_COMPARE = {"=": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE}


def filter_expression(f: Filter) -> exp.Expression:
    """One Filter (composites too) as a sqlglot condition."""
    if f.op == "and":
        return exp.and_(*(exp.paren(filter_expression(p), copy=False) for p in f.value))
    if f.op == "or":
        return exp.paren(exp.or_(*(exp.paren(filter_expression(p), copy=False) for p in f.value)), copy=False)
    if f.op == "not":
        return exp.Not(this=exp.paren(filter_expression(f.value[0]), copy=False))
    col = exp.column(f.column, quoted=True)
    if f.op == "match":  # only for display (EXPLAIN): no SQL engine here runs it
        return exp.Anonymous(this="match", expressions=[col, exp.convert(f.value)])
    if f.op in _COMPARE:
        return _COMPARE[f.op](this=col, expression=exp.convert(f.value))
    if f.op in ("in", "not_in"):
        cond = col.isin(*[exp.convert(v) for v in f.value])
        return exp.Not(this=cond) if f.op == "not_in" else cond
    if f.op == "is_null":
        return exp.Is(this=col, expression=exp.Null())
    if f.op == "is_not_null":
        return exp.Not(this=exp.Is(this=col, expression=exp.Null()))
    if f.op in ("like", "not_like"):
        cond = exp.Like(this=col, expression=exp.convert(f.value))
        return exp.Not(this=cond) if f.op == "not_like" else cond
    raise ValueError(f"cannot render filter operator {f.op!r}")


def select_sql(
    table: str,
    columns: Sequence[str] | None,
    filters: Sequence[Filter],
    limit: int | None,
    dialect: str,
    schema: str | None = None,
) -> str:
    """`SELECT cols FROM table WHERE f1 AND f2 ... LIMIT n` in `dialect`."""
    projection = [exp.column(c, quoted=True) for c in columns] if columns is not None else [exp.Star()]
    if columns is not None and not columns:
        projection = [exp.Star()]
    query = exp.select(*projection).from_(exp.table_(table, db=schema, quoted=True))
    for f in filters:
        query = query.where(filter_expression(f))
    if limit is not None:
        query = query.limit(limit)
    return query.sql(dialect)
