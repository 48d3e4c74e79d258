"""The Runtime: owns datasets, accelerators and refreshes, and answers every query.

Every entry point (Flight SQL, HTTP, CLI) calls `Runtime.query(sql, principal)` and gets a
streaming `pyarrow.RecordBatchReader`.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pyarrow as pa
from sqlglot import exp

from accel.arrow import ArrowAccelerator
from accel.duckdb import DuckDBAccelerator
from accel.refresh import RefreshScheduler, Schedule
from connectors.base import CALLER, FULL_TEXT_OP, Caller, CancelScope, Counts, Filter, FilterSupport, OrdersTopN

from .cancel import LiveScopes, guarded
from .config import Pod
from .auth_throttle import AuthThrottle
from .datasets import DatasetRuntime, RefreshResult
from .errors import (ConnectorError, DatasetNotReady, NotFound, Overloaded, QueryTimeout,
                     ResourceExhausted, SatchelError, SqlError, Unauthenticated)
from . import source_pushdown
from .executor import duckdb_schema, federated_schema, run_federated
from .memory import DUCKDB_SHARE, budget_bytes, datafusion_pool, resource_exhausted_text
from .metrics import Metrics
from .planner import Binding, Plan, PlanCache, RecordingResolver, TableScan, cache_key, plan_query
from .redact import install_log_redaction, redact
from .sql_policy import PUBLIC_DIALECT, bind_parameters, parameter_count, parse_query
from .task_history import SCHEMA as TASK_HISTORY_SCHEMA
from .task_history import Task, TaskHistory, started_at

log = logging.getLogger("satchel.runtime")
FIRST_LOAD_RETRY_BASE_S = 1.0  # a dataset whose first load failed is retried after 1s, 2s, 4s ... 60s
FIRST_LOAD_RETRY_MAX_S = 60.0
CATALOG = "spice"
TASK_HISTORY_DESCRIPTION = "One row per query and refresh run by this sidecar."


@dataclass(frozen=True)
class Principal:
    name: str


ANONYMOUS = Principal("anonymous")


@dataclass(frozen=True)
class TableInfo:
    catalog: str
    schema: str
    name: str
    table_type: str
    arrow_schema: pa.Schema
    primary_key: tuple[str, ...]
    description: str | None


class Runtime:
    """Datasets, accelerators, the refresh scheduler and the query entry point."""

    def __init__(self, pod: Pod, data_dir: str | None = None, memory_limit: str | None = None) -> None:
        self.pod = pod
        self.metrics = Metrics()
        self.secrets = pod.secret_values
        install_log_redaction(self.secrets)
        th = pod.runtime.task_history
        self.task_history = TaskHistory(th.enabled, th.retention_period, secrets=self.secrets)
        self.data_dir = Path(data_dir or os.environ.get("SATCHEL_DATA_DIR") or Path(pod.base_dir) / ".satchel")
        self.memory_limit = memory_limit or os.environ.get("SATCHEL_MEMORY_LIMIT") or pod.runtime.params.memory_limit
        self.memory_budget = budget_bytes(self.memory_limit)
        self.query_timeout = pod.runtime.params.query_timeout or None  # 0s: no deadline
        self.max_rows = pod.runtime.params.max_rows
        self._api_keys = tuple(k for k in pod.runtime.auth.api_key.keys) if pod.runtime.auth.api_key.enabled else ()
        self.auth_throttle = AuthThrottle()
        self.arrow = ArrowAccelerator()
        self.duckdb_instances: dict[str, DuckDBAccelerator] = {}
        self.datasets: dict[str, DatasetRuntime] = {}
        for ds in pod.datasets:
            self.datasets[ds.name.lower()] = DatasetRuntime(ds, pod.base_dir, self._accelerator_for(ds), self.metrics,
                                                            self.secrets, pod.name)
        self.views: dict[str, exp.Expression] = {}
        self._plans = PlanCache()  # plans and result schemas by SQL text (see PlanCache)
        for view in pod.views:
            tree, _ = parse_query(view.sql)
            self.views[view.name.lower()] = tree
        self.scheduler = RefreshScheduler()
        self.scopes = LiveScopes()  # every running query's and refresh's, cancelled by stop()
        self._first_load_failures: dict[str, int] = {}
        self._demand_lock = threading.Lock()
        self._demanded: set[str] = set()  # datasets with an on-demand refresh queued, not started
        self._demand_ended: dict[str, float] = {}  # time.monotonic() the last on-demand refresh ended
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Reopen file-mode data, then load the rest and schedule refreshes in the background."""
        now = time.time()
        for ds in self.datasets.values():
            if not ds.accelerated:
                continue
            acc = ds.acceleration
            schedule = Schedule(acc.refresh_check_interval, acc.refresh_cron,
                                acc.refresh_jitter_max if acc.refresh_jitter_enabled else None)
            reopened = ds.adopt_existing()
            self.scheduler.add(ds.name, schedule, lambda ds=ds: self._refresh_job(ds), None if reopened else now)
            if acc.retention_check_enabled and acc.retention_check_interval:
                self.scheduler.add(f"{ds.name}#retention", Schedule(acc.retention_check_interval),
                                   ds.apply_retention)
        self.scheduler.start()
        self._started = True

    def stop(self, timeout: float | None = None) -> None:
        """Cancel every query's and refresh's source work, wait up to `timeout` seconds for the
        refreshes to end, close the sources and accelerators."""
        self.scopes.cancel_all()
        if not self.scheduler.stop(timeout):
            log.warning("refreshes still running after %ss; stopping without them", timeout)
            return  # their accelerators are in use: the process exit closes them
        for ds in self.datasets.values():
            ds.close()
        for inst in self.duckdb_instances.values():
            inst.close()

    def ready(self) -> bool:
        """True when every accelerated dataset with `ready_state: on_load` has loaded once."""
        return all(ds.loaded_once or ds.config.ready_state == "on_registration" for ds in self.datasets.values())

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return True
            time.sleep(0.05)
        return self.ready()

    def refresh(self, name: str, wait: bool = False, timeout: float = 600) -> dict:
        """Trigger a refresh now; with `wait`, block until it finishes and raise its error."""
        ds = self._dataset(name)
        if not ds.accelerated:
            raise SqlError(f"dataset '{ds.name}' is not accelerated; there is nothing to refresh")
        if not wait:
            return self._refresh_on_demand(ds)
        started = time.monotonic()
        try:
            result = self._run_refresh(ds)
        except Exception as e:
            # visible in task history like a scheduled refresh's failure, and a clean public error
            self._record_refresh(ds, started, None, ds.last_error or str(e))
            if isinstance(e, SatchelError):
                raise
            raise ConnectorError(f"refresh of '{ds.name}' failed: {ds.last_error}") from None
        self._record_refresh(ds, started, result.rows, None)
        return {"dataset": ds.name, "status": "done", "rows": result.rows, "mode": result.mode,
                "duration_s": result.duration_s}

    def _refresh_on_demand(self, ds: DatasetRuntime) -> dict:
        """A refresh asked for by a client: it joins one pending or running, else one starts, at
        most once per `refresh_min_interval` after the last on-demand one ended (Overloaded)."""
        with self._demand_lock:
            if ds.name in self._demanded:
                return {"dataset": ds.name, "status": "queued", "joined": True}
            if self.scheduler.is_running(ds.name):
                return {"dataset": ds.name, "status": "already running", "joined": True}
            interval = ds.acceleration.refresh_min_interval.total_seconds()
            wait = self._demand_ended.get(ds.name, -math.inf) + interval - time.monotonic()
            if wait > 0:
                raise Overloaded(f"dataset '{ds.name}' was refreshed on demand less than {interval:g}s ago "
                                 f"(acceleration.params.refresh_min_interval); retry in {math.ceil(wait)}s",
                                 retry_after=wait)
            if not self.scheduler.run_now(ds.name):  # it started meanwhile
                return {"dataset": ds.name, "status": "already running", "joined": True}
            self._demanded.add(ds.name)
        return {"dataset": ds.name, "status": "queued", "joined": False}

    def _refresh_job(self, ds: DatasetRuntime) -> None:
        started = time.monotonic()
        with self._demand_lock:  # this run serves the on-demand request pending, if any
            demanded = ds.name in self._demanded
            self._demanded.discard(ds.name)
        try:
            result = self._run_refresh(ds)
            log.info("dataset %s: %s refresh loaded %d rows in %.2fs", ds.name, result.mode, result.rows,
                     result.duration_s)
            self._record_refresh(ds, started, result.rows, None)
        except Exception:
            self._record_refresh(ds, started, None, ds.last_error)
            if ds.loaded_once:
                log.error("dataset %s: refresh failed, keeping the last good data: %s", ds.name, ds.last_error)
                return
            # Never loaded: do not wait for the next scheduled refresh (or forever, for a
            # load-once dataset) -- try the first load again with a growing delay.
            failures = self._first_load_failures.get(ds.name, 0) + 1
            self._first_load_failures[ds.name] = failures
            delay = min(FIRST_LOAD_RETRY_MAX_S, FIRST_LOAD_RETRY_BASE_S * 2 ** (failures - 1))
            self.scheduler.retry_at(ds.name, time.time() + delay)
            log.error("dataset %s: first load failed (%d time(s)); retrying in %.0fs: %s", ds.name, failures, delay,
                      ds.last_error)
        else:
            self._first_load_failures.pop(ds.name, None)
        finally:
            if demanded:
                with self._demand_lock:
                    self._demand_ended[ds.name] = time.monotonic()

    def _run_refresh(self, ds: DatasetRuntime) -> RefreshResult:
        """Refresh `ds` now, within its refresh_timeout (at the deadline, or when the runtime
        stops, its source work is cancelled); its source statements are the runtime's, of kind
        refresh, and get the time left as their own limit."""
        timeout = ds.acceleration.refresh_timeout.total_seconds() or None  # 0s: no deadline
        scope = self.scopes.track(CancelScope())
        stop = threading.Event()
        scope.add(stop.set)  # no retry after a cancel
        timer = threading.Timer(timeout, scope.cancel) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        deadline = time.monotonic() + timeout if timeout else None
        caller = CALLER.set(Caller("runtime", "refresh", deadline, scope))
        try:
            return ds.refresh(self._source_reader, stop)
        finally:
            if timer is not None:
                timer.cancel()
            CALLER.reset(caller)

    def _record_refresh(self, ds: DatasetRuntime, started: float, rows: int | None, error: str | None) -> None:
        """One task-history row for a refresh that began at `started` (time.monotonic()) and just ended."""
        self.task_history.record(Task("refresh", "internal", "runtime", f"refresh {ds.name}", [ds.name], "source",
                                      started_at=started_at(started), duration_ms=(time.monotonic() - started) * 1000,
                                      rows=rows, error=error))

    # -- auth --------------------------------------------------------------------------------

    @property
    def auth_enabled(self) -> bool:
        return bool(self._api_keys)

    def authenticate(self, api_key: str | None, client: str = "unknown", protocol: str = "http") -> Principal:
        """The principal of `api_key`. A `client` (address) that keeps sending wrong keys is refused
        with `overloaded` and a retry time, before its key is checked (see AuthThrottle)."""
        if not self.auth_enabled:
            return ANONYMOUS
        wait = self.auth_throttle.retry_after(client)
        if wait is not None:
            self.metrics.auth_throttled.labels(protocol).inc()
            raise Overloaded(f"too many wrong API keys from this client; retry after {math.ceil(wait)} s",
                             retry_after=wait)
        if api_key:
            for i, key in enumerate(self._api_keys):
                if hmac.compare_digest(api_key.encode(), key.encode()):
                    self.auth_throttle.succeeded(client)
                    return Principal(f"api_key_{i + 1}")
            self.auth_throttle.failed(client)
        raise Unauthenticated("a valid API key is required (HTTP X-API-Key header, or Flight 'Authorization: Bearer <key>')")

    # -- queries -----------------------------------------------------------------------------

    def query(self, sql: str, principal: Principal = ANONYMOUS, *, protocol: str = "flight",
              params: Sequence[object] | None = None,
              client_gone: Callable[[], bool] | None = None) -> pa.RecordBatchReader:
        """Plan and run one read-only query; the result streams.

        Planning and the first batch (where a source may keep it waiting) run under `guarded`:
        at the query's deadline, when `client_gone()` (e.g. a Flight call's `is_cancelled`) turns
        true or when the runtime stops, its source work is cancelled and the call raises."""
        task = Task("query", protocol, principal.name, sql)  # TaskHistory redacts text and errors
        started = time.monotonic()
        deadline = started + self.query_timeout.total_seconds() if self.query_timeout else None
        scope = self.scopes.track(CancelScope())
        caller = CALLER.set(Caller(principal.name, "query", deadline, scope))  # source statements: who, until when
        try:
            reader = guarded(lambda: self._begin(sql, params, task), scope, deadline, client_gone)
        except Exception as e:
            public = self._public_error(e)
            self._finish(task, started, 0, public)
            raise public from None
        finally:
            CALLER.reset(caller)
        return self._accounted(reader, task, started)

    def _begin(self, sql: str, params: Sequence[object] | None, task: Task) -> pa.RecordBatchReader:
        """Plan and start `sql` with its first batch read: the part of a query that may wait on a
        source (schema inference while planning, a live scan), run under `guarded`."""
        tree, explain, plan = self._planned(sql, params)
        task.datasets = sorted({b.dataset for b in plan.bindings if b.dataset})
        task.served_by = plan.served_by
        if explain:
            return _explain_reader(plan, source_pushdown.explain_lines(plan, self.datasets))
        return _prefetched(self._execute(plan, tree, task))

    def refused(self, error: BaseException, *, protocol: str, principal: str | None, text: str,
                started: float, task: str = "request") -> SatchelError:
        """Account a request refused before it ran (auth, parsing, planning, a bad protocol
        message): one task-history row and one failure metric under the code the client gets,
        which is returned."""
        public = self._public_error(error)
        row = Task(task, protocol, principal, text, started_at=started_at(started))
        self._finish(row, started, 0, public)
        return public

    def explain(self, sql: str) -> str:
        tree, _ = parse_query(sql)
        return self.plan(tree).explain()

    def query_schema(self, sql: str, principal: Principal = ANONYMOUS,
                     params: Sequence[object] | None = None) -> pa.Schema:
        """The result schema, from the query's own plan (the one DoGet then reuses) without
        reading data: DuckDB runs it with LIMIT 0, DataFusion plans it over empty tables.
        Parameters are planned as `params` when given (their types reach the schema), else as
        NULLs. Cached by SQL text and parameters while its tables resolve the same way."""
        key = cache_key("schema", sql, tuple((type(p), p) for p in params) if params is not None else None)
        cached = self._plans.get(key, self._resolver(frozenset())) if key is not None else None
        if cached is not None:
            return cached
        tree, explain = parse_query(sql)
        if explain:
            return _explain_reader(Plan("federated", "", [])).schema
        if params is None:
            params = [None] * parameter_count(tree)

        def planned_schema() -> pa.Schema:  # planning may infer a live source's schema: guarded
            _, _, plan = self._planned(sql, params)
            if plan.route == "accelerator":
                schema = duckdb_schema(self.duckdb_instances[plan.instance_id.split(":", 1)[1]], plan.sql)
            else:
                schema = federated_schema(plan)
            return _public_types(pa.RecordBatchReader.from_batches(schema, [])).schema

        deadline = time.monotonic() + self.query_timeout.total_seconds() if self.query_timeout else None
        scope = self.scopes.track(CancelScope())
        caller = CALLER.set(Caller(principal.name, "query", deadline, scope))
        try:
            schema = guarded(planned_schema, scope, deadline)
        except Exception as e:
            raise self._public_error(e) from None
        finally:
            CALLER.reset(caller)
        lookups = self._plans.lookups_of(_plan_key(sql, params))
        if lookups is not None and key is not None:
            self._plans.put(key, schema, lookups)
        return schema

    def parameter_count(self, sql: str) -> int:
        tree, _ = parse_query(sql)
        return parameter_count(tree)

    def plan(self, tree: exp.Expression, force_source: frozenset[str] = frozenset()) -> Plan:
        return plan_query(tree, self._resolver(force_source), self.views)

    def _resolver(self, force_source: frozenset[str]):
        return lambda db, name: self._resolve(db, name, force_source)

    def _planned(self, sql: str, params: Sequence[object] | None) -> tuple[exp.Expression, bool, Plan]:
        """Parse, bind and plan `sql`, or reuse what planning the same text and parameters gave
        while its tables resolve the same way (planning costs milliseconds; DoGet repeats it)."""
        resolve = self._resolver(frozenset())
        key = _plan_key(sql, params)
        if key is not None:
            cached = self._plans.get(key, resolve)
            if cached is not None:
                return cached
        recorder = RecordingResolver(resolve)
        tree, explain = parse_query(sql)
        tree = bind_parameters(tree, params)
        planned = tree, explain, plan_query(tree, recorder, self.views)
        if key is not None:
            self._plans.put(key, planned, recorder)
        return planned

    def _execute(self, plan: Plan, tree: exp.Expression, task: Task | None = None) -> pa.RecordBatchReader:
        if plan.route == "accelerator":
            timeout = self.query_timeout.total_seconds() if self.query_timeout else None
            reader = self.duckdb_instances[plan.instance_id.split(":", 1)[1]].query(plan.sql, timeout=timeout)
        else:
            reader = self._counted(plan)
            if reader is None and not plan.full_text:
                reader = source_pushdown.run(plan, self.datasets)  # whole query in one SQL source
            if reader is None:
                reader = self._federated(plan)
        reader = _public_types(reader)
        fallback = [b.dataset for b in plan.bindings
                    if b.kind in ("duckdb", "arrow") and self.datasets[b.dataset].acceleration.on_zero_results == "use_source"]
        if fallback:
            def from_source() -> pa.RecordBatchReader:
                source_plan = self.plan(tree, frozenset(fallback))
                if task is not None:
                    task.served_by = source_plan.served_by
                return self._execute(source_plan, tree)

            return _unless_empty(reader, from_source)
        return reader

    def _resolve(self, db: str | None, name: str, force_source: frozenset[str]) -> Binding | None:
        schema = (db or "public").lower()
        if schema == "runtime":
            if name.lower() == "task_history":
                return Binding("runtime.task_history", TASK_HISTORY_SCHEMA, "memory")
            return None
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

    def _open_scan(self, scan: TableScan) -> pa.RecordBatchReader | pa.Table:
        b = scan.binding
        if b.kind == "memory":
            return self.task_history.table()
        ds = self.datasets[b.dataset.lower()]
        if b.kind == "arrow":
            return self.arrow.table(ds.name)
        if b.kind == "duckdb":
            return ds.accelerator.scan(ds.name, scan.columns, scan.filters, None if scan.order else scan.limit)
        pushed, exact = self._pushed_filters(ds, scan.filters)
        limit = scan.limit if exact else None
        if limit is not None and scan.order:  # a top-N: only a source that orders may cut rows
            if isinstance(ds.connector, OrdersTopN) and ds.connector.classify_order(scan.order):
                return ds.connector.scan(scan.columns, pushed, limit, order_by=scan.order)
            limit = None
        return ds.connector.scan(scan.columns, pushed, limit)

    @staticmethod
    def _pushed_filters(ds: DatasetRuntime, filters: Sequence[Filter]) -> tuple[list[Filter], bool]:
        """The filters the source takes, and whether it takes them all exactly; a full-text
        match() the source cannot run exactly is an error (nothing else can run it)."""
        support = ds.connector.classify_filters(filters)
        for f, s in zip(filters, support):
            if f.op == FULL_TEXT_OP and s is not FilterSupport.EXACT:
                raise SqlError(f"dataset '{ds.name}' ({ds.config.connector_prefix}) cannot run full-text "
                               f"match({f.column}, ...): use it on a search source (elasticsearch)")
        pushed = [f for f, s in zip(filters, support) if s is not FilterSupport.UNSUPPORTED]
        return pushed, all(s is FilterSupport.EXACT for s in support)

    def _counted(self, plan: Plan) -> pa.RecordBatchReader | None:
        """`SELECT count(*) FROM t [WHERE ...]` answered by a live source's own count."""
        if plan.count_as is None or plan.scans[0].binding.kind != "source":
            return None
        scan = plan.scans[0]
        ds = self.datasets[scan.binding.dataset.lower()]
        if not isinstance(ds.connector, Counts):
            return None
        pushed, exact = self._pushed_filters(ds, scan.filters)
        if not exact:
            return None
        table = pa.table({plan.count_as: pa.array([int(ds.connector.count(pushed))], pa.int64())})
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())

    def _source_reader(self, ds: DatasetRuntime, condition: str | None) -> pa.RecordBatchReader:
        """The rows a refresh loads: `refresh_sql` (or all rows), narrowed by `condition`."""
        base = ds.acceleration.refresh_sql or f'SELECT * FROM "{ds.name}"'
        tree, _ = parse_query(base)
        if condition and ds.acceleration.refresh_sql:
            tree = exp.select("*").from_(exp.Subquery(this=tree, alias=exp.TableAlias(this=exp.to_identifier("r"))))
        if condition:  # on the table itself when it can be, so the condition reaches the source's scan
            tree = tree.where(condition, dialect=PUBLIC_DIALECT)
        plan = self.plan(tree, force_source=frozenset(self.datasets_names()))
        pushed = source_pushdown.run(plan, self.datasets)  # refresh_sql runs in the source when it can
        return pushed if pushed is not None else self._federated(plan)

    def _federated(self, plan: Plan) -> pa.RecordBatchReader:
        """DataFusion over pushed-down scans, within the federated share of the memory budget."""
        return run_federated(plan, self._open_scan, pool_bytes=datafusion_pool(self.memory_budget))

    def datasets_names(self) -> list[str]:
        return [ds.name for ds in self.datasets.values()]

    # -- catalog -----------------------------------------------------------------------------

    def tables(self) -> list[TableInfo]:
        out = []
        for ds in self.datasets.values():
            try:
                schema = ds.schema()
            except SatchelError as e:
                log.warning("dataset %s: schema unavailable: %s", ds.name, e)
                continue
            pk = tuple(ds.acceleration.primary_key or ()) if ds.accelerated else ()
            out.append(TableInfo(CATALOG, "public", ds.name, "TABLE", schema, pk, ds.config.description))
        for view in self.pod.views:
            try:
                schema = self.query_schema(f'SELECT * FROM "{view.name}"')
            except SatchelError as e:
                log.warning("view %s: schema unavailable: %s", view.name, e)
                continue
            out.append(TableInfo(CATALOG, "public", view.name, "VIEW", schema, (), view.description))
        out.append(TableInfo(CATALOG, "runtime", "task_history", "TABLE", TASK_HISTORY_SCHEMA, ("task_id",),
                             TASK_HISTORY_DESCRIPTION))
        return out

    def status(self) -> dict:
        return {"pod": self.pod.name, "ready": self.ready(),
                "datasets": [ds.info() for ds in self.datasets.values()]}

    def _dataset(self, name: str) -> DatasetRuntime:
        ds = self.datasets.get(name.lower())
        if ds is None:
            raise NotFound(f"unknown dataset '{name}'; datasets: {', '.join(self.datasets_names())}")
        return ds

    def _accelerator_for(self, ds):
        acc = ds.acceleration
        if acc is None or not acc.enabled:
            return None
        if acc.engine == "arrow":
            return self.arrow
        path = None
        if acc.mode == "file":
            path = acc.params.get("duckdb_file") or str(self.data_dir / "accelerated_duckdb.db")
            if not os.path.isabs(path):
                path = str(Path(self.pod.base_dir) / path)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        key = path or "memory"
        if key not in self.duckdb_instances:
            limit = acc.params.get("duckdb_memory_limit") or f"{int(self.memory_budget * DUCKDB_SHARE)}B"
            self.duckdb_instances[key] = DuckDBAccelerator(path, memory_limit=limit)
        return self.duckdb_instances[key]

    # -- accounting --------------------------------------------------------------------------

    def _accounted(self, reader: pa.RecordBatchReader, task: Task, started: float) -> pa.RecordBatchReader:
        deadline = started + self.query_timeout.total_seconds() if self.query_timeout else None
        max_rows = self.max_rows

        def batches() -> Iterator[pa.RecordBatch]:
            rows = nbytes = 0
            error: BaseException | None = None
            try:
                for batch in reader:
                    if deadline and time.monotonic() > deadline:
                        raise QueryTimeout(f"query exceeded the runtime query_timeout of {self.query_timeout}")
                    if max_rows is not None and rows + batch.num_rows > max_rows:
                        batch = batch.slice(0, max_rows - rows)
                        task.truncated = True
                    rows += batch.num_rows
                    nbytes += batch.nbytes
                    yield batch
                    if task.truncated:
                        break
            except GeneratorExit:
                raise
            except Exception as e:
                error = self._public_error(e)
                raise error from None
            finally:
                self.metrics.query_rows.labels(task.protocol).inc(rows)
                self.metrics.query_bytes.labels(task.protocol).inc(nbytes)
                self._finish(task, started, rows, error)

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    def _finish(self, task: Task, started: float, rows: int, error: SatchelError | None) -> None:
        elapsed = time.monotonic() - started
        task.duration_ms = elapsed * 1000
        task.rows = rows
        if error is not None:
            task.error, task.error_code = error.message, error.code
            self.metrics.query_failures.labels(task.protocol, error.code).inc()
        self.metrics.queries.labels(task.protocol, task.served_by or "none").inc()
        self.metrics.query_duration.labels(task.protocol).observe(elapsed)
        self.task_history.record(task)

    def _public_error(self, e: BaseException) -> SatchelError:
        """Every failure leaves as a SatchelError with a clear, secret-free message."""
        if isinstance(e, SatchelError):
            e.message = redact(e.message, self.secrets)
            return e
        if resource_exhausted_text(e):
            return ResourceExhausted(f"the query needs more memory than its budget ({self.memory_budget >> 20} MiB "
                                     f"from runtime.params.memory_limit or the container's limit)")
        text = redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, self.secrets)
        return SqlError(f"query failed: {text}")


