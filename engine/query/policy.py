"""A principal's policy, applied to the query tree before routing: each table reference becomes the
principal's view of it (row filter, column rules), so the rule holds on every route and every
push-down, inside views, CTEs, subqueries, joins and set operations."""

from __future__ import annotations

import collections
import fnmatch
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping

import pyarrow as pa
from sqlglot import exp

from ..arrow_sql_types import sql_type
from ..config_models import PrincipalConfig
from ..errors import ConnectorError, Overloaded, SatchelError, UnknownDataset
from ..policy_rules import ColumnRule, parse_filter, parse_rule
from .sql_policy import PUBLIC_DIALECT

REDACTED = "[redacted]"
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


@dataclass(frozen=True)
class DatasetRule:
    pattern: str
    filter: exp.Expression | None
    columns: tuple[tuple[str, ColumnRule], ...]

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name.lower(), self.pattern.lower())

    def rule_for(self, column: str) -> ColumnRule | None:
        return next((r for c, r in self.columns if c.lower() == column.lower()), None)

    @property
    def restricts(self) -> bool:
        return self.filter is not None or bool(self.columns)


@dataclass(frozen=True)
class Limits:
    max_rows: int | None = None
    query_timeout_s: float | None = None
    queries_per_minute: int | None = None
    max_concurrent_queries: int | None = None
    model_tokens_per_hour: int | None = None


@dataclass(frozen=True, eq=False)
class Policy:
    """What one principal may see and do. Compared by identity (one per principal)."""

    principal: str
    rules: tuple[DatasetRule, ...]
    salt: str
    all_task_history: bool = False
    limits: Limits = Limits()
    gate: "Gate" = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "gate", Gate(self.principal, self.limits))

    @classmethod
    def from_config(cls, config: PrincipalConfig, salt: str) -> "Policy":
        attributes = {"name": config.name, **dict(config.attributes)}
        rules = []
        for item in config.datasets:
            condition = parse_filter(item.filter, attributes) if item.filter else None
            rules.append(DatasetRule(item.name, condition, tuple((c, parse_rule(r)) for c, r in item.columns.items())))
        lim = config.limits
        limits = Limits(lim.max_rows, lim.query_timeout.total_seconds() if lim.query_timeout else None,
                        lim.queries_per_minute, lim.max_concurrent_queries, lim.model_tokens_per_hour)
        return cls(config.name, tuple(rules), salt, config.task_history == "all", limits)

    def rule(self, name: str) -> DatasetRule | None:
        """The first rule whose pattern matches `name`; None: the principal may not see it."""
        return next((r for r in self.rules if r.matches(name)), None)

    def allows(self, name: str) -> bool:
        return self.rule(name) is not None

    def visible_schema(self, name: str, schema: pa.Schema) -> pa.Schema:
        """`schema` as the principal sees it: hidden columns gone, masked ones marked (field
        metadata `masked`: the rule) and typed as the rule makes them."""
        rule = self.rule(name)
        fields = []
        for f in schema:
            col = rule.rule_for(f.name) if rule else None
            if col is None:
                fields.append(f)
            elif col.kind != "hidden":
                typ = pa.string() if col.kind in ("hash", "partial") or col.kind == "redact" and _is_text(f.type) else f.type
                fields.append(pa.field(f.name, typ, True, {**(f.metadata or {}), b"masked": col.kind.encode()}))
        return pa.schema(fields, metadata=schema.metadata)

    def restrict(self, table: exp.Table, name: str, schema: pa.Schema) -> None:
        """Replace `table` (bound, aliased) by the principal's view of dataset `name`."""
        rule = self.rule(name)
        if rule is None or not rule.restricts:
            return
        inner = table.copy()
        inner.set("alias", exp.TableAlias(this=exp.to_identifier("__policy", quoted=True)))
        projections = []
        for f in schema:
            col = exp.column(f.name, "__policy", quoted=True)
            masked = _masked(col, f.type, rule.rule_for(f.name), self.salt)
            if masked is not None:
                projections.append(exp.alias_(masked, f.name, quoted=True))
        if not projections:
            projections = [exp.alias_(exp.Null(), "__no_visible_columns", quoted=True)]
        select = exp.select(*projections).from_(inner)
        if rule.filter is not None:
            condition = rule.filter.copy()
            for column in condition.find_all(exp.Column):
                column.set("table", exp.to_identifier("__policy", quoted=True))
            select = select.where(condition)
        table.replace(exp.Subquery(this=select, alias=table.args["alias"].copy()))

    def task_history(self, table: exp.Table) -> None:
        """A principal sees only its own task-history rows unless its policy grants all."""
        if self.all_task_history:
            return
        inner = table.copy()
        inner.set("alias", exp.TableAlias(this=exp.to_identifier("__policy", quoted=True)))
        select = exp.select("*").from_(inner).where(
            exp.EQ(this=exp.column("principal", "__policy", quoted=True), expression=exp.Literal.string(self.principal)))
        table.replace(exp.Subquery(this=select, alias=table.args["alias"].copy()))

    def sanitize(self, error: SatchelError) -> str:
        """An engine's or a source's error without the values it quotes: an error on a row the
        filter drops or a value a mask hides (CAST(email AS INT)) must not echo it. Satchel's
        own messages (unknown tables, columns) quote only what the caller wrote and stay."""
        if isinstance(error, ConnectorError) or error.message.startswith("query failed"):
            return _QUOTED.sub("…", error.message)
        return error.message


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _masked(col: exp.Column, typ: pa.DataType, rule: ColumnRule | None, salt: str) -> exp.Expression | None:
    """The column as the rule shows it; None when hidden."""
    if rule is None:
        return col
    if rule.kind == "hidden":
        return None
    text = exp.Cast(this=col.copy(), to=exp.DataType.build("VARCHAR"))
    if rule.kind == "hash":
        return exp.Anonymous(this="md5", expressions=[exp.DPipe(this=exp.Literal.string(salt), expression=text)])
    if rule.kind == "partial":
        value = exp.DPipe(this=exp.Literal.string("***"), expression=exp.Right(this=text, expression=exp.Literal.number(rule.keep)))
        return exp.Case(ifs=[exp.If(this=exp.Is(this=col.copy(), expression=exp.Null()), true=exp.Null())], default=value)
    if rule.kind == "redact" and _is_text(typ):
        return exp.Case(ifs=[exp.If(this=exp.Is(this=col.copy(), expression=exp.Null()), true=exp.Null())],
                        default=exp.Literal.string(REDACTED))
    return exp.Cast(this=exp.Null(), to=exp.DataType.build(sql_type(typ), dialect=PUBLIC_DIALECT))  # null, redact


