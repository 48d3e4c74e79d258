"""Plans of parameterised queries, planned once per SQL text and parameter types.

An agent's parameterised lookup (`... WHERE id = ?`) comes with a fresh value each time, and
planning (qualify, type, rewrite: milliseconds of Python, holding the GIL) would repeat for each.
Instead the query is planned once with *sentinel* values of the same kinds (unique integers of
the same width, unique strings) in place of its parameters; when the plan runs whole in one
DuckDB accelerator, or in the federated engine over Arrow-accelerated tables only, and each
sentinel's literal appears exactly once in its SQL, the plan is a template: each execution
splices its own values' literals (rendered as planning would render them) into that SQL.
Anything else (floats, booleans, NULLs, dates, plans reading sources) is planned with its
values as before.

Agents mostly write their values into the SQL text (`... WHERE id = 42`), each text new. Such a
query is lifted (`Lifts`): the literals it compares columns with become parameters, and the
query takes the same road, keyed by its lifted text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from sqlglot import exp
from sqlglot.tokens import TokenType

from .pg_semantics import timestamp_text
from .planner import CONSTANTS_INSTANCE, ArrowLookup, Plan
from .sql_limits import SqlLimits
from .sql_policy import parse_query, statement_tokens

INT32 = 2 ** 31
INT64 = 2 ** 63
MAX_VALUES = 64  # a lookup's few values; more (a long IN list) are planned as given: splicing is per value
MAX_LIFTED_TEXT = 16 << 10  # longer texts are not lifted (nor remembered): an agent's lookups are far shorter
_VALUE_TOKENS = (TokenType.NUMBER, TokenType.STRING)
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
_TIME_TYPES = (exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ)
_TIME_KEYWORDS = (TokenType.DATE, TokenType.TIMESTAMP, TokenType.TIMESTAMPTZ)  # `DATE '...'`: a typed literal


def shape(params: Sequence[object] | None) -> tuple[str, ...] | None:
    """The kinds of `params` ("int", "bigint", "str") when all can be templated, else None."""
    if not params or len(params) > MAX_VALUES:
        return None
    kinds = []
    for value in params:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return None
        if isinstance(value, str):
            kinds.append("str")
        else:
            kinds.append("int" if -INT32 < value < INT32 else "bigint")
    return tuple(kinds)


def sentinels(kinds: Sequence[str]) -> list[object]:
    """Fresh values of `kinds`, unlikely to appear anywhere in a query."""
    values: list[object] = []
    for kind in kinds:
        if kind == "str":
            values.append(f"satchel_param_{secrets.token_hex(12)}")
        elif kind == "int":
            values.append(1_000_000_000 + secrets.randbelow(INT32 - 1_000_000_001))
        else:
            values.append(10 ** 17 + secrets.randbelow(9 * 10 ** 17))
    return values


def literal(value: object, after: str = "") -> str:
    """`value` as DuckDB SQL, as planning renders a bound parameter; a negative number right
    after a `-` (`-?`) goes in parentheses (`--1` would start a comment)."""
    if type(value) is int:  # the common kinds, rendered exactly as sqlglot does, without its generator
        text = str(value)
    elif type(value) is str:
        text = "'" + value.replace("'", "''") + "'"
    else:
        text = exp.convert(value).sql("duckdb")
    return f"({text})" if text.startswith("-") and after.endswith("-") else text


@dataclass(frozen=True)
class Splice:
    """A text that is `pieces[0] + literal(p[order[0]]) + pieces[1] + ...`; a value in a
    timestamp's place (`clocks`: whether it has a zone, else None) written as planning writes one."""

    pieces: tuple[str, ...]
    order: tuple[int, ...]
    clocks: tuple[bool | None, ...]

    def text(self, params: Sequence[object]) -> str:
        parts = [self.pieces[0]]
        for index, zoned, piece in zip(self.order, self.clocks, self.pieces[1:]):
            value = params[index]
            if zoned is not None and isinstance(value, str):
                value = timestamp_text(value, zoned) or value
            parts.append(literal(value, parts[-1]))
            parts.append(piece)
        return "".join(parts)


