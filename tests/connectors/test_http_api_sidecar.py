"""JSON API datasets through the real sidecar (`satchel run`): one accelerated, one live, with
nested fields, served by the paginating test server subprocess."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.connectors.http_api_server import ApiServer, start_api_server

TOKEN = "s1decar-T0ken-Sh0uld-N3ver-Leak"
ORDERS = [{"id": i, "customer": {"name": f"c{i % 3}", "tier": "gold" if i % 3 == 0 else "basic"},
           "items": [{"sku": f"s{j}", "qty": j + 1} for j in range(i % 4)], "total": round(i * 2.5, 2),
           "placed_at": f"2024-03-{i % 28 + 1:02d}T08:30:00Z"} for i in range(57)]


@pytest.fixture(scope="module")
def api() -> Iterator[ApiServer]:
    server = start_api_server()
    server.load("orders", ORDERS, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        yield server
    finally:
        server.stop()


def test_sql_over_accelerated_and_live_api_datasets(api: ApiServer, satchel_server) -> None:
    pod = f"""
    version: v1
    kind: Spicepod
    name: api
    datasets:
      - from: {api.base_url}/cursor/orders?limit=20
        name: orders
        description: Orders from the shop API
        params:
          json_pointer: /data/items
          http_pagination: cursor
          http_cursor_pointer: /paging/next_cursor
          http_cursor_param: after
          http_auth: Bearer ${{secrets:SHOP_TOKEN}}
          http_rate_limit: "50"
        columns:
          - name: total
            type: DECIMAL(10,2)
        acceleration:
          enabled: true
          engine: duckdb
      - from: {api.base_url}/offset/orders
        name: orders_live
        params:
          json_pointer: /data/items
          http_pagination: offset
          http_offset_param: skip
          http_limit_param: take
          http_page_size: "25"
          http_auth: Bearer ${{secrets:SHOP_TOKEN}}
    """
    server = satchel_server(pod, env={"SHOP_TOKEN": TOKEN})
    for table in ("orders", "orders_live"):
        response = server.sql(f"SELECT count(*) AS n, sum(array_length(items, 1)) AS lines FROM {table}")
        assert response.status_code == 200, response.text
        assert response.json() == [{"n": 57, "lines": sum(len(o["items"]) for o in ORDERS)}]
        response = server.sql(
            f"SELECT customer['tier'] AS tier, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1")
        assert response.status_code == 200, response.text
        assert response.json() == [{"tier": "basic", "n": 38}, {"tier": "gold", "n": 19}]
        response = server.sql(f"SELECT id, total, items[1]['sku'] AS first_sku, placed_at FROM {table} "
                              f"WHERE id = 7")
        assert response.status_code == 200, response.text
        row = response.json()[0]
        assert row["id"] == 7 and float(row["total"]) == 17.5 and row["first_sku"] == "s0"
        assert row["placed_at"].startswith("2024-03-08")
    joined = server.sql("SELECT count(*) AS n FROM orders o JOIN orders_live l ON o.id = l.id "
                        "WHERE l.customer['name'] = 'c1'")
    assert joined.status_code == 200, joined.text
    assert joined.json() == [{"n": 19}]
    assert TOKEN not in server.log()
