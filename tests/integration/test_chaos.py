"""Chaos with real parts: a sidecar under mixed load from 8 clients while its model worker is
SIGKILLed, its PostgreSQL source is stopped and started again, and the whole sidecar is SIGKILLed
during a refresh and restarted on the same data directory.

Proven: zero failed queries on accelerated data while the sidecar runs, and after recovery the
accelerated data equal the source."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from tests.integration.postgres_server import PgServer, _run_as_postgres, start_server

pytestmark = [pytest.mark.integration, pytest.mark.llm]

ROWS = 20_000


@pytest.fixture
def private_pg():
    """A PostgreSQL cluster of this test's own (it is stopped and started again)."""
    server = start_server()
    yield server
    server.stop()


def _pg_ctl(server: PgServer, action: str) -> None:
    data = str(server.root / "data")
    if action == "stop":
        _run_as_postgres([str(server.bindir / "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"])
    else:
        opts = (f"-p {server.port} -k {server.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c log_statement=all -c shared_preload_libraries=pg_stat_statements -c wal_level=logical")
        _run_as_postgres([str(server.bindir / "pg_ctl"), "-D", data, "-o", opts, "-l", str(server.log_path),
                          "-w", "-t", "30", "start"])


def _pod(server: PgServer, gguf: Path) -> str:
    return f"""
version: v1
kind: Spicepod
name: chaos
datasets:
  - from: postgres:public.chaos_orders
    name: orders
    params:
{server.params_yaml(6)}
    acceleration:
      enabled: true
      engine: duckdb
      mode: file
      refresh_check_interval: 1s
  - from: file:items.csv
    name: items
    acceleration:
      enabled: true
models:
  - from: file:{gguf}
    name: gemma
    params:
      chat_format: gemma
      n_ctx: 1024
      n_threads: 1
      max_tokens: 64
"""


def _load(server: PgServer, version: int) -> None:
    """Version 1 creates the table; later versions change every row in one statement."""
    if version > 1:
        return server.execute(f"UPDATE public.chaos_orders SET version = {version}")
    ids = pa.array(range(1, ROWS + 1), pa.int64())
    server.ingest("public.chaos_orders", pa.table({"id": ids, "version": pa.array([version] * ROWS, pa.int64())}),
                  create_sql="CREATE TABLE public.chaos_orders (id bigint PRIMARY KEY, version bigint)")


class Clients:
    """8 clients (HTTP and Flight SQL) querying accelerated data in a loop; every failure kept."""

    QUERIES = ("SELECT count(*) AS n FROM orders", "SELECT max(id) AS m FROM orders WHERE id > 10",
               "SELECT count(*) AS n FROM items", "SELECT o.id FROM orders o JOIN items i ON o.id = i.id "
               "ORDER BY o.id LIMIT 3")

    def __init__(self, http_url: str, flight_uri: str) -> None:
        self.http_url, self.flight_uri = http_url, flight_uri
        self.stop, self.ok, self.failures = threading.Event(), 0, []
        self.threads = [threading.Thread(target=self._http if i % 2 else self._flight, args=(i,), daemon=True)
                        for i in range(8)]

    def _http(self, i: int) -> None:
        with httpx.Client(timeout=60) as c:
            while not self.stop.is_set():
                sql = self.QUERIES[i % len(self.QUERIES)]
                try:
                    r = c.post(f"{self.http_url}/v1/sql", content=sql)
                    assert r.status_code == 200 and r.json(), r.text
                    self.ok += 1
                except Exception as e:
                    self.failures.append(f"http {sql}: {e!r}")

    def _flight(self, i: int) -> None:
        import adbc_driver_flightsql.dbapi as flightsql

        with flightsql.connect(self.flight_uri) as conn, conn.cursor() as cur:
            while not self.stop.is_set():
                sql = self.QUERIES[i % len(self.QUERIES)]
                try:
                    cur.execute(sql)
                    assert cur.fetchall()
                    self.ok += 1
                except Exception as e:
                    self.failures.append(f"flight {sql}: {e!r}")

    def __enter__(self) -> "Clients":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def _model(server) -> dict:
    return next(m for m in httpx.get(f"{server.http_url}/v1/status", timeout=10).json()["models"])


def _wait(predicate, timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_chaos_mixed_load_model_kill_source_restart_and_sidecar_sigkill(satchel_server, private_pg, gguf, tmp_path):
    _load(private_pg, 1)
    items = "id,name\n" + "".join(f"{i},item{i}\n" for i in range(1, 51))
    pod_dir, data_dir = tmp_path / "pod", tmp_path / "data"
    server = satchel_server(_pod(private_pg, gguf), files={"items.csv": items}, pod_dir=pod_dir, data_dir=data_dir,
                            timeout=120)
    _wait(lambda: _model(server)["status"] == "ready", what="the model")

    with Clients(server.http_url, server.flight_uri) as clients:
        time.sleep(2)
        # 1. the model worker dies mid-completion
        chat = threading.Thread(target=lambda: httpx.post(f"{server.http_url}/v1/chat/completions", timeout=120,
                                json={"model": "gemma", "messages": [{"role": "user", "content": "A story."}]}))
        chat.start()
        time.sleep(0.5)
        os.kill(_model(server)["worker_pid"], signal.SIGKILL)
        chat.join(120)
        _wait(lambda: _model(server)["status"] == "ready" and _model(server)["restarts"] == 1, what="the worker")
        # 2. the source goes away for a while, then comes back with new data
        _pg_ctl(private_pg, "stop")
        time.sleep(4)  # refreshes fail meanwhile; the accelerated copy keeps serving
        _pg_ctl(private_pg, "start")
        _load(private_pg, 2)
        _wait(lambda: server.sql("SELECT min(version) AS v FROM orders").json() == [{"v": 2}], what="refresh v2")
        time.sleep(1)
    assert clients.failures == [] and clients.ok > 50

    # 3. SIGKILL the whole sidecar during a refresh of new data, then restart it on the same files
    _load(private_pg, 3)
    time.sleep(0.7)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    restarted = satchel_server(_pod(private_pg, gguf), files={"items.csv": items}, pod_dir=pod_dir,
                               data_dir=data_dir, timeout=120)
    _wait(lambda: restarted.sql("SELECT min(version) AS lo, max(version) AS hi, count(*) AS n FROM orders").json()
          == [{"lo": 3, "hi": 3, "n": ROWS}], what="the accelerated data to equal the source")
    source = private_pg.fetch("SELECT sum(id), sum(version), count(*) FROM public.chaos_orders")[0]
    accel = restarted.sql("SELECT sum(id) AS a, sum(version) AS b, count(*) AS c FROM orders").json()[0]
    assert (accel["a"], accel["b"], accel["c"]) == tuple(int(v) for v in source)
