"""Same answer on every route: a query over live PostgreSQL tables (whole-query push-down)
returns exactly what it returns over DuckDB- and Arrow-accelerated copies, where PostgreSQL and
the engines could differ (integer division, NULL ordering, string order, time zones, numeric
types), and EXPLAIN shows what went to the source."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pyarrow as pa
import pytest

from engine.config import load_pod
from engine.errors import SatchelError, SqlError
from engine.runtime import Runtime
from tests.integration.postgres_server import PgServer, postgres_server  # noqa: F401

pytestmark = pytest.mark.integration

ROWS = [
    # id, a, b, n, s, ts (UTC text), price, f
    (1, 7, 2, None, "apple", "2024-01-15 23:30:00+00", "10.25", 1.5),
    (2, -7, 2, 3, "Banana", "2024-01-16 00:30:00+00", "-3.10", -0.0),
    (3, 9, -4, 1, "éclair", "2024-01-15 12:00:00+05:30", None, 2.25),
    (4, 0, 5, None, "Zebra", "1999-12-31 23:59:59.999999+00", "0.05", None),
    (5, 15, 4, 3, "a b", None, "1234567.89", 1e10),
    (6, 1, 3, -2, "_under", "2024-03-10 02:30:00-08:00", "2.50", 3.0),
    (7, 5, 2, 0, "apple", "2024-01-15 00:00:00+00", "7.77", 0.1),
    (8, 3, 7, None, None, "2024-01-15 00:00:00+00", "1.00", 1.0),
]

QUERIES = {
    "int-division": "SELECT id, a / b AS q, a % b AS m FROM {t} ORDER BY id",
    "nulls-asc": "SELECT id, n FROM {t} ORDER BY n, id",
    "nulls-desc": "SELECT id, n FROM {t} ORDER BY n DESC, id",
    "string-order": "SELECT id, s FROM {t} ORDER BY s, id",
    "string-compare": "SELECT id FROM {t} WHERE s < 'b' ORDER BY id",
    "string-max": "SELECT min(s) AS lo, max(s) AS hi FROM {t}",
    "tz-trunc": "SELECT date_trunc('day', ts) AS d, count(*) AS c FROM {t} GROUP BY 1 ORDER BY 1",
    "tz-extract": "SELECT id, extract(hour FROM ts) AS h FROM {t} ORDER BY id",
    "tz-date": "SELECT id, CAST(ts AS DATE) AS d FROM {t} ORDER BY id",
    "numeric-aggregates": "SELECT sum(price) AS s, avg(price) AS a, sum(a) AS si, avg(a) AS ai, count(price) AS c FROM {t}",
    "numeric-average-forms": "SELECT 100 / avg(price) AS inv, avg(price) * 2 AS twice, "
                             "avg(price) FILTER (WHERE id > 2) AS f, avg(DISTINCT price) AS d, "
                             "avg(DISTINCT price) FILTER (WHERE id > 1) AS df FROM {t}",
    "numeric-average-window": "SELECT id, avg(price) OVER (ORDER BY id) AS w FROM {t} ORDER BY id",
    "numeric-average-groups": "SELECT n, avg(price) AS a, sum(price) AS s FROM {t} GROUP BY n ORDER BY n",
    "numeric-arith": "SELECT id, price * 2 AS p2, price / 4 AS p4 FROM {t} ORDER BY id",
    "window": "SELECT id, rank() OVER (ORDER BY n DESC) AS r, sum(a) OVER (PARTITION BY n) AS s FROM {t} ORDER BY id",
    "subquery": "SELECT id FROM {t} WHERE a > (SELECT avg(a) FROM {t}) ORDER BY id",
    "self-join-limit": "SELECT x.id, y.id AS other FROM {t} x JOIN {t} y ON x.s = y.s AND x.id < y.id ORDER BY 1 LIMIT 5",
    "float": "SELECT id, f * 2 AS f2, f / 3 AS f3 FROM {t} ORDER BY id",
    "like": "SELECT id FROM {t} WHERE s LIKE '\\_%' OR s LIKE 'a%' ORDER BY id",
    "float-to-int": "SELECT id, CAST(f * 5 AS INT) AS i, CAST(price AS INT) AS p FROM {t} WHERE f < 1000 ORDER BY id",
    "percentiles": "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY price) AS d, "
                   "percentile_disc(0.3) WITHIN GROUP (ORDER BY a DESC) AS da, "
                   "percentile_disc(0.5) WITHIN GROUP (ORDER BY s) FILTER (WHERE n IS NOT NULL) AS ds, "
                   "percentile_cont(0.25) WITHIN GROUP (ORDER BY price) AS c, "
                   "percentile_cont(0.5) WITHIN GROUP (ORDER BY a) AS ca FROM {t}",
    "at-time-zone": "SELECT id, ts AT TIME ZONE 'America/New_York' AS ny, "
                    "(ts AT TIME ZONE 'Asia/Kolkata') AT TIME ZONE 'Europe/Paris' AS back FROM {t} ORDER BY id",
    "regex-substring": "SELECT id, substring(s FROM '^(.)') AS first, substring(s, 'an+') AS an, "
                       "substring(s FROM 'zz') AS none FROM {t} ORDER BY id",
    "grouping-sets": "SELECT n, b, count(*) AS c, grouping(n, b) AS g FROM {t} GROUP BY CUBE (n, b) ORDER BY 1, 2, 4",
    "time-literals": "SELECT id FROM {t} WHERE ts >= '2024-01-15 12:00' AND ts < '2024-01-16T00:30+00' "
                     "OR ts = '1999-12-31 23:59:59.999999Z' OR ts BETWEEN '2024/03/10' AND '2024-03-11 00:00' ORDER BY id",
    "quantified": "SELECT id, a > ALL (SELECT b FROM {t} WHERE b > 2) AS gt_all, a < ANY (SELECT n FROM {t}) AS lt_any, "
                  "a >= ALL (SELECT n FROM {t} WHERE n > 100) AS vacuous, n <= ANY (SELECT a FROM {t}) AS null_left, "
                  "a <> ANY (SELECT n FROM {t}) AS ne_any, b = ALL (SELECT 2) AS eq_all "
                  "FROM {t} ORDER BY id",
    "quantified-filter": "SELECT id FROM {t} WHERE a = ANY (SELECT n FROM {t}) OR a <> ALL (SELECT n FROM {t} WHERE n IS NOT NULL) "
                         "AND b < ALL (SELECT a FROM {t} WHERE a > 0) ORDER BY id",
    "to-char": "SELECT id, to_char(ts, 'YYYY-MM-DD HH24:MI') AS t FROM {t} ORDER BY id",
    "now": "SELECT count(*) AS n FROM {t} WHERE ts < now() AND ts > now() - INTERVAL '100 years'",
    "width-bucket": "SELECT id, width_bucket(a, 0, 10, 5) AS w, width_bucket(price, 10, 0, 4) AS r, "
                    "width_bucket(f, 0.0, 3.0, 3) AS f FROM {t} ORDER BY id",
}
# Queries PostgreSQL would answer differently: never pushed down whole, still the same answer.
NOT_PUSHED = {
    "float-as-text": "SELECT id, CAST(f AS TEXT) AS t FROM {t} ORDER BY id",
    "float-concat": "SELECT id, s || f AS t FROM {t} ORDER BY id",
    "time-as-text": "SELECT id, CAST(ts AS TEXT) AS c FROM {t} ORDER BY id",
}


def pod_yaml(server: PgServer, table: str, name: str, extra: str = "") -> str:
    """`name` DuckDB-accelerated, `name_arrow` Arrow-accelerated, `name_fed` federated."""
    params = server.params_yaml(6)
    lines = ["version: v1", "kind: Spicepod", "name: sem", "datasets:"]
    for suffix, engine in (("", "duckdb"), ("_arrow", "arrow"), ("_fed", None)):
        lines += [f"  - from: postgres:{table}", f"    name: {name}{suffix}", "    params:", params]
        if engine:
            lines += ["    acceleration:", f"      engine: {engine}"]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture(scope="module")
def runtime(postgres_server: PgServer, tmp_path_factory) -> Runtime:
    server = postgres_server
    server.execute("DROP TABLE IF EXISTS public.sem",
                   "CREATE TABLE public.sem (id int PRIMARY KEY, a int, b int, n int, s text, ts timestamptz, "
                   "price numeric(10,2), f float8)")
    values = ", ".join(
        "(" + ", ".join("NULL" if v is None else (str(v) if isinstance(v, (int, float)) else "'" + v + "'")
                        for v in row) + ")" for row in ROWS)
    server.execute(f"INSERT INTO public.sem VALUES {values}", "GRANT SELECT ON public.sem TO satchel")
    pod = pod_yaml(server, "public.sem", "sem")
    directory = Path(tmp_path_factory.mktemp("sem_pod"))
    (directory / "spicepod.yaml").write_text(pod)
    rt = Runtime(load_pod(directory / "spicepod.yaml"), data_dir=str(directory / ".satchel"))
    rt.start()
    assert rt.wait_ready(30), rt.status()
    yield rt
    rt.stop()


def run(rt: Runtime, sql: str) -> pa.Table:
    return rt.query(sql).read_all()


ROUTES = ("sem", "sem_arrow", "sem_fed")  # DuckDB-accelerated, Arrow-accelerated, live (pushed down)


def same_as_postgres(rt: Runtime, server: PgServer, sql: str, tables: tuple[str, ...],
                     source: str = "public.sem") -> list[pa.Table]:
    """`sql` (naming its table `{t}`) answered over each of `tables` as PostgreSQL answers it
    over `source`, row for row; the answers."""
    want = [tuple(_comparable(v) for v in row) for row in server.fetch(sql.format(t=source))]
    answers = []
    for table in tables:
        got = run(rt, sql.format(t=table))
        assert [tuple(_comparable(v) for v in row.values()) for row in got.to_pylist()] == want, table
        answers.append(got)
    return answers


@pytest.mark.parametrize("name", list(NOT_PUSHED))
def test_queries_postgres_means_differently_are_not_pushed_down_whole(runtime: Runtime, name: str) -> None:
    sql = NOT_PUSHED[name]
    explain = "\n".join(run(runtime, "EXPLAIN " + sql.format(t="sem_fed")).column("plan").to_pylist())
    assert "pushed down whole" not in explain and "source sql for __scan_0" in explain, explain
    assert run(runtime, sql.format(t="sem_fed")).to_pylist() == run(runtime, sql.format(t="sem_arrow")).to_pylist()


# Where the accelerated routes already disagree among themselves (DuckDB vs DataFusion), a
# planner matter outside the PostgreSQL connector: PostgreSQL agrees with one of them.
ACCELERATOR_GAPS = {  # PostgreSQL agrees with the Arrow route
    "numeric-arith": "decimal * int: DuckDB decimal(18,2), DataFusion decimal(31,2)",
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_pushed_down_query_matches_the_arrow_route(runtime: Runtime, name: str) -> None:
    sql = QUERIES[name]
    explain = "\n".join(run(runtime, "EXPLAIN " + sql.format(t="sem_fed")).column("plan").to_pylist())
    assert "pushed down whole to postgres:" in explain, explain
    assert "source sql: /* satchel */ SELECT" in explain and '"public"."sem"' in explain
    want = run(runtime, sql.format(t="sem_arrow"))
    got = run(runtime, sql.format(t="sem_fed"))
    assert [(f.name, f.type) for f in got.schema] == [(f.name, f.type) for f in want.schema]
    assert got.to_pylist() == want.to_pylist()


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=ACCELERATOR_GAPS[n], raises=AssertionError))
    if n in ACCELERATOR_GAPS else n for n in QUERIES])
def test_pushed_down_query_matches_the_duckdb_route(runtime: Runtime, name: str) -> None:
    sql = QUERIES[name]
    want = run(runtime, sql.format(t="sem"))
    got = run(runtime, sql.format(t="sem_fed"))
    assert [(f.name, f.type) for f in got.schema] == [(f.name, f.type) for f in want.schema]
    assert got.to_pylist() == want.to_pylist()


def test_avg_of_numeric_goes_down_as_postgres_own_avg(runtime: Runtime) -> None:
    """AVG(numeric) is PostgreSQL's exact average, cast to DOUBLE once per group (the announced
    type), never a DOUBLE average of every row cast (1.5x slower there, and its last digits
    vary with the order parallel workers add them in)."""
    sql = "SELECT avg(price) AS a, avg(price) FILTER (WHERE id > 2) AS f FROM sem_fed"
    explain = "\n".join(run(runtime, "EXPLAIN " + sql).column("plan").to_pylist())
    source = [line for line in explain.splitlines() if line.startswith("source sql: ")]
    assert len(source) == 1, explain
    assert 'CAST(AVG("sem_fed"."price") AS DOUBLE PRECISION) AS "a"' in source[0], explain
    assert 'CAST(AVG("sem_fed"."price") FILTER(WHERE "sem_fed"."id" > 2) AS DOUBLE PRECISION)' in source[0], explain
    assert "AVG(CAST(" not in source[0], explain
    got = run(runtime, sql)
    assert got.schema.field("a").type == pa.float64()
    prices = [decimal.Decimal(r[6]) for r in ROWS if r[6] is not None]
    later = [decimal.Decimal(r[6]) for r in ROWS if r[6] is not None and r[0] > 2]
    assert got.to_pylist() == [{"a": float(sum(prices) / len(prices)), "f": float(sum(later) / len(later))}]


def test_the_source_statement_is_worked_out_once_per_cached_plan(runtime: Runtime) -> None:
    """DoGet reuses the cached plan's statement and expected schema (re-deriving them cost
    5-20 ms a query: parse, typing, rendering, a DataFusion planning over empty tables)."""
    from engine.query import pushdown

    sql = "SELECT s, avg(price) AS a FROM sem_fed GROUP BY s ORDER BY s"
    first = run(runtime, sql)
    plan = runtime.queries._planned(sql, None).plan  # the plan DoGet used, from the plan cache
    assert {"source_sql", "expected_schema"} <= set(plan.memo)
    statement = pushdown.source_sql(plan, runtime.datasets)
    assert statement is not None and pushdown.source_sql(plan, runtime.datasets) is statement
    assert run(runtime, sql).to_pylist() == first.to_pylist()


def test_a_column_with_its_own_collation_is_not_pushed_down_whole(postgres_server: PgServer, tmp_path) -> None:
    """PostgreSQL would sort this column by en-US rules; the engine sorts by code point, so the
    query runs federated (its scans still pushed) and gives the engine's order."""
    postgres_server.execute("DROP TABLE IF EXISTS public.coll",
                            'CREATE TABLE public.coll (id int, s text COLLATE "en-x-icu")',
                            "INSERT INTO public.coll VALUES (1, 'b'), (2, 'B'), (3, 'a'), (4, 'A'), (5, 'é')",
                            "GRANT SELECT ON public.coll TO satchel")
    assert [r[0] for r in postgres_server.fetch("SELECT id FROM public.coll ORDER BY s")] != [4, 2, 3, 1, 5]
    (tmp_path / "spicepod.yaml").write_text(pod_yaml(postgres_server, "public.coll", "coll"))
    rt = Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))
    rt.start()
    try:
        assert rt.wait_ready(30)
        explain = "\n".join(run(rt, "EXPLAIN SELECT id FROM coll_fed ORDER BY s").column("plan").to_pylist())
        assert "pushed down whole" not in explain and "source sql for __scan_0" in explain, explain
        for name in ("coll", "coll_arrow", "coll_fed"):
            assert run(rt, f"SELECT id FROM {name} ORDER BY s").column("id").to_pylist() == [4, 2, 3, 1, 5], name
    finally:
        rt.stop()


