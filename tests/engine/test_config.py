"""spicepod.yaml loading: valid pods, every kind of bad pod (file, line, key), secrets, durations."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pydantic
import pytest

import engine.config as config
from engine.config import (
    NOT_SUPPORTED_YET, ConfigError, describe_errors, load_pod, load_pod_text, parse_duration,
)
from engine.durations import format_duration
from engine.redact import redact

FILE = "pods/agent.yaml"
HEAD = "version: v1\nkind: Spicepod\nname: t\n"


def _pod(body: str, env: dict[str, str] | None = None, head: str = HEAD):
    return load_pod_text(head + textwrap.dedent(body), file=FILE, env=env or {})


def _errors(body: str, env: dict[str, str] | None = None, head: str = HEAD) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _pod(body, env, head)
    return info.value


def _marked_line(text: str) -> int:
    """1-based line of the `# <-` marker in the full pod text."""
    lines = text.splitlines()
    return next(i + 1 for i, line in enumerate(lines) if "# <-" in line)


# ---------------------------------------------------------------------------------------------
# valid pods

FULL_POD = """\
version: v1beta1
kind: Spicepod
name: orders_agent
secrets:
  - from: env
    name: env
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${secrets:API_KEY}"]
  tls:
    enabled: true
    certificate_file: certs/server.crt
    key_file: certs/server.key
  task_history:
    enabled: false
    retention_period: 1d
    captured_output: truncated
  results_cache:
    enabled: false
    cache_max_size: 128MiB
    item_ttl: 1m
  params:
    memory_limit: 2GiB
    query_timeout: 30s
    max_rows: 10000
datasets:
  - from: postgres:public.orders
    name: orders
    description: One row per customer order; amounts in US dollars.
    columns:
      - name: order_id
        description: Primary key.
      - name: amount
    params:
      pg_host: 127.0.0.1
      pg_port: 5432
      pg_db: shop
      pg_user: reader
      pg_pass: ${secrets:PG_PASS}
      pg_sslmode: disable
    time_column: updated_at
    time_format: timestamptz
    ready_state: on_registration
    unsupported_type_action: string
    access: read
    acceleration:
      enabled: true
      engine: duckdb
      mode: file
      refresh_mode: append
      refresh_check_interval: 30s
      refresh_sql: SELECT * FROM orders WHERE status = 'open'
      refresh_data_window: 7d
      refresh_append_overlap: 5m
      refresh_retry_enabled: true
      refresh_retry_max_attempts: 5
      refresh_jitter_enabled: true
      refresh_jitter_max: 10s
      retention_check_enabled: true
      retention_period: 30d
      retention_check_interval: 1h
      on_zero_results: use_source
      primary_key: (order_id, region)
      on_conflict:
        (order_id, region): upsert
      params:
        duckdb_file: data/orders.duckdb
        duckdb_memory_limit: 1GB
  - from: https://example.com/data/customers.csv
    name: customers
    params:
      file_format: csv
      csv_has_header: true
    acceleration:
      refresh_cron: "*/15 * * * *"
  - from: file:data/events.parquet
    name: raw.events
views:
  - name: open_orders
    description: Orders not yet shipped.
    sql: SELECT * FROM orders WHERE status = 'open'
"""

ENV = {"PG_PASS": "hunter2-pg", "API_KEY": "key-abc-123"}


@pytest.fixture
def with_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend a postgres connector is registered (the config reads the registry's list)."""
    monkeypatch.setattr(config, "known_connector_prefixes", lambda: ["file", "http", "https", "postgres"])


