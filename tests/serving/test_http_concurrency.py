"""Concurrent streaming JSON responses never share a formatter connection (issue: four clients
reading large JSON results deadlocked the whole process, /health included). Real sidecar."""

from __future__ import annotations

import concurrent.futures
import io

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROWS = 1_000_000


@pytest.fixture(scope="module")
def server(module_satchel_server):
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array(range(ROWS), pa.int64()),
                             "v": pa.array([i * 0.5 for i in range(ROWS)]),
                             "s": pa.array([f"row {i}" for i in range(ROWS)])}), buffer)
    return module_satchel_server("""
version: v1
kind: Spicepod
name: concurrency
datasets:
  - from: file:big.parquet
    name: big
    acceleration:
      engine: duckdb
""", files={"big.parquet": buffer.getvalue()}, timeout=120)


def test_four_clients_stream_large_json_results_at_once(server) -> None:
    def read(_: int) -> int:
        with httpx.stream("POST", f"{server.http_url}/v1/sql", content="SELECT * FROM big LIMIT 200000",
                          timeout=httpx.Timeout(120)) as r:
            assert r.status_code == 200
            body = b"".join(r.iter_bytes())
        return body.count(b'"id":')

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(3):  # the deadlock showed on the second round
            futures = [pool.submit(read, i) for i in range(4)]
            assert httpx.get(f"{server.http_url}/health", timeout=30).status_code == 200
            assert [f.result(timeout=180) for f in futures] == [200_000] * 4
