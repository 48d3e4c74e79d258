"""TPC-H (SF 0.01) loaded into a real PostgreSQL: the 22 queries through Flight SQL on a real
`satchel run`, over the same PostgreSQL tables three ways:

* `lineitem`, ...        DuckDB-accelerated copies of the PostgreSQL tables;
* `lineitem_arrow`, ...  Arrow-accelerated copies;
* `lineitem_fed`, ...    federated: every query reads PostgreSQL live.

Every route must return DuckDB's reference answer (helpers from tests/engine/test_tpch.py).
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pytest

from tests.engine import test_tpch as tpch
from tests.integration.postgres_server import PgServer, load_tpch, postgres_server  # noqa: F401

pytestmark = pytest.mark.integration

ROUTES = {"duckdb": "", "arrow": "_arrow", "federated": "_fed"}


@pytest.fixture(scope="module")
def pg_tpch(postgres_server: PgServer) -> tpch.TpchData:
    postgres_server.execute("CREATE SCHEMA IF NOT EXISTS tpch", "GRANT USAGE ON SCHEMA tpch TO satchel")
    con = tpch.tpch_connection()
    try:
        con.execute(f"CALL dbgen(sf={tpch.SCALE_FACTOR})")
        load_tpch(postgres_server, con, tpch.TABLES, "tpch")
        queries = dict(con.execute("SELECT query_nr, query FROM tpch_queries()").fetchall())
        answers = dict(con.execute("SELECT query_nr, answer FROM tpch_answers() WHERE scale_factor = ?",
                                   [tpch.SCALE_FACTOR]).fetchall())
    finally:
        con.close()
    return tpch.TpchData(None, queries, answers)


def pod_yaml(server: PgServer) -> str:
    lines = ["version: v1", "kind: Spicepod", "name: tpch_pg", "datasets:"]
    params = ["    params:", server.params_yaml(6)]
    for table in tpch.TABLES:
        src = f"postgres:tpch.{table}"
        lines += [f"  - from: {src}", f"    name: {table}", *params, "    acceleration:", "      engine: duckdb"]
        lines += [f"  - from: {src}", f"    name: {table}_arrow", *params, "    acceleration:", "      engine: arrow"]
        lines += [f"  - from: {src}", f"    name: {table}_fed", *params]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def pg_flight(pg_tpch, postgres_server: PgServer, tmp_path_factory) -> Iterator[object]:
    import adbc_driver_flightsql.dbapi as adbc

    server = tpch._start_satchel()(tmp_path_factory.mktemp("tpch_pg_pod"), pod_yaml(postgres_server), timeout=120)
    try:
        with adbc.connect(f"grpc://127.0.0.1:{server.flight_port}", autocommit=True) as conn:
            yield conn
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg_results(pg_tpch, pg_flight):
    cache: dict[tuple[str, int], pa.Table] = {}

    def fetch(route: str, query_nr: int) -> pa.Table:
        if (route, query_nr) not in cache:
            sql = tpch.with_suffix(pg_tpch.queries[query_nr], ROUTES[route])
            with pg_flight.cursor() as cur:
                cur.execute(sql)
                cache[route, query_nr] = cur.fetch_arrow_table()
        return cache[route, query_nr]

    return fetch


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("query_nr", range(1, 23))
def test_tpch_over_postgres_matches_reference(pg_tpch, pg_results, route: str, query_nr: int) -> None:
    tpch.assert_same_result(pg_results(route, query_nr), pg_tpch.answers[query_nr], pg_tpch.queries[query_nr])


@pytest.mark.parametrize("query_nr", range(1, 23))
def test_tpch_over_postgres_routes_return_the_same_types(pg_results, query_nr: int) -> None:
    duckdb_schema = pg_results("duckdb", query_nr).schema
    for route in ("arrow", "federated"):
        schema = pg_results(route, query_nr).schema
        assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in duckdb_schema], route


def test_federated_tpch_queries_go_down_whole(pg_tpch, pg_flight, postgres_server: PgServer) -> None:
    """Push-down proof from the server's own statement log: a federated query over one server
    runs there as one statement (with its joins, aggregate, ORDER BY and LIMIT), not as scans;
    EXPLAIN through Satchel shows that statement."""
    sql = tpch.with_suffix(pg_tpch.queries[3], "_fed")
    offset = postgres_server.log_offset()
    with pg_flight.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetch_arrow_table()
    assert rows.num_rows == 10
    # (Flight SQL plans the result schema first: that probe is the query under LIMIT 0)
    sent = [s for s in postgres_server.statements_since(offset) if "/* satchel */" in s and "LIMIT 0" not in s]
    assert len(sent) == 1, "\n".join(sent)
    statement = sent[0]
    for table in ("customer", "orders", "lineitem"):
        assert f'"tpch"."{table}"' in statement
    assert "GROUP BY" in statement and "ORDER BY" in statement and "LIMIT 10" in statement, statement
    with pg_flight.cursor() as cur:
        cur.execute("EXPLAIN " + sql)
        plan = "\n".join(cur.fetch_arrow_table().column("plan").to_pylist())
    assert "pushed down whole to postgres:" in plan and '"tpch"."lineitem"' in plan, plan
    assert "pg-S3cret" not in plan


def test_mixed_query_pushes_each_scan(pg_tpch, pg_flight, postgres_server: PgServer) -> None:
    """A query joining a live PostgreSQL table with an accelerated copy cannot go down whole:
    the PostgreSQL table gets its projection and filters."""
    sql = ("SELECT n.n_name, count(*) AS suppliers FROM supplier_fed s JOIN nation_arrow n "
           "ON s.s_nationkey = n.n_nationkey WHERE s.s_acctbal > 5000 AND s.s_name LIKE 'Supplier#%' "
           "GROUP BY n.n_name ORDER BY n.n_name")
    offset = postgres_server.log_offset()
    with pg_flight.cursor() as cur:
        cur.execute(sql)
        got = cur.fetch_arrow_table()
    sent = [s for s in postgres_server.statements_since(offset) if 'FROM "tpch"."supplier"' in s]
    assert sent and all(s == sent[0] for s in sent), "\n".join(sent)
    assert not any('"tpch"."nation"' in s for s in postgres_server.statements_since(offset))
    assert '"s_acctbal" > ' in sent[0] and "LIKE 'Supplier#%' ESCAPE ''" in sent[0], sent[0]
    assert "s_comment" not in sent[0]
    with pg_flight.cursor() as cur:
        cur.execute("EXPLAIN " + sql)
        plan = "\n".join(cur.fetch_arrow_table().column("plan").to_pylist())
    assert "pushed down whole" not in plan and 'source sql for __scan_0: SELECT "s_name"' in plan, plan
    assert "filter s_acctbal > 5000: exact" in plan or "filter s_acctbal > Decimal('5000'): exact" in plan, plan
    with pg_flight.cursor() as cur:
        cur.execute(sql.replace("supplier_fed", "supplier").replace("nation_arrow", "nation"))
        want = cur.fetch_arrow_table()
    assert got.to_pylist() == want.to_pylist()


def test_every_federated_tpch_query_goes_down_whole(pg_tpch, pg_flight) -> None:
    not_pushed = []
    for query_nr in range(1, 23):
        with pg_flight.cursor() as cur:
            cur.execute("EXPLAIN " + tpch.with_suffix(pg_tpch.queries[query_nr], "_fed"))
            plan = "\n".join(cur.fetch_arrow_table().column("plan").to_pylist())
        if "pushed down whole to postgres:" not in plan:
            not_pushed.append(query_nr)
    assert not not_pushed, f"TPC-H queries run federated instead: {not_pushed}"
