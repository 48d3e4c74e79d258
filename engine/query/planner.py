"""Routes a parsed query: whole to one DuckDB accelerator, or to DataFusion with pushed-down scans.

The routing is an optimisation, never a change of meaning: the query is qualified and typed
once (sqlglot), so integer division, NULL ordering and output column names come out the
same whichever engine runs it, and every WHERE clause is re-applied above pushed scans.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import difflib
import functools
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.pushdown_predicates import pushdown_predicates
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.schema import MappingSchema

from connectors.arrow_filters import exact_expression, orderable
from connectors.base import FULL_TEXT_OP, LEAF_OPS, Filter, SortKey
from connectors.sql_render import filter_expression, written_ident

from ..arrow_sql_types import sql_type
from ..errors import SqlError, UnknownDataset
from ..search.functions import SEARCH_PREFIX
from .ai_functions import AiCall
from .information_schema import CATALOG, SCHEMA_NAME
from .pg_semantics import (decimal_sums, distinct_aggregate_names, for_datafusion, for_duckdb, function_results,
                           engine_forms,
                           lengths_fractions_rounding, name_projections, numeric_casts, standard_forms, time_literals,
                           timestamp_text, type_literals, typeof_as_duckdb)
from .policy import Policy, unknown
from .sql_policy import PUBLIC_DIALECT


@dataclass
class Binding:
    """Where one table name is served from right now."""

    name: str  # the name clients use (dataset, or runtime.task_history)
    schema: pa.Schema
    kind: str  # "duckdb" | "arrow" | "source" | "memory" | "search" | "catalog"
    instance_id: str | None = None  # the accelerator instance (duckdb:<path>) for kind duckdb
    dataset: str | None = None  # dataset name for task history / status
    # kind "search": a search table function's result (engine.search.functions); kind "catalog": an
    # information_schema table as the caller sees it (engine.query.information_schema)
    rows: pa.Table | None = None


@dataclass
class TableScan:
    """One table reference in a federated plan, registered in DataFusion as `register_as`."""

    register_as: str
    binding: Binding
    columns: list[str] | None
    filters: list[Filter] = field(default_factory=list)
    limit: int | None = None
    order: list[SortKey] = field(default_factory=list)  # the order `limit` rows must follow (top-N)


@dataclass
class Plan:
    route: str  # "accelerator" (one DuckDB instance) | "federated" (DataFusion)
    sql: str  # in the target engine's dialect
    bindings: list[Binding]
    scans: list[TableScan] = field(default_factory=list)
    instance_id: str | None = None
    # what the federated engine runs when it differs from `sql` (pg_semantics.engine_forms), where
    # `sql` keeps PostgreSQL's forms for a query that goes down whole
    engine_sql: str | None = None
    widen_decimals: list[int] = field(default_factory=list)  # output columns to widen to decimal(38, s)
    full_text: bool = False  # a scan carries match(): it must run in that scan's source
    count_as: str | None = None  # `SELECT count(*) AS <name> FROM t [WHERE ...]`: the source may count
    output_names: list[str] | None = None  # the result's column names, when the engine runs them renamed
    ai: list[AiCall] = field(default_factory=list)  # output columns a model answers (ai_functions.py)
    # texts compared with (or cast to) a timestamp that planning could not rewrite (time_literals),
    # and whether that timestamp has a zone: a template's values in their place are rewritten then
    clock_texts: dict[str, bool] = field(default_factory=dict)
    # what routes work out once per plan (plans are cached), e.g. pushdown.py's source statement;
    # not an init field, so a dataclasses.replace() copy never shares it
    memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def served_by(self) -> str:
        kinds = {b.kind for b in self.bindings}
        if not kinds or kinds <= {"memory", "catalog"}:
            return "runtime"
        if "source" in kinds:
            return "source" if kinds <= {"source", "memory", "catalog"} else "mixed"
        return "accelerator"

    @functools.cached_property
    def plain_scan(self) -> TableScan | None:
        """The one scan when the query only selects that scan's columns, unrenamed and in its
        order (`SELECT * FROM t`, a refresh's full read): its rows are the result as they are.
        Worked out once per plan (plans are cached)."""
        selected = self._selected_columns(_NOT_PLAIN)
        if selected is None:
            return None
        scan = self.scans[0]
        wanted = scan.columns if scan.columns is not None else scan.binding.schema.names
        return scan if selected[2] == list(wanted) else None

    @functools.cached_property
    def arrow_lookup(self) -> ArrowLookup | None:
        """`lookup()` of the plan as it is, worked out once per plan (plans are cached)."""
        return self.lookup()

    def lookup(self, deferred: frozenset[object] = frozenset()) -> ArrowLookup | None:
        """The query as some rows of one Arrow-accelerated table, `SELECT columns FROM t [WHERE
        filters pyarrow applies exactly] [[ORDER BY orderable columns] LIMIT n]` (an agent's
        lookup, or its top n, n <= MAX_LOOKUP_TOP; or `SELECT count(*), min(c), max(c), count(c) FROM
        t [WHERE ...]`), which the sidecar answers with a pyarrow scan of the table instead of a federated engine worker's round
        trip. A filter comparing with a `deferred` value (a template's sentinel) is taken as it
        is: whether pyarrow applies it exactly is known once the value is bound (the scan then
        checks, `ArrowAccelerator.exact_scan`); see `ArrowLookup.bound`."""
        if (self.full_text or self.widen_decimals or self.engine_sql not in (None, self.sql)
                or len(self.scans) != 1 or self.scans[0].binding.kind != "arrow"):
            return None
        try:
            parsed = sqlglot.parse_one(self.sql, read=PUBLIC_DIALECT)
        except sqlglot.errors.ParseError:
            return None
        scan = self.scans[0]
        aggregates = _lookup_aggregates(parsed, scan.binding.schema)  # `SELECT count(*), max(c) FROM t ...`
        selected = self._selected_columns(_NOT_LOOKUP, projections=aggregates is None, tree=parsed)
        if selected is None:
            return None
        tree, alias, names = selected
        if len(set(names)) != len(names) or aggregates is not None and (tree.args.get("order") or tree.args.get("limit")):
            return None
        if aggregates is not None and any(c is not None and c.table not in ("", alias) for _, c in aggregates):
            return None
        for cast in list(tree.find_all(exp.Cast)) if deferred else ():
            if isinstance(cast.this, exp.Literal) and cast.this.is_string and cast.this.this in deferred \
                    and cast.to.this in (exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP):
                cast.replace(cast.this)  # a lifted DATE '...': its text, read as the column's type once bound
        filters: list[Filter] = []
        if tree.args.get("where"):
            for cond in _conjuncts(tree.args["where"].this):
                found = _as_filters(cond, alias)
                if not found or not all(_lookup_filter(f, scan.binding.schema, deferred) for f in found):
                    return None
                filters.extend(found)
        limit = None
        if tree.args.get("limit"):
            count = tree.args["limit"].expression
            if not (isinstance(count, exp.Literal) and count.is_int):
                return None
            limit = int(count.name)
        order: list[SortKey] = []
        for key in tree.args["order"].expressions if tree.args.get("order") else ():
            column = key.this
            if limit is None or limit > MAX_LOOKUP_TOP or not isinstance(column, exp.Column) \
                    or column.table not in ("", alias) or not _lookup_order_column(column.name, scan.binding.schema):
                return None
            order.append(SortKey(column.name, bool(key.args.get("desc")), bool(key.args.get("nulls_first"))))
        clocks = tuple((f.name, f.type.tz is not None) for f in scan.binding.schema if pa.types.is_timestamp(f.type))
        return ArrowLookup(scan.binding.dataset or scan.binding.name, tuple(names), tuple(filters), limit,
                           tuple(order), clocks,
                           tuple((fn, c.name if c is not None else None) for fn, c in aggregates or ()))

    def _selected_columns(self, refused: tuple[str, ...], projections: bool = True,
                          tree: exp.Expression | None = None) -> tuple[exp.Select, str, list[str]] | None:
        """(tree, the table's alias, the column names) when the plan's SQL (`tree`: already
        parsed) selects plain, unrenamed columns of its one scan and has none of the `refused`
        clauses (`projections` False: whatever it selects, no names)."""
        if self.route != "federated" or len(self.scans) != 1 or self.ai:
            return None
        try:
            tree = tree if tree is not None else sqlglot.parse_one(self.sql, read=PUBLIC_DIALECT)
        except sqlglot.errors.ParseError:
            return None
        if not isinstance(tree, exp.Select) or any(tree.args.get(k) for k in refused):
            return None
        source = tree.args.get("from_") or tree.args.get("from")
        if source is None or not isinstance(source.this, exp.Table) or source.this.name != self.scans[0].register_as:
            return None
        alias = source.this.alias_or_name
        names = []
        for projection in tree.expressions if projections else ():
            column = projection.this if isinstance(projection, exp.Alias) else projection
            if not isinstance(column, exp.Column) or column.table not in ("", alias) \
                    or projection.alias_or_name != column.name:
                return None
            names.append(column.name)
        return tree, alias, names

    def explain(self) -> str:
        lines = [f"route: {self.route} (served by {self.served_by})", f"sql: {self.engine_sql or self.sql}"]
        if self.arrow_lookup is not None:
            lines.append("lookup: answered by a scan of the Arrow table in the sidecar when pyarrow applies its "
                         "filters exactly (no federated engine worker)")
        for s in self.scans:
            pushed = " AND ".join(filter_expression(f).sql(PUBLIC_DIALECT) for f in s.filters) or "-"
            order = ", ".join(f"{k.column} {'DESC' if k.descending else 'ASC'} NULLS {'FIRST' if k.nulls_first else 'LAST'}"
                              for k in s.order)
            detail = (s.binding.rows.schema.metadata or {}).get(b"satchel_search") if s.binding.rows is not None else None
            if detail:
                lines.append(f"search {s.binding.name}: {detail.decode()}")
            lines.append(
                f"scan {s.binding.name} [{s.binding.kind}] as {s.register_as}: "
                f"columns={s.columns if s.columns is not None else '*'} filters={pushed} limit={s.limit}"
                + (f" order={order}" if order else "")
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class ArrowLookup:
    """`SELECT columns FROM dataset WHERE filters [[ORDER BY order] LIMIT limit]`, or `SELECT
    aggregates FROM dataset WHERE filters`, on one Arrow-accelerated table."""

    dataset: str
    columns: tuple[str, ...]
    filters: tuple[Filter, ...]
    limit: int | None
    order: tuple[SortKey, ...] = ()  # with `limit`: the first `limit` rows in this order (top-N)
    clocks: tuple[tuple[str, bool], ...] = ()  # the table's timestamp columns: (name, whether zoned)
    # `SELECT count(*), min(c) ...`: these of the matching rows, not the rows: (function, column or None)
    aggregates: tuple[tuple[str, str | None], ...] = ()
    # shared by a template's lookup and its instances' (dataclasses.replace keeps the dict): the
    # result schema, found once (by the federated engine's planner, as GetFlightInfo announces it)
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def bound(self, sentinels: dict[object, object]) -> ArrowLookup | None:
        """This lookup (planned with sentinel values) with each sentinel replaced by its value;
        None unless every sentinel is a filter's value (one elsewhere, say in LIMIT, would be
        left in place)."""
        found: set[object] = set()
        clocks = dict(self.clocks)
        filters = tuple(_bound_filter(f, sentinels, found, clocks) for f in self.filters)
        return dataclasses.replace(self, filters=filters) if found == set(sentinels) else None


def _bound_filter(f: Filter, sentinels: dict[object, object], found: set[object], clocks: dict[str, bool]) -> Filter:
    """`f` with its sentinels bound; text for a timestamp column as planning writes it (the
    engine gets that text, so the scan compares the same timestamp)."""
    def value(v: object) -> object:
        if type(v) in (int, str) and v in sentinels:
            found.add(v)
            bound = sentinels[v]
            if isinstance(bound, str) and f.column in clocks:
                return timestamp_text(bound, clocks[f.column]) or bound
            return bound
        return v

    if f.op in ("and", "or", "not"):
        return dataclasses.replace(f, value=tuple(_bound_filter(p, sentinels, found, clocks) for p in f.value))
    if isinstance(f.value, tuple):
        return dataclasses.replace(f, value=tuple(value(v) for v in f.value))
    return dataclasses.replace(f, value=value(f.value))


def _lookup_filter(f: Filter, schema: pa.Schema, deferred: frozenset[object]) -> bool:
    """Whether pyarrow applies `f` exactly as the federated engine would (`exact_expression`:
    the value converts exactly to the column's type, NaN and NULL as SQL has them), so a
    lookup answered by pyarrow is the same answer; or, for a comparison with `deferred`
    values, whether it may once they are bound."""
    if f.op in ("and", "or", "not"):
        return all(_lookup_filter(p, schema, deferred) for p in f.value)
    values = f.value if isinstance(f.value, tuple) else (f.value,)
    if deferred and any(type(v) in (int, str) and v in deferred for v in values):
        return f.column in schema.names and f.op in LEAF_OPS
    return exact_expression(f, schema) is not None


def _lookup_aggregates(tree: exp.Expression, schema: pa.Schema) -> list[tuple[str, exp.Column | None]] | None:
    """(function, column) of each output of `SELECT count(*), count(c), min(c), max(c) ... FROM t
    [WHERE ...]` (min and max of `orderable` columns only: pyarrow's and the engine's agree), or
    None when the query selects anything else or groups."""
    if not isinstance(tree, exp.Select) or not tree.expressions or tree.args.get("group") or tree.args.get("having"):
        return None
    found: list[tuple[str, exp.Column | None]] = []
    for projection in tree.expressions:
        call = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(call, exp.Count) and isinstance(call.this, exp.Star):
            found.append(("count", None))
            continue
        if not isinstance(call, (exp.Count, exp.Min, exp.Max)) or not isinstance(call.this, exp.Column) \
                or call.args.get("expressions") or call.this.name not in schema.names:
            return None  # count(DISTINCT c) is a Distinct, min(a, b) has expressions
        if not isinstance(call, exp.Count) and not orderable(schema.field(call.this.name).type):
            return None
        found.append((type(call).__name__.lower(), call.this))
    return found


def _lookup_order_column(name: str, schema: pa.Schema) -> bool:
    """A column a lookup's top-N sorts by as the federated engine does (`orderable`)."""
    return name in schema.names and orderable(schema.field(name).type)


# clauses that make a query more than a plain scan of its one table
_NOT_PLAIN = ("where", "group", "having", "order", "limit", "offset", "distinct", "joins", "laterals", "windows",
              "qualify", "with", "into", "prewhere", "connect", "match", "sample", "settings")
_NOT_LOOKUP = tuple(k for k in _NOT_PLAIN if k not in ("where", "limit", "order"))
MAX_LOOKUP_TOP = 10_000  # ORDER BY ... LIMIT n up to this n is a lookup: its rows are held while ranked

CONSTANTS_INSTANCE = "duckdb:constants"  # the private DuckDB that evaluates queries naming no table
# DuckDB binds nested operators in time cubic in their depth (`SELECT 1+1+...` of 900 terms: 24 s,
# 100: 0.04 s); a table-less query nesting deeper runs on DataFusion, which binds it at once.
DUCKDB_OPERATOR_DEPTH = 100

Resolver = Callable[[str | None, str], Binding | None]
"""(schema or None, table) -> Binding, or None when unknown."""


PLAN_CACHE_TEXT = 512 << 10  # the plan cache's entries' SQL text, in characters, at most


class PlanCache:
    """Results of planning (plans, result schemas) by key (the SQL text and how it is used).

    An entry stays valid while every table name the planner looked up still resolves to the
    same binding: same dataset, kind, accelerator instance and schema. A refresh that swaps a
    table's data keeps its plans (they name tables, not data); a dataset that changes schema,
    finishes loading, or falls back to its source gets a fresh plan. Thread-safe, LRU-bounded.
    """

    def __init__(self, size: int | None = None, text_budget: int | None = None) -> None:
        # SATCHEL_PLAN_CACHE_SIZE=0 turns caching off (benchmarks compare with and without).
        self.size = int(os.environ.get("SATCHEL_PLAN_CACHE_SIZE", "512")) if size is None else size
        # A plan's trees take about 150 bytes per character of its SQL: the texts of the entries
        # are bounded in sum, so an agent sending large distinct queries cannot grow memory.
        self.text_budget = int(os.environ.get("SATCHEL_PLAN_CACHE_TEXT", str(PLAN_CACHE_TEXT))) \
            if text_budget is None else text_budget
        self._entries: OrderedDict[Hashable, tuple[Any, tuple[tuple[tuple[str | None, str], Binding], ...], int]] = \
            OrderedDict()
        self._text = 0  # the entries' text, in characters
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, resolve: Resolver) -> Any | None:
        if self.size <= 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is not None:
            value, lookups, _ = entry
            if all(_same_binding(resolve(db, name), binding) for (db, name), binding in lookups):
                self.hits += 1
                return value
        self.misses += 1
        return None

    def put(self, key: Hashable, value: Any, lookups: "RecordingResolver | tuple") -> None:
        """Store `value`, valid while the recorded lookups (a RecordingResolver's, or another
        entry's from `lookups_of`) resolve the same."""
        if self.size <= 0:
            return
        if isinstance(lookups, RecordingResolver):
            lookups = tuple(lookups.lookups)
        text = _text_in(key)
        if text > self.text_budget:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._text += text - (old[2] if old is not None else 0)
            self._entries[key] = (value, lookups, text)
            while len(self._entries) > self.size or self._text > self.text_budget:
                self._text -= self._entries.popitem(last=False)[1][2]

    def lookups_of(self, key: Hashable) -> tuple | None:
        """The validity condition of an entry (to store a value derived from it), or None."""
        with self._lock:
            entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._text = 0


def _text_in(key: object) -> int:
    """The characters (and bytes) of the strings in a cache key: its SQL text and parameters."""
    if isinstance(key, (str, bytes)):
        return len(key)
    if isinstance(key, tuple):
        return sum(_text_in(part) for part in key)
    return 0


class RecordingResolver:
    """A resolver that remembers what it answered (the validity condition of a cached plan)."""

    def __init__(self, resolve: Resolver) -> None:
        self._resolve = resolve
        self.lookups: list[tuple[tuple[str | None, str], Binding]] = []

    def __call__(self, db: str | None, name: str) -> Binding | None:
        binding = self._resolve(db, name)
        if binding is not None:
            self.lookups.append(((db, name), binding))
        return binding


def _same_binding(a: Binding | None, b: Binding) -> bool:
    return a is not None and a.name == b.name and a.kind == b.kind and a.instance_id == b.instance_id \
        and a.dataset == b.dataset and (a.schema is b.schema or a.schema.equals(b.schema))


def cache_key(*parts: Any) -> Hashable | None:
    """A hashable key for the cache, or None (do not cache) when some part is unhashable."""
    try:
        hash(parts)
    except TypeError:
        return None
    return parts


def typing_schema(tables: dict[str, pa.Schema]) -> MappingSchema:
    """Tables' columns for sqlglot to qualify and type a query by, names exactly as they are:
    sqlglot would otherwise fold them as unquoted names (`Amount` to `amount`), and no query
    could name a column or dataset with a capital letter, not even quoted."""
    return MappingSchema({name: {f.name: sql_type(f.type) for f in schema} for name, schema in tables.items()},
                         dialect=PUBLIC_DIALECT, normalize=False)


def _column_hint(message: str, bindings: Iterable[Binding], policy: Policy | None) -> str:
    """For a column that is not found, the query's columns it may have meant (only those the
    caller's policy shows): the same name with capitals, written unquoted (PostgreSQL folds it to
    lower case), or a close spelling."""
    match = re.match(r"Column '([^']*)' could not be resolved|Unknown column: (\S+)", message)
    if match is None:
        return ""
    wanted = match.group(1) or match.group(2)
    shown = [policy.visible_schema(b.dataset or b.name, b.schema) if policy is not None and b.kind not in
             ("search", "catalog", "memory") else b.schema for b in bindings]
    names = sorted({f.name for schema in shown for f in schema})
    same = [n for n in names if n.lower() == wanted.lower() and n != wanted]
    if same:
        return f"; did you mean {' or '.join(written_ident(n) for n in same)}? (a name with capitals is written in double quotes)"
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(written_ident(n) for n in close)}?" if close else ""


def plan_query(tree: exp.Expression, resolve: Resolver, views: dict[str, exp.Expression],
               policy: Policy | None = None) -> Plan:
    """Resolve names, qualify and type the query under the caller's policy, and choose its route."""
    uses_views = any(t.name.lower() in views for t in tree.find_all(exp.Table))
    if policy is not None:
        for table in tree.find_all(exp.Table):
            if table.name.lower() in views and not table.db and not _names_cte_in_scope(table) \
                    and not view_visible(table.name, policy, views):
                raise unknown(table.name)
    tree = expand_views(tree.copy(), views)
    bindings: dict[str, Binding] = {}
    for table in list(tree.find_all(exp.Table)):
        if isinstance(table.this, exp.ExplodingGenerateSeries):
            _typed_series(table)
            continue
        if not isinstance(table.this, exp.Identifier):
            spread = table.this.name.lower().startswith("json") if isinstance(table.this, exp.Anonymous) else False
            raise SqlError(f"table functions are not allowed ({table.this.sql(PUBLIC_DIALECT)}); query datasets by "
                           f"name (generate_series is the one table function)" + (
                               "; spread JSON into rows in the select list: SELECT t.id, jsonb_array_elements_text("
                               "t.payload -> 'tags') AS tag FROM t (also jsonb_array_elements, jsonb_object_keys)"
                               if spread else ""))
        if not table.db and _names_cte_in_scope(table):
            continue
        if table.catalog and table.catalog.lower() != CATALOG:
            raise UnknownDataset(f"unknown catalog '{table.catalog}'; the only catalog is '{CATALOG}'")
        in_runtime = (table.db or "").lower() in ("runtime", SCHEMA_NAME)  # the caller's rows only
        searched = table.name.startswith(SEARCH_PREFIX)  # a search call's rows: authorised before the search ran
        if policy is not None and not in_runtime and not searched and not policy.allows(table.name):
            raise unknown(f"{table.db}.{table.name}" if table.db else table.name)  # before any lookup
        binding = resolve(table.db or None, table.name)
        if binding is None:
            full = f"{table.db}.{table.name}" if table.db else table.name
            raise UnknownDataset(f"unknown table '{full}'", full)
        key = binding.name
        bindings[key] = binding
        table.set("catalog", None)
        table.set("db", None)
        table.set("this", exp.to_identifier(key, quoted=True))
        if not table.alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(_short(key), quoted=True)))
        if policy is not None and binding.kind not in ("search", "catalog"):
            if binding.kind == "memory":
                policy.task_history(table)
            else:
                policy.restrict(table, binding.dataset or key, binding.schema)
    name_projections(tree)
    standard_forms(tree)
    schema = typing_schema({b.name: b.schema for b in bindings.values()})
    try:
        tree = qualify(tree, schema=schema, dialect=PUBLIC_DIALECT, quote_identifiers=True,
                       validate_qualify_columns=True, identify=True)
        tree = annotate_types(tree, schema=schema, dialect=PUBLIC_DIALECT)
    except OptimizeError as e:
        raise SqlError(str(e) + _column_hint(str(e), bindings.values(), policy)) from None
    clock_texts = time_literals(tree)
    numeric_casts(tree)
    lengths_fractions_rounding(tree)
    used = list(bindings.values())
    if not used and _operator_depth(tree) <= DUCKDB_OPERATOR_DEPTH:
        # No table: DuckDB evaluates it, as it does most queries (the same types and functions).
        _refuse_full_text(tree)
        return Plan("accelerator", for_duckdb(tree).sql("duckdb"), used, instance_id=CONSTANTS_INSTANCE)
    instances = {b.instance_id for b in used}
    if used and all(b.kind == "duckdb" for b in used) and len(instances) == 1:
        _refuse_full_text(tree)
        return Plan("accelerator", for_duckdb(tree).sql("duckdb"), used, instance_id=used[0].instance_id,
                    clock_texts=clock_texts)
    widen = decimal_sums(tree)
    if uses_views and _only_derived_tables(tree):
        # Move WHERE conditions into derived tables (expanded views), so they reach the scans.
        # Not with subquery expressions: sqlglot's rule mis-scopes correlated predicates there.
        tree = pushdown_predicates(tree, dialect=PUBLIC_DIALECT)
    tree = for_datafusion(tree)
    output_names = _unique_outputs(tree)
    count_as = _count_only(tree)
    scans = _federated_scans(tree, bindings)
    type_literals(tree)  # after the scans took their filters (they read plain literals)
    function_results(tree)
    for call in reversed(list(tree.find_all(exp.Typeof))):  # last: it reads the types the rules above made
        call.replace(typeof_as_duckdb(call.this))
    distinct_aggregate_names(tree)
    full_text = any(f.op == FULL_TEXT_OP for s in scans for f in s.filters)
    _refuse_full_text(tree)
    engine_tree = engine_forms(tree)
    return Plan("federated", tree.sql(PUBLIC_DIALECT), used, scans=scans, widen_decimals=widen,
                engine_sql=engine_tree.sql(PUBLIC_DIALECT) if engine_tree is not None else None,
                full_text=full_text, count_as=count_as if len(scans) == 1 else None, output_names=output_names,
                clock_texts=clock_texts)