def test_capitalised_table_and_column_names_on_every_route(postgres_server: PgServer, tmp_path) -> None:
    """A PostgreSQL table and columns named with capitals (as ORMs make them: "OrderLines",
    "customerId") load, push down and answer quoted on every route."""
    server = postgres_server
    server.execute('DROP TABLE IF EXISTS public."OrderLines"',
                   'CREATE TABLE public."OrderLines" ("lineId" int PRIMARY KEY, "customerId" int, "Total" numeric(10,2))',
                   'INSERT INTO public."OrderLines" VALUES (1, 7, 10.50), (2, 7, 4.25), (3, 9, 1.00)',
                   'GRANT SELECT ON public."OrderLines" TO satchel')
    (tmp_path / "spicepod.yaml").write_text(pod_yaml(server, '"OrderLines"', "Lines"))
    rt = Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))
    rt.start()
    try:
        assert rt.wait_ready(30), rt.status()
        sql = 'SELECT "customerId", sum("Total") AS total FROM {t} WHERE "lineId" < 3 GROUP BY 1 ORDER BY 1'
        want = [{"customerId": 7, "total": decimal.Decimal("14.75")}]
        for table in ("lines", '"Lines"', "lines_arrow", "LINES_FED"):
            assert run(rt, sql.format(t=table)).to_pylist() == want, table
        explain = "\n".join(run(rt, "EXPLAIN " + sql.format(t="lines_fed")).column("plan").to_pylist())
        assert '"OrderLines"' in explain and '"customerId"' in explain, explain
    finally:
        rt.stop()


