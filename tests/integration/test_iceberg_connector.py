"""The Iceberg connector against a real partitioned Iceberg table: partition and file pruning,
composite filters with SQL's three-valued logic, count, the REST URL form, and SQL through a
real `satchel run` sidecar (live, DuckDB- and Arrow-accelerated)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from connectors.iceberg.catalog import parse_settings
from connectors.base import DatasetSpec, Filter, FilterSupport
from connectors.iceberg.connector import IcebergConnector
from connectors.iceberg.filters import row_filter
from engine.errors import ConnectorError
from tests.integration.iceberg_catalog import DAY0, IcebergCatalog, create_events, make_catalog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory) -> IcebergCatalog:
    cat = make_catalog(tmp_path_factory.mktemp("iceberg_connector"))
    create_events(cat, batches=3)  # 3 appends x (3 days x 3 regions) partitions
    table = cat.create("shop.nulls", pa.table({
        "id": pa.array(range(8), pa.int64()),
        "x": pa.array([1, 2, None, 3, None, 1, 4, 2], pa.int64()),
        "s": pa.array(["a", None, "ab", "b", "a%", None, "ba", "abc"], pa.string()),
        "f": pa.array([1.5, float("nan"), None, -0.0, 0.0, 2.0, None, float("nan")], pa.float64()),
    }))
    del table
    return cat


def connector(cat: IcebergCatalog, table: str = "shop.events") -> IcebergConnector:
    return IcebergConnector(DatasetSpec(name="events", path=table, prefix="iceberg", params=cat.params()))


def duck(table: pa.Table, where: str) -> list[dict]:
    con = duckdb.connect()
    con.register("t", table)
    return con.execute(f"SELECT * FROM t WHERE {where} ORDER BY id").to_arrow_table().to_pylist()


# -- pruning -----------------------------------------------------------------------------------


def test_partition_filters_prune_data_files(cat):
    conn = connector(cat)
    total = len(conn.planned_files())
    assert total == 27, "3 appends x 3 days x 3 regions"
    region = conn.planned_files([Filter("region", "=", "eu")])
    day = conn.planned_files([Filter("ts", ">=", DAY0 + dt.timedelta(days=2))])
    both = conn.planned_files([Filter("region", "=", "eu"), Filter("ts", "<", DAY0 + dt.timedelta(days=1))])
    either = conn.planned_files([Filter("", "or", (Filter("region", "=", "us"), Filter("region", "=", "apac")))])
    assert (len(region), len(day), len(both), len(either)) == (9, 9, 3, 18)
    # a filter on a non-partition column prunes by column bounds, never wrongly
    by_id = conn.planned_files([Filter("id", "<", 5)])
    assert 0 < len(by_id) < total

    before = conn.files_read
    filters = [Filter("region", "=", "eu"), Filter("ts", "<", DAY0 + dt.timedelta(days=1))]
    got = conn.scan(None, filters).read_all()
    assert conn.files_read - before == 3, "the scan reads only the pruned files"
    everything = conn.scan().read_all()
    want = duck(everything, f"region = 'eu' AND ts < TIMESTAMP '{DAY0 + dt.timedelta(days=1)}'")
    assert got.sort_by("id").to_pylist() == want and len(want) > 0


def test_limit_and_count(cat):
    conn = connector(cat)
    assert conn.count() == 90
    assert conn.count([Filter("region", "=", "eu")]) == 30
    assert conn.scan(["id"], [], 7).read_all().num_rows == 7
    assert conn.scan(["id"], [Filter("region", "=", "us")], 4).read_all().num_rows == 4
    assert conn.scan([], [Filter("region", "=", "us")]).read_all().num_rows == 30


# -- composite filters -------------------------------------------------------------------------


@pytest.mark.parametrize("condition, where", [
    (Filter("", "not", (Filter("x", "not_in", (1, 2)),)), "NOT (x NOT IN (1, 2))"),
    (Filter("", "not", (Filter("x", "=", 1),)), "NOT (x = 1)"),
    (Filter("", "or", (Filter("x", "=", 1), Filter("s", "is_null"))), "x = 1 OR s IS NULL"),
    (Filter("", "not", (Filter("", "or", (Filter("x", ">", 2), Filter("s", "like", "a%"))),)),
     "NOT (x > 2 OR s LIKE 'a%')"),
    (Filter("", "and", (Filter("s", "not_like", "a%"), Filter("", "not", (Filter("x", "is_null"),)))),
     "s NOT LIKE 'a%' AND NOT (x IS NULL)"),
    (Filter("", "not", (Filter("f", ">", 0.0),)), "NOT (f > 0.0)"),
    (Filter("", "or", (Filter("f", "=", 0.0), Filter("x", "in", (3, 4)))), "f = 0.0 OR x IN (3, 4)"),
])
def test_composite_filters_follow_sql_three_valued_logic(cat, condition, where):
    conn = connector(cat, "shop.nulls")
    assert conn.classify_filters([condition]) == [FilterSupport.EXACT]
    everything = conn.scan().read_all()
    got = conn.scan(None, [condition]).read_all().sort_by("id").to_pylist()
    assert _norm(got) == _norm(duck(everything, where))


@pytest.mark.parametrize("condition, where, exact", [
    (Filter("x", "=", 1), "x = 1", True),
    (Filter("x", "!=", 1), "x != 1", True),
    (Filter("x", "<=", 2), "x <= 2", True),
    (Filter("x", "in", (1, 4)), "x IN (1, 4)", True),
    (Filter("s", ">=", "ab"), "s >= 'ab'", True),
    (Filter("s", "like", "a%"), "s LIKE 'a%'", True),
    (Filter("x", "is_null"), "x IS NULL", True),
    (Filter("s", "is_not_null"), "s IS NOT NULL", True),
    (Filter("", "or", (Filter("x", "=", 1), Filter("s", "is_null"))), "x = 1 OR s IS NULL", True),
    (Filter("", "and", (Filter("x", ">", 1), Filter("s", "<", "b"))), "x > 1 AND s < 'b'", True),
    # partly or not translated: pyiceberg keeps a superset, filtered again in Arrow
    (Filter("", "and", (Filter("x", ">", 1), Filter("f", "=", 0.0))), "x > 1 AND f = 0.0", False),
    (Filter("", "or", (Filter("x", "=", 1), Filter("f", "=", 0.0))), "x = 1 OR f = 0.0", False),
    (Filter("s", "like", "%b"), "s LIKE '%b'", False),
    (Filter("", "not", (Filter("x", "=", 1),)), "NOT (x = 1)", False),
])
def test_rows_are_filtered_once_when_pyiceberg_filter_is_exact(cat, condition, where, exact):
    """A filter pyiceberg translates whole is applied to the rows by pyiceberg alone; its result
    is still SQL's, NULLs included, and so is a limit pushed down with it."""
    conn = connector(cat, "shop.nulls")
    schema = conn.schema()
    assert row_filter([condition], schema).exact is exact
    everything = conn.scan().read_all()
    want = duck(everything, where)
    got = conn.scan(None, [condition]).read_all().sort_by("id").to_pylist()
    assert _norm(got) == _norm(want) and want
    limited = conn.scan(["id"], [condition], 1).read_all()
    assert limited.num_rows == 1 and limited["id"][0].as_py() in {r["id"] for r in want}


