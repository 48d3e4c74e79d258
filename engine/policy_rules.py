"""The syntax of policy rules: column rules (`hash`, `partial(4)`, ...) and row filters, shared by
config validation and the query-time policy (engine/query/policy.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from .query.sql_policy import PUBLIC_DIALECT  # noqa: E402 - one home for the dialect
_PARTIAL = re.compile(r"^partial(?:\((\d+)\))?$")
_PLACEHOLDER = re.compile(r"\{\{\s*principal\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class ColumnRule:
    kind: str  # hidden | null | hash | redact | partial
    keep: int = 0  # partial: how many trailing characters stay visible


def parse_rule(text: str) -> ColumnRule:
    rule = text.strip().lower()
    if rule in ("hidden", "null", "hash", "redact"):
        return ColumnRule(rule)
    partial = _PARTIAL.match(rule)
    if partial:
        keep = int(partial.group(1) or 4)
        if not 1 <= keep <= 64:
            raise ValueError(f"partial({keep}): keep 1 to 64 characters")
        return ColumnRule("partial", keep)
    raise ValueError(f"unknown column rule '{text}'; use hidden, null, hash, redact, partial or partial(N)")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def parse_filter(text: str, principal: Mapping[str, str], check_only: bool = False) -> exp.Expression:
    """The row filter as a condition, `{{principal.<attr>}}` replaced by the attribute as a string
    literal. One condition on the dataset's own columns: no subqueries, tables or parameters."""
    def value(match: re.Match) -> str:
        key = match.group(1)
        if check_only:
            return "'x'"
        if key not in principal:
            raise ValueError(f"{{{{principal.{key}}}}}: the principal has no attribute '{key}'")
        return _literal(principal[key])

    try:
        condition = sqlglot.parse_one(_PLACEHOLDER.sub(value, text), read=PUBLIC_DIALECT, into=exp.Condition)
    except (ParseError, ValueError) as e:
        if isinstance(e, ValueError) and not isinstance(e, ParseError):
            raise
        raise ValueError(f"row filter is not one SQL condition: {text!r}") from None
    bad = next((n for n in condition.walk() if isinstance(n, (exp.Select, exp.Table, exp.Placeholder, exp.Parameter))), None)
    if bad is not None:
        raise ValueError(f"row filter {text!r} may use only the dataset's own columns (no subqueries or tables)")
    if "{{" in text and not _PLACEHOLDER.search(text):
        raise ValueError(f"row filter {text!r}: placeholders are {{{{principal.name}}}} or {{{{principal.<attribute>}}}}")
    return condition
