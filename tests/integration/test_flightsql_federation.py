"""Two Satchels chained over Flight SQL, and a Satchel over roapi: the downstream sidecar's
`flightsql:` datasets read the upstream with a token from its secrets. Push-down is proven on
the upstream side (its runtime.task_history records the SQL it received; roapi logs it)."""

from __future__ import annotations

import decimal
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import SatchelServer
from tests.integration.roapi_server import RoapiServer, start_roapi

pytestmark = pytest.mark.integration

TOKEN = "upstr3am-T0ken-Sh0uld-N3ver-Leak"
WRONG = "wr0ng-Upstr3am-T0ken-N3ver-Leak"

ORDERS = pa.table({
    "order_id": pa.array(range(1, 201), pa.int64()),
    "customer_id": pa.array([i % 20 + 1 for i in range(200)], pa.int64()),
    "amount": pa.array([(i * 37 % 1000) / 10 for i in range(200)], pa.float64()),
    "qty": pa.array([i % 7 for i in range(200)], pa.int32()),
    "status": pa.array([["open", "shipped", "cancelled", None][i % 4] for i in range(200)], pa.string()),
    "price": pa.array([decimal.Decimal(i * 113 % 1000) / 100 for i in range(200)], pa.decimal128(10, 2)),
})
CUSTOMERS = pa.table({
    "customer_id": pa.array(range(1, 21), pa.int64()),
    "name": [f"customer {i}" for i in range(1, 21)],
    "region": [["north", "south", "east", "west"][i % 4] for i in range(20)],
})

UPSTREAM = """\
version: v1
kind: Spicepod
name: upstream
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${env:SATCHEL_TEST_API_KEY}"]
datasets:
  - from: file:orders.parquet
    name: orders
    description: Orders of the shop
    columns:
      - name: amount
        description: Order total in EUR
    acceleration:
      enabled: true
      engine: duckdb
  - from: file:customers.parquet
    name: customers
    acceleration:
      enabled: true
      engine: duckdb
"""


def downstream_pod(endpoint: str) -> str:
    common = f"""      flightsql_endpoint: {endpoint}
      flightsql_token: ${{secrets:UPSTREAM_TOKEN}}
"""
    return f"""\
version: v1
kind: Spicepod
name: downstream
datasets:
  - from: flightsql:orders
    name: orders
    params:
{common}  - from: flightsql:customers
    name: customers
    params:
{common}  - from: "flightsql:SELECT order_id, amount FROM orders WHERE status = 'open'"
    name: open_orders
    params:
{common}  - from: file:regions.csv
    name: regions
  - from: flightsql:orders
    name: cached_orders
    params:
{common}    acceleration:
      enabled: true
      engine: duckdb
"""


@pytest.fixture(scope="module")
def chain(module_satchel_server, tmp_path_factory) -> tuple[SatchelServer, SatchelServer]:
    up_dir = tmp_path_factory.mktemp("upstream")
    pq.write_table(ORDERS, up_dir / "orders.parquet")
    pq.write_table(CUSTOMERS, up_dir / "customers.parquet")
    upstream = module_satchel_server(UPSTREAM, pod_dir=up_dir, api_key=TOKEN)
    down = module_satchel_server(downstream_pod(upstream.flight_uri),
                                 files={"regions.csv": "region,manager\nnorth,Ann\nsouth,Bob\neast,Cy\nwest,Di\n"},
                                 env={"UPSTREAM_TOKEN": TOKEN})
    return upstream, down


def rows(server: SatchelServer, sql: str) -> list[dict]:
    response = server.sql(sql)
    assert response.status_code == 200, response.text
    return response.json()


def upstream_queries(upstream: SatchelServer) -> list[str]:
    return [r["query_text"] for r in rows(upstream, "SELECT query_text FROM runtime.task_history WHERE task = 'query' "
                                                   "ORDER BY task_id")]


def expected(sql: str) -> list[tuple]:
    con = duckdb.connect()
    con.register("orders", ORDERS)
    con.register("customers", CUSTOMERS)
    return [tuple(r) for r in con.execute(sql).fetchall()]


JOIN_SQL = ("SELECT c.region, count(*) AS n, sum(o.qty) AS units FROM orders o JOIN customers c "
            "ON o.customer_id = c.customer_id WHERE o.status = 'shipped' GROUP BY c.region ORDER BY c.region")


def test_single_source_query_goes_down_whole(chain) -> None:
    upstream, down = chain
    got = [tuple(r.values()) for r in rows(down, JOIN_SQL)]
    assert got == expected(JOIN_SQL)
    sent = [q for q in upstream_queries(upstream) if q.startswith("/* satchel */")]
    whole = [q for q in sent if "JOIN" in q.upper() and "GROUP BY" in q.upper()]
    assert whole, f"the join did not reach the upstream whole: {sent}"
    explain = json.dumps(rows(down, "EXPLAIN " + JOIN_SQL))
    assert "pushed down whole to flightsql:grpc" in explain
    assert TOKEN not in explain


def test_mixed_query_pushes_projection_and_filters(chain) -> None:
    upstream, down = chain
    sql = ("SELECT r.manager, count(*) AS n FROM customers c JOIN regions r ON c.region = r.region "
           "WHERE c.customer_id <= 8 GROUP BY r.manager ORDER BY r.manager")
    got = [tuple(r.values()) for r in rows(down, sql)]
    assert got == [("Ann", 2), ("Bob", 2), ("Cy", 2), ("Di", 2)]
    sent = upstream_queries(upstream)[-3:]
    scan = [q for q in sent if '"customer_id" <= 8' in q]
    assert scan and 'SELECT "customer_id", "region" FROM "customers"' in scan[-1], sent