def test_full_pod_loads_every_documented_key(with_postgres: None) -> None:
    pod = load_pod_text(FULL_POD, file=FILE, env=ENV, base_dir="/srv/pod")
    assert (pod.version, pod.kind, pod.name) == ("v1beta1", "Spicepod", "orders_agent")
    assert (pod.source_file, pod.base_dir) == (FILE, "/srv/pod")
    assert [(s.from_, s.name) for s in pod.secrets] == [("env", "env")]
    rt = pod.runtime
    assert rt.auth.api_key.enabled and rt.auth.api_key.keys == ("key-abc-123",)
    assert (rt.tls.enabled, rt.tls.certificate_file, rt.tls.key_file) == (True, "certs/server.crt", "certs/server.key")
    assert (rt.task_history.enabled, rt.task_history.retention_period, rt.task_history.captured_output) == (
        False, timedelta(days=1), "truncated")
    assert (rt.results_cache.enabled, rt.results_cache.cache_max_size, rt.results_cache.item_ttl) == (
        False, "128MiB", timedelta(minutes=1))
    assert (rt.params.memory_limit, rt.params.query_timeout, rt.params.max_rows) == ("2GiB", timedelta(seconds=30), 10000)

    orders = pod.dataset("orders")
    assert orders is not None and orders is pod.datasets[0]
    assert (orders.from_, orders.connector_prefix, orders.connector_path) == (
        "postgres:public.orders", "postgres", "public.orders")
    assert orders.description.startswith("One row per customer order")
    assert orders.column_descriptions == {"order_id": "Primary key."}
    assert [c.name for c in orders.columns] == ["order_id", "amount"]
    assert dict(orders.params) == {"pg_host": "127.0.0.1", "pg_port": "5432", "pg_db": "shop", "pg_user": "reader",
                                   "pg_pass": "hunter2-pg", "pg_sslmode": "disable"}
    assert (orders.time_column, orders.time_format, orders.ready_state, orders.unsupported_type_action, orders.access) == (
        "updated_at", "timestamptz", "on_registration", "string", "read")
    acc = orders.acceleration
    assert acc is not None and orders.accelerated
    assert (acc.enabled, acc.engine, acc.mode, acc.refresh_mode) == (True, "duckdb", "file", "append")
    assert acc.refresh_check_interval == timedelta(seconds=30) and acc.refresh_cron is None
    assert acc.refresh_sql == "SELECT * FROM orders WHERE status = 'open'"
    assert (acc.refresh_data_window, acc.refresh_append_overlap) == (timedelta(days=7), timedelta(minutes=5))
    assert (acc.refresh_retry_enabled, acc.refresh_retry_max_attempts) == (True, 5)
    assert (acc.refresh_jitter_enabled, acc.refresh_jitter_max) == (True, timedelta(seconds=10))
    assert (acc.retention_check_enabled, acc.retention_period, acc.retention_check_interval) == (
        True, timedelta(days=30), timedelta(hours=1))
    assert acc.on_zero_results == "use_source"
    assert acc.primary_key == ("order_id", "region")
    assert dict(acc.on_conflict) == {"(order_id, region)": "upsert"}
    assert dict(acc.indexes) == {}
    assert dict(acc.params) == {"duckdb_file": "data/orders.duckdb", "duckdb_memory_limit": "1GB"}

    customers = pod.dataset("customers")
    assert (customers.connector_prefix, customers.connector_path) == ("https", "https://example.com/data/customers.csv")
    assert dict(customers.params) == {"file_format": "csv", "csv_has_header": "true"}
    cacc = customers.acceleration
    assert (cacc.engine, cacc.mode, cacc.refresh_mode, cacc.refresh_cron) == ("arrow", "memory", "full", "*/15 * * * *")
    assert (cacc.refresh_retry_max_attempts, cacc.on_zero_results, cacc.primary_key) == (3, "return_empty", None)

    events = pod.dataset("raw.events")
    assert (events.acceleration, events.accelerated, events.ready_state) == (None, False, "on_load")
    assert (events.connector_prefix, events.connector_path) == ("file", "data/events.parquet")

    assert [(v.name, v.description, v.sql) for v in pod.views] == [
        ("open_orders", "Orders not yet shipped.", "SELECT * FROM orders WHERE status = 'open'")]
    assert pod.view("OPEN_ORDERS") is pod.views[0]
    assert pod.dataset("Orders") is orders and pod.dataset("nope") is None
    assert (pod.models, pod.embeddings) == ((), ())
    assert pod.secret_values >= {"hunter2-pg", "key-abc-123"}