def _micros(value: object) -> object:
    """An interval as microseconds, whichever client gave it (PostgreSQL's timedelta, Arrow's
    month-day-nano); a whole numeric as an int."""
    if isinstance(value, dt.timedelta):
        return round(value / dt.timedelta(microseconds=1))
    if hasattr(value, "nanoseconds"):
        return (value.months * 30 + value.days) * 86_400_000_000 + value.nanoseconds // 1000
    if isinstance(value, str) and value.lstrip("-").isdigit():  # a numeric, as the ADBC driver gives it
        return int(value)
    if isinstance(value, decimal.Decimal) and value == value.to_integral_value():
        return int(value)
    return value


SERIES = [
    "SELECT g, count(x.id) AS n FROM generate_series(1, 4) AS g LEFT JOIN {t} x ON x.b = g GROUP BY g ORDER BY g",
    "SELECT d::date AS day, count(x.id) AS n FROM generate_series(TIMESTAMP '2024-01-14', TIMESTAMP '2024-01-17', "
    "INTERVAL '1 day') AS d LEFT JOIN {t} x ON x.ts::date = d::date GROUP BY 1 ORDER BY 1",
    "SELECT s.x, x.id FROM generate_series(10, 1, -3) AS s(x) JOIN {t} x ON x.a < s.x AND x.id = 1 ORDER BY 1",
    "SELECT * FROM generate_series(TIMESTAMPTZ '2024-03-09 12:00+00', TIMESTAMPTZ '2024-03-10 12:00+00', "
    "INTERVAL '12 hours') WHERE EXISTS (SELECT 1 FROM {t})",
]