class Gate:
    """A principal's rate (token bucket over a minute) and concurrency limits."""

    def __init__(self, principal: str, limits: Limits) -> None:
        self.principal, self.limits = principal, limits
        self._lock = threading.Lock()
        self._tokens = float(limits.queries_per_minute or 0)
        self._refilled = time.monotonic()
        self.running = 0
        self._spent: collections.deque[tuple[float, int]] = collections.deque()  # (when, model tokens)

    def enter(self) -> None:
        """Take a token and a concurrency slot, or raise Overloaded naming the limit."""
        with self._lock:
            qpm = self.limits.queries_per_minute
            if qpm:
                now = time.monotonic()
                self._tokens = min(qpm, self._tokens + (now - self._refilled) * qpm / 60)
                self._refilled = now
                if self._tokens < 1:
                    wait = (1 - self._tokens) * 60 / qpm
                    raise Overloaded(f"principal '{self.principal}' is over its limit of {qpm} queries per minute; "
                                     f"retry after {wait:.1f} s", retry_after=wait)
            cap = self.limits.max_concurrent_queries
            if cap and self.running >= cap:
                raise Overloaded(f"principal '{self.principal}' already runs {cap} queries (its max_concurrent_queries)",
                                 retry_after=1.0)
            if qpm:
                self._tokens -= 1
            self.running += 1

    def leave(self) -> None:
        with self._lock:
            self.running -= 1

    def check_tokens(self) -> None:
        """Refuse a model call once the tokens of the last hour reach the budget."""
        budget = self.limits.model_tokens_per_hour
        if not budget:
            return
        with self._lock:
            used = self._tokens_in_window()
            if used >= budget:
                wait = self._spent[0][0] + 3600 - time.monotonic()
                raise Overloaded(f"principal '{self.principal}' used {used} of its {budget} model tokens per hour; "
                                 f"retry after {max(wait, 1):.0f} s", retry_after=max(wait, 1.0))

    def spend(self, tokens: int) -> None:
        if self.limits.model_tokens_per_hour and tokens:
            with self._lock:
                self._spent.append((time.monotonic(), tokens))

    def _tokens_in_window(self) -> int:
        cutoff = time.monotonic() - 3600
        while self._spent and self._spent[0][0] < cutoff:
            self._spent.popleft()
        return sum(t for _, t in self._spent)


def policies(principals: tuple[PrincipalConfig, ...], salt: str) -> Mapping[str, Policy]:
    return {p.name: Policy.from_config(p, salt) for p in principals}


def unknown(name: str) -> UnknownDataset:
    """The error for a table the principal may not see: the same as for one that does not exist."""
    return UnknownDataset(f"unknown table '{name}'", name)
