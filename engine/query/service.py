"""The query entry point: parse and bind, plan (with the plan cache), run on a route, account.

A query walks serving -> QueryService.query -> Routes -> connector or accelerator and back."""

from __future__ import annotations

import difflib
import functools
import itertools
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Hashable, Mapping, Sequence

import pyarrow as pa
from sqlglot import exp

from connectors.base import CALLER, Caller, CancelScope

from .. import tracing
from ..auth import ANONYMOUS, Principal
from ..cancel import ClientWatch, LiveScopes, guarded
from ..embedders import TOKEN_SINK
from ..errors import DatasetNotReady, Forbidden, ModelUnavailable, UnknownDataset
from ..refresh.dataset import DatasetRuntime
from ..search.functions import SearchFunctions, has_search
from ..task_history import SCHEMA as TASK_HISTORY_SCHEMA
from ..task_history import Task
from ..memory import datafusion_pool
from . import information_schema, pushdown, templates, value_sizes
from .accounting import Accounting
from .planner import Binding, Plan, PlanCache, RecordingResolver, cache_key, plan_query, view_visible
from .ai_functions import AiFunctions, has_ai
from .ai_functions import extract as extract_ai
from .coalesce import Coalescer, Follower, Leader
from .information_schema import TableInfo, catalog_rows, check_described, reads_catalog
from .policy import Policy, unknown
from .results_cache import CacheUse, ResultsCache, cacheable, kept
from .routes import Routes
from .sql_limits import SqlLimits
from .sql_policy import PUBLIC_DIALECT, bind_parameters, parameter_count, parse_query

CONSTANT_RESULT_BYTES = 64 << 10  # constant results up to this size are kept in the plan cache