def _typed_series(table: exp.Table) -> None:
    """`FROM generate_series(start, stop[, step]) AS g` (PostgreSQL names its one column after the
    alias) as a derived table whose column has a type: both engines run the table function
    natively, streaming; sqlglot cannot type a table function's columns."""
    alias = table.args.get("alias")
    name = alias.name if alias is not None and alias.name else "generate_series"
    columns = alias.columns if alias is not None and alias.columns else [exp.to_identifier(name)]
    if len(columns) != 1:
        raise SqlError("generate_series returns one column: alias it as g or g(x)")
    series = table.this
    kinds = [annotate_types(arg.copy(), dialect=PUBLIC_DIALECT).type for arg in
             (series.args.get("start"), series.args.get("step")) if arg is not None]
    stepped_by_time = len(kinds) == 2 and kinds[1] is not None and kinds[1].this == exp.DataType.Type.INTERVAL
    zoned = kinds[0] is not None and kinds[0].this == exp.DataType.Type.TIMESTAMPTZ
    to = exp.DataType.build("TIMESTAMPTZ" if zoned else "TIMESTAMP" if stepped_by_time else "BIGINT")
    series = series.copy()
    if zoned:  # DataFusion's takes no zoned timestamps: the series in UTC wall-clock time (the session's zone)
        for key in ("start", "end"):
            series.set(key, exp.Cast(this=series.args[key], to=exp.DataType.build("TIMESTAMP")))
    inner = exp.Table(this=series, alias=exp.TableAlias(this=exp.to_identifier(name),
                                                        columns=[c.copy() for c in columns]))
    select = exp.select(exp.alias_(exp.Cast(this=exp.column(columns[0].copy()), to=to), columns[0].copy())).from_(inner)
    table.replace(exp.Subquery(this=select, alias=exp.TableAlias(this=exp.to_identifier(name))))


