"""runtime.params guardrails: query_timeout cancels work inside DuckDB; max_rows truncates.

Both read what was recorded from the runtime's task history itself: a SQL read of
`runtime.task_history` runs in a federated engine worker, and on a pod of DuckDB datasets alone
the first such read starts that process, which on a loaded machine can take longer than this
pod's 1 s query_timeout (tests/serving covers the history over SQL)."""

from __future__ import annotations

import io
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import QueryTimeout


def _parquet(n: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"k": pa.array(range(n), pa.int64())}), sink)
    return sink.getvalue()


POD = """
version: v1
kind: Spicepod
name: limits
runtime:
  params:
    query_timeout: 1s
    max_rows: 50
datasets:
  - from: file:big.parquet
    name: big
    acceleration:
      engine: duckdb
"""


def test_query_timeout_interrupts_a_long_duckdb_query(make_runtime):
    rt = make_runtime(POD, files={"big.parquet": _parquet(2_000_000)}, start=True)
    assert rt.wait_ready(30)
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="query_timeout"):
        rt.query("SELECT count(*) FROM big a JOIN big b ON a.k + b.k = 7", protocol="test").read_all()
    assert time.monotonic() - started < 10  # cancelled inside DuckDB, not run to completion
    errors = [e for e in rt.task_history.table().column("error").to_pylist() if e is not None]
    assert any("query_timeout" in e for e in errors)
    # the sidecar keeps serving after a cancelled query
    assert rt.query("SELECT count(*) AS n FROM big").read_all().to_pylist() == [{"n": 2_000_000}]


def test_max_rows_truncates_and_is_recorded(make_runtime):
    rt = make_runtime(POD, files={"big.parquet": _parquet(1000)}, start=True)
    assert rt.wait_ready(30)
    assert rt.query("SELECT k FROM big", protocol="test").read_all().num_rows == 50
    history = rt.task_history.table()
    tested = [row["truncated"] for row in history.select(["protocol", "truncated"]).to_pylist() if row["protocol"] == "test"]
    assert tested == [True]
