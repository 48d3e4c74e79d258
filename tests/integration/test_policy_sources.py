"""Policies reach real sources: a principal's row filter is in the statement PostgreSQL runs (its
own log shows it), among the filters pushed into MongoDB, and in every Elasticsearch search; masked
values never leave as they are."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.elasticsearch_server import EsProxy, EsServer, es_server  # noqa: F401
from tests.integration.mongo_server import MongoServer, mongo_server, order_documents  # noqa: F401
from tests.integration.postgres_server import PgServer, postgres_server  # noqa: F401

pytestmark = pytest.mark.integration

AGENT_KEY = "k-pg-agent"


@pytest.fixture(scope="module")
def pg(postgres_server: PgServer) -> PgServer:
    postgres_server.execute(
        "DROP TABLE IF EXISTS public.policy_people CASCADE",
        "CREATE TABLE public.policy_people (id int PRIMARY KEY, team text, email text)",
        "INSERT INTO public.policy_people SELECT g, CASE WHEN g % 2 = 0 THEN 'red' ELSE 'blue' END, "
        "'person' || g || '@corp.example' FROM generate_series(1, 200) g",
        "GRANT SELECT ON public.policy_people TO satchel")
    return postgres_server


def _pod(pg: PgServer) -> str:
    return f"""
version: v1
kind: Spicepod
name: policy_pg
datasets:
  - from: postgres:public.policy_people
    name: people
    params:
{pg.params_yaml(6)}
runtime:
  auth:
    principals:
      - name: red_agent
        keys: ["${{env:AGENT_KEY}}"]
        attributes: {{team: red}}
        datasets:
          - name: people
            filter: "team = {{{{principal.team}}}}"
            columns: {{email: hash}}
"""


def _sql(server, sql: str) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v1/sql", content=sql, headers={"X-API-Key": AGENT_KEY}, timeout=60)


@pytest.mark.parametrize("sql", [
    "SELECT count(*) AS n FROM people",  # a count push-down must not skip the filter
    "SELECT id, email FROM people ORDER BY id",  # whole query in PostgreSQL
    "SELECT p.id FROM people p JOIN (SELECT 1 AS one) o ON o.one = 1 ORDER BY p.id",  # federated
])
def test_the_row_filter_is_in_the_statement_postgres_runs(pg: PgServer, satchel_server, sql: str) -> None:
    server = satchel_server(_pod(pg), env={"AGENT_KEY": AGENT_KEY})
    offset = pg.log_offset()
    r = _sql(server, sql)
    assert r.status_code == 200, r.text
    rows = r.json()
    if "count" in sql:
        assert rows == [{"n": 100}]
    else:
        assert len(rows) == 100 and all(row["id"] % 2 == 0 for row in rows)
        assert all("@" not in row.get("email", "") for row in rows)
    # the statements that read its rows (not the catalog lookups that find its columns)
    logged = [line for line in pg.log_text()[offset:].splitlines() if 'FROM "public"."policy_people"' in line]
    missing = [line for line in logged if "\"team\" = 'red'" not in line]
    assert logged and not missing, "\n".join(missing)


MONGO_POD = """
version: v1
kind: Spicepod
name: policy_mongo
datasets:
  - from: mongodb:orders
    name: orders
    params:
      mongodb_connection_string: ${secrets:MONGO_URI}
      mongodb_db: shop
runtime:
  auth:
    principals:
      - name: paid_agent
        keys: ["${env:AGENT_KEY}"]
        datasets:
          - name: orders
            filter: "status = 'paid'"
"""


def test_mongodb_gets_the_row_filter_in_its_pushed_filters(mongo_server: MongoServer, satchel_server) -> None:
    server = satchel_server(MONGO_POD, env={"AGENT_KEY": AGENT_KEY, "MONGO_URI": mongo_server.uri()})
    plan = " ".join(r["plan"] for r in _sql(server, "EXPLAIN SELECT order_no FROM orders").json())
    assert "filters=status = 'paid'" in plan.replace('"', ""), plan  # pushed into MongoDB's find()
    expected = sum(1 for d in order_documents() if d.get("status") == "paid")
    assert _sql(server, "SELECT count(*) AS n FROM orders").json() == [{"n": expected}]
    assert _sql(server, "SELECT count(*) AS n FROM orders WHERE status <> 'paid'").json() == [{"n": 0}]


ES_MAPPING = {"properties": {"sku": {"type": "keyword"}, "region": {"type": "keyword"}, "qty": {"type": "integer"}}}


def test_elasticsearch_gets_the_row_filter_in_its_query(es_server: EsServer, satchel_server) -> None:
    """Every search request Elasticsearch receives carries the principal's filter; no other region's hit comes back."""
    docs = [{"sku": f"S{i}", "region": ["eu", "us"][i % 2], "qty": i} for i in range(30)]
    es_server.load("policy-items", ES_MAPPING, docs, ids=[f"p{i}" for i in range(30)])
    proxy = EsProxy(es_server.url).start()
    try:
        pod = f"""
version: v1
kind: Spicepod
name: policy_es
datasets:
  - from: elasticsearch:policy-items
    name: items
    params:
      elasticsearch_endpoint: {proxy.url}
runtime:
  auth:
    principals:
      - name: eu_agent
        keys: ["${{env:AGENT_KEY}}"]
        datasets:
          - name: items
            filter: "region = 'eu'"
"""
        server = satchel_server(pod, env={"AGENT_KEY": AGENT_KEY})
        proxy.clear()
        rows = _sql(server, "SELECT sku, region FROM items ORDER BY qty").json()
        assert len(rows) == 15 and {r["region"] for r in rows} == {"eu"}
        searches = [x for x in proxy.exchanges if x.body and "query" in json.dumps(x.body)]
        assert searches and all('"eu"' in json.dumps(x.body) for x in searches), [x.body for x in searches]
        assert proxy.hits_returned() == 15  # the server never sent another region's row
        assert _sql(server, "SELECT count(*) AS n FROM items").json() == [{"n": 15}]
    finally:
        proxy.stop()