@pytest.mark.parametrize("sql", SERIES)
def test_generate_series_in_from_as_postgres_runs_it(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    """A date spine or number series joined to data (gap filling), on every route; it was refused
    as a table function."""
    same_as_postgres(runtime, postgres_server, sql, ROUTES)
    assert run(runtime, "SELECT * FROM generate_series(1, 3)").column_names == ["generate_series"]


def test_to_char_refuses_what_it_cannot_write(runtime: Runtime) -> None:
    """Patterns with no form here are refused by name, and a template too long to be one is
    refused before it becomes a huge expression (150 parts still run, on every route)."""
    for template, message in (("RM YYYY", "pattern 'RM' is not supported"), ("9.99EEEE", "pattern 'EEEE' for a number"),
                              ("Q" * 500, "template too long"), ("9" * 60, "more digit positions")):
        with pytest.raises(SqlError, match=message):
            run(runtime, f"SELECT to_char({'ts' if 'EEEE' not in template and '9' not in template else 'a'}, "
                         f"'{template}') FROM sem_arrow")
    for table in ("sem", "sem_arrow"):
        got = run(runtime, f"SELECT to_char(ts, '{'Q' * 150}') AS q FROM {table} WHERE id = 1")
        assert got.column("q").to_pylist() == ["1" * 150]


SCALAR_SUBQUERIES = [
    "SELECT id FROM {t} WHERE (SELECT 1 FROM {t} WHERE a > 100) IS NOT NULL ORDER BY id",
    "SELECT id FROM {t} WHERE (SELECT id FROM {t} WHERE a > 100 LIMIT 1) IS NOT NULL ORDER BY id",
    "SELECT id, (SELECT 1 FROM {t} WHERE a > 100) IS NULL AS e FROM {t} ORDER BY id",
    "SELECT id, (SELECT 'x' FROM {t} WHERE a > 100) AS e FROM {t} ORDER BY id",
    "SELECT id, coalesce((SELECT 5 FROM {t} WHERE a > 100), 0) AS e FROM {t} ORDER BY id",
    "SELECT id, (SELECT id FROM {t} WHERE a = 15) AS e FROM {t} ORDER BY id",
]


@pytest.mark.parametrize("sql", SCALAR_SUBQUERIES)
def test_a_scalar_subquery_of_no_row_is_null(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    """DataFusion took a subquery's value for never NULL when its column cannot be (a literal, the
    primary key) even when it returned no row: `WHERE (SELECT 1 ... WHERE false) IS NOT NULL` kept
    every row on the Arrow route. Two rows still fail, as in PostgreSQL."""
    same_as_postgres(runtime, postgres_server, sql, ROUTES)
    with pytest.raises(SqlError, match="more than one row"):
        run(runtime, "SELECT (SELECT 1 FROM sem_arrow) AS e")
    with pytest.raises(SqlError, match=r"as an aggregate: \(SELECT max\(x\)"):
        run(runtime, "SELECT id, (SELECT 1 FROM sem_arrow u WHERE u.id = t.id) AS e FROM sem_arrow t")


def test_a_materialized_cte_hint_runs_on_every_route(runtime: Runtime) -> None:
    for table in ("sem", "sem_arrow", "sem_fed"):
        for hint in ("MATERIALIZED", "NOT MATERIALIZED"):
            sql = f"WITH w AS {hint} (SELECT * FROM {table} WHERE a > 0) SELECT count(*) AS n FROM w"
            assert run(runtime, sql).column("n").to_pylist() == [6], (table, hint)


ROW_IN = ["SELECT id FROM {t} WHERE (a, b) IN (SELECT a, b FROM {t} WHERE a > 5) ORDER BY id",
          "SELECT id FROM {t} WHERE id > 1 AND (a, b) IN (SELECT a, b FROM {t} WHERE a > 5) ORDER BY id"]


@pytest.mark.parametrize("sql", ROW_IN)
def test_a_row_in_a_subquery_as_postgres_runs_it(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    """`(a, b) IN (SELECT ...)` on every route (DataFusion: "Too many columns!"); where the
    federated engine cannot run it (under OR or NOT), the error says what to write instead."""
    want = [row[0] for row in postgres_server.fetch(sql.format(t="public.sem"))]
    for table in ("sem", "sem_arrow", "sem_fed"):
        assert run(runtime, sql.format(t=table)).column("id").to_pylist() == want, table
    with pytest.raises(SqlError, match=r"uncorrelated, as a condition of its own .* write EXISTS"):
        run(runtime, "SELECT id FROM sem_arrow WHERE (a, b) NOT IN (SELECT a, b FROM sem_arrow WHERE a > 5)")


SUBQUERY_TESTS = [
    "SELECT id, EXISTS (SELECT 1 FROM {t} u WHERE u.a = {t}.b) AS e, NOT EXISTS (SELECT 1 FROM {t} u WHERE u.n = {t}.a) "
    "AS ne FROM {t} ORDER BY id",
    "SELECT id, a IN (SELECT n FROM {t}) AS i, a NOT IN (SELECT b FROM {t} WHERE b > 2) AS ni, "
    "n IN (SELECT a FROM {t} u WHERE u.b = {t}.b) AS ci FROM {t} ORDER BY id",
    "SELECT id, n IN (SELECT DISTINCT n FROM {t} u WHERE u.b = {t}.b ORDER BY 1) AS d, "
    "a IN (SELECT b FROM {t} WHERE false) AS none FROM {t} ORDER BY id",
    "SELECT id FROM {t} WHERE a > 10 OR EXISTS (SELECT 1 FROM {t} u WHERE u.n = {t}.a) ORDER BY id",
    "SELECT id FROM {t} WHERE a > 10 OR n IN (SELECT b FROM {t}) ORDER BY id",
    "SELECT id, CASE WHEN EXISTS (SELECT 1 FROM {t} u WHERE u.s = {t}.s AND u.b = 2) THEN 'two' ELSE 'other' END AS k "
    "FROM {t} ORDER BY id",
    "SELECT id, a = ANY (SELECT n FROM {t}) AS q FROM {t} ORDER BY id",
    # conditions DataFusion runs itself (and that stay as written)
    "SELECT b, count(*) AS c FROM {t} GROUP BY b HAVING b IN (SELECT a FROM {t}) ORDER BY b",
    "SELECT x.id FROM {t} x JOIN {t} y ON x.id = y.id AND x.a IN (SELECT n FROM {t}) ORDER BY 1",
    "SELECT id FROM {t} WHERE (a > 100 OR id IN (SELECT n FROM {t})) AND b > 0 ORDER BY id",
]


@pytest.mark.parametrize("sql", SUBQUERY_TESTS)
def test_exists_and_in_as_values_as_postgres_runs_them(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    """EXISTS / IN (SELECT ...) in a select list or a CASE there (DataFusion runs them only as
    conditions) on every route, with IN's NULLs; PostgreSQL gets them as written."""
    same_as_postgres(runtime, postgres_server, sql, ROUTES)
    explain = "\n".join(run(runtime, "EXPLAIN " + sql.format(t="sem_fed")).column("plan").to_pylist())
    assert "pushed down whole" in explain and "(select count(" not in explain.lower().split("source sql:")[1], explain


def test_a_test_correlated_other_than_by_equality_says_what_to_write(runtime: Runtime,
                                                                     postgres_server: PgServer) -> None:
    """Only a WHERE's condition runs on the federated engine then."""
    with pytest.raises(SqlError, match=r"EXISTS / IN in a select list.*correlated by equality"):
        run(runtime, "SELECT id, EXISTS (SELECT 1 FROM sem_arrow u WHERE u.a < sem_arrow.b + 5) AS e FROM sem_arrow")
    sql = "SELECT id FROM {t} WHERE EXISTS (SELECT 1 FROM {t} u WHERE u.a < {t}.b + 5) ORDER BY id"
    want = [row[0] for row in postgres_server.fetch(sql.format(t="public.sem"))]
    assert run(runtime, sql.format(t="sem_arrow")).column("id").to_pylist() == want


def test_a_lateral_top_row_of_each_group_says_what_to_write(runtime: Runtime, postgres_server: PgServer) -> None:
    """A LATERAL subquery with ORDER BY / LIMIT runs on DuckDB and in PostgreSQL; the federated
    engine cannot decorrelate it, and its error says how to write the top rows of each group."""
    sql = ("SELECT x.id, l.a FROM {t} x, LATERAL (SELECT a FROM {t} u WHERE u.b = x.b ORDER BY a DESC LIMIT 1) l "
           "ORDER BY 1")
    want = [tuple(row) for row in postgres_server.fetch(sql.format(t="public.sem"))]
    for table in ("sem", "sem_fed"):
        assert [tuple(r.values()) for r in run(runtime, sql.format(t=table)).to_pylist()] == want, table
    with pytest.raises(SqlError, match=r"reads the outer row's b .* row_number\(\) OVER \(PARTITION BY k"):
        run(runtime, sql.format(t="sem_arrow"))


MODES = [
    "SELECT mode() WITHIN GROUP (ORDER BY b) AS m, mode() WITHIN GROUP (ORDER BY b DESC) AS d FROM {t}",
    "SELECT b, mode() WITHIN GROUP (ORDER BY a) AS m FROM {t} GROUP BY b ORDER BY b",
    "SELECT mode() WITHIN GROUP (ORDER BY s) AS m, mode() WITHIN GROUP (ORDER BY s DESC) AS d FROM {t}",
    "SELECT mode() WITHIN GROUP (ORDER BY f) AS m, mode() WITHIN GROUP (ORDER BY price) AS p FROM {t}",
    "SELECT mode() WITHIN GROUP (ORDER BY n) AS m, mode() WITHIN GROUP (ORDER BY n) FILTER (WHERE a > 100) AS none "
    "FROM {t}",
    "SELECT mode() WITHIN GROUP (ORDER BY ts::date) AS m, mode() WITHIN GROUP (ORDER BY a > 3) AS b FROM {t}",
]


@pytest.mark.parametrize("sql", MODES)
def test_mode_as_postgres_answers_it(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    """PostgreSQL's mode(): the most frequent value, the first in its ORDER BY among equally
    frequent ones, NULLs ignored, in the column's own type; on the federated engine too."""
    schemas = [[f.type for f in got.schema]
               for got in same_as_postgres(runtime, postgres_server, sql, ROUTES)]
    assert schemas[0] == schemas[1] == schemas[2], schemas


def test_a_huge_series_streams(runtime: Runtime) -> None:
    """generate_series runs as the engines' streaming table function: a trillion values under a
    LIMIT is answered at once, on the DuckDB route and in the federated engine."""
    assert run(runtime, "SELECT g FROM generate_series(1, 1000000000000) AS g LIMIT 3").column("g").to_pylist() == [1, 2, 3]
    for table in ("sem", "sem_arrow"):
        sql = (f"SELECT g, x.id FROM generate_series(1, 1000000000000) AS g "
               f"CROSS JOIN (SELECT id FROM {table} WHERE id = 1) AS x LIMIT 3")
        assert run(runtime, sql).column("g").to_pylist() == [1, 2, 3], table


def test_differences_of_timestamps_mean_what_postgres_means(runtime: Runtime, postgres_server: PgServer) -> None:
    """A difference of timestamps as an output column, compared with intervals (a month as 30
    days) and its fields: every route answers as PostgreSQL itself does. (DataFusion compared
    a duration with an INTERVAL field by field; such queries do not go down whole, so PostgreSQL
    is asked directly here.)"""
    sql = ("SELECT id, ts - TIMESTAMPTZ '2024-01-15 00:00:00+00' AS since, "
           "ts - TIMESTAMPTZ '2024-01-15 00:00:00+00' > INTERVAL '12 hours' AS later, "
           "ts - TIMESTAMPTZ '2024-01-15 00:00:00+00' BETWEEN INTERVAL '1 hour' AND INTERVAL '1 day 1 hour' AS near, "
           "TIMESTAMPTZ '2024-03-01 00:00:00+00' - ts < INTERVAL '1 month' AS within_month, "
           "EXTRACT(hour FROM ts - TIMESTAMPTZ '2024-01-15 00:00:00+00') AS h FROM {t} ORDER BY id")
    want = [tuple(_micros(v) for v in row) for row in postgres_server.fetch(sql.format(t="public.sem"))]
    for table in ("sem", "sem_arrow", "sem_fed"):
        got = [tuple(_micros(v) for v in row.values()) for row in run(runtime, sql.format(t=table)).to_pylist()]
        assert got == want, table


# Functions and operators an agent writes, each checked on the DuckDB and the Arrow (DataFusion)
# route against PostgreSQL's own answer over the same rows.
EXPRESSIONS = [
 "-7 % 3", "a % b", "substr(s, 0, 2)", "substr(s, -1, 3)", "substr(s, a - 5, 3)", "substr(s, -2)", "substr(s, b - 4)", "left(s, -1)", "right(s, -2)", "split_part('a,b,c', ',', -1)",
 "split_part(s, 'a', 2)", "position('a' IN s)", "initcap('hello wORLD-foo bar_baz')", "lpad(s, 3, '*')", "rpad(s, 2)",
 "repeat('ab', -1)", "greatest(a, n)", "least(a, n)", "concat(s, n)", "s || n", "extract(dow FROM ts)", "extract(isodow FROM ts)",
 "date_trunc('week', ts)", "extract(week FROM ts)", "round(price)", "round(price, 1)", "round(-2.5)",
 "round(f)", "trunc(price, 1)", "ceil(f)", "abs(n)", "sign(price)", "length(s)", "upper(s)", "reverse(s)", "strpos(s, 'an')",
 "replace(s, 'a', 'X')", "translate(s, 'ae', 'AE')", "trim(s)", "ltrim('xxa', 'x')", "btrim(' a ')", "md5(s)",
 "to_char(ts, 'YYYY-MM-DD')", "to_char(ts, 'Mon DD YYYY')", "to_char(ts, 'HH12:MI AM')", "to_char(ts, 'FMDay')",
 "ts::date", "ts::time", "date_part('doy', ts)", "date_trunc('month', ts)::date", "date_trunc('quarter', ts)",
 "coalesce(n, 0) / 2", "n / 2.0", "price / 3", "price * f", "f / 3", "a::float / b", "cast(price AS int)",
 "cast(-2.5 AS int)", "cast(2.5 AS int)", "cast(3.5::float8 AS int)", "nullif(a, 7)", "a IS DISTINCT FROM n",
 "s LIKE 'a%'", "s ILIKE 'A%'", "s ~ '^[a-z]'", "s SIMILAR TO 'a%'", "char_length(s)", "octet_length(s)",
 "chr(65)", "ascii(s)", "starts_with(s, 'a')", "regexp_replace(s, 'a', 'X', 'g')", "regexp_replace(s, 'a', 'X')",
 "array_length(string_to_array(s, 'a'), 1)", "cardinality(ARRAY[a, b])", "a::text || '-' || b::text", "to_hex(a + 20)",
 "width_bucket(f, 0, 10, 4)", "power(a, 2)", "sqrt(abs(a))", "exp(0)", "ln(abs(a) + 1)", "log(100)", "mod(a, b)", "div(a, b)",
 "array_length(ARRAY[a, n], 1)", "array_length(array_remove(ARRAY[a], a), 1)",
 "cardinality(array_remove(ARRAY[a, b], a))", "9223372036854775807 / (b + 10)", "(a::bigint * 1000000000000) / 7", "2147483648 * 2 + a", "gcd(a, b)", "a & 3", "factorial(3)", "pi()", "cbrt(27)", "degrees(1)", "trunc(f)", "floor(-f)",
    # times, numbers and texts as agents combine them
    "ts + INTERVAL '1 month'", "ts - INTERVAL '1 day 2 hours'", "date_trunc('day', ts) + INTERVAL '36 hours'",
    "ts::date + 1", "ts::date - DATE '2024-01-01'", "ts::date + INTERVAL '1 day'", "(ts + INTERVAL '1 year')::date",
    "date_part('year', ts)", "extract(month FROM ts)", "extract(isoyear FROM ts)",
    "to_char(ts, 'YYYY-MM-DD\"T\"HH24:MI:SS')", "to_char(ts, 'YY-Mon')", "to_char(ts, 'IYYY-IW')", "to_char(ts, 'DDD')",
    "ts AT TIME ZONE 'UTC'", "ts::timestamp", "ts::timestamp::date", "date_trunc('hour', ts)",
    "ts > '2024-01-15'", "ts::date = '2024-01-15'", "ts BETWEEN '2024-01-15' AND '2024-01-16'",
    "EXTRACT(EPOCH FROM ts)::bigint", "to_timestamp(1700000000 + a)", "ts - ts", "ts::text", "ts::date::text",
    "(price * 1.1)::numeric(10,2)", "price::text", "f::text", "a::text", "(a > b)::text", "price::float8",
    "price::int", "(-price)::int", "round(price / 7, 3)", "price % 1", "price * -1", "trunc(price)", "ceil(price)",
    "coalesce(price, 0)", "coalesce(n, a)", "CASE WHEN n IS NULL THEN 'none' ELSE n::text END",
    "s || ' ' || coalesce(n::text, '?')", "concat_ws('-', s, n, a)", "format('%s/%s', s, n)", "length(s || 'x')",
    "lower(s) = 'apple'", "s IN ('apple', 'Banana')", "s NOT IN ('apple', NULL)", "a IN (7, -7, NULL)",
    "nullif(s, '')", "greatest(f, 0.0)", "least(price, 5)", "abs(f - 1)", "round(f::numeric, 1)", "f = 0", "f < 0",
    "'NaN'::float8 > f", "sqrt(f)", "power(f, 2)", "mod(a, 3)", "a / b", "a::numeric / b", "(a + 0.0) / b",
    # lengths of texts, fractions of seconds, texts read as times, intervals scaled
    "s::varchar(3)", "CAST(a AS VARCHAR(1))", "extract(second FROM ts)", "extract(millisecond FROM ts)",
    "extract(microsecond FROM ts)", "date_part('second', ts)", "extract(second FROM ts::time)", "date_part('epoch', ts)",
    "to_date('2024-01-15', 'YYYY-MM-DD')", "to_timestamp('15/01/2024 10:00', 'DD/MM/YYYY HH24:MI')",
    "INTERVAL '1 day' * a", "a * INTERVAL '1.5 hours'", "INTERVAL '1 month' * 1.5", "INTERVAL '1 hour' / 4",
    "ts + INTERVAL '1 day' * n", "INTERVAL '1 day 2 hours' * b", "INTERVAL '2' HOUR * a", "ts - n * INTERVAL '1 week'",
    "INTERVAL '90 minutes' * least(f, 100)",
    # floats round half to even; SUM of integers with FILTER and OVER
    "round(2.5::float8)", "round(-2.5::float8)", "round(f * 2 + 0.5)", "cast(least(f, 100) * 2 + 0.5 AS int)", "round(2.5::real)",
    "round(a * 1.5)", "round(-2.5)", "round(f * 5)",
    "EXTRACT(EPOCH FROM ts - TIMESTAMPTZ '2024-01-01') / 3600", "extract(month FROM ts) / 5", "extract(day FROM ts) / nullif(a, 0)",
    "(extract(hour FROM ts) * 60 + extract(minute FROM ts)) / 60", "CAST(extract(month FROM ts) AS int) / 5", "round(f + 1.5)", "round(sqrt(abs(a)) * 2)",
    "sum(a) FILTER (WHERE b = 2) OVER ()", "sum(a) FILTER (WHERE b = 2) OVER (ORDER BY id)",
    # age(), as PostgreSQL counts it (DataFusion has none)
    "age(ts::timestamp, TIMESTAMP '2024-01-01')", "age(ts, TIMESTAMPTZ '2020-02-29 13:00+00')", "age(TIMESTAMPTZ '2020-02-29 13:00+00', ts)", "age(TIMESTAMP '2024-03-01 00:00', TIMESTAMP '2024-01-31 12:00')", "age(TIMESTAMP '2023-03-01', TIMESTAMP '2023-01-31 12:00')", "age(ts::date::timestamp, TIMESTAMP '1999-12-31 23:59:59.999999')", "extract(year FROM age(ts, TIMESTAMPTZ '1990-06-15'))",
    # one engine lacked them: regexp_match and overlay (DuckDB), make_timestamp and century (DataFusion)
    "regexp_match(s, '[a-z]+')", "regexp_match(s, '([a-z])([a-z]+)')", "regexp_match(s, 'A', 'i')", "(regexp_match(s, '(a)(p+)'))[2]", "overlay(s placing 'XX' from 2 for 1)", "overlay(s placing 'XX' from 2)", 'make_timestamp(2024, 1, a + 10, 10, 30, 5.5)', 'extract(century FROM ts)', 'extract(decade FROM ts)', 'extract(millennium FROM ts)',
    # interval texts read whole (sqlglot kept the first pair: '1 day 02:00' was one day)
    # x op ANY|ALL (list) with NULLs: a NULL list (DuckDB: false), a NULL element left undecided (DataFusion: false)
    "a > ANY(ARRAY[5, NULL])", "s = ANY(CASE WHEN a > 5 THEN ARRAY['apple'] END)", "a <> ALL(CASE WHEN a > 5 THEN ARRAY[1] END)",
    "NOT (a = ANY(ARRAY[7, NULL]))", "a = ANY(ARRAY[]::int[])", "b < ALL(ARRAY[a, n])", "n = ANY(ARRAY[a, b])",
    # a difference of timestamps as text (DataFusion wrote `14 days 23 hours 30 mins 0.000000 secs+00`)
    "(ts - TIMESTAMPTZ '2024-01-01')::text", "(ts - ts)::text", "CAST(TIMESTAMPTZ '2024-01-15 12:00' - ts AS TEXT)",
    "(ts - (ts - INTERVAL '1 day 90 minutes 0.5 seconds'))::text", "(TIMESTAMPTZ '2024-01-15 12:00:00.25' - ts)::text",
    # timestamp(p): rounded to p digits of a second (DataFusion truncated, timestamptz(p) kept every digit)
    "ts::timestamp(0)", "ts::timestamptz(0)", "CAST(ts AS TIMESTAMP(3))", "ts::timestamptz(2)", "ts::timestamp(6)",
    "(ts + INTERVAL '0.5 seconds')::timestamp(0)", "'2024-01-15 10:00:00.4449'::timestamp(3)",
    # make_interval and num_nulls / num_nonnulls (neither engine has them)
    "make_interval(days => a)", "ts + make_interval(hours => b, mins => 30)", "make_interval(1, 2, 0, a)", "make_interval(secs => least(f, 100))",
    "make_interval()", "make_interval(weeks => n, secs => 1.5)", "num_nulls(n, s)", "num_nonnulls(n, s, a)", "num_nulls(n) + 1",
    "ts + INTERVAL '1 day 02:00'", "ts - INTERVAL '2 weeks ago'", "ts + INTERVAL '-1 day +02:03'", "ts + '1 day 02:00'::interval", "ts + CAST('@ 3 days' AS INTERVAL)", "ts + INTERVAL '1 month 2 days 03:04:05'", "ts + INTERVAL '1:30' HOUR TO MINUTE", "ts + INTERVAL '5'", "ts + INTERVAL '1.5 months'", "ts + INTERVAL '1 year 2 mons'", "INTERVAL '1 day 02:00' * a", "ts > TIMESTAMPTZ '2024-01-16' - INTERVAL '1 day 12:00'", "ts - INTERVAL '-02:30:00.5'", "ts::date + INTERVAL '1 day 02:00'",
]
# to_char, compared as text (blanks and all): PostgreSQL's date/time templates and number templates
TO_CHAR = [
    "to_char(ts, 'YYYY-MM-DD')", 'to_char(ts, \'YYYY-"Q"Q\')', "to_char(ts, 'Month YYYY')", "to_char(ts, 'FMMonth DDth, YYYY')", "to_char(ts, 'HH12:MI am')", "to_char(ts, 'D WW J')", "to_char(ts, 'MS')", "to_char(ts, 'US')", "to_char(ts, 'DDTH')", "to_char(ts, 'month')", "to_char(ts, 'mon')", "to_char(ts, 'MON')", "to_char(ts, 'MONTH')", "to_char(ts, 'Day')", "to_char(ts, 'DAY')", "to_char(ts, 'day')", "to_char(ts, 'DY')", "to_char(ts, 'dy')", "to_char(ts, 'HH:MI:SS PM')", "to_char(ts, 'HH24:MI:SS.MS')", "to_char(ts, 'ID')", "to_char(ts, 'CC')", "to_char(ts, 'W')", "to_char(ts, 'SSSS')", "to_char(ts, 'YYY')", "to_char(ts, 'Y')", "to_char(ts, 'yyyy-mm-dd')", "to_char(ts, 'hh24:mi')", "to_char(ts, 'FMDD/FMMM/YYYY')", "to_char(ts, 'YYYY\\\\MM')", "to_char(ts, 'A.M.')", "to_char(ts, 'p.m.')", "to_char(ts, 'FMHH12 am')", "to_char(ts, 'FMDDD')", 'to_char(ts, \'"Week" IW\')', "to_char(ts, 'Mon DD, YYYY HH12:MIpm')", "to_char(ts, 'YYYYMMDD')", "to_char(ts, 'FMMMth')", "to_char(ts, '50% Q')", "to_char(ts, 'HHth')", 'to_char(ts, \'\\"YYYY\\"\')',
    "to_char(ts::date, 'Day DD Mon')",
    "to_char(a, '999')", "to_char(price, '999')", "to_char(a, 'FM999')", "to_char(price, 'FM999')", "to_char(a, '9990.99')", "to_char(price, '9990.99')", "to_char(a, 'FM9990.99')", "to_char(price, 'FM9990.99')", "to_char(a, 'FM999,999,990.00')", "to_char(price, 'FM999,999,990.00')", "to_char(a, '999,999.99')", "to_char(price, '999,999.99')", "to_char(a, '999S')", "to_char(price, '999S')", "to_char(a, '999MI')", "to_char(price, '999MI')", "to_char(a, 'FMMI999')", "to_char(price, 'FMMI999')", "to_char(a, 'MI999')", "to_char(price, 'MI999')", "to_char(a, '999PR')", "to_char(price, '999PR')", "to_char(a, 'FM999PR')", "to_char(price, 'FM999PR')", "to_char(a, '0000')", "to_char(price, '0000')", "to_char(a, 'FM0000')", "to_char(price, 'FM0000')", 'to_char(a, \'"$"FM999,990.00\')', 'to_char(price, \'"$"FM999,990.00\')', "to_char(a, '9 9 9')", "to_char(price, '9 9 9')", "to_char(a, '99D99')", "to_char(price, '99D99')", "to_char(a, '9G999')", "to_char(price, '9G999')", "to_char(a, 'FM999.999')", "to_char(price, 'FM999.999')", "to_char(a, 'FM990.000')", "to_char(price, 'FM990.000')", "to_char(a, 'FM9999999999990')", "to_char(price, 'FM9999999999990')", "to_char(a, 'FM.99')", "to_char(price, 'FM.99')",
    "to_char(-0.1, '99.99')", "to_char(-0.1, 'FM9.99')", "to_char(-0.1, 'FM90.99')", "to_char(0.1, '0.9')",
    "to_char(12, '9990999.9')", "to_char(12, 'FM9990999.9')", "to_char(12345, '999')", "to_char(148.5, '999.999')",
    "to_char(0, '999')", "to_char(0, 'FM999')", "to_char(-5, 'MI999')", "to_char(5, 'S999')", "to_char(price, 'S999.9')",
    "to_char(f, 'FM999,990.00')", "to_char(f, '9990.99')",
]
AGGREGATES = [
    "string_agg(s, ',' ORDER BY s)", "array_agg(a ORDER BY a)", "avg(a)", "avg(price)", "sum(f)", "stddev(a)",
    "bool_and(a > 0)", "count(DISTINCT s)", "min(s)", "max(ts)", "percentile_cont(0.5) WITHIN GROUP (ORDER BY f)",
    "corr(a, b)", "regr_slope(a, b)", "bit_and(a)", "bit_or(b)", "every(a > -10)",
    "sum(price * a)", "avg(f)", "count(n)", "count(*) FILTER (WHERE n IS NULL)", "max(price) - min(price)",
    "sum(a) / count(a)", "avg(a)::numeric(10,3)", "round(avg(price), 2)", "stddev_samp(price)", "covar_pop(a, b)",
    "string_agg(DISTINCT s, '|' ORDER BY s)", "min(ts)::date", "max(a) FILTER (WHERE b > 2)", "sum(DISTINCT b)",
    "avg(DISTINCT b)", "count(DISTINCT (a, b))", "array_agg(DISTINCT b ORDER BY b)", "bool_or(s LIKE 'a%')",
    "sum(a) FILTER (WHERE b = 2)", "sum(a * 1.5)", "string_agg(s, ', ' ORDER BY id DESC)",
    "to_char(sum(price), 'FM999,999,990.00')", "to_char(max(ts), 'YYYY-\"Q\"Q')",
    "array_agg(DISTINCT s)", "string_agg(DISTINCT s, ',')", "array_agg(DISTINCT n)",  # listed in order, as PostgreSQL does
]


def _comparable(value: object) -> object:
    if isinstance(value, (float, decimal.Decimal)):
        return round(float(value), 9)
    if isinstance(value, str):  # the ADBC driver gives numerics as text
        try:
            return round(float(value), 9)
        except ValueError:
            return value
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


@pytest.mark.parametrize("sql", [f"SELECT id, {e} AS v FROM {{t}} ORDER BY id" for e in TO_CHAR])
def test_to_char_writes_what_postgres_writes(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    want = [row[-1] for row in postgres_server.fetch(sql.format(t="public.sem"))]
    for table in ("sem", "sem_arrow", "sem_fed"):
        assert [r["v"] for r in run(runtime, sql.format(t=table)).to_pylist()] == want, table


@pytest.mark.parametrize("sql", [f"SELECT id, {e} AS v FROM {{t}} ORDER BY id" for e in EXPRESSIONS]
                         + [f"SELECT {a} AS v FROM {{t}}" for a in AGGREGATES])
def test_functions_answer_as_postgres_itself(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    want = [_comparable(row[-1]) for row in postgres_server.fetch(sql.format(t="public.sem"))]
    for table in ("sem", "sem_arrow", "sem_fed"):  # sem_fed: the query goes down to PostgreSQL whole
        assert [_comparable(r["v"]) for r in run(runtime, sql.format(t=table)).to_pylist()] == want, table


# PostgreSQL's own functions (and LATERAL) that the federated engine cannot plan: over live
# tables the whole query goes to PostgreSQL, typed by it (engine.query.postgres_functions).
POSTGRES_ONLY = [
    "SELECT mode() WITHIN GROUP (ORDER BY s) AS v FROM {t}",
    "SELECT b, mode() WITHIN GROUP (ORDER BY a DESC) AS v, mode() WITHIN GROUP (ORDER BY price) AS p FROM {t} "
    "GROUP BY b ORDER BY b",
    "SELECT percentile_cont(ARRAY[0.25, 0.75]) WITHIN GROUP (ORDER BY a) AS v FROM {t}",
    "SELECT json_agg(a ORDER BY id)::text AS v, jsonb_agg(s ORDER BY id) AS j FROM {t}",
    "SELECT json_object_agg(id, a)::text AS v FROM {t}",
    "SELECT id, json_build_object('s', s, 'a', a) AS v, to_json(s)::text AS j FROM {t} ORDER BY id",
    "SELECT id, make_interval(days => a) AS v, ts + make_interval(hours => b) AS w FROM {t} ORDER BY id",
    "SELECT id, justify_hours(INTERVAL '27 hours' * b) AS v, justify_days(INTERVAL '20 days' * b) AS w FROM {t} ORDER BY id",
    "SELECT id, num_nulls(n, s) AS v, num_nonnulls(n, s, a) AS w FROM {t} ORDER BY id",
    "SELECT id, quote_literal(s) AS v, quote_ident(s) AS w, quote_nullable(n) AS x FROM {t} ORDER BY id",
    "SELECT id, isfinite(ts) AS v, regexp_split_to_array(s, ' ') AS w FROM {t} ORDER BY id",
    "SELECT id, to_number('1,234.5', '9,999.9') + a AS v, scale(price) AS w, width_bucket(a, ARRAY[0, 5, 10]) AS x "
    "FROM {t} ORDER BY id",
    "SELECT t.id, x.m FROM {t} t LEFT JOIN LATERAL (SELECT max(u.a) AS m FROM {t} u WHERE u.b = t.b AND u.id <> t.id) x "
    "ON true ORDER BY 1",
    "SELECT t.id, x.v FROM {t} t CROSS JOIN LATERAL (SELECT t.a * 2 AS v) x ORDER BY 1",
]


@pytest.mark.parametrize("sql", POSTGRES_ONLY)
def test_what_only_postgres_runs_goes_down_whole(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    """The answer is PostgreSQL's, over Flight SQL's path too (the schema announced before the
    rows is the one they come in), and EXPLAIN says where it ran."""
    want = [tuple(_comparable(v) for v in row) for row in postgres_server.fetch(sql.format(t="public.sem"))]
    got = run(runtime, sql.format(t="sem_fed"))
    assert [tuple(_comparable(v) for v in row.values()) for row in got.to_pylist()] == want
    assert runtime.queries.query_schema(sql.format(t="sem_fed")) == got.schema
    explain = "\n".join(run(runtime, "EXPLAIN " + sql.format(t="sem_fed")).column("plan").to_pylist())
    assert "pushed down whole to postgres:" in explain, explain


def test_postgres_types_come_as_table_columns_of_those_types(runtime: Runtime) -> None:
    """numeric(p, s) as its decimal, an unbounded numeric as float8, json and jsonb as text,
    intervals as month-day-nano, arrays as lists."""
    got = run(runtime, "SELECT mode() WITHIN GROUP (ORDER BY price) AS m, price AS p, "
                       "jsonb_agg(a ORDER BY id) AS j, make_interval(days => 2) AS i, "
                       "percentile_cont(ARRAY[0.5]) WITHIN GROUP (ORDER BY f) AS l, "
                       "quote_ident(min(s)) AS q FROM sem_fed GROUP BY price ORDER BY price LIMIT 1")
    assert got.schema.types == [pa.float64(), pa.decimal128(10, 2), pa.string(), pa.month_day_nano_interval(),
                                pa.list_(pa.float64()), pa.string()]
    assert got.to_pylist() == [{"m": -3.1, "p": decimal.Decimal("-3.10"), "j": "[-7]", "i": pa.scalar(
        (0, 2, 0), pa.month_day_nano_interval()).as_py(), "l": [-0.0], "q": "\"Banana\""}]
    explain = "\n".join(run(runtime, "EXPLAIN SELECT quote_ident(s) AS q FROM sem_fed").column("plan").to_pylist())
    assert "typed by PostgreSQL: the federated engine cannot plan it" in explain, explain
    # mode() alone the federated engine types, in the column's own type, as the accelerated routes do
    assert run(runtime, "SELECT mode() WITHIN GROUP (ORDER BY price) AS m FROM sem_fed").schema.types == \
        [pa.decimal128(10, 2)]


@pytest.mark.parametrize("call,marker", [
    ("pg_sleep(0)", "pg_sleep"), ("query_to_xml('SELECT 1', true, true, '')", "query_to_xml"),
    ("pg_backend_pid()", "pg_backend_pid"), ("txid_current()", "txid_current"),
    ("inet_server_addr()", "inet_server_addr"), ("pg_typeof(a)", "pg_typeof"), ("pg_advisory_lock(1)", "advisory"),
    ("version()", "version"), ("current_database()", "current_database"), ("current_user", "current_user"),
    ("session_user", "session_user"), ("current_schema", "current_schema"), ("'pg_authid'::regclass", "regclass"),
    ("CAST('1/0' AS pg_lsn)", "pg_lsn"),
])
def test_a_function_that_may_not_go_to_postgres_never_reaches_it(runtime: Runtime, postgres_server: PgServer,
                                                                 call: str, marker: str) -> None:
    """Catalog, admin, lock, session and sleep functions, catalog casts and what tells about
    the server stay out of PostgreSQL: the query fails as the federated engine fails it, or
    the engine answers."""
    offset = postgres_server.log_offset()
    try:
        run(runtime, f"SELECT id, {call} AS v FROM sem_fed ORDER BY id")
    except SatchelError:
        pass
    assert [s for s in postgres_server.statements_since(offset) if marker in s.lower()] == []
