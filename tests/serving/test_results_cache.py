"""The results cache on a real sidecar: hits, bypass, invalidation by refresh, expiry, and one
principal's results never served to another."""

from __future__ import annotations

import time

import httpx
import pytest

CACHE = """
runtime:
  results_cache:
    enabled: true
    cache_max_size: 64MiB
    item_ttl: {ttl}
  auth:
    api_key:
      enabled: true
      keys: ["${{env:ADMIN_KEY}}"]
    principals:
      - name: red
        keys: ["${{env:RED_KEY}}"]
        datasets:
          - name: orders
            filter: "status = 'delivered'"
          - regions
"""
ADMIN, RED = "k-cache-admin", "k-cache-red"


def start(factory, pod_dir, ttl: str):
    pod = (pod_dir / "spicepod.yaml").read_text() + CACHE.format(ttl=ttl)
    return factory(pod, pod_dir=pod_dir, env={"ADMIN_KEY": ADMIN, "RED_KEY": RED})


def sql(server, text: str, key: str = ADMIN, **headers: str) -> httpx.Response:
    r = httpx.post(f"{server.http_url}/v1/sql", content=text, headers={"X-API-Key": key, **headers}, timeout=60)
    assert r.status_code == 200, r.text
    return r


@pytest.fixture(scope="module")
def server(module_satchel_server, module_demo_pod_dir):
    return start(module_satchel_server, module_demo_pod_dir, "10m")


def test_a_repeated_query_is_a_hit_and_no_cache_bypasses(server):
    q = "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status"
    first, second = sql(server, q), sql(server, q)
    assert first.headers["Results-Cache-Status"] == "MISS" and second.headers["Results-Cache-Status"] == "HIT"
    assert first.json() == second.json()
    assert sql(server, q, **{"Cache-Control": "no-cache"}).headers["Results-Cache-Status"] == "BYPASS"
    served = sql(server, f"SELECT served_by FROM runtime.task_history WHERE query_text = '{q}' ORDER BY task_id").json()
    assert [r["served_by"] for r in served] == ["accelerator", "cache", "accelerator"]


def test_a_refresh_invalidates_at_once(server):
    q = "SELECT count(*) AS n FROM orders"
    sql(server, q)
    assert sql(server, q).headers["Results-Cache-Status"] == "HIT"
    r = httpx.post(f"{server.http_url}/v1/datasets/orders/acceleration/refresh?wait=true",
                   headers={"X-API-Key": ADMIN}, timeout=120)
    assert r.status_code in (200, 201), r.text
    assert sql(server, q).headers["Results-Cache-Status"] == "MISS"


def test_one_principal_never_gets_anothers_result(server):
    q = "SELECT count(*) AS n FROM orders"
    admin = sql(server, q).json()
    red = sql(server, q, RED)
    assert red.headers["Results-Cache-Status"] == "MISS" and red.json() != admin
    assert sql(server, q, RED).headers["Results-Cache-Status"] == "HIT"


@pytest.mark.parametrize("q", ["SELECT now() AS t, count(*) AS n FROM orders", "SELECT count(*) AS n FROM runtime.task_history",
                               "SELECT random() AS r", "EXPLAIN SELECT * FROM orders"])
def test_volatile_results_are_never_cached(server, q):
    assert sql(server, q).headers["Results-Cache-Status"] == "UNCACHEABLE"
    assert sql(server, q).headers["Results-Cache-Status"] == "UNCACHEABLE"


def test_a_live_source_is_asked_once_per_ttl(satchel_server, demo_pod_dir):
    server = start(satchel_server, demo_pod_dir, "1500ms")
    q = "SELECT count(*) AS n FROM regions"
    before = sql(server, q).json()
    with open(demo_pod_dir / "data" / "regions.csv", "a") as f:
        f.write("Antarctica,Nobody,0\n")
    cached = sql(server, q)
    assert cached.headers["Results-Cache-Status"] == "HIT" and cached.json() == before  # the source was not asked
    time.sleep(1.7)
    fresh = sql(server, q)
    assert fresh.headers["Results-Cache-Status"] == "MISS" and fresh.json()[0]["n"] == before[0]["n"] + 1