def _unique_outputs(tree: exp.Expression) -> list[str] | None:
    """DataFusion refuses two output columns of one name in a SELECT (`SELECT 1 AS a, 2 AS a`),
    which PostgreSQL and DuckDB accept: later duplicates get private aliases in every SELECT, and
    the result's names (returned here when the outermost ones changed) are put back on it."""
    top = tree
    while isinstance(top, exp.SetOperation):
        top = top.this
    renamed_top = None
    for select in list(tree.find_all(exp.Select)):
        names = [p.alias_or_name for p in select.expressions]
        if len(set(names)) == len(names):
            continue
        seen: set[str] = set()
        for i, proj in enumerate(list(select.expressions)):
            if names[i] in seen:
                proj.replace(exp.alias_(proj.unalias() if isinstance(proj, exp.Alias) else proj.copy(),
                                        f"__satchel_column_{i}", quoted=True))
            seen.add(names[i])
        if select is top:
            renamed_top = names
    return renamed_top


def _operator_depth(tree: exp.Expression) -> int:
    """How deeply operators nest (`1+1+1` is 2)."""
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        depth += isinstance(node, exp.Binary)
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in node.iter_expressions())
    return deepest


def _is_match(node: exp.Expression) -> bool:
    return isinstance(node, exp.Anonymous) and str(node.this).lower() == FULL_TEXT_OP