def _norm(rows: list[dict]) -> list[tuple]:
    return [tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in r.values()) for r in rows]


def test_match_is_not_supported(cat):
    assert connector(cat).classify_filters([Filter("region", "match", "eu")]) == [FilterSupport.UNSUPPORTED]


# -- configuration -----------------------------------------------------------------------------


def test_rest_url_form():
    s = parse_settings("d", "https://cat.example:8181/api/catalog/v1/namespaces/a%1Fb/tables/orders",
                       {"iceberg_token": "tok"})
    assert (s.catalog_type, s.properties["uri"], s.namespace, s.table) == (
        "rest", "https://cat.example:8181/api/catalog", ("a", "b"), "orders")
    s = parse_settings("d", "http://localhost:8181/v1/warehouse1/namespaces/shop/tables/t", {})
    assert (s.properties["uri"], s.identifier) == ("http://localhost:8181", ("shop", "t"))
    assert "tok" not in repr(parse_settings("d", "a.b", {"iceberg_uri": "http://x", "iceberg_token": "tok"}))
    with pytest.raises(ConnectorError, match="leave out iceberg_uri"):
        parse_settings("d", "https://h/v1/namespaces/n/tables/t", {"iceberg_uri": "https://other"})


def test_sqlite_paths_resolve_against_the_pod(tmp_path: Path):
    s = parse_settings("d", "a.b", {"iceberg_catalog_type": "sql", "iceberg_uri": "sqlite:///cat.db",
                                    "iceberg_warehouse": "wh"}, str(tmp_path))
    assert s.properties["uri"] == f"sqlite:///{tmp_path}/cat.db"
    assert s.properties["warehouse"] == f"file://{tmp_path}/wh"