def test_pod_is_frozen_and_repr_hides_secrets(with_postgres: None) -> None:
    pod = load_pod_text(FULL_POD, file=FILE, env=ENV)
    with pytest.raises(pydantic.ValidationError):
        pod.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pod.datasets[0].params["pg_pass"] = "x"  # type: ignore[index]
    assert hash(pod) == hash(load_pod_text(FULL_POD, file=FILE, env=ENV))
    text = repr(pod) + str(pod) + repr(pod.datasets[0].params) + repr(pod.runtime.auth)
    for secret in ENV.values():
        assert secret not in text
    assert "secret_values" not in repr(pod)
    assert "secret_values" not in pod.model_dump()


def test_spicepod_md_example_loads_with_models(with_postgres: None) -> None:
    example = textwrap.dedent("""\
        version: v1
        kind: Spicepod
        name: orders_agent
        datasets:
          - from: postgres:public.orders
            name: orders
            description: One row per customer order; amounts in US dollars.
            params:
              pg_host: 127.0.0.1
              pg_db: shop
              pg_user: reader
              pg_pass: ${secrets:PG_PASS}
            time_column: updated_at
            acceleration:
              engine: duckdb
              mode: file
              refresh_mode: append
              refresh_check_interval: 30s
              refresh_append_overlap: 5m
              primary_key: order_id
              on_conflict:
                order_id: upsert
        models:
          - from: file:models/gemma-3-270m-q4_k_m.gguf
            name: local
            params:
              tools: auto
        """)
    full = load_pod_text(example, file=FILE, env={"PG_PASS": "pw"})
    assert full.models[0].name == "local" and full.models[0].provider == "file"
    assert full.models[0].params["tools"] == "auto"
    without_models = example.split("models:")[0]
    pod = load_pod_text(without_models, file=FILE, env={"PG_PASS": "pw"})
    assert pod.datasets[0].acceleration.primary_key == ("order_id",)


def test_load_pod_from_disk_sets_paths(tmp_path) -> None:
    path = tmp_path / "sub" / "spicepod.yaml"
    path.parent.mkdir()
    path.write_text(HEAD + "datasets:\n  - from: file:data/x.csv\n    name: x\n")
    pod = load_pod(path, env={})
    assert pod.source_file == str(path) and pod.base_dir == str(path.parent)
    with pytest.raises(ConfigError) as info:
        load_pod(tmp_path / "missing.yaml", env={})
    assert "missing.yaml" in str(info.value) and "cannot read" in str(info.value)


def test_minimal_pod_defaults() -> None:
    pod = _pod("")
    assert pod.datasets == () and pod.views == () and pod.secrets[0].from_ == "env"
    assert pod.runtime.task_history.retention_period == timedelta(hours=8)
    assert (pod.runtime.auth.api_key.enabled, pod.runtime.tls.enabled, pod.runtime.results_cache.enabled) == (
        False, False, False)
    assert _pod("datasets:\nviews:\n").datasets == ()


@pytest.mark.parametrize("value, expected", [
    ("order_id", ("order_id",)), ("(a, b)", ("a", "b")), ("(a,b,c)", ("a", "b", "c")), ("[a, b]", ("a", "b")),
])
def test_primary_key_forms(value: str, expected: tuple[str, ...]) -> None:
    pod = _pod(f"datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      primary_key: {value}\n")
    assert pod.datasets[0].acceleration.primary_key == expected


def test_params_scalars_become_strings() -> None:
    pod = _pod("""\
        datasets:
          - from: file:x.csv
            name: x
            params: {csv_has_header: false, connection_pool_size: 4, ratio: 0.5, file_format: csv}
        """)
    assert dict(pod.datasets[0].params) == {"csv_has_header": "false", "connection_pool_size": "4",
                                            "ratio": "0.5", "file_format": "csv"}


# ---------------------------------------------------------------------------------------------
# bad pods: each case marks the line the issue must point at with `# <-`

