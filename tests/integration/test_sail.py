"""A Satchel over Sail (Spark-compatible, distributed: `sail flight server` in local-cluster
mode): `from: flightsql:<table>` datasets with `flightsql_dialect: spark`, read live
(federated), accelerated in DuckDB, joined with a local file, and whole queries pushed down
to Sail in Spark SQL; TPC-H SF 0.01 in a Sail database against DuckDB's answers; and the same
over Spark Connect (`adbc:` with adbc_driver_spark, `sail spark server`). Answers are compared
with DuckDB over the same Arrow tables; push-down is proven by the statements Sail logged and
by Satchel's EXPLAIN."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import re
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import SatchelServer
from tests.integration.sail_server import SailServer, start_sail

pytestmark = pytest.mark.integration

N = 300
STATUSES = ["O", "F", "P", None]
COMMENTS = ["it's done", "back\\slash", "plain", "50% off", None, "日本語"]
ORDERS = pa.table({
    "o_orderkey": pa.array(range(1, N + 1), pa.int64()),
    "o_custkey": pa.array([i % 25 + 1 for i in range(N)], pa.int64()),
    "o_orderstatus": pa.array([STATUSES[i % 4] for i in range(N)], pa.string()),
    "o_totalprice": pa.array([decimal.Decimal(i * 7919 % 100000) / 100 for i in range(N)], pa.decimal128(15, 2)),
    "o_orderdate": pa.array([dt.date(1995, 1, 1) + dt.timedelta(days=i * 3 % 700) for i in range(N)], pa.date32()),
    "o_shippriority": pa.array([i % 3 for i in range(N)], pa.int32()),
    "o_comment": pa.array([COMMENTS[i % 6] for i in range(N)], pa.string()),
    "o_discount": pa.array([(i % 11) / 100 for i in range(N)], pa.float64()),
})
CUSTOMER = pa.table({
    "c_custkey": pa.array(range(1, 26), pa.int64()),
    "c_name": [f"Customer#{i:09d}" for i in range(1, 26)],
    "c_nationkey": pa.array([i % 5 for i in range(25)], pa.int64()),
    "c_mktsegment": [["BUILDING", "AUTOMOBILE", "MACHINERY"][i % 3] for i in range(25)],
})
NATION_CSV = "n_nationkey,n_name\n0,ALGERIA\n1,ARGENTINA\n2,BRAZIL\n3,CANADA\n4,EGYPT\n"
NATION = pacsv.read_csv(io.BytesIO(NATION_CSV.encode()))
SAIL_TABLES = {"orders": ORDERS, "customer": CUSTOMER}


def pod(endpoint: str) -> str:
    params = f"""    params:
      flightsql_endpoint: {endpoint}
      flightsql_dialect: spark
