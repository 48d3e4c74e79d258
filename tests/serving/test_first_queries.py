"""The first things a new user types, on the default pod: table-less queries, the same types on
every route, CSV of nested values, ISO 8601 timestamps, and a CLI that behaves in a pipe."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import json
import subprocess
import sys

import adbc_driver_flightsql.dbapi as flightsql
import httpx
import pyarrow as pa
import pytest

from tests.conftest import REPO
from tests.processes import children

# One table per route of the default pod: DuckDB-accelerated, Arrow-accelerated, live (federated).
ROUTES = {"none": "", "duckdb": " FROM orders LIMIT 1", "arrow": " FROM products LIMIT 1", "federated": " FROM regions LIMIT 1"}


@pytest.fixture(scope="module")
def server(module_satchel_server, module_demo_pod_dir):
    return module_satchel_server(pod_dir=module_demo_pod_dir)


@pytest.fixture(scope="module")
def cursor(server):
    with flightsql.connect(f"grpc://127.0.0.1:{server.flight_port}", autocommit=True) as conn:
        with conn.cursor() as cur:
            yield cur


def kind(t: pa.DataType) -> object:
    """A result type as clients see it; decimal precision follows each engine's arithmetic rules
    (the values are equal), the scale does not."""
    return ("decimal", t.scale) if pa.types.is_decimal(t) else str(t)


def fetch(cursor, sql: str):
    cursor.execute(sql)
    table = cursor.fetch_arrow_table()
    return table.schema, table.to_pylist()


@pytest.mark.parametrize("select", [
    "SELECT 1, 2",
    "SELECT 1 + 1, 2 + 2",
    "SELECT 1 AS a, 2 AS a",
    "SELECT 7 / 2 AS q, 7 % 2 AS r, -7 / 2 AS n",
    "SELECT typeof(1) AS t1, typeof(7 / 2) AS t2, typeof(1.5) AS t3, typeof('x') AS t4, typeof(true) AS t5",
    "SELECT 1.50 AS d, 1.5 * 2 AS m, 2 * 3 + 1 AS i, CASE WHEN true THEN 1 ELSE 0 END AS c",
    "SELECT typeof(now()) AS t, typeof(current_date) AS d, typeof(CAST(1.5 AS DECIMAL(10, 2))) AS dec",
])
def test_table_less_and_constant_columns_agree_on_every_route(cursor, select):
    results = {route: fetch(cursor, select + tail) for route, tail in ROUTES.items()}
    schema, rows = results["none"]
    assert rows, select
    for route, (got_schema, got_rows) in results.items():
        assert got_schema.names == schema.names, (route, got_schema)
        assert [kind(f.type) for f in got_schema] == [kind(f.type) for f in schema], (route, got_schema, schema)
        assert got_rows == rows, (route, got_rows, rows)


def test_postgres_names_types_and_values(cursor):
    schema, rows = fetch(cursor, "SELECT 1, 2")
    assert schema.names == ["?column?", "?column?"] and rows == [{"?column?": 2}]  # to_pylist keeps the last
    schema, _ = fetch(cursor, "SELECT 7 / 2 AS q")
    assert str(schema.field("q").type) == "int32"
    _, rows = fetch(cursor, "SELECT 7 / 2 AS q, typeof(7 / 2) AS t, typeof(now()) AS n")
    assert rows == [{"q": 3, "t": "INTEGER", "n": "TIMESTAMP WITH TIME ZONE"}]


@pytest.mark.parametrize("tail", ROUTES.values(), ids=ROUTES.keys())
def test_now_is_a_utc_microsecond_timestamp_that_python_can_hold(cursor, tail):
    cursor.execute(f"SELECT now() AS t, current_timestamp AS c{tail}")
    row = cursor.fetchall()[0]  # fetchall() failed on nanoseconds ("not safely convertible")
    assert all(isinstance(v, dt.datetime) and v.utcoffset() == dt.timedelta(0) for v in row)
    assert abs(row[0] - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)


def test_csv_of_nested_values_is_json_text(server):
    response = server.sql("SELECT product_id, tags FROM products ORDER BY product_id LIMIT 3", accept="text/csv")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 3
    assert all(isinstance(json.loads(r["tags"]), list) for r in rows)
    expected = server.sql("SELECT product_id, tags FROM products ORDER BY product_id LIMIT 3").json()
    assert [json.loads(r["tags"]) for r in rows] == [r["tags"] for r in expected]


def test_timestamps_are_iso_8601_in_json_and_csv(server):
    rows = server.sql("SELECT ordered_at FROM orders ORDER BY order_id LIMIT 1").json()
    assert rows == [{"ordered_at": "2024-01-06T10:52:00Z"}]
    assert dt.datetime.fromisoformat(rows[0]["ordered_at"]) == dt.datetime(2024, 1, 6, 10, 52, tzinfo=dt.timezone.utc)
    text = server.sql("SELECT ordered_at, TIMESTAMP '2024-01-06 10:52:00.25' AS naive FROM orders ORDER BY order_id "
                      "LIMIT 1", accept="text/csv").text
    assert text.splitlines()[1] == '"2024-01-06T10:52:00Z","2024-01-06T10:52:00.250000"'


def test_a_failure_after_the_response_started_is_a_failed_transfer_and_a_failed_task(server):
    # 7.2M rows: the bad value comes long after the first batch went out with status 200
    sql = ("SELECT a.order_id, CAST(CASE WHEN a.order_id = 105999 AND c.customer_id = 1200 THEN 'x' ELSE '1' END "
           "AS INT) AS v FROM orders a, customers c")
    with pytest.raises(httpx.HTTPError):  # the body never completes
        with httpx.stream("POST", f"{server.http_url}/v1/sql", content=sql, headers={"Accept": "text/csv"},
                          timeout=120) as response:
            assert response.status_code == 200
            for _ in response.iter_bytes():
                pass
    rows = server.sql("SELECT error_code, error FROM runtime.task_history WHERE query_text LIKE '%105999%' "
                      "AND query_text NOT LIKE '%task_history%'").json()
    assert rows and all(r["error_code"] == "sql_error" and "convert" in r["error"] for r in rows), rows
    log = server.log()
    assert "failed after it started (sql_error" in log and "Traceback" not in log


def satchel(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_cli_csv_and_json_are_clean(server):
    flight = f"127.0.0.1:{server.flight_port}"
    out = satchel(server, "sql", "--flight", flight, "--format", "csv", "SELECT product_id, tags FROM products LIMIT 2")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert json.loads(list(csv.DictReader(io.StringIO(out.stdout)))[0]["tags"]) is not None
    out = satchel(server, "sql", "--flight", flight, "--format", "json", "SELECT * FROM runtime.task_history LIMIT 50")
    assert out.returncode == 0 and out.stderr == "", out.stderr  # no Arrow "poorly aligned" warnings
    assert isinstance(json.loads(out.stdout), list)


def test_cli_in_a_pipe_that_closes_early(server):
    flight = f"127.0.0.1:{server.flight_port}"
    pipeline = (f"{sys.executable} -m serving.cli sql --flight {flight} 'SELECT * FROM orders' | head -3; "
                f"echo status=${{PIPESTATUS[0]}}")
    out = subprocess.run(["bash", "-c", pipeline], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert out.stdout.count("\n") == 4 and "status=0" in out.stdout, out.stdout


def test_cli_datasets_prints_no_http_log_lines(server):
    out = satchel(server, "datasets", "--http", f"127.0.0.1:{server.http_port}")
    assert out.returncode == 0
    assert "httpx" not in out.stderr and "HTTP Request" not in out.stderr, out.stderr
    assert "orders" in out.stdout


def documented_functions() -> list[tuple[str, str, str]]:
    """(expression, result, type) rows of docs/functions.md's tables."""
    rows = []
    for line in (REPO / "docs" / "functions.md").read_text().splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows.append((cells[0].strip("`"), cells[1], cells[2]))
    return rows