def _public_type(t: pa.DataType) -> pa.DataType:
    """The type clients get for `t`, the same whichever engine ran the query: no unsigned
    integers (PostgreSQL has none; DataFusion's row_number() is UInt64), no view or large
    string layouts (DataFusion's CAST(.. AS VARCHAR) is Utf8View), nested types alike."""
    if pa.types.is_unsigned_integer(t):
        return {8: pa.int16(), 16: pa.int32()}.get(t.bit_width, pa.int64())
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return pa.list_(t.value_field.with_type(_public_type(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_public_type(t.field(i).type)) for i in range(t.num_fields)])
    return t


def _public_types(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    schema = reader.schema
    target = pa.schema([f.with_type(_public_type(f.type)) for f in schema], metadata=schema.metadata)
    if target.equals(schema):
        return reader

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield batch.cast(target)

    return pa.RecordBatchReader.from_batches(target, batches())


def _plan_key(sql: str, params: Sequence[object] | None):
    """The plan cache key of a query and its bound parameters (None: not cacheable)."""
    return cache_key("query", sql, tuple((type(p), p) for p in params) if params else None)


def _explain_reader(plan: Plan, extra: Sequence[str] = ()) -> pa.RecordBatchReader:
    lines = plan.explain().splitlines() + list(extra) if plan.sql else []
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


def _unless_empty(reader: pa.RecordBatchReader, fallback) -> pa.RecordBatchReader:
    """`reader`, or `fallback()` when reader yields no rows at all (on_zero_results: use_source)."""
    held: list[pa.RecordBatch] = []
    for batch in reader:
        held.append(batch)
        if batch.num_rows:
            break
    else:
        return fallback()

    def rest() -> Iterator[pa.RecordBatch]:
        yield from held
        yield from reader

    return pa.RecordBatchReader.from_batches(reader.schema, rest())