def _refuse_full_text(tree: exp.Expression) -> None:
    """match() left in the query after planning is one no source scan can take."""
    node = next((n for n in tree.walk() if _is_match(n)), None)
    if node is not None:
        raise SqlError(
            f"{node.sql(PUBLIC_DIALECT)}: full-text match(column, 'words') runs in the source, so it must be a "
            f"condition of a WHERE clause (ANDed with any others) on a column of a live (not accelerated) dataset "
            f"of a search source such as elasticsearch")


def _count_only(tree: exp.Expression) -> str | None:
    """The output name of `SELECT count(*) FROM one_table [WHERE ...]`, else None."""
    if not isinstance(tree, exp.Select) or len(tree.expressions) != 1:
        return None
    if any(tree.args.get(k) for k in ("joins", "group", "having", "limit", "offset", "distinct", "with", "qualify")):
        return None
    proj = tree.expressions[0]
    inner = proj.this if isinstance(proj, exp.Alias) else proj
    if not (isinstance(inner, exp.Count) and isinstance(inner.this, exp.Star)):
        return None
    if any(isinstance(n, (exp.Subquery, exp.Window)) for n in tree.walk()) or not isinstance(getattr(tree.args.get("from_"), "this", None), exp.Table):
        return None
    return proj.alias_or_name


