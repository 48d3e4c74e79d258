"""Refresh as a real `satchel run` shows it: readiness while a slow source loads, a failing refresh
that keeps the last good data and reports the error (datasets, task history, metrics), and
file-mode restarts that serve the previous run's data at once."""

from __future__ import annotations

import os
import time

import httpx
import pyarrow as pa
import pyarrow.parquet as pq


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def versioned(version: int, rows: int = 500) -> pa.Table:
    return pa.table({"id": pa.array(range(rows), pa.int64()), "version": pa.array([version] * rows, pa.int64())})


def datasets(server) -> dict[str, dict]:
    return {d["name"]: d for d in httpx.get(f"{server.http_url}/v1/datasets", headers=server.headers(), timeout=10).json()}


def wait_for(predicate, timeout: float = 15, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_ready_is_503_until_every_dataset_loaded_once(satchel_server, source_server, tmp_path):
    source_server.files["/slow.parquet"] = parquet_bytes(versioned(1))
    # download 1 = the first load (which infers the schema from it), held until released
    source_server.plan("/slow.parquet", [(200, 30)])
    server = satchel_server(f"""
version: v1
kind: Spicepod
name: slow
datasets:
  - from: {source_server.url('/slow.parquet')}
    name: slow
    acceleration:
      engine: duckdb
  - from: file:fast.csv
    name: fast
    acceleration:
      engine: arrow
""", files={"fast.csv": "a,b\n1,2\n"}, wait_ready=False)
    wait_for(lambda: source_server.count("/slow.parquet") >= 1, what="the slow load to start")
    assert httpx.get(f"{server.http_url}/health", timeout=10).status_code == 200
    ready = httpx.get(f"{server.http_url}/v1/ready", timeout=10)
    assert ready.status_code == 503 and "slow" in ready.text and "fast" not in ready.text.split("waiting for")[-1]
    not_ready = server.sql("SELECT count(*) FROM slow")
    assert not_ready.status_code == 503 and not_ready.json()["error"]["code"] == "dataset_not_ready"
    assert server.sql("SELECT a FROM fast").json() == [{"a": 1}]
    assert datasets(server)["slow"]["ready"] is False
    source_server.release.set()
    wait_for(lambda: httpx.get(f"{server.http_url}/v1/ready", timeout=10).status_code == 200, what="ready")
    assert server.sql("SELECT count(*) AS n FROM slow").json() == [{"n": 500}]
    assert source_server.count("/slow.parquet") == 1  # the first load read the download that gave the schema


def test_failing_source_keeps_ready_503_and_reports_the_error(satchel_server):
    server = satchel_server("""
version: v1
kind: Spicepod
name: broken
datasets:
  - from: file:missing.parquet
    name: broken
    acceleration:
      refresh_retry_enabled: false
""", wait_ready=False)
    wait_for(lambda: datasets(server)["broken"]["last_error"], what="the first load to fail")
    assert httpx.get(f"{server.http_url}/v1/ready", timeout=10).status_code == 503
    info = datasets(server)["broken"]
    assert info["status"] == "error" and "missing.parquet" in info["last_error"]


def test_failed_refresh_keeps_the_data_and_is_visible_everywhere(satchel_server, tmp_path):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    pq.write_table(versioned(1), pod_dir / "t.parquet")
    server = satchel_server("""
version: v1
kind: Spicepod
name: failing
datasets:
  - from: file:t.parquet
    name: t
    acceleration:
      engine: duckdb
      refresh_retry_enabled: false
      params:
        refresh_min_interval: 0s  # two on-demand refreshes back to back
""", pod_dir=pod_dir)
    assert server.sql("SELECT count(*) AS n, max(version) AS v FROM t").json() == [{"n": 500, "v": 1}]
    count_before = datasets(server)["t"]["refresh_count"]
    (pod_dir / "t.parquet").write_bytes(b"PAR1 this is not parquet any more")
    resp = httpx.post(f"{server.http_url}/v1/datasets/t/acceleration/refresh", timeout=10)
    assert resp.status_code == 201
    info = wait_for(lambda: (d := datasets(server)["t"])["last_error"] and d, what="last_error")
    assert "t.parquet" in info["last_error"] and info["ready"] is True
    assert info["status"] == "ready (last refresh failed)" and info["refresh_count"] == count_before
    # the last good data is still served
    assert server.sql("SELECT count(*) AS n, max(version) AS v FROM t").json() == [{"n": 500, "v": 1}]
    assert httpx.get(f"{server.http_url}/v1/ready", timeout=10).status_code == 200
    history = server.sql("SELECT query_text, error FROM runtime.task_history WHERE task = 'refresh' ORDER BY task_id").json()
    assert history[0]["error"] is None and "t.parquet" in history[-1]["error"]
    text = httpx.get(server.metrics_url, timeout=10).text
    assert 'satchel_dataset_refresh_errors_total{dataset="t"} 1.0' in text
    # and the next good version heals it
    tmp = pod_dir / "t.tmp"
    pq.write_table(versioned(2, 700), tmp)
    os.replace(tmp, pod_dir / "t.parquet")
    assert httpx.post(f"{server.http_url}/v1/datasets/t/acceleration/refresh", timeout=10).status_code == 201
    wait_for(lambda: datasets(server)["t"]["last_error"] is None, what="a good refresh")
    assert server.sql("SELECT count(*) AS n, max(version) AS v FROM t").json() == [{"n": 700, "v": 2}]


FILE_POD = """
version: v1
kind: Spicepod
name: durable
datasets:
  - from: {source}
    name: events
    acceleration:
      engine: duckdb
      mode: file
      refresh_check_interval: 1h
  - from: {source}
    name: events_mem
    ready_state: on_registration
    acceleration:
      engine: duckdb
"""


def test_file_mode_restart_serves_the_old_data_at_once(satchel_server, source_server, tmp_path):
    source_server.files["/events.parquet"] = parquet_bytes(versioned(7, 321))
    pod_dir = tmp_path / "pod"
    data_dir = tmp_path / "state"
    pod = FILE_POD.format(source=source_server.url("/events.parquet"))
    first = satchel_server(pod, pod_dir=pod_dir, data_dir=data_dir)
    assert first.sql("SELECT count(*) AS n, max(version) AS v FROM events").json() == [{"n": 321, "v": 7}]
    first.stop()
    assert (data_dir / "accelerated_duckdb.db").exists()

    # the source becomes unavailable; the restarted sidecar is ready with what it had
    del source_server.files["/events.parquet"]
    hits = source_server.count("/events.parquet")
    started = time.monotonic()
    second = satchel_server(pod, pod_dir=pod_dir, data_dir=data_dir, wait_ready=False)
    wait_for(lambda: httpx.get(f"{second.http_url}/health", timeout=5).status_code == 200, what="health")
    ready = httpx.get(f"{second.http_url}/v1/ready", timeout=10)
    # events_mem (memory, on_registration) cannot load but does not block readiness
    assert ready.status_code == 200, ready.text
    assert second.sql("SELECT count(*) AS n, max(version) AS v FROM events").json() == [{"n": 321, "v": 7}]
    assert time.monotonic() - started < 30
    info = datasets(second)["events"]
    assert info["ready"] is True and info["rows"] == 321
    # no reload was attempted for the reopened dataset (only events_mem tries the source, and fails)
    wait_for(lambda: datasets(second)["events_mem"]["last_error"], what="events_mem to fail")
    assert source_server.count("/events.parquet") > hits
    assert datasets(second)["events"]["refresh_count"] == 0
    assert datasets(second)["events"]["last_error"] is None