"""
    live = "".join(f"  - from: flightsql:{t}\n    name: {t}\n{params}" for t in SAIL_TABLES)
    accelerated = "".join(f"  - from: flightsql:{t}\n    name: {t}_acc\n{params}"
                          f"    acceleration:\n      enabled: true\n      engine: duckdb\n" for t in SAIL_TABLES)
    query = (f"  - from: \"flightsql:SELECT o_orderkey, o_custkey, o_totalprice FROM orders "
             f"WHERE o_orderstatus = 'O'\"\n    name: open_orders\n{params}")
    return ("version: v1\nkind: Spicepod\nname: over_sail\ndatasets:\n" + live + accelerated + query
            + "  - from: file:nation.csv\n    name: nation\n")


@pytest.fixture(scope="module")
def sail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SailServer]:
    tmp: Path = tmp_path_factory.mktemp("sail")
    server = start_sail(tmp)
    try:
        for name, table in SAIL_TABLES.items():
            pq.write_table(table, tmp / f"{name}.parquet")
            server.create_parquet_table(name, tmp / f"{name}.parquet")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def satchel(sail: SailServer, module_satchel_server) -> SatchelServer:
    return module_satchel_server(pod(sail.endpoint), files={"nation.csv": NATION_CSV})


def query(server: SatchelServer, sql: str) -> pa.Table:
    """`sql` through Satchel's Flight SQL endpoint, as Arrow."""
    import adbc_driver_flightsql.dbapi as fs

    with fs.connect(f"grpc://127.0.0.1:{server.flight_port}", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def rows(table: pa.Table) -> list[tuple]:
    return [tuple(r.values()) for r in table.to_pylist()]


def expected(sql: str) -> list[tuple]:
    con = duckdb.connect()
    con.execute("SET default_null_order = 'nulls_last_on_asc_first_on_desc'")  # PostgreSQL's, Satchel's
    con.execute("SET integer_division = true")  # so is 7 / 2 = 3
    for name, table in {**SAIL_TABLES, "nation": NATION}.items():
        con.register(name, table)
    return [tuple(r) for r in con.execute(sql).fetchall()]


def explain(server: SatchelServer, sql: str) -> str:
    response = server.sql("EXPLAIN " + sql)
    assert response.status_code == 200, response.text
    return json.dumps(response.json())


def with_suffix(sql: str, suffix: str) -> str:
    """`sql` over the `<table><suffix>` datasets."""
    return re.sub(r"\b(" + "|".join(SAIL_TABLES) + r")\b", lambda m: m.group(1) + suffix, sql)


# Queries over Sail tables only: aggregates of decimals, dates, strings with quotes and
# backslashes, NULL ordering, LIMIT/OFFSET, subqueries; and ones that must stay federated
# (a float column, a function outside the conservative set, integer division).
WHOLE = {
    "revenue_by_status": "SELECT o_orderstatus, count(*) AS n, sum(o_totalprice) AS revenue, min(o_orderdate) AS first "
                         "FROM orders WHERE o_orderdate >= DATE '1995-03-01' GROUP BY o_orderstatus "
                         "ORDER BY o_orderstatus",
    "segment_join": "SELECT c.c_mktsegment, count(*) AS n, sum(o.o_totalprice) AS revenue FROM orders o JOIN customer c "
                    "ON o.o_custkey = c.c_custkey WHERE o.o_orderstatus = 'F' GROUP BY c.c_mktsegment "
                    "ORDER BY revenue DESC, c.c_mktsegment",
    "quoted_literals": "SELECT o_comment, count(*) AS n FROM orders WHERE o_comment IN ('it''s done', 'back\\slash') "
                       "GROUP BY o_comment ORDER BY o_comment",
    "nulls_order": "SELECT o_orderkey, o_comment FROM orders WHERE o_orderkey <= 12 "
                   "ORDER BY o_comment DESC, o_orderkey LIMIT 8 OFFSET 2",
    "subquery": "SELECT o_custkey, count(*) AS n FROM orders WHERE o_totalprice > (SELECT max(o_totalprice) - 500 FROM orders) "
                "AND o_custkey IN (SELECT c_custkey FROM customer WHERE c_nationkey = 2) GROUP BY o_custkey "
                "ORDER BY o_custkey",
    "case_and_wide_arithmetic": "SELECT CASE WHEN o_custkey * 2 > 20 THEN 'high' ELSE 'low' END AS band, "
                                "sum(o_totalprice * 2 - o_totalprice) AS s FROM orders GROUP BY 1 ORDER BY 1",
}
FEDERATED = {
    "float_column": "SELECT o_shippriority, count(*) AS n FROM orders WHERE o_discount > 0.05 "
                    "GROUP BY o_shippriority ORDER BY o_shippriority",
    "function": "SELECT upper(c_mktsegment) AS seg, count(*) AS n FROM customer GROUP BY 1 ORDER BY 1",
    "integer_division": "SELECT o_orderkey / 7 AS bucket, count(*) AS n FROM orders WHERE o_orderkey < 30 "
                        "GROUP BY 1 ORDER BY 1",
    "int32_arithmetic": "SELECT o_shippriority + 1 AS p, count(*) AS n FROM orders GROUP BY 1 ORDER BY 1",
}


@pytest.mark.parametrize("name", list(WHOLE) + list(FEDERATED))
def test_live_answers_are_exact(satchel: SatchelServer, name: str) -> None:
    sql = {**WHOLE, **FEDERATED}[name]
    assert rows(query(satchel, sql)) == expected(sql)


@pytest.mark.parametrize("name", list(WHOLE) + list(FEDERATED))
def test_accelerated_copy_gives_the_same_answers(satchel: SatchelServer, name: str) -> None:
    sql = {**WHOLE, **FEDERATED}[name]
    live = query(satchel, sql)
    accelerated = query(satchel, with_suffix(sql, "_acc"))
    assert rows(accelerated) == rows(live) == expected(sql)
    assert [(f.name, f.type) for f in accelerated.schema] == [(f.name, f.type) for f in live.schema]
    assert "pushed down whole" not in explain(satchel, with_suffix(sql, "_acc"))


def test_join_with_a_local_file(satchel: SatchelServer, sail: SailServer) -> None:
    sql = ("SELECT n.n_name, count(*) AS n, sum(o.o_totalprice) AS revenue FROM orders o "
           "JOIN customer c ON o.o_custkey = c.c_custkey JOIN nation n ON c.c_nationkey = n.n_nationkey "
           "WHERE o.o_orderstatus = 'O' GROUP BY n.n_name ORDER BY n.n_name")
    before = len(sail.statements())
    assert rows(query(satchel, sql)) == expected(sql)
    plan = explain(satchel, sql)
    assert "pushed down whole" not in plan  # nation is a local file: Sail gets the scans
    sent = sail.statements()[before:]
    scans = [s for s in sent if "`o_orderstatus` = 'O'" in s]
    assert scans and scans[-1].startswith("SELECT `o_custkey`, `o_orderstatus`, `o_totalprice` FROM `orders`") or \
        scans and "FROM `orders`" in scans[-1], sent


@pytest.mark.parametrize("name", list(WHOLE))
def test_whole_queries_go_to_sail_in_spark_sql(satchel: SatchelServer, sail: SailServer, name: str) -> None:
    sql = WHOLE[name]
    plan = explain(satchel, sql)
    assert "pushed down whole to flightsql:grpc://127.0.0.1" in plan, plan
    before = len(sail.statements())
    assert rows(query(satchel, sql)) == expected(sql)
    sent = sail.statements()[before:]
    whole = [s for s in sent if s.startswith("/* satchel */")]
    assert len(whole) == 1 and len(sent) == 1, sent  # one statement, no scans
    assert "`orders`" in whole[0] and '"' not in whole[0].replace('\\"', ""), whole[0]


def test_quotes_and_backslashes_reach_sail_escaped(satchel: SatchelServer, sail: SailServer) -> None:
    before = len(sail.statements())
    query(satchel, WHOLE["quoted_literals"])
    sent = sail.statements()[before:]
    assert any("'it\\'s done'" in s and "'back\\\\slash'" in s for s in sent), sent


def test_nulls_are_ordered_as_in_satchel(satchel: SatchelServer, sail: SailServer) -> None:
    sql = "SELECT o_comment, count(*) AS n FROM orders GROUP BY o_comment ORDER BY o_comment DESC"
    before = len(sail.statements())
    got = rows(query(satchel, sql))
    assert got == expected(sql) and got[0][0] is None  # DESC: NULLs first, as in PostgreSQL (Spark: last)
    assert any("DESC NULLS FIRST" in s for s in sail.statements()[before:]), sail.statements()[before:]
    asc = sql.replace(" DESC", "")
    assert rows(query(satchel, asc)) == expected(asc) and expected(asc)[-1][0] is None  # ASC: NULLs last


@pytest.mark.parametrize("name", list(FEDERATED))
def test_other_queries_stay_federated_with_scans_pushed(satchel: SatchelServer, sail: SailServer, name: str) -> None:
    sql = FEDERATED[name]
    plan = explain(satchel, sql)
    assert "pushed down whole" not in plan and "source sql for" in plan, plan
    before = len(sail.statements())
    query(satchel, sql)
    sent = sail.statements()[before:]
    assert sent and all(s.startswith("SELECT `") and " FROM `" in s for s in sent), sent


def test_a_query_dataset_reads_and_goes_down_as_a_subquery(satchel: SatchelServer, sail: SailServer) -> None:
    """`from: flightsql:SELECT ...`: its schema from `SELECT * FROM (query) AS q LIMIT 0` (Sail has
    no GetExecuteSchema), joined whole with a Sail table as a parenthesised subquery."""
    sql = ("SELECT c.c_mktsegment, count(*) AS n, sum(o.o_totalprice) AS revenue FROM open_orders o "
           "JOIN customer c ON o.o_custkey = c.c_custkey GROUP BY c.c_mktsegment ORDER BY c.c_mktsegment")
    want = expected(sql.replace("FROM open_orders o", "FROM (SELECT * FROM orders WHERE o_orderstatus = 'O') o"))
    before = len(sail.statements())
    assert rows(query(satchel, sql)) == want and want
    sent = sail.statements()[before:]
    inner = "(SELECT o_orderkey, o_custkey, o_totalprice FROM orders WHERE o_orderstatus = 'O')"
    assert f"SELECT * FROM {inner} AS `q` LIMIT 0" in sail.statements(), sent  # the schema, no rows
    whole = [x for x in sent if x.startswith("/* satchel */")]
    assert len(whole) == 1 and f"{inner} AS `o`" in whole[0], sent
    assert all(x.endswith("LIMIT 0") for x in sent if x not in whole), sent  # no scans


def test_sail_without_the_spark_dialect_is_a_clear_error(sail: SailServer) -> None:
    """Sail calls itself "Flight SQL": `auto` cannot tell, and double-quoted names would be
    strings there. The schema read fails and says which param to set."""
    from connectors.base import DatasetSpec
    from connectors.sql.flightsql import FlightSqlConnector
    from engine.errors import ConnectorError

    conn = FlightSqlConnector(DatasetSpec("orders", "orders", "flightsql", {"flightsql_endpoint": sail.endpoint}))
    try:
        with pytest.raises(ConnectorError, match="flightsql_dialect: spark") as e:
            conn.schema()
        assert str(e.value).count("dataset 'orders'") == 1 and e.value.code == "source_error", str(e.value)
    finally:
        conn.close()


def test_string_filters_are_pushed_in_spark_syntax(satchel: SatchelServer, sail: SailServer) -> None:
    sql = ("SELECT n.n_name, o.o_orderkey FROM orders o JOIN customer c ON o.o_custkey = c.c_custkey "
           "JOIN nation n ON c.c_nationkey = n.n_nationkey WHERE o.o_comment = 'back\\slash' "
           "AND o.o_comment LIKE 'back%' ORDER BY o.o_orderkey")
    before = len(sail.statements())
    assert rows(query(satchel, sql)) == expected(sql)
    sent = sail.statements()[before:]
    assert any("`o_comment` = 'back\\\\slash'" in s for s in sent), sent


# -- TPC-H (SF 0.01) in a Sail database ---------------------------------------------------------


@pytest.fixture(scope="module")
def tpch_over_sail(sail: SailServer, module_satchel_server, tmp_path_factory):
    """dbgen's tables as Parquet registered in Sail's `tpch` database; a Satchel with each table
    live (`<table>_fed`, flightsql:tpch.<table>) and DuckDB-accelerated (`<table>`)."""
    from tests.engine import test_tpch as tpch

    tmp: Path = tmp_path_factory.mktemp("sail_tpch")
    con = tpch.tpch_connection()
    try:
        con.execute(f"CALL dbgen(sf={tpch.SCALE_FACTOR})")
        for table in tpch.TABLES:
            con.execute(f"COPY {table} TO '{tmp / table}.parquet' (FORMAT parquet)")
        queries = dict(con.execute("SELECT query_nr, query FROM tpch_queries()").fetchall())
        answers = dict(con.execute("SELECT query_nr, answer FROM tpch_answers() WHERE scale_factor = ?",
                                   [tpch.SCALE_FACTOR]).fetchall())
    finally:
        con.close()
    sail.execute("CREATE DATABASE IF NOT EXISTS tpch")
    for table in tpch.TABLES:
        sail.create_parquet_table(table, tmp / f"{table}.parquet", database="tpch")
    lines = ["version: v1", "kind: Spicepod", "name: tpch_sail", "datasets:"]
    params = ["    params:", f"      flightsql_endpoint: {sail.endpoint}", "      flightsql_dialect: spark"]
    for table in tpch.TABLES:
        lines += [f"  - from: flightsql:tpch.{table}", f"    name: {table}_fed", *params]
        lines += [f"  - from: flightsql:tpch.{table}", f"    name: {table}", *params,
                  "    acceleration:", "      enabled: true", "      engine: duckdb"]
    server = module_satchel_server("\n".join(lines) + "\n", timeout=180)
    return server, queries, answers


TPCH_ROUTES = {"federated": "_fed", "duckdb": ""}


@pytest.mark.parametrize("route", list(TPCH_ROUTES))
@pytest.mark.parametrize("query_nr", range(1, 23))
def test_tpch_over_sail_matches_the_reference(tpch_over_sail, route: str, query_nr: int) -> None:
    from tests.engine import test_tpch as tpch

    server, queries, answers = tpch_over_sail
    sql = tpch.with_suffix(queries[query_nr], TPCH_ROUTES[route])
    tpch.assert_same_result(query(server, sql), answers[query_nr], queries[query_nr])


def test_tpch_queries_within_the_spark_set_go_to_sail_whole(tpch_over_sail, sail: SailServer) -> None:
    """Which TPC-H queries Sail runs whole (EXPLAIN), and Sail's log shows each as one statement."""
    from tests.engine import test_tpch as tpch

    server, queries, _ = tpch_over_sail
    whole = [n for n in range(1, 23)
             if "pushed down whole to flightsql:" in explain(server, tpch.with_suffix(queries[n], "_fed"))]
    assert whole, "no TPC-H query went to Sail whole"
    print(f"TPC-H queries Sail ran whole: {whole}")
    for n in whole:
        before = len(sail.statements())
        query(server, tpch.with_suffix(queries[n], "_fed"))
        sent = sail.statements()[before:]
        assert len(sent) == 1 and sent[0].startswith("/* satchel */") and "`tpch`.`" in sent[0], (n, sent)


# -- Spark Connect (adbc: with adbc-driver-spark) -------------------------------------------------


@pytest.fixture(scope="module")
def spark_connect(module_satchel_server, tmp_path_factory):
    """Sail's Spark Connect server and a Satchel reading the same Parquet files through it with
    `adbc:` datasets (adbc_driver_spark; Spark's `parquet.`path`` tables, since each Spark Connect
    session has its own catalog in Sail): `<table>_sc` live, `<table>_sc_acc` in DuckDB."""
    tmp: Path = tmp_path_factory.mktemp("sail_spark")
    server = start_sail(tmp, "spark")
    try:
        lines = ["version: v1", "kind: Spicepod", "name: over_spark_connect", "datasets:"]
        for name, table in SAIL_TABLES.items():
            path = tmp / f"{name}.parquet"
            pq.write_table(table, path)
            source = [f"  - from: 'adbc:\"parquet\".\"{path}\"'", "    params:", "      adbc_driver: adbc_driver_spark",
                      f"      adbc_uri: {server.endpoint}"]
            lines += [source[0], f"    name: {name}_sc", *source[1:]]
            lines += [source[0], f"    name: {name}_sc_acc", *source[1:],
                      "    acceleration:", "      enabled: true", "      engine: duckdb"]
        lines += ["  - from: file:nation.csv", "    name: nation"]
        satchel = module_satchel_server("\n".join(lines) + "\n", files={"nation.csv": NATION_CSV})
        yield server, satchel
    finally:
        server.stop()


@pytest.mark.parametrize("name", list(WHOLE) + list(FEDERATED))
def test_spark_connect_answers_are_exact_on_both_routes(spark_connect, name: str) -> None:
    _, satchel = spark_connect
    sql = {**WHOLE, **FEDERATED}[name]
    want = expected(sql)
    assert rows(query(satchel, with_suffix(sql, "_sc"))) == want
    assert rows(query(satchel, with_suffix(sql, "_sc_acc"))) == want


@pytest.mark.parametrize("name", list(WHOLE))
def test_spark_connect_whole_queries_go_to_sail(spark_connect, name: str) -> None:
    sail, satchel = spark_connect
    sql = with_suffix(WHOLE[name], "_sc")
    assert "pushed down whole to adbc:" in explain(satchel, sql)
    before = len(sail.statements())
    query(satchel, sql)
    sent = sail.statements()[before:]
    assert len(sent) == 1 and sent[0].startswith("/* satchel */ SELECT") and "`parquet`.`/" in sent[0], sent


def test_spark_connect_join_with_a_local_file(spark_connect) -> None:
    sail, satchel = spark_connect
    sql = ("SELECT n.n_name, count(*) AS n, sum(o.o_totalprice) AS revenue FROM orders o "
           "JOIN customer c ON o.o_custkey = c.c_custkey JOIN nation n ON c.c_nationkey = n.n_nationkey "
           "WHERE o.o_comment = 'back\\slash' GROUP BY n.n_name ORDER BY n.n_name")
    before = len(sail.statements())
    assert rows(query(satchel, with_suffix(sql, "_sc"))) == expected(sql)
    sent = sail.statements()[before:]
    assert any(s.startswith("SELECT `") and "`o_comment` = 'back\\\\slash'" in s for s in sent), sent