def _only_derived_tables(tree: exp.Expression) -> bool:
    """True when every subquery is a derived table (FROM/JOIN), with no subquery expressions."""
    subqueries = list(tree.find_all(exp.Subquery))
    return bool(subqueries) and not tree.find(exp.Exists) and all(
        isinstance(sq.parent, (exp.From, exp.Join)) for sq in subqueries)


def view_visible(name: str, policy: Policy, views: dict[str, exp.Expression]) -> bool:
    """A principal sees a view it is granted whose tables (and views) it may all see."""
    if not policy.allows(name):
        return False
    body = expand_views(views[name.lower()].copy(), views)
    return all(policy.allows(t.name) or _names_cte_in_scope(t) for t in body.find_all(exp.Table))


def expand_views(tree: exp.Expression, views: dict[str, exp.Expression], depth: int = 0) -> exp.Expression:
    """Replace references to pod views by their (recursively expanded) SELECT."""
    if depth > 16:
        raise SqlError("views nest more than 16 levels deep (a view that refers to itself?)")
    for table in list(tree.find_all(exp.Table)):
        name = table.name.lower()
        if table.db and table.db.lower() != "public" or name not in views or _names_cte_in_scope(table):
            continue
        body = expand_views(views[name].copy(), views, depth + 1)
        alias = table.alias or table.name
        table.replace(exp.Subquery(this=body, alias=exp.TableAlias(this=exp.to_identifier(alias))))
    return tree


