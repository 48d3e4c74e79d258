"""The Runtime: the facade that owns a pod's datasets, accelerators and services.

Every entry point (Flight SQL, HTTP, CLI, MCP) authenticates with `Runtime.authenticate` and calls
`Runtime.query(sql, principal)`, which hands the query to `engine.query` and returns a streaming
`pyarrow.RecordBatchReader`; refreshes live in `engine.refresh`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import pyarrow as pa
from sqlglot import exp

from accel.arrow import ArrowAccelerator
from accel.duckdb import DuckDBAccelerator

from .auth import ANONYMOUS, Authenticator, Principal
from .cancel import LiveScopes
from .config import Dataset, Pod
from .embedders import Embedders
from .errors import NotFound, SatchelError
from .memory import DUCKDB_SHARE, budget_bytes, size_bytes
from .metrics import Metrics
from .model_calls import ModelCallLog
from .query.accounting import Accounting
from .query.ai_functions import AiFunctions
from .query.coalesce import Coalescer
from .query.information_schema import CATALOG, TableInfo
from .query.planner import Plan, expand_views, view_visible
from .query.policy import policies
from .query.results_cache import DEFAULT_MAX_BYTES, DEFAULT_TTL_S, CacheUse, ResultsCache
from .query.routes import Routes
from .query.service import QueryService
from .query.sql_limits import SqlLimits
from .query.sql_policy import parse_query
from .redact import install_log_redaction
from .refresh.dataset import DatasetRuntime
from .refresh.jobs import RefreshJobs
from .refresh.snapshots import SnapshotStore
from .schema_asks import SchemaAsks
from .search.functions import SearchFunctions
from .search.service import search as search_request
from .task_history import DESCRIPTION as TASK_HISTORY_DESCRIPTION
from .task_history import SCHEMA as TASK_HISTORY_SCHEMA
from .task_history import TaskHistory

__all__ = ["ANONYMOUS", "CATALOG", "Principal", "Runtime", "TableInfo"]

if TYPE_CHECKING:
    from .telemetry import OtlpSpans

log = logging.getLogger("satchel.runtime")


def _shown_key(columns: Sequence[str], schema: pa.Schema) -> tuple[str, ...]:
    """`columns` as a key the caller is told of: only when it sees every one of them unmasked
    (a hidden part makes the rest no key; a redacted or partial column is no longer unique)."""
    if all(c in schema.names and b"masked" not in (schema.field(c).metadata or {}) for c in columns):
        return tuple(columns)
    return ()


def _sql_limits(pod: Pod) -> SqlLimits:
    params = pod.runtime.params
    return SqlLimits(params.max_sql_length, params.max_sql_depth, params.max_sql_terms)


class Runtime:
    """A pod at run time: datasets, accelerators, the query service and the refresh jobs."""

    def __init__(self, pod: Pod, data_dir: str | None = None, memory_limit: str | None = None) -> None:
        self.pod = pod
        self.metrics = Metrics()
        self.secrets = pod.secret_values
        install_log_redaction(self.secrets)
        th = pod.runtime.task_history
        self.task_history = TaskHistory(th.enabled, th.retention_period, secrets=self.secrets)
        self.task_history.observe(ModelCallLog({m.name: m.prices for m in (*pod.models, *pod.embeddings)},
                                               self.metrics))
        tracing = pod.runtime.tracing
        self.spans: "OtlpSpans | None" = None
        if tracing.otlp_endpoint:
            from .telemetry import OtlpSpans  # the OpenTelemetry SDK costs ~70 ms to import: only when used

            self.spans = OtlpSpans(tracing.otlp_endpoint, tracing.service_name, tracing.otlp_headers)
            self.task_history.observe(self.spans)
        # embedding models, attached by the serving layer (serving.server) before start()
        self.embedders = Embedders(self.task_history, capture_text=th.captured_output == "truncated")
        self.data_dir = Path(data_dir or os.environ.get("SATCHEL_DATA_DIR") or Path(pod.base_dir) / ".satchel")
        self.memory_limit = memory_limit or os.environ.get("SATCHEL_MEMORY_LIMIT") or pod.runtime.params.memory_limit
        self.memory_budget = budget_bytes(self.memory_limit)
        self.query_timeout = pod.runtime.params.query_timeout or None  # 0s: no deadline
        api_key = pod.runtime.auth.api_key
        auth = pod.runtime.auth
        self.policies = policies(auth.principals, auth.mask_salt or self._mask_salt()) if auth.principals else {}
        self.auth = Authenticator(api_key.keys if api_key.enabled else (), self.metrics,
                                  {p.name: p.keys for p in auth.principals}, self.policies)
        self.arrow = ArrowAccelerator(search_memory_limit=f"{int(self.memory_budget * DUCKDB_SHARE)}B")
        self.duckdb_instances: dict[str, DuckDBAccelerator] = {}
        self.datasets: dict[str, DatasetRuntime] = {}
        snap = pod.runtime.snapshots
        snapshots = SnapshotStore(snap.location, snap.params, snap.keep) if snap.enabled and snap.location else None
        staleness = snap.max_staleness.total_seconds() if snap.max_staleness else None
        for ds in pod.datasets:
            self.datasets[ds.name.lower()] = DatasetRuntime(ds, pod.base_dir, self._accelerator_for(ds), self.metrics,
                                                            self.secrets, pod.name, self.embedders, snapshots,
                                                            staleness, snap.fallback == "source")
        views = {view.name.lower(): parse_query(view.sql)[0] for view in pod.views}
        self.accounting = Accounting(self.metrics, self.task_history, self.secrets, self.memory_budget)
        self.routes = Routes(self.datasets, self.duckdb_instances, self.arrow, self.task_history, self.memory_budget,
                             self.query_timeout, spill_dir=str(self.data_dir / "duckdb_spill"),
                             on_worker_replaced=lambda reason: self.metrics.federated_workers_replaced.labels(reason).inc())
        self.scopes = LiveScopes()  # every running query's and refresh's, cancelled by stop()
        self.schema_asks = SchemaAsks(self.scopes, self.query_timeout)  # catalog listings never wait on a source
        self.search_functions = SearchFunctions(self.datasets, self.embedders)
        self.ai = AiFunctions(self.task_history)  # serving attaches the models (engine.query.ai_functions)
        self.queries = QueryService(self.datasets, views, self.routes, self.accounting, self.query_timeout,
                                    pod.runtime.params.max_rows, self.scopes, _sql_limits(pod), self.search_functions,
                                    _results_cache(pod), self.ai,
                                    Coalescer() if pod.runtime.params.coalesce_queries else None, self.tables)
        self.refreshes = RefreshJobs(self.datasets, self.queries.source_reader, self.task_history, self.scopes)
        self.scheduler = self.refreshes.scheduler

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Reopen file-mode data, then load the rest and schedule refreshes in the background."""
        self.refreshes.start()
        if any(getattr(ds.accelerator, "engine", "live") != "duckdb" for ds in self.datasets.values()):
            self.routes.workers.warm()  # the federated engine will run this pod's queries: start a worker now

    def stop(self, timeout: float | None = None) -> None:
        """Cancel every query's and refresh's source work, wait up to `timeout` seconds for the
        refreshes to end, close the sources and accelerators."""
        self.scopes.cancel_all()
        self.routes.workers.close()  # a federated query stops at once
        try:
            if not self.refreshes.stop(timeout):
                log.warning("refreshes still running after %ss; stopping without them", timeout)
                return  # their accelerators are in use: the process exit closes them
            for ds in self.datasets.values():
                ds.close()
            for inst in self.duckdb_instances.values():
                inst.close()
            self.routes.close()
        finally:
            if self.spans is not None:
                self.spans.close()

    def ready(self) -> bool:
        """True when every accelerated dataset with `ready_state: on_load` has loaded once, and no
        snapshot follower's data is older than `runtime.snapshots.max_staleness`."""
        return all((ds.loaded_once or ds.config.ready_state == "on_registration") and not ds.snapshot_stale
                   for ds in self.datasets.values())

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return True
            time.sleep(0.05)
        return self.ready()

    def refresh(self, name: str, wait: bool = False) -> dict:
        """Trigger a refresh now; with `wait`, block until it finishes and raise its error."""
        return self.refreshes.refresh(self._dataset(name), wait)

    def refresh_and_wait(self, name: str, timeout: float | None = None) -> dict:
        """Trigger a refresh as a client does and wait for it to end: its outcome (see RefreshJobs)."""
        return self.refreshes.refresh_and_wait(self._dataset(name), timeout)

    # -- auth and queries --------------------------------------------------------------------

    @property
    def auth_enabled(self) -> bool:
        return self.auth.enabled

    def authenticate(self, api_key: str | None, client: str = "unknown", protocol: str = "http") -> Principal:
        return self.auth.authenticate(api_key, client, protocol)

    def query(self, sql: str, principal: Principal = ANONYMOUS, *, protocol: str = "flight",
              params: Sequence[object] | None = None,
              client_gone: Callable[[], bool] | None = None, cache: CacheUse | None = None) -> pa.RecordBatchReader:
        """Plan and run one read-only query; the result streams (see QueryService.query)."""
        return self.queries.query(sql, principal, protocol=protocol, params=params, client_gone=client_gone,
                                  cache=cache)

    @property
    def caches_results(self) -> bool:
        """Whether `runtime.results_cache` is on."""
        return self.queries.results is not None

    def search(self, body: object, principal: Principal = ANONYMOUS, *, protocol: str = "http",
               client_gone: Callable[[], bool] | None = None) -> dict:
        """`POST /v1/search` (engine.search.service): each dataset's search is one query for `principal`."""
        visible = {key: ds for key, ds in self.datasets.items() if self.visible(ds.name, principal)}
        return search_request(body, visible,
                              lambda sql: self.query(sql, principal, protocol=protocol, client_gone=client_gone))

    def query_schema(self, sql: str, principal: Principal = ANONYMOUS, params: Sequence[object] | None = None,
                     client_gone: Callable[[], bool] | None = None) -> pa.Schema:
        return self.queries.query_schema(sql, params, principal, client_gone)

    def refused(self, error: BaseException, *, protocol: str, principal: str | None, text: str,
                started: float, task: str = "request") -> SatchelError:
        return self.accounting.refused(error, protocol=protocol, principal=principal, text=text, started=started,
                                       task=task)

    def explain(self, sql: str, principal: Principal = ANONYMOUS) -> str:
        return self.queries.explain(sql, principal)

    def parameter_count(self, sql: str) -> int:
        return self.queries.parameter_count(sql)

    def plan(self, tree: exp.Expression, force_source: frozenset[str] = frozenset()) -> Plan:
        return self.queries.plan(tree, force_source)

    # -- catalog -----------------------------------------------------------------------------

    def datasets_names(self) -> list[str]:
        return [ds.name for ds in self.datasets.values()]

    def visible(self, name: str, principal: Principal = ANONYMOUS) -> bool:
        """Whether `principal` may see the dataset or view `name` (a view: and all it reads)."""
        if principal.policy is None:
            return True
        if name.lower() in self.queries.views:
            return view_visible(name, principal.policy, self.queries.views)
        return principal.policy.allows(name)

    def tables(self, principal: Principal = ANONYMOUS) -> list[TableInfo]:
        """The catalog as `principal` sees it: its datasets and views, their visible columns
        (masked ones marked in field metadata `masked`)."""
        policy = principal.policy
        out = []
        schemas = dict(zip(self.datasets, self.schema_asks.schemas(list(self.datasets.values()))))
        for key, ds in self.datasets.items():
            schema = schemas[key]
            if schema is None or not self.visible(ds.name, principal):
                continue
            if policy is not None:
                schema = policy.visible_schema(ds.name, schema)
            pk = _shown_key(ds.acceleration.primary_key or (), schema) if ds.accelerated else ()
            unique = tuple(i.columns for i in ds.acceleration.table_indexes
                           if i.unique and _shown_key(i.columns, schema)) if ds.accelerated else ()
            out.append(TableInfo(CATALOG, "public", ds.name, "TABLE", schema, pk, ds.config.description, unique))
        for view in self.pod.views:
            if not self.visible(view.name, principal):
                continue
            reads = expand_views(self.queries.views[view.name.lower()].copy(), self.queries.views).find_all(exp.Table)
            if any(t.name.lower() in schemas and schemas[t.name.lower()] is None for t in reads):
                continue  # it reads a dataset whose schema is not known yet
            try:
                schema = self.query_schema(f'SELECT * FROM "{view.name}"', principal)
            except SatchelError as e:
                log.warning("view %s: schema unavailable: %s", view.name, e)
                continue
            out.append(TableInfo(CATALOG, "public", view.name, "VIEW", schema, (), view.description))
        out.append(TableInfo(CATALOG, "runtime", "task_history", "TABLE", TASK_HISTORY_SCHEMA, ("task_id",),
                             TASK_HISTORY_DESCRIPTION))
        return out

    def status(self) -> dict:
        return {"pod": self.pod.name, "ready": self.ready(),
                "datasets": [{**ds.info(), "next_refresh_at": self._next_refresh(ds)}
                             for ds in self.datasets.values()],
                "federated_engine": self.routes.workers.status()}

    def _next_refresh(self, ds: DatasetRuntime) -> str | None:
        """ISO time of the dataset's next scheduled refresh (None: not accelerated, running, or none)."""
        due = self.scheduler.next_run(ds.name) if ds.accelerated and not self.scheduler.is_running(ds.name) else None
        return dt.datetime.fromtimestamp(due, dt.timezone.utc).isoformat() if due is not None else None

    def _mask_salt(self) -> str:
        """A random salt for hashed columns, made once and kept in the data directory (hashes
        stay stable across restarts; set runtime.auth.mask_salt to share them across sidecars)."""
        path = self.data_dir / "mask_salt"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(16))
        return path.read_text().strip()

    def _dataset(self, name: str) -> DatasetRuntime:
        ds = self.datasets.get(name.lower())
        if ds is None:
            raise NotFound(f"unknown dataset '{name}'; datasets: {', '.join(self.datasets_names())}")
        return ds

    def _accelerator_for(self, ds: Dataset) -> ArrowAccelerator | DuckDBAccelerator | None:
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
            spill = None
            if path is None:  # DuckDB's default is `.tmp` in the working directory
                spill = str(self.data_dir / "duckdb_spill")
                self.data_dir.mkdir(parents=True, exist_ok=True)
            self.duckdb_instances[key] = DuckDBAccelerator(path, memory_limit=limit, temp_directory=spill)
        return self.duckdb_instances[key]


def _results_cache(pod: Pod) -> ResultsCache | None:
    """`runtime.results_cache` (Spice's keys), when enabled."""
    conf = pod.runtime.results_cache
    if not conf.enabled:
        return None
    return ResultsCache(size_bytes(conf.cache_max_size) if conf.cache_max_size else DEFAULT_MAX_BYTES,
                        conf.item_ttl.total_seconds() if conf.item_ttl else DEFAULT_TTL_S)