BAD_PODS: list[tuple[str, str, str, list[str]]] = [
    # (id, body after HEAD, key, substrings of the message)
    ("unknown-top-key", "dependencies: []  # <-\n", "dependencies",
     ["unknown key 'dependencies'", "allowed: version, kind, name, secrets, runtime, datasets, models, embeddings, views"]),
    ("loader-only-key", "base_dir: /etc  # <-\n", "base_dir", ["unknown key 'base_dir'"]),
    ("dataset-unknown-key", "datasets:\n  - from: file:x.csv\n    name: x\n    refresh: 1s  # <-\n",
     "datasets[0].refresh", ["unknown key 'refresh'", "allowed: from, name, description, columns, params"]),
    ("dataset-from_-key", "datasets:\n  - from_: file:x.csv  # <-\n    from: file:x.csv\n    name: x\n",
     "datasets[0].from_", ["did you mean 'from'"]),
    ("dataset-missing-from", "datasets:\n  - name: x  # <-\n", "datasets[0].from", ["missing required key 'from'"]),
    ("dataset-missing-name", "datasets:\n  - from: file:x.csv  # <-\n", "datasets[0].name", ["missing required key 'name'"]),
    ("from-without-prefix", "datasets:\n  - from: orders  # <-\n    name: x\n", "datasets[0].from",
     ["expected <connector>:<path>"]),
    ("from-unknown-connector", "datasets:\n  - from: nosuchdb:public.orders  # <-\n    name: x\n", "datasets[0].from",
     ["unknown connector 'nosuchdb'", "known: adbc, elasticsearch, file, flightsql, http, https, iceberg, mongodb, postgres"]),
    ("dataset-bad-name", "datasets:\n  - from: file:x.csv\n    name: my-table  # <-\n", "datasets[0].name",
     ["'my-table' is not a valid table name", "letters, digits and underscores"]),
    ("dataset-name-number-start", "datasets:\n  - from: file:x.csv\n    name: 1x  # <-\n", "datasets[0].name",
     ["not a valid table name"]),
    ("duplicate-dataset", "datasets:\n  - from: file:x.csv\n    name: x\n  - from: file:y.csv\n    name: X  # <-\n",
     "datasets[1].name", ["duplicate name 'X'", "datasets[0]"]),
    ("view-collides-dataset", "datasets:\n  - from: file:x.csv\n    name: x\nviews:\n  - name: x  # <-\n    sql: SELECT 1\n",
     "views[0].name", ["duplicate name 'x'"]),
    ("view-missing-sql", "views:\n  - name: v  # <-\n", "views[0].sql", ["missing required key 'sql'"]),
    ("bad-version", "", "version", ["invalid value 'v2'", "allowed: v1, v1beta1"]),
    ("bad-time-format", "datasets:\n  - from: file:x.csv\n    name: x\n    time_format: epoch  # <-\n",
     "datasets[0].time_format", ["invalid value 'epoch'", "allowed: timestamp, timestamptz, unix_seconds, unix_millis, ISO8601, date"]),
    ("bad-ready-state", "datasets:\n  - from: file:x.csv\n    name: x\n    ready_state: eager  # <-\n",
     "datasets[0].ready_state", ["allowed: on_load, on_registration"]),
    ("bad-unsupported-type-action", "datasets:\n  - from: file:x.csv\n    name: x\n    unsupported_type_action: drop  # <-\n",
     "datasets[0].unsupported_type_action", ["allowed: error, warn, ignore, string"]),
    ("bad-access", "datasets:\n  - from: file:x.csv\n    name: x\n    access: write  # <-\n",
     "datasets[0].access", ["allowed: read, read_write"]),
    ("column-unknown-key", "datasets:\n  - from: file:x.csv\n    name: x\n    columns:\n      - name: a\n        kind: int  # <-\n",
     "datasets[0].columns[0].kind", ["unknown key 'kind'", "allowed: name, description, type"]),
    ("column-bad-type", "datasets:\n  - from: https://h/x.json\n    name: x\n    columns:\n      - name: a\n        type: integr  # <-\n",
     "datasets[0].columns[0].type", ["'integr' is not a SQL type"]),
    ("column-type-on-typed-source", "datasets:\n  - from: file:x.csv\n    name: x\n    columns:\n      - name: a\n        type: INT  # <-\n",
     "datasets[0].columns[0].type", ["file datasets take their column types from the source"]),
    ("params-list-value", "datasets:\n  - from: file:x.csv\n    name: x\n    params:\n      file_format: [csv]  # <-\n",
     "datasets[0].params.file_format", ["expected a string, number or boolean"]),
    ("params-null-value", "datasets:\n  - from: file:x.csv\n    name: x\n    params:\n      file_format:  # <-\n",
     "datasets[0].params.file_format", ["expected a value"]),
    ("acceleration-not-mapping", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration: yes  # <-\n",
     "datasets[0].acceleration", ["expected a mapping"]),
    ("acceleration-unknown-key", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_interval: 1s  # <-\n",
     "datasets[0].acceleration.refresh_interval", ["unknown key 'refresh_interval'", "refresh_check_interval", "refresh_cron"]),
    ("acceleration-engine", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      engine: sqlite  # <-\n",
     "datasets[0].acceleration.engine", ["invalid value 'sqlite'", "allowed: arrow, duckdb"]),
    ("acceleration-mode", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      mode: disk  # <-\n",
     "datasets[0].acceleration.mode", ["allowed: memory, file"]),
    ("refresh-mode", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_mode: incremental  # <-\n",
     "datasets[0].acceleration.refresh_mode", ["allowed: full, append, changes"]),
    ("bad-duration", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_check_interval: 10 parsecs  # <-\n",
     "datasets[0].acceleration.refresh_check_interval", ["invalid duration '10 parsecs'", "10s, 5m"]),
    ("unitless-duration", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_check_interval: 10  # <-\n",
     "datasets[0].acceleration.refresh_check_interval", ["expected a duration, got a number"]),
    ("zero-duration", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_check_interval: 0s  # <-\n",
     "datasets[0].acceleration.refresh_check_interval", ["longer than 0s"]),
    ("interval-and-cron", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_check_interval: 1m\n"
     "      refresh_cron: '* * * * *'  # <-\n", "datasets[0].acceleration.refresh_cron", ["not both"]),
    ("bad-cron", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_cron: every day  # <-\n",
     "datasets[0].acceleration.refresh_cron", ["invalid cron expression"]),
    ("append-needs-time-column", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_mode: append  # <-\n",
     "datasets[0].acceleration.refresh_mode", ["append refresh needs the dataset's time_column"]),
    ("window-needs-time-column", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_data_window: 1d  # <-\n",
     "datasets[0].acceleration.refresh_data_window", ["needs the dataset's time_column"]),
    ("retention-needs-time-column", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n"
     "      retention_check_enabled: true\n      retention_period: 1d  # <-\n",
     "datasets[0].acceleration.retention_period", ["retention_period needs the dataset's time_column"]),
    ("retention-needs-period", "datasets:\n  - from: file:x.csv\n    name: x\n    time_column: t\n    acceleration:\n"
     "      retention_check_enabled: true  # <-\n",
     "datasets[0].acceleration.retention_check_enabled", ["needs retention_period"]),
    ("on-conflict-not-in-pk", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      primary_key: id\n"
     "      on_conflict:\n        other: upsert  # <-\n",
     "datasets[0].acceleration.on_conflict.other", ["'other' is not in primary_key (id)"]),
    ("on-conflict-needs-pk", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n"
     "      on_conflict:  # <-\n        id: drop\n", "datasets[0].acceleration.on_conflict", ["needs primary_key"]),
    ("on-conflict-action", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      primary_key: id\n"
     "      on_conflict:\n        id: replace  # <-\n", "datasets[0].acceleration.on_conflict.id",
     ["invalid value 'replace'", "allowed: drop, upsert"]),
    ("acceleration-params-key", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      engine: duckdb\n"
     "      params:\n        duckdb_threads: 4  # <-\n", "datasets[0].acceleration.params.duckdb_threads",
     ["unknown key 'duckdb_threads'", "allowed: duckdb_file, duckdb_memory_limit"]),
    ("refresh-min-interval", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n"
     "      params:\n        refresh_min_interval: soon  # <-\n", "datasets[0].acceleration.params.refresh_min_interval",
     ["invalid duration 'soon'"]),
    ("duckdb-param-on-arrow", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n"
     "      params:\n        duckdb_file: x.db  # <-\n", "datasets[0].acceleration.params.duckdb_file", ["needs engine: duckdb"]),
    ("file-mode-on-arrow", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      mode: file  # <-\n",
     "datasets[0].acceleration.mode", ["needs engine: duckdb"]),
    ("retry-attempts-zero", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_retry_max_attempts: 0  # <-\n",
     "datasets[0].acceleration.refresh_retry_max_attempts", ["must be at least 1"]),
    ("bool-not-bool", "datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_retry_enabled: maybe  # <-\n",
     "datasets[0].acceleration.refresh_retry_enabled", ["expected true or false", "'maybe'"]),
    ("datasets-not-list", "datasets:  # <-\n  x: 1\n", "datasets", ["expected a list"]),
    ("runtime-unknown-key", "runtime:\n  telemetry: {}  # <-\n", "runtime.telemetry",
     ["unknown key 'telemetry'", "allowed: auth, tls, task_history, results_cache, params, snapshots"]),
    ("runtime-params-key", "runtime:\n  params:\n    threads: 4  # <-\n", "runtime.params.threads",
     ["unknown key 'threads'", "allowed: memory_limit, query_timeout, max_rows, max_sql_length, max_sql_depth, max_sql_terms"]),
    ("runtime-max-rows", "runtime:\n  params:\n    max_rows: lots  # <-\n", "runtime.params.max_rows",
     ["expected an integer"]),
    ("runtime-memory-limit", "runtime:\n  params:\n    memory_limit: big  # <-\n", "runtime.params.memory_limit",
     ["expected a size"]),
    ("captured-output", "runtime:\n  task_history:\n    captured_output: full  # <-\n",
     "runtime.task_history.captured_output", ["allowed: none, truncated"]),
    ("tls-needs-files", "runtime:\n  tls:\n    enabled: true  # <-\n    key_file: k.pem\n", "runtime.tls.enabled",
     ["needs certificate_file"]),
    ("api-key-needs-keys", "runtime:\n  auth:\n    api_key:\n      enabled: true  # <-\n", "runtime.auth.api_key.enabled",
     ["at least one key"]),
    ("secret-store-unknown-key", "secrets:\n  - from: env\n    name: env\n    params: {}  # <-\n", "secrets[0].params",
     ["unknown key 'params'", "allowed: from, name"]),
    ("duplicate-yaml-key", "datasets:\n  - from: file:x.csv\n    name: x\n    name: y  # <-\n", "datasets[0].name",
     ["duplicate key 'name'", "first at line 6"]),
    ("yaml-syntax", "datasets:\n  - from: file:x.csv\n    name: [x  # <-\n", "", ["YAML syntax error"]),
]