def _names_cte_in_scope(table: exp.Table) -> bool:
    """Whether `table` names a CTE of a WITH that encloses it. A CTE defined elsewhere in the
    query (another subquery's WITH) is not in scope: the name is then a dataset or nothing, so
    it can never reach an engine's own tables (pg_settings, duckdb_databases, ...)."""
    name = table.name.lower()
    node: exp.Expression | None = table.parent
    while node is not None:
        with_ = node.args.get("with_")
        if isinstance(with_, exp.With) and any(c.alias_or_name.lower() == name for c in with_.expressions):
            return True
        node = node.parent
    return False


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


# -- federated scans -------------------------------------------------------------------------


def _federated_scans(tree: exp.Expression, bindings: dict[str, Binding]) -> list[TableScan]:
    """One TableScan per table reference, with its projection, filters and (rarely) limit."""
    scans: list[TableScan] = []
    for scope in traverse_scope(tree):
        for alias, source in scope.selected_sources.items():
            node, src = source
            if not isinstance(src, exp.Table) or src.name not in bindings:
                continue
            binding = bindings[src.name]
            register_as = f"__scan_{len(scans)}"
            columns = _columns_of(tree, alias, binding)
            filters, complete = _pushable_filters(scope, alias, src, binding.kind) if binding.kind != "arrow" else ([], False)
            limit, order = _pushable_limit(scope, alias, complete)
            scans.append(TableScan(register_as, binding, columns, filters, limit, order))
            src.set("this", exp.to_identifier(register_as, quoted=True))
    return scans