class QueryService:
    """Plans and runs read-only queries over `datasets`, `views` and the runtime tables."""

    def __init__(self, datasets: Mapping[str, DatasetRuntime], views: Mapping[str, exp.Expression], routes: Routes,
                 accounting: Accounting, query_timeout: timedelta | None, max_rows: int | None,
                 scopes: LiveScopes, limits: SqlLimits = SqlLimits(), search: SearchFunctions | None = None,
                 results: ResultsCache | None = None, ai: AiFunctions | None = None,
                 coalescer: Coalescer | None = None,
                 catalog: Callable[[Principal], Sequence[TableInfo]] | None = None) -> None:
        self.datasets = datasets
        self.catalog = catalog  # the tables a principal sees, for information_schema (Runtime.tables)
        self.coalescer = coalescer  # runtime.params.coalesce_queries: identical queries at once run once
        self.ai = ai  # ai(), ai_classify(), ai_extract() columns
        self.results = results  # runtime.results_cache, when enabled
        self.views = views
        self.routes = routes
        self.accounting = accounting
        self.query_timeout = query_timeout
        self.max_rows = max_rows
        self.scopes = scopes  # every running query's, cancelled when the runtime stops
        self.limits = limits  # SQL size and nesting, checked before parsing
        self.plans = PlanCache()  # plans and result schemas by SQL text (see PlanCache)
        self.lifts = templates.Lifts(limits, self.plans.size)  # values written into the text (templates.Lifts)
        self.search = search  # vector_search / text_search / rrf (never cached: their rows change)

    def query(self, sql: str, principal: Principal = ANONYMOUS, *, protocol: str = "flight",
              params: Sequence[object] | None = None,
              client_gone: Callable[[], bool] | None = None, cache: CacheUse | None = None) -> pa.RecordBatchReader:
        """Plan and run one read-only query; the result streams. With the results cache on, a
        repeated query may be answered from it (`cache` says how, and can bypass it).

        Planning (which may infer a live source's schema) and a live source's first batch run
        under `guarded`: at the query's deadline, when `client_gone()` (e.g. a Flight call's
        `is_cancelled`) turns true or when the runtime stops, the source work is cancelled and
        the call raises. A plan from the cache and accelerated work need no guard."""
        span = tracing.new_span()  # its ai() calls and search embeddings are its children
        task = Task("query", protocol, principal.name, sql).in_span(span)  # TaskHistory redacts text and errors
        started = time.monotonic()
        policy = principal.policy
        timeout = _tighter(self.query_timeout.total_seconds() if self.query_timeout else None,
                           policy.limits.query_timeout_s if policy else None)
        deadline = started + timeout if timeout else None
        scope = self.scopes.track(CancelScope())
        # a client that goes away before the first batch cancels the query's work, wherever it runs
        watch = ClientWatch(client_gone, scope) if client_gone is not None else None
        caller = CALLER.set(Caller(principal.name, "query", deadline, scope))  # source statements: who, until when
        traced = tracing.enter(span)
        entered = False
        lead: Leader | None = None  # this query runs for identical ones arriving meanwhile (engine.query.coalesce)
        try:
            if policy is not None:
                policy.gate.enter()
                entered = True
            planned = self._planned_guarded(sql, params, scope, deadline, client_gone, principal, protocol)
            explain, plan = planned.explain, planned.plan
            task.datasets = sorted({b.dataset for b in plan.bindings if b.dataset})
            task.served_by = plan.served_by
            replan = lambda force: self.plan(planned.bound(), force, policy)  # noqa: E731
            cache = cache or CacheUse()
            reuse = self._result_key(sql, params, principal, planned)
            cached, remember = self._cached(reuse, explain, cache)
            if cached is not None:
                task.served_by = "cache"
            elif reuse is not None and plan.bindings and self.coalescer is not None and not cache.bypass:
                gone = lambda: scope.cancelled or bool(client_gone and client_gone())  # noqa: E731
                cached, lead = self._coalesced(reuse, deadline, gone, task)
                if cached is not None and remember is not None:
                    cached = remember(cached)
            if cached is not None:
                reader = cached
            elif explain:
                reader = _explain_reader(plan, pushdown.explain_lines(plan, self.datasets), policy)
            elif not plan.bindings and planned.constant:
                reader = self._constant_result(sql, params, lambda: self.routes.execute(plan, replan, task))
            elif plan.served_by in ("source", "mixed"):  # a live source may keep the first batch waiting
                reader = guarded(lambda: _prefetched(self.routes.execute(plan, replan, task)), scope, deadline,
                                 client_gone)
            else:
                reader = self.routes.execute(plan, replan, task)
            if cached is None and remember is not None:
                reader = remember(reader)
            if lead is not None:
                reader = lead.share(reader)
            if plan.ai and not explain:
                if self.ai is None:
                    raise ModelUnavailable("ai(): this runtime has no models")
                reader = self.ai.apply(reader, plan.ai, sql=sql, principal=principal.name, protocol=protocol,
                                       deadline=deadline, cancelled=lambda: scope.cancelled,
                                       gate=policy.gate if policy else None, span=span)
            if watch is not None:
                reader = watch.until_first_batch(reader)
        except Exception as e:
            if lead is not None:
                lead.abandon()
            if watch is not None:
                watch.stop()
                e = watch.reason(e)
            if entered:
                policy.gate.leave()
            public = self.accounting.public_error(e, policy.sanitize if policy else None)
            self.accounting.finish(task, started, 0, public)
            raise public from None
        finally:
            tracing.leave(traced)
            CALLER.reset(caller)
        max_rows = _tighter(self.max_rows, policy.limits.max_rows if policy else None)
        return self.accounting.accounted(reader, task, started, deadline, max_rows, str(timedelta(seconds=timeout)) if timeout else "-",
                                         sanitize=policy.sanitize if policy else None,
                                         finished=policy.gate.leave if policy else None)

    def _result_key(self, sql: str, params: Sequence[object] | None, principal: Principal,
                    planned: Planned) -> tuple[Hashable, tuple] | None:
        """(key, generations) under which the result may be reused (results cache, coalescing): the
        principal, SQL text and parameters, and the generations of the data read; None when it
        must be computed."""
        plan = planned.plan
        if (self.results is None and self.coalescer is None) or planned.explain or plan.ai:
            return None
        if any(b.kind in ("memory", "catalog") for b in plan.bindings) or not planned.cacheable:
            return None
        generations = tuple((b.dataset, self.datasets[b.dataset.lower()].generation if b.kind != "source" else "live")
                            for b in plan.bindings if b.dataset)
        key = cache_key("result", principal.name, sql, tuple((type(p), p) for p in params) if params else None)
        return (key, generations) if key is not None else None

    def _coalesced(self, reuse: tuple[Hashable, tuple], deadline: float | None, cancelled: Callable[[], bool],
                   task: Task) -> tuple[pa.RecordBatchReader | None, Leader | None]:
        """(the result of the identical query running now, or None: run it; and this query's
        Leader when it runs for others that may come). A query that waits is served by the shared
        run, also when it stops waiting (deadline, client gone), unless it must run on its own."""
        turn = self.coalescer.enter(reuse)
        if not isinstance(turn, Follower):
            return None, turn
        own, task.served_by = task.served_by, "shared"
        shared = turn.wait(deadline, cancelled)
        if shared is None:
            task.served_by = own
        return shared, None

    def _cached(self, reuse: tuple[Hashable, tuple] | None, explain: bool, use: CacheUse):
        """(the cached result or None, a function that records a fresh one or None)."""
        if self.results is None or explain:
            use.status = "UNCACHEABLE" if self.results is not None else use.status
            return None, None
        if reuse is None:
            use.status = "UNCACHEABLE"
            return None, None
        key, generations = reuse
        if use.bypass:
            use.status = "BYPASS"
        else:
            hit = self.results.get(key, generations)
            if hit is not None:
                use.status = "HIT"
                return hit, None
            use.status = "MISS"
        return None, lambda reader: self.results.recording(key, generations, reader)

    def query_schema(self, sql: str, params: Sequence[object] | None = None, principal: Principal = ANONYMOUS,
                     client_gone: Callable[[], bool] | None = None) -> pa.Schema:
        """The result schema, from the query's own plan (the one DoGet then reuses) without
        reading data. Parameters are planned as `params` when given (their types reach the
        schema), else as NULLs. Cached by SQL text, parameters and policy while its tables
        resolve the same way. A client that goes meanwhile (`client_gone()`) cancels the
        planning's source work."""
        policy = principal.policy
        key = cache_key("schema", _owner(policy), sql, tuple((type(p), p) for p in params) if params is not None else None)
        template_key = _template_key(sql, params, policy, self.plans.size)
        if template_key is not None:  # the same schema for any values of these kinds
            key = ("schema", *template_key)
        cached = self.plans.get(key, self._resolver(frozenset())) if key is not None else None
        if cached is not None:
            return cached
        lift = self.lifts.get(sql) if not params else None
        lifted_key = _template_key(lift.sql, lift.values, policy, self.plans.size) if lift is not None else None
        if lifted_key is not None:  # values in the text: the lifted query's schema serves any values
            cached = self.plans.get(("schema", *lifted_key), self._resolver(frozenset()))
            if cached is not None:
                return cached
        tree, explain = parse_query(sql, self.limits)
        if explain:
            return _explain_reader(Plan("federated", "", [])).schema
        if params is None:
            params = [None] * parameter_count(tree)
        deadline = time.monotonic() + self.query_timeout.total_seconds() if self.query_timeout else None
        scope = self.scopes.track(CancelScope())
        caller = CALLER.set(Caller(principal.name, "query", deadline, scope))
        try:
            plan = self._planned_guarded(sql, params, scope, deadline, client_gone, principal, "internal",
                                         schema_only=True).plan
            schema = self.routes.schema(plan)
            for call in plan.ai:  # a model's answer is text
                schema = schema.set(call.column, pa.field(schema.field(call.column).name, pa.string()))
        except Exception as e:
            raise self.accounting.public_error(e, policy.sanitize if policy else None) from None
        finally:
            CALLER.reset(caller)
        lookups = self.plans.lookups_of(_plan_key(sql, params, policy))
        if template_key is not None:  # a schema by kinds only when a template was made (else None)
            lookups = self.plans.lookups_of(template_key) if self.plans.get(template_key, self._resolver(frozenset())) else None
        if lifted_key is not None and self.plans.get(lifted_key, self._resolver(frozenset())):
            key, lookups = ("schema", *lifted_key), self.plans.lookups_of(lifted_key)
        if lookups is not None and key is not None:
            self.plans.put(key, schema, lookups)
        return schema

    def explain(self, sql: str, principal: Principal = ANONYMOUS) -> str:
        tree, _ = parse_query(sql, self.limits)
        return self.plan(tree, policy=principal.policy).explain()

    def parameter_count(self, sql: str) -> int:
        if self.lifts.peek(sql) is not None:  # it was lifted, so it has no parameters of its own
            return 0
        tree, _ = parse_query(sql, self.limits)
        return parameter_count(tree)

    def plan(self, tree: exp.Expression, force_source: frozenset[str] = frozenset(), policy: Policy | None = None) -> Plan:
        return plan_query(tree, self._resolver(force_source), self.views, policy)

    def source_reader(self, ds: DatasetRuntime, condition: str | None) -> pa.RecordBatchReader:
        """The rows a refresh of `ds` loads: `refresh_sql` (or all rows), narrowed by `condition`."""
        base = ds.acceleration.refresh_sql or f'SELECT * FROM "{ds.name}"'
        tree, _ = parse_query(base, self.limits)
        if condition and ds.acceleration.refresh_sql:
            tree = exp.select("*").from_(exp.Subquery(this=tree, alias=exp.TableAlias(this=exp.to_identifier("r"))))
        if condition:  # on the table itself when it can be, so the condition reaches the source's scan
            tree = tree.where(condition, dialect=PUBLIC_DIALECT)
        return self.routes.from_source(self.plan(tree, force_source=frozenset(d.name for d in self.datasets.values())))

    def _constant_result(self, sql: str, params: Sequence[object] | None,
                         run: Callable[[], pa.RecordBatchReader]) -> pa.RecordBatchReader:
        """The result of a constant query (no tables, no functions but casts: `SELECT 1`, an
        agent's liveness probe), computed once and then served from the plan cache while small."""
        key = cache_key("constant", sql, tuple((type(p), p) for p in params) if params else None)
        cached = self.plans.get(key, self._resolver(frozenset())) if key is not None else None
        if cached is not None:
            return pa.RecordBatchReader.from_batches(cached.schema, cached.to_batches())
        reader = run()
        if key is None:
            return reader
        return kept(reader, CONSTANT_RESULT_BYTES, lambda table: self.plans.put(key, table, ()))

    def _resolver(self, force_source: frozenset[str]):
        return lambda db, name: self._resolve(db, name, force_source)

    def _planned_guarded(self, sql: str, params: Sequence[object] | None, scope: CancelScope, deadline: float | None,
                         client_gone: Callable[[], bool] | None, principal: Principal = ANONYMOUS,
                         protocol: str = "internal", schema_only: bool = False) -> Planned:
        """`_planned`, from the cache at once, else under `guarded` (resolving a live dataset may
        infer its schema from the source)."""
        key = _plan_key(sql, params, principal.policy)
        cached = self.plans.get(key, self._resolver(frozenset())) if key is not None else None
        if cached is not None:
            return cached
        templated = self._templated(sql, params, principal.policy)
        if templated is not None:
            return templated
        if not params:  # values in the text: planned from the lifted query's template when it has one
            lift = self.lifts.get(sql)
            templated = self._templated(lift.sql, lift.values, principal.policy) if lift else None
            if templated is not None:
                return templated
        return guarded(lambda: self._planned(sql, params, principal, protocol, schema_only), scope, deadline,
                       client_gone)

    def _planned(self, sql: str, params: Sequence[object] | None, principal: Principal = ANONYMOUS,
                 protocol: str = "internal", schema_only: bool = False) -> Planned:
        """Parse, bind and plan `sql`, or reuse what planning the same text and parameters gave
        while its tables resolve the same way (planning costs milliseconds; DoGet repeats it).
        A principal with a policy has plans of its own: never another principal's. Search table
        functions run here (their rows become tables of the plan), so a query with them is never
        cached; `schema_only` gives them no rows (no model call)."""
        policy = principal.policy
        resolve = self._resolver(frozenset())
        key = _plan_key(sql, params, policy)
        if key is not None:
            cached = self.plans.get(key, resolve)
            if cached is not None:
                return cached
        tree, explain = parse_query(sql, self.limits)
        templated = self._template(lambda: tree, explain, sql, params, policy, resolve)
        lift = self.lifts.get(sql) if templated is None and not params else None
        if lift is not None:
            templated = self._template(lambda: parse_query(lift.sql, self.limits)[0], False, lift.sql, lift.values,
                                       policy, resolve)
        if templated is not None:
            return templated
        catalog = reads_catalog(tree)
        if catalog:  # the caller's own catalog, made now: never cached
            rows = catalog_rows(self.catalog(principal) if self.catalog is not None else ())
            check_described(tree, rows, lambda name: name.lower() in self.datasets
                            and (policy is None or policy.allows(name)))
            key, resolve = None, _with_catalog_rows(resolve, rows)
        tree = bind_parameters(tree, params)
        if self.search is not None and has_search(tree):
            sink = None
            if policy is not None:
                for name in self.search.datasets_of(tree):
                    _searchable(policy, name)
                if not schema_only:
                    policy.gate.check_tokens()  # the query's embedding calls count toward the budget
                sink = TOKEN_SINK.set(policy.gate.spend)
            try:
                tree, rows = self.search.expand(tree, principal.name, protocol, schema_only)
            finally:
                if sink is not None:
                    TOKEN_SINK.reset(sink)
            key = None
            resolve = _with_search_rows(resolve, rows)
        recorder = RecordingResolver(resolve)
        tree, plan = self._plan_bound(tree, recorder, policy)
        planned = Planned(tree, explain, plan, cacheable(tree))
        if key is not None:
            self.plans.put(key, planned, recorder)
        return planned

    def _plan_bound(self, tree: exp.Expression, resolve, policy: Policy | None) -> tuple[exp.Expression, Plan]:  # type: ignore[no-untyped-def]
        """Plan a parsed tree whose parameters are bound (model calls taken out first)."""
        calls: list = []
        if has_ai(tree):
            tree, calls = extract_ai(tree)
        value_sizes.check(tree, datafusion_pool(self.accounting.memory_budget))
        try:
            plan = plan_query(tree, resolve, self.views, policy)
        except UnknownDataset as e:
            if e.table is None:
                raise
            raise UnknownDataset(e.message + self._table_hint(e.table, policy)) from None
        plan.ai = calls
        return tree, plan

    def _table_hint(self, name: str, policy: Policy | None) -> str:
        """What to write instead of an unknown table: a visible one of a close name, or how to
        list them. A name the principal may not see gets the hint an unknown one gets (it
        depends only on the name and the tables the principal sees)."""
        schema, _, table = name.rpartition(".")
        if schema.lower() == "pg_catalog" or table.lower().startswith("pg_"):
            return ("; PostgreSQL's catalog is not here: SHOW TABLES or information_schema.tables lists the "
                    "tables, DESCRIBE <table> or information_schema.columns their columns")
        visible = [ds.name for ds in self.datasets.values() if policy is None or policy.allows(ds.name)]
        visible += [v for v in self.views if policy is None or view_visible(v, policy, dict(self.views))]
        by_lower = {n.lower(): n for n in visible}
        close = difflib.get_close_matches(table.lower(), list(by_lower), n=3, cutoff=0.6)
        if close:
            return "; did you mean " + " or ".join(f"'{by_lower[c]}'" for c in close) + "?"
        return "; SHOW TABLES lists the tables"

    def _templated(self, sql: str, params: Sequence[object] | None, policy: Policy | None) -> Planned | None:
        """The query planned from its parameterised template, when there is one (see
        `templates`): no planning, only the values spliced into the template's SQL."""
        key = _template_key(sql, params, policy, self.plans.size)
        entry = self.plans.get(key, self._resolver(frozenset())) if key is not None else None
        if not entry:
            return None
        tree, explain, template, volatile_free = entry
        return Planned(tree, explain, template.instantiate(params), volatile_free, params)

    def _template(self, tree_of: Callable[[], exp.Expression], explain: bool, sql: str,
                  params: Sequence[object] | None, policy: Policy | None, resolve) -> Planned | None:  # type: ignore[no-untyped-def]
        """Plan the query (`tree_of()`, parsed only when needed) once with sentinel parameters
        and keep the template it gives (or that it gives none: planned with its values from
        then on); the query from it, or None."""
        key = _template_key(sql, params, policy, self.plans.size)
        if key is None:
            return None
        known = self.plans.get(key, resolve)
        if known is not None:
            return self._templated(sql, params, policy) if known else None
        tree = tree_of()
        if (self.search is not None and has_search(tree)) or reads_catalog(tree):
            self.plans.put(key, False, ())  # search rows and the catalog change: never a template
            return None
        values = templates.sentinels(key[-1])
        recorder = RecordingResolver(resolve)
        try:
            _, plan = self._plan_bound(bind_parameters(tree.copy(), values), recorder, policy)
            template = templates.template_of(plan, sql, values)
        except Exception:  # noqa: BLE001 - planned with its values below, where the error surfaces
            template = None
        volatile_free = cacheable(tree)
        self.plans.put(key, (tree, explain, template, volatile_free) if template is not None else False, recorder)
        if template is None:
            return None
        return Planned(tree, explain, template.instantiate(params), volatile_free, params)

    def _resolve(self, db: str | None, name: str, force_source: frozenset[str]) -> Binding | None:
        schema = (db or "public").lower()
        if schema == "runtime":
            if name.lower() == "task_history":
                return Binding("runtime.task_history", TASK_HISTORY_SCHEMA, "memory")
            return None
        if schema == information_schema.SCHEMA_NAME:  # a query's are resolved by _with_catalog_rows
            raise information_schema.not_a_view(name)
        if schema != "public":
            return None
        ds = self.datasets.get(name.lower())
        if ds is None:
            return None
        if ds.accelerated and ds.name not in force_source:
            if ds.loaded_once:
                kind = ds.acceleration.engine
                return Binding(ds.name, ds.schema(), kind, ds.accelerator.instance_id, ds.name)
            if ds.config.ready_state == "on_load":
                raise DatasetNotReady(f"dataset '{ds.name}' is still loading ({ds.status}); "
                                      f"try again shortly, or set ready_state: on_registration to query the source meanwhile"
                                      + (f"; last error: {ds.last_error}" if ds.last_error else ""))
        return Binding(ds.name, ds.schema(), "source", None, ds.name)


