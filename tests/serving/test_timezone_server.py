"""Time semantics do not depend on the host's time zone: a sidecar started with TZ set to New York
computes dates, truncations and hours in UTC on every route (DuckDB used to follow the host's
zone on its per-query cursors)."""

from __future__ import annotations

import datetime as dt
import io

import httpx
import pyarrow as pa

POD = """
version: v1
kind: Spicepod
name: tz
datasets:
  - from: file:data/orders
    name: orders_d
    acceleration:
      engine: duckdb
  - from: file:data/orders
    name: orders_a
    acceleration:
      engine: arrow
  - from: file:data/orders
    name: orders_f
"""

SQL = ("SELECT order_id, ordered_at, CAST(ordered_at AS DATE) AS d, date_trunc('day', ordered_at) AS day, "
       "extract(hour FROM ordered_at) AS h FROM {t} ORDER BY order_id LIMIT 300")


def test_host_time_zone_does_not_change_results(satchel_server, demo_pod_dir):
    server = satchel_server(POD, pod_dir=demo_pod_dir, env={"TZ": "America/New_York"})
    results = {}
    for t in ("orders_d", "orders_a", "orders_f"):
        resp = httpx.post(f"{server.http_url}/v1/sql", content=SQL.format(t=t),
                          headers={"Accept": "application/vnd.apache.arrow.stream"}, timeout=30)
        assert resp.status_code == 200, resp.text
        results[t] = pa.ipc.open_stream(io.BytesIO(resp.content)).read_all()
    table = results["orders_d"]
    assert table.schema.field("ordered_at").type == pa.timestamp("us", "UTC")
    assert table.schema.field("day").type == pa.timestamp("us", "UTC")
    for row in table.to_pylist():
        at = row["ordered_at"].astimezone(dt.timezone.utc)
        assert row["d"] == at.date()
        assert row["day"].astimezone(dt.timezone.utc) == at.replace(hour=0, minute=0, second=0, microsecond=0)
        assert row["h"] == at.hour
    assert results["orders_a"].to_pylist() == table.to_pylist()
    assert results["orders_f"].to_pylist() == table.to_pylist()