def _columns_of(tree: exp.Expression, alias: str, binding: Binding) -> list[str]:
    wanted = {c.name for c in tree.find_all(exp.Column) if c.table == alias and not _in_match(c)}
    cols = [n for n in binding.schema.names if n in wanted]
    return cols or binding.schema.names[:1]  # count(*) still needs rows: read the first column


def _in_match(node: exp.Expression) -> bool:
    parent = node.parent
    return parent is not None and _is_match(parent)


def _pushable_filters(scope: Scope, alias: str, table: exp.Table, kind: str) -> tuple[list[Filter], bool]:
    """The WHERE conjuncts of `scope` that are filters on `alias`, and whether that is all of them.

    A match() conjunct becomes a filter only on a live source, and leaves the WHERE clause
    (TRUE in its place): the engines cannot evaluate it, the source runs it."""
    select = scope.expression
    if not isinstance(select, exp.Select) or not select.args.get("where"):
        return [], True
    if not _preserved_side(select, table):
        return [], False
    out: list[Filter] = []
    complete = True
    for cond in _conjuncts(select.args["where"].this):
        if _is_match(cond):
            found = _match_filter(cond, alias) if kind == "source" else None
            if found is not None:
                out.append(found)
                cond.replace(exp.true())
            elif _match_column_table(cond) == alias:
                complete = False
            continue
        filters = _as_filters(cond, alias)
        complete = complete and bool(filters)
        out.extend(filters)
    return out, complete


def _match_column_table(cond: exp.Expression) -> str | None:
    args = cond.expressions
    return args[0].table if args and isinstance(args[0], exp.Column) else None


def _match_filter(cond: exp.Expression, alias: str) -> Filter | None:
    args = cond.expressions
    if len(args) == 2 and isinstance(args[0], exp.Column) and args[0].table == alias and _is_string(args[1]):
        return Filter(args[0].name, FULL_TEXT_OP, args[1].name)
    return None


def _preserved_side(select: exp.Select, table: exp.Table) -> bool:
    """Filters may be pushed only into a table that no outer join pads with NULLs."""
    joins = select.args.get("joins") or []
    for join in joins:
        side = (join.side or "").upper()
        if join.this is table:
            if side in ("LEFT", "FULL") or join.kind and join.kind.upper() in ("FULL",):
                return False
        elif side in ("RIGHT", "FULL"):
            return False
    return True


def _conjuncts(cond: exp.Expression) -> list[exp.Expression]:
    if isinstance(cond, exp.And):
        return _conjuncts(cond.left) + _conjuncts(cond.right)
    if isinstance(cond, exp.Paren):
        return _conjuncts(cond.this)
    return [cond]


_OPS = {exp.EQ: "=", exp.NEQ: "!=", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}


def _as_filters(cond: exp.Expression, alias: str) -> list[Filter]:
    """Filters for one conjunct, when it is `column op literal` on this table; else none."""
    def col(node: exp.Expression) -> str | None:
        return node.name if isinstance(node, exp.Column) and node.table == alias else None

    if cond.args.get("negate"):
        # sqlglot parses `x NOT LIKE p`, `x IS NOT NULL` (and friends) as the positive node with
        # negate=True: read it as NOT(positive) so the negation is never lost.
        positive = cond.copy()
        positive.set("negate", None)
        cond = exp.Not(this=positive)

    for kind, op in _OPS.items():
        if isinstance(cond, kind):
            left, right = cond.this, cond.expression
            if col(left) and _is_literal(right):
                return [Filter(col(left), op, literal_value(right))]
            if col(right) and _is_literal(left):
                return [Filter(col(right), _FLIP[op], literal_value(left))]
            return []
    if isinstance(cond, exp.Between) and col(cond.this) and _is_literal(cond.args["low"]) and _is_literal(cond.args["high"]):
        name = col(cond.this)
        return [Filter(name, ">=", literal_value(cond.args["low"])), Filter(name, "<=", literal_value(cond.args["high"]))]
    if isinstance(cond, exp.In) and col(cond.this) and cond.expressions and all(_is_literal(e) for e in cond.expressions):
        values = tuple(literal_value(e) for e in cond.expressions)
        if any(v is None for v in values):
            return []
        return [Filter(col(cond.this), "in", values)]
    if isinstance(cond, exp.Is) and col(cond.this) and isinstance(cond.expression, exp.Null):
        return [Filter(col(cond.this), "is_null")]
    if isinstance(cond, exp.Not):
        inner = cond.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Is) and col(inner.this) and isinstance(inner.expression, exp.Null):
            return [Filter(col(inner.this), "is_not_null")]
        if isinstance(inner, exp.In) and col(inner.this) and inner.expressions and all(_is_literal(e) for e in inner.expressions):
            values = tuple(literal_value(e) for e in inner.expressions)
            return [] if any(v is None for v in values) else [Filter(col(inner.this), "not_in", values)]
        if isinstance(inner, exp.Like) and col(inner.this) and _plain_pattern(inner.expression):
            return [Filter(col(inner.this), "not_like", inner.expression.name)]
        negated = _as_filter_tree(inner, alias)
        return [Filter("", "not", (negated,))] if negated is not None else []
    if isinstance(cond, exp.Or):
        either = _as_filter_tree(cond, alias)
        return [either] if either is not None else []
    if isinstance(cond, exp.Like) and col(cond.this) and _plain_pattern(cond.expression):
        return [Filter(col(cond.this), "like", cond.expression.name)]
    return []