@dataclass(frozen=True)
class Template:
    """A plan whose SQL (and the federated engine's, when it has its own) takes each execution's values."""

    plan: Plan
    sql: Splice
    engine_sql: Splice | None
    sentinels: tuple[object, ...] = ()  # the values the plan was made with, in parameter order
    lookup: ArrowLookup | None = None  # the plan's lookup, its sentinels' filters taken as they are

    def instantiate(self, params: Sequence[object]) -> Plan:
        made = dataclasses.replace(self.plan, sql=self.sql.text(params),
                                   engine_sql=self.engine_sql.text(params) if self.engine_sql else None)
        made.plain_scan = self.plan.plain_scan  # a query with values compared is no plain scan: never parsed again
        made.arrow_lookup = self.lookup.bound(dict(zip(self.sentinels, params))) if self.lookup is not None else None
        return made


def template_of(plan: Plan, sql: str, values: Sequence[object]) -> Template | None:
    """The template of `plan` (planned with sentinel `values`), or None when it is not one: not
    a whole-query DuckDB plan over tables, nor a federated plan over Arrow-accelerated tables only
    (their scans take no filters: every value is in the SQL), or a sentinel not found exactly once
    in each SQL text."""
    if plan.ai or any(str(value) in sql for value in values):
        return None
    if plan.route == "accelerator":
        if not plan.bindings or plan.instance_id == CONSTANTS_INSTANCE:
            return None
    elif plan.route != "federated" or not plan.scans or any(s.binding.kind != "arrow" for s in plan.scans):
        return None
    spliced = _splice(plan.sql, values, plan.clock_texts)
    engine = _splice(plan.engine_sql, values, plan.clock_texts) if plan.engine_sql is not None else None
    if spliced is None or (plan.engine_sql is not None and engine is None):
        return None
    return Template(plan, spliced, engine, tuple(values), plan.lookup(frozenset(values)))


def _splice(text: str, values: Sequence[object], clock_texts: dict[str, bool]) -> Splice | None:
    found: list[tuple[int, int, int]] = []  # (position, length, parameter index)
    for index, value in enumerate(values):
        mark = literal(value)
        if text.count(mark) != 1:
            return None
        found.append((text.index(mark), len(mark), index))
    found.sort()
    pieces, at = [], 0
    for position, length, _ in found:
        pieces.append(text[at:position])
        at = position + length
    pieces.append(text[at:])
    order = tuple(index for _, _, index in found)
    return Splice(tuple(pieces), order, tuple(clock_texts.get(values[i]) for i in order))


def _lifted_slots(sql: str, tokens: list, limits: SqlLimits) -> tuple[int, ...]:
    """The indexes of the tokens of `sql` that are literals compared with a column (see
    `Lifts.get`); none for EXPLAIN, a query with parameters of its own, or more than MAX_VALUES."""
    tree, explain = parse_query(sql, limits)
    if explain or tree.find(exp.Placeholder, exp.Parameter):
        return ()
    at = {token.start: index for index, token in enumerate(tokens) if token.token_type in _VALUE_TOKENS}
    slots = set()
    for node in tree.find_all(exp.Literal):
        index = at.get(node.meta.get("start", -1))
        if index is None or _token_value(tokens[index]) != _value(node):  # the node is that token, whole
            continue
        if _compared_with_column(node) or _typed_time(node, tokens, index):
            slots.add(index)
    return tuple(sorted(slots)) if len(slots) <= MAX_VALUES else ()


def _typed_time(node: exp.Literal, tokens: list, index: int) -> bool:
    """Whether `node` (the token at `index`) is the text of a date or timestamp compared with a
    column, written `DATE '...'`, `CAST('...' AS DATE)` or `'...'::date` (TIMESTAMP[TZ] alike)."""
    cast = node.parent
    if not (node.is_string and isinstance(cast, exp.Cast) and node.arg_key == "this"
            and cast.to.this in _TIME_TYPES and _compared_with_column(cast)):
        return False
    before = tokens[index - 1] if index > 0 else None
    after = tokens[index + 1] if index + 1 < len(tokens) else None
    return (before is not None and before.token_type in _TIME_KEYWORDS) \
        or (after is not None and after.token_type == TokenType.DCOLON) \
        or (index > 1 and before.token_type == TokenType.L_PAREN and tokens[index - 2].text.upper() == "CAST"
            and after is not None and after.token_type == TokenType.ALIAS)


