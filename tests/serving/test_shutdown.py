"""`satchel run` shuts down cleanly on SIGTERM (Kubernetes) and SIGINT (Ctrl-C)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import time

import adbc_driver_flightsql.dbapi as flightsql
import pytest

from tests.integration.waiting import wait_for
from tests.silent_server import silent_server  # noqa: F401 - fixture


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_servers_and_runtime(satchel_server, demo_pod_dir, sig):
    server = satchel_server(pod_dir=demo_pod_dir)
    assert server.sql("SELECT count(*) FROM orders").json() == [{"count": 6000}]
    server.process.send_signal(sig)
    code = server.process.wait(timeout=20)
    assert "satchel: shutting down" in server.log()
    assert code in (0, 130), server.log()


# -- a signal at any moment exits within the bound (default 10 s) ------------------------------

BOUND_S = 10.0  # the default --shutdown-timeout / SATCHEL_SHUTDOWN_TIMEOUT
SLACK_S = 5.0  # process teardown on a busy shared machine


def _hung_pod(silent) -> str:
    """`stuck` loads from a source that never answers; `live` queries it; no deadline ends either."""
    return f"""
version: v1
kind: Spicepod
name: hung
runtime:
  params:
    query_timeout: 0s
datasets:
  - from: {silent.url('/stuck.parquet')}
    name: stuck
    params:
      http_timeout: 600s
    acceleration:
      engine: duckdb
      params:
        refresh_timeout: 0s
  - from: {silent.url('/live.parquet')}
    name: live
    params:
      http_timeout: 600s
"""


def _stop_within_bound(server, sig) -> tuple[int, float]:
    started = time.monotonic()
    server.process.send_signal(sig)
    code = server.process.wait(timeout=BOUND_S + 30)
    return code, time.monotonic() - started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_hung_first_load_exits_within_the_bound(satchel_server, silent_server, sig):
    server = satchel_server(_hung_pod(silent_server), wait_ready=False)
    assert wait_for(lambda: silent_server.accepted >= 1, timeout=30)  # the first load waits on the source
    code, took = _stop_within_bound(server, sig)
    assert took < BOUND_S + SLACK_S, (took, server.log())
    assert code in (0, 130), server.log()  # stopped cleanly, not by the backstop
    assert "satchel: shutting down" in server.log()


def test_signal_during_long_queries_exits_within_the_bound(satchel_server, silent_server):
    server = satchel_server(_hung_pod(silent_server), wait_ready=False)
    pool = concurrent.futures.ThreadPoolExecutor(4)

    def flight_query() -> None:
        with flightsql.connect(server.flight_uri) as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM live")
            cur.fetch_arrow_table()

    queries = [pool.submit(server.sql, "SELECT * FROM live"), pool.submit(flight_query)]
    assert wait_for(lambda: silent_server.accepted >= 2, timeout=30)  # the load and a query wait on the source
    time.sleep(1)
    code, took = _stop_within_bound(server, signal.SIGTERM)
    assert took < BOUND_S + SLACK_S, (took, server.log())
    assert code == 0, server.log()
    for query in queries:  # each client got an answer or a closed connection, never a hang
        with contextlib.suppress(Exception):
            query.result(timeout=30)
    pool.shutdown()


def test_shutdown_timeout_is_configurable(satchel_server, silent_server):
    server = satchel_server(_hung_pod(silent_server), wait_ready=False, env={"SATCHEL_SHUTDOWN_TIMEOUT": "3"})
    assert wait_for(lambda: silent_server.accepted >= 1, timeout=30)
    code, took = _stop_within_bound(server, signal.SIGTERM)
    assert took < 3 + SLACK_S, (took, server.log())
    assert "stopping (at most 3s)" in server.log()