def _with_catalog_rows(resolve, rows: Mapping[str, pa.Table]):  # type: ignore[no-untyped-def]
    """`resolve`, knowing the information_schema tables as the caller sees them."""
    def resolved(db: str | None, name: str) -> Binding | None:
        if (db or "").lower() != information_schema.SCHEMA_NAME:
            return resolve(db, name)
        found = rows.get(name.lower())
        return Binding(f"{information_schema.SCHEMA_NAME}.{name.lower()}", found.schema, "catalog", rows=found) \
            if found is not None else None

    return resolved


def _with_search_rows(resolve, rows: Mapping[str, pa.Table]):  # type: ignore[no-untyped-def]
    """`resolve`, knowing the search calls' results by the names they were given in the query."""
    def resolved(db: str | None, name: str) -> Binding | None:
        found = rows.get(name) if db is None else None
        if found is not None:
            return Binding(name, found.schema, "search", rows=found)
        return resolve(db, name)

    return resolved


@dataclass(frozen=True)
class Planned:
    """A planned query: its tree, whether it is EXPLAIN, its plan, and whether its result depends
    only on its data (`results_cache.cacheable`). A plan from a template keeps the template's
    shared tree, its parameters unbound (`params`): `bound()` binds a copy when one is needed."""

    tree: exp.Expression
    explain: bool
    plan: Plan
    cacheable: bool
    params: Sequence[object] | None = None

    def bound(self) -> exp.Expression:
        return bind_parameters(self.tree.copy(), self.params) if self.params is not None else self.tree

    @functools.cached_property
    def constant(self) -> bool:
        """Whether the query always gives the same rows (see `_constant`): worked out once per
        plan (plans are cached), not on every `SELECT 1`."""
        return _constant(self.tree)


