"""One query across MongoDB x PostgreSQL x Elasticsearch returns the same rows federated (every
source live) as from DuckDB- and Arrow-accelerated copies, and the rows a plain computation over
the same data gives."""

from __future__ import annotations

import textwrap
from collections import Counter

import pyarrow as pa
import pytest

from engine.config import load_pod
from engine.runtime import Runtime
from tests.integration.elasticsearch_server import EsServer, es_server  # noqa: F401
from tests.integration.mongo_server import DB, MongoServer, mongo_server, order_documents  # noqa: F401
from tests.integration.postgres_server import PgServer, postgres_server  # noqa: F401

pytestmark = pytest.mark.integration

SEGMENTS = ["retail", "wholesale", "partner"]
REVIEWS = [{"customer": f"Customer {k}", "rating": 1 + k % 5, "text": f"review of customer {k}"} for k in range(0, 250, 2)]
REVIEW_MAPPING = {"properties": {"customer": {"type": "keyword"}, "rating": {"type": "integer"}, "text": {"type": "text"}}}

SQL = """
SELECT c.segment, o.status, count(*) AS n, sum(r.rating) AS ratings
FROM {orders} o
JOIN {customers} c ON c.name = o.customer['name']
JOIN {reviews} r ON r.customer = c.name
WHERE o.order_no < 600 AND r.rating >= 3
GROUP BY c.segment, o.status
ORDER BY c.segment, o.status
"""


def _params(params: dict[str, str]) -> str:
    return "\n".join(f"      {k}: '{v}'" for k, v in params.items())


def _dataset(name: str, source: str, params: dict[str, str], engine: str | None, extra: str = "") -> str:
    acc = f"\n    acceleration:\n      engine: {engine}" if engine else ""
    return f"  - from: {source}\n    name: {name}\n    params:\n{_params(params)}{extra}{acc}\n"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, mongo_server: MongoServer, postgres_server: PgServer, es_server: EsServer):
    customers = pa.table({"name": [f"Customer {k}" for k in range(250)],
                          "segment": [SEGMENTS[k % 3] for k in range(250)]})
    postgres_server.ingest("public.xs_customers", customers,
                           "CREATE TABLE public.xs_customers (name text PRIMARY KEY, segment text NOT NULL)")
    es_server.load("xs_reviews", REVIEW_MAPPING, REVIEWS)
    datasets = ""
    for suffix, engine in (("live", None), ("duck", "duckdb"), ("arrow", "arrow")):
        datasets += _dataset(f"orders_{suffix}", "mongodb:orders", mongo_server.params(DB), engine)
        datasets += _dataset(f"customers_{suffix}", "postgres:public.xs_customers", postgres_server.params(), engine)
        datasets += _dataset(f"reviews_{suffix}", "elasticsearch:xs_reviews", es_server.params(), engine)
    root = tmp_path_factory.mktemp("cross")
    (root / "spicepod.yaml").write_text("version: v1\nkind: Spicepod\nname: cross\ndatasets:\n" + datasets)
    rt = Runtime(load_pod(root / "spicepod.yaml"), data_dir=str(root / ".satchel"))
    rt.start()
    assert rt.wait_ready(120), {n: (d.status, d.last_error) for n, d in rt.datasets.items()}
    yield rt
    rt.stop()


def _expected() -> list[tuple]:
    segment = {f"Customer {k}": SEGMENTS[k % 3] for k in range(250)}
    rating = {r["customer"]: r["rating"] for r in REVIEWS}
    groups: Counter = Counter()
    sums: Counter = Counter()
    for doc in order_documents():
        name = doc["customer"]["name"]
        if doc["order_no"] < 600 and name in rating and rating[name] >= 3:
            key = (segment[name], doc.get("status"))
            groups[key] += 1
            sums[key] += rating[name]
    order = sorted(groups, key=lambda k: (k[0], (k[1] is None, k[1] or "")))
    return [(s, st, groups[(s, st)], sums[(s, st)]) for s, st in order]


def _rows(rt: Runtime, suffix: str) -> list[tuple]:
    sql = SQL.format(orders=f"orders_{suffix}", customers=f"customers_{suffix}", reviews=f"reviews_{suffix}")
    return [tuple(r.values()) for r in rt.query(sql).read_all().to_pylist()]


@pytest.mark.parametrize("suffix", ["live", "duck", "arrow"])
def test_mongo_x_postgres_x_elasticsearch_join(runtime, suffix):
    expected = _expected()
    assert len(expected) > 5
    assert _rows(runtime, suffix) == expected