def test_the_functions_page_lists_enough_functions():
    assert len(documented_functions()) >= 60


@pytest.mark.parametrize("expression,result,type_name", documented_functions())
def test_documented_function_agrees_on_every_route(cursor, expression, result, type_name):
    results = {route: fetch(cursor, f"SELECT {expression} AS v, typeof({expression}) AS t{tail}")
               for route, tail in ROUTES.items()}
    schema, rows = results["none"]
    for route, (got_schema, got_rows) in results.items():
        assert kind(got_schema.field("v").type) == kind(schema.field("v").type), (route, got_schema, schema)
        if result != "(now)":
            assert got_rows[0]["v"] == rows[0]["v"], (route, got_rows, rows)
    value, typeof = rows[0]["v"], rows[0]["t"]
    assert typeof == type_name
    if result != "(now)":
        assert ("NULL" if value is None else str(value)) == result


def test_the_sidecar_and_its_workers_run_without_pandas(server, cursor):
    # datafusion imports pandas, which Satchel never uses: refused in `satchel run` and its
    # federated engine's workers (each starts sooner and holds 27 MiB less), and every route
    # still answers
    for route, tail in ROUTES.items():
        assert fetch(cursor, f"SELECT 1 AS one{tail}")[1] == [{"one": 1}], route
    assert fetch(cursor, "SELECT region, count(*) AS n FROM regions GROUP BY region")[1]  # in a worker
    processes = [server.process.pid, *children(server.process.pid)]
    assert len(processes) > 1, "the federated query ran in a worker process"
    for pid in processes:
        with open(f"/proc/{pid}/maps") as maps:
            mapped = maps.read()
        assert "/pyarrow/" in mapped and "/pandas/" not in mapped, pid