def _as_filter_tree(cond: exp.Expression, alias: str) -> Filter | None:
    """`cond` (AND/OR/NOT over single-column predicates of `alias`) as one Filter, or None
    when any part of it is not one (a part left out would change an OR's or NOT's meaning)."""
    while isinstance(cond, exp.Paren):
        cond = cond.this
    if isinstance(cond, (exp.And, exp.Or)):
        op = "and" if isinstance(cond, exp.And) else "or"
        parts: list[Filter] = []
        for side in (cond.left, cond.right):
            sub = _as_filter_tree(side, alias)
            if sub is None:
                return None
            parts.extend(sub.value if sub.op == op else (sub,))  # flatten a AND (b AND c)
        return Filter("", op, tuple(parts))
    found = _as_filters(cond, alias) if not _is_match(cond) else []
    if not found:
        return None
    return found[0] if len(found) == 1 else Filter("", "and", tuple(found))


def _plain_pattern(node: exp.Expression) -> bool:
    """A LIKE pattern Filters can carry: a string without backslashes (the Filter contract has
    no escape character, while the public dialect's LIKE escapes with backslash)."""
    return _is_string(node) and "\\" not in node.name


def _pushable_limit(scope: Scope, alias: str, complete: bool) -> tuple[int | None, list[SortKey]]:
    """A LIMIT goes into the scan only for `SELECT cols FROM t [WHERE fully pushed]
    [ORDER BY columns of t] LIMIT n`; with ORDER BY, the scan must return the top n (the
    runtime passes the limit only to a source that says it can order)."""
    select = scope.expression
    if not isinstance(select, exp.Select) or not select.args.get("limit") or not complete:
        return None, []
    if scope.is_subquery or scope.is_cte or select.args.get("joins") or select.args.get("group") \
            or select.args.get("distinct") or select.args.get("having") \
            or select.find(exp.AggFunc) or select.find(exp.Window) or len(scope.selected_sources) != 1:
        return None, []
    outputs = {p.alias: p.this for p in select.expressions if isinstance(p, exp.Alias)}
    order: list[SortKey] = []
    for key in (select.args["order"].expressions if select.args.get("order") else []):
        column = key.this if isinstance(key, exp.Ordered) else None
        if isinstance(column, exp.Column) and not column.table:
            column = outputs.get(column.name)  # ORDER BY an output name
        if not (isinstance(column, exp.Column) and column.table == alias):
            return None, []
        order.append(SortKey(column.name, bool(key.args.get("desc")), bool(key.args.get("nulls_first"))))
    limit = _int_literal(select.args["limit"].expression)
    offset = _int_literal(select.args["offset"].expression) if select.args.get("offset") else 0
    return (None, []) if limit is None or offset is None else (limit + offset, order)


def _int_literal(node: exp.Expression | None) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
        return int(node.this)
    return None


def _is_string(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


def _is_literal(node: exp.Expression) -> bool:
    try:
        literal_value(node)
        return True
    except _NotLiteral:
        return False


class _NotLiteral(Exception):
    pass


def literal_value(node: exp.Expression) -> Any:
    """The Python value of a literal (numbers exact: integers as int, others as Decimal)."""
    if isinstance(node, exp.Paren):
        return literal_value(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Neg):
        value = literal_value(node.this)
        if isinstance(value, (int, decimal.Decimal)) and not isinstance(value, bool):
            return -value
        raise _NotLiteral()
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        try:
            return int(text)
        except ValueError:
            try:
                return decimal.Decimal(text)
            except decimal.InvalidOperation:
                raise _NotLiteral() from None
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        target = node.to.this
        text = node.this.this
        try:
            if target == exp.DataType.Type.DATE:
                return dt.date.fromisoformat(text)
            if target == exp.DataType.Type.TIMESTAMP:
                value = dt.datetime.fromisoformat(text)
                if value.tzinfo is None:
                    return value
            if target == exp.DataType.Type.TIMESTAMPTZ:
                value = dt.datetime.fromisoformat(text)  # without an offset: the session's zone, UTC
                return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            raise _NotLiteral() from None
    raise _NotLiteral()
