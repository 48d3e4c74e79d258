"""Pod views and cross-source joins over the demo pod (orders and customers in DuckDB, products in
Arrow, regions read live from its CSV), checked against the same SQL run in plain DuckDB over the
raw data files."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import shutil
from pathlib import Path

import duckdb
import pytest

from engine.config import load_pod
from engine.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    pod_dir = tmp_path_factory.mktemp("views") / "demo"
    shutil.copytree(REPO / "data", pod_dir / "data")
    shutil.copy(REPO / "spicepod.yaml", pod_dir / "spicepod.yaml")
    runtime = Runtime(load_pod(pod_dir / "spicepod.yaml"), data_dir=str(pod_dir / ".satchel"))
    runtime.start()
    assert runtime.wait_ready(60)
    yield runtime, pod_dir
    runtime.stop()


@pytest.fixture(scope="module")
def raw(demo):
    """Plain DuckDB with the raw files as tables of the same names (and the pod's view)."""
    pod_dir = demo[1]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW orders AS SELECT * FROM read_parquet('{pod_dir}/data/orders/*.parquet')")
    con.execute(f"CREATE VIEW customers AS SELECT * FROM read_csv('{pod_dir}/data/customers.csv')")
    con.execute(f"CREATE VIEW products AS SELECT * FROM read_json('{pod_dir}/data/products.ndjson')")
    con.execute(f"CREATE VIEW regions AS SELECT * FROM read_csv('{pod_dir}/data/regions.csv')")
    con.execute("""CREATE VIEW order_details AS
        SELECT o.order_id, o.ordered_at, o.customer_id, p.name AS product, p.category, o.quantity, o.amount, o.status
        FROM orders o JOIN products p ON p.product_id = o.product_id""")
    yield con
    con.close()


def normal(value: object) -> object:
    if isinstance(value, (float, decimal.Decimal)):
        f = float(value)
        return round(f, 6) if math.isfinite(f) else f
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc)
    if isinstance(value, list):
        return tuple(value)
    return value


def rows(table) -> list[tuple]:
    return [tuple(normal(v) for v in row.values()) for row in table.to_pylist()]


QUERIES = [
    "SELECT * FROM order_details ORDER BY order_id",
    "SELECT category, count(*) AS n, sum(amount) AS revenue, sum(quantity) AS units FROM order_details "
    "GROUP BY category ORDER BY category",
    "SELECT * FROM order_details WHERE category = 'books' AND quantity > 2 ORDER BY order_id",
    "SELECT d.product, c.name, d.amount FROM order_details d JOIN customers c ON c.customer_id = d.customer_id "
    "WHERE d.amount > 1200 ORDER BY d.amount DESC, d.order_id",
    "SELECT r.manager, r.currency, count(*) AS n, sum(o.amount) AS revenue FROM orders o "
    "JOIN customers c ON c.customer_id = o.customer_id JOIN regions r ON r.region = c.region "
    "GROUP BY r.manager, r.currency ORDER BY revenue DESC",
    "SELECT r.region, p.category, count(*) AS n FROM order_details d JOIN customers c ON c.customer_id = d.customer_id "
    "JOIN regions r ON r.region = c.region JOIN products p ON p.name = d.product "
    "GROUP BY r.region, p.category ORDER BY r.region, p.category",
    "SELECT c.region, count(DISTINCT d.product) AS products FROM order_details d "
    "JOIN customers c ON c.customer_id = d.customer_id GROUP BY c.region ORDER BY c.region",
    "SELECT region, manager FROM regions WHERE region NOT IN (SELECT DISTINCT region FROM customers) ORDER BY region",
    "SELECT p.product_id, p.name, p.tags FROM products p WHERE p.product_id NOT IN "
    "(SELECT DISTINCT product_id FROM orders) ORDER BY p.product_id",
    "WITH monthly AS (SELECT date_trunc('month', ordered_at) AS month, category, sum(amount) AS revenue "
    "FROM order_details GROUP BY 1, 2) SELECT month, category, revenue, "
    "rank() OVER (PARTITION BY month ORDER BY revenue DESC) AS r FROM monthly ORDER BY month, r, category",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_views_and_cross_source_joins_match_plain_duckdb(demo, raw, sql):
    runtime = demo[0]
    got = runtime.query(sql).read_all()
    want = raw.execute(sql).to_arrow_table()
    assert got.column_names == want.column_names
    assert got.num_rows == want.num_rows and got.num_rows > 0 or "NOT IN" in sql
    assert rows(got) == rows(want)


def test_order_details_view_is_a_federated_join_of_duckdb_and_arrow(demo):
    runtime = demo[0]
    plan = runtime.explain("SELECT * FROM order_details")
    assert plan.startswith("route: federated (served by accelerator)")
    assert "scan orders [duckdb]" in plan and "scan products [arrow]" in plan
    mixed = runtime.explain("SELECT * FROM customers c JOIN regions r ON r.region = c.region")
    assert mixed.startswith("route: federated (served by mixed)") and "scan regions [source]" in mixed
    inside = runtime.explain("SELECT count(*) FROM orders o JOIN customers c ON c.customer_id = o.customer_id")
    assert inside.startswith("route: accelerator")


def test_view_filters_reach_the_scans(demo):
    runtime = demo[0]
    assert runtime.query("SELECT product FROM order_details WHERE order_id = 100001").read_all().num_rows == 1
    plan = runtime.explain("SELECT * FROM order_details WHERE order_id = 100001")
    assert 'filters="order_id" = 100001' in plan


def test_federated_regions_read_live_from_the_file(demo):
    runtime, pod_dir = demo
    path = pod_dir / "data" / "regions.csv"
    original = path.read_text()
    try:
        path.write_text(original + "Antarctica,Roald Amundsen,NOK\n")
        got = runtime.query("SELECT manager FROM regions WHERE region = 'Antarctica'").read_all().to_pylist()
        assert got == [{"manager": "Roald Amundsen"}]
    finally:
        path.write_text(original)
    assert runtime.query("SELECT count(*) AS n FROM regions").read_all().to_pylist() == [{"n": 6}]
