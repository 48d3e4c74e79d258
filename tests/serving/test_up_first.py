"""Up first: HTTP and Flight SQL accept and answer before any source does, whatever the sources
do (never answer, crawl); one stuck source never holds up another dataset's refreshes; a live
query on a silent source ends at its deadline; a refresh stuck on its source ends at its
refresh_timeout. Real `satchel run` processes; the sources are a SilentServerDouble (accepts,
never answers) and a real HTTP server whose answers are delayed."""

from __future__ import annotations

import io
import time

import adbc_driver_flightsql.dbapi as flightsql
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import SourceServer
from tests.integration.waiting import wait_for
from tests.silent_server import SilentServerDouble, silent_server  # noqa: F401 - fixture

SLOW_S = 20.0  # the slow source answers after this long


def _parquet(rows: int) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array(range(rows), pa.int64())}), buffer)
    return buffer.getvalue()


def _pod(silent: SilentServerDouble, slow: SourceServer) -> str:
    return f"""
version: v1
kind: Spicepod
name: up_first
runtime:
  params:
    query_timeout: 3s
datasets:
  - from: {silent.url('/stuck.parquet')}
    name: stuck
    acceleration:
      engine: arrow
      refresh_check_interval: 1h
      params:
        refresh_timeout: 4s
  - from: {silent.url('/live.parquet')}
    name: stuck_live
    ready_state: on_registration
  - from: {slow.url('/slow.parquet')}
    name: slow
    acceleration:
      engine: duckdb
  - from: file:ok.csv
    name: ok
    acceleration:
      engine: arrow
      refresh_check_interval: 1s
views:
  - name: stuck_view
    sql: SELECT id FROM stuck_live
"""


def _status(server) -> dict[str, dict]:
    body = httpx.get(f"{server.http_url}/v1/status", timeout=5).json()
    return {d["name"]: d for d in body["datasets"]}


def test_servers_answer_first_and_a_stuck_source_holds_up_nothing(satchel_server, silent_server, source_server):
    source_server.files["/slow.parquet"] = _parquet(100)
    source_server.plan("/slow.parquet", [(200, SLOW_S)])
    started = time.monotonic()
    server = satchel_server(_pod(silent_server, source_server), files={"ok.csv": "a\n1\n"}, wait_ready=False)
    up_after = time.monotonic() - started
    assert up_after < SLOW_S / 2, server.log()  # /health answered long before any source could

    # liveness, readiness and status answer at once while every source is still working
    for path, codes in (("/health", {200}), ("/v1/ready", {503}), ("/v1/status", {200})):
        r = httpx.get(f"{server.http_url}{path}", timeout=2)
        assert r.status_code in codes, (path, r.status_code, r.text)
    assert not _status(server)["slow"]["ready"]  # its first download is still under way
    with flightsql.connect(server.flight_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS one")
        assert cur.fetch_arrow_table().to_pylist() == [{"one": 1}]

    # a healthy dataset refreshes on its schedule although two datasets wait on a silent source
    assert wait_for(lambda: (_status(server)["ok"]["refresh_count"] or 0) >= 3, timeout=30), _status(server)["ok"]

    # the refresh stuck on the silent source ends at its refresh_timeout (not `loading` for ever)
    assert wait_for(lambda: _status(server)["stuck"]["status"] == "error", timeout=30), _status(server)["stuck"]
    assert "refresh_timeout" in _status(server)["stuck"]["last_error"]

    # a live query on the silent source ends at the query deadline, on Flight and HTTP alike
    for sql in ("SELECT count(*) FROM stuck_live", "SELECT * FROM stuck_view"):
        t0 = time.monotonic()
        with pytest.raises(Exception, match="timeout|deadline"):
            with flightsql.connect(server.flight_uri) as conn, conn.cursor() as cur:
                cur.execute(sql)
                cur.fetch_arrow_table()
        assert time.monotonic() - t0 < 20
    r = httpx.post(f"{server.http_url}/v1/sql", content="SELECT * FROM stuck_live", timeout=20)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text

    # every query's and refresh's connection to the silent source was shut down by its cancel
    assert wait_for(lambda: silent_server.open_connections() == 0, timeout=10), silent_server.open_connections()

    # and the slow source's first load lands when it finally answers
    assert wait_for(lambda: _status(server)["slow"]["ready"], timeout=SLOW_S + 30), _status(server)["slow"]
    assert server.sql("SELECT count(*) FROM slow").json() == [{"count": 100}]
