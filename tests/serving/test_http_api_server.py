"""The HTTP API and Prometheus metrics of a real `satchel run`, through httpx (and ADBC Flight SQL
where the protocol matters): formats, errors and statuses, auth, datasets, status, refresh,
task history, secrets redaction, and hostile SQL over both protocols."""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import duckdb
import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from adbc_driver_flightsql import DatabaseOptions
from adbc_driver_manager import AdbcStatusCode

ARROW = "application/vnd.apache.arrow.stream"


def _load_hostile():
    name = "satchel_tests_hostile_sql"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "engine" / "hostile_sql.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


H = _load_hostile()


@pytest.fixture(scope="module")
def demo(module_satchel_server, module_demo_pod_dir):
    return module_satchel_server(pod_dir=module_demo_pod_dir)


def get(server, path: str, **kw) -> httpx.Response:
    return httpx.get(f"{server.http_url}{path}", headers=server.headers() | kw.pop("headers", {}), timeout=30, **kw)


def post(server, path: str, **kw) -> httpx.Response:
    return httpx.post(f"{server.http_url}{path}", headers=server.headers() | kw.pop("headers", {}), timeout=60, **kw)


def metrics(server) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (samples only)."""
    text = httpx.get(server.metrics_url, timeout=10).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def flight_connect(server, api_key: str | None = None):
    kwargs = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {api_key}"} if api_key else {}
    return adbc.connect(server.flight_uri, db_kwargs=kwargs, autocommit=True)


# -- health, readiness, formats ----------------------------------------------------------------


def test_health_and_ready(demo):
    health = httpx.get(f"{demo.http_url}/health", timeout=10)
    assert health.status_code == 200 and health.text == "ok"
    ready = httpx.get(f"{demo.http_url}/v1/ready", timeout=10)
    assert ready.status_code == 200


QUERY = ("SELECT order_id, customer_id, quantity, amount, status, ordered_at, shipped_at "
         "FROM orders WHERE order_id <= 100020 ORDER BY order_id")


def reference(pod_dir: Path) -> pa.Table:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(
        f"SELECT order_id, customer_id, quantity, amount, status, ordered_at, shipped_at "
        f"FROM read_parquet('{pod_dir}/data/orders/*.parquet') WHERE order_id <= 100020 ORDER BY order_id"
    ).to_arrow_table()


def test_default_pod_full_text_search_needs_no_model(demo):
    """The README's search example: BM25 over products.name on the default pod, joinable."""
    r = demo.sql("SELECT s.product_id, s.name, s._score FROM text_search(products, 'cookbook', limit => 3) s "
                 "JOIN products p USING (product_id) ORDER BY s._score DESC")
    assert r.status_code == 200, r.text
    rows = r.json()
    assert len(rows) == 3 and all("Cookbook" in row["name"] for row in rows)
    assert rows[0]["_score"] >= rows[-1]["_score"] > 0
    none = demo.sql("SELECT count(*) AS n FROM text_search(products, 'zzqx')")
    assert none.json() == [{"n": 0}]


def test_sql_json_is_the_default(demo):
    resp = post(demo, "/v1/sql", content=QUERY)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    rows = resp.json()
    expected = reference(demo.pod_dir).to_pylist()
    assert [r["order_id"] for r in rows] == [r["order_id"] for r in expected]
    assert list(rows[0]) == ["order_id", "customer_id", "quantity", "amount", "status", "ordered_at", "shipped_at"]
    for got, want in zip(rows, expected):
        assert got["customer_id"] == want["customer_id"] and got["status"] == want["status"]
        assert Decimal(str(got["amount"])) == want["amount"]
        assert dt.datetime.fromisoformat(got["ordered_at"]) == want["ordered_at"]
        assert (got["shipped_at"] is None) == (want["shipped_at"] is None)


def test_sql_json_rows_are_objects_even_with_awkward_column_names(demo):
    resp = post(demo, "/v1/sql", content='SELECT 1 AS a, 7 / 2 AS b, \'x\' AS "row", NULL AS "__batch"')
    assert resp.status_code == 200, resp.text
    assert resp.json() == [{"a": 1, "b": 3, "row": "x", "__batch": None}]
    empty = post(demo, "/v1/sql", content="SELECT order_id FROM orders WHERE order_id < 0")
    assert empty.status_code == 200 and empty.json() == []