def _spliced(text: str, tokens: list, slots: tuple[int, ...]) -> Lift | None:
    """`text` with the liftable values of the tokens at `slots` made `$1, $2 ...` (text order);
    a typed literal `DATE '...'` becomes `CAST($n AS DATE)` (a parameter has no typed form)."""
    parts: list[str] = []
    values: list[object] = []
    at = 0
    for index in slots:
        token = tokens[index]
        value = _token_value(token)
        if value is None:
            continue  # e.g. 1.5 where the shape had an integer: it stays in the text
        values.append(value)
        keyword = tokens[index - 1] if index > 0 and tokens[index - 1].token_type in _TIME_KEYWORDS else None
        if keyword is not None:
            parts += [text[at:keyword.start], f"CAST(${len(values)} AS {keyword.text.upper()})"]
        else:
            parts += [text[at:token.start], f"${len(values)}"]
        at = token.end + 1
    if not values or len(values) > MAX_VALUES:
        return None
    parts.append(text[at:])
    return Lift("".join(parts), tuple(values))


def _token_value(token) -> int | str | None:  # type: ignore[no-untyped-def]
    """A literal token's value as a lifted parameter (as `_value` gives it), or None."""
    if token.token_type == TokenType.STRING:
        return token.text
    text = token.text
    return int(text) if text.isdigit() and int(text) < INT64 else None


def _shape(tokens: list) -> bytes:
    """What two texts whose literals may differ share (their tokens, literals masked), digested."""
    parts = (f"{t.token_type.name}:{len(t.text)}:{t.text}" if t.token_type not in _VALUE_TOKENS else t.token_type.name
             for t in tokens)
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).digest()


def _compared_with_column(node: exp.Expression) -> bool:
    parent = node.parent
    if isinstance(parent, _COMPARISONS):
        other = parent.expression if node is parent.this else parent.this
        return isinstance(other, exp.Column)
    if isinstance(parent, exp.In):
        return node.arg_key == "expressions" and isinstance(parent.this, exp.Column)
    if isinstance(parent, exp.Between):
        return node.arg_key in ("low", "high") and isinstance(parent.this, exp.Column)
    return False


def _value(node: exp.Literal) -> int | str | None:
    if node.is_string:
        return node.this
    if node.this.isdigit() and int(node.this) < INT64:  # not 1.5, 1e3 (a `-` is a node of its own)
        return int(node.this)
    return None


@dataclass(frozen=True)
class Lift:
    """A query text's lifted form: its text with `$n` for the values, and the values."""

    sql: str
    values: tuple[object, ...]


class Lifts:
    """The lifted forms of recent query texts (None: nothing to lift), so the calls one query
    makes (its schema, its parameters, its execution) lift it once. A new text whose tokens,
    literals aside, are those of one seen before is lifted from its tokens alone: where its
    literals are compared with columns is known from that one's parse (the literals' values
    do not change how a text parses). Thread-safe, LRU-bounded."""

    def __init__(self, limits: SqlLimits, size: int = 512) -> None:
        self._limits, self._size = limits, size
        self._entries: OrderedDict[str, Lift | None] = OrderedDict()
        self._slots: OrderedDict[bytes, tuple[int, ...]] = OrderedDict()  # by `_shape`
        self._lock = threading.Lock()

    def peek(self, sql: str) -> Lift | None:
        with self._lock:
            return self._entries.get(sql)

    def get(self, sql: str) -> Lift | None:
        """`sql` with its literals compared with a column (`c = 42`, `c <> 'x'`, `c IN (1, 2)`,
        `c BETWEEN 1 AND 9`; integers and strings) replaced in its text by parameters `$1, $2 ...`,
        and their values in that order; None when there is no such literal, more than
        MAX_VALUES, parameters of its own, EXPLAIN (it shows the query's own values), a text
        longer than MAX_LIFTED_TEXT, or size 0. A date or timestamp compared with a column is
        lifted too (`c >= DATE '2026-01-01'` becomes `c >= CAST($1 AS DATE)`). Other literals
        (LIMIT, ORDER BY 1, function arguments) stay in the text. Parse errors are raised."""
        if self._size <= 0 or len(sql) > MAX_LIFTED_TEXT:
            return None
        with self._lock:
            if sql in self._entries:
                self._entries.move_to_end(sql)
                return self._entries[sql]
        text, tokens = statement_tokens(sql, self._limits)
        shape = _shape(tokens)
        with self._lock:
            slots = self._slots.get(shape)
        if slots is None:
            slots = _lifted_slots(sql, tokens, self._limits)
            with self._lock:
                _bounded_put(self._slots, shape, slots, self._size)
        lift = _spliced(text, tokens, slots)
        with self._lock:
            _bounded_put(self._entries, sql, lift, self._size)
        return lift


def _bounded_put(entries: OrderedDict, key: object, value: object, size: int) -> None:
    entries[key] = value
    entries.move_to_end(key)
    if len(entries) > size:
        entries.popitem(last=False)