# -- through the sidecar -----------------------------------------------------------------------

QUERIES = [
    "SELECT region, count(*) AS n, sum(amount) AS total FROM {t} GROUP BY region ORDER BY region",
    "SELECT id, region FROM {t} WHERE ts >= TIMESTAMP '2024-03-03 00:00:00' AND region <> 'us' ORDER BY id LIMIT 5",
    "SELECT count(*) AS n FROM {t} WHERE region = 'eu' OR NOT (id > 10)",
]


def test_sql_through_the_sidecar_live_and_accelerated(cat, satchel_server):
    params = "\n".join(f"      {k}: {v}" for k, v in cat.params().items())
    datasets = []
    for name, acc in (("live", ""), ("in_duckdb", "    acceleration:\n      enabled: true\n      engine: duckdb\n"),
                      ("in_arrow", "    acceleration:\n      enabled: true\n      engine: arrow\n")):
        datasets.append(f"  - from: iceberg:shop.events\n    name: {name}\n    params:\n{params}\n{acc}")
    server = satchel_server("version: v1\nkind: Spicepod\nname: ice\ndatasets:\n" + "".join(datasets))
    everything = connector(cat).scan().read_all()
    con = duckdb.connect()
    con.register("events", everything)
    for query in QUERIES:
        want = con.execute(query.format(t="events")).to_arrow_table().to_pylist()
        for table in ("live", "in_duckdb", "in_arrow"):
            response = server.sql(query.format(t=table))
            assert response.status_code == 200, response.text
            assert response.json() == want, (table, query)
    refresh = server.sql("SELECT count(*) AS n FROM runtime.task_history WHERE task = 'refresh' AND error IS NULL")
    assert refresh.json() == [{"n": 2}]


def test_clear_errors_through_the_sidecar_never_show_secrets(cat, satchel_server):
    secret = "ic3-T0ken-N3ver-Shown"
    params = "\n".join(f"      {k}: {v}" for k, v in cat.params().items())
    pod = ("version: v1\nkind: Spicepod\nname: ice\ndatasets:\n"
           f"  - from: iceberg:shop.missing\n    name: missing\n    params:\n{params}\n"
           f"  - from: iceberg:shop.events\n    name: bad_catalog\n    params:\n"
           "      iceberg_uri: http://127.0.0.1:1/catalog\n      iceberg_token: ${secrets:ICE_TOKEN}\n")
    server = satchel_server(pod, env={"ICE_TOKEN": secret}, wait_ready=False)
    response = server.sql("SELECT * FROM missing")
    assert response.status_code >= 400 and "shop.missing does not exist" in response.text
    response = server.sql("SELECT * FROM bad_catalog")
    assert response.status_code >= 400 and "cannot open the Iceberg rest catalog" in response.text
    assert secret not in response.text
    datasets = server.sql("SELECT query_text, error FROM runtime.task_history").text
    assert secret not in datasets and secret not in server.log()