def test_sql_json_is_strict_json_even_for_nan_and_infinity(demo):
    resp = post(demo, "/v1/sql", content="SELECT CAST('NaN' AS DOUBLE) AS n, CAST('Infinity' AS DOUBLE) AS i, "
                                         "CAST('-Infinity' AS DOUBLE) AS m, CAST(1.5 AS DOUBLE) AS f")
    assert resp.status_code == 200, resp.text

    def refuse(token: str) -> None:
        raise AssertionError(f"not JSON: {token}")

    assert json.loads(resp.text, parse_constant=refuse) == [{"n": "NaN", "i": "Infinity", "m": "-Infinity", "f": 1.5}]


def test_sql_csv(demo):
    resp = post(demo, "/v1/sql", content=QUERY, headers={"Accept": "text/csv"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    expected = reference(demo.pod_dir)
    got = pacsv.read_csv(io.BytesIO(resp.content),
                         convert_options=pacsv.ConvertOptions(column_types=expected.schema))
    assert got.column_names == expected.column_names
    assert got.equals(expected.cast(got.schema))
    empty = post(demo, "/v1/sql", content="SELECT order_id, status FROM orders WHERE order_id < 0",
                 headers={"Accept": "text/csv"})
    assert empty.status_code == 200 and empty.text.strip() == '"order_id","status"'


def test_sql_arrow_ipc_stream(demo):
    resp = post(demo, "/v1/sql", content=QUERY, headers={"Accept": ARROW})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith(ARROW)
    got = pa.ipc.open_stream(resp.content).read_all()
    expected = reference(demo.pod_dir)
    assert got.column_names == expected.column_names
    assert got.schema.field("amount").type == pa.decimal128(12, 2)
    assert pa.types.is_timestamp(got.schema.field("ordered_at").type)
    assert got.cast(expected.schema).equals(expected)
    big = post(demo, "/v1/sql", content="SELECT * FROM orders", headers={"Accept": ARROW})
    assert pa.ipc.open_stream(big.content).read_all().num_rows == 6000
    empty = post(demo, "/v1/sql", content="SELECT order_id FROM orders WHERE order_id < 0", headers={"Accept": ARROW})
    table = pa.ipc.open_stream(empty.content).read_all()
    assert table.num_rows == 0 and table.column_names == ["order_id"]


def test_three_formats_agree(demo):
    sql = "SELECT category, count(*) AS n, round(avg(unit_price), 2) AS avg_price FROM products GROUP BY category ORDER BY category"
    as_json = post(demo, "/v1/sql", content=sql).json()
    as_arrow = pa.ipc.open_stream(post(demo, "/v1/sql", content=sql, headers={"Accept": ARROW}).content).read_all()
    as_csv = pacsv.read_csv(io.BytesIO(post(demo, "/v1/sql", content=sql, headers={"Accept": "text/csv"}).content))
    assert as_arrow.to_pylist() == as_csv.cast(as_arrow.schema).to_pylist()
    # JSON numbers carry decimals as plain numbers
    assert as_json == [{k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}
                       for row in as_arrow.to_pylist()]


@pytest.mark.parametrize("sql,status,code", [
    ("SELEC 1", 400, "sql_error"),
    ("SELECT FROM WHERE", 400, "sql_error"),
    ("SELECT no_such_column FROM orders", 400, "sql_error"),
    ("", 400, "sql_error"),
    ("DROP TABLE orders", 403, "read_only"),
    ("INSERT INTO orders (order_id) VALUES (1)", 403, "read_only"),
    ("SELECT * FROM no_such_table", 404, "unknown_dataset"),
    ("SELECT * FROM runtime.no_such_table", 404, "unknown_dataset"),
])
def test_sql_errors_are_json_with_status(demo, sql, status, code):
    resp = post(demo, "/v1/sql", content=sql)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    # the same status whatever the requested format
    assert post(demo, "/v1/sql", content=sql, headers={"Accept": ARROW}).status_code == status


def test_small_results_are_one_response_and_large_ones_stream(demo):
    """Most of an agent's results are small: sent whole, with their length, in one step from the
    query pool (streaming them cost a trip to the pool per chunk, about 1.5 ms a query). A result
    past SMALL_RESULT_BYTES streams, in every format, with the same rows."""
    from serving.http.app import SMALL_RESULT_BYTES

    small = post(demo, "/v1/sql", content="SELECT order_id FROM orders ORDER BY order_id LIMIT 3")
    assert small.status_code == 200 and "chunked" not in small.headers.get("transfer-encoding", "")
    assert int(small.headers["content-length"]) == len(small.content)
    ids = [row["order_id"] for row in small.json()]
    assert len(ids) == 3 and ids == sorted(ids)
    width = SMALL_RESULT_BYTES // 1000
    sql = f"SELECT order_id, repeat('x', {width}) AS pad FROM orders ORDER BY order_id"
    for accept in ("application/json", "text/csv", ARROW):
        large = post(demo, "/v1/sql", content=sql, headers={"Accept": accept})
        assert large.status_code == 200 and large.headers.get("transfer-encoding") == "chunked", accept
    rows = post(demo, "/v1/sql", content=sql).json()
    count = post(demo, "/v1/sql", content="SELECT count(*) AS n FROM orders").json()[0]["n"]
    assert len(rows) == count and rows[0]["order_id"] == ids[0] and len(rows[0]["pad"]) == width


def test_a_body_past_the_limit_is_refused_before_it_is_read_whole(demo):
    """A body is read whole before it is parsed: one larger than MAX_BODY_BYTES is refused with
    413, whether it declares its length (refused before a byte is read) or streams in chunks
    (refused once past the limit), on every route, and audited. The sidecar keeps serving."""
    from serving.http.app import MAX_BODY_BYTES

    def chunks():
        for _ in range(MAX_BODY_BYTES // (1 << 20) + 2):
            yield b"-" * (1 << 20)

    for path in ("/v1/sql", "/v1/search", "/v1/chat/completions", "/v1/mcp"):
        for content in (b"x" * (MAX_BODY_BYTES + 1), chunks()):
            resp = post(demo, path, content=content, headers={"Content-Type": "application/json"})
            assert resp.status_code == 413, (path, resp.text[:200])
            if path == "/v1/mcp" and not isinstance(content, bytes):
                continue  # MCP's transport reads a chunked body itself and stops at its own, lower limit
            assert resp.json()["error"]["code"] == "payload_too_large", path
            assert "16 MiB" in resp.json()["error"]["message"]
    rows = post(demo, "/v1/sql", content="SELECT count(*) AS n FROM runtime.task_history "
                                         "WHERE error_code = 'payload_too_large' AND protocol = 'http'").json()
    assert rows[0]["n"] >= 8
    assert post(demo, "/v1/sql", content="SELECT 1 AS one").json() == [{"one": 1}]


# -- datasets, status, refresh -----------------------------------------------------------------


def test_datasets_list_status_descriptions_and_columns(demo):
    resp = get(demo, "/v1/datasets")
    assert resp.status_code == 200
    by_name = {d["name"]: d for d in resp.json()}
    assert set(by_name) == {"orders", "customers", "products", "regions", "order_details"}
    orders = by_name["orders"]
    assert orders["type"] == "table" and orders["status"] == "ready" and orders["ready"] is True
    assert orders["engine"] == "duckdb" and orders["rows"] == 6000 and orders["last_error"] is None
    assert orders["description"].startswith("One row per order line")
    assert orders["primary_key"] == ["order_id"] and orders["unique_keys"] == [["order_id"]]
    assert by_name["customers"]["unique_keys"] == []
    columns = {c["name"]: c for c in orders["columns"]}
    assert columns["quantity"]["description"] == "Units ordered."
    assert columns["amount"]["type"] == "decimal128(12, 2)"
    assert [c["name"] for c in orders["columns"]][:3] == ["order_id", "customer_id", "product_id"]
    assert by_name["products"]["engine"] == "arrow"
    assert by_name["regions"]["accelerated"] is False and by_name["regions"]["status"].startswith("ready")
    assert {c["name"]: c["description"] for c in by_name["regions"]["columns"]}["manager"] == "Regional sales manager."
    view = by_name["order_details"]
    assert view["type"] == "view" and view["description"].startswith("Orders joined")
    assert [c["name"] for c in view["columns"]] == ["order_id", "ordered_at", "customer_id", "product", "category",
                                                     "quantity", "amount", "status"]


def test_status(demo):
    body = get(demo, "/v1/status").json()
    assert body["pod"] == "shop_agent" and body["ready"] is True
    names = [d["name"] for d in body["datasets"]]
    assert names == ["orders", "customers", "products", "regions"]
    assert all(d["last_refresh_at"] for d in body["datasets"] if d["accelerated"])


def _dataset(server, name: str) -> dict:
    return {d["name"]: d for d in get(server, "/v1/datasets").json()}[name]


def test_refresh_endpoint(demo):
    before = _dataset(demo, "products")["refresh_count"]
    resp = post(demo, "/v1/datasets/products/acceleration/refresh")
    assert resp.status_code == 201, resp.text
    assert resp.json()["dataset"] == "products"
    deadline = time.monotonic() + 10
    while _dataset(demo, "products")["refresh_count"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _dataset(demo, "products")["refresh_count"] == before + 1
    unknown = post(demo, "/v1/datasets/nope/acceleration/refresh")
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
    federated = post(demo, "/v1/datasets/regions/acceleration/refresh")
    assert federated.status_code == 400 and "not accelerated" in federated.json()["error"]["message"]


# -- metrics -----------------------------------------------------------------------------------


def test_prometheus_metrics(demo):
    before = metrics(demo)
    for _ in range(3):
        assert post(demo, "/v1/sql", content="SELECT count(*) AS n FROM orders").status_code == 200
    assert post(demo, "/v1/sql", content="DROP TABLE orders").status_code == 403
    after = metrics(demo)

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert delta('satchel_queries_total{protocol="http",served_by="accelerator"}') == 3
    assert delta('satchel_query_duration_seconds_count{protocol="http"}') == 4
    assert delta('satchel_query_duration_seconds_sum{protocol="http"}') > 0
    assert delta('satchel_query_failures_total{code="read_only",protocol="http"}') == 1
    assert delta('satchel_query_rows_total{protocol="http"}') == 3
    assert delta('satchel_query_bytes_total{protocol="http"}') > 0
    assert after['satchel_dataset_rows{dataset="orders"}'] == 6000
    assert after['satchel_dataset_rows{dataset="customers"}'] == 1200
    assert after['satchel_dataset_ready{dataset="orders"}'] == 1
    assert after['satchel_dataset_refresh_duration_seconds_count{dataset="orders"}'] >= 1
    assert after['satchel_dataset_last_refresh_timestamp_seconds{dataset="orders"}'] > time.time() - 3600
    assert after.get('satchel_dataset_refresh_errors_total{dataset="orders"}', 0) == 0


# -- task history ------------------------------------------------------------------------------


def test_task_history_records_queries_from_both_protocols(demo):
    marker = f"m{time.monotonic_ns()}"
    assert post(demo, "/v1/sql", content=f"SELECT '{marker}' AS m, count(*) AS n FROM orders").status_code == 200
    assert post(demo, "/v1/sql", content=f"SELECT '{marker}' AS m, region FROM regions").status_code == 200
    assert post(demo, "/v1/sql", content=f"SELECT '{marker}' AS m, o.order_id FROM orders o JOIN regions r "
                                         f"ON r.region = 'Europe' LIMIT 5").status_code == 200
    assert post(demo, "/v1/sql", content=f"SELECT '{marker}' AS m, p.name FROM orders o JOIN products p "
                                         f"ON p.product_id = o.product_id LIMIT 7").status_code == 200
    assert post(demo, "/v1/sql", content=f"SELECT '{marker}' AS m FROM no_such_table").status_code == 404
    with flight_connect(demo) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT '{marker}' AS m, customer_id FROM customers WHERE customer_id <= 10")
        assert len(cur.fetchall()) == 10
    resp = post(demo, "/v1/sql", content=f"SELECT task, protocol, query_text, datasets, served_by, duration_ms, rows, "
                                        f"error, started_at FROM runtime.task_history "
                                        f"WHERE query_text LIKE '%{marker}%' AND query_text NOT LIKE '%task_history%' "
                                        f"ORDER BY task_id")
    assert resp.status_code == 200, resp.text
    rows = resp.json()
    assert len(rows) == 6, rows
    count, federated, mixed, joined, failed, flight = rows
    assert count["protocol"] == "http" and count["task"] == "query"
    assert count["query_text"] == f"SELECT '{marker}' AS m, count(*) AS n FROM orders"
    assert count["datasets"] == ["orders"] and count["served_by"] == "accelerator"
    assert count["rows"] == 1 and count["error"] is None and count["duration_ms"] > 0
    assert federated["datasets"] == ["regions"] and federated["served_by"] == "source" and federated["rows"] == 6
    assert mixed["datasets"] == ["orders", "regions"] and mixed["served_by"] == "mixed" and mixed["rows"] == 5
    assert joined["datasets"] == ["orders", "products"] and joined["served_by"] == "accelerator" and joined["rows"] == 7
    assert failed["error"] and "no_such_table" in failed["error"] and failed["rows"] == 0
    assert flight["protocol"] == "flight" and flight["datasets"] == ["customers"] and flight["rows"] == 10
    # refreshes are there too
    refreshes = post(demo, "/v1/sql", content="SELECT query_text, protocol, rows FROM runtime.task_history "
                                              "WHERE task = 'refresh' AND query_text = 'refresh orders'").json()
    assert refreshes and refreshes[0]["protocol"] == "internal" and refreshes[0]["rows"] == 6000


# -- hostile SQL over HTTP and Flight ----------------------------------------------------------


def _snapshot(server) -> dict[str, list]:
    out = {}
    for name in H.TABLES + ["order_details"]:
        table = pa.ipc.open_stream(post(server, "/v1/sql", content=f"SELECT * FROM {name}",
                                        headers={"Accept": ARROW}).content).read_all()
        out[name] = table.sort_by([(c, "ascending") for c in table.column_names if c != "tags"]).to_pylist()
    return out


def test_hostile_sql_is_refused_over_http_and_flight_and_changes_nothing(demo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before_files = H.files_digest(demo.pod_dir)
    before = _snapshot(demo)
    accepted = []
    with flight_connect(demo) as conn:
        for template in H.HOSTILE:
            sql = H.render(template, out, demo.pod_dir)
            resp = post(demo, "/v1/sql", content=sql)
            if resp.status_code not in (400, 403):
                accepted.append(("http", sql, resp.status_code, resp.text[:200]))
            else:
                assert resp.json()["error"]["message"], sql
            with conn.cursor() as cur:
                try:
                    cur.execute(sql)
                    cur.fetchall()
                except adbc.Error as e:
                    if e.status_code not in (AdbcStatusCode.UNAUTHORIZED, AdbcStatusCode.INVALID_ARGUMENT):
                        accepted.append(("flight", sql, e.status_code, str(e)[:200]))
                    elif e.status_code == AdbcStatusCode.UNAUTHORIZED:
                        assert "PermissionDenied" in str(e), str(e)
                else:
                    accepted.append(("flight", sql, "ran", ""))
    assert not accepted, accepted
    assert list(out.iterdir()) == []
    assert H.files_digest(demo.pod_dir) == before_files
    assert _snapshot(demo) == before


# -- auth and secrets --------------------------------------------------------------------------

SECRET_TOKEN = "tok-7f3a9c-SUPER-secret"
API_KEY = "key-4d2e8b-api"


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


@pytest.fixture
def secure_server(satchel_server, source_server):
    source_server.files["/scores.parquet"] = _parquet(pa.table({"id": [1, 2, 3], "score": [0.5, 0.7, 0.9]}))
    pod = f"""
version: v1
kind: Spicepod
name: secure
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${{env:SATCHEL_TEST_API_KEY}}"]
datasets:
  - from: {source_server.url('/scores.parquet')}?token=${{env:SRC_TOKEN}}
    name: scores
    params:
      http_auth: Bearer ${{env:SRC_TOKEN}}
    acceleration:
      engine: duckdb
"""
    return satchel_server(pod, api_key=API_KEY, env={"SRC_TOKEN": SECRET_TOKEN})


def test_auth_401_without_or_with_a_wrong_key_and_open_probes(secure_server):
    url = secure_server.http_url
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        resp = httpx.post(f"{url}/v1/sql", content="SELECT 1", headers=headers, timeout=10)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["code"] == "unauthenticated"
        assert httpx.get(f"{url}/v1/datasets", headers=headers, timeout=10).status_code == 401
        assert httpx.get(f"{url}/v1/status", headers=headers, timeout=10).status_code == 401
        assert httpx.post(f"{url}/v1/datasets/scores/acceleration/refresh", headers=headers, timeout=10).status_code == 401
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{url}/v1/ready", timeout=10).status_code == 200
    ok = httpx.post(f"{url}/v1/sql", content="SELECT count(*) AS n FROM scores", headers={"X-API-Key": API_KEY}, timeout=10)
    assert ok.status_code == 200 and ok.json() == [{"n": 3}]
    with pytest.raises(adbc.Error) as caught:
        with flight_connect(secure_server, "wrong") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert caught.value.status_code == AdbcStatusCode.UNAUTHENTICATED
    with flight_connect(secure_server, API_KEY) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM scores")
        assert cur.fetchall() == [(3,)]


def test_secrets_never_appear_in_task_history_datasets_or_logs(secure_server):
    key = {"X-API-Key": API_KEY}
    url = secure_server.http_url
    asked = httpx.post(f"{url}/v1/sql", content=f"SELECT id FROM scores WHERE '{SECRET_TOKEN}' <> 'x' ORDER BY id",
                       headers=key, timeout=10)
    assert asked.status_code == 200 and asked.json() == [{"id": 1}, {"id": 2}, {"id": 3}]
    failed = httpx.post(f"{url}/v1/sql", content=f"SELECT * FROM scores WHERE nope = '{SECRET_TOKEN}'",
                        headers=key, timeout=10)
    assert failed.status_code == 400 and SECRET_TOKEN not in failed.text
    also_key = httpx.post(f"{url}/v1/sql", content=f"SELECT '{API_KEY}' AS k", headers=key, timeout=10)
    assert also_key.status_code == 200
    history = httpx.post(f"{url}/v1/sql", content="SELECT query_text, error FROM runtime.task_history ORDER BY task_id",
                         headers=key, timeout=10)
    assert history.status_code == 200
    text = history.text
    assert SECRET_TOKEN not in text and API_KEY not in text
    texts = [r["query_text"] for r in history.json()]
    assert "SELECT id FROM scores WHERE '***' <> 'x' ORDER BY id" in texts
    assert "SELECT '***' AS k" in texts
    datasets = httpx.get(f"{url}/v1/datasets", headers=key, timeout=10)
    assert SECRET_TOKEN not in datasets.text and "scores" in datasets.text
    status = httpx.get(f"{url}/v1/status", headers=key, timeout=10)
    assert SECRET_TOKEN not in status.text
    assert SECRET_TOKEN not in httpx.get(secure_server.metrics_url, timeout=10).text
    assert SECRET_TOKEN not in secure_server.log() and API_KEY not in secure_server.log()


def test_a_slow_query_does_not_block_health_or_other_requests(satchel_server, source_server):
    """Liveness probes must answer while a query waits on a slow source."""
    import threading

    source_server.files["/slow.parquet"] = _parquet(pa.table({"id": [1, 2, 3]}))
    server = satchel_server(f"""
version: v1
kind: Spicepod
name: slowsource
datasets:
  - from: {source_server.url('/slow.parquet')}
    name: slow
  - from: file:fast.csv
    name: fast
""", files={"fast.csv": "a\n1\n"})
    assert server.sql("SELECT count(*) AS n FROM slow").json() == [{"n": 3}]  # schema known, source fine
    before = source_server.count("/slow.parquet")
    source_server.plan("/slow.parquet", [(200, 2.5)])
    answers = []
    worker = threading.Thread(target=lambda: answers.append(server.sql("SELECT count(*) AS n FROM slow")))
    worker.start()
    deadline = time.monotonic() + 5
    while source_server.count("/slow.parquet") == before and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    assert httpx.get(f"{server.http_url}/health", timeout=10).status_code == 200
    assert server.sql("SELECT a FROM fast").json() == [{"a": 1}]
    elapsed = time.monotonic() - started
    worker.join(15)
    assert answers and answers[0].json() == [{"n": 3}]
    assert elapsed < 1.0, f"/health and another query waited {elapsed:.1f}s behind a slow query"
