"""Elasticsearch datasets through the real sidecar (`satchel run`): live and accelerated SQL,
push-down seen at the server, count(*) via _count, match(), append refresh, secrets."""

from __future__ import annotations

import base64
import datetime as dt

import httpx
import pytest

from tests.integration.elasticsearch_server import EsProxy, EsServer, es_server, wait_for  # noqa: F401

pytestmark = pytest.mark.integration

UTC = dt.timezone.utc
PASSWORD = "Es-Sidecar-Pa55-N3ver-Leak"
MAPPING = {"properties": {
    "title": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
    "sku": {"type": "keyword"}, "qty": {"type": "integer"}, "region": {"type": "keyword"},
    "updated": {"type": "date"},
}}
N = 40


def doc(i: int) -> dict:
    return {"title": f"{['red', 'green', 'blue', 'plain'][i % 4]} widget {i}", "sku": f"SKU-{i:03d}", "qty": i % 9,
            "region": ["eu", "us"][i % 2], "updated": (dt.datetime(2024, 3, 1, tzinfo=UTC) + dt.timedelta(hours=i)).isoformat()}


def pod(endpoint: str) -> str:
    params = f"""      elasticsearch_endpoint: {endpoint}
      elasticsearch_user: satchel
      elasticsearch_pass: ${{secrets:ES_PASS}}
      elasticsearch_page_size: "7"
"""
    return f"""version: v1
kind: Spicepod
name: es
datasets:
  - from: elasticsearch:sidecar-items
    name: items
    params:
{params}  - from: elasticsearch:sidecar-items
    name: items_duck
    params:
{params}    acceleration:
      enabled: true
      engine: duckdb
  - from: elasticsearch:sidecar-items
    name: items_arrow
    time_column: updated
    params:
{params}    acceleration:
      enabled: true
      engine: arrow
      refresh_mode: append
      refresh_check_interval: 1h
      params:
        refresh_min_interval: 0s  # the tests below refresh on demand back to back
      primary_key: _id
      on_conflict:
        _id: upsert
"""


@pytest.fixture(scope="module")
def module_proxy(es_server: EsServer):
    proxy = EsProxy(es_server.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def sidecar(es_server: EsServer, module_proxy: EsProxy, module_satchel_server):
    """One sidecar for the module (the append test, which adds a document, runs last)."""
    es_server.load("sidecar-items", MAPPING, [doc(i) for i in range(N)], ids=[f"i{i}" for i in range(N)])
    module_proxy.require_authorization = "Basic " + base64.b64encode(f"satchel:{PASSWORD}".encode()).decode()
    return module_satchel_server(pod(module_proxy.url), env={"ES_PASS": PASSWORD})


@pytest.fixture
def es_proxy(module_proxy: EsProxy) -> EsProxy:  # noqa: F811 - this module shares one proxy
    module_proxy.clear()
    return module_proxy


def rows(server, sql: str) -> list[dict]:
    r = server.sql(sql)
    assert r.status_code == 200, r.text
    return r.json()


def test_live_and_accelerated_sql(sidecar, es_proxy: EsProxy) -> None:
    for table in ("items", "items_duck", "items_arrow"):
        got = rows(sidecar, f"SELECT region, count(*) AS n, sum(qty) AS q FROM {table} GROUP BY region ORDER BY region")
        assert got == [{"region": "eu", "n": 20, "q": sum(i % 9 for i in range(0, N, 2))},
                       {"region": "us", "n": 20, "q": sum(i % 9 for i in range(1, N, 2))}], table
    joined = rows(sidecar, "SELECT a.sku FROM items a JOIN items_duck b USING (sku) WHERE b.qty = 8 ORDER BY 1")
    assert [r["sku"] for r in joined] == [f"SKU-{i:03d}" for i in range(N) if i % 9 == 8]
    assert es_proxy.open_pits() == 0


def test_filters_and_limit_reach_the_server(sidecar, es_proxy: EsProxy) -> None:
    es_proxy.clear()
    got = rows(sidecar, "SELECT sku, qty FROM items WHERE region = 'eu' AND qty >= 7")
    want = sorted(f"SKU-{i:03d}" for i in range(0, N, 2) if i % 9 >= 7)
    assert sorted(r["sku"] for r in got) == want
    assert es_proxy.hits_returned() == len(want), "the server returned rows the filters exclude"
    es_proxy.clear()
    assert len(rows(sidecar, "SELECT sku FROM items WHERE qty = 1 OR region = 'us' LIMIT 3")) == 3
    assert es_proxy.hits_returned() == 3
    es_proxy.clear()
    top = rows(sidecar, "SELECT sku FROM items ORDER BY sku DESC LIMIT 2")
    assert [r["sku"] for r in top] == [f"SKU-{N - 1:03d}", f"SKU-{N - 2:03d}"] and es_proxy.hits_returned() == 2
    plan = sidecar.sql("EXPLAIN SELECT sku FROM items WHERE region = 'eu'").text
    assert "region" in plan


def test_count_star_uses__count(sidecar, es_proxy: EsProxy) -> None:
    es_proxy.clear()
    assert rows(sidecar, "SELECT count(*) AS n FROM items WHERE region = 'us'") == [{"n": 20}]
    paths = [e.path.split("?")[0] for e in es_proxy.snapshot()]
    assert "/sidecar-items/_count" in paths and es_proxy.hits_returned() == 0


def test_match_runs_live_and_is_refused_on_a_copy(sidecar) -> None:
    got = rows(sidecar, "SELECT sku FROM items WHERE match(title, 'red') ORDER BY sku")
    assert [r["sku"] for r in got] == [f"SKU-{i:03d}" for i in range(0, N, 4)]
    r = sidecar.sql("SELECT sku FROM items_duck WHERE match(title, 'red')")
    assert r.status_code == 400 and "match" in r.text


def test_secrets_never_in_logs_or_history(sidecar) -> None:
    rows(sidecar, "SELECT count(*) FROM items")
    history = sidecar.sql("SELECT * FROM runtime.task_history").text
    assert PASSWORD not in sidecar.log() and PASSWORD not in history


def add_and_refresh(sidecar, es_server: EsServer, doc_id: str, i: int) -> None:
    es = es_server.client()
    try:
        es.index(index="sidecar-items", id=doc_id, document=doc(i), refresh=True)
    finally:
        es.close()
    r = httpx.post(f"{sidecar.http_url}/v1/datasets/items_arrow/acceleration/refresh", timeout=60)
    assert r.status_code in (200, 201), r.text


def test_append_refresh_loads_new_documents(sidecar, es_server: EsServer) -> None:
    add_and_refresh(sidecar, es_server, "new", N)
    assert wait_for(lambda: rows(sidecar, "SELECT count(*) AS n FROM items_arrow")[0]["n"] == N + 1, timeout=30)


def test_append_refresh_pushes_the_time_range(sidecar, es_server: EsServer, es_proxy: EsProxy) -> None:
    add_and_refresh(sidecar, es_server, "new2", N + 1)
    assert wait_for(lambda: rows(sidecar, "SELECT count(*) AS n FROM items_arrow")[0]["n"] == N + 2, timeout=30)
    assert [e for e in es_proxy.searches() if "updated" in str(e.body)], "no range on the time column reached ES"
    assert es_proxy.hits_returned() < N, "the append refresh read the whole index"