@pytest.mark.parametrize("case_id, body, key, fragments", BAD_PODS, ids=[c[0] for c in BAD_PODS])
def test_bad_pod_reports_file_line_key(case_id: str, body: str, key: str, fragments: list[str]) -> None:
    head = "version: v2  # <-\nkind: Spicepod\nname: t\n" if case_id == "bad-version" else HEAD
    text = head + body
    err = _errors(body, head=head)
    line = _marked_line(text)
    if case_id == "yaml-syntax":  # the parser notices the unclosed flow sequence at the end of input
        line = len(text.splitlines()) + 1
    matches = [i for i in err.issues if i.key == key]
    assert matches, f"no issue for {key!r} in:\n{describe_errors(err)}"
    issue = matches[0]
    assert issue.file == FILE and issue.line == line, describe_errors(err)
    for fragment in fragments:
        assert fragment in issue.message, describe_errors(err)
    prefix = f"{FILE}:{line}: {key}: " if key else f"{FILE}:{line}: "
    assert f"{prefix}{issue.message}" in str(err).splitlines()


def test_at_least_25_bad_pod_cases() -> None:
    assert len(BAD_PODS) >= 25


@pytest.mark.parametrize("text, fragment", [
    ("", "the file is empty"),
    ("- a\n- b\n", "expected a mapping at the top level"),
    ("just a string\n", "expected a mapping at the top level"),
])
def test_empty_or_non_mapping_file(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_pod_text(text, file=FILE, env={})
    assert fragment in str(info.value) and FILE in str(info.value)


def test_missing_top_level_keys_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        load_pod_text("kind: Spicepod\n", file=FILE, env={})
    keys = {i.key for i in info.value.issues}
    assert keys == {"version", "name"}


def test_many_problems_reported_at_once() -> None:
    body = """\
        datasets:
          - from: file:x.csv
            name: x
            colour: blue
            acceleration:
              engine: sqlite
              refresh_check_interval: 5 fortnights
          - from: file:y.csv
            name: x
        views:
          - name: v
        runtime:
          params:
            threads: 2
        """
    err = _errors(body)
    got = [(i.line, i.key) for i in err.issues]
    assert got == [
        (7, "datasets[0].colour"),
        (9, "datasets[0].acceleration.engine"),
        (10, "datasets[0].acceleration.refresh_check_interval"),
        (12, "datasets[1].name"),
        (14, "views[0].sql"),
        (17, "runtime.params.threads"),
    ], describe_errors(err)
    assert describe_errors(err).count("\n") == len(got) - 1
    assert str(err) == describe_errors(err)


# ---------------------------------------------------------------------------------------------
# secrets

def test_secret_and_env_substitution_anywhere_in_a_string() -> None:
    env = {"PG_PASS": "s3cret!", "HOST": "db.internal", "INTERVAL": "15m"}
    pod = _pod("""\
        datasets:
          - from: file:x.csv
            name: x
            description: served from ${env:HOST}
            params:
              pg_connection_string: postgres://u:${secrets:PG_PASS}@${env:HOST}:5432/shop
            acceleration:
              refresh_check_interval: ${env:INTERVAL}
        """, env)
    ds = pod.datasets[0]
    assert ds.params["pg_connection_string"] == "postgres://u:s3cret!@db.internal:5432/shop"
    assert ds.description == "served from db.internal"
    assert ds.acceleration.refresh_check_interval == timedelta(minutes=15)
    assert {"s3cret!", "db.internal", "15m"} <= pod.secret_values
    assert "s3cret!" not in repr(pod) and "s3cret!" not in repr(ds.params)


def test_declared_env_store_and_named_store() -> None:
    body = "secrets:\n  - from: env\n    name: local\ndatasets:\n  - from: file:${local:DIR}/x.csv\n    name: x\n"
    pod = _pod(body, {"DIR": "data"})
    assert pod.datasets[0].connector_path == "data/x.csv"
    assert [(s.from_, s.name) for s in pod.secrets] == [("env", "local")]


def test_missing_secret_names_the_secret_key_and_line() -> None:
    err = _errors("datasets:\n  - from: file:x.csv\n    name: x\n    params:\n      pg_pass: ${secrets:PG_PASS}\n")
    [issue] = err.issues
    assert (issue.line, issue.key) == (8, "datasets[0].params.pg_pass")
    assert "secret 'PG_PASS' is not set" in issue.message and "${secrets:PG_PASS}" in issue.message


def test_missing_secret_in_typed_field_is_one_issue() -> None:
    err = _errors("datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      engine: ${env:ENGINE}\n")
    assert [(i.line, i.key) for i in err.issues] == [(8, "datasets[0].acceleration.engine")]
    assert "ENGINE" in err.issues[0].message


def test_unknown_secret_store_reference() -> None:
    err = _errors("datasets:\n  - from: file:x.csv\n    name: x\n    params:\n      a: ${vault:TOKEN}\n")
    assert "unknown secret store 'vault'" in str(err) and "known: env, secrets" in str(err)


def test_bad_value_from_secret_shows_reference_not_value() -> None:
    env = {"ENGINE": "hunter2-engine", "IVL": "hunter2-interval", "PW": "hunter2"}
    err = _errors("""\
        datasets:
          - from: file:x.csv
            name: x
            params:
              pg_pass: ${secrets:PW}
            acceleration:
              engine: ${secrets:ENGINE}
              refresh_check_interval: ${env:IVL}
              retry: hunter2 is not a key
              refresh_sql: "   "
        """, env)
    text = str(err) + repr(err.issues)
    assert "hunter2" not in text
    assert "${secrets:ENGINE}" in text and "${env:IVL}" in text
    engine = next(i for i in err.issues if i.key.endswith("engine"))
    assert engine.message.startswith("invalid value ${secrets:ENGINE}; allowed: arrow, duckdb")


def test_literal_credentials_are_masked_in_repr() -> None:
    pod = _pod("datasets:\n  - from: file:x.csv\n    name: x\n    params:\n      pg_pass: plain-pw\n"
               "runtime:\n  auth:\n    api_key: {enabled: true, keys: [k-123]}\n")
    assert pod.datasets[0].params["pg_pass"] == "plain-pw" and pod.runtime.auth.api_key.keys == ("k-123",)
    assert "plain-pw" not in repr(pod) and "k-123" not in repr(pod)
    assert {"plain-pw", "k-123"} <= pod.secret_values


def test_redact() -> None:
    assert redact("user=bob pass=abc123 again abc123", ["abc123", ""]) == "user=bob pass=*** again ***"
    assert redact("token=abcdef", ["abc", "abcdef"]) == "token=***"
    assert redact("nothing here", []) == "nothing here"


# ---------------------------------------------------------------------------------------------
# not supported yet

NSY_CASES = [
    ("secrets:\n  - from: aws_secrets_manager  # <-\n    name: aws\n", "secrets[0].from", 5),
    ("datasets:\n  - from: file:x.csv\n    name: x\n    access: read_write  # <-\n", "datasets[0].access", 7),
]


@pytest.mark.parametrize("body, key, line", NSY_CASES, ids=[c[1] for c in NSY_CASES])
def test_not_supported_yet(body: str, key: str, line: int) -> None:
    err = _errors(body)
    issue = next(i for i in err.issues if i.key == key)
    assert issue.line in (line, line - 1) and issue.file == FILE
    assert "not supported yet" in issue.message


def test_changes_refresh_is_only_for_postgres() -> None:
    err = _errors("datasets:\n  - from: file:x.csv\n    name: x\n    acceleration:\n      refresh_mode: changes  # <-\n")
    issue = next(i for i in err.issues if i.key == "datasets[0].acceleration.refresh_mode")
    assert issue.line == 8 and "not supported yet for file sources" in issue.message
    err = _errors("datasets:\n  - from: postgres:public.t\n    name: x\n    acceleration:\n"
                  "      refresh_mode: changes  # <-\n")
    issue = next(i for i in err.issues if i.key == "datasets[0].acceleration.refresh_mode")
    assert "needs primary_key" in issue.message


def test_not_supported_table_is_covered() -> None:
    assert len(NSY_CASES) == len(NOT_SUPPORTED_YET)
    assert all("not supported yet" in reason for _, reason in NOT_SUPPORTED_YET)


def test_empty_models_and_disabled_cache_are_fine() -> None:
    pod = _pod("models: []\nembeddings: []\nruntime:\n  results_cache:\n    enabled: false\n")
    assert pod.models == () and not pod.runtime.results_cache.enabled


def test_secret_in_unsupported_store_is_not_reported_twice() -> None:
    err = _errors("secrets:\n  - from: kubernetes\n    name: k8s\ndatasets:\n  - from: file:x.csv\n    name: x\n"
                  "    params:\n      pg_pass: ${k8s:PW}\n")
    assert [i.key for i in err.issues] == ["secrets[0].from"]


# ---------------------------------------------------------------------------------------------
# durations

@pytest.mark.parametrize("text, expected", [
    ("10s", timedelta(seconds=10)), ("5m", timedelta(minutes=5)), ("1h", timedelta(hours=1)),
    ("1d", timedelta(days=1)), ("500ms", timedelta(milliseconds=500)), ("1h30m", timedelta(hours=1, minutes=30)),
    ("2w", timedelta(weeks=2)), ("1.5h", timedelta(minutes=90)), (" 1h 30m ", timedelta(minutes=90)),
    ("30sec", timedelta(seconds=30)), ("2hours", timedelta(hours=2)), ("0s", timedelta(0)),
])
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "s", "10x", "-5m", "1h 30", "5 fortnights", "1h30", "ten seconds"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration.*10s, 5m"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["10s", "1h30m", "500ms", "2d3h", "1m0s"])
def test_format_duration_round_trips(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_column_types_reach_the_connector_spec(tmp_path):
    import pyarrow as pa

    pod_file = tmp_path / "spicepod.yaml"
    pod_file.write_text(HEAD + "datasets:\n  - from: https://h/x.json\n    name: x\n    columns:\n"
                        "      - name: a\n        type: BIGINT\n      - name: b\n        type: STRUCT(c DECIMAL(10, 2))\n"
                        "      - name: d\n        description: no type\n")
    pod = load_pod(pod_file)
    assert pod.datasets[0].column_types == {"a": pa.int64(), "b": pa.struct([("c", pa.decimal128(10, 2))])}