def _constant(tree: exp.Expression) -> bool:
    """Whether `tree` always gives the same rows: no table of any kind and no function call
    (now(), random() and table functions included) other than a cast."""
    for node in tree.walk():
        if isinstance(node, (exp.Table, exp.Unnest, exp.Lateral, exp.Placeholder)):
            return False
        if isinstance(node, exp.Func) and not isinstance(node, (exp.Cast, exp.TryCast)):
            return False
    return True


def _plan_key(sql: str, params: Sequence[object] | None, policy: Policy | None = None):
    """The plan cache key of a query, its bound parameters and whose policy planned it (None:
    not cacheable)."""
    return cache_key("query", _owner(policy), sql, tuple((type(p), p) for p in params) if params else None)


def _template_key(sql: str, params: Sequence[object] | None, policy: Policy | None, cache_size: int):
    """The plan cache key of the query's parameterised template (None: no template: the
    parameters are not all integers and strings, or the plan cache is off)."""
    kinds = templates.shape(params)
    if kinds is None or cache_size <= 0:
        return None
    return cache_key("template", _owner(policy), sql, kinds)


def _searchable(policy: Policy, dataset: str) -> None:
    """Search runs in the accelerator's index, around the tree the policy rewrites: a principal
    may search a dataset it sees whole, never one under a row filter or column rules."""
    rule = policy.rule(dataset)
    if rule is None:
        raise unknown(dataset)
    if rule.restricts:
        raise Forbidden(f"search over '{dataset}' is not available to principal '{policy.principal}': it has a row "
                        f"filter or column rules there (search indexes hold every row and value)")


def _owner(policy: Policy | None) -> str | None:
    return policy.principal if policy is not None else None


def _tighter(a: float | int | None, b: float | int | None):
    """The smaller limit of two, either of which may be absent."""
    return b if a is None else a if b is None else min(a, b)


def _explain_reader(plan: Plan, extra: Sequence[str] = (), policy: Policy | None = None) -> pa.RecordBatchReader:
    lines = plan.explain().splitlines() + list(extra) if plan.sql else []
    if policy is not None:  # the rules show as applied; the hashing salt never does
        lines = [line.replace(policy.salt, "<salt>") for line in lines]
    table = pa.table({"plan_type": pa.array(["satchel"] * len(lines), pa.string()),
                      "plan": pa.array(lines, pa.string())})
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


def _prefetched(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """`reader` with its first batch already read (the wait a live source makes is over)."""
    try:
        first = [reader.read_next_batch()]
    except StopIteration:
        first = []
    return pa.RecordBatchReader.from_batches(reader.schema, itertools.chain(first, reader))