def test_query_dataset_and_descriptions(chain) -> None:
    upstream, down = chain
    got = rows(down, "SELECT count(*) AS n, max(order_id) AS m FROM open_orders")
    assert got == [{"n": 50, "m": 197}]
    datasets = {d["name"]: d for d in down_datasets(down)}
    columns = {c["name"]: c.get("description") for c in datasets["orders"]["columns"]}
    assert columns["amount"] == "Order total in EUR"


def down_datasets(server: SatchelServer) -> list[dict]:
    import httpx

    response = httpx.get(f"{server.http_url}/v1/datasets", headers=server.headers(), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["datasets"] if isinstance(body, dict) else body


def test_accelerated_copy_of_a_remote_table(chain) -> None:
    _, down = chain
    got = rows(down, "SELECT count(*) AS n, sum(qty) AS q FROM cached_orders")
    assert got == [{"n": 200, "q": sum(ORDERS["qty"].to_pylist())}]


def test_top_n_and_limit(chain) -> None:
    _, down = chain
    got = rows(down, "SELECT order_id, amount FROM orders ORDER BY amount DESC, order_id LIMIT 3")
    want = expected("SELECT order_id, amount FROM orders ORDER BY amount DESC, order_id LIMIT 3")
    assert [tuple(r.values()) for r in got] == want


def test_token_never_shows(chain) -> None:
    upstream, down = chain
    history = json.dumps(rows(down, "SELECT * FROM runtime.task_history"), default=str)
    assert TOKEN not in history
    assert TOKEN not in json.dumps(down_datasets(down))
    assert TOKEN not in down.log()


def test_wrong_token_is_a_clear_error(module_satchel_server, chain) -> None:
    upstream, _ = chain
    pod = downstream_pod(upstream.flight_uri).split("  - from: file:regions.csv")[0]
    bad = module_satchel_server(pod, env={"UPSTREAM_TOKEN": WRONG}, wait_ready=False)
    response = bad.sql("SELECT count(*) FROM orders")
    assert response.status_code >= 400
    text = response.text
    assert "refused the credentials" in text and "orders" in text, text
    assert WRONG not in text and WRONG not in bad.log()


# -- roapi (DataFusion) -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def over_roapi(module_satchel_server, tmp_path_factory) -> tuple[RoapiServer, SatchelServer]:
    tmp: Path = tmp_path_factory.mktemp("roapi")
    pq.write_table(ORDERS, tmp / "orders.parquet")
    pq.write_table(CUSTOMERS, tmp / "customers.parquet")
    roapi = start_roapi({"orders": tmp / "orders.parquet", "customers": tmp / "customers.parquet"}, tmp)
    pod = f"""\
version: v1
kind: Spicepod
name: over_roapi
datasets:
  - from: flightsql:orders
    name: orders
    params:
      flightsql_endpoint: {roapi.endpoint}
  - from: flightsql:customers
    name: customers
    params:
      flightsql_endpoint: {roapi.endpoint}
"""
    try:
        yield roapi, module_satchel_server(pod)
    finally:
        roapi.stop()


def test_roapi_whole_query_without_floats(over_roapi) -> None:
    roapi, down = over_roapi
    got = [tuple(r.values()) for r in rows(down, JOIN_SQL)]
    assert got == expected(JOIN_SQL)
    assert any("GROUP BY" in q.upper() and "JOIN" in q.upper() for q in roapi.statements()), roapi.statements()
    assert "pushed down whole to flightsql:grpc" in json.dumps(rows(down, "EXPLAIN " + JOIN_SQL))


def test_roapi_float_columns_stay_local(over_roapi) -> None:
    roapi, down = over_roapi
    sql = "SELECT status, sum(amount) AS total FROM orders WHERE amount >= 0 GROUP BY status ORDER BY status"
    got = rows(down, sql)
    want = expected(sql)
    assert [(r["status"], round(r["total"], 6)) for r in got] == [(s, round(t, 6)) for s, t in want]
    explain = json.dumps(rows(down, "EXPLAIN " + sql))
    assert "pushed down whole" not in explain  # -0.0 and NaN compare differently in DataFusion
    last = roapi.statements()[-1]
    assert last.startswith('SELECT "amount", "status" FROM "orders"') and "WHERE" not in last, last


def test_roapi_averages_decimals_exactly(over_roapi) -> None:
    """A DataFusion peer gets the average of a decimal as the exact sum over the count, so it
    comes back as DuckDB's (its own AVG keeps 4 more decimals; AVG of DOUBLEs rounds per row)."""
    roapi, down = over_roapi
    sql = "SELECT customer_id, avg(price) AS a FROM orders GROUP BY customer_id ORDER BY customer_id"
    assert [tuple(r.values()) for r in rows(down, sql)] == expected(sql)
    assert "pushed down whole to flightsql:grpc" in json.dumps(rows(down, "EXPLAIN " + sql))
    assert any("SUM(" in q.upper() and "AVG(" not in q.upper() for q in roapi.statements()), roapi.statements()


def test_full_text_match_is_forwarded_to_a_satchel_peer(chain) -> None:
    """match() goes to the upstream Satchel, which runs it in its source or refuses it there
    (here its `orders` is a DuckDB copy, so it refuses with its own clear error)."""
    _, down = chain
    response = down.sql("SELECT order_id FROM orders WHERE match(status, 'open')")
    assert response.status_code == 502, response.text  # the upstream (the source here) refused it
    assert "full-text match(column, 'words') runs in the source" in response.text
    # the upstream's planner wrote this (the downstream sends the filter, its scan SQL names the table)
    assert "query failed in the Flight SQL source" in response.text and 'MATCH(\\"orders\\".\\"status\\"' in response.text
